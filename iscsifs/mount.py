"""Serving a mount: log in, build the tree, mount with pyfuse3, serve until unmounted.

Run inside ``trio.run``. ``ready(message)`` is called once the kernel mount is live, so the CLI
can return only then (as sshfs does).
"""

from __future__ import annotations

import logging
import os
import re
import signal
from dataclasses import dataclass, replace
from typing import Callable

import pyfuse3
import trio

from iscsifs.client import Client, NotFoundError
from iscsifs.fs import IscsiFs
from iscsifs.lun import Lun
from iscsifs.net.session import Session
from iscsifs.proto.errors import IscsiError
from iscsifs.stats import STATS
from iscsifs.url import IscsiUrl
from iscsifs.watch import TargetWatch

log = logging.getLogger("iscsifs")

SHUTDOWN_TIMEOUT = 10.0


# The kernel's readahead for a FUSE mount is 128 KiB. A whole 1 MiB (our largest command) makes
# buffered sequential reads (cat, cp, dd without O_DIRECT) ~55% faster against tgt: measured
# 128 -> 438-475 MiB/s, 512 -> 668-676, 1024 -> 711-714, 2048 -> 672-681, 4096 -> 587-655.
DEFAULT_READAHEAD_KIB = 1024


class MountError(IscsiError):
    """The kernel mount itself failed (mount point busy, no /dev/fuse, not permitted)."""


@dataclass(frozen=True, slots=True)
class MountOptions:
    read_only: bool = False
    allow_other: bool = False
    uid: int | None = None  # None: the mounting user
    gid: int | None = None
    umask: int = 0o022
    fsname: str = "iscsifs"
    kernel: frozenset[str] = frozenset()  # generic mount flags passed through: nodev, noexec, noatime...
    readahead_kib: int = DEFAULT_READAHEAD_KIB

    def fuse_options(self) -> set[str]:
        opts = set(pyfuse3.default_options) | set(self.kernel)
        opts.add("default_permissions")  # the kernel enforces the modes we show
        opts.add(f"fsname={self.fsname}")
        opts.add("subtype=iscsifs")
        if self.read_only:
            opts.add("ro")
        if self.allow_other:
            opts.add("allow_other")
        return opts


async def build_tree(nursery: trio.Nursery, client: Client, url: IscsiUrl, *, root_is_file: bool,
                     options: MountOptions) -> tuple[IscsiFs, list[Session]]:
    """Log in, find the LUNs, build the tree, and watch each target for changes."""
    sessions: list[Session] = []
    read_only = options.read_only
    poll_interval = client.config.recovery.nop_interval
    fs = IscsiFs(read_only=read_only, uid=options.uid, gid=options.gid, umask=options.umask)
    root = pyfuse3.ROOT_INODE
    try:
        if url.target is None:
            await _build_portal(nursery, client, url, fs, read_only, sessions, poll_interval)
            return fs, sessions
        session, luns = await client.open_target(nursery, url, url.target, read_only=read_only)
        sessions.append(session)
        fs.nodes[root].target, fs.nodes[root].session = url.target, session
        if url.lun is not None:
            luns = [(info, lun) for info, lun in luns if info.lun == url.lun]
            if not luns:
                raise NotFoundError(f"LUN {url.lun} of {url.target} does not exist or is not a disk")
        if root_is_file:
            fs.set_root_lun(*luns[0])
        else:
            for info, lun in luns:
                fs.add_lun(root, str(info.lun), info, lun)
        TargetWatch(nursery, fs, session, root, read_only=read_only, only_lun=url.lun).poll(poll_interval)
        return fs, sessions
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            for s in sessions:
                await s.logout()
        raise


async def _build_portal(nursery: trio.Nursery, client: Client, url: IscsiUrl, fs: IscsiFs, read_only: bool,
                        sessions: list[Session], poll_interval: float) -> None:
    targets = sorted(await client.discover(url), key=lambda t: t.name)
    failures: list[IscsiError] = []
    for target in targets:
        try:
            session, luns = await client.open_target(nursery, url, target.name, read_only=read_only)
        except IscsiError as exc:
            log.warning("skipping target %s: %s", target.name, exc)
            failures.append(exc)
            continue
        sessions.append(session)
        directory = fs.add_dir(pyfuse3.ROOT_INODE, target.name, target=target.name, session=session)
        for info, lun in luns:
            fs.add_lun(directory, str(info.lun), info, lun)
        TargetWatch(nursery, fs, session, directory, read_only=read_only).poll(poll_interval)
    if failures and not sessions:
        raise failures[0]


def abandon_unreachable(sessions: list[Session]) -> None:
    """Unmounting during an outage: waiting out recovery_timeout would hold the unmount hostage,
    so requests waiting on a recovery fail now."""
    for session in sessions:
        if session.recovering:
            log.warning("unmounting while %s is unreachable: its pending I/O fails now", session.target_name)
            session.close_now()


async def shutdown(luns: list[Lun], sessions: list[Session]) -> None:
    """Flush what was written, then log out: what unmount and SIGTERM do."""
    abandon_unreachable(sessions)
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT) as scope:
        for lun in luns:
            if lun.dirty and lun.session.alive:
                try:
                    await lun.flush()
                except IscsiError as exc:
                    log.error("flushing %s/%d on unmount failed: %s", lun.session.target_name, lun.lun, exc)
        for session in sessions:
            await session.logout()
    if scope.cancelled_caught:
        log.warning("targets did not answer within %.0f s at unmount; closed anyway", SHUTDOWN_TIMEOUT)


async def serve(client: Client, url: IscsiUrl, mountpoint: str, options: MountOptions,
                ready: Callable[[], None], on_exit: Callable[[], None] | None = None) -> None:
    root_is_file = os.path.isfile(mountpoint)
    if root_is_file and url.lun is None:
        raise MountError(f"{mountpoint} is a file: only a LUN URL (iscsi://host/iqn/lun) can be mounted on a file")
    options = replace(options, fsname=url.without_query())
    async with trio.open_nursery() as nursery:
        fs, sessions = await build_tree(nursery, client, url, root_is_file=root_is_file, options=options)
        STATS.sessions = lambda: sum(1 for s in sessions if s.alive)
        STATS.paths = lambda: {s.target_name: [{"portal": str(p.portal), "state": p.state, "active": p.active}
                                               for p in s.paths()] for s in sessions}
        resolved = os.path.realpath(mountpoint)  # now: once mounted, resolving it would ask us

        async def apply_readahead() -> None:
            set_readahead(resolved, options.readahead_kib)

        fs.after_init = lambda: nursery.start_soon(apply_readahead)
        try:
            pyfuse3.init(fs, mountpoint, options.fuse_options())
        except (RuntimeError, OSError) as exc:
            await shutdown([], sessions)
            raise MountError(f"cannot mount on {mountpoint}: {exc}") from None
        terminated = False
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:

                async def on_signal() -> None:
                    nonlocal terminated
                    async for signum in signals:
                        log.info("received %s: unmounting", signal.Signals(signum).name)
                        terminated = True
                        abandon_unreachable(sessions)  # FUSE waits for running requests to return
                        pyfuse3.terminate()
                        return

                nursery.start_soon(on_signal)
                ready()
                n = len(fs.luns())
                log.info("mounted %s on %s (%d LUN%s)", url, mountpoint, n, "" if n == 1 else "s")
                await pyfuse3.main()
        except BaseException:
            terminated = True  # we are leaving on an error: the kernel mount is still there
            raise
        finally:
            await shutdown(fs.luns(), sessions)
            # After an external unmount (fusermount3 -u) the kernel mount is already gone.
            pyfuse3.close(unmount=terminated)
            log.info("unmounted %s", mountpoint)
            if on_exit is not None:
                on_exit()
            nursery.cancel_scope.cancel()


def mount_device(path: str) -> str | None:
    """The "major:minor" of the file system mounted last on ``path`` (resolved), from
    /proc/self/mountinfo: never a stat of the mount itself, which we may not be serving yet."""
    device = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ")
                # proc(5): the mount point is field 5, with space, tab, newline and \ as octal escapes.
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if point == path:
                    device = fields[2]
    except (OSError, IndexError):
        return None
    return device


def set_readahead(mountpoint: str, kib: int) -> None:
    """The mount's readahead, through its backing device info in sysfs (root only: without it the
    kernel's 128 KiB stays, which is only slower). Only after INIT is answered: the kernel sets
    readahead from that answer, and never above 128 KiB. ``mountpoint`` is resolved already."""
    device = mount_device(mountpoint)
    if device is None:
        log.debug("readahead: %s is not in /proc/self/mountinfo; left as it is", mountpoint)
        return
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(str(kib))
    except OSError as exc:
        log.debug("readahead of %s left as it is: %s", mountpoint, exc.strerror or exc)

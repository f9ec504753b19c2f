"""Serving a mount: log in, build the tree, mount with pyfuse3, serve until unmounted.

Run inside ``trio.run``. ``ready(message)`` is called once the kernel mount is live, so the CLI
can return only then (as sshfs does).
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import pyfuse3
import trio

from iscsifs.client import Client, LunInfo, LunScan, NotFoundError, open_lun, scan
from iscsifs import logs
from iscsifs.fs import IscsiFs
from iscsifs.lun import Lun
from iscsifs.mountpoint import MountError, mount_device
from iscsifs.net.arena import ArenaBuffers
from iscsifs.net.pool import PooledSession, SessionPool
from iscsifs.net.remote import Workers
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
# pyfuse3's request tasks kept waiting for /dev/fuse. Its default (1) ends a task whenever more
# than one is idle and starts one whenever none is, which under a queue of requests is a task
# spawn and exit per few requests. Measured against tgt (fio, 4 KiB, two runs each): random read
# QD32 8230/8690 -> 9256/9192 IOPS with 32 (8: 9335/9013), random write QD32 7651/7893 ->
# 8636/8382, QD1 3987/3992 -> 4262/4297; the FUSE process's CPU per read 114-121 -> 107-108 µs.
FUSE_TASKS = 32
# Sessions are kept while the mount lives (as open-iscsi keeps its logins): a logged-in session
# costs a target little, keeps the first I/O fast and keeps the tree following the target. A
# portal with many rarely used targets sets idle_timeout; max_sessions bounds it regardless.
DEFAULT_IDLE_TIMEOUT = 0.0
DEFAULT_MAX_SESSIONS = 64


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
    detect_zeroes: str = "off"  # "on", "unmap": see iscsifs.lun.Lun.write_blocks
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_sessions: int = DEFAULT_MAX_SESSIONS
    workers: int = 0  # session worker processes (net.remote); 0: the sessions run in this process

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


async def build_tree(nursery: trio.Nursery, client: Client, url: IscsiUrl, pool: SessionPool, *,
                     root_is_file: bool, options: MountOptions, workers: Workers | None = None) -> IscsiFs:
    """Find the LUNs (logging in through the pool), build the tree, watch each target."""
    # With workers, read buffers come from the arena they receive Data-In into.
    buffers = ArenaBuffers(workers.arena) if workers is not None else None
    fs = IscsiFs(read_only=options.read_only, uid=options.uid, gid=options.gid, umask=options.umask, buffers=buffers)
    root = pyfuse3.ROOT_INODE
    try:
        if url.target is None:
            await _build_portal(nursery, client, url, pool, fs, options)
            return fs
        handle = pool.session(url.target, client.portals(url, url.target))
        luns, known = await _scan(handle, options)
        fs.nodes[root].target, fs.nodes[root].session = url.target, handle
        if url.lun is not None:
            luns = [(info, lun) for info, lun in luns if info.lun == url.lun]
            if not luns:
                raise NotFoundError(f"LUN {url.lun} of {url.target} does not exist or is not a disk")
        if root_is_file:
            fs.set_root_lun(*luns[0])
        else:
            for info, lun in luns:
                fs.add_lun(root, str(info.lun), info, lun)
        _watch(nursery, client, fs, handle, root, options, known, only_lun=url.lun)
        return fs
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await pool.close()
        raise


async def _scan(handle: PooledSession, options: MountOptions) -> tuple[list[tuple[LunInfo, Lun]], LunScan]:
    """The target's disk LUNs, opened, and the numbers of every LUN it reported (for the watch)."""
    handle.hold()  # not logged out between two of the scan's commands to make room for another
    try:
        found = await scan(handle)
    finally:
        handle.release()
    luns = [(info, open_lun(handle, info, options.read_only, options.detect_zeroes)) for info in found.luns
            if info.is_disk]
    handle.scan_done()
    return luns, found


def _watch(nursery: trio.Nursery, client: Client, fs: IscsiFs, handle: PooledSession, directory: int,
           options: MountOptions, known: LunScan, only_lun: int | None = None) -> None:
    watch = TargetWatch(nursery, fs, handle, directory, read_only=options.read_only, only_lun=only_lun,
                        detect_zeroes=options.detect_zeroes)
    # Logged in again after being logged out for idleness: LUNs may have changed meanwhile.
    handle.on_reopen = watch.rescan_soon if only_lun is None else None
    watch.poll(client.config.recovery.nop_interval, handle.logged_in, known)


async def _build_portal(nursery: trio.Nursery, client: Client, url: IscsiUrl, pool: SessionPool, fs: IscsiFs,
                        options: MountOptions) -> None:
    """Every target of the portal, scanned concurrently: the pool bounds how many log in at once
    (max_sessions), and logs the least recently used out when it needs room."""
    targets = sorted(await client.discover(url), key=lambda t: t.name)
    scanned: dict[str, tuple[list[tuple[LunInfo, Lun]], LunScan]] = {}
    failures: list[IscsiError] = []

    async def scan(name: str) -> None:
        try:
            scanned[name] = await _scan(pool.session(name, client.portals(url, name)), options)
        except IscsiError as exc:
            log.warning("skipping target %s: %s", name, exc)
            failures.append(exc)

    async with trio.open_nursery() as scans:
        for target in targets:
            scans.start_soon(scan, target.name)
    if failures and not scanned:
        raise failures[0]
    for name, (luns, known) in sorted(scanned.items()):
        handle = pool.handles[name]
        directory = fs.add_dir(pyfuse3.ROOT_INODE, name, target=name, session=handle)
        for info, lun in luns:
            fs.add_lun(directory, str(info.lun), info, lun)
        _watch(nursery, client, fs, handle, directory, options, known)


def abandon_unreachable(pool: SessionPool) -> None:
    """Unmounting during an outage: waiting out recovery_timeout would hold the unmount hostage,
    so requests waiting on a recovery fail now."""
    for session in pool.recovering():
        log.warning("unmounting while %s is unreachable: its pending I/O fails now", session.target_name)
        session.close_now()


async def shutdown(luns: list[Lun], pool: SessionPool) -> None:
    """Flush what was written, then log out: what unmount and SIGTERM do."""
    abandon_unreachable(pool)
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT) as scope:
        for lun in luns:
            if lun.dirty and lun.session.alive:
                try:
                    await lun.flush()
                except IscsiError as exc:
                    log.error("flushing %s/%d on unmount failed: %s", lun.session.target_name, lun.lun, exc)
        await pool.close()
    if scope.cancelled_caught:
        log.warning("targets did not answer within %.0f s at unmount; closed anyway", SHUTDOWN_TIMEOUT)


async def serve(client: Client, url: IscsiUrl, mountpoint: str, options: MountOptions,
                ready: Callable[[], None], on_exit: Callable[[], None] | None = None) -> None:
    root_is_file = os.path.isfile(mountpoint)
    if root_is_file and url.lun is None:
        raise MountError(f"{mountpoint} is a file: only a LUN URL (iscsi://host/iqn/lun) can be mounted on a file")
    options = replace(options, fsname=url.without_query())
    async with trio.open_nursery() as nursery:
        workers = await Workers.start(nursery, options.workers) if options.workers else None
        try:
            await _serve(nursery, client, url, mountpoint, options, ready, on_exit, root_is_file, workers)
        finally:
            if workers is not None:
                with trio.CancelScope(shield=True):
                    await workers.close()
            nursery.cancel_scope.cancel()


async def _serve(nursery: trio.Nursery, client: Client, url: IscsiUrl, mountpoint: str, options: MountOptions,
                 ready: Callable[[], None], on_exit: Callable[[], None] | None, root_is_file: bool,
                 workers: Workers | None) -> None:
    opener = partial(client.login, nursery, url) if workers is None else partial(client.login_remote, workers, url)
    pool = SessionPool(nursery, opener, idle_timeout=options.idle_timeout, max_sessions=options.max_sessions)
    fs = await build_tree(nursery, client, url, pool, root_is_file=root_is_file, options=options, workers=workers)
    STATS.sessions = lambda: pool.logged_in
    STATS.reconnects = lambda: sum(h.reconnects for h in pool.handles.values())
    if workers is not None:
        STATS.workers = lambda: (len(workers.processes), sum(p.restarts for p in workers.processes))
    STATS.paths = lambda: {name: [{"portal": str(p.portal), "state": p.state, "active": p.active}
                                  for p in handle.paths()] for name, handle in pool.handles.items()}
    resolved = os.path.realpath(mountpoint)  # now: once mounted, resolving it would ask us

    async def apply_readahead() -> None:
        set_readahead(resolved, options.readahead_kib)

    fs.after_init = lambda: nursery.start_soon(apply_readahead)
    try:
        pyfuse3.init(fs, mountpoint, options.fuse_options())
    except (RuntimeError, OSError) as exc:
        await shutdown([], pool)
        raise MountError(f"cannot mount on {mountpoint}: {exc}") from None
    terminated = False
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:

            async def on_signal() -> None:
                nonlocal terminated
                async for signum in signals:
                    if signum == signal.SIGHUP:  # logrotate moved the log file away
                        logs.reopen()
                        log.info("received SIGHUP: log file reopened")
                        continue
                    log.info("received %s: unmounting", signal.Signals(signum).name)
                    terminated = True
                    abandon_unreachable(pool)  # FUSE waits for running requests to return
                    pyfuse3.terminate()
                    return

            nursery.start_soon(on_signal)
            ready()
            n = len(fs.luns())
            log.info("mounted %s on %s (%d LUN%s)", url, mountpoint, n, "" if n == 1 else "s")
            await pyfuse3.main(min_tasks=FUSE_TASKS)
    except BaseException:
        terminated = True  # we are leaving on an error: the kernel mount is still there
        raise
    finally:
        await shutdown(fs.luns(), pool)
        # After an external unmount (fusermount3 -u) the kernel mount is already gone.
        pyfuse3.close(unmount=terminated)
        log.info("unmounted %s", mountpoint)
        if on_exit is not None:
            on_exit()


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

"""Serving a mount: log in, build the tree, mount with pyfuse3, serve until unmounted.

Run inside ``trio.run``. Starting is one transaction: once the kernel mount is made,
``prepare()`` does the caller's last steps that may fail, then ``-o setuid`` drops privileges, and
only then ``ready()`` tells the caller the mount is live, so the CLI returns only then (as sshfs
does) and a failure before it unmounts and is the command's error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from functools import partial

import pyfuse3
import trio

from iscsifs.block.changer import Changer
from iscsifs.block.client import Client, LunInfo, LunScan, NotFoundError, open_lun, scan
from iscsifs.block.lun import DetectZeroes, Lun
from iscsifs.block.reservation import Reservations
from iscsifs.block.stats import Stats, prometheus_text
from iscsifs.block.tape import TapeDrive
from iscsifs.mount import logs
from iscsifs.mount.fs import CacheMode, IscsiFs
from iscsifs.mount.fuseloop import FuseWait
from iscsifs.mount.mountpoint import MountError, mount_device
from iscsifs.mount.tape import ChangerFile, TapeFile
from iscsifs.mount.tree import ROOT_INODE, Tree, usable_name
from iscsifs.mount.watch import TargetWatch
from iscsifs.net.api import MountedTarget
from iscsifs.net.arena import ArenaBuffers
from iscsifs.net.pool import Opener, PooledTarget, TargetPool
from iscsifs.net.privileges import Credentials, EndingThreadResolver, PrivilegeError, drop_privileges
from iscsifs.net.turnend import TurnEnd, turn_end
from iscsifs.net.workers import Workers
from iscsifs.proto.errors import IscsiError
from iscsifs.scsi.persistent import PrType, key_text
from iscsifs.scsi.response import DeviceType
from iscsifs.url import IscsiUrl

log = logging.getLogger("iscsifs")

SHUTDOWN_TIMEOUT = 10.0
# What the calls to session workers carry, pickled by name: the identity check (block.command)
# and the registrars (block.reservation). A worker imports them before it drops privileges.
WORKER_PRELOAD = ("iscsifs.block.command", "iscsifs.block.reservation")


# The kernel's readahead for a FUSE mount is 128 KiB. A whole 1 MiB (our largest command) makes
# buffered sequential reads (cat, cp, dd without O_DIRECT) ~55% faster against tgt: measured
# 128 -> 438-475 MiB/s, 512 -> 668-676, 1024 -> 711-714, 2048 -> 672-681, 4096 -> 587-655.
DEFAULT_READAHEAD_KIB = 1024
# How long the loop polls before it sleeps, while its sleeps are shorter than that on average
# (net.turnend): about what waking a halted vCPU costs, so that only waits of its order are
# polled. 50 us: 1.08x the reads at 4 KiB QD1, 1 MiB reads and writes even (0.99x, 0.98x);
# 200 us: 1.04-1.10x, but 1 MiB writes 0.96x (bench/README.md, "VM 3, fifth visit").
DEFAULT_POLL_US = 50
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
    poll_us: int = DEFAULT_POLL_US  # polling before the loop sleeps, without session workers (net.turnend)
    detect_zeroes: DetectZeroes = DetectZeroes.OFF
    cache: CacheMode = CacheMode.NONE  # the kernel's page cache for writes (mount.fs)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_sessions: int = DEFAULT_MAX_SESSIONS
    workers: int = 0  # session worker processes (net.remote); 0: the sessions run in this process
    reservation_key: int | None = None  # registered on every LUN, every nexus (block.reservation)
    reservation: PrType | None = None  # and this reservation held on each
    metrics_file: str | None = None  # rewritten (atomically) every nop_interval, Prometheus text format
    setuid: Credentials | None = None  # once the mount is live, every process runs as them (net.privileges)

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


async def build_tree(nursery: trio.Nursery, client: Client, url: IscsiUrl, pool: TargetPool, *,
                     root_is_file: bool, options: MountOptions, stats: Stats | None = None) -> Tree:
    """Find the LUNs (logging in through the pool), build the tree, watch each target. Their
    commands are counted in ``stats``, the mount's."""
    tree = Tree()
    try:
        if url.target is None:
            await _build_portal(nursery, client, url, pool, tree, options, stats)
            return tree
        handle = pool.target(url.target, client.portals(url, url.target))
        luns, known = await _scan(handle, options, stats)
        tree.root.target = handle
        if url.lun is not None:
            luns = [(info, lun) for info, lun in luns if info.lun == url.lun]
            if not luns:
                raise NotFoundError(f"LUN {url.lun} of {url.target} does not exist or is not a disk")
        if root_is_file:
            tree.set_root_lun(*luns[0], handle)
        else:
            for info, lun in luns:
                tree.add_lun(ROOT_INODE, str(info.lun), info, lun, handle)
            if url.lun is None:
                add_devices(tree, ROOT_INODE, known, handle, stats)
        _watch(nursery, client, tree, handle, ROOT_INODE, options, known, stats, only_lun=url.lun)
        return tree
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(client.config.recovery.error_logout_timeout):
            await pool.close()
        raise


async def _scan(handle: PooledTarget, options: MountOptions,
                stats: Stats | None) -> tuple[list[tuple[LunInfo, Lun]], LunScan]:
    """The target's disk LUNs, opened, and the numbers of every LUN it reported (for the watch)."""
    handle.hold()  # not logged out between two of the scan's commands to make room for another
    try:
        found = await scan(handle, stats)
    finally:
        handle.release()
    luns = [(info, open_lun(handle, info, options.read_only, options.detect_zeroes, stats)) for info in found.luns
            if info.is_disk]
    handle.scan_done()
    if options.reservation_key is not None:
        await _join_all(handle, [lun for _info, lun in luns], options)
    return luns, found


async def _join_all(handle: PooledTarget, luns: list[Lun], options: MountOptions) -> None:
    """Register the mount's key on every LUN (``-o reservation_key``), or on none: a LUN that
    cannot fails the target, and the LUNs registered before it are unregistered again."""
    assert options.reservation_key is not None
    joined: list[Lun] = []
    try:
        for lun in luns:
            await Reservations(handle, lun.lun, lun.pr).join(options.reservation_key, options.reservation)
            joined.append(lun)
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
            for lun in joined:
                try:
                    await Reservations(handle, lun.lun, lun.pr).leave()
                except IscsiError as exc:
                    log.warning("unregistering LUN %d of %s again failed: %s", lun.lun, handle.target_name, exc)
        raise


def add_devices(tree: Tree, directory: int, found: LunScan, target: MountedTarget, stats: Stats | None) -> None:
    """The target's tape drives and medium changers as files beside its disks, named by LUN number
    as they are. Each drive gets its one ``TapeDrive`` for the mount's life: the position is kept
    there. They are shown as the scan found them; a rescan adds or removes disks only."""
    for info in found.luns:
        kind = info.inquiry.device_type
        name = str(info.lun)
        if kind == DeviceType.SEQUENTIAL_ACCESS:
            tree.add_device(directory, name, info, target, tape=TapeFile(TapeDrive(target, info.lun, stats)))
        elif kind == DeviceType.MEDIUM_CHANGER:
            tree.add_device(directory, name, info, target, changer=ChangerFile(Changer(target, info.lun, stats)))


def _watch(nursery: trio.Nursery, client: Client, tree: Tree, handle: PooledTarget, directory: int,
           options: MountOptions, known: LunScan, stats: Stats | None, only_lun: int | None = None) -> None:
    watch = TargetWatch(nursery, tree, handle, directory, read_only=options.read_only, only_lun=only_lun,
                        detect_zeroes=options.detect_zeroes, rescan_timeout=client.config.recovery.rescan_timeout,
                        reservation_key=options.reservation_key, reservation=options.reservation, stats=stats,
                        missing_grace=client.config.recovery.nop_interval)
    # Logged in again after being logged out for idleness: LUNs may have changed meanwhile.
    handle.on_reopen = watch.rescan_soon if only_lun is None else None
    watch.poll(client.config.recovery.nop_interval, handle.logged_in, known)


async def _build_portal(nursery: trio.Nursery, client: Client, url: IscsiUrl, pool: TargetPool, tree: Tree,
                        options: MountOptions, stats: Stats | None) -> None:
    """Every target of the portal, scanned concurrently: the pool bounds how many log in at once
    (max_sessions), and logs the least recently used out when it needs room."""
    targets = []
    for target in sorted(await client.discover(url), key=lambda t: t.name):
        if usable_name(target.name):
            targets.append(target)
        else:  # SendTargets is the target's word too: a name that cannot be a directory is left out
            log.warning("skipping target %r: its name cannot name a directory", target.name[:300])
    scanned: dict[str, tuple[list[tuple[LunInfo, Lun]], LunScan]] = {}
    failures: list[IscsiError] = []

    async def scan(name: str) -> None:
        try:
            scanned[name] = await _scan(pool.target(name, client.portals(url, name)), options, stats)
        except IscsiError as exc:
            log.warning("skipping target %s: %s", name, exc)
            failures.append(exc)

    async with trio.open_nursery() as scans:
        for target in targets:
            scans.start_soon(scan, target.name)
    if failures and not scanned:
        raise failures[0]
    for name, (luns, known) in sorted(scanned.items()):
        handle = pool.targets[name]
        directory = tree.add_dir(ROOT_INODE, name, handle)
        for info, lun in luns:
            tree.add_lun(directory, str(info.lun), info, lun, handle)
        add_devices(tree, directory, known, handle, stats)
        _watch(nursery, client, tree, handle, directory, options, known, stats)


def abandon_unreachable(pool: TargetPool) -> None:
    """Unmounting during an outage: waiting out recovery_timeout would hold the unmount hostage,
    so requests waiting on a recovery fail now."""
    for session in pool.recovering():
        log.warning("unmounting while %s is unreachable: its pending I/O fails now", session.target_name)
        session.close_now()


async def shutdown(files: list[tuple[Lun, MountedTarget]], pool: TargetPool) -> None:
    """Flush what was written, then log out: what unmount and SIGTERM do."""
    abandon_unreachable(pool)
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT) as scope:
        for lun, target in files:
            if lun.dirty and target.alive:
                try:
                    await lun.flush()
                except IscsiError as exc:
                    log.error("flushing %s/%d on unmount failed: %s", target.target_name, lun.lun, exc)
        for lun, target in files:
            if lun.pr.key is not None and target.alive:
                try:
                    await Reservations(target, lun.lun, lun.pr).leave()
                except IscsiError as exc:
                    log.error("unregistering %s/%d on unmount failed: %s", target.target_name, lun.lun, exc)
        await pool.close()
    if scope.cancelled_caught:
        log.warning("targets did not answer within %.0f s at unmount; closed anyway", SHUTDOWN_TIMEOUT)


async def serve(client: Client, url: IscsiUrl, mountpoint: str, options: MountOptions,
                prepare: Callable[[], None], ready: Callable[[], None],
                on_exit: Callable[[], None] | None = None) -> None:
    """Log in, mount, serve until unmounted; ``prepare`` once mounted (still privileged; it may
    raise, which fails the mount), ``ready`` once the mount is live (it must not fail),
    ``on_exit`` after."""
    await Mount(client, url, mountpoint, options).run(prepare, ready, on_exit)


class Mount:
    """One mount's life: the workers, the pool of targets, the tree, and FUSE serving it."""

    def __init__(self, client: Client, url: IscsiUrl, mountpoint: str, options: MountOptions) -> None:
        self.root_is_file = os.path.isfile(mountpoint)
        if self.root_is_file and url.lun is None:
            raise MountError(f"{mountpoint} is a file: only a LUN URL (iscsi://host/iqn/lun) can be mounted on a file")
        self.client = client
        self.url = url
        self.mountpoint = mountpoint
        self.options = replace(options, fsname=url.without_query())
        self.terminated = False  # we unmount (a signal, an error), rather than fusermount3 -u
        self._wait: FuseWait | None = None  # in place of pyfuse3's wait for requests (``mount.fuseloop``)
        self.mounted = False  # the kernel mount is made
        self.dropped = False  # running as -o setuid's user: the unmount monitor unmounts
        self.live = False  # ready() was called: the caller has said it is mounted
        self.failure: BaseException | None = None  # why the mount ends on its own (its start failed)
        self.gauges = MountGauges()
        self.stats = Stats(self.gauges)  # every command of this mount's LUNs and scans is counted here

    def __repr__(self) -> str:
        return f"<Mount {self.url} on {self.mountpoint}>"

    async def run(self, prepare: Callable[[], None], ready: Callable[[], None],
                  on_exit: Callable[[], None] | None) -> None:
        if self.options.setuid is not None:
            # A thread alive at the drop would keep root's privileges (net.privileges).
            trio.socket.set_custom_hostname_resolver(EndingThreadResolver())
        async with trio.open_nursery() as nursery:
            workers = (await Workers.start(nursery, self.options.workers, credentials=self.options.setuid,
                                           preload=WORKER_PRELOAD) if self.options.workers else None)
            try:
                if workers is None:
                    opener: Opener = partial(self.client.login, nursery, self.url)
                else:
                    opener = partial(self.client.login_remote, workers, self.url)
                    self.gauges.session_workers = workers
                pool = TargetPool(nursery, opener, self.client.config.recovery, idle_timeout=self.options.idle_timeout,
                                  max_sessions=self.options.max_sessions)
                self.gauges.pool = pool
                tree = await build_tree(nursery, self.client, self.url, pool, root_is_file=self.root_is_file,
                                        options=self.options, stats=self.stats)
                self.gauges.tree = tree
                # With workers, read buffers come from the arena they receive Data-In into.
                fs = IscsiFs(tree, read_only=self.options.read_only, uid=self.options.uid, gid=self.options.gid,
                             umask=self.options.umask, mountpoint=os.path.abspath(self.mountpoint),
                             buffers=ArenaBuffers(workers.arena) if workers is not None else None, stats=self.stats,
                             writeback=self.options.cache is CacheMode.WRITEBACK)
                if self.options.metrics_file is not None:
                    nursery.start_soon(_write_metrics_every, self.options.metrics_file, self.stats,
                                       self.client.config.recovery.nop_interval)
                try:
                    await self._serve(nursery, fs, pool, prepare, ready)
                finally:
                    await shutdown(tree.files(), pool)
                    if self.options.metrics_file is not None:
                        write_metrics(self.options.metrics_file, self.stats)  # the last figures, logged out
                    # After an external unmount (fusermount3 -u) the kernel mount is already gone.
                    if self.mounted and self.dropped:
                        # Without privileges we cannot unmount: the monitor does, once we are gone.
                        pyfuse3.close(unmount=False)
                        log.info("closed %s; the unmount monitor unmounts it", self.mountpoint)
                    elif self.mounted:
                        pyfuse3.close(unmount=self.terminated)
                        if self.live:  # else it never was, for the caller: its error says why
                            log.info("unmounted %s", self.mountpoint)
                    if on_exit is not None:
                        on_exit()
            finally:
                if workers is not None:
                    with trio.CancelScope(shield=True):
                        await workers.close()
                nursery.cancel_scope.cancel()

    async def _serve(self, nursery: trio.Nursery, fs: IscsiFs, pool: TargetPool, prepare: Callable[[], None],
                     ready: Callable[[], None]) -> None:
        resolved = os.path.realpath(self.mountpoint)  # now: once mounted, resolving it would ask us

        async def apply_readahead() -> None:
            set_readahead(resolved, self.options.readahead_kib)

        async def then_go_live() -> None:
            await apply_readahead()  # root's, before the drop
            try:
                self._go_live(fs, prepare, ready)
            except Exception as exc:  # noqa: BLE001 - raised by _serve once FUSE has stopped
                self.failure = exc
                self.terminated = True
                self._terminate()

        # With -o setuid the mount is reported live once it runs as the user: after the kernel's
        # INIT (readahead is set from its answer, by root) and the drop.
        fs.after_init = lambda: nursery.start_soon(apply_readahead if self.options.setuid is None else then_go_live)
        try:
            pyfuse3.init(fs, self.mountpoint, self.options.fuse_options())
        except (RuntimeError, OSError) as exc:
            raise MountError(f"cannot mount on {self.mountpoint}: {exc}") from None
        self.mounted = True
        self._wait = FuseWait.install()
        if self._wait is not None and not self.options.workers:
            # Every wait of this process is then on a socket to a target or on /dev/fuse, and
            # each is watched. A session worker's answers come on a channel: no polling there.
            self.gauges.turn_end = turn_end()
            self.gauges.turn_end.poll_before_sleep(self.options.poll_us)
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                if self.options.setuid is None:
                    # Before the signal task starts: should this fail, it must not start on a
                    # receiver already closed (signals until then wait in it).
                    self._go_live(fs, prepare, ready)
                nursery.start_soon(self._on_signals, signals, pool)
                await pyfuse3.main(min_tasks=FUSE_TASKS)
            if self.failure is not None:
                raise self.failure
        except BaseException:
            self.terminated = True  # we are leaving on an error: the kernel mount is still there
            raise
        finally:
            if self._wait is not None:
                self._wait.uninstall()

    def _terminate(self) -> None:
        """End pyfuse3's loop: through the wait that stands in for its own, which must know."""
        if self._wait is not None:
            self._wait.terminate()
        else:
            pyfuse3.terminate()

    def _go_live(self, fs: IscsiFs, prepare: Callable[[], None], ready: Callable[[], None]) -> None:
        """What may still fail (the caller's ``prepare``, the privilege drop) before ``ready``
        tells anyone the mount is live; the log lines after, where the mount logs from then on."""
        prepare()
        setuid = self.options.setuid
        if setuid is not None:
            try:
                drop_privileges(setuid)
            except PrivilegeError as exc:
                raise MountError(f"not mounting {self.mountpoint}: {exc.strerror or exc}") from None
            self.dropped = True
        self.live = True
        ready()
        n = len(fs.tree.luns())
        tapes = sum(1 for node in fs.tree.nodes.values() if node.tape is not None)
        changers = sum(1 for node in fs.tree.nodes.values() if node.changer is not None)
        devices = (f", {tapes} tape drive{'' if tapes == 1 else 's'}" if tapes else "") + (
            f", {changers} medium changer{'' if changers == 1 else 's'}" if changers else "")
        log.info("mounted %s on %s (%d LUN%s%s)", self.url, self.mountpoint, n, "" if n == 1 else "s", devices)
        if setuid is not None:
            log.info("running as %s (uid %d, gid %d), without capabilities", setuid.user, setuid.uid, setuid.gid)

    async def _on_signals(self, signals: AsyncIterator[int], pool: TargetPool) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:  # logrotate moved the log file away
                logs.reopen()
                log.info("received SIGHUP: log file reopened")
                continue
            log.info("received %s: unmounting", signal.Signals(signum).name)
            self.terminated = True
            abandon_unreachable(pool)  # FUSE waits for running requests to return
            self._terminate()
            return


class MountGauges:
    """What ``iscsifs stats`` shows of the mount beside its counts (``block.stats.Gauges``), read
    when asked: the pool and the tree once the mount has made them, its session workers if any."""

    def __init__(self) -> None:
        self.pool: TargetPool | None = None
        self.tree: Tree | None = None
        self.session_workers: Workers | None = None
        self.turn_end: TurnEnd | None = None  # where the loop polls before it sleeps, if it does

    def sessions(self) -> int:
        return self.pool.logged_in if self.pool is not None else 0

    def reconnects_by_target(self) -> dict[str, int]:
        return {name: h.reconnects for name, h in self.pool.targets.items()} if self.pool is not None else {}

    def paths(self) -> dict[str, list[dict[str, object]]]:
        if self.pool is None:
            return {}
        return {name: [{"portal": str(p.portal), "state": p.state, "active": p.active, "isid": p.isid}
                       for p in handle.paths()] for name, handle in self.pool.targets.items()}

    def reservations(self) -> dict[str, dict[str, object]]:
        if self.tree is None:
            return {}
        return {f"{target.target_name}/{lun.lun}": {"key": key_text(lun.pr.key), "registered": not lun.pr.fenced,
                                                    "fenced": lun.pr.fenced,
                                                    "reservation": lun.pr.reservation.word if lun.pr.reservation
                                                    else None}
                for lun, target in self.tree.files() if lun.pr.key is not None}

    def workers(self) -> int:
        return len(self.session_workers.processes) if self.session_workers is not None else 0

    def worker_restarts(self) -> int:
        return sum(p.restarts for p in self.session_workers.processes) if self.session_workers is not None else 0

    def loop_polls(self) -> tuple[int, int]:
        hook = self.turn_end
        return (hook.polled, hook.polled_ready) if hook is not None else (0, 0)

    def own_answers(self) -> int:
        hook = self.turn_end
        return hook.own_answers if hook is not None else 0


def write_metrics(path: str, stats: Stats) -> None:
    """The statistics as Prometheus text, replacing ``path`` at once (a file in the same
    directory, then rename), so node_exporter's textfile collector never reads half a file."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(prometheus_text(stats.snapshot()))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the metrics file %s: %s", path, exc.strerror or exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


async def _write_metrics_every(path: str, stats: Stats, interval: float) -> None:
    while True:
        write_metrics(path, stats)
        await trio.sleep(interval)


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

"""The ``iscsifs`` command: mount (or the demo), ``ls``, ``stats``, ``discard``, ``map``, ``pr``, ``inq``,
``opcodes``, ``raw``, ``mt`` and ``mtx``; exit codes.

Errors are one line on stderr and a documented exit code; never a traceback (``-d`` adds one).
Its parts: ``options`` (the command line as typed values), ``daemon`` (going to the background,
sd_notify, the pid file), ``logs``, ``demo``, ``report`` (what ls and stats print),
``mountpoint`` (the checks before mounting).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import setproctitle
import trio

from iscsifs.block.client import Client, LunInfo, NotFoundError
from iscsifs.block.command import command
from iscsifs.block.stats import prometheus_text
from iscsifs.cli.daemon import PidFile, daemonize, detach_stdio, report, sd_notify
from iscsifs.cli.demo import Demo
from iscsifs.cli.options import (
    Command,
    DiscardCommand,
    InqCommand,
    LsCommand,
    MapCommand,
    MountCommand,
    MtCommand,
    MtxCommand,
    OpcodesCommand,
    Options,
    PrAction,
    PrCommand,
    RawCommand,
    RawUsageError,
    StatsCommand,
    UsageError,
    parse_command,
)
from iscsifs.cli.report import (
    human_bytes,
    ls_table,
    lun_record,
    map_text,
    merge_extents,
    pr_text,
    stats_text,
)
from iscsifs.mount import logs
from iscsifs.mount.fs import (
    CAP_SYS_RAWIO,
    DISCARD_XATTR,
    KIND_XATTR,
    MAP_XATTR_PREFIX,
    MT_DO_PREFIX,
    MT_READ_VERBS,
    MT_STATUS_XATTR,
    MT_TELL_XATTR,
    MT_XATTR,
    MTX_STATUS_XATTR,
    MTX_XATTR,
    PR_ACTION_XATTR,
    PR_XATTR,
    QUERY_XATTR_PREFIX,
    RAW_MAX_DATA,
    RAW_XATTR,
    STATS_XATTR,
    RawRequest,
    RawResult,
    pack_raw_request,
    unpack_raw_result,
)
from iscsifs.mount.mountpoint import MountError, check_mountpoint, containing_mount, start_unmount_monitor
from iscsifs.mount.serve import serve
from iscsifs.net.dial import ConnectError
from iscsifs.net.multipath import Multipath
from iscsifs.net.nursery import first_error, single_error
from iscsifs.net.privileges import PrivilegeError, check_can_become
from iscsifs.proto.errors import AuthenticationError, IscsiError, LoginError, TimedOut
from iscsifs.scsi import cdb as cdbs
from iscsifs.scsi import raw as sg
from iscsifs.scsi import vpd
from iscsifs.scsi.persistent import key_text
from iscsifs.scsi.response import ScsiParseError
from iscsifs.scsi.sense import ScsiError, Status, parse_sense
from iscsifs.url import IscsiUrl, UrlError, parse_url

log = logging.getLogger("iscsifs")

EXIT_OK = 0
EXIT_ERROR = 1  # unexpected internal error
EXIT_USAGE = 2  # bad command line, URL, option or mount point
EXIT_CONNECT = 3  # portal unreachable or not answering in time
EXIT_AUTH = 4  # login refused: authentication or authorization
EXIT_NOT_FOUND = 5  # no such target or LUN
EXIT_MOUNT = 6  # the FUSE mount itself failed, or the mount point is busy
EXIT_TARGET = 7  # the target misbehaved or failed a command


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, RawUsageError):
        return sg.EXIT_SYNTAX_ERROR
    if isinstance(exc, RawFileError):
        return sg.EXIT_FILE_ERROR
    if isinstance(exc, RawTimeout):
        return sg.EXIT_TIMEOUT
    if isinstance(exc, (UsageError, UrlError)):
        return EXIT_USAGE
    if isinstance(exc, (ConnectError, TimedOut)):
        return EXIT_CONNECT
    if isinstance(exc, LoginError):
        if exc.is_authentication:
            return EXIT_AUTH
        if exc.is_not_found:
            return EXIT_NOT_FOUND
        return EXIT_TARGET
    if isinstance(exc, AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, MountError):
        return EXIT_MOUNT
    if isinstance(exc, (IscsiError, Refused)):
        return EXIT_TARGET
    return EXIT_ERROR


def error_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        # One line naming the cause, never Python's "[Errno N] ..." form.
        return f"{exc.filename}: {exc.strerror.lower()}" if exc.filename else exc.strerror.lower()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- mount -----------------------------------------------------------------------------------------


def run_mount(cmd: MountCommand) -> int:
    """Starting a mount is one transaction: what can fail (the log file, the pid file, the
    privilege drop, the session workers, the login, the mount) fails before the command is told
    the mount is live, with one line and an exit code, and leaves nothing mounted. What fails
    after is logged where the mount logs, and the daemon exits non-zero."""
    setuid = cmd.options.mount.setuid
    if cmd.url is None and setuid is not None:
        raise UsageError("-o setuid is for mounting a URL: the demo runs its own tgtd, as root")
    if setuid is not None:
        try:
            check_can_become(setuid)
        except PrivilegeError as exc:
            raise UsageError(f"-o setuid: {exc.strerror or exc}") from None
    demo = Demo() if cmd.url is None else None
    if demo is not None:
        url, mountpoint = None, demo.mountpoint
    else:
        assert cmd.url is not None
        url = parse_url(cmd.url)
        if cmd.mountpoint is None:
            raise UsageError("missing MOUNTPOINT (iscsifs URL MOUNTPOINT)")
        mountpoint = Path(cmd.mountpoint).absolute()
        check_mountpoint(str(mountpoint))
        if not mountpoint.exists():
            raise UsageError(f"mount point {mountpoint} does not exist")
        if not (mountpoint.is_dir() or mountpoint.is_file()):
            raise UsageError(f"mount point {mountpoint} is neither a directory nor a regular file")
    pid_file = PidFile(cmd.pid_file) if cmd.pid_file else None
    destination = logs.background_destination(cmd.options.log_file)
    try:
        if pid_file is not None:
            try:
                pid_file.check()
            except OSError as exc:
                raise UsageError(error_message(exc) if exc.strerror else str(exc)) from None
        # Opened now, as the user who started us: a file the daemon could not open once it runs
        # as -o setuid's user (or once the command has returned) would lose every line.
        handler = _open_log(destination) if not cmd.foreground or cmd.options.log_file is not None else None
    except UsageError:
        if demo is not None:
            demo.stop()
        raise
    if cmd.foreground and handler is not None:
        logs.also_to(handler)  # -o log_file= holds in the foreground too
    # No journal and no syslog here: once the mount is live, say where its log lines go.
    note = f"no syslog on this machine (/dev/log): the mount logs to {destination}" if destination.default else ""
    report_fd = None if cmd.foreground else daemonize(note)
    start = _Start(str(mountpoint), report_fd, handler)
    code = EXIT_ERROR  # what the daemon exits with should even the reporting below fail
    try:
        if setuid is not None:
            # Before trio starts a thread: the privileged process that unmounts once we are gone.
            start_unmount_monitor(str(mountpoint), str(pid_file.path) if pid_file is not None else None)
        trio.run(_mount_main, cmd, url, str(mountpoint), demo, pid_file, start)
        code = EXIT_OK
    except BaseException as exc:
        exc = first_error(exc)
        if isinstance(exc, KeyboardInterrupt):
            code, message = 130, "interrupted"
        else:
            code, message = exit_code_for(exc), error_message(exc)
            if cmd.debug:
                log.debug("details", exc_info=exc)
        if demo is not None:
            demo.stop()
        start.failed(code, message)
    finally:
        if report_fd is not None:
            os._exit(code)  # the daemon child: never return into the caller's stack
    return code


def _open_log(destination: logs.Destination) -> logging.Handler | None:
    try:
        return logs.open_destination(destination)
    except OSError as exc:
        what = f"the log file {destination.path}" if destination.path is not None else f"{destination} (/dev/log)"
        raise UsageError(f"cannot open {what}: {(exc.strerror or str(exc)).lower()}") from None


class _Start:
    """Whether the command has been told the mount is live, and so where an error goes: to the
    waiting command (one line, its exit code) before; to the mount's log after, when nobody
    waits any more."""

    def __init__(self, mountpoint: str, report_fd: int | None, handler: logging.Handler | None) -> None:
        self.mountpoint = mountpoint
        self.report_fd = report_fd  # None: in the foreground
        self.handler = handler  # the background's log, opened before the fork (None: the journal)
        self.live = False

    def __repr__(self) -> str:
        return f"<_Start {self.mountpoint} {'live' if self.live else 'starting'}>"

    def ready(self, message: str) -> None:
        """The mount is live (and runs as -o setuid's user): nothing here may fail."""
        report(self.report_fd, EXIT_OK, message)
        self.live = True
        if self.report_fd is not None:
            detach_stdio(keep_stderr=self.handler is None)  # no handler: stderr is the journal's stream
            logs.to_background(self.handler)

    def failed(self, code: int, message: str) -> None:
        if self.live:
            log.error("the mount on %s failed: %s (exit status %d)", self.mountpoint, message, code)
            return
        report(self.report_fd, code, message)
        if self.handler is not None:  # the log file or syslog records failed starts too
            self.handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "not mounted on %s: %s",
                                               (self.mountpoint, message), None))


async def _mount_main(cmd: MountCommand, url: IscsiUrl | None, mountpoint: str, demo: Demo | None,
                      pid_file: PidFile | None, start: _Start) -> None:
    message = ""
    if demo is not None:
        url = parse_url(await trio.to_thread.run_sync(demo.start))
        message = demo.message(cmd.foreground)
    assert url is not None
    client = Client.for_url(url, cmd.options.connect)

    def prepare() -> None:
        """The mount is made; this is the last step that may fail, still privileged."""
        if pid_file is not None:
            try:
                pid_file.write()
            except OSError as exc:
                raise UsageError(f"cannot write the pid file {pid_file.path}: "
                                 f"{(exc.strerror or str(exc)).lower()}") from None

    def ready() -> None:
        start.ready(message)
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=mounted {url} on {mountpoint}")

    try:
        await serve(client, url, mountpoint, cmd.options.mount, prepare, ready,
                    demo.stop if demo is not None else None)
    finally:
        sd_notify("STOPPING=1")
        if pid_file is not None:
            pid_file.remove()


# -- ls --------------------------------------------------------------------------------------------


async def _ls(url: IscsiUrl, client: Client, progress: bool, key: int | None = None,
              reservations: bool = False) -> list[LunInfo]:
    rows: list[LunInfo] = []
    targets = [url.target] if url.target else [t.name for t in sorted(await client.discover(url), key=lambda t: t.name)]
    failures: list[IscsiError] = []
    for n, target in enumerate(targets, 1):
        if progress:
            print(f"\riscsifs: scanning target {n}/{len(targets)}", end="", file=sys.stderr, flush=True)
        try:
            infos = await client.scan_target(url, target, reservations=reservations, key=key)
        except IscsiError as exc:
            if url.target:
                raise
            # A portal often holds targets this initiator may not log in to: list the others.
            if progress:
                print(file=sys.stderr)
            log.warning("skipping target %s: %s", target, exc)
            failures.append(exc)
            continue
        rows += [info for info in infos if url.lun is None or info.lun == url.lun]
        if url.lun is not None and not any(r.lun == url.lun for r in rows):
            raise NotFoundError(f"LUN {url.lun} of {target} does not exist")
    if progress:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    if failures and len(failures) == len(targets):
        raise failures[0]
    return rows


def run_ls(cmd: LsCommand) -> int:
    url = parse_url(cmd.url)
    client = Client.for_url(url, cmd.options.connect)
    # --json also reads each disk's persistent reservations (read only: no registration).
    rows = trio.run(_ls, url, client, sys.stderr.isatty() and not cmd.debug, cmd.options.mount.reservation_key,
                    cmd.json)
    if cmd.json:
        print(json.dumps([lun_record(info, [str(p) for p in client.portals(url, info.target)]) for info in rows],
                         indent=2))
    else:
        print(ls_table(rows))
    return EXIT_OK


# -- stats -----------------------------------------------------------------------------------------


def run_stats(cmd: StatsCommand) -> int:
    mount = containing_mount(cmd.path)
    if mount is None:
        raise UsageError(f"{cmd.path} is not in an iscsifs mount")
    try:
        raw = os.getxattr(mount.point, STATS_XATTR.decode())
    except OSError as exc:
        raise UsageError(f"cannot read the statistics of {mount.point}: {(exc.strerror or str(exc)).lower()}") from None
    stats = json.loads(raw)
    if cmd.prometheus:
        print(prometheus_text(stats), end="")
    else:
        print(json.dumps(stats, indent=2, sort_keys=True) if cmd.json else stats_text(stats))
    return EXIT_OK


# -- discard and map: through the mount's own files ---------------------------------------------------


class Refused(Exception):
    """The mount refused a discard or a map (exit code 7: the LUN cannot, or may not)."""


def _lun_file(path: str) -> tuple[int, int, int]:
    """An open descriptor on a disk LUN's file of a running iscsifs mount, with the LUN's size and
    block size as the mount knows them (its attributes): st_blksize is the preferred I/O size
    (1 MiB), and under -o cache=writeback st_size is the kernel's, not the LUN's."""
    if containing_mount(path) is None:
        raise UsageError(f"{path} is not in an iscsifs mount")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise UsageError(error_message(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # the open file, not the path looked up again
            raise UsageError(f"{path} is not a LUN file")
        try:
            size, block_size = int(os.getxattr(fd, "user.iscsi.size")), int(os.getxattr(fd, "user.iscsi.block_size"))
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                raise UsageError(f"{path} is not a disk LUN's file") from None
            raise UsageError(f"cannot read {path}: {error_message(exc)}") from None
        except ValueError:
            raise UsageError(f"{path} is not a disk LUN's file") from None
    except BaseException:
        os.close(fd)
        raise
    return fd, size, block_size


_REFUSALS = {
    errno.EOPNOTSUPP: "the LUN cannot unmap (it is not thin-provisioned)",
    errno.EROFS: "the LUN or the mount is read-only",
    errno.EACCES: "permission denied (discard needs write access to the LUN file)",
    errno.EPERM: "permission denied (discard needs write access to the LUN file)",
}


def run_discard(cmd: DiscardCommand) -> int:
    fd, size, bs = _lun_file(cmd.path)
    try:
        length = size - cmd.offset if cmd.length is None else cmd.length
        if cmd.offset % bs or length % bs or length < 0 or cmd.offset + length > size:
            raise UsageError(f"the range must be whole {bs}-byte blocks inside the LUN ({size} bytes): "
                             f"offset {cmd.offset}, length {length}")
        try:
            os.setxattr(cmd.path, DISCARD_XATTR.decode(), f"{cmd.offset} {length}".encode())
        except OSError as exc:
            raise Refused(f"cannot discard {cmd.path}: {_REFUSALS.get(exc.errno or 0, error_message(exc))}") from None
        # The kernel's cached pages of that range may hold what was there: they go too.
        os.posix_fadvise(fd, cmd.offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    print(f"discarded {human_bytes(length)} of {cmd.path} at offset {cmd.offset}")
    return EXIT_OK


def run_map(cmd: MapCommand) -> int:
    fd, size, _bs = _lun_file(cmd.path)
    os.close(fd)
    progress = sys.stderr.isatty() and not cmd.json
    extents: list[tuple[int, int, str]] = []
    offset: int | None = 0
    while offset is not None:
        try:
            page = json.loads(os.getxattr(cmd.path, (MAP_XATTR_PREFIX + str(offset).encode()).decode()))
        except OSError as exc:
            raise Refused(f"cannot map {cmd.path}: {_REFUSALS.get(exc.errno or 0, error_message(exc))}") from None
        extents += [tuple(e) for e in page["extents"]]
        offset = page["next"]
        if progress and offset is not None:
            print(f"\riscsifs: mapped {100 * offset // max(1, size)}% of {human_bytes(size)}", end="",
                  file=sys.stderr, flush=True)
    if progress:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    extents = merge_extents(extents)
    if cmd.json:
        print(json.dumps({"extents": [{"offset": o, "length": n, "state": s} for o, n, s in extents]}, indent=2))
    else:
        print(map_text(extents, size))
    return EXIT_OK


# -- pr: persistent reservations through the mount -------------------------------------------------

_PR_REFUSALS = {
    errno.EOPNOTSUPP: "the LUN does not support persistent reservations (or that reservation type)",
    errno.EBUSY: "reservation conflict: another host holds the LUN, or this mount was fenced",
    errno.ENOKEY: "this mount has no key registered on the LUN (iscsifs pr --register KEY)",
    errno.EACCES: "permission denied (changing reservations needs write access to the LUN file)",
    errno.EPERM: "permission denied (changing reservations needs write access to the LUN file)",
    errno.EINVAL: "the mount refused the request as malformed",
}


def _xattr_json(path: str, name: bytes, what: str, refusals: dict[int, str]) -> dict[str, Any]:
    """A JSON object the mount gives as an extended attribute's value (Any: each attribute's own
    shape, described where the mount makes it); one line if it cannot be read."""
    try:
        value: dict[str, Any] = json.loads(os.getxattr(path, name.decode()))
    except OSError as exc:
        raise Refused(f"cannot read {what} of {path}: {refusals.get(exc.errno or 0, error_message(exc))}") from None
    return value


def _pr_status(path: str) -> dict[str, Any]:  # block.reservation.PrStatus's JSON
    return _xattr_json(path, PR_XATTR, "the reservations", _PR_REFUSALS)


def _pr_request(cmd: PrCommand) -> str:
    """What to set ``user.iscsifs.pr`` to; checked first against what the LUN has, so a request
    that cannot work changes nothing (exit 7)."""
    status = _pr_status(cmd.path)
    if cmd.action is PrAction.REGISTER:
        assert cmd.key is not None
        return f"register {cmd.key:#x}"
    if cmd.action is PrAction.UNREGISTER:
        if status["key"] is None:
            raise Refused(f"{cmd.path}: this mount has no key registered; nothing to unregister")
        return "unregister"
    if not status["registered"] or status["fenced"]:
        why = "was fenced (another host removed its key)" if status["fenced"] else "has no key registered"
        raise Refused(f"{cmd.path}: this mount {why}: register first (iscsifs pr --register KEY); nothing was changed")
    if cmd.action is PrAction.RESERVE:
        assert cmd.type is not None
        return f"reserve {cmd.type.word}"
    if cmd.action is PrAction.RELEASE:
        if status["reservation"] is None or not status["reservation"]["ours"]:
            raise Refused(f"{cmd.path}: this mount holds no reservation; nothing to release")
        return "release"
    if cmd.action is PrAction.CLEAR:
        return "clear"
    assert cmd.action is PrAction.PREEMPT and cmd.key is not None
    if key_text(cmd.key) not in status["keys"]:
        raise Refused(f"{cmd.path}: key {key_text(cmd.key)} is not registered on the LUN; nothing was changed")
    if key_text(cmd.key) == status["key"]:
        raise Refused(f"{cmd.path}: {key_text(cmd.key)} is this mount's own key")
    return f"preempt {cmd.key:#x}" + (f" {cmd.type.word}" if cmd.type is not None else "")


def run_pr(cmd: PrCommand) -> int:
    # Not opened: closing a LUN file flushes it, and a flush of a LUN whose writes were refused
    # (reservation conflict) fails as they did.
    if containing_mount(cmd.path) is None:
        raise UsageError(f"{cmd.path} is not in an iscsifs mount")
    if not os.path.isfile(cmd.path):
        raise UsageError(f"{cmd.path} is not a LUN file")
    if cmd.action is not PrAction.SHOW:
        request = _pr_request(cmd)
        try:
            os.setxattr(cmd.path, PR_ACTION_XATTR.decode(), request.encode())
        except OSError as exc:
            raise Refused(f"cannot {cmd.action.value} on {cmd.path}: "
                          f"{_PR_REFUSALS.get(exc.errno or 0, error_message(exc))}") from None
    status = _pr_status(cmd.path)
    print(json.dumps(status, indent=2) if cmd.json else pr_text(cmd.path, status))
    return EXIT_OK


# -- mt and mtx: a tape library through the mount's files ----------------------------------------------


def _device_file(path: str, want: str, what: str) -> None:
    """UsageError (exit 2) unless ``path`` is a file of kind ``want`` (fs.KIND_XATTR) of a mount."""
    if containing_mount(path) is None:
        raise UsageError(f"{path} is not in an iscsifs mount")
    try:
        kind = os.getxattr(path, KIND_XATTR.decode()).decode()
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise UsageError(error_message(exc)) from None
        kind = ""
    if kind != want:
        raise UsageError(f"{path} is not {what} (it is {'a ' + kind + ' file' if kind else 'a directory'})")


_MT_REFUSALS = {
    errno.EBUSY: "the drive's file is open (st refuses a second opener so): close it first",
    errno.ENOMEDIUM: "no tape in the drive",
    errno.EROFS: "the tape or the mount is read-only",
    errno.EOPNOTSUPP: "the drive does not support it",
    errno.EIO: "the drive refused it, or the position is not known; the mount's log says which",
    errno.EINVAL: "invalid argument (setblk: only 0, variable-block mode)",
    errno.ENOSPC: "the end of the medium",
    errno.EACCES: "permission denied (mt needs write access to the drive's file)",
    errno.EPERM: "permission denied (mt needs write access to the drive's file)",
}


def _mt_refused(cmd: MtCommand, exc: OSError) -> Refused:
    number = exc.errno or 0
    why = _MT_REFUSALS.get(number, (exc.strerror or "").lower())
    return Refused(f"{cmd.path}: mt {cmd.verb}: {os.strerror(number).lower()} ({why})" if number
                   else f"{cmd.path}: mt {cmd.verb}: {error_message(exc)}")


def run_mt(cmd: MtCommand) -> int:
    _device_file(cmd.path, "tape", "a tape drive's file (mt works on a tape drive)")
    try:
        if cmd.verb == "status":
            fields = json.loads(os.getxattr(cmd.path, MT_STATUS_XATTR.decode()))
            print(json.dumps(fields, indent=2) if cmd.json else fields["text"], end="\n" if cmd.json else "")
            return EXIT_OK
        if cmd.verb == "tell":
            block = int(os.getxattr(cmd.path, MT_TELL_XATTR.decode()))
            print(json.dumps({"block": block}) if cmd.json else f"At block {block}.")
            return EXIT_OK
        if cmd.verb in MT_READ_VERBS:  # read access, as mt-st's open for them: a read-only mount too
            name = MT_DO_PREFIX.decode() + (cmd.verb if cmd.count is None else f"{cmd.verb}.{cmd.count}")
            os.getxattr(cmd.path, name)
        else:  # weof, erase: they write, so through setxattr, which asks write access
            request = cmd.verb if cmd.count is None else f"{cmd.verb} {cmd.count}"
            os.setxattr(cmd.path, MT_XATTR.decode(), request.encode())
    except OSError as exc:
        raise _mt_refused(cmd, exc) from None
    return EXIT_OK


_MTX_REFUSALS = {
    errno.ENOMEDIUM: "nothing there: the source slot or drive is empty",
    errno.EBUSY: "the destination is full, or the drive's file is open",
    errno.EINVAL: "no such slot or drive",
    errno.ENOSPC: "no slot to unload to",
    errno.EACCES: "permission denied (moving media needs write access to the changer's file)",
    errno.EPERM: "permission denied (moving media needs write access to the changer's file)",
}


def _mtx_status(path: str) -> dict[str, Any]:  # fs.IscsiFs._mtx_status's JSON
    return _xattr_json(path, MTX_STATUS_XATTR, "the status", {})


def _mtx_check(cmd: MtxCommand, status: dict[str, Any]) -> str:
    """What mtx would refuse, from the status (one line; nothing is sent then), else what it
    prints once the move is done."""
    slots: list[dict[str, Any]] = status["slots"] + status["import_export"]
    drives: list[dict[str, Any]] = status["drives"]

    def slot(n: int) -> dict[str, Any]:
        if not 1 <= n <= len(slots):
            raise Refused(f"{cmd.path}: slot {n} is out of range: the library has slots 1 to {len(slots)}; "
                          "nothing was changed")
        element: dict[str, Any] = slots[n - 1]
        return element

    def drive(n: int) -> dict[str, Any]:
        if not 0 <= n < len(drives):
            raise Refused(f"{cmd.path}: drive {n} is out of range: the library has drives 0 to {len(drives) - 1}; "
                          "nothing was changed")
        element: dict[str, Any] = drives[n]
        return element

    args = cmd.args
    if cmd.verb == "load":
        number = args[1] if len(args) == 2 else 0
        source, destination = slot(args[0]), drive(number)
        if destination["full"]:  # mtx looks at the drive first
            loaded = destination["source_slot"]
            raise Refused(f"{cmd.path}: drive {number} is full" + (f" (slot {loaded} loaded)" if loaded else "")
                          + "; nothing was changed")
        if not source["full"]:
            raise Refused(f"{cmd.path}: slot {args[0]} is empty: nothing to load; nothing was changed")
        return f"Loading media from Storage Element {args[0]} into drive {number}...done"
    if cmd.verb == "unload":
        number = args[1] if len(args) == 2 else 0
        source = drive(number)
        if args:
            slot(args[0])
        if not source["full"]:
            raise Refused(f"{cmd.path}: drive {number} is empty: nothing to unload; nothing was changed")
        home = args[0] if args else source["source_slot"]
        if home is not None and slot(home)["full"]:
            raise Refused(f"{cmd.path}: slot {home} is already full; nothing was changed")
        return f"Unloading drive {number} into Storage Element {home}...done" if home is not None else ""
    if cmd.verb == "transfer":
        if not slot(args[0])["full"]:
            raise Refused(f"{cmd.path}: slot {args[0]} is empty: nothing to transfer; nothing was changed")
        if slot(args[1])["full"]:
            raise Refused(f"{cmd.path}: slot {args[1]} is already full; nothing was changed")
    if cmd.verb in ("first", "last", "next"):
        return _mtx_go_to_lines(cmd, status, drive(args[0] if args else 0), args[0] if args else 0)
    return ""


def _mtx_go_to_lines(cmd: MtxCommand, status: dict[str, Any], element: dict[str, Any], number: int) -> str:
    """What mtx prints for first, last and next (mtx.c's Unload/Load lines, or "loading...done"
    when the drive holds that slot's tape already); "" when the mount is left to refuse."""
    proper: list[dict[str, Any]] = status["slots"]  # first, last and next skip import/export elements
    current = element["source_slot"] if element["full"] else None
    if cmd.verb == "first":
        wanted: int | None = 1
    elif cmd.verb == "last":
        wanted = len(proper)
    else:
        wanted = next((n for n in range((current or 0) + 1, len(proper) + 1) if proper[n - 1]["full"]), None)
    if wanted is None or not 1 <= wanted <= len(proper):
        return ""
    if current == wanted:
        return "loading...done"
    lines = [f"Unloading drive {number} into Storage Element {current}...done"] if current is not None else []
    return "\n".join([*lines, f"Loading media from Storage Element {wanted} into drive {number}...done"])


def run_mtx(cmd: MtxCommand) -> int:
    _device_file(cmd.path, "changer", "a medium changer's file (mtx works on a changer)")
    if cmd.verb == "status":
        if cmd.json:
            print(json.dumps(_mtx_status(cmd.path), indent=2))
            return EXIT_OK
        try:
            with open(cmd.path, "rb") as f:  # the file reads as mtx's status text, read at open
                text = f.read()
        except OSError as exc:
            raise Refused(f"cannot read the status of {cmd.path}: {error_message(exc)}") from None
        # mtx names the changer as -f gave it; the file, as the mount reaches it.
        header, newline, rest = text.partition(b"\n")
        header = re.sub(rb"^(  Storage Changer ).*(:\d+ Drives, )", lambda m: m.group(1) + os.fsencode(cmd.path)
                        + m.group(2), header, count=1)
        text = header + newline + rest
        sys.stdout.buffer.write(text)
        sys.stdout.buffer.flush()
        return EXIT_OK
    done = _mtx_check(cmd, _mtx_status(cmd.path))
    try:
        os.setxattr(cmd.path, MTX_XATTR.decode(), " ".join([cmd.verb, *map(str, cmd.args)]).encode())
    except OSError as exc:
        number = exc.errno or 0
        why = _MTX_REFUSALS.get(number, "")
        raise Refused(f"{cmd.path}: mtx {cmd.verb}: {os.strerror(number).lower()}" + (f" ({why})" if why else "")
                      + "; nothing was changed") from None
    if done:
        print(done)
    return EXIT_OK


# -- inq, opcodes, raw: SCSI commands of the user's ----------------------------------------------------


class RawFileError(Exception):
    """raw's data-out or data-in file failed (exit code 15, sg3_utils' SG_LIB_FILE_ERROR)."""


class RawTimeout(Exception):
    """raw's command took longer than -t (exit code 33, sg3_utils' SG_LIB_CAT_TIMEOUT)."""


class _Lun(Protocol):
    max_data: int  # the most data-in or data-out one command may carry this way

    async def query(self, cdb: bytes, expected_in: int) -> RawResult:
        """A command that changes nothing (INQUIRY, REPORT SUPPORTED OPERATION CODES)."""
        ...

    async def raw(self, request: RawRequest) -> RawResult: ...


class _LunFile:
    """A LUN through a running mount's LUN file: the mount's session runs the commands (its I_T
    nexus, its reservations), through the extended attributes iscsifs.mount.fs describes."""

    max_data = RAW_MAX_DATA

    def __init__(self, path: str) -> None:
        self.path = path

    async def query(self, cdb: bytes, expected_in: int) -> RawResult:
        # The mount takes the data-in length from the CDB's ALLOCATION LENGTH.
        name = (QUERY_XATTR_PREFIX + cdb.hex().encode()).decode()
        try:
            value = await trio.to_thread.run_sync(os.getxattr, self.path, name)
        except OSError as exc:
            raise Refused(f"cannot query {self.path}: {_REFUSALS.get(exc.errno or 0, error_message(exc))}") from None
        return unpack_raw_result(value)

    async def raw(self, request: RawRequest) -> RawResult:
        def send() -> bytes:
            os.setxattr(self.path, RAW_XATTR.decode(), pack_raw_request(request))
            return os.getxattr(self.path, RAW_XATTR.decode())

        try:
            return unpack_raw_result(await trio.to_thread.run_sync(send))
        except OSError as exc:
            if exc.errno == errno.ETIMEDOUT:
                raise RawTimeout(f"the command took longer than {request.timeout_ms / 1000:g} s") from None
            why = ("only root or a holder of CAP_SYS_RAWIO may send SCSI commands through the mount"
                   if exc.errno in (errno.EPERM, errno.EACCES) else error_message(exc))
            raise Refused(f"cannot send the command through {self.path}: {why}") from None


class _LunLogin:
    """A LUN through a login of our own (a URL), as ``ls`` makes."""

    max_data = 1 << 24

    def __init__(self, session: Multipath, lun: int) -> None:
        self.session = session
        self.lun = lun

    async def query(self, cdb: bytes, expected_in: int) -> RawResult:
        return await self.raw(RawRequest(cdb, expected_in))

    async def raw(self, request: RawRequest) -> RawResult:
        timeout = request.timeout_ms / 1000 if request.timeout_ms else float("inf")
        with trio.move_on_after(timeout) as scope:
            result = await self.session.execute(self.lun, request.cdb, data_out=request.data_out or None,
                                                expected_in=request.expected_in)
        if scope.cancelled_caught:
            raise RawTimeout(f"the command took longer than {timeout:g} s")
        return RawResult(result.status, result.response, bytes(result.sense), result.residual, bytes(result.data))


@asynccontextmanager
async def _reach(target: str, options: Options) -> AsyncIterator[_Lun]:
    """The LUN ``target`` names: a LUN file of a running mount, or iscsi://host/iqn/lun."""
    if not target.startswith("iscsi://"):
        if containing_mount(target) is None:
            raise UsageError(f"{target} is not in an iscsifs mount (nor an iscsi:// URL)")
        if not os.path.isfile(target):
            raise UsageError(f"{target} is not a LUN file")
        yield _LunFile(target)
        return
    url = parse_url(target)
    if not url.target or url.lun is None:
        raise UsageError(f"{target} names no LUN (iscsi://host/target-iqn/lun)")
    client = Client.for_url(url, options.connect)
    with single_error():
        async with trio.open_nursery() as nursery:
            session = await client.login(nursery, url, url.target)
            try:
                try:
                    # A fresh login's UNIT ATTENTION (29/00) is ours to take, not the user's command's.
                    await command(session, url.lun, cdbs.test_unit_ready(), name="TEST UNIT READY")
                except ScsiError:
                    pass  # not ready, no such LUN, ...: the user's command says so itself
                yield _LunLogin(session, url.lun)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(client.config.recovery.error_logout_timeout):
                    await session.logout()
                nursery.cancel_scope.cancel()


def _good(result: RawResult, what: str) -> bytes:
    if result.response != 0:
        raise ScsiError(Status.TASK_ABORTED, None, f"{what} (iSCSI response 0x{result.response:02x}, target failure)")
    if result.status not in (Status.GOOD, Status.CONDITION_MET):
        raise ScsiError(result.status, parse_sense(result.sense), what)
    return result.data


async def _fetch(lun: _Lun, build: Callable[[int], bytes], length_of: Callable[[bytes], int], what: str,
                 first: int, most: int) -> bytes:
    """A query whose answer says how long it is: asked again with room for all of it."""
    alloc = min(first, most, lun.max_data)
    while True:
        data = _good(await lun.query(build(alloc), alloc), what)
        want = length_of(data)
        if want <= len(data) or len(data) < alloc or alloc >= min(most, lun.max_data):
            return data
        alloc = min(want, most, lun.max_data)


async def _standard_inquiry(lun: _Lun) -> vpd.StandardInquiryData:
    data = await _fetch(lun, cdbs.inquiry, lambda d: d[4] + 5 if len(d) > 4 else 0, "INQUIRY", 255, 0xFFFF)
    return vpd.parse_standard_inquiry(data)


async def _vpd_page(lun: _Lun, page: int) -> bytes:
    return await _fetch(lun, lambda n: cdbs.inquiry(n, page), lambda d: int.from_bytes(d[2:4], "big") + 4,
                        f"INQUIRY of VPD page 0x{page:02x}", 4096, 0xFFFF)


def _json(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, indent=2)


async def _inq(cmd: InqCommand) -> list[str]:
    async with _reach(cmd.target, cmd.options) as lun:
        if cmd.page is None:
            inq = await _standard_inquiry(lun)
            try:
                pages: vpd.SupportedVpdPages | None = vpd.parse_supported_vpd_pages(await _vpd_page(lun, 0))
            except (ScsiError, ScsiParseError):
                pages = None  # a LUN without VPD pages (SPC-2 and older)
            if cmd.json:
                return [_json({"standard": dataclasses.asdict(inq),
                               "supported_vpd_pages": None if pages is None else list(pages.pages)})]
            return vpd.render_standard_inquiry(inq) + (vpd.render_supported_vpd_pages(pages) if pages else [])
        data = await _vpd_page(lun, cmd.page)
    try:
        page = vpd.parse_vpd_page(data)
    except ScsiParseError as exc:
        if cmd.json:
            return [_json({"page": cmd.page, "hex": data.hex(), "error": str(exc)})]
        return [f"VPD page 0x{cmd.page:02x} (not decoded: {exc}):", *sg.hex_dump(data)]
    return [_json(page)] if cmd.json else vpd.render_vpd_page(page)


def run_inq(cmd: InqCommand) -> int:
    print("\n".join(trio.run(_inq, cmd)))
    return EXIT_OK


async def _opcodes(cmd: OpcodesCommand) -> list[str]:
    async with _reach(cmd.target, cmd.options) as lun:
        inq = await _standard_inquiry(lun)
        data = await _fetch(lun, vpd.report_supported_operation_codes,
                            lambda d: int.from_bytes(d[:4], "big") + 4 if len(d) >= 4 else 0,
                            "REPORT SUPPORTED OPERATION CODES", 8192, 0xFFFFFFFF)
    codes = vpd.parse_supported_operation_codes(data)
    pdt = inq.peripheral_device_type
    if cmd.json:
        return [_json({"vendor": inq.t10_vendor_identification, "product": inq.product_identification,
                       "revision": inq.product_revision_level, "peripheral_device_type": pdt,
                       "commands": [{**dataclasses.asdict(c), "name": vpd.command_name(
                           c.operation_code, c.service_action if c.servactv else None, pdt)}
                           for c in codes.commands]})]
    return vpd.render_opcodes_inquiry(inq) + vpd.render_operation_codes(codes, pdt)


def run_opcodes(cmd: OpcodesCommand) -> int:
    print("\n".join(trio.run(_opcodes, cmd)))
    return EXIT_OK


def has_cap_sys_rawio(status: str) -> bool:
    """CAP_SYS_RAWIO among the effective capabilities of /proc/self/status: what SG_IO asks."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            try:
                return bool(int(value.strip(), 16) >> CAP_SYS_RAWIO & 1)
            except ValueError:
                return False
    return False


def _data_out(cmd: RawCommand) -> bytes:
    if not cmd.send:
        return b""
    name = cmd.infile or "stdin"
    try:
        if cmd.infile is None or cmd.infile == "-":
            data = sys.stdin.buffer.read(cmd.send)
        else:
            with open(cmd.infile, "rb") as f:
                data = f.read(cmd.send)
    except OSError as exc:
        raise RawFileError(f"cannot read the data to send: {error_message(exc)}") from None
    if len(data) < cmd.send:
        raise RawFileError(f"{name} holds {len(data)} bytes, not the {cmd.send} to send (-s)")
    return data


async def _raw(cmd: RawCommand, request: RawRequest) -> RawResult:
    async with _reach(cmd.target, cmd.options) as lun:
        if max(cmd.request, cmd.send) > lun.max_data:
            raise RawUsageError(f"at most {lun.max_data} bytes (-r, -s) through {cmd.target}")
        return await lun.raw(request)


def run_raw(cmd: RawCommand) -> int:
    with open("/proc/self/status") as f:
        if not has_cap_sys_rawio(f.read()):
            print("iscsifs: raw needs root or CAP_SYS_RAWIO (as SG_IO does)", file=sys.stderr)
            return sg.EXIT_SYNTAX_ERROR
    request = RawRequest(cmd.cdb, cmd.request, max(1, int(cmd.timeout * 1000)), _data_out(cmd))
    if cmd.verbose:
        print(f"    cdb to send: {' '.join(f'{b:02x}' for b in cmd.cdb)} ", file=sys.stderr)
    result = trio.run(_raw, cmd, request)
    if result.response != 0:
        print(f"iscsifs: the target failed the command (iSCSI response 0x{result.response:02x})", file=sys.stderr)
        return sg.EXIT_OTHER
    report = sg.SgRawReport(result.status, result.sense, result.data, cmd.request, cmd.nosense)
    lines = report.lines()
    received = next((i for i, line in enumerate(lines) if line.startswith("Received ")), None)
    if cmd.outfile is not None and received is not None:
        where = "stdout" if cmd.outfile == "-" else cmd.outfile
        lines[received:] = [f"Writing {len(result.data)} bytes of data to {where}"]
    print("\n".join(lines), file=sys.stderr)
    if cmd.outfile is not None and received is not None:
        try:
            if cmd.outfile == "-":
                sys.stdout.buffer.write(result.data)
                sys.stdout.buffer.flush()
            else:
                with open(cmd.outfile, "wb") as out:
                    out.write(result.data)
        except OSError as exc:
            raise RawFileError(f"cannot write the data received: {error_message(exc)}") from None
    return report.exit_status


# -- entry point -----------------------------------------------------------------------------------


_PASSWORD_IN_URL = re.compile(r"(iscsi://[^/@%]*%)[^@]*@")
_PASSWORD_IN_QUERY = re.compile(r"(target_password=)[^&\s]*")


def redact_argument(arg: str) -> str:
    """An argument as ps may show it: passwords in iscsi:// URLs replaced by ***."""
    return _PASSWORD_IN_QUERY.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", arg))


def hide_secrets_from_ps(argv: list[str]) -> None:
    """A password in the URL is in /proc/PID/cmdline for every user to read: rewrite it at once.

    (A window remains between exec and this line; the credentials file and the environment
    variables have none, which is why the README recommends them.)"""
    redacted = [redact_argument(a) for a in argv]
    if redacted != argv:
        setproctitle.setproctitle(" ".join(["iscsifs", *redacted]))


def run(cmd: Command) -> int:
    if isinstance(cmd, LsCommand):
        return run_ls(cmd)
    if isinstance(cmd, StatsCommand):
        return run_stats(cmd)
    if isinstance(cmd, DiscardCommand):
        return run_discard(cmd)
    if isinstance(cmd, MapCommand):
        return run_map(cmd)
    if isinstance(cmd, PrCommand):
        return run_pr(cmd)
    if isinstance(cmd, InqCommand):
        return run_inq(cmd)
    if isinstance(cmd, OpcodesCommand):
        return run_opcodes(cmd)
    if isinstance(cmd, RawCommand):
        return run_raw(cmd)
    if isinstance(cmd, MtCommand):
        return run_mt(cmd)
    if isinstance(cmd, MtxCommand):
        return run_mtx(cmd)
    return run_mount(cmd)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    hide_secrets_from_ps(argv)
    debug = False
    try:
        cmd = parse_command(argv)
        debug = cmd.debug
        logs.setup(debug)
        return run(cmd)
    except BaseException as exc:
        exc = first_error(exc)
        if isinstance(exc, SystemExit):  # argparse: --help, --version, or its own usage error
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE):
            return EXIT_OK
        if debug:
            log.debug("details", exc_info=exc)
        print(f"iscsifs: {error_message(exc)}", file=sys.stderr)
        return exit_code_for(exc)

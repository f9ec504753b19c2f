"""Command line: ``iscsifs URL MOUNTPOINT``, ``iscsifs`` (demo) and ``iscsifs ls URL``.

Errors are one line on stderr and a documented exit code; never a traceback (``-d`` adds one).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import logging.handlers
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import setproctitle
import trio

from iscsifs import __version__
from iscsifs.client import DIGEST_OFFERS, Client, ConnectOptions, LunInfo, NotFoundError
from iscsifs.daemon import PidFile, sd_notify
from iscsifs.fs import STATS_XATTR
from iscsifs.mount import MountError, MountOptions, serve
from iscsifs.net.connection import ConnectError
from iscsifs.net.nursery import first_error
from iscsifs.net.path import RecoveryPolicy
from iscsifs.net.session import PathPolicy
from iscsifs.proto.address import Portal
from iscsifs.proto.chap import parse_algorithms
from iscsifs.proto.errors import (
    AuthenticationError,
    ConnectionLost,
    IscsiError,
    LoginError,
    RejectedError,
    RemoteProtocolError,
)
from iscsifs.scsi.response import DeviceType
from iscsifs.scsi.sense import ScsiError
from iscsifs.url import IscsiUrl, UrlError, is_iscsi_name, parse_hostport, parse_url

log = logging.getLogger("iscsifs")

EXIT_OK = 0
EXIT_ERROR = 1  # unexpected internal error
EXIT_USAGE = 2  # bad command line, URL, option or mount point
EXIT_CONNECT = 3  # portal unreachable or not answering in time
EXIT_AUTH = 4  # login refused: authentication or authorization
EXIT_NOT_FOUND = 5  # no such target or LUN
EXIT_MOUNT = 6  # the FUSE mount itself failed
EXIT_TARGET = 7  # the target misbehaved or failed a command

EXAMPLES_HELP = """examples:
  iscsifs                                              a demo LUN from a throwaway local tgtd
  iscsifs ls iscsi://san.example                       every target and LUN on a portal (--json for scripts)
  iscsifs iscsi://san.example /mnt/san                 one directory per target, one file per disk LUN
  iscsifs -o ro,credentials=/etc/iscsifs/db.secret iscsi://san.example/iqn.2026-11.example:db/1 /mnt/db
  mount -t fuse.iscsifs iscsi://san.example/iqn.2026-11.example:db /mnt/db -o allow_other
  iscsifs stats /mnt/san                               commands, bytes, latency of a running mount
  fusermount3 -u /mnt/san                              flush, log out, unmount
"""

EXIT_CODES_HELP = """exit codes:
  0  success (for a mount: the mount is live)
  1  unexpected internal error
  2  bad command line, URL, option or mount point
  3  portal unreachable or not answering in time
  4  login refused: authentication or authorization failed
  5  no such target or LUN
  6  the FUSE mount failed (mount point busy, no /dev/fuse, not permitted)
  7  the target failed a command or broke the protocol
"""

DEMO_TARGET = "iqn.2026-11.org.iscsifs:demo"
DEMO_SIZE = 64 << 20
DEMO_GREETING = (b"Hello from iscsifs!\nThis 64 MiB file is LUN 1 of a throwaway tgtd target, "
                 b"read and written over iSCSI.\n")


class UsageError(Exception):
    pass


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, (UsageError, UrlError)):
        return EXIT_USAGE
    if isinstance(exc, (ConnectError, trio.TooSlowError)):
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
    if isinstance(exc, (RemoteProtocolError, ScsiError, RejectedError, ConnectionLost, IscsiError)):
        return EXIT_TARGET
    return EXIT_ERROR


def error_message(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "the portal did not answer in time"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- options ---------------------------------------------------------------------------------------


OPTIONS_HELP = """options (-o, comma-separated, repeatable):
  ro, rw                 read-only or read-write (default rw; write-protected LUNs are always read-only)
  allow_other            let other users reach the files (needs user_allow_other in /etc/fuse.conf)
  uid=N, gid=N, umask=M  owner, group and permission mask of the files (default: yours, 022)
  initiator_name=IQN     our iSCSI name (default: /etc/iscsi/initiatorname.iscsi or one derived from the machine)
  credentials=FILE       CHAP secrets file, mode 600: username, password, target_username, target_password
  chap_algs=LIST         CHAP algorithms to offer, in order (sha256,sha3-256,sha1,md5; default all, strongest first)
  header_digest=D        none, crc32c, crc32c-none (default) or none-crc32c; data_digest=D likewise (default none-crc32c)
  readahead=KIB          the kernel's readahead for buffered reads (default 1024; set only when run as root)
  portal=HOST[:PORT]     another path to every target (repeatable; IPv6 in [brackets]); SendTargets adds its own
  path_policy=P          failover (default: one active path, the others standby) or round-robin
  idle_timeout=S         log out a target's session after S seconds without open files or I/O (default 0: never)
  max_sessions=N         at most N targets logged in at once (default 64; the least recently used idle one goes)
reliability (seconds): nop_interval=5, nop_timeout=5 (keepalive), command_timeout=30 (then ABORT TASK, LUN RESET,
  reconnect), recovery_timeout=120 (while reconnecting, I/O waits this long, then fails with EIO), login_timeout=15
mount(8) flags (nodev, nosuid, noexec, noatime, ...) go to the kernel; _netdev, nofail, auto, noauto, user, users,
defaults and x-systemd.* (fstab, systemd) are accepted and ignored.
CHAP secrets may also come from the URL (visible in ps until iscsifs hides it), from ?target_user=&target_password=,
or from LIBISCSI_CHAP_USERNAME, LIBISCSI_CHAP_PASSWORD, LIBISCSI_CHAP_TARGET_USERNAME, LIBISCSI_CHAP_TARGET_PASSWORD.
"""


def _id_option(key: str, val: str) -> int:
    if not val.isdecimal() or int(val) >= 1 << 32:
        raise UsageError(f"{key}={val[:20]} is not a numeric id")
    return int(val)


# Generic mount(8) flags the kernel applies to any file system: passed through to FUSE.
KERNEL_FLAGS = frozenset({"dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "nodiratime",
                          "relatime", "norelatime", "strictatime", "sync", "async", "dirsync"})
# Options for mount(8), fstab and systemd, not for the file system: accepted and ignored (mount.fuse3
# already drops most of them; they still arrive when iscsifs is run by hand with an fstab line's options).
IGNORED_OPTIONS = frozenset({"_netdev", "nofail", "auto", "noauto", "user", "nouser", "users", "owner", "group",
                             "defaults", "default_permissions"})


MAX_READAHEAD_KIB = 65536
RECOVERY_OPTIONS = ("nop_interval", "nop_timeout", "command_timeout", "recovery_timeout", "login_timeout")


def _ignored(key: str) -> bool:
    return key in IGNORED_OPTIONS or key.startswith(("x-", "comment="))


def parse_mount_options(values: list[str]) -> tuple[MountOptions, ConnectOptions]:
    """-o opt[,opt...] (repeatable). Returns FUSE options and iSCSI connection options."""
    fuse: dict[str, Any] = {}
    conn: dict[str, Any] = {}
    kernel: set[str] = set()
    recovery: dict[str, float] = {}
    portals: list[Portal] = []
    for value in values:
        for opt in filter(None, value.split(",")):
            key, eq, val = opt.partition("=")
            if _ignored(opt) or (key == "comment" and eq):
                continue
            if key in KERNEL_FLAGS and not eq:
                kernel.add(key)
            elif key in ("ro", "rw") and not eq:
                fuse["read_only"] = key == "ro"
            elif key == "allow_other" and not eq:
                fuse["allow_other"] = True
            elif key in ("uid", "gid") and eq:
                fuse[key] = _id_option(key, val)
            elif key == "umask" and eq:
                if not re.fullmatch(r"[0-7]{1,4}", val):
                    raise UsageError(f"umask={val[:20]} is not an octal mask such as 022")
                fuse["umask"] = int(val, 8) & 0o777
            elif key == "initiator_name" and eq:
                if not is_iscsi_name(val):
                    raise UsageError(f"initiator_name={val[:80]} is not an iSCSI name (iqn.YYYY-MM.domain:name)")
                conn[key] = val
            elif key == "credentials" and eq:
                if val:  # empty: a systemd EnvironmentFile that names no file
                    conn["credentials_file"] = val
            elif key == "chap_algs" and eq:
                try:
                    conn["chap_algorithms"] = parse_algorithms(val)
                except ValueError as exc:
                    raise UsageError(f"chap_algs: {exc}") from None
            elif key in RECOVERY_OPTIONS and eq:
                try:
                    seconds = float(val)
                except ValueError:
                    seconds = -1.0
                if not 0 < seconds <= 86400:
                    raise UsageError(f"{key}={val[:20]} is not a number of seconds (0 < s <= 86400)")
                recovery[key] = seconds
            elif key == "readahead" and eq:
                if not val.isdecimal() or int(val) > MAX_READAHEAD_KIB:
                    raise UsageError(f"readahead={val[:20]} is not a number of KiB (0 to {MAX_READAHEAD_KIB})")
                fuse["readahead_kib"] = int(val)
            elif key == "portal" and eq:
                try:
                    portals.append(Portal(*parse_hostport(val)))
                except UrlError as exc:
                    raise UsageError(f"portal={val[:80]}: {exc}") from None
            elif key == "idle_timeout" and eq:
                try:
                    seconds = float(val)
                except ValueError:
                    seconds = -1.0
                if not 0 <= seconds <= 86400 * 365:
                    raise UsageError(f"idle_timeout={val[:20]} is not a number of seconds (0: never)")
                fuse["idle_timeout"] = seconds
            elif key == "max_sessions" and eq:
                if not val.isdecimal() or not 1 <= int(val) <= 100000:
                    raise UsageError(f"max_sessions={val[:20]} is not a number from 1 to 100000")
                fuse["max_sessions"] = int(val)
            elif key == "path_policy" and eq:
                try:
                    conn["path_policy"] = PathPolicy(val)
                except ValueError:
                    raise UsageError(f"path_policy={val[:20]} is not failover or round-robin") from None
            elif key in ("header_digest", "data_digest") and eq:
                if val.lower() not in DIGEST_OFFERS:
                    raise UsageError(f"{key}={val[:20]} is not one of {', '.join(DIGEST_OFFERS)}")
                conn[key] = val.lower()
            else:
                raise UsageError(f"unknown mount option '{opt.partition('=')[0][:40]}' (see iscsifs --help)")
    conn["recovery"] = RecoveryPolicy(**recovery)
    conn["portals"] = tuple(portals)
    return MountOptions(kernel=frozenset(kernel), **fuse), ConnectOptions(**conn)


class JournalFormatter(logging.Formatter):
    """On journald's stream (systemd service), prefix each line with its syslog priority "<N>"
    so `journalctl -p warning` works (sd-daemon(3))."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelno, 6)}>" + super().format(record)


def _stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(name)s: %(levelname)s: %(message)s" if debug else "iscsifs: %(message)s"
    handler.setFormatter(JournalFormatter(fmt) if _stderr_is_journal() else logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("iscsifs.lun").setLevel(logging.DEBUG if debug else logging.INFO)


def log_to_syslog(debug: bool) -> None:
    """A daemonized mount has no terminal: its log lines go to syslog/journald."""
    root = logging.getLogger()
    if os.path.exists("/dev/log"):
        handler: logging.Handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("iscsifs[%(process)d]: %(message)s"))
    else:
        handler = logging.NullHandler()
    root.handlers[:] = [handler]


# -- mount -----------------------------------------------------------------------------------------


def _report(fd: int | None, code: int, message: str) -> None:
    if fd is None:
        if code:
            print(f"iscsifs: {message}", file=sys.stderr)
        elif message:
            print(message, flush=True)
        return
    try:
        os.write(fd, f"{code}\n{message}".encode())
        os.close(fd)
    except OSError:
        pass


def _daemonize() -> int | None:
    """Fork; the parent waits until the child reports the mount is live (or failed) and exits.

    Returns, in the child, the pipe to report on.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()
        return w
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    text = b"".join(chunks).decode(errors="replace")
    code_text, _, message = text.partition("\n")
    if not code_text.strip().isdecimal():
        os.waitpid(pid, 0)
        print("iscsifs: the mount process exited before the mount was live", file=sys.stderr)
        os._exit(EXIT_ERROR)
    code = int(code_text)
    if code:
        os.waitpid(pid, 0)
        print(f"iscsifs: {message}", file=sys.stderr)
    elif message:
        print(message, flush=True)
    os._exit(code)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def run_mount(args: argparse.Namespace) -> int:
    options, connect = parse_mount_options(args.options)
    demo_dir: Path | None = None
    if args.url is None:
        if os.geteuid() != 0:
            raise UsageError("the demo starts a local tgtd target, which needs root (or give a URL)")
        if shutil.which("tgtd") is None:
            raise UsageError("the demo needs tgtd: install the Debian package 'tgt' (or give a URL)")
        demo_dir = Path(tempfile.mkdtemp(prefix="iscsifs-demo-"))
        mountpoint = demo_dir / "mnt"
        mountpoint.mkdir()
        url = None
    else:
        url = parse_url(args.url)
        if args.mountpoint is None:
            raise UsageError("missing MOUNTPOINT (iscsifs URL MOUNTPOINT)")
        mountpoint = Path(args.mountpoint).absolute()
        if not mountpoint.exists():
            raise UsageError(f"mount point {mountpoint} does not exist")
        if not (mountpoint.is_dir() or mountpoint.is_file()):
            raise UsageError(f"mount point {mountpoint} is neither a directory nor a regular file")
    pid_file = PidFile(args.pid_file) if args.pid_file else None
    if pid_file is not None:
        try:
            pid_file.check()
        except OSError as exc:
            raise UsageError(str(exc)) from None
    args.pid_file_obj = pid_file
    report_fd = None if args.foreground else _daemonize()
    try:
        code, message = EXIT_OK, ""
        try:
            trio.run(_mount_main, args, url, str(mountpoint), options, connect, demo_dir, report_fd)
        except BaseException as exc:  # noqa: BLE001 - one line, one exit code, always
            exc = first_error(exc)
            if isinstance(exc, KeyboardInterrupt):
                code, message = 130, "interrupted"
            else:
                code, message = exit_code_for(exc), error_message(exc)
                if args.debug:
                    log.debug("details", exc_info=exc)
            if demo_dir is not None:
                shutil.rmtree(demo_dir, ignore_errors=True)
        if code:
            _report(report_fd, code, message)
            return code
        return EXIT_OK
    finally:
        if report_fd is not None:
            os._exit(0)  # the daemon child: never return into the caller's stack


async def _mount_main(args: argparse.Namespace, url: IscsiUrl | None, mountpoint: str, options: MountOptions,
                      connect: ConnectOptions, demo_dir: Path | None, report_fd: int | None) -> None:
    on_exit = None
    message = ""
    if demo_dir is not None:
        from iscsifs.tgt import TgtDaemon

        tgt = TgtDaemon(demo_dir / "target")
        await trio.to_thread.run_sync(tgt.start)
        backing = demo_dir / "target" / "demo.img"
        with open(backing, "wb") as f:
            f.write(DEMO_GREETING)
            f.truncate(DEMO_SIZE)
        tgt.add_target(DEMO_TARGET)
        tgt.add_lun(DEMO_TARGET, 1, backing)
        url = parse_url(tgt.url)

        def on_exit() -> None:
            tgt.stop()
            shutil.rmtree(demo_dir, ignore_errors=True)

        message = (f"iscsifs: demo target {DEMO_TARGET} on {tgt.portal} (a private tgtd), mounted at {mountpoint}\n"
                   f"  try:      ls -l {mountpoint}/{DEMO_TARGET}/ && head -c 120 {mountpoint}/{DEMO_TARGET}/1\n"
                   f"  unmount:  fusermount3 -u {mountpoint}   (also stops the demo target)")
    assert url is not None
    client = Client.for_url(url, connect)
    if args.foreground and demo_dir is not None:
        message += "\n  (running in the foreground: Ctrl-C also unmounts)"

    pid_file: PidFile | None = args.pid_file_obj

    def ready() -> None:
        if pid_file is not None:
            pid_file.write()
        _report(report_fd, EXIT_OK, message)
        if report_fd is not None:
            os.chdir("/")
            _detach_stdio()
            log_to_syslog(args.debug)
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=mounted {url} on {mountpoint}")

    try:
        await serve(client, url, mountpoint, options, ready, on_exit)
    except BaseException:
        if on_exit is not None:
            on_exit()
        raise
    finally:
        sd_notify("STOPPING=1")
        if pid_file is not None:
            pid_file.remove()


# -- ls --------------------------------------------------------------------------------------------


async def _ls(url: IscsiUrl, client: Client, progress: bool) -> list[LunInfo]:
    rows: list[LunInfo] = []
    targets = [url.target] if url.target else [t.name for t in sorted(await client.discover(url), key=lambda t: t.name)]
    failures: list[IscsiError] = []
    for n, target in enumerate(targets, 1):
        if progress:
            print(f"\riscsifs: scanning target {n}/{len(targets)}", end="", file=sys.stderr, flush=True)
        try:
            infos = await client.scan_target(url, target)
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


def lun_record(info: LunInfo, paths: list[str] | None = None) -> dict[str, object]:
    """One LUN for ``ls --json``: sizes in bytes, null where a LUN is not a disk; ``paths``: every
    portal its target is known at (the URL's, ``-o portal=``, SendTargets), ``portal`` the one used."""
    return {
        "target": info.target, "lun": info.lun, "type": DeviceType.name(info.inquiry.device_type),
        "size": info.capacity.size if info.capacity else None,
        "block_size": info.capacity.block_size if info.capacity else None,
        "vendor": info.inquiry.vendor, "product": info.inquiry.product, "revision": info.inquiry.revision,
        "serial": info.identity.serial or None, "wwn": info.identity.wwn or None,
        "write_protected": info.identity.write_protected, "portal": info.portal,
        "paths": paths if paths is not None else [info.portal],
    }


def run_ls(args: argparse.Namespace) -> int:
    url = parse_url(args.url)
    _, connect = parse_mount_options(args.options)
    client = Client.for_url(url, connect)
    rows = trio.run(_ls, url, client, sys.stderr.isatty() and not args.debug)
    if args.json:
        print(json.dumps([lun_record(info, [str(p) for p in client.portals(url, info.target)]) for info in rows],
                         indent=2))
        return EXIT_OK
    header = ("TARGET", "LUN", "TYPE", "SIZE", "VENDOR", "PRODUCT")
    table = [header] + [(i.target, str(i.lun), DeviceType.name(i.inquiry.device_type),
                         str(i.capacity.size) if i.capacity else "-", i.inquiry.vendor, i.inquiry.product)
                        for i in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.rjust(w) if i in (1, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return EXIT_OK


# -- stats -----------------------------------------------------------------------------------------


def run_stats(args: argparse.Namespace) -> int:
    try:
        raw = os.getxattr(args.mountpoint, STATS_XATTR.decode())
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise UsageError(f"{args.mountpoint} is not an iscsifs mount") from None
        raise UsageError(f"cannot read statistics of {args.mountpoint}: {exc.strerror}") from None
    stats = json.loads(raw)
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return EXIT_OK
    lat = stats["latency_us"]
    print(f"uptime       {stats['uptime_s']} s\n"
          f"sessions     {stats['sessions']} logged in, {stats['reconnects']} reconnects\n"
          f"commands     {stats['commands']} ({stats['errors']} not GOOD, retried ones such as UNIT ATTENTION included)\n"
          f"read         {stats['bytes_read']} bytes\n"
          f"written      {stats['bytes_written']} bytes\n"
          f"latency      p50 {lat['p50']} us, p90 {lat['p90']} us, p99 {lat['p99']} us, max {lat['max']} us")
    for target, paths in stats.get("paths", {}).items():
        print(f"paths of {target}")
        for p in paths:
            print(f"  {p['portal']:<24} {p['state']}{'  (active)' if p['active'] else ''}")
    for name, count in stats["commands_by_kind"].items():
        print(f"  {name:<24} {count}")
    return EXIT_OK


# -- entry point -----------------------------------------------------------------------------------


def _mount_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iscsifs",
        usage="iscsifs [-o OPTIONS] [-f] [-d] [--pid-file PATH] [URL MOUNTPOINT]\n"
              "       iscsifs ls [-o OPTIONS] [--json] URL\n       iscsifs stats [--json] MOUNTPOINT",
        description="Mount iSCSI LUNs as regular files. With no URL, mount a demo on a throwaway local tgtd.",
        epilog="URL: iscsi://[user[%password]@]host[:port][/target-iqn[/lun]]  (IPv6 hosts in [brackets])\n"
               "     query keys (libiscsi's): ?target_user=U&target_password=P&header_digest=D&data_digest=D\n"
               + OPTIONS_HELP + "\n" + EXAMPLES_HELP + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", nargs="?", metavar="URL")
    p.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS")
    p.add_argument("-f", dest="foreground", action="store_true", help="stay in the foreground")
    p.add_argument("-d", dest="debug", action="store_true", help="log protocol events (implies nothing else)")
    p.add_argument("--pid-file", metavar="PATH", help="write the daemon's pid here once the mount is live")
    p.add_argument("--version", action="version", version=f"iscsifs {__version__}")
    return p


def _ls_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs ls", description="List every target and LUN on a portal.",
                                epilog="options (-o): initiator_name, credentials, chap_algs, header_digest, data_digest"
                                       " (as for a mount)\n\n" + EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", metavar="URL")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS")
    p.add_argument("-d", dest="debug", action="store_true", help="log protocol events")
    p.add_argument("--json", action="store_true", help="print JSON (sizes in bytes) instead of a table")
    return p


def _stats_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs stats", description="Statistics of a running iscsifs mount.",
                                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(debug=False)
    return p


COMMANDS = {"ls": (_ls_parser, run_ls), "stats": (_stats_parser, run_stats)}


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    hide_secrets_from_ps(argv)
    command = COMMANDS.get(argv[0]) if argv else None
    if command is not None:
        args = command[0]().parse_args(argv[1:])
        run = command[1]
    else:
        args = _mount_parser().parse_args(argv)
        run = run_mount
    setup_logging(args.debug)
    try:
        return run(args)
    except BaseException as exc:  # noqa: BLE001
        exc = first_error(exc)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if isinstance(exc, BrokenPipeError) or getattr(exc, "errno", None) == errno.EPIPE:
            return EXIT_OK
        if args.debug:
            log.debug("details", exc_info=exc)
        print(f"iscsifs: {error_message(exc)}", file=sys.stderr)
        return exit_code_for(exc)

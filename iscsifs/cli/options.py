"""The command line as typed values: argparse for the arguments, ``-o`` options parsed into
``MountOptions`` and ``ConnectOptions``, and one dataclass per command (``parse_command``).
Options given before a subcommand (``iscsifs -d ls URL``) count as given after it; ``-d`` is
every command's."""

from __future__ import annotations

import argparse
import enum
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import NoReturn, TypeVar

from iscsifs import __version__
from iscsifs.block.client import DIGEST_OFFERS, ConnectOptions
from iscsifs.block.lun import DetectZeroes
from iscsifs.mount.fs import CacheMode
from iscsifs.mount.serve import MountOptions
from iscsifs.net.privileges import Credentials
from iscsifs.proto.address import Portal
from iscsifs.proto.chap import parse_algorithms
from iscsifs.proto.policy import PathPolicy, RecoveryPolicy
from iscsifs.scsi.persistent import PR_TYPE_WORDS, PrType, parse_key, parse_pr_type
from iscsifs.scsi.raw import CdbArgumentError, parse_cdb_arguments
from iscsifs.url import UrlError, is_iscsi_name, parse_hostport

T = TypeVar("T")


class UsageError(Exception):
    """A bad command line, option or mount point (exit code 2)."""


class RawUsageError(Exception):
    """A bad ``iscsifs raw`` command line: exit code 1, sg_raw's SG_LIB_SYNTAX_ERROR."""


EXAMPLES_HELP = """examples:
  iscsifs                                              a demo LUN from a throwaway local tgtd
  iscsifs ls iscsi://san.example                       every target and LUN on a portal (--json for scripts)
  iscsifs iscsi://san.example /mnt/san                 one directory per target, one file per disk LUN
  iscsifs -o ro,credentials=/etc/iscsifs/db.secret iscsi://san.example/iqn.2026-11.example:db/1 /mnt/db
  mount -t fuse.iscsifs iscsi://san.example/iqn.2026-11.example:db /mnt/db -o allow_other
  iscsifs -o portal=10.0.1.5,portal=10.0.2.5 iscsi://san.example /mnt/san     every target over three paths
  iscsifs stats /mnt/san                               commands, bytes, latency of a running mount
  iscsifs discard /mnt/san/by-id/wwn-0x6001405f...     give a thin LUN's space back to the pool
  iscsifs map /mnt/san/by-id/wwn-0x6001405f...         which blocks of a LUN are allocated
  iscsifs -o reservation_key=0xa1,reservation=write-exclusive-registrants-only iscsi://san.example/iqn...:db /mnt/db
                                                       take part in a shared LUN's reservations (see iscsifs pr)
  iscsifs pr /mnt/db/0                                 the LUN's registered keys and its reservation
  iscsifs pr /mnt/db/0 --preempt 0xa1                  fence the host whose key is 0xa1 and take its reservation
  iscsifs inq --page 0x83 /mnt/db/0                    the LUN's device identification, as sg_vpd prints it
  iscsifs opcodes iscsi://san.example/iqn...:db/0      the commands the LUN supports, as sg_opcodes prints them
  iscsifs raw -r 512 -o - /mnt/db/0 28 00 00 00 00 00 00 00 01 00 > lba0     READ(10) of LBA 0, as sg_raw does
  iscsifs mt /mnt/vtl/iqn...:vtl/1 rewind             rewind a tape drive's file, as mt-st's mt does
  iscsifs mtx /mnt/vtl/iqn...:vtl/3 load 1 0           slot 1's tape into drive 0, as mtx does
  fusermount3 -u /mnt/san                              flush, log out, unmount
"""

EXIT_CODES_HELP = """exit codes:
  0  success (for a mount: the mount is live)
  1  unexpected internal error
  2  bad command line, URL, option or mount point; a log or pid file that cannot be written;
     a -o setuid drop that cannot happen
  3  portal unreachable or not answering in time
  4  login refused: authentication or authorization failed
  5  no such target or LUN
  6  the FUSE mount failed, or the mount point is already a mount point
  7  the target failed a command or broke the protocol; discard, map or pr refused (the LUN cannot,
     a reservation conflicts, a key is not registered); mt or mtx refused (no tape, an empty slot, a
     full drive or slot, the drive's file open, a verb the drive does not support)
iscsifs raw exits as sg_raw does (sg3_utils' codes), not as above: 1 a bad command line or no permission,
  2 not ready, 3 medium or hardware error, 5 illegal request, 6 unit attention, 7 data protect,
  24 reservation conflict, 33 timed out, 99 other; a PATH or URL that cannot be reached still gives 2 to 7
"""

OPTIONS_HELP = """options (-o, comma-separated, repeatable):
  ro, rw                 read-only or read-write (default rw; write-protected LUNs are always read-only)
  allow_other            let other users reach the files (needs user_allow_other in /etc/fuse.conf)
  uid=N, gid=N, umask=M  owner, group and permission mask of the files (default: yours, 022)
  initiator_name=IQN     our iSCSI name (default: /etc/iscsi/initiatorname.iscsi or one derived from the machine)
  credentials=FILE       CHAP secrets file, mode 600: username, password, target_username, target_password
  chap_algs=LIST         CHAP algorithms to offer, in order (sha256,sha3-256,sha1,md5; default all, strongest first)
  header_digest=D        none, crc32c, crc32c-none (default) or none-crc32c
  data_digest=D          likewise (default none-crc32c)
  readahead=KIB          the kernel's readahead for buffered reads (default 1024; set only when run as root)
  poll=US                while I/O is quick, poll up to US microseconds for the next answer or request
                         before sleeping (default 50; 0: never; not with workers)
  portal=HOST[:PORT]     another path to every target (repeatable; IPv6 in [brackets]); SendTargets adds its own
  path_policy=P          failover (default: one active path, the others standby) or round-robin
  detect_zeroes=M        off (default), on (zero blocks go out as WRITE SAME) or unmap (deallocated where it
                         reads as zeros)
  cache=MODE             none (default: a write(2) returns once the target has it) or writeback (the kernel
                         gathers buffered writes and sends them later; fsync and close report their errors)
  metrics_file=PATH      keep PATH a Prometheus text file of the mount's metrics, rewritten every nop_interval
                         (for node_exporter's textfile collector; iscsifs stats --prometheus prints the same)
  log_file=PATH          where a background mount logs (default: the journal or syslog; without either, a file)
  idle_timeout=S         log out a target's session after S seconds without open files or I/O (default 0: never)
  max_sessions=N         at most N targets logged in at once (default 64; the least recently used idle one goes)
  reservation_key=KEY    register KEY (0x-prefixed hex or decimal) for persistent reservations on every LUN, on
                         every path and worker, again after each reconnect; unregistered at unmount
  reservation=TYPE       also reserve each LUN: write-exclusive-registrants-only, exclusive-access, ... (iscsifs pr)
  setuid=USER            once the mount is live, run as USER (its group too) with no capabilities and
                         no_new_privs; a small privileged process stays only to unmount when the daemon ends
  workers=N              processes that run the iSCSI sessions beside the FUSE process (default $ISCSIFS_WORKERS,
                         else 0: everything in one process, which measured faster on 2 CPUs; see the README)
reliability (seconds): nop_interval=5, nop_timeout=5 (keepalive), command_timeout=30 (then ABORT TASK, LUN RESET,
  reconnect), recovery_timeout=120 (while reconnecting, I/O waits this long, then fails with EIO), login_timeout=15;
  retries=5 (a command is sent at most retries+1 times; one never answered fails with EIO within
  command_timeout x (retries+1) + recovery_timeout)
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
MAX_POLL_US = 10_000
MAX_WORKERS = 64
WORKERS_VARIABLE = "ISCSIFS_WORKERS"  # the default of -o workers (e.g. for every mount of a systemd unit)
RECOVERY_OPTIONS = ("nop_interval", "nop_timeout", "command_timeout", "recovery_timeout", "login_timeout")


def _ignored(key: str) -> bool:
    return key in IGNORED_OPTIONS or key.startswith(("x-", "comment="))


def _seconds(key: str, val: str, high: float, what: str, *, zero: bool = False) -> float:
    """A number of seconds up to ``high``; above 0, or 0 too where ``zero`` (it means "never")."""
    try:
        seconds = float(val)
    except ValueError:
        seconds = -1.0
    if not (0 <= seconds <= high if zero else 0 < seconds <= high):
        raise UsageError(f"{key}={val[:20]} is not {what}")
    return seconds


def _number(key: str, val: str, low: int, high: int, what: str = "") -> int:
    if not val.isdecimal() or not low <= int(val) <= high:
        raise UsageError(f"{key}={val[:20]} is not {what or f'a number from {low} to {high}'}")
    return int(val)


def _workers(key: str, val: str) -> int:
    return _number(key, val, 0, MAX_WORKERS)


# -- the option table: name -> what it sets, from its value ("" for a flag) -------------------------
# Each entry is checked and typed where it is: a bad value is one line (exit 2) naming the option.

Apply = Callable[["Options", str, str], "Options"]
E = TypeVar("E", bound=enum.Enum)


def _umask(o: Options, key: str, val: str) -> Options:
    if not re.fullmatch(r"[0-7]{1,4}", val):
        raise UsageError(f"umask={val[:20]} is not an octal mask such as 022")
    return replace(o, mount=replace(o.mount, umask=int(val, 8) & 0o777))


def _initiator_name(o: Options, key: str, val: str) -> Options:
    if not is_iscsi_name(val):
        raise UsageError(f"initiator_name={val[:80]} is not an iSCSI name (iqn.YYYY-MM.domain:name)")
    return replace(o, connect=replace(o.connect, initiator_name=val))


def _chap_algs(o: Options, key: str, val: str) -> Options:
    try:
        return replace(o, connect=replace(o.connect, chap_algorithms=parse_algorithms(val)))
    except ValueError as exc:
        raise UsageError(f"chap_algs: {exc}") from None


def _recovery(o: Options, key: str, val: str) -> Options:
    seconds = _seconds(key, val, 86400, "a number of seconds (0 < s <= 86400)")
    return replace(o, connect=replace(o.connect, recovery=_with_time(o.connect.recovery, key, seconds)))


def _with_time(policy: RecoveryPolicy, key: str, seconds: float) -> RecoveryPolicy:
    """``policy`` with one of RECOVERY_OPTIONS set (every one of them is a float field)."""
    assert key in RECOVERY_OPTIONS
    return replace(policy, **{key: seconds})  # type: ignore[arg-type]  # mypy merges the fields' types


def _portal(o: Options, key: str, val: str) -> Options:
    try:
        portal = Portal(*parse_hostport(val))
    except UrlError as exc:
        raise UsageError(f"portal={val[:80]}: {exc}") from None
    return replace(o, connect=replace(o.connect, portals=(*o.connect.portals, portal)))


def _mount_choice(kind: type[E], choices: str, set_value: Callable[[MountOptions, E], MountOptions]) -> Apply:
    """A mount option whose value is one of ``kind``'s."""
    def apply(o: Options, key: str, val: str) -> Options:
        try:
            value = kind(val)
        except ValueError:
            raise UsageError(f"{key}={val[:20]} is not {choices}") from None
        return replace(o, mount=set_value(o.mount, value))
    return apply


def _log_file(o: Options, key: str, val: str) -> Options:
    if not val:
        raise UsageError("log_file= needs a path")
    return replace(o, log_file=val)


def _path_policy(o: Options, key: str, val: str) -> Options:
    try:
        return replace(o, connect=replace(o.connect, path_policy=PathPolicy(val)))
    except ValueError:
        raise UsageError(f"path_policy={val[:20]} is not failover or round-robin") from None


def _digest(o: Options, key: str, val: str) -> Options:
    if val.lower() not in DIGEST_OFFERS:
        raise UsageError(f"{key}={val[:20]} is not one of {', '.join(DIGEST_OFFERS)}")
    if key == "header_digest":
        return replace(o, connect=replace(o.connect, header_digest=val.lower()))
    return replace(o, connect=replace(o.connect, data_digest=val.lower()))


def _id(o: Options, key: str, val: str) -> Options:
    number = _id_option(key, val)
    return replace(o, mount=replace(o.mount, uid=number) if key == "uid" else replace(o.mount, gid=number))


def _metrics_file(o: Options, key: str, val: str) -> Options:
    if not val:
        raise UsageError("metrics_file= needs a path")
    path = os.path.abspath(val)  # the daemon runs in /
    if not os.path.isdir(os.path.dirname(path)):
        raise UsageError(f"metrics_file={val[:80]}: directory {os.path.dirname(path)} does not exist")
    return replace(o, mount=replace(o.mount, metrics_file=path))


def _setuid(o: Options, key: str, val: str) -> Options:
    try:
        creds = Credentials.of_user(val)
    except ValueError as exc:
        raise UsageError(f"setuid={val[:40]}: {exc}") from None
    if os.geteuid() != 0 and os.geteuid() != creds.uid:
        raise UsageError(f"setuid={val[:40]} needs root (or to be started as {creds.user}, with the "
                         "capabilities to mount)")
    return replace(o, mount=replace(o.mount, setuid=creds))


def _reservation_key(o: Options, key: str, val: str) -> Options:
    try:
        return replace(o, mount=replace(o.mount, reservation_key=parse_key(val)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _reservation(o: Options, key: str, val: str) -> Options:
    try:
        return replace(o, mount=replace(o.mount, reservation=parse_pr_type(val)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _kernel_flag(o: Options, key: str, val: str) -> Options:
    return replace(o, mount=replace(o.mount, kernel=o.mount.kernel | {key}))


# Options that take a value (NAME=VALUE).
VALUED: dict[str, Apply] = {
    "uid": _id,
    "gid": _id,
    "umask": _umask,
    "initiator_name": _initiator_name,
    # empty: a systemd EnvironmentFile that names no file
    "credentials": lambda o, k, v: replace(o, connect=replace(o.connect, credentials_file=v or None)),
    "chap_algs": _chap_algs,
    **{key: _recovery for key in RECOVERY_OPTIONS},
    "readahead": lambda o, k, v: replace(o, mount=replace(o.mount, readahead_kib=_number(
        k, v, 0, MAX_READAHEAD_KIB, f"a number of KiB (0 to {MAX_READAHEAD_KIB})"))),
    "poll": lambda o, k, v: replace(o, mount=replace(o.mount, poll_us=_number(
        k, v, 0, MAX_POLL_US, f"a number of microseconds (0 to {MAX_POLL_US})"))),
    "portal": _portal,
    "detect_zeroes": _mount_choice(DetectZeroes, "off, on or unmap", lambda m, v: replace(m, detect_zeroes=v)),
    "cache": _mount_choice(CacheMode, "none or writeback", lambda m, v: replace(m, cache=v)),
    "log_file": _log_file,
    "idle_timeout": lambda o, k, v: replace(o, mount=replace(o.mount, idle_timeout=_seconds(
        k, v, 86400 * 365, "a number of seconds (0: never)", zero=True))),
    "retries": lambda o, k, v: replace(o, connect=replace(o.connect, recovery=replace(
        o.connect.recovery, retries=_number(k, v, 0, 100)))),
    "max_sessions": lambda o, k, v: replace(o, mount=replace(o.mount, max_sessions=_number(k, v, 1, 100000))),
    "workers": lambda o, k, v: replace(o, mount=replace(o.mount, workers=_workers(k, v))),
    "path_policy": _path_policy,
    "header_digest": _digest,
    "data_digest": _digest,
    "metrics_file": _metrics_file,
    "setuid": _setuid,
    "reservation_key": _reservation_key,
    "reservation": _reservation,
}
# Options that are flags (NAME alone).
FLAGS: dict[str, Apply] = {
    "ro": lambda o, k, v: replace(o, mount=replace(o.mount, read_only=True)),
    "rw": lambda o, k, v: replace(o, mount=replace(o.mount, read_only=False)),
    "allow_other": lambda o, k, v: replace(o, mount=replace(o.mount, allow_other=True)),
    **dict.fromkeys(KERNEL_FLAGS, _kernel_flag),
}


def parse_mount_options(values: list[str], environ: Mapping[str, str] = os.environ) -> Options:
    """-o opt[,opt...] (repeatable), by the tables above; ``workers`` defaults to $ISCSIFS_WORKERS."""
    options = Options(MountOptions(), ConnectOptions())
    given: set[str] = set()
    for value in values:
        for opt in filter(None, value.split(",")):
            key, eq, val = opt.partition("=")
            if _ignored(opt) or (key == "comment" and eq):
                continue
            apply = VALUED.get(key) if eq else FLAGS.get(key)
            if apply is None:
                raise UsageError(f"unknown mount option '{key[:40]}' (see iscsifs --help)")
            options = apply(options, key, val)
            given.add(key)
    if options.mount.reservation is not None and options.mount.reservation_key is None:
        raise UsageError("reservation= needs reservation_key= (a reservation is held by a registered key)")
    if "workers" not in given and environ.get(WORKERS_VARIABLE):
        options = replace(options, mount=replace(options.mount, workers=_workers(WORKERS_VARIABLE,
                                                                                 environ[WORKERS_VARIABLE])))
    return options


@dataclass(frozen=True, slots=True)
class Options:
    """What ``-o`` says: for the kernel mount, for the iSCSI connections, and where logs go."""

    mount: MountOptions
    connect: ConnectOptions
    log_file: str | None = None


@dataclass(frozen=True, slots=True)
class MountCommand:
    url: str | None  # None: the demo
    mountpoint: str | None
    options: Options
    foreground: bool = False
    debug: bool = False
    pid_file: str | None = None


@dataclass(frozen=True, slots=True)
class LsCommand:
    url: str
    options: Options
    json: bool = False
    debug: bool = False


@dataclass(frozen=True, slots=True)
class StatsCommand:
    path: str
    json: bool = False
    debug: bool = False
    prometheus: bool = False


@dataclass(frozen=True, slots=True)
class DiscardCommand:
    path: str
    offset: int = 0
    length: int | None = None  # None: to the end of the LUN
    debug: bool = False


@dataclass(frozen=True, slots=True)
class MapCommand:
    path: str
    json: bool = False
    debug: bool = False


class PrAction(enum.Enum):
    """What ``iscsifs pr`` asks (SPC-4 PERSISTENT RESERVE OUT service actions, sg_persist's names)."""

    SHOW = "show"
    REGISTER = "register"
    UNREGISTER = "unregister"
    RESERVE = "reserve"
    RELEASE = "release"
    CLEAR = "clear"
    PREEMPT = "preempt"


@dataclass(frozen=True, slots=True)
class PrCommand:
    path: str
    action: PrAction = PrAction.SHOW
    key: int | None = None  # of --register and --preempt
    type: PrType | None = None  # of --reserve, or the type --preempt takes over with
    json: bool = False
    debug: bool = False


MT_VERBS = ("status", "tell", "rewind", "fsf", "bsf", "fsr", "bsr", "eod", "weof", "setblk", "offline", "eject",
            "load", "erase")
MT_COUNTED = ("fsf", "bsf", "fsr", "bsr", "weof", "setblk")  # the verbs that take a COUNT
MTX_VERBS = ("status", "load", "unload", "transfer", "exchange", "inventory", "first", "last", "next")
# mtx's arguments: (fewest, most), each a number (slots from 1, drives from 0).
MTX_ARITY = {"status": (0, 0), "load": (1, 2), "unload": (0, 2), "transfer": (2, 2), "exchange": (2, 2),
             "inventory": (0, 0), "first": (0, 1), "last": (0, 1), "next": (0, 1)}


@dataclass(frozen=True, slots=True)
class MtCommand:
    """mt-st's ``mt -f PATH VERB [COUNT]`` on a drive's file of a running mount."""

    path: str
    verb: str
    count: int | None = None  # None: the verb's default (1; setblk has none)
    json: bool = False
    debug: bool = False


@dataclass(frozen=True, slots=True)
class MtxCommand:
    """mtx's ``mtx -f PATH VERB ARGS`` on a changer's file of a running mount."""

    path: str
    verb: str
    args: tuple[int, ...] = ()
    json: bool = False
    debug: bool = False


@dataclass(frozen=True, slots=True)
class InqCommand:
    target: str  # a LUN file of a running mount, or iscsi://host/iqn/lun
    options: Options
    page: int | None = None  # a VPD page; None: the standard INQUIRY data and the supported pages
    json: bool = False
    debug: bool = False


@dataclass(frozen=True, slots=True)
class OpcodesCommand:
    target: str
    options: Options
    json: bool = False
    debug: bool = False


@dataclass(frozen=True, slots=True)
class RawCommand:
    """sg_raw's command line (sg3_utils 1.46), with a LUN file or a LUN URL for the device."""

    target: str
    cdb: bytes
    options: Options
    request: int = 0  # -r: data-in bytes wanted
    send: int = 0  # -s: data-out bytes, from infile
    infile: str | None = None  # None: stdin
    outfile: str | None = None  # "-": stdout; None: a hex dump on stderr
    nosense: bool = False
    timeout: float = 20.0  # sg_raw's default
    verbose: int = 0
    debug: bool = False


Command = (MountCommand | LsCommand | StatsCommand | DiscardCommand | MapCommand | PrCommand | InqCommand
           | OpcodesCommand | RawCommand | MtCommand | MtxCommand)


def byte_count(text: str) -> int:
    """A size in bytes, with an optional K, M, G or T (binary) suffix: 4096, 1M, 2G."""
    m = re.fullmatch(r"(\d+)([KMGT]?)(?:i?B)?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a size in bytes (4096, 1M, 2G)")
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))


def _mount_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iscsifs",
        usage="iscsifs [-o OPTIONS] [-f] [-d] [--pid-file PATH] [URL MOUNTPOINT]\n"
              "       iscsifs ls [-o OPTIONS] [--json] URL\n       iscsifs stats [--json | --prometheus] PATH\n"
              "       iscsifs discard PATH [--offset N] [--length N]\n       iscsifs map PATH [--json]\n"
              "       iscsifs pr PATH [--json] [--register KEY | --unregister | --reserve TYPE | --release | --clear |"
              " --preempt KEY]\n"
              "       iscsifs inq [-o OPTIONS] [--page N] [--json] PATH|URL\n"
              "       iscsifs opcodes [-o OPTIONS] [--json] PATH|URL\n"
              "       iscsifs raw [-O OPTIONS] [-r LEN] [-s LEN [-i FILE]] [-o FILE | -b] [-n] [-t SECS] [-v]"
              " PATH|URL CDB0 CDB1 ...\n"
              "       iscsifs mt [--json] PATH VERB [COUNT]\n"
              "       iscsifs mtx [--json] PATH VERB [SLOT|DRIVE ...]",
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
    p.add_argument("--version", action=_Version, help="show the version")
    return p


class _Version(argparse.Action):
    """``--version``: the version."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"iscsifs {__version__}")
        parser.exit()


def _ls_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs ls", description="List every target and LUN on a portal.",
                                epilog="options (-o): initiator_name, credentials, chap_algs, header_digest, "
                                       "data_digest"
                                       " (as for a mount)\n\n" + EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", metavar="URL")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS")
    p.add_argument("-d", dest="debug", action="store_true", help="log protocol events")
    p.add_argument("--json", action="store_true", help="print JSON (sizes in bytes) instead of a table")
    return p


def _details_flag(p: argparse.ArgumentParser) -> None:
    """-d of the commands that only talk to a running mount: they send no iSCSI of their own, so
    what -d adds is an error's details."""
    p.add_argument("-d", dest="debug", action="store_true", help="print the details (a traceback) of an error too")


def _stats_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs stats", description="Statistics of a running iscsifs mount.",
                                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="the mount point, or any file or directory inside the mount")
    _details_flag(p)
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON (raw numbers: bytes, microseconds)")
    output.add_argument("--prometheus", action="store_true",
                        help="print the Prometheus text exposition format (counters, a latency histogram)")
    return p


def _discard_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs discard", description="Deallocate (unmap) a range of a thin-provisioned "
                                "LUN through its running mount, in whole blocks; the whole LUN by default.",
                                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="a LUN file of an iscsifs mount")
    p.add_argument("--offset", type=byte_count, default=0, help="where to start, in bytes (K/M/G suffixes)")
    p.add_argument("--length", type=byte_count, help="how much, in bytes (default: to the end)")
    _details_flag(p)
    return p


def _map_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs map", description="The allocation of a LUN (GET LBA STATUS) through "
                                "its running mount: extents of mapped, deallocated and anchored blocks.",
                                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="a LUN file of an iscsifs mount")
    p.add_argument("--json", action="store_true", help="print JSON (offsets and lengths in bytes)")
    _details_flag(p)
    return p


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser whose ValueError says why a value is not one."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


PR_EXAMPLES = """examples:
  iscsifs pr /mnt/db/0                         registered keys and the reservation (--json for scripts)
  iscsifs pr /mnt/db/0 --register 0xa1         this mount registers key 0xa1 on every path, and after reconnects
  iscsifs pr /mnt/db/0 --reserve write-exclusive-registrants-only
  iscsifs pr /mnt/db/0 --preempt 0xb2          fence the host with key 0xb2: its registration goes, its
                                               reservation becomes ours (--reserve TYPE: with that type)
  iscsifs pr /mnt/db/0 --release; iscsifs pr /mnt/db/0 --unregister
reservation types: """ + ", ".join(PR_TYPE_WORDS) + """
"""


def _pr_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs pr", description="SCSI-3 persistent reservations of a LUN, through "
                                "its running mount: show them, or register, reserve, release, clear, preempt. "
                                "Needs read access to the LUN file to show, write access to change.",
                                epilog=PR_EXAMPLES + "\n" + EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="a LUN file of an iscsifs mount (or its by-id/ link)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _details_flag(p)
    actions = p.add_mutually_exclusive_group()
    actions.add_argument("--register", type=_argument(parse_key), metavar="KEY",
                         help="register KEY for this mount, on every I_T nexus it has")
    actions.add_argument("--unregister", action="store_true", help="unregister this mount (releases what it holds)")
    actions.add_argument("--release", action="store_true", help="release the reservation this mount holds")
    actions.add_argument("--clear", action="store_true", help="remove every registration and the reservation")
    actions.add_argument("--preempt", type=_argument(parse_key), metavar="KEY",
                         help="remove KEY's registrations and take over its reservation (fencing)")
    p.add_argument("--reserve", type=_argument(parse_pr_type), metavar="TYPE",
                   help="reserve the LUN with TYPE (with --preempt: the type to take over with)")
    return p


def _pr_command(ns: argparse.Namespace) -> PrCommand:
    if ns.register is not None:
        return PrCommand(ns.path, PrAction.REGISTER, key=ns.register, json=ns.json)
    if ns.preempt is not None:
        return PrCommand(ns.path, PrAction.PREEMPT, key=ns.preempt, type=ns.reserve, json=ns.json)
    chosen = [a for a, given in ((PrAction.UNREGISTER, ns.unregister), (PrAction.RELEASE, ns.release),
                                 (PrAction.CLEAR, ns.clear)) if given]
    if chosen and ns.reserve is not None:
        raise UsageError("--reserve goes alone or with --preempt")
    if chosen:
        return PrCommand(ns.path, chosen[0], json=ns.json)
    if ns.reserve is not None:
        return PrCommand(ns.path, PrAction.RESERVE, type=ns.reserve, json=ns.json)
    return PrCommand(ns.path, json=ns.json)


# -- mt and mtx: a tape library through its running mount ---------------------------------------------

MT_EXAMPLES = """examples:
  iscsifs mt /mnt/vtl/iqn...:vtl/1 status      mt-st's status text (--json: its fields)
  iscsifs mt -f /mnt/vtl/iqn...:vtl/1 rewind; tar tf /mnt/vtl/iqn...:vtl/1
  TAPE=/mnt/vtl/iqn...:vtl/1 iscsifs mt fsf 1  past the first filemark: the second tape file
  iscsifs mt /mnt/vtl/iqn...:vtl/1 eod         to the end of data, to append another file
  iscsifs mt /mnt/vtl/iqn...:vtl/1 tell        At block N.
verbs: status, tell, rewind, fsf N, bsf N, fsr N, bsr N, eod (seod), weof N, setblk 0, offline (eject,
  rewoffl), load, erase; a beginning of a verb is the first verb it begins (rew, stat), as in mt-st
the drive: PATH, or -f PATH, or $TAPE
"""

MTX_EXAMPLES = """examples:
  iscsifs mtx /mnt/vtl/iqn...:vtl/3 status         mtx's status text (--json: slots, drives, barcodes, files)
  iscsifs mtx -f /mnt/vtl/iqn...:vtl/3 load 1 0    slot 1's tape into drive 0
  iscsifs mtx /mnt/vtl/iqn...:vtl/3 unload 1 0     drive 0's tape into slot 1 (no slot: where it came from)
  CHANGER=/mnt/vtl/iqn...:vtl/3 iscsifs mtx next   drive 0's tape back, the next slot's in
verbs: status, load SLOT [DRIVE], unload [SLOT] [DRIVE], transfer SLOT SLOT, exchange SLOT SLOT, inventory,
  first [DRIVE], last [DRIVE], next [DRIVE]
the changer: PATH, or -f PATH, or $CHANGER, or $TAPE (as mtx)
"""

MT_ALIASES = {"seod": "eod", "rewoffl": "offline"}  # mt-st's other names for the same operation


def _mt_verb(word: str) -> str:
    """A verb as mt-st reads it: the first name (or other name) that begins with ``word``, in the
    order of MT_VERBS, where rewind comes before offline's other name rewoffl, as in mt-st's table."""
    for name in (*MT_VERBS, *MT_ALIASES):
        if word and name.startswith(word):
            return MT_ALIASES.get(name, name)
    raise UsageError(f"mt: unknown command {word!r}; the verbs: {', '.join(MT_VERBS)}")


def _mt_count(word: str) -> int:
    """A COUNT as mt-st reads it: decimal, 0x hexadecimal or 0 octal, with k, M or G after it."""
    scale = {"k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(word[-1:], 1)
    try:
        value = int(word[:-1] if scale != 1 else word, 0) * scale
    except ValueError:
        raise UsageError(f"mt: {word!r} is not a count") from None
    if value < 0:
        raise UsageError("mt: negative repeat count")
    return value


def _device_and_words(ns: argparse.Namespace, what: str, variables: tuple[str, ...],
                      is_verb: Callable[[str], bool]) -> tuple[str, list[str]]:
    """The device file and the verb's words: -f PATH, else a first word that is not a verb, else
    the environment (mt-st's $TAPE; mtx's $CHANGER, then $TAPE)."""
    words: list[str] = list(ns.words)
    if ns.file is not None:
        return ns.file, words
    if words and not is_verb(words[0]):
        return words[0], words[1:]
    for variable in variables:
        if os.environ.get(variable):
            return os.environ[variable], words
    raise UsageError(f"no {what}: give its file (PATH or -f PATH) or set ${' or $'.join(variables)}")


def _mt_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs mt", usage="iscsifs mt [-f PATH] [--json] [PATH] VERB [COUNT]",
                                description="mt-st's verbs on a tape drive's file of a running mount, on the mount's "
                                "own drive (where the position is kept). Refused (EBUSY) while the file is open, as "
                                "st refuses a second opener. Positioning works on a read-only mount too; weof and "
                                "erase need write access to the file.",
                                epilog=MT_EXAMPLES + "\n" + EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "-t", dest="file", metavar="PATH", help="the tape drive's file (else $TAPE)")
    p.add_argument("words", metavar="[PATH] VERB [COUNT]", nargs="+",
                   help="the drive's file, unless -f or $TAPE names it; one of: " + ", ".join(MT_VERBS)
                   + "; how many (default 1; setblk: the block size)")
    p.add_argument("--json", action="store_true", help="print JSON (status: its fields; tell: the block)")
    _details_flag(p)
    return p


def _is_mt_verb(word: str) -> bool:
    try:
        _mt_verb(word)
    except UsageError:
        return False
    return True


def _mt_command(ns: argparse.Namespace) -> MtCommand:
    path, words = _device_and_words(ns, "tape drive", ("TAPE",), _is_mt_verb)
    if not 1 <= len(words) <= 2:
        raise UsageError("mt: give one verb and at most one count" if words else "mt: no verb")
    verb = _mt_verb(words[0])
    count = _mt_count(words[1]) if len(words) == 2 else None
    if verb in ("erase", "load"):
        count = None  # mt-st takes a count here (the erase's kind, a loader's slot): nothing on these drives
    if count is not None and verb not in MT_COUNTED:
        raise UsageError(f"mt {verb} takes no count")
    if verb == "setblk" and count is None:
        raise UsageError("mt setblk needs the block size (0: variable-block mode)")
    return MtCommand(path, verb, count, ns.json, ns.debug)


def _mtx_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs mtx", usage="iscsifs mtx [-f PATH] [--json] [PATH] VERB [SLOT|DRIVE ...]",
                                description="mtx's verbs on a medium changer's file of a "
                                "running mount, in mtx's numbering (slots from 1, drives from 0). Moving media "
                                "needs write access to the changer's file (read-only: in practice, root).",
                                epilog=MTX_EXAMPLES + "\n" + EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", dest="file", metavar="PATH", help="the changer's file (else $CHANGER or $TAPE)")
    p.add_argument("words", metavar="[PATH] VERB [SLOT|DRIVE ...]", nargs="+",
                   help="the changer's file, unless -f or the environment names it; one of: " + ", ".join(MTX_VERBS)
                   + "; the verb's slot and drive numbers")
    p.add_argument("--json", action="store_true", help="print JSON (with status)")
    _details_flag(p)
    return p


def _mtx_command(ns: argparse.Namespace) -> MtxCommand:
    path, words = _device_and_words(ns, "medium changer", ("CHANGER", "TAPE"), lambda w: w in MTX_VERBS)
    if not words:
        raise UsageError("mtx: no verb")
    verb = words[0]
    if verb not in MTX_VERBS:
        raise UsageError(f"mtx: unknown command {verb!r}; the verbs: {', '.join(MTX_VERBS)}")
    try:
        args = [int(w) for w in words[1:]]
    except ValueError:
        raise UsageError(f"mtx {verb}: slot and drive numbers are whole numbers") from None
    low, high = MTX_ARITY[verb]
    if not low <= len(args) <= high:
        want = f"{low}" if low == high else f"{low} to {high}"
        raise UsageError(f"mtx {verb} takes {want} number{'s' if high != 1 else ''}, not {len(args)}")
    if any(n < 0 for n in args):
        raise UsageError(f"mtx {verb}: a slot or drive number is never negative")
    if ns.json and verb != "status":
        raise UsageError("--json goes with mtx status")
    return MtxCommand(path, verb, tuple(args), ns.json, ns.debug)


# -- inq, opcodes, raw: SCSI commands of the user's, through a mount's LUN file or a login of their own --

LUN_TARGET_HELP = "a LUN file of a running iscsifs mount (its session is used), or iscsi://host/iqn/lun"
LOGIN_OPTIONS_HELP = ("options for a URL's own login: initiator_name, credentials, chap_algs, header_digest, "
                      "data_digest (as for a mount)")


def page_code(text: str) -> int:
    """A VPD page code: decimal, or hex with 0x (``--page 0x83`` is ``--page 131``)."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise ValueError(f"{text[:20]!r} is not a page code (decimal, or hex as 0x83)") from None
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{text[:20]} is not a page code (0 to 255)")
    return value


def sg_length(text: str) -> int:
    """A length as sg_raw takes it: decimal, hex as 0x1f or 1fh, with an optional k (x1024)."""
    m = re.fullmatch(r"(?:0x([0-9a-f]+)|([0-9a-f]+)h|(\d+))(k?)", text.strip(), re.IGNORECASE)
    if not m:
        raise ValueError(f"{text[:20]!r} is not a length (decimal, 0x hex, or with a k suffix)")
    value = int(m.group(1), 16) if m.group(1) else int(m.group(2), 16) if m.group(2) else int(m.group(3))
    return value * (1024 if m.group(4) else 1)


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 86400:
        raise ValueError(f"{text[:20]!r} is not a number of seconds (0 < s <= 86400)")
    return seconds


def _inq_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs inq", description="A LUN's standard INQUIRY data and VPD pages, "
                                "decoded as sg_inq and sg_vpd print them. Needs read access to a LUN file.",
                                epilog="VPD pages decoded: 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2 (others in hex)\n"
                                       "examples:\n  iscsifs inq /mnt/db/0\n  iscsifs inq --page 0x83 --json "
                                       "iscsi://san.example/iqn.2026-11.example:db/0\n\n"
                                       + LOGIN_OPTIONS_HELP + "\n\n" + EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="PATH|URL", help=LUN_TARGET_HELP)
    p.add_argument("--page", type=_argument(page_code), metavar="N",
                   help="this VPD page (decimal, or hex as 0x83); default: the standard INQUIRY data")
    p.add_argument("--json", action="store_true", help="print the decoded fields as JSON")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS")
    p.add_argument("-d", dest="debug", action="store_true", help="log protocol events")
    return p


def _opcodes_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs opcodes", description="The commands a LUN supports (REPORT SUPPORTED "
                                "OPERATION CODES), as sg_opcodes prints them. Needs read access to a LUN file.",
                                epilog="example:\n  iscsifs opcodes /mnt/db/0\n\n" + LOGIN_OPTIONS_HELP + "\n\n"
                                       + EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="PATH|URL", help=LUN_TARGET_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS")
    p.add_argument("-d", dest="debug", action="store_true", help="log protocol events")
    return p


class _RawParser(argparse.ArgumentParser):
    """sg_raw exits 1 for a bad command line, in one line."""

    def error(self, message: str) -> NoReturn:
        raise RawUsageError(message)


RAW_EPILOG = """The CDB is given as hex bytes, one per argument. Everything is printed as sg_raw prints it, on
stderr (the status, the sense decoded, "Received N bytes of data" and a hex dump); data-in goes to stdout
only with -o - or -b. Only root or a holder of CAP_SYS_RAWIO may use it (as SG_IO), through a mount too.
examples:
  iscsifs raw -r 512 -o - /mnt/db/0 28 00 00 00 00 00 00 00 01 00 > lba0     READ(10) of LBA 0
  iscsifs raw -s 512 -i lba0 iscsi://san.example/iqn...:db/0 2a 00 00 00 00 00 00 00 01 00
  iscsifs raw /mnt/db/0 00 00 00 00 00 00                                       TEST UNIT READY

""" + EXIT_CODES_HELP


def _raw_parser() -> argparse.ArgumentParser:
    p = _RawParser(prog="iscsifs raw", description="Send any SCSI command to a LUN, as sg_raw does: through a "
                   "running mount's session (its I_T nexus and reservations), or a login of its own to a URL.",
                   epilog=RAW_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="PATH|URL", help=LUN_TARGET_HELP)
    p.add_argument("cdb", nargs="*", metavar="CDB", help="the CDB, one hex byte per argument")
    p.add_argument("-r", "--request", type=_argument(sg_length), default=0, metavar="LEN",
                   help="data-in length to ask for (k suffix, 0x or h for hex)")
    p.add_argument("-s", "--send", type=_argument(sg_length), default=0, metavar="LEN",
                   help="data-out length, read from --infile (default stdin)")
    p.add_argument("-i", "--infile", metavar="FILE", help="where the data-out comes from (with -s)")
    p.add_argument("-o", "--outfile", metavar="FILE", help="write the data-in, binary, to FILE (- for stdout)")
    p.add_argument("-b", "--binary", action="store_true", help="write the data-in, binary, to stdout")
    p.add_argument("-n", "--nosense", action="store_true", help="do not print the sense")
    p.add_argument("-t", "--timeout", type=_argument(_timeout), default=20.0, metavar="SECS",
                   help="how long the command may take (default 20 seconds)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="print the CDB sent too")
    p.add_argument("-O", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="a URL's login options, as -o of iscsifs ls (here -o is sg_raw's --outfile)")
    p.add_argument("-d", dest="debug", action="store_true", help="log protocol events")
    return p


def _raw_command(ns: argparse.Namespace) -> RawCommand:
    try:
        cdb = parse_cdb_arguments(ns.cdb)
    except CdbArgumentError as exc:
        raise RawUsageError(str(exc)) from None
    if ns.infile is not None and not ns.send:
        raise RawUsageError("--infile needs --send LEN")
    if ns.binary and ns.outfile not in (None, "-"):
        raise RawUsageError("--binary writes to stdout: it goes without --outfile FILE")
    try:
        options = parse_mount_options(ns.options)
    except UsageError as exc:
        raise RawUsageError(str(exc)) from None
    return RawCommand(ns.target, cdb, options, ns.request, ns.send, ns.infile, "-" if ns.binary else ns.outfile,
                      ns.nosense, ns.timeout, ns.verbose, ns.debug)


SUBCOMMANDS = ("ls", "stats", "discard", "map", "pr", "inq", "opcodes", "raw", "mt", "mtx")
_TAKES_VALUE = ("-o", "--pid-file")


def subcommand_first(argv: list[str]) -> list[str]:
    """``iscsifs -d ls URL`` as ``iscsifs ls -d URL``: the first word that is not an option (or
    an option's value) names the command when it is one."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _TAKES_VALUE:
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            return [word, *argv[:i], *argv[i + 1 :]] if word in SUBCOMMANDS else argv
    return argv


def parse_command(argv: list[str]) -> Command:
    argv = subcommand_first(argv)
    if argv[:1] == ["ls"]:
        ns = _ls_parser().parse_args(argv[1:])
        return LsCommand(ns.url, parse_mount_options(ns.options), ns.json, ns.debug)
    if argv[:1] == ["stats"]:
        ns = _stats_parser().parse_args(argv[1:])
        return StatsCommand(ns.path, ns.json, ns.debug, prometheus=ns.prometheus)
    if argv[:1] == ["discard"]:
        ns = _discard_parser().parse_args(argv[1:])
        return DiscardCommand(ns.path, ns.offset, ns.length, ns.debug)
    if argv[:1] == ["map"]:
        ns = _map_parser().parse_args(argv[1:])
        return MapCommand(ns.path, ns.json, ns.debug)
    if argv[:1] == ["pr"]:
        ns = _pr_parser().parse_args(argv[1:])
        return replace(_pr_command(ns), debug=ns.debug)
    if argv[:1] == ["inq"]:
        ns = _inq_parser().parse_args(argv[1:])
        return InqCommand(ns.target, parse_mount_options(ns.options), ns.page, ns.json, ns.debug)
    if argv[:1] == ["opcodes"]:
        ns = _opcodes_parser().parse_args(argv[1:])
        return OpcodesCommand(ns.target, parse_mount_options(ns.options), ns.json, ns.debug)
    if argv[:1] == ["raw"]:
        return _raw_command(_raw_parser().parse_args(argv[1:]))
    if argv[:1] == ["mt"]:
        return _mt_command(_mt_parser().parse_args(argv[1:]))
    if argv[:1] == ["mtx"]:
        return _mtx_command(_mtx_parser().parse_args(argv[1:]))
    ns = _mount_parser().parse_args(argv)
    return MountCommand(ns.url, ns.mountpoint, parse_mount_options(ns.options), ns.foreground, ns.debug, ns.pid_file)

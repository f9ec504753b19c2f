"""The command line as typed values: argparse for the arguments, ``-o`` options parsed into
``MountOptions`` and ``ConnectOptions``, and one dataclass per command (``parse_command``).
Options given before a subcommand (``iscsifs -d ls URL``) count as given after it."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iscsifs import __version__
from iscsifs.block.client import DIGEST_OFFERS, ConnectOptions
from iscsifs.mount.serve import MountOptions
from iscsifs.net.policy import PathPolicy, RecoveryPolicy
from iscsifs.proto.address import Portal
from iscsifs.proto.chap import parse_algorithms
from iscsifs.url import UrlError, is_iscsi_name, parse_hostport


class UsageError(Exception):
    """A bad command line, option or mount point (exit code 2)."""


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
  fusermount3 -u /mnt/san                              flush, log out, unmount
"""

EXIT_CODES_HELP = """exit codes:
  0  success (for a mount: the mount is live)
  1  unexpected internal error
  2  bad command line, URL, option or mount point
  3  portal unreachable or not answering in time
  4  login refused: authentication or authorization failed
  5  no such target or LUN
  6  the FUSE mount failed, or the mount point is already a mount point
  7  the target failed a command or broke the protocol; discard or map refused
"""

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
  detect_zeroes=M        off (default), on (zero blocks go out as WRITE SAME) or unmap (deallocated where it reads as zeros)
  log_file=PATH          where a background mount logs (default: the journal or syslog; without either, a file)
  idle_timeout=S         log out a target's session after S seconds without open files or I/O (default 0: never)
  max_sessions=N         at most N targets logged in at once (default 64; the least recently used idle one goes)
  workers=N              processes that run the iSCSI sessions beside the FUSE process (default $ISCSIFS_WORKERS,
                         else 0: everything in one process, which measured faster on 2 CPUs; see the README)
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
MAX_WORKERS = 64
WORKERS_VARIABLE = "ISCSIFS_WORKERS"  # the default of -o workers (e.g. for every mount of a systemd unit)
RECOVERY_OPTIONS = ("nop_interval", "nop_timeout", "command_timeout", "recovery_timeout", "login_timeout")


def _ignored(key: str) -> bool:
    return key in IGNORED_OPTIONS or key.startswith(("x-", "comment="))


def parse_mount_options(values: list[str], environ: Mapping[str, str] = os.environ) -> Options:
    """-o opt[,opt...] (repeatable); ``workers`` defaults to $ISCSIFS_WORKERS."""
    log_file: str | None = None
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
            elif key == "detect_zeroes" and eq:
                if val not in ("off", "on", "unmap"):
                    raise UsageError(f"detect_zeroes={val[:20]} is not off, on or unmap")
                fuse["detect_zeroes"] = val
            elif key == "log_file" and eq:
                if not val:
                    raise UsageError("log_file= needs a path")
                log_file = val
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
            elif key == "workers" and eq:
                if not val.isdecimal() or not 0 <= int(val) <= MAX_WORKERS:
                    raise UsageError(f"workers={val[:20]} is not a number from 0 to {MAX_WORKERS}")
                fuse["workers"] = int(val)
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
    if "workers" not in fuse and environ.get(WORKERS_VARIABLE):
        value = environ[WORKERS_VARIABLE]
        if not value.isdecimal() or not 0 <= int(value) <= MAX_WORKERS:
            raise UsageError(f"{WORKERS_VARIABLE}={value[:20]} is not a number from 0 to {MAX_WORKERS}")
        fuse["workers"] = int(value)
    conn["recovery"] = RecoveryPolicy(**recovery)
    conn["portals"] = tuple(portals)
    return Options(MountOptions(kernel=frozenset(kernel), **fuse), ConnectOptions(**conn), log_file)


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


Command = MountCommand | LsCommand | StatsCommand | DiscardCommand | MapCommand


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
              "       iscsifs ls [-o OPTIONS] [--json] URL\n       iscsifs stats [--json] PATH\n"
              "       iscsifs discard PATH [--offset N] [--length N]\n       iscsifs map PATH [--json]",
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
    p.add_argument("path", metavar="PATH", help="the mount point, or any file or directory inside the mount")
    p.add_argument("--json", action="store_true", help="print JSON (raw numbers: bytes, microseconds)")
    return p


def _discard_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs discard", description="Deallocate (unmap) a range of a thin-provisioned "
                                "LUN through its running mount, in whole blocks; the whole LUN by default.",
                                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="a LUN file of an iscsifs mount")
    p.add_argument("--offset", type=byte_count, default=0, help="where to start, in bytes (K/M/G suffixes)")
    p.add_argument("--length", type=byte_count, help="how much, in bytes (default: to the end)")
    return p


def _map_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsifs map", description="The allocation of a LUN (GET LBA STATUS) through "
                                "its running mount: extents of mapped, deallocated and anchored blocks.",
                                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="a LUN file of an iscsifs mount")
    p.add_argument("--json", action="store_true", help="print JSON (offsets and lengths in bytes)")
    return p


SUBCOMMANDS = ("ls", "stats", "discard", "map")
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
        return StatsCommand(ns.path, ns.json)
    if argv[:1] == ["discard"]:
        ns = _discard_parser().parse_args(argv[1:])
        return DiscardCommand(ns.path, ns.offset, ns.length)
    if argv[:1] == ["map"]:
        ns = _map_parser().parse_args(argv[1:])
        return MapCommand(ns.path, ns.json)
    ns = _mount_parser().parse_args(argv)
    return MountCommand(ns.url, ns.mountpoint, parse_mount_options(ns.options), ns.foreground, ns.debug, ns.pid_file)

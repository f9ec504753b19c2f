"""Mount points: what the kernel's mount table says of a path (/proc/self/mountinfo), and the
checks before mounting on one.

- A path that is already a mount point, of any kind, is refused (exit 6): stacking a second
  mount there hides the first and needs two unmounts.
- A dead FUSE mount (its daemon gone: the kernel answers ENOTCONN) is cleared and mounted over
  when it is an iscsifs mount; any other dead mount is refused with the command that clears it.
- A directory that is not empty is mounted over, as fuse3 and mount(8) do, with a warning: what
  it holds is hidden, not lost, and shows again once unmounted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import setproctitle

from iscsifs.net.privileges import libc
from iscsifs.proto.errors import IscsiError

log = logging.getLogger("iscsifs")

FSTYPE = "fuse.iscsifs"


class MountError(IscsiError):
    """The kernel mount itself failed (mount point busy, no /dev/fuse, not permitted)."""


@dataclass(frozen=True, slots=True)
class MountEntry:
    point: str
    fstype: str
    source: str
    device: str  # major:minor


def _unescape(field: str) -> str:
    # proc(5): space, tab, newline and \ are octal escapes in mountinfo's fields.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_table() -> list[MountEntry]:
    """/proc/self/mountinfo, in mount order (the last entry for a point is the one on top)."""
    entries = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.rstrip("\n").split(" ")
                sep = fields.index("-")
                entries.append(MountEntry(_unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2]),
                                          fields[2]))
    except (OSError, ValueError, IndexError):
        return []
    return entries


def mounted_on(path: str) -> MountEntry | None:
    """The file system mounted last on ``path`` (absolute, resolved), if any."""
    found = None
    for entry in mount_table():
        if entry.point == path:
            found = entry
    return found


def mount_device(path: str) -> str | None:
    """The "major:minor" of the file system mounted last on ``path``: from the mount table, never
    a stat of the mount itself, which we may not be serving yet."""
    entry = mounted_on(path)
    return entry.device if entry is not None else None


def containing_mount(path: str, fstype: str = FSTYPE) -> MountEntry | None:
    """The innermost mount of type ``fstype`` that ``path`` is in (or is)."""
    path = os.path.realpath(path)
    best = None
    for entry in mount_table():
        inside = path == entry.point or path.startswith(entry.point.rstrip("/") + "/")
        if inside and (best is None or len(entry.point) >= len(best.point)):
            best = entry
    return best if best is not None and best.fstype == fstype else None


def check_mountpoint(path: str) -> None:
    """Refuse a busy mount point or a dead foreign one; clear a dead iscsifs mount; warn about a
    directory that is not empty. ``path`` is absolute. Raises MountError."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            return  # missing or unreadable: the caller says so
        entry = mounted_on(os.path.realpath(path))
        if entry is None or entry.fstype != FSTYPE:
            kind = entry.fstype if entry is not None else "FUSE"
            raise MountError(f"mount point {path} is a dead {kind} mount (its daemon is gone): "
                             f"clear it with 'fusermount3 -u {path}', then mount again") from None
        _clear_dead_mount(path)
    entry = mounted_on(os.path.realpath(path))
    if entry is not None:
        raise MountError(f"mount point {path} is already a mount point ({entry.fstype} of {entry.source}): "
                         "unmount it first or choose another")
    if os.path.isdir(path) and os.listdir(path):
        log.warning("mount point %s is not empty: what it holds is hidden while mounted", path)


def _clear_dead_mount(path: str) -> None:
    for args in (["-u"], ["-uz"]):
        r = subprocess.run(["fusermount3", *args, path], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            log.warning("cleared a dead iscsifs mount on %s (its daemon was gone)", path)
            return
    raise MountError(f"mount point {path} is a dead iscsifs mount that fusermount3 could not clear: "
                     f"{r.stderr.strip() or 'unknown error'}")


MNT_DETACH = 2
_monitor_pipe: int | None = None  # our end: the monitor reads EOF once this process is gone


def start_unmount_monitor(mountpoint: str, pid_file: str | None = None) -> int:
    """Fork the one process of a ``-o setuid`` mount that keeps its privileges. It does nothing
    but wait for this process to end (its pipe reads EOF, however we end: unmount, SIGTERM, a
    crash, kill -9), then unmounts ``mountpoint`` if an iscsifs mount is still there (lazily: a
    process may still be inside it) and removes the pid file that names us. It ignores the
    signals that stop us, holds no other file descriptor, and has nothing to parse. Call before
    any thread starts (trio runs after). Returns its pid."""
    global _monitor_pipe
    r, w = os.pipe()
    daemon = os.getpid()
    pid = os.fork()
    if pid:
        os.close(r)
        _monitor_pipe = w
        return pid
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, r)
        os.closerange(r + 1, os.sysconf("SC_OPEN_MAX"))  # the caller's pipes: it must not hold them open
        setproctitle.setproctitle(f"iscsifs: unmount monitor of {mountpoint}")
        while os.read(r, 1):
            pass
        entry = mounted_on(mountpoint)
        if entry is not None and entry.fstype == FSTYPE:
            libc().umount2(os.fsencode(mountpoint), MNT_DETACH)
        if pid_file is not None:
            with contextlib.suppress(OSError, ValueError):
                if int(Path(pid_file).read_text().strip() or 0) == daemon:
                    os.unlink(pid_file)
    finally:
        os._exit(0)

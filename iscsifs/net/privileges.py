"""Running without privileges (``-o setuid=USER``): the processes that parse what the network
sends run as USER, with no capabilities and no_new_privs.

Mounting needs root (or CAP_SYS_ADMIN); serving a mounted FUSE file system and talking to
targets need neither. So the FUSE process drops once the mount is live, and each session
worker (``net.worker``) before it opens a connection. Started as root, that is setgroups,
setresgid and setresuid, which clears every capability (no SECBIT_KEEP_CAPS); started as USER
with the capabilities to mount (a systemd unit's User= and AmbientCapabilities=), it is capset
to nothing. Then PR_SET_NO_NEW_PRIVS, and a check of every thread: one that kept anything fails
the drop rather than run half-privileged. capset(2) and no_new_privs are per thread, so no other
thread may be alive at the drop: host names are looked up on threads that end with the lookup
(``EndingThreadResolver``), not on trio's, which stay idle for seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import os
import pwd
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

PR_SET_NO_NEW_PRIVS = 38
CAP_SETGID = 6
CAP_SETUID = 7
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# Loaded before the drop: once USER, the interpreter may not be able to read its own library
# (a Python installed under a home directory only root may enter), and these are imported
# lazily, by a codec lookup (a host name's IDNA encoding, an ASCII file).
PRELOAD = ("encodings.idna", "encodings.ascii", "encodings.latin_1", "stringprep", "unicodedata")


class PrivilegeError(OSError):
    """The drop did not happen, or left something behind."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Whom the daemon runs as once the mount is live."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def of_user(cls, name: str) -> Credentials:
        """USER by name (or number), its primary group and supplementary groups; ValueError if
        there is no such user."""
        try:
            entry = pwd.getpwuid(int(name)) if name.isdecimal() else pwd.getpwnam(name)
        except (KeyError, OverflowError):
            raise ValueError(f"no such user: {name!r}") from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)))

    def to_argument(self) -> str:
        """For a session worker's command line: ``USER:UID:GID:G1,G2``."""
        return f"{self.user}:{self.uid}:{self.gid}:{','.join(map(str, self.groups))}"

    @classmethod
    def from_argument(cls, text: str) -> Credentials:
        user, uid, gid, groups = text.split(":")
        return cls(user, int(uid), int(gid), tuple(int(g) for g in groups.split(",") if g))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def libc() -> ctypes.CDLL:
    """The C library, for what the os module lacks (capset, prctl, umount2)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _no_capabilities() -> None:
    """capset(2): effective, permitted and inheritable sets empty (ambient ones go with them)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc().capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(err, f"capset: {os.strerror(err)}")


def check_can_become(creds: Credentials) -> None:
    """Whether ``drop_privileges(creds)`` can work from what this process runs as: root with
    CAP_SETUID and CAP_SETGID (a container may lack them), or ``creds``' user itself. Called
    before anything starts too (the mount, session workers that drop on their own), so that
    the command fails at once rather than once it has mounted. PrivilegeError if not."""
    if creds.uid == 0:
        raise PrivilegeError(f"cannot drop privileges to {creds.user}: uid 0 keeps them; name an unprivileged user")
    if os.getuid() == 0 or os.geteuid() == 0:
        effective = int(process_status()["CapEff"], 16)
        missing = [name for name, bit in (("CAP_SETUID", CAP_SETUID), ("CAP_SETGID", CAP_SETGID))
                   if not effective & (1 << bit)]
        if missing:
            raise PrivilegeError(f"cannot become {creds.user}: started as root without {' and '.join(missing)}")
    elif os.getresuid() != (creds.uid,) * 3:
        raise PrivilegeError(f"cannot become {creds.user}: started as uid {os.getuid()}, neither root nor "
                             f"{creds.user}")


def drop_privileges(creds: Credentials) -> None:
    """Become ``creds`` for good, with no capabilities and no_new_privs; PrivilegeError if any
    thread of this process is left with more."""
    for module in PRELOAD:
        importlib.import_module(module)
    check_can_become(creds)
    try:
        if os.getuid() == 0 or os.geteuid() == 0:
            os.setgroups(list(creds.groups))
            os.setresgid(creds.gid, creds.gid, creds.gid)
            os.setresuid(creds.uid, creds.uid, creds.uid)  # clears every capability
        else:
            _no_capabilities()
    except OSError as exc:
        raise PrivilegeError(exc.errno, f"cannot become {creds.user}: {exc.strerror}") from None
    if libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    check_dropped(creds)


def process_status(pid: int | str = "self", task: int | str | None = None) -> dict[str, str]:
    """/proc/PID/status (or a thread's) as a dict of its fields."""
    path = f"/proc/{pid}/status" if task is None else f"/proc/{pid}/task/{task}/status"
    with open(path, encoding="utf-8", errors="replace") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def check_dropped(creds: Credentials) -> None:
    """Every thread of this process: real, effective, saved and file-system ids are ``creds``',
    no capability is effective or permitted, and no_new_privs is set."""
    for task in os.listdir("/proc/self/task"):
        status = process_status("self", task)
        uids, gids = set(status["Uid"].split()), set(status["Gid"].split())
        problems = []
        if uids != {str(creds.uid)} or gids != {str(creds.gid)}:
            problems.append(f"uid {status['Uid']}, gid {status['Gid']}")
        if int(status["CapEff"], 16) or int(status["CapPrm"], 16) or int(status.get("CapAmb", "0"), 16):
            problems.append(f"capabilities {status['CapEff']}")
        if status.get("NoNewPrivs") != "1":
            problems.append("no_new_privs not set")
        if problems:
            raise PrivilegeError(f"thread {task} still has {', '.join(problems)} after dropping privileges")


_T = TypeVar("_T")


async def _on_ending_thread(fn: Callable[[], _T]) -> _T:
    """``fn()`` on a thread of its own that has ended when this returns (unless cancelled: it
    then ends once ``fn`` returns)."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[_T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's task
            error.append(exc)
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass  # the caller was cancelled and its run is over: nobody waits

    thread = threading.Thread(target=run, name="iscsifs-resolver", daemon=True)
    thread.start()
    await done.wait()
    thread.join()  # only its return is left: gone at once
    if error:
        raise error[0]
    return result[0]


class EndingThreadResolver(trio.abc.HostnameResolver):
    """trio's lookups (``trio.socket.set_custom_hostname_resolver``) on a thread per lookup that
    ends with it: trio's own threads wait 10 s for more work, and one still there when -o setuid
    drops privileges would keep root's (check_dropped then fails the mount)."""

    async def getaddrinfo(self, host: bytes | None, port: bytes | str | int | None, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> Any:  # Any: trio's declared type is socket's, narrowed
        return await _on_ending_thread(lambda: socket.getaddrinfo(host, port, family, type, proto, flags))

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int) -> tuple[str, str]:
        return await _on_ending_thread(lambda: socket.getnameinfo(sockaddr, flags))

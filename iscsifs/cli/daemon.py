"""Being a daemon: going to the background only once the mount is live, sd_notify readiness, a
pid file.

``daemonize`` forks; the parent waits on a pipe until the child reports (``report``) that the
mount is live, or why it failed, and exits with that code, so the command returns only then (as
sshfs does) and mount(8) sees the failure. sd_notify is the documented datagram protocol
(sd_notify(3)): one message to $NOTIFY_SOCKET, no library needed. An abstract socket name starts
with "@".
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

EXIT_ERROR = 1


def daemonize(note: str = "") -> int:
    """Fork. In the parent: wait for the child's report, print it (and ``note`` on stderr once the
    mount is live), and exit with its code (never returns). In the child: returns the pipe to
    ``report`` on."""
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
    code_text, _, message = b"".join(chunks).decode(errors="replace").partition("\n")
    if not code_text.strip().isdecimal():
        os.waitpid(pid, 0)
        print("iscsifs: the mount process exited before the mount was live", file=sys.stderr)
        os._exit(EXIT_ERROR)
    code = int(code_text)
    if code:
        os.waitpid(pid, 0)
        print(f"iscsifs: {message}", file=sys.stderr)
    else:
        if note:
            print(f"iscsifs: {note}", file=sys.stderr)
        if message:
            print(message, flush=True)
    os._exit(code)


def report(fd: int | None, code: int, message: str) -> None:
    """The outcome of a mount: to the waiting parent through ``fd``, or (in the foreground,
    ``fd`` None) on stderr for an error and stdout for a message."""
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


def detach_stdio(keep_stderr: bool = False) -> None:
    """The daemon keeps no terminal; stderr stays when it is the journal's stream."""
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if keep_stderr else (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def sd_notify(state: str) -> bool:
    """Tell systemd ``state`` (e.g. "READY=1"); False when not run by systemd with Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
        return True
    except OSError:
        return False


class PidFile:
    """Written once the mount is made, before the command is told it is live (and before -o
    setuid drops privileges: the directory may be root's), removed when the daemon exits (only
    if still ours)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).absolute()

    def check(self) -> None:
        """Before forking: the directory must exist, and no live process may own the file."""
        if not self.path.parent.is_dir():
            raise OSError(f"pid file directory {self.path.parent} does not exist")
        if self.path.is_dir():
            raise OSError(f"pid file {self.path} is a directory")
        try:
            pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return
        if pid > 0 and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            raise OSError(f"pid file {self.path} names a running process ({pid})")

    def write(self) -> None:
        """Raises OSError (a full or read-only file system), leaving nothing behind."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            tmp.write_text(f"{os.getpid()}\n")
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def remove(self) -> None:
        try:
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
        except OSError:
            pass

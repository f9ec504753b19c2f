"""What a service manager expects of a daemon: sd_notify readiness and a pid file.

sd_notify is the documented datagram protocol (sd_notify(3)): one message to $NOTIFY_SOCKET,
no library needed. An abstract socket name starts with "@".
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


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
    """Written once the mount is live, removed when the daemon exits (only if still ours)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).absolute()

    def check(self) -> None:
        """Before forking: the directory must exist, and no live process may own the file."""
        if not self.path.parent.is_dir():
            raise OSError(f"pid file directory {self.path.parent} does not exist")
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
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        try:
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
        except OSError:
            pass

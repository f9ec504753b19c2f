"""The demo: with no URL, a throwaway private tgtd with one 64 MiB LUN, mounted on a temp dir.
Unmounting stops the target and removes the directory.

``PrivateTgtd`` runs ``tgtd -f -C N --iscsi portal=HOST:PORT`` with its own control port N, so
several can run side by side, configured with ``tgtadm -C N``; LUNs are files. The tests' helper
(``tests/support/tgt.py``) builds on it."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from iscsifs.cli.options import UsageError
from iscsifs.proto.address import hostport

DEMO_TARGET = "iqn.2026-11.org.iscsifs:demo"
DEMO_SIZE = 64 << 20
DEMO_GREETING = (b"Hello from iscsifs!\nThis 64 MiB file is LUN 1 of a throwaway tgtd target, "
                 b"read and written over iSCSI.\n")


class TgtError(RuntimeError):
    """tgtd could not be started or configured."""


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


TGT_SOCKET_DIR = Path("/var/run/tgtd")


@dataclass
class PrivateTgtd:
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    control_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    next_tid: int = 1
    targets: dict[str, int] = field(default_factory=dict)

    @property
    def portal(self) -> str:
        return hostport(self.host, self.port)

    @property
    def url(self) -> str:
        return f"iscsi://{self.portal}"

    def start(self, timeout: float = 10.0) -> PrivateTgtd:
        if shutil.which("tgtd") is None or shutil.which("tgtadm") is None:
            raise TgtError("tgtd is not installed (Debian package 'tgt')")
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(5):
            self.port = self.port or free_port(self.host)
            self.control_port = self.control_port or self._free_control_port()
            with open(self.workdir / "tgtd.log", "ab") as log:  # tgtd keeps its own copy of the descriptor
                self.proc = subprocess.Popen(
                    ["tgtd", "-f", "-C", str(self.control_port), "--iscsi", f"portal={self.portal}"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._ready():
                    return self
                time.sleep(0.05)
            last_error = (self.workdir / "tgtd.log").read_text(errors="replace")[-500:]
            self.stop()
            self.port = self.control_port = 0
        raise TgtError(f"tgtd did not start: {last_error.strip()}")

    def _free_control_port(self) -> int:
        while True:
            n = random.randint(1000, 32000)  # tgtd takes -C values up to 32767 only
            if not (TGT_SOCKET_DIR / f"socket.{n}").exists():
                return n

    def _ready(self) -> bool:
        r = subprocess.run(["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", "--op", "show",
                            "--mode", "target"], capture_output=True)
        if r.returncode != 0:
            return False
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex((self.host, self.port)) == 0

    def tgtadm(self, *args: str) -> str:
        r = subprocess.run(["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", *args],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise TgtError(f"tgtadm {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def add_target(self, iqn: str, bind: str = "ALL") -> int:
        tid = self.next_tid
        self.next_tid += 1
        self.tgtadm("--op", "new", "--mode", "target", "--tid", str(tid), "-T", iqn)
        if bind:
            self.tgtadm("--op", "bind", "--mode", "target", "--tid", str(tid), "-I", bind)
        self.targets[iqn] = tid
        return tid

    def add_lun(self, iqn: str, lun: int, backing: Path) -> None:
        """A LUN backed by the file ``backing``."""
        self.tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(self.targets[iqn]), "--lun", str(lun),
                    "-b", str(backing))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # tgtd -f ignores SIGTERM and SIGINT; it holds no state we need to keep.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        if self.control_port:
            for suffix in ("", ".lock"):
                try:
                    (TGT_SOCKET_DIR / f"socket.{self.control_port}{suffix}").unlink()
                except OSError:
                    pass


class Demo:
    def __init__(self) -> None:
        """Checks that the demo can run here and makes its directory (mount point inside)."""
        if os.geteuid() != 0:
            raise UsageError("the demo starts a local tgtd target, which needs root (or give a URL)")
        if shutil.which("tgtd") is None:
            raise UsageError("the demo needs tgtd: install the Debian package 'tgt' (or give a URL)")
        self.directory = Path(tempfile.mkdtemp(prefix="iscsifs-demo-"))
        self.mountpoint = self.directory / "mnt"
        self.mountpoint.mkdir()
        self._tgt: PrivateTgtd | None = None

    def start(self) -> str:
        """Start the target (blocking: run it in a thread); returns its portal URL."""
        tgt = self._tgt = PrivateTgtd(self.directory / "target")
        tgt.start()
        backing = self.directory / "target" / "demo.img"
        with open(backing, "wb") as f:
            f.write(DEMO_GREETING)
            f.truncate(DEMO_SIZE)
        tgt.add_target(DEMO_TARGET)
        tgt.add_lun(DEMO_TARGET, 1, backing)
        return tgt.url

    def message(self, foreground: bool) -> str:
        assert self._tgt is not None
        m = self.mountpoint
        text = (f"iscsifs: demo target {DEMO_TARGET} on {self._tgt.portal} (a private tgtd), mounted at {m}\n"
                f"  try:      ls -l {m}/{DEMO_TARGET}/ && head -c 120 {m}/{DEMO_TARGET}/1\n"
                f"  unmount:  fusermount3 -u {m}   (also stops the demo target)")
        return text + ("\n  (running in the foreground: Ctrl-C also unmounts)" if foreground else "")

    def stop(self) -> None:
        if self._tgt is not None:
            self._tgt.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

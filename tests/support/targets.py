"""Helpers for tests against real peers: targets on a private tgtd, real FUSE mounts, a known pattern."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.tgt import TgtDaemon

ROOT = os.geteuid() == 0
HAVE_TGT = shutil.which("tgtd") is not None
HAVE_FUSE = os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None

needs_tgt = pytest.mark.skipif(not (ROOT and HAVE_TGT), reason="needs root and tgtd (Debian package tgt)")
needs_fuse = pytest.mark.skipif(not (ROOT and HAVE_TGT and HAVE_FUSE), reason="needs root, tgtd and FUSE")

_names = itertools.count(1)


@dataclass
class Target:
    iqn: str
    backing: dict[int, Path]
    tgt: TgtDaemon

    @property
    def url(self) -> str:
        return f"{self.tgt.url}/{self.iqn}"

    def lun_url(self, lun: int) -> str:
        return f"{self.url}/{lun}"

    @property
    def tid(self) -> str:
        return str(self.tgt.targets[self.iqn])

    def require_chap(self, user: str, password: str) -> str:
        """Give the target a CHAP account; returns the target URL with those credentials."""
        self.tgt.tgtadm("--op", "new", "--mode", "account", "--user", user, "--password", password)
        self.tgt.tgtadm("--op", "bind", "--mode", "account", "--tid", self.tid, "--user", user)
        return self.url.replace("iscsi://", f"iscsi://{user}%{password}@")

    def require_mutual_chap(self, user: str, password: str, target_user: str, target_password: str) -> str:
        """CHAP both ways (tgt's --outgoing account); returns the URL with libiscsi's query keys."""
        url = self.require_chap(user, password)
        self.tgt.tgtadm("--op", "new", "--mode", "account", "--user", target_user, "--password", target_password)
        self.tgt.tgtadm("--op", "bind", "--mode", "account", "--tid", self.tid, "--user", target_user, "--outgoing")
        return f"{url}?target_user={target_user}&target_password={target_password}"


class TargetFactory:
    def __init__(self, tgt: TgtDaemon, workdir: Path) -> None:
        self.tgt = tgt
        self.workdir = workdir

    def __call__(self, luns: dict[int, int] | None = None, *, block_size: int | None = None,
                 fill: bool = True, params: dict[int, str] | None = None, bind: str = "ALL") -> Target:
        """A new target with file-backed LUNs {lun: size}; filled with a known pattern."""
        n = next(_names)
        iqn = f"iqn.2026-11.test.iscsifs:t{n}"
        self.tgt.add_target(iqn, bind=bind)
        backing = {}
        for lun, size in (luns or {1: 4 << 20}).items():
            path = self.workdir / f"t{n}-lun{lun}.img"
            with open(path, "wb") as f:
                if fill:
                    f.write(pattern(size, seed=n * 100 + lun))
                else:
                    f.truncate(size)
            self.tgt.add_lun(iqn, lun, path, block_size=block_size, params=(params or {}).get(lun))
            backing[lun] = path
        return Target(iqn, backing, self.tgt)


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, position-dependent content: any misplaced byte shows."""
    import hashlib

    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest() * 128  # 4 KiB
        block += 1
    return bytes(out[:size])


def wait_for(predicate, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


ISCSIFS = [sys.executable, "-m", "iscsifs"]


def is_mounted(path: Path) -> bool:
    target = os.fsencode(str(path))
    with open("/proc/self/mounts", "rb") as f:
        # fstab(5) escapes: a space in a mount point is \040.
        return any(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), line.split()[1]) == target
                   for line in f)


def unmount(path: Path) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, timeout=30)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True, timeout=30)


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextmanager
def mounted(url: str, mountpoint: Path, *options: str, timeout: float = 30.0):
    """``iscsifs -f URL MOUNTPOINT`` in a subprocess; yields once the mount is live; always unmounts."""
    stderr_path = mountpoint.parent / f"{mountpoint.name}.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen([*ISCSIFS, "-f", *options, url, str(mountpoint)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    m = Mount(mountpoint, proc, stderr_path)
    try:
        deadline = time.monotonic() + timeout
        while not is_mounted(mountpoint):
            if proc.poll() is not None:
                raise AssertionError(f"iscsifs exited with {proc.returncode}: {m.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mount not live after {timeout} s: {m.stderr}")
            time.sleep(0.05)
        yield m
    finally:
        unmount(mountpoint)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"iscsifs did not exit after unmount: {m.stderr}") from None


def run(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, timeout=timeout, **kw)


def qemu_io_has_iscsi() -> bool:
    """qemu-io is here with its iscsi:// driver (qemu-utils with qemu-block-extra): an
    independent libiscsi client."""
    if shutil.which("qemu-io") is None:
        return False
    r = subprocess.run(["qemu-io", "--help"], capture_output=True, text=True)
    drivers = subprocess.run(["qemu-img", "--help"], capture_output=True, text=True).stdout
    return r.returncode == 0 and "iscsi" in drivers

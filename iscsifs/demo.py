"""The demo: with no URL, a throwaway private tgtd with one 64 MiB LUN, mounted on a temp dir.
Unmounting stops the target and removes the directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from iscsifs.options import UsageError
from iscsifs.tgt import TgtDaemon

DEMO_TARGET = "iqn.2026-11.org.iscsifs:demo"
DEMO_SIZE = 64 << 20
DEMO_GREETING = (b"Hello from iscsifs!\nThis 64 MiB file is LUN 1 of a throwaway tgtd target, "
                 b"read and written over iSCSI.\n")


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
        self._tgt: TgtDaemon | None = None

    def start(self) -> str:
        """Start the target (blocking: run it in a thread); returns its portal URL."""
        tgt = self._tgt = TgtDaemon(self.directory / "target")
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

"""A private tgtd for the tests: the demo's ``PrivateTgtd`` (``iscsifs.cli.demo``), plus LUNs of a
given size, block size or parameters, and use as a context manager."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iscsifs.cli.demo import TGT_SOCKET_DIR, PrivateTgtd, TgtError, free_port

__all__ = ["TGT_SOCKET_DIR", "TgtDaemon", "TgtError", "free_port"]


@dataclass
class TgtDaemon(PrivateTgtd):
    def add_lun(self, iqn: str, lun: int, backing: Path, *, size: int | None = None,  # type: ignore[override]
                block_size: int | None = None, params: str | None = None) -> Path:
        """Add a file-backed LUN; ``size`` creates (sparse) or resizes the backing file first."""
        if size is not None:
            with open(backing, "ab") as f:
                f.truncate(size)
        args = ["--op", "new", "--mode", "logicalunit", "--tid", str(self.targets[iqn]), "--lun", str(lun),
                "-b", str(backing)]
        if block_size:
            args += ["--blocksize", str(block_size)]
        self.tgtadm(*args)
        if params:
            self.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", str(self.targets[iqn]),
                        "--lun", str(lun), "--params", params)
        return backing

    def __enter__(self) -> TgtDaemon:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

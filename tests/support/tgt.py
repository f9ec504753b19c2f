"""A private tgtd for the tests: the demo's ``PrivateTgtd`` (``iscsifs.cli.demo``), plus LUNs of a
given size, block size or parameters, a virtual tape library (tgt's doc/README.vtl), and use as a
context manager."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from iscsifs.cli.demo import TGT_SOCKET_DIR, PrivateTgtd, TgtError, free_port

__all__ = ["TGT_SOCKET_DIR", "TapeLibrary", "TgtDaemon", "TgtError", "free_port"]

# tgt's SMC element type codes (SMC-3 Table 13, tgt's ``--params element_type=``).
ELEMENT_PICKER = 1
ELEMENT_STORAGE = 2
ELEMENT_DRIVE = 4


@dataclass(frozen=True)
class TapeLibrary:
    """A virtual tape library on one target, as tgt's doc/README.vtl builds it: tape drives on
    LUNs ``drive_luns`` (created with a tape image each, then offline: no medium loaded), a medium
    changer on ``changer_lun``, and every tape in a storage slot. Element addresses: drives from 1,
    then the picker, then the slots (tape ``barcodes[i]`` in ``slots[i]``)."""

    iqn: str
    tid: int
    drive_luns: tuple[int, ...]
    changer_lun: int
    tapes: dict[str, Path]  # barcode -> tape image (file name == barcode, in ``media_home``)
    tape_size_mb: int
    media_home: Path
    changer_backing: Path
    drive_addresses: tuple[int, ...]
    picker_address: int
    slots: tuple[int, ...]  # storage element addresses, in barcode order
    slot_barcodes: dict[int, str] = field(default_factory=dict)  # storage element address -> barcode

    @property
    def barcodes(self) -> list[str]:
        return list(self.tapes)

    @property
    def luns(self) -> list[int]:
        return [*self.drive_luns, self.changer_lun]


def make_tape(path: Path, barcode: str, size_mb: int, media_type: str = "data") -> Path:
    """A new tape image made by ``tgtimg`` (Debian package tgt); ``size_mb``: its capacity."""
    if shutil.which("tgtimg") is None:
        raise TgtError("tgtimg is not installed (Debian package 'tgt')")
    r = subprocess.run(["tgtimg", "--op", "new", "--device-type", "tape", "--barcode", barcode,
                        "--size", str(size_mb), "--type", media_type, "--file", str(path)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not path.is_file():
        raise TgtError(f"tgtimg could not create {path}: {r.stderr.strip() or r.stdout.strip()}")
    return path


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

    def add_tape_library(self, iqn: str, workdir: Path, drives: int = 2, tapes: int = 4, *,
                         tape_size_mb: int = 64, first_lun: int = 1) -> TapeLibrary:
        """A virtual tape library on target ``iqn`` (created, unless it exists), in the order of
        tgt's doc/README.vtl: ``tapes`` tape images made by tgtimg in ``workdir`` (barcodes
        00000001 up, which are also the file names), ``drives`` tape drives on LUNs ``first_lun``
        up, each created on a tape image and then taken offline, the medium changer on the next
        LUN (its ``media_home`` is ``workdir``), its drives (tied to their LUNs by ``tid=``/``lun=``),
        its picker and its storage slots, each slot then given its tape by barcode; the target is
        bound to every initiator last."""
        if drives < 1 or tapes < drives:
            raise ValueError("a library needs at least one drive and a tape for each drive")
        workdir.mkdir(parents=True, exist_ok=True)
        # The changer's backing store: tgt needs one, and never reads it.
        changer_backing = workdir / "smc"
        with open(changer_backing, "wb") as f:
            f.write(bytes(1024))
        images = {}
        for n in range(1, tapes + 1):
            barcode = f"{n:08d}"
            images[barcode] = make_tape(workdir / barcode, barcode, tape_size_mb)
        barcodes = list(images)
        created = iqn not in self.targets
        tid = self.add_target(iqn, bind="") if created else self.targets[iqn]

        def lu(lun: int, *args: str) -> None:
            self.tgtadm("--mode", "logicalunit", *args, "--tid", str(tid), "--lun", str(lun))

        def update(lun: int, params: str) -> None:
            lu(lun, "--op", "update", "--params", params)

        drive_luns = tuple(range(first_lun, first_lun + drives))
        for lun, barcode in zip(drive_luns, barcodes, strict=False):
            lu(lun, "--op", "new", "-b", str(images[barcode]), "--device-type=tape")
            update(lun, "online=0")
        changer_lun = first_lun + drives
        lu(changer_lun, "--op", "new", "-b", str(changer_backing), "--device-type=changer")
        update(changer_lun, f"media_home={workdir}")
        drive_addresses = tuple(range(1, drives + 1))
        update(changer_lun, f"element_type={ELEMENT_DRIVE},start_address={drive_addresses[0]},quantity={drives}")
        for address, lun in zip(drive_addresses, drive_luns, strict=True):
            update(changer_lun, f"element_type={ELEMENT_DRIVE},address={address},tid={tid},lun={lun}")
        picker_address = drives + 1
        update(changer_lun, f"element_type={ELEMENT_PICKER},start_address={picker_address},quantity=1")
        slots = tuple(range(picker_address + 1, picker_address + 1 + tapes))
        update(changer_lun, f"element_type={ELEMENT_STORAGE},start_address={slots[0]},quantity={tapes}")
        for address, barcode in zip(slots, barcodes, strict=True):
            update(changer_lun, f"element_type={ELEMENT_STORAGE},address={address},barcode={barcode},sides=1")
        if created:
            self.tgtadm("--op", "bind", "--mode", "target", "--tid", str(tid), "-I", "ALL")
        return TapeLibrary(iqn=iqn, tid=tid, drive_luns=drive_luns, changer_lun=changer_lun, tapes=images,
                           tape_size_mb=tape_size_mb, media_home=workdir, changer_backing=changer_backing,
                           drive_addresses=drive_addresses, picker_address=picker_address, slots=slots,
                           slot_barcodes=dict(zip(slots, barcodes, strict=True)))

    def __enter__(self) -> TgtDaemon:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def tape_library_daemon(workdir: Path, iqn: str, *, disk_lun: int | None = None) -> Iterator[tuple[TgtDaemon,
                                                                                                   TapeLibrary]]:
    """A private tgtd with tgt's README.vtl library on ``iqn`` (2 drives on LUNs 1 and 2, the
    changer on 3, 4 tapes of 64 MB), and a 1 MiB disk on ``disk_lun`` if given."""
    with TgtDaemon(workdir / "tgt") as tgt:
        lib = tgt.add_tape_library(iqn, workdir / "media", drives=2, tapes=4, tape_size_mb=64)
        if disk_lun is not None:
            tgt.add_lun(iqn, disk_lun, workdir / "disk.img", size=1 << 20)
        yield tgt, lib

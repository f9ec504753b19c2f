"""Tape drives and a medium changer in the mount, on a real tgtd's virtual tape library: the
target's directory lists a file per drive and one for the changer; the changer's file reads as
``mtx status`` prints the library, before and after a load; a drive's file is st's /dev/nst0:
with no tape an open fails with ENOMEDIUM (with O_NONBLOCK it opens, and a read fails so), a
second opener gets EBUSY, two ``tar cf`` write two tape files (each closed with a filemark, found
block for block in the tape image), and after a rewind (over a login of its own) each read(2)
gives one block of its real length, a filemark reads as 0 bytes and the next open reads the next
file, and ``tar`` reads its archive back. The FUSE handlers' part (one opener, the filemark at
close, the errnos of the drive's errors) is also tested without a target, over a fake drive."""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field

import pyfuse3
import pytest
import trio
from iscsifs.block.client import LunInfo
from iscsifs.block.sync import ChangerLun, TapeLun
from iscsifs.block.tape import BlockTooLong, EndOfMedium, NoMedium, TapeStatus, WriteProtected
from iscsifs.mount.fs import IscsiFs
from iscsifs.mount.tape import TapeFile
from iscsifs.mount.tree import ROOT_INODE, Tree
from iscsifs.scsi.response import DeviceType, StandardInquiry
from iscsifs.scsi.smc import mtx_status_text

from support.tape_image import read_tape_image
from support.targets import HAVE_FUSE, mounted, needs_fuse, run
from support.tgt import TapeLibrary, TgtDaemon, tape_library_daemon

pytestmark = [pytest.mark.timeout(180)]
needs_library = pytest.mark.skipif(shutil.which("tgtimg") is None or shutil.which("tar") is None,
                                   reason="needs tgtimg (Debian package tgt) and tar")

IQN = "iqn.2026-11.test.iscsifs:vtl-files"
RECORD = 20 * 512  # tar -b 20: each write(2) of tar is one 10240-byte block


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A private tgtd with a library of 2 drives (LUNs 1, 2), a changer (LUN 3) and 4 tapes."""
    if not HAVE_FUSE:
        pytest.skip("needs FUSE")
    with tape_library_daemon(tmp_path_factory.mktemp("vtl-files"), IQN) as pair:
        yield pair


def lun_url(tgt: TgtDaemon, lib: TapeLibrary, lun: int) -> str:
    return f"{tgt.url}/{lib.iqn}/{lun}"


def expected_status(tgt: TgtDaemon, lib: TapeLibrary, device: str) -> str:
    """mtx's text of the library as read over a login of its own."""
    with ChangerLun(lun_url(tgt, lib, lib.changer_lun)) as changer:
        return mtx_status_text(changer.status(), device)


def read_file(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_tape_file(path) -> list[bytes]:
    """One open of the drive's file: its blocks up to the filemark (or the end of data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        blocks = []
        while block := os.read(fd, 65536):
            blocks.append(block)
        return blocks
    finally:
        os.close(fd)


@needs_fuse
@needs_library
def test_library_files_and_tapes(library, tmp_path):
    tgt, lib = library
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(tgt.url, mnt):
        directory = mnt / lib.iqn
        assert sorted(os.listdir(directory)) == sorted(str(n) for n in lib.luns)
        drive = directory / str(lib.drive_luns[0])
        changer = directory / str(lib.changer_lun)
        for path in (drive, changer):
            st = os.stat(path)
            assert stat.S_ISREG(st.st_mode) and st.st_size == 0
        assert not os.stat(changer).st_mode & 0o222

        # The changer's file: mtx's status text, its device the file's path in the mount.
        text = read_file(changer).decode()
        assert text.splitlines()[0] == f"  Storage Changer {changer}:2 Drives, 4 Slots ( 0 Import/Export )"
        assert text == expected_status(tgt, lib, str(changer))
        assert "Data Transfer Element 0:Empty\nData Transfer Element 1:Empty\n" in text
        for n, barcode in enumerate(lib.barcodes, 1):
            assert f"      Storage Element {n}:Full :VolumeTag={barcode}{' ' * 24}\n" in text
        with pytest.raises(OSError) as raised:
            os.open(changer, os.O_WRONLY)
        assert raised.value.errno in (errno.EROFS, errno.EACCES)

        # No tape: st's open fails with ENOMEDIUM; with O_NONBLOCK it opens and reads fail so.
        with pytest.raises(OSError) as raised:
            os.open(drive, os.O_RDONLY)
        assert raised.value.errno == errno.ENOMEDIUM
        fd = os.open(drive, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with pytest.raises(OSError) as raised:
                os.read(fd, RECORD)
            assert raised.value.errno == errno.ENOMEDIUM
        finally:
            os.close(fd)

        # Slot 1's tape into drive 0, through the changer over a login of its own.
        with ChangerLun(lun_url(tgt, lib, lib.changer_lun)) as library_changer:
            library_changer.load(1, drive=0)
        try:
            r = run("cat", str(changer))
            assert r.returncode == 0, r.stderr
            text = r.stdout.decode()
            assert f"Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = {lib.barcodes[0]}" in text
            assert "      Storage Element 1:Empty" in text
            assert text == expected_status(tgt, lib, str(changer))

            # Two archives, each one tape file: tar writes 10240-byte records, one block each.
            src = tmp_path / "src"
            src.mkdir()
            first, second = os.urandom(30000), os.urandom(5000)
            (src / "a").write_bytes(first)
            (src / "b").write_bytes(second)
            for name in ("a", "b"):
                r = run("tar", "cf", str(drive), "-b", "20", "-C", str(src), name)
                assert r.returncode == 0, r.stderr

            # A second opener is refused, as st refuses it; opening and closing moves nothing.
            fd = os.open(drive, os.O_RDONLY)
            try:
                with pytest.raises(OSError) as raised:
                    os.open(drive, os.O_RDONLY)
                assert raised.value.errno == errno.EBUSY
                assert os.read(fd, RECORD) == b""  # after the second filemark: the end of data
            finally:
                os.close(fd)

            # The image holds two files of 10240-byte blocks, then nothing.
            files = read_tape_image(lib.tapes[lib.barcodes[0]]).files
            assert len(files) == 3 and files[2] == []
            for blocks, name, content in ((files[0], "a", first), (files[1], "b", second)):
                assert blocks and all(len(b) == RECORD for b in blocks)
                with tarfile.open(fileobj=io.BytesIO(b"".join(blocks))) as archive:
                    assert archive.getnames() == [name]
                    member = archive.extractfile(name)
                    assert member is not None and member.read() == content

            # Rewound over a login of its own (the drive's position is the target's): each read(2)
            # is one block, a filemark ends the open's reads, the next open reads the next file.
            with TapeLun(lun_url(tgt, lib, lib.drive_luns[0])) as tape:
                tape.rewind()
            assert read_tape_file(drive) == files[0]
            assert read_tape_file(drive) == files[1]
            assert read_tape_file(drive) == []  # the end of data

            # tar reads its archive back through the file.
            with TapeLun(lun_url(tgt, lib, lib.drive_luns[0])) as tape:
                tape.rewind()
            r = run("tar", "tf", str(drive), "-b", "20")
            assert r.returncode == 0, r.stderr
            assert r.stdout.decode().split() == ["a"]
        finally:
            with ChangerLun(lun_url(tgt, lib, lib.changer_lun)) as library_changer:
                library_changer.unload(drive=0)


# -- the FUSE handlers over a fake drive -------------------------------------------------------------


@dataclass
class FakeSession:
    target_name: str = "iqn.2026-11.test:fake"


@dataclass
class FakeTarget:
    target_name: str = "iqn.2026-11.test:fake"
    held: int = 0

    def hold(self) -> None:
        self.held += 1

    def release(self) -> None:
        self.held -= 1


@dataclass
class FakeDrive:
    """What the handlers use of a ``TapeDrive``: blocks to read, what was written, and the error
    the next read or write raises."""

    medium: bool = True
    write_protected: bool = False
    blocks: list[bytes] = field(default_factory=list)
    log: list[object] = field(default_factory=list)
    fail: Exception | None = None
    session: FakeSession = field(default_factory=FakeSession)
    lun: int = 1
    _written: bool = False

    async def status(self) -> TapeStatus:
        return TapeStatus(0, 0, 0, 0, bot=True, eof=False, eot=False, eod=False, online=self.medium,
                          write_protected=self.write_protected, door_open=not self.medium, buffered=True)

    def _check(self) -> None:
        if not self.medium:
            raise NoMedium("no tape")
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure

    async def read_block(self, max_length: int) -> bytes:
        self._check()
        return self.blocks.pop(0) if self.blocks else b""

    async def write_block(self, data: bytes) -> bool:
        self._check()
        self.log.append(bytes(data))
        self._written = True
        return False

    async def close_after_write(self) -> bool:
        if not self._written:
            return False
        self._written = False
        self.log.append("filemark")
        return True


def drive_fs(drive: FakeDrive, *, read_only: bool = False) -> tuple[IscsiFs, int, FakeTarget]:
    fs = IscsiFs(Tree(), read_only=read_only)
    target = FakeTarget()
    info = LunInfo(target.target_name, 1, StandardInquiry(0, DeviceType.SEQUENTIAL_ACCESS, True, 6, "IET",
                                                          "VIRTUAL-TAPE", "0001"), None)
    inode = fs.tree.add_device(ROOT_INODE, "1", info, target, tape=TapeFile(drive))  # type: ignore[arg-type]
    return fs, inode, target


async def fuse_errno(call) -> int:
    with pytest.raises(pyfuse3.FUSEError) as raised:
        await call
    return raised.value.errno


async def test_a_drive_file_is_st_one_block_per_request_and_a_filemark_at_close():
    drive = FakeDrive(blocks=[b"x" * 10240, b"y" * 3])
    fs, inode, target = drive_fs(drive)
    fi = await fs.open(inode, os.O_RDWR, None)
    assert (fi.direct_io, fi.nonseekable, fi.keep_cache) == (True, True, False)
    assert target.held == 1
    assert bytes(await fs.read(fi.fh, 0, 65536)) == b"x" * 10240  # the block's length, not the request's
    assert bytes(await fs.read(fi.fh, 0, 65536)) == b"y" * 3
    assert bytes(await fs.read(fi.fh, 0, 65536)) == b""
    assert await fs.write(fi.fh, 12345, b"block") == 5  # the offset means nothing on a tape
    await fs.flush(fi.fh)
    await fs.release(fi.fh)
    assert drive.log == [b"block", "filemark"]  # one filemark, at close, not again at release
    assert target.held == 0
    attr = await fs.getattr(inode)
    assert stat.S_ISREG(attr.st_mode) and attr.st_size == 0
    # Closing after reading writes nothing.
    fi = await fs.open(inode, os.O_RDONLY, None)
    await fs.flush(fi.fh)
    await fs.release(fi.fh)
    assert drive.log == [b"block", "filemark"]


async def test_one_opener_at_a_time(autojump_clock):
    fs, inode, _ = drive_fs(FakeDrive())
    fi = await fs.open(inode, os.O_RDONLY, None)
    assert await fuse_errno(fs.open(inode, os.O_RDONLY, None)) == errno.EBUSY
    # A release still on its way (FUSE does not wait for it) is waited for.
    async with trio.open_nursery() as nursery:
        async def release_soon() -> None:
            await trio.sleep(0.1)
            await fs.release(fi.fh)

        nursery.start_soon(release_soon)
        fi = await fs.open(inode, os.O_RDONLY, None)
    await fs.release(fi.fh)


async def test_the_drives_errors_are_sts_errnos():
    drive = FakeDrive(medium=False)
    fs, inode, target = drive_fs(drive)
    assert await fuse_errno(fs.open(inode, os.O_RDONLY, None)) == errno.ENOMEDIUM
    assert target.held == 0
    fi = await fs.open(inode, os.O_RDONLY | os.O_NONBLOCK, None)  # as st: opens, and I/O fails
    assert await fuse_errno(fs.read(fi.fh, 0, 4096)) == errno.ENOMEDIUM
    await fs.release(fi.fh)
    drive.medium = True
    for failure, number in ((BlockTooLong("long", 20000), errno.ENOMEM), (EndOfMedium("eom"), errno.ENOSPC),
                            (WriteProtected("wp"), errno.EROFS)):
        fi = await fs.open(inode, os.O_RDWR, None)
        drive.fail = failure
        call = fs.read(fi.fh, 0, 4096) if isinstance(failure, BlockTooLong) else fs.write(fi.fh, 0, b"data")
        assert await fuse_errno(call) == number
        await fs.release(fi.fh)
    drive.write_protected = True
    assert await fuse_errno(fs.open(inode, os.O_WRONLY, None)) == errno.EROFS
    fs, inode, _ = drive_fs(FakeDrive(), read_only=True)
    assert await fuse_errno(fs.open(inode, os.O_WRONLY, None)) == errno.EROFS
    assert not (await fs.getattr(inode)).st_mode & 0o222

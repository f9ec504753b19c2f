"""A tape drive of a real tgtd's virtual tape library, through ``iscsifs.block.tape.TapeDrive``:
a tape is loaded with the changer's MOVE MEDIUM; blocks of different sizes and filemarks are
written, read back with their exact sizes (a filemark reads as b"", the end of data as b""
every time), and found byte for byte in the tape's image file; fsf, bsf, eod and tell land where
st's would; a too small read is ENOMEM; the early warning is reported once, the next write is
ENOSPC, and no block is lost or written twice; an unloaded drive is ENOMEDIUM."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from iscsifs.block.client import Client, ClientConfig
from iscsifs.block.command import command
from iscsifs.block.tape import BlockTooLong, EndOfMedium, FixedBlockRefused, NoMedium, TapeDrive, TapeError
from iscsifs.net.api import Executor
from iscsifs.scsi import smc
from iscsifs.url import parse_url

from support.tape_image import DataBlock, EndOfData, Filemark, read_tape_image
from support.targets import needs_tgt
from support.tgt import TapeLibrary, TgtDaemon

pytestmark = [
    needs_tgt,
    pytest.mark.skipif(shutil.which("tgtimg") is None, reason="needs tgtimg (Debian package tgt)"),
    pytest.mark.timeout(120),
]

IQN = "iqn.2026-11.test.iscsifs:tape"
SMALL_IQN = "iqn.2026-11.test.iscsifs:tape-small"
DEADLINE = 60


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A private tgtd with a library of 2 drives and 4 tapes of 64 MB, and one of 1 drive and 1
    tape of 1 MB (for the early warning); tgtd is stopped whatever happens."""
    workdir = tmp_path_factory.mktemp("tape")
    with TgtDaemon(workdir / "tgt") as tgt:
        big = tgt.add_tape_library(IQN, workdir / "media", drives=2, tapes=4, tape_size_mb=64)
        small = tgt.add_tape_library(SMALL_IQN, workdir / "small", drives=1, tapes=1, tape_size_mb=1)
        yield tgt, big, small


@asynccontextmanager
async def loaded(tgt: TgtDaemon, lib: TapeLibrary, slot: int, drive: int = 0) -> AsyncIterator[tuple[Executor, int]]:
    """Log in, move the tape of ``lib.slots[slot]`` into drive ``drive`` (MOVE MEDIUM) and give
    (session, the drive's LUN); afterwards the tape goes back to its slot and the session logs out."""
    client = Client(ClientConfig())
    async with trio.open_nursery() as nursery:
        session = await client.login(nursery, parse_url(tgt.url), lib.iqn)
        try:
            await command(session, lib.changer_lun,
                          smc.move_medium(lib.picker_address, lib.slots[slot], lib.drive_addresses[drive]),
                          name="MOVE MEDIUM")
            yield session, lib.drive_luns[drive]
            await command(session, lib.changer_lun,
                          smc.move_medium(lib.picker_address, lib.drive_addresses[drive], lib.slots[slot]),
                          name="MOVE MEDIUM")
        finally:
            with trio.move_on_after(10) as cleanup:
                cleanup.shield = True
                await session.logout()
            nursery.cancel_scope.cancel()


FILE_0 = [os.urandom(100), os.urandom(7000), os.urandom(1)]
FILE_1 = [os.urandom(65536), os.urandom(3333)]


async def write_two_files(drive: TapeDrive) -> None:
    for block in FILE_0:
        assert await drive.write_block(block) is False
    await drive.write_filemarks(1)
    for block in FILE_1:
        await drive.write_block(block)
    assert await drive.close_after_write() is True  # st's filemark at close
    assert await drive.close_after_write() is False  # only after a write


async def test_write_read_back_and_tape_image(library):
    tgt, lib, _ = library
    with trio.fail_after(DEADLINE):
        async with loaded(tgt, lib, 0) as (session, lun):
            drive = TapeDrive(session, lun)
            status = await drive.status()
            assert status.text() == ("SCSI 2 tape drive:\n"
                                     "File number=0, block number=0, partition=0.\n"
                                     "Tape block size 0 bytes. Density code 0x0 (default).\n"
                                     "Soft error count since last status=0\n"
                                     "General status bits on (41010000):\n"
                                     " BOT ONLINE IM_REP_EN\n")
            await write_two_files(drive)
            assert (drive.file, drive.block, drive.tell()) == (2, 0, 3 + 1 + 2 + 1)
            await drive.rewind()
            assert drive.tell() == 0
            # 100 bytes with 65536 asked (more than twice the block), 7000 with 10000 (between
            # one and two blocks: tgt 1.0.85 sends 3000 bytes, so the block is read again), 1 exact.
            assert await drive.read_block(65536) == FILE_0[0]
            assert await drive.read_block(10000) == FILE_0[1]
            assert await drive.read_block(1) == FILE_0[2]
            assert (drive.file, drive.block, drive.tell()) == (0, 3, 3)
            assert await drive.read_block(65536) == b""  # the filemark: the tape is past it
            assert (drive.file, drive.block, drive.tell()) == (1, 0, 4)
            assert (await drive.status()).text().splitlines()[1:] == [
                "File number=1, block number=0, partition=0.", "Tape block size 0 bytes. Density code 0x0 (default).",
                "Soft error count since last status=0", "General status bits on (81010000):", " EOF ONLINE IM_REP_EN"]
            assert await drive.read_block(1 << 20) == FILE_1[0]
            assert await drive.read_block(3333) == FILE_1[1]
            assert await drive.read_block(4096) == b""
            assert (drive.file, drive.block) == (2, 0)
            for _ in range(3):  # the end of data, every time
                assert await drive.read_block(4096) == b""
                assert drive.at_eod and (drive.file, drive.block) == (2, 0)
            assert " EOD " in (await drive.status()).text()
    image = read_tape_image(lib.tapes[lib.barcodes[0]])
    assert [type(r) for r in image.records] == [DataBlock] * 3 + [Filemark] + [DataBlock] * 2 + [Filemark, EndOfData]
    assert image.files == [FILE_0, FILE_1, []]


async def test_fsf_bsf_eod_and_tell_land_where_st_does(library):
    tgt, lib, _ = library
    with trio.fail_after(DEADLINE):
        async with loaded(tgt, lib, 1) as (session, lun):
            writer = TapeDrive(session, lun)
            await write_two_files(writer)
            await writer.rewind()
            # The writer knows the tape's layout; a new drive object knows only what it has passed
            # since its rewind, as st: after a bsf the block number is unknown (st's -1) until then.
            for drive in (writer, TapeDrive(session, lun)):
                knows = drive is writer
                await drive.rewind()
                await drive.fsf(1)  # the first block of file 1
                assert (drive.file, drive.block) == (1, 0)
                if knows:
                    assert drive.tell() == 4
                assert await drive.read_block(1 << 20) == FILE_1[0]
                await drive.bsf(1)  # the BOT side of the filemark that ends file 0
                assert (drive.file, drive.block) == (0, 3 if knows else None)
                if knows:
                    assert drive.tell() == 3
                else:
                    with pytest.raises(TapeError, match="not known"):
                        drive.tell()
                assert await drive.read_block(4096) == b""
                assert await drive.read_block(1 << 20) == FILE_1[0]
                await drive.eod()
                assert (drive.file, drive.at_eod) == (2, True)
                assert await drive.read_block(4096) == b""
                await drive.rewind()
                await drive.fsf(2)
                assert (drive.file, drive.block) == (2, 0)
                with pytest.raises(TapeError) as failed:
                    await drive.fsf(1)
                assert failed.value.errno == errno.EIO and drive.at_eod
                await drive.bsf(2)  # from file 2: the end of file 0
                assert drive.file == 0
                await drive.bsr(1)
                assert await drive.read_block(1) == FILE_0[2]
                await drive.rewind()
                await drive.fsr(1)
                assert (drive.block, drive.tell()) == (1, 1)
                assert await drive.read_block(7000) == FILE_0[1]
                # Read through: now this drive knows the layout too.
                while await drive.read_block(1 << 20) or not drive.at_eod:
                    pass
                assert (drive.file, drive.block, drive.tell()) == (2, 0, 7)
                await drive.bsf(1)
                assert (drive.file, drive.block, drive.tell()) == (1, 2, 6)
            # Appending at the end of data: the new file follows the last filemark.
            await writer.eod()
            assert writer.tell() == 7
            await writer.write_block(b"third file")
            await writer.close_after_write()
    assert read_tape_image(lib.tapes[lib.barcodes[1]]).files == [FILE_0, FILE_1, [b"third file"], []]


async def test_too_small_a_read_is_enomem_and_the_block_is_lost(library):
    tgt, lib, _ = library
    with trio.fail_after(DEADLINE):
        async with loaded(tgt, lib, 2, drive=1) as (session, lun):
            drive = TapeDrive(session, lun)
            await drive.write_block(bytes(range(100)))
            await drive.write_block(b"next")
            await drive.rewind()
            with pytest.raises(BlockTooLong) as failed:
                await drive.read_block(50)
            assert failed.value.errno == errno.ENOMEM and failed.value.block_length == 100
            assert os.strerror(failed.value.errno) == "Cannot allocate memory"
            assert "data is lost" in str(failed.value)
            assert drive.block == 1 and await drive.read_block(100) == b"next"
            assert await drive.read_block(100) == b""
            assert await drive.read_block(100) == b""


async def test_mode_erase_unload_and_no_medium(library):
    tgt, lib, _ = library
    with trio.fail_after(DEADLINE):
        async with loaded(tgt, lib, 3) as (session, lun):
            drive = TapeDrive(session, lun)
            with pytest.raises(FixedBlockRefused, match=r"crashes tgtd 1\.0\.85") as refused:
                await drive.setblk(512)
            assert refused.value.errno == errno.EINVAL
            await drive.setblk(0)
            assert (await drive.mode()).variable
            with pytest.raises(TapeError) as failed:
                await drive.erase()
            assert "\n" not in str(failed.value) and "ERASE" in str(failed.value)
            await drive.write_block(b"before unload")
            await drive.offline()  # st writes the filemark that ends the written file first
            with pytest.raises(NoMedium) as gone:
                await drive.read_block(4096)
            assert gone.value.errno == errno.ENOMEDIUM
            status = await drive.status()
            assert status.door_open and not status.online
            assert status.text().splitlines()[1] == "File number=-1, block number=-1, partition=0."
            assert status.text().splitlines()[-1] == " DR_OPEN IM_REP_EN"
            with pytest.raises(NoMedium):
                await drive.rewind()
            await drive.load()
            assert (drive.file, drive.block) == (0, 0)
            assert await drive.read_block(4096) == b"before unload"
            assert await drive.read_block(4096) == b""
    assert read_tape_image(lib.tapes[lib.barcodes[3]]).files == [[b"before unload"], []]


async def test_early_warning_then_enospc_and_no_block_lost(library):
    tgt, _, small = library
    block = 256 << 10
    written: list[bytes] = []
    refused = 0
    with trio.fail_after(DEADLINE):
        async with loaded(tgt, small, 0) as (session, lun):
            drive = TapeDrive(session, lun)
            crossed = False
            while not crossed:  # a 1 MB tape: the early warning comes within a few blocks
                data = os.urandom(block)
                crossed = await drive.write_block(data)
                written.append(data)
                assert len(written) < 16
            assert drive.past_early_warning and " EOT " in (await drive.status()).text()
            with pytest.raises(EndOfMedium) as full:
                await drive.write_block(b"refused")
            refused += 1
            assert full.value.errno == errno.ENOSPC
            # As st: the write after the refused one is tried again (tgt takes it, with EOM).
            data = os.urandom(block)
            assert await drive.write_block(data) is True
            written.append(data)
            with pytest.raises(EndOfMedium):
                await drive.write_block(b"refused again")
            refused += 1
            await drive.close_after_write()
    assert refused == 2
    assert read_tape_image(small.tapes[small.barcodes[0]]).files == [written, []]

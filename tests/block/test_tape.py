"""``TapeDrive`` over an in-memory tape that answers as tgt 1.0.85's does (its sense bytes, its
short-block bug, its SPACE that counts filemarks as blocks and reports the end of data even on
a move that ended there, its LOAD UNLOAD that changes nothing), and, where asked, as a drive
that stops at filemarks, is fixed, has no tape, is write-protected or raises a unit attention:
the states a real tgtd will not produce on demand."""

from __future__ import annotations

import errno

import pytest
from iscsifs.block.stats import Stats
from iscsifs.block.tape import (
    GMT_BITS,
    BlockTooLong,
    EndOfMedium,
    NoMedium,
    TapeDrive,
    TapeError,
    TapeStatus,
    WriteProtected,
)
from iscsifs.proto.connection import ScsiResult
from iscsifs.scsi.sense import ScsiError, Status

GOOD = ScsiResult(Status.GOOD)
JUNK = 0xA5


def sense(key_byte: int, asc: int = 0, ascq: int = 0, info: int | None = None) -> bytes:
    """tgt's fixed-format, 18-byte sense; ``key_byte`` with FILEMARK/EOM/ILI ORed in, as tgt does."""
    raw = bytearray(18)
    raw[0] = 0x70 | (0x80 if info is not None else 0)
    raw[2] = key_byte
    if info is not None:
        raw[3:7] = (info & 0xFFFFFFFF).to_bytes(4, "big")
    raw[7], raw[12], raw[13] = 0x0A, asc, ascq
    return bytes(raw)


def check(raw: bytes, data: bytes = b"", residual: int = 0) -> ScsiResult:
    return ScsiResult(Status.CHECK_CONDITION, raw, data, residual)


NOT_READY_NO_MEDIUM = sense(0x02, 0x3A)
ILLEGAL_OPCODE = sense(0x05, 0x20)


class FakeTape:
    """One tape drive LUN. ``records``: data blocks (bytes) and filemarks (None) from BOT; the
    end of data after the last. ``short_block_bug``: tgt before 1.0.94 sends (L - B) bytes of a
    short block; ``stops_at_filemarks``: SPACE blocks stops past a filemark with FILEMARK sense,
    as SSC says (tgt counts a filemark as a block)."""

    target_name = "iqn.2026-11.test:tape"

    def __init__(self, records: list[bytes | None] | None = None, *, capacity: int = 1 << 20,
                 short_block_bug: bool = True, stops_at_filemarks: bool = False) -> None:
        self.records: list[bytes | None] = list(records or [])
        self.pos = 0
        self.capacity = capacity
        self.short_block_bug = short_block_bug
        self.stops_at_filemarks = stops_at_filemarks
        self.loaded = True
        self.read_only = False
        self.block_length = 0
        self.inject: list[ScsiResult] = []  # answered first, in order, whatever the command
        self.vendor = b"IET     "  # tgt's INQUIRY vendor
        self.log: list[bytes] = []

    def used(self) -> int:
        return sum(48 + (0 if r is None else len(r)) for r in self.records)

    async def execute(self, lun: int, cdb: bytes, *, data_out=None, expected_in: int = 0, into=None) -> ScsiResult:
        self.log.append(bytes(cdb))
        if self.inject:
            return self.inject.pop(0)
        op = cdb[0]
        if not self.loaded and op not in (0x12, 0xA0, 0x1B):
            return check(NOT_READY_NO_MEDIUM)
        count = int.from_bytes(cdb[2:5], "big")
        if op == 0x00:
            return GOOD
        if op == 0x01:
            self.pos = 0
            return GOOD
        if op == 0x08:
            return self._read(count)
        if op in (0x0A, 0x10):
            if self.read_only:
                return check(sense(0x07, 0x27))
            del self.records[self.pos :]
            new = [bytes(data_out)] if op == 0x0A else [None] * count
            self.records += new
            self.pos += len(new)
            return check(sense(0x40)) if op == 0x0A and self.used() > self.capacity else GOOD
        if op == 0x11:
            return self._space(cdb[1] & 0x0F, int.from_bytes(cdb[2:5], "big", signed=True))
        if op == 0x1A:
            return ScsiResult(Status.GOOD, b"", bytes([0x0D, 0, 0x10 | (0x80 if self.read_only else 0), 8, 0, 0, 0, 0,
                                                       0]) + self.block_length.to_bytes(3, "big"))
        if op == 0x15:
            self.block_length = int.from_bytes(bytes(data_out)[9:12], "big")
            return GOOD
        if op == 0x12:  # standard INQUIRY, as tgt's tape drives answer it: the vendor tells tgt's LOEJ need
            data = bytes([0x01, 0x80, 0x05, 0x02, 31, 0, 0, 0]) + self.vendor + b"VIRTUAL-TAPE    " + b"0001"
            return ScsiResult(Status.GOOD, b"", data[:expected_in])
        if op == 0x1B:  # tgt: START STOP UNIT's LOEJ (SSC's RETEN) or nothing; the position stays
            if cdb[4] & 0x02:
                self.loaded = bool(cdb[4] & 0x01)
            return GOOD
        return check(ILLEGAL_OPCODE)

    def _read(self, length: int) -> ScsiResult:
        if self.pos >= len(self.records):
            return check(sense(0x48), bytes([JUNK]) * length)
        block = self.records[self.pos]
        self.pos += 1
        if block is None:
            return check(sense(0x80, 0x00, 0x01, info=length), bytes([JUNK]) * length)
        if length == len(block):
            return ScsiResult(Status.GOOD, b"", block)
        if length < len(block):
            return check(sense(0x20, info=length - len(block)), b"", length)
        short = sense(0x20, info=length - len(block))
        if self.short_block_bug:
            sent = length - len(block)
            data = (block + bytes([JUNK]) * length)[:sent]
            return check(short, data, len(block))
        return check(short, block, length - len(block))

    def _space(self, code: int, count: int) -> ScsiResult:
        end = len(self.records)
        if code == 3:
            self.pos = end
            return GOOD
        if code == 1:
            if count < 0:  # tgt gets these wrong: TapeDrive must never send one
                return check(sense(0x05, 0x24))
            while count:
                if self.pos >= end:
                    return check(sense(0x00, 0x00, 0x05))
                count -= self.records[self.pos] is None
                self.pos += 1
            return GOOD
        if code != 0:
            return check(sense(0x05, 0x24))
        step = 1 if count > 0 else -1
        for done in range(abs(count)):
            if step < 0 and self.pos == 0:
                return GOOD  # tgt: silently at the beginning
            if step > 0 and self.pos >= end:
                return check(sense(0x00, 0x00, 0x05))
            self.pos += step
            crossed = self.records[self.pos - 1 if step > 0 else self.pos] is None
            if crossed and self.stops_at_filemarks:
                return check(sense(0x80, 0x00, 0x01, info=abs(count) - done - 1))
        return check(sense(0x00, 0x00, 0x05)) if self.pos >= end else GOOD


A, B, C, D, E = b"a" * 100, b"b" * 7000, b"c", b"d" * 65536, b"e" * 3333
TWO_FILES: list[bytes | None] = [A, B, C, None, D, E, None]


async def test_reads_blocks_filemarks_and_the_end_of_data():
    tape = FakeTape(TWO_FILES)
    drive = TapeDrive(tape, 1)
    assert await drive.read_block(65536) == A  # L >= 2B: the block is all there
    assert await drive.read_block(10000) == B  # B < L < 2B: spaced back over and read again
    assert tape.log[-3:] == [bytes([0x08, 0, 0, 0x27, 0x10, 0]), bytes([0x11, 0, 0xFF, 0xFF, 0xFF, 0]),
                             bytes([0x08, 0, 0, 0x1B, 0x58, 0])]
    assert await drive.read_block(1) == C
    assert await drive.read_block(100) == b"" and (drive.file, drive.block, drive.tell()) == (1, 0, 4)
    assert await drive.read_block(1 << 20) == D and await drive.read_block(3333) == E
    assert await drive.read_block(10) == b""
    for _ in range(3):
        assert await drive.read_block(10) == b"" and drive.at_eod
    assert (drive.file, drive.block, drive.tell()) == (2, 0, 7)


async def test_a_fixed_tgt_short_block_is_not_read_again():
    tape = FakeTape(TWO_FILES, short_block_bug=False)
    drive = TapeDrive(tape, 1)
    await drive.read_block(100)
    assert await drive.read_block(10000) == B
    assert not any(cdb[0] == 0x11 for cdb in tape.log)


async def test_a_long_block_is_enomem_and_skipped():
    drive = TapeDrive(FakeTape(TWO_FILES), 1)
    with pytest.raises(BlockTooLong) as failed:
        await drive.read_block(99)
    assert failed.value.errno == errno.ENOMEM and failed.value.block_length == 100
    assert await drive.read_block(7000) == B and drive.block == 2


async def test_bsf_rewinds_and_spaces_forward_never_back_over_filemarks():
    tape = FakeTape([*TWO_FILES, b"f", None, b"g"])
    drive = TapeDrive(tape, 1)
    await drive.fsf(3)
    assert (drive.file, drive.block) == (3, 0) and await drive.read_block(10) == b"g"
    await drive.bsf(2)  # the end of file 1: before the filemark that ends it
    assert (drive.file, drive.block) == (1, None)
    assert tape.pos == 6  # before the filemark at index 6
    assert await drive.read_block(10) == b"" and await drive.read_block(10) == b"f"
    assert not any(cdb[0] == 0x11 and cdb[1] == 1 and cdb[2] & 0x80 for cdb in tape.log)
    with pytest.raises(TapeError, match="at the beginning"):
        await drive.bsf(5)
    assert (drive.file, drive.block, tape.pos) == (0, 0, 0)


async def test_fsr_and_bsr_stop_at_filemarks_as_st():
    tape = FakeTape(TWO_FILES)
    drive = TapeDrive(tape, 1)
    while await drive.read_block(1 << 20) or not drive.at_eod:
        pass  # learn the layout
    await drive.rewind()
    await drive.fsr(2)
    assert (drive.block, tape.pos) == (2, 2)
    with pytest.raises(TapeError, match="crossed a filemark after 1 blocks") as failed:
        await drive.fsr(5)
    assert failed.value.errno == errno.EIO and (drive.file, drive.block, tape.pos) == (1, 0, 4)
    await drive.fsr(1)
    with pytest.raises(TapeError, match="crossed a filemark"):
        await drive.bsr(3)  # one block back, then the filemark: the end of file 0
    assert (drive.file, drive.block, drive.tell(), tape.pos) == (0, 3, 3, 3)
    with pytest.raises(TapeError, match="beginning of the tape"):
        await drive.bsr(10)
    assert (drive.file, drive.block, tape.pos) == (0, 0, 0)


async def test_spacing_blocks_on_a_drive_that_stops_at_filemarks():
    tape = FakeTape(TWO_FILES, stops_at_filemarks=True)
    drive = TapeDrive(tape, 1)  # knows nothing of the layout
    with pytest.raises(TapeError, match="crossed a filemark"):
        await drive.fsr(10)
    assert (drive.file, drive.block, tape.pos) == (1, 0, 4)
    assert await drive.read_block(1 << 20) == D


async def test_spacing_exactly_to_the_end_of_data_is_no_error():
    tape = FakeTape([A, B])
    drive = TapeDrive(tape, 1)
    await drive.fsr(2)  # tgt says "end of data detected" although the move was whole
    assert (drive.block, drive.at_eod) == (2, True)


async def test_eod_counts_files_when_the_layout_is_unknown():
    tape = FakeTape(TWO_FILES)
    drive = TapeDrive(tape, 1)
    await drive.eod()
    assert (drive.file, drive.block, drive.at_eod, tape.pos) == (2, None, True, 7)
    await drive.write_block(b"appended")
    assert tape.records[-1] == b"appended" and drive.file == 2


async def test_writes_filemarks_and_st_close_semantics():
    tape = FakeTape()
    drive = TapeDrive(tape, 1)
    await drive.write_block(A)
    await drive.write_block(B)
    await drive.rewind()  # st: a rewind after writing ends the file with a filemark first
    assert tape.records == [A, B, None] and drive.tell() == 0
    await drive.fsf(1)
    await drive.write_block(C)
    assert await drive.close_after_write() and not await drive.close_after_write()
    await drive.write_filemarks(2)
    assert tape.records == [A, B, None, C, None, None, None]
    assert (drive.file, drive.block, drive.tell()) == (4, 0, 7)
    await drive.bsf(1)
    assert (drive.file, drive.block, drive.tell()) == (3, 0, 6)


async def test_early_warning_is_reported_once_then_enospc_alternates():
    tape = FakeTape(capacity=3 * (48 + 1000))
    drive = TapeDrive(tape, 1)
    assert [await drive.write_block(bytes(1000)) for _ in range(3)] == [False, False, False]
    assert await drive.write_block(bytes(1000)) is True  # written, past the warning
    with pytest.raises(EndOfMedium) as full:
        await drive.write_block(b"x")
    assert full.value.errno == errno.ENOSPC
    assert await drive.write_block(b"y") is True
    assert tape.records == [bytes(1000)] * 4 + [b"y"]  # nothing lost, nothing twice
    assert (await drive.status()).eot


async def test_no_medium_then_a_tape_arrives():
    tape = FakeTape(TWO_FILES)
    tape.loaded = False
    drive = TapeDrive(tape, 1)
    with pytest.raises(NoMedium) as failed:
        await drive.read_block(100)
    assert failed.value.errno == errno.ENOMEDIUM
    status = await drive.status()
    assert (status.door_open, status.online, status.file_number) == (True, False, -1)
    with pytest.raises(NoMedium):
        drive.tell()
    tape.loaded, tape.pos = True, 0  # a changer's MOVE MEDIUM: the tape at its beginning
    assert await drive.read_block(100) == A and drive.tell() == 1


async def test_offline_is_no_medium_until_load():
    tape = FakeTape(TWO_FILES)
    drive = TapeDrive(tape, 1)
    await drive.read_block(100)
    await drive.offline()
    assert tape.log[-2:] == [bytes([0x01, 0, 0, 0, 0, 0]), bytes([0x1B, 0, 0, 0, 0x02, 0])]
    for verb in (drive.read_block(10), drive.write_block(b"x"), drive.fsf(1), drive.rewind()):
        with pytest.raises(NoMedium):
            await verb
    assert (await drive.status()).text().endswith("General status bits on (50000):\n DR_OPEN IM_REP_EN\n")
    await drive.load()
    assert tape.log[-2:] == [bytes([0x1B, 0, 0, 0, 0x03, 0]), bytes([0x01, 0, 0, 0, 0, 0])]
    assert await drive.read_block(100) == A


async def test_only_tgts_drives_get_its_loej_bit():
    # On an SSC drive that bit is RETEN: a retension that can take minutes.
    tape = FakeTape(TWO_FILES)
    tape.vendor = b"HP      "
    drive = TapeDrive(tape, 1)
    await drive.offline()
    assert tape.log[-1] == bytes([0x1B, 0, 0, 0, 0x00, 0])


async def test_write_protected_is_erofs():
    tape = FakeTape(TWO_FILES)
    tape.read_only = True
    drive = TapeDrive(tape, 1)
    with pytest.raises(WriteProtected) as failed:
        await drive.write_block(b"x")
    assert failed.value.errno == errno.EROFS
    status = await drive.status()
    assert status.write_protected and " WR_PROT " in status.text()
    with pytest.raises(WriteProtected):
        await drive.write_filemarks(1)
    assert tape.records == TWO_FILES


async def test_unit_attention_is_retried_and_a_changed_tape_is_at_its_beginning():
    tape = FakeTape(TWO_FILES)
    drive = TapeDrive(tape, 1, stats=Stats())
    tape.inject.append(check(sense(0x06, 0x29, 0x00)))
    assert await drive.read_block(100) == A and drive.block == 1
    tape.pos = 0
    tape.inject.append(check(sense(0x06, 0x28, 0x00)))  # medium may have changed
    await drive.fsf(1)
    assert (drive.file, drive.block) == (1, 0)  # from the beginning, not from block 1
    tape.inject += [ScsiResult(Status.BUSY), ScsiResult(Status.TASK_SET_FULL)]
    assert await drive.read_block(1 << 20) == D
    tape.inject.append(ScsiResult(Status.RESERVATION_CONFLICT))
    with pytest.raises(ScsiError) as failed:
        await drive.read_block(100)
    assert failed.value.errno == errno.EBUSY


async def test_erase_unsupported_is_one_line_and_setblk_refuses_fixed():
    drive = TapeDrive(FakeTape(TWO_FILES), 1)
    with pytest.raises(TapeError) as failed:
        await drive.erase()
    assert "\n" not in str(failed.value) and failed.value.errno == errno.EOPNOTSUPP
    with pytest.raises(TapeError) as refused:
        await drive.setblk(1024)
    assert refused.value.errno == errno.EINVAL
    await drive.setblk(0)
    assert (await drive.mode()).block_length == 0


def test_status_text_is_mt_st():
    s = TapeStatus(2, 0, 0, 0, bot=False, eof=True, eot=False, eod=True, online=True, write_protected=True,
                   door_open=False, buffered=True)
    assert s.general_status == 0x80000000 | 0x08000000 | 0x04000000 | 0x01000000 | 0x10000
    assert s.text() == ("SCSI 2 tape drive:\n"
                        "File number=2, block number=0, partition=0.\n"
                        "Tape block size 0 bytes. Density code 0x0 (default).\n"
                        "Soft error count since last status=0\n"
                        "General status bits on (8d010000):\n"
                        " EOF EOD WR_PROT ONLINE IM_REP_EN\n")
    assert "Density code 0x44 (no translation)" in TapeStatus(
        -1, -1, 0, 0x44, bot=False, eof=False, eot=False, eod=False, online=False, write_protected=False,
        door_open=True, buffered=False).text()
    assert [name for name, _ in GMT_BITS][:7] == ["EOF", "BOT", "EOT", "SM", "EOD", "WR_PROT", "ONLINE"]

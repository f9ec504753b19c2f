"""Tape drives (SSC-3): the raw CDB bytes written out from the standard's tables, the answers
tgt 1.0.85 was seen to give (the notes' captures) decoded, the CHECK CONDITIONs of a tape command
told apart as st(4) tells them, malformed answers refused, and tgt's tape file read back."""

from __future__ import annotations

import errno
import shutil
import struct
import subprocess

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsifs.proto.errors import LocalProtocolError
from iscsifs.scsi import ssc
from iscsifs.scsi.response import ScsiParseError
from iscsifs.scsi.ssc import Condition, SpaceCode, tape_condition

from support.tape_image import (
    DataBlock,
    EndOfData,
    Filemark,
    TapeImageError,
    build_tape_image,
    read_tape_image,
)


@pytest.mark.parametrize("built, hexcdb", [
    # opcode, SILI|FIXED, transfer length (3), control
    (ssc.read_6(150), "08" "00" "000096" "00"),
    (ssc.read_6(1 << 20, sili=True), "08" "02" "100000" "00"),
    (ssc.read_6(4, fixed=True), "08" "01" "000004" "00"),
    (ssc.write_6(0xFFFFFF), "0a" "00" "ffffff" "00"),
    (ssc.write_6(2, fixed=True), "0a" "01" "000002" "00"),
    # opcode, WSMK|IMMED, count (3), control
    (ssc.write_filemarks_6(), "10" "00" "000001" "00"),
    (ssc.write_filemarks_6(0, immed=True), "10" "01" "000000" "00"),
    # opcode, code, count (3, two's complement), control
    (ssc.space_6(SpaceCode.BLOCKS, 1), "11" "00" "000001" "00"),
    (ssc.space_6(SpaceCode.BLOCKS, -1), "11" "00" "ffffff" "00"),
    (ssc.space_6(SpaceCode.FILEMARKS, 0x7FFFFF), "11" "01" "7fffff" "00"),
    (ssc.space_6(SpaceCode.FILEMARKS, -(1 << 23)), "11" "01" "800000" "00"),
    (ssc.space_6(SpaceCode.END_OF_DATA), "11" "03" "000000" "00"),
    (ssc.rewind(), "01" "00" "00000000"),
    (ssc.rewind(immed=True), "01" "01" "00000000"),
    # opcode, IMMED, 2 reserved, HOLD|EOT|RETEN|LOAD, control
    (ssc.load_unload(True), "1b" "00" "0000" "01" "00"),
    (ssc.load_unload(False, immed=True), "1b" "01" "0000" "00" "00"),
    (ssc.read_block_limits(), "05" "0000000000"),
    (ssc.read_position(), "34" "00" "0000000000000000"),
    (ssc.erase_6(), "19" "01" "00000000"),
    (ssc.erase_6(long=False, immed=True), "19" "02" "00000000"),
    # DBD clear, page 0, allocation 12: what st sends for the block descriptor
    (ssc.mode_sense_6_block_descriptor(), "1a" "00" "00" "00" "0c" "00"),
])
def test_cdb_bytes(built, hexcdb):
    assert built.hex() == hexcdb


def test_mode_select_block_length():
    # The notes' example that sets fixed 512-byte blocks on tgt: PF set, 12 bytes of parameters.
    cdb, params = ssc.mode_select_6_block_length(512)
    assert cdb.hex() == "15" "10" "0000" "0c" "00"
    assert params.hex() == "000000" "08" "00" "000000" "00" "000200"
    cdb, params = ssc.mode_select_6_block_length(0, density_code=0x44, buffered_mode=1)
    assert params.hex() == "000010" "08" "44" "000000" "00" "000000"


@given(st.integers(0, ssc.MAX_24), st.integers(0, 0xFF), st.integers(0, 7))
def test_mode_select_parameters_read_back_as_mode_sense(block_length, density, buffered):
    """The parameter list of MODE SELECT(6) has the shape of a MODE SENSE(6) answer."""
    mode = ssc.parse_mode_sense_6(ssc.mode_select_6_block_length(block_length, density_code=density,
                                                                 buffered_mode=buffered)[1])
    assert (mode.block_length, mode.density_code, mode.buffered_mode, mode.write_protected) == \
        (block_length, density, buffered, False)
    assert mode.variable == (block_length == 0)


@given(st.integers(-(1 << 23), (1 << 23) - 1), st.sampled_from(SpaceCode))
def test_space_count_is_24_bit_twos_complement(count, code):
    built = ssc.space_6(code, count)
    assert built[1] == code and int.from_bytes(built[2:5], "big", signed=True) == count


@pytest.mark.parametrize("build", [
    lambda: ssc.read_6(1 << 24), lambda: ssc.read_6(-1), lambda: ssc.write_6(1 << 24),
    lambda: ssc.read_6(512, sili=True, fixed=True),  # SSC-3 §6.4: illegal together
    lambda: ssc.write_filemarks_6(1 << 24), lambda: ssc.space_6(SpaceCode.BLOCKS, 1 << 23),
    lambda: ssc.space_6(SpaceCode.BLOCKS, -(1 << 23) - 1), lambda: ssc.mode_select_6_block_length(1 << 24),
])
def test_out_of_range_fields_are_refused(build):
    with pytest.raises(LocalProtocolError):
        build()


@pytest.mark.parametrize("hexdata, limits", [
    ("091000000004", (9, 1 << 20, 4)),  # tgt, variable mode
    ("090000e800e8", (9, 232, 232)),  # tgt, fixed 1000: truncated to 8 bits (0xe8)
    ("00000000" "0000", (0, 0, 0)),
    ("1f" "ffffff" "ffff" "00", (31, 0xFFFFFF, 0xFFFF)),
])
def test_read_block_limits(hexdata, limits):
    got = ssc.parse_read_block_limits(bytes.fromhex(hexdata))
    assert (got.granularity, got.maximum_block_length, got.minimum_block_length) == limits


@pytest.mark.parametrize("hexdata, expected", [
    # tgt's default: BUFFERED MODE 1, one zero descriptor (variable, density 0)
    ("0d001008" "0000000000000000", (False, 1, 0, 0, 0)),
    ("0d009008" "0000000000000000", (True, 1, 0, 0, 0)),  # readonly=1: WP
    ("0b000008" "44000100" "00000200", (False, 0, 0x44, 256, 512)),  # density 0x44, 256 blocks of 512
    ("03001000", (False, 1, None, None, None)),  # DBD: no descriptor
])
def test_mode_sense_6(hexdata, expected):
    m = ssc.parse_mode_sense_6(bytes.fromhex(hexdata))
    assert (m.write_protected, m.buffered_mode, m.density_code, m.number_of_blocks, m.block_length) == expected


def test_read_position():
    tgt = ssc.parse_read_position(bytes.fromhex("14") + bytes(19))  # BYCU|BPU, all zero: tgt 1.0.85
    assert tgt.position_unknown and tgt.first_block is None and tgt.last_block is None
    assert tgt.bytes_in_buffer is None and tgt.blocks_in_buffer == 0 and not tgt.beginning_of_partition
    bop = ssc.parse_read_position(bytes.fromhex("80" "00" "0000" "00000000" "00000000" "00" "000000" "00000000"))
    assert bop.beginning_of_partition and (bop.first_block, bop.last_block, bop.bytes_in_buffer) == (0, 0, 0)
    mid = ssc.parse_read_position(bytes.fromhex("41" "01" "0000" "0000002a" "00000028" "00" "000002" "00000400"))
    assert mid.end_of_partition and mid.programmable_early_warning and mid.partition == 1
    assert (mid.first_block, mid.last_block, mid.blocks_in_buffer, mid.bytes_in_buffer) == (42, 40, 2, 1024)


@pytest.mark.parametrize("parse, data", [
    (ssc.parse_read_block_limits, b"\x09\x10\x00\x00\x00"),
    (ssc.parse_mode_sense_6, b"\x0d\x00\x10"),
    (ssc.parse_mode_sense_6, bytes.fromhex("0d001008" "00000000")),  # descriptor cut short
    (ssc.parse_mode_sense_6, bytes.fromhex("07001004" "00000000")),  # a 4-byte block descriptor
    (ssc.parse_read_position, bytes(19)),
])
def test_malformed_answers_are_refused(parse, data):
    with pytest.raises(ScsiParseError):
        parse(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_parsers_only_raise_scsi_parse_error(data):
    for parse in (ssc.parse_read_block_limits, ssc.parse_mode_sense_6, ssc.parse_read_position):
        try:
            parse(data)
        except ScsiParseError:
            pass


# -- CHECK CONDITION of a tape command -----------------------------------------------------------


def fixed(key_byte: int, asc: int = 0, ascq: int = 0, info: int | None = None) -> bytes:
    """Fixed-format sense as tgt builds it (usr/scsi.c sense_data_build): 18 bytes, VALID and
    bytes 3..6 when there is an INFORMATION field."""
    raw = bytearray(18)
    raw[0], raw[2], raw[7], raw[12], raw[13] = 0x70, key_byte, 0x0A, asc, ascq
    if info is not None:
        raw[0] |= 0x80
        raw[3:7] = (info & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(raw)


NO_SENSE, NOT_READY, MEDIUM_ERROR, ILLEGAL_REQUEST, DATA_PROTECT, BLANK_CHECK = 0, 2, 3, 5, 7, 8
FM, EOM, ILI = 0x80, 0x40, 0x20


@pytest.mark.parametrize("sense, requested, kind, err, data_length, block_length", [
    # tgt, READ 150 of a 100-byte block: f0 00 20 .. INFO 50
    (fixed(ILI, info=50), 150, Condition.SHORT_BLOCK, 0, 100, 100),
    (fixed(ILI, info=900), 1000, Condition.SHORT_BLOCK, 0, 100, 100),
    # tgt, READ 100 of a 200-byte block: INFO -100 (ff ff ff 9c), nothing transferred: st's ENOMEM
    (fixed(ILI, info=-100), 100, Condition.LONG_BLOCK, errno.ENOMEM, 0, 200),
    # tgt at a filemark: f0 00 80 .. INFO = L, 00/01; the data-in is junk
    (fixed(FM, 0x00, 0x01, info=64), 64, Condition.FILEMARK, 0, 0, None),
    (fixed(NO_SENSE, 0x00, 0x01), 64, Condition.FILEMARK, 0, 0, None),  # ASC alone says it too
    # tgt 1.0.85 at the end of data: 70 00 48 .., ASC 00/00, no VALID; junk data-in again
    (fixed(EOM | BLANK_CHECK), 64, Condition.END_OF_DATA, errno.EIO, 0, None),
    (fixed(BLANK_CHECK, 0x00, 0x05), 64, Condition.END_OF_DATA, errno.EIO, 0, None),  # the standard's
    (fixed(NO_SENSE, 0x00, 0x05), 0, Condition.END_OF_DATA, errno.EIO, 0, None),  # SPACE into EOD
    # early warning on WRITE: tgt says 70 00 40 .. 00/00, the standard 00/02; the data was written
    (fixed(EOM), 4096, Condition.END_OF_MEDIUM, 0, 4096, None),
    (fixed(EOM, 0x00, 0x02), 4096, Condition.END_OF_MEDIUM, 0, 4096, None),
    (fixed(EOM, 0x00, 0x02, info=96), 4096, Condition.END_OF_MEDIUM, 0, 4000, None),
    (fixed(EOM | 0x0D, 0x00, 0x02, info=4096), 4096, Condition.ERROR, errno.ENOSPC, 0, None),  # VOLUME OVERFLOW
    (fixed(EOM, 0x00, 0x04, info=3), 0, Condition.BEGINNING_OF_MEDIUM, errno.EIO, 0, None),
    (fixed(NOT_READY, 0x3A, 0x00), 512, Condition.NO_MEDIUM, errno.ENOMEDIUM, 0, None),  # tgt, no tape
    (fixed(NOT_READY, 0x3A, 0x02), 512, Condition.NO_MEDIUM, errno.ENOMEDIUM, 0, None),  # tray open
    (fixed(NOT_READY, 0x04, 0x01), 512, Condition.ERROR, errno.EIO, 0, None),  # becoming ready
    (fixed(DATA_PROTECT, 0x27, 0x00), 512, Condition.DATA_PROTECT, errno.EROFS, 0, None),
    (fixed(MEDIUM_ERROR, 0x31, 0x00), 512, Condition.ERROR, errno.EIO, 0, None),  # tgt fixed mode, wrong size
    (fixed(ILLEGAL_REQUEST, 0x20, 0x00), 0, Condition.ERROR, errno.EOPNOTSUPP, 0, None),  # ERASE on tgt
    (fixed(ILLEGAL_REQUEST, 0x24, 0x00), 0, Condition.ERROR, errno.EINVAL, 0, None),
    (fixed(0x01, 0x37, 0x00), 512, Condition.RECOVERED, 0, 512, None),
    (fixed(ILI), 512, Condition.ERROR, errno.EIO, 0, None),  # ILI without the residue to go by
    (fixed(ILI, info=513), 512, Condition.ERROR, errno.EIO, 0, None),  # a length below zero
    (fixed(NO_SENSE), 512, Condition.ERROR, errno.EIO, 0, None),
    (b"", 512, Condition.ERROR, errno.EIO, 0, None),
    (b"\x00\x00\x00", 512, Condition.ERROR, errno.EIO, 0, None),
])
def test_tape_condition(sense, requested, kind, err, data_length, block_length):
    c = tape_condition(sense, requested)
    assert (c.kind, c.errno, c.data_length, c.block_length) == (kind, err, data_length, block_length)


def test_short_block_length_comes_from_information_not_the_residual():
    """tgt 1.0.85 answers READ 150 of a 100-byte block with 50 bytes and residual 100: the block
    is 100 bytes, of which only 50 came, so it must be read again (SPACE -1, READ 100)."""
    c = tape_condition(fixed(ILI, info=50), 150)
    assert c.residue == 50 and c.block_length == 100
    assert c.needs_reread(50) and not c.needs_reread(100) and not c.needs_reread(150)
    assert not tape_condition(fixed(ILI, info=900), 1000).needs_reread(900)  # 900 junk-tailed bytes came
    assert not tape_condition(fixed(FM, 0, 1, info=150), 150).needs_reread(0)


def descriptor_sense(key: int, asc: int, ascq: int, *, info: int | None = None, bits: int = 0) -> bytes:
    body = b""
    if info is not None:  # information descriptor (SPC-4 §4.5.2.2): VALID, 8-byte INFORMATION
        body += bytes([0x00, 0x0A, 0x80, 0]) + (info & (1 << 64) - 1).to_bytes(8, "big")
    if bits:  # stream commands descriptor (SSC-3 §4.2.16.3)
        body += bytes([0x04, 0x02, 0, bits])
    return bytes([0x72, key, asc, ascq, 0, 0, 0, len(body)]) + body


def test_descriptor_format_sense():
    c = tape_condition(descriptor_sense(NO_SENSE, 0, 0, info=50, bits=ILI), 150)
    assert (c.kind, c.block_length, c.data_length) == (Condition.SHORT_BLOCK, 100, 100)
    c = tape_condition(descriptor_sense(NO_SENSE, 0, 0, info=-100, bits=ILI), 100)
    assert (c.kind, c.errno, c.block_length) == (Condition.LONG_BLOCK, errno.ENOMEM, 200)
    assert tape_condition(descriptor_sense(NO_SENSE, 0, 0, bits=FM), 10).kind is Condition.FILEMARK
    assert tape_condition(descriptor_sense(NO_SENSE, 0, 2, bits=EOM), 10).kind is Condition.END_OF_MEDIUM
    assert tape_condition(descriptor_sense(BLANK_CHECK, 0, 5), 10).kind is Condition.END_OF_DATA
    s = ssc.parse_stream_sense(descriptor_sense(NO_SENSE, 0, 0, info=7, bits=FM | ILI))
    assert s is not None and (s.filemark, s.eom, s.ili, s.information) == (True, False, True, 7)
    # an additional length past the end, a descriptor cut short: what is whole is read
    cut = descriptor_sense(NO_SENSE, 0, 0, info=7, bits=FM)[:-3]
    s = ssc.parse_stream_sense(cut[:7] + b"\xff" + cut[8:])
    assert s is not None and (s.filemark, s.information) == (False, 7)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.integers(0, ssc.MAX_24))
def test_tape_condition_never_raises_and_stays_in_bounds(sense, requested):
    c = tape_condition(sense, requested)
    assert 0 <= c.data_length <= requested
    assert c.errno != 0 or c.kind in (Condition.FILEMARK, Condition.SHORT_BLOCK, Condition.END_OF_MEDIUM,
                                      Condition.RECOVERED)
    if c.kind is Condition.SHORT_BLOCK:
        assert c.block_length == c.data_length == requested - (c.residue or 0)


@given(st.integers(1, ssc.MAX_24), st.integers(0, ssc.MAX_24))
def test_ili_residue_gives_the_block_length(requested, block):
    c = tape_condition(fixed(ILI, info=requested - block), requested)
    assert c.block_length == block
    assert c.kind is (Condition.LONG_BLOCK if block > requested else Condition.SHORT_BLOCK)
    assert c.data_length == (0 if block > requested else block)


# -- tgt's tape file -----------------------------------------------------------------------------


def test_tape_image_round_trip():
    blocks = [b"a" * 100, b"bb" * 300, None, b"c", None, None]
    image = read_tape_image(build_tape_image(blocks, capacity_mb=10, barcode="00000007"))
    assert (image.capacity_mb, image.barcode) == (10, "00000007")
    assert image.records == (DataBlock(1, b"a" * 100), DataBlock(2, b"bb" * 300), Filemark(3), DataBlock(4, b"c"),
                             Filemark(5), Filemark(6), EndOfData(7))
    assert image.files == [[b"a" * 100, b"bb" * 300], [b"c"], [], []]


def test_tape_image_layout_by_hand():
    """The first data block of a written tape, laid out from usr/bs_ssc.h by hand."""
    raw = build_tape_image([b"xyz"])
    header = raw[1152:1200]
    assert header[4:].hex() == ("00000003" "00000003" "00000002" "0000000000000001" "0000000000000000"
                                "0000000000000480" "00000000000004b3")
    assert header[:4] == struct.pack("<I", crc32c.crc32c(header[4:]))
    assert raw[1200:1203] == b"xyz" and len(raw) == 1203 + 48
    eod = raw[1203:]
    assert eod[4:].hex() == ("00000000" "00000000" "00000020" "0000000000000002" "0000000000000480"
                             "00000000000004b3" "00000000000004b3")


@pytest.mark.parametrize("spoil", [
    lambda b: b[:1180],  # cut inside the first header
    lambda b: b[:1152] + b"\0" * 4 + b[1156:],  # CRC
    lambda b: b[:12] + b"\0" * 4 + b[16:],  # the BOT header's type (and so its CRC)
])
def test_tape_image_damage_is_refused(spoil):
    with pytest.raises(TapeImageError):
        read_tape_image(spoil(build_tape_image([b"data", None])))


def test_tape_image_checks_its_chain_without_crcs():
    raw = bytearray(build_tape_image([b"data", None]))
    raw[12:16] = b"\0\0\0\x02"  # BOT's type
    with pytest.raises(TapeImageError, match="not BOT"):
        read_tape_image(bytes(raw), check_crc=False)
    raw = bytearray(build_tape_image([b"data", None]))
    raw[1152 + 40 : 1152 + 48] = (1152).to_bytes(8, "big")  # a block whose next is itself
    with pytest.raises(TapeImageError, match="not after"):
        read_tape_image(bytes(raw), check_crc=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=64)), max_size=6), st.integers(0, 1 << 16),
       st.integers(1, 255))
def test_tape_image_damage_never_hangs_or_crashes(blocks, where, value):
    raw = bytearray(build_tape_image(blocks))
    raw[where % len(raw)] ^= value
    for check_crc in (True, False):
        try:
            read_tape_image(bytes(raw), check_crc=check_crc)
        except TapeImageError:
            pass


@pytest.mark.skipif(shutil.which("tgtimg") is None, reason="needs tgtimg (Debian package tgt)")
def test_tgtimg_new_tape_reads_as_empty(tmp_path):
    path = tmp_path / "00000042"
    subprocess.run(["tgtimg", "--op", "new", "--device-type", "tape", "--barcode", "00000042", "--size", "3",
                    "--type", "data", "--file", str(path)], check=True, capture_output=True)
    image = read_tape_image(path)
    assert (image.capacity_mb, image.barcode, image.records) == (3, "00000042", (EndOfData(1),))
    ours = build_tape_image([], capacity_mb=3, barcode="00000042")
    raw = path.read_bytes()
    assert len(raw) == len(ours) == 1200
    assert raw[:48] == ours[:48] and raw[1152:] == ours[1152:]  # the headers, CRCs included

"""``iscsifs raw`` without a target: CDB arguments parsed and refused as sg_raw would, and an
outcome (status, sense, data) printed line for line as sg_raw (sg3_utils 1.46) prints it, with
its exit status.

The sense vectors are the 18-byte fixed-format sense tgt 1.0.85 builds (``usr/scsi.c
sense_data_build``: INFORMATION and VALID for short reads and filemarks, FMK/EOM/ILI ORed into the
key byte) and sg3_utils' decoding of each, as captured in the research notes; the rest were
checked against libsgutils2 1.46 itself.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iscsifs.scsi import raw


def tgt_sense(key: int, asc: int = 0, ascq: int = 0, information: int | None = None) -> bytes:
    first = 0xF0 if information is not None else 0x70
    info = (information or 0).to_bytes(4, "big")
    return bytes([first, 0, key]) + info + bytes([10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0])


# -- CDB arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("args, cdb", [
    ("28 00 00 00 00 00 00 00 08 00", "28000000000000000800"),
    ("12 0 0 0 60 0", "120000006000"),  # one digit is a byte too
    ("A0 00 00 00 00 00 00 00 10 00 00 00", "a00000000000000010000000"),
    ("9e 10 0 0 0 0 0 0 0 0 0 0 0 20 0 0", "9e100000000000000000000000200000"),
    ("c0 01 02", None),  # too short, whatever the group
    ("7f 00 00 00 00 00 00 18" + " 00" * 24, "7f000000000000" + "18" + "00" * 24),  # variable length: 8 + 24
    ("d0" + " 00" * 13, "d0" + "00" * 13),  # vendor specific: any length
])
def test_cdb_arguments(args, cdb):
    if cdb is None:
        with pytest.raises(raw.CdbArgumentError):
            raw.parse_cdb_arguments(args.split())
    else:
        assert raw.parse_cdb_arguments(args.split()).hex() == cdb


@pytest.mark.parametrize("args, message", [
    (["28", "0x00"], "Invalid command byte '0x00'"),  # strtol would take it; a byte is 1 or 2 hex digits
    (["28", "100"], "Invalid command byte '100'"),
    (["28", ""], "Invalid command byte ''"),
    (["28", "g0"], "Invalid command byte 'g0'"),
    (["28", "-1"], "Invalid command byte '-1'"),
    (["28", " 0"], "Invalid command byte ' 0'"),
    (["00"] * 5, r"CDB too short \(min. 6 bytes\)"),
    (["c0"] * 261, r"CDB too long \(max. 260 bytes\)"),
    (["28"] + ["00"] * 5, "CDB of 6 bytes, but opcode 0x28 takes 10"),
    (["12"] + ["00"] * 9, "CDB of 10 bytes, but opcode 0x12 takes 6"),
    (["88"] + ["00"] * 11, "CDB of 12 bytes, but opcode 0x88 takes 16"),
    (["7f"] + ["00"] * 6 + ["18"] + ["00"] * 23, "CDB of 31 bytes, but opcode 0x7f takes 32"),
])
def test_bad_cdb_arguments(args, message):
    with pytest.raises(raw.CdbArgumentError, match=f"^{message}$") as caught:
        raw.parse_cdb_arguments(args)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


@given(st.lists(st.text(max_size=4), max_size=300))
def test_cdb_parser_raises_only_its_error(args):
    try:
        cdb = raw.parse_cdb_arguments(args)
    except raw.CdbArgumentError:
        return
    assert raw.MIN_CDB_LENGTH <= len(cdb) <= raw.MAX_CDB_LENGTH


@given(st.binary(min_size=6, max_size=260), st.booleans())
def test_cdb_round_trip(cdb, upper):
    args = [f"{b:X}" if upper else f"{b:02x}" for b in cdb]
    want = raw.expected_cdb_length(cdb)
    if want is None or want == len(cdb):
        assert raw.parse_cdb_arguments(args) == cdb


# -- sense, as sg3_utils prints it ----------------------------------------------------------------


@pytest.mark.parametrize("sense, text", [
    (tgt_sense(0x20, information=0x32), """
Fixed format, current; Sense key: No Sense
Additional sense: No additional sense information
  Info fld=0x32 [50]  ILI
"""),
    (tgt_sense(0x80, 0x00, 0x01, information=0x40), """
Fixed format, current; Sense key: No Sense
Additional sense: Filemark detected
  Info fld=0x40 [64]  FMK
"""),
    (tgt_sense(0x48), """
Fixed format, current; Sense key: Blank Check
Additional sense: No additional sense information
 EOM
"""),
    (tgt_sense(0x00, 0x00, 0x05), """
Fixed format, current; Sense key: No Sense
Additional sense: End-of-data detected
"""),
    (tgt_sense(0x02, 0x3A, 0x00), """
Fixed format, current; Sense key: Not Ready
Additional sense: Medium not present
"""),
    (tgt_sense(0x06, 0x29, 0x00), """
Fixed format, current; Sense key: Unit Attention
Additional sense: Power on, reset, or bus device reset occurred
"""),
    (tgt_sense(0x05, 0x20, 0x00), """
Fixed format, current; Sense key: Illegal Request
Additional sense: Invalid command operation code
"""),
    # The rest as libsgutils2 1.46 decodes them.
    (tgt_sense(0x05, 0x24, 0x00)[:15] + bytes([0xC8, 0x00, 0x01]), """
Fixed format, current; Sense key: Illegal Request
Additional sense: Invalid field in cdb
  Sense Key Specific: Error in Command: byte 1 bit 0
"""),
    (tgt_sense(0x02, 0x04, 0x04)[:15] + bytes([0x80, 0x12, 0x34]), """
Fixed format, current; Sense key: Not Ready
Additional sense: Logical unit not ready, format in progress
  Progress indication: 7.11%
"""),
    (tgt_sense(0x05, 0x21, 0x00), """
Fixed format, current; Sense key: Illegal Request
Additional sense: Logical block address out of range
"""),
    (tgt_sense(0x07, 0x27, 0x00), """
Fixed format, current; Sense key: Data Protect
Additional sense: Write protected
"""),
    (tgt_sense(0x40, 0x00, 0x02), """
Fixed format, current; Sense key: No Sense
Additional sense: End-of-partition/medium detected
 EOM
"""),
    (tgt_sense(0x00, 0x00, 0x04), """
Fixed format, current; Sense key: No Sense
Additional sense: Beginning-of-partition/medium detected
"""),
    (tgt_sense(0x06, 0x2A, 0x01), """
Fixed format, current; Sense key: Unit Attention
Additional sense: Mode parameters changed
"""),
    (tgt_sense(0x02, 0x04, 0x01), """
Fixed format, current; Sense key: Not Ready
Additional sense: Logical unit is in process of becoming ready
"""),
    (bytes([0x70, 0, 0x05, 0, 0, 0, 0x09, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0]), """
Fixed format, current; Sense key: Illegal Request
Additional sense: Invalid command operation code
  Valid=0, Info fld=0x9 [9] 
"""),  # noqa: W291
    (bytes([0x71, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0]), """
Fixed format, <<<deferred>>>; Sense key: Unit Attention
Additional sense: Power on, reset, or bus device reset occurred
"""),
    (bytes.fromhex("720520000000000c000a80000000000000000005"), """
Descriptor format, current; Sense key: Illegal Request
Additional sense: Invalid command operation code
  Descriptor type: Information: 0x0000000000000005
"""),
    (bytes([0x70, 0, 0x05]), """
Fixed format, current; Sense key: Illegal Request
"""),
    (bytes([0x70, 0x05]), """
Fixed format, current; Sense key: No Sense
 fixed descriptor length too short, len=2
"""),
    (b"", """
 >>> sense buffer empty
"""),
    (bytes([0x7F, 0, 5]) + bytes(15), """
Vendor specific sense buffer, in hex:
7f 00 05 00 00 00 00 00  00 00 00 00 00 00 00 00
00 00
"""),
])
def test_sense_as_sg3_utils_prints_it(sense, text):
    assert raw.sense_lines(sense) == text.split("\n")[1:-1]


@pytest.mark.parametrize("asc, ascq, text", [
    (0x99, 0x42, "vendor specific ASC=99, ASCQ=42 (hex)"),
    (0x04, 0x99, "ASC=04, vendor specific qualification ASCQ=99 (hex)"),
    (0x7F, 0x00, "ASC=7f, ASCQ=00 (hex)"),
    (0x40, 0x42, "Additional sense: Ram failure [0x42]"),
    (0x40, 0x80, "Additional sense: Diagnostic failure on component [0x80]"),
    (0x4D, 0x02, "Additional sense: Tagged overlapped commands [0x2]"),
    (0x00, 0x16, "Additional sense: operation in progress"),
])
def test_additional_sense_fallbacks(asc, ascq, text):
    assert raw.asc_ascq_text(asc, ascq) == text


# -- exit status ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status, sense, code", [
    (0x00, b"", 0),
    (0x02, tgt_sense(0x02, 0x3A), 2),  # NOT READY
    (0x02, tgt_sense(0x03, 0x11), 3),  # MEDIUM ERROR
    (0x02, tgt_sense(0x04, 0x44), 3),  # HARDWARE ERROR
    (0x02, tgt_sense(0x48), 3),  # BLANK CHECK: tgt's end of data
    (0x02, tgt_sense(0x05, 0x24), 5),
    (0x02, tgt_sense(0x05, 0x20), 9),  # invalid opcode
    (0x02, tgt_sense(0x05, 0x20, 0x01), 5),
    (0x02, tgt_sense(0x05, 0x21), 22),  # LBA out of range
    (0x02, tgt_sense(0x06, 0x29), 6),
    (0x02, tgt_sense(0x07, 0x27), 7),
    (0x02, tgt_sense(0x0A), 10),
    (0x02, tgt_sense(0x0B, 0x47), 11),
    (0x02, tgt_sense(0x0B, 0x10, 0x01), 40),  # a protection information check failed
    (0x02, tgt_sense(0x0E, 0x1D), 14),
    (0x02, tgt_sense(0x80, 0x00, 0x01, information=1), 20),  # filemark: data printed, exit 20
    (0x02, tgt_sense(0x20, information=0x32), 20),  # short block
    (0x02, tgt_sense(0x01, 0x17), 21),
    (0x02, tgt_sense(0x0D, 0x00, 0x02), 98),  # VOLUME OVERFLOW has no category of its own
    (0x02, bytes.fromhex("72052000"), 9),
    (0x02, b"", 98),
    (0x02, tgt_sense(0x05, 0x20)[:12], 5),  # the ASC did not arrive
    (0x18, b"", 24),  # RESERVATION CONFLICT
    (0x08, b"", 99),  # BUSY
    (0x28, b"", 99),  # TASK SET FULL
])
def test_exit_status(status, sense, code):
    assert raw.exit_status(status, sense) == code


# -- sg_raw's report ------------------------------------------------------------------------------


def test_hex_dump_as_sg_raw():
    assert raw.hex_dump(bytes(range(0x20, 0x48)) + b"\x00\x01\xff") == [
        " 00     20 21 22 23 24 25 26 27  28 29 2a 2b 2c 2d 2e 2f     !\"#$%&'()*+,-./",
        " 10     30 31 32 33 34 35 36 37  38 39 3a 3b 3c 3d 3e 3f    0123456789:;<=>?",
        " 20     40 41 42 43 44 45 46 47  00 01 ff                   @ABCDEFG...",
    ]
    assert raw.hex_dump(bytes(256) + b"ab")[-1] == " 100    61 62                                               ab"
    assert all(len(line) == 76 for line in raw.hex_dump(bytes(range(256))))


@pytest.mark.parametrize("report, text, code", [
    (raw.SgRawReport(0x00, data=b"IET     ", requested=96), """
SCSI Status: Good 

Received 8 bytes of data:
 00     49 45 54 20 20 20 20 20                             IET     
""", 0),  # noqa: W291
    (raw.SgRawReport(0x00, requested=96), """
SCSI Status: Good 

No data received
""", 0),  # noqa: W291
    (raw.SgRawReport(0x00), """
SCSI Status: Good 

""", 0),  # noqa: W291
    # tgt reading over a filemark: CHECK CONDITION, NO SENSE, and the data still printed.
    (raw.SgRawReport(0x02, tgt_sense(0x80, 0x00, 0x01, information=0x40), b"\x01\x02", requested=512), """
SCSI Status: Check Condition 

Sense Information:
Fixed format, current; Sense key: No Sense
Additional sense: Filemark detected
  Info fld=0x40 [64]  FMK

Received 2 bytes of data:
 00     01 02                                               ..
""", 20),  # noqa: W291
    (raw.SgRawReport(0x02, tgt_sense(0x05, 0x20), requested=512), """
SCSI Status: Check Condition 

Sense Information:
Fixed format, current; Sense key: Illegal Request
Additional sense: Invalid command operation code

Error 9 occurred, no data received
""", 9),  # noqa: W291
    (raw.SgRawReport(0x02, tgt_sense(0x06, 0x29), no_sense=True), """
SCSI Status: Check Condition 

""", 6),  # noqa: W291
    (raw.SgRawReport(0x02), """
SCSI Status: Check Condition 

>>> Strange: status is CHECK CONDITION but no Sense Information
""", 98),  # noqa: W291
    (raw.SgRawReport(0x18, requested=8), """
>>> unknown pass through result category (1)
SCSI Status: Reservation Conflict 

Error 24 occurred, no data received
""", 24),  # noqa: W291
    (raw.SgRawReport(0x08), """
>>> unknown pass through result category (1)
SCSI Status: Busy 

""", 99),  # noqa: W291
])
def test_sg_raw_report(report, text, code):
    assert report.text() == text[1:]
    assert report.exit_status == code


@pytest.mark.parametrize("status, text", [(0x00, "Good"), (0x01, "Good"), (0x02, "Check Condition"),
                                          (0x04, "Condition Met"), (0x28, "Task Set Full"), (0x30, "ACA Active"),
                                          (0x40, "Task Aborted"), (0x06, "Unknown status [0x6]"),
                                          (0xFF, "Unknown status [0x7e]")])
def test_status_words(status, text):
    assert raw.scsi_status_text(status) == text


@given(st.binary(max_size=64), st.integers(0, 255), st.binary(max_size=40), st.integers(0, 64), st.booleans())
def test_any_outcome_prints(sense, status, data, requested, no_sense):
    report = raw.SgRawReport(status, sense, data, requested, no_sense)
    assert report.text().startswith(("SCSI Status: ", ">>> unknown"))
    assert report.exit_status in {0, 2, 3, 5, 6, 7, 9, 10, 11, 14, 20, 21, 22, 24, 40, 98, 99}
    assert all(isinstance(line, str) for line in raw.sense_lines(sense))

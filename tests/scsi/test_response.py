"""Response parsers: INQUIRY, READ CAPACITY(10/16), REPORT LUNS and LUN encoding, and the
device identification page (VPD 0x83) down to the WWN a LUN is known by."""

from __future__ import annotations

from iscsifs.scsi.response import (
    Designator,
    decode_lun,
    encode_lun,
    parse_device_identification,
    parse_inquiry,
    parse_read_capacity_10,
    parse_read_capacity_16,
    parse_report_luns,
    world_wide_name,
)


def test_inquiry_and_capacity_parsers():
    inq = parse_inquiry(bytes([0x0C, 0, 5, 2, 31, 0, 0, 0]) + b"IET     " + b"Controller      " + b"0001")
    assert (inq.device_type, inq.vendor, inq.product, inq.revision) == (0x0C, "IET", "Controller", "0001")
    assert not inq.is_disk
    assert parse_inquiry(bytes([0x7F]) + bytes(35)).connected is False
    # READ CAPACITY returns the *last* LBA: 3 TiB of 4 KiB blocks has last LBA 805306367.
    cap = parse_read_capacity_16((805306367).to_bytes(8, "big") + (4096).to_bytes(4, "big") + bytes(20))
    assert cap.size == 3 << 40 and cap.block_size == 4096
    assert parse_read_capacity_10(bytes.fromhex("0001ffff00000200")).size == 0x20000 * 512


def test_luns_round_trip_and_report_luns():
    for lun in (0, 1, 255, 256, 16383):
        assert decode_lun(encode_lun(lun).to_bytes(8, "big")) == lun
    data = (24).to_bytes(4, "big") + bytes(4) + encode_lun(0).to_bytes(8, "big") + encode_lun(1).to_bytes(8, "big") \
        + encode_lun(300).to_bytes(8, "big")
    assert parse_report_luns(data) == ([0, 1, 300], 24)
    assert parse_report_luns(data[:16]) == ([0], 24)  # truncated: caller re-asks with the length


def test_world_wide_name_prefers_naa_then_eui_then_names():
    naa8 = Designator(1, 0, 3, bytes.fromhex("6000000000000000"))
    naa16 = Designator(1, 0, 3, bytes.fromhex("60000000000000000e00000000010001"))
    eui = Designator(1, 0, 2, bytes.fromhex("0011223344556677"))
    t10 = Designator(2, 0, 1, b"IET     00010001")
    port = Designator(1, 1, 3, bytes.fromhex("5000000000000001"))  # a target port, not the LU
    assert world_wide_name([t10, naa8, naa16, port]) == "naa.60000000000000000e00000000010001"
    assert world_wide_name([t10, eui]) == "eui.0011223344556677"
    assert world_wide_name([t10]) == "t10.IET 00010001"
    assert world_wide_name([port]) == ""
    page = bytes([0, 0x83, 0, 12]) + bytes([0x01, 0x03, 0, 8]) + bytes(8)
    assert parse_device_identification(page + b"\x01\x03\x00\x40") == [Designator(1, 0, 3, bytes(8))]  # truncated tail

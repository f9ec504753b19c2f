"""Sense data (fixed and descriptor formats) and the errno a status and sense become."""

from __future__ import annotations

import errno

from iscsifs.scsi.sense import ScsiError, errno_for, parse_sense


def test_sense_formats_and_errno_table():
    fixed = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00]) + bytes(4)
    s = parse_sense(fixed)
    assert (s.key, s.asc, s.ascq) == (5, 0x21, 0)
    assert errno_for(2, s) == errno.ENOSPC
    desc = bytes([0x72, 0x07, 0x27, 0x00]) + bytes(4)
    assert errno_for(2, parse_sense(desc)) == errno.EROFS
    assert errno_for(2, parse_sense(bytes([0x70, 0, 0x03]) + bytes(15))) == errno.EIO
    assert errno_for(0x18, None) == errno.EBUSY
    e = ScsiError(2, parse_sense(fixed), "WRITE")
    assert "ILLEGAL REQUEST 21/00 (LBA out of range)" in str(e) and e.errno == errno.ENOSPC
    assert parse_sense(b"") is None and parse_sense(b"\x00\x00") is None

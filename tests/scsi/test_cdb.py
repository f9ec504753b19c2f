"""CDB builders (SBC-3, SPC-4): the raw bytes each command goes out as, READ and WRITE(10)
growing to (16) where the LBA or the length needs it."""

from __future__ import annotations

import pytest
from iscsifs.scsi import cdb


@pytest.mark.parametrize("built, hexcdb", [
    (cdb.test_unit_ready(), "000000000000"),
    (cdb.inquiry(255), "12" "00" "00" "00ff" "00"),
    (cdb.inquiry(252, page_code=0x80), "12" "01" "80" "00fc" "00"),
    (cdb.report_luns(4096), "a00000000000" "00001000" "0000"),
    (cdb.read_capacity_10(), "25" + "00" * 9),
    (cdb.read_capacity_16(32), "9e10" + "00" * 8 + "00000020" "0000"),
    (cdb.read(0x12345678, 0x10), "28" "00" "12345678" "00" "0010" "00"),
    (cdb.read(1 << 33, 8), "88" "00" "0000000200000000" "00000008" "0000"),
    (cdb.read(0, 0x10000), "88" "00" "0000000000000000" "00010000" "0000"),
    (cdb.write(7, 1), "2a" "00" "00000007" "00" "0001" "00"),
    (cdb.write(0xFFFFFFFF, 1), "8a" "00" "00000000ffffffff" "00000001" "0000"),
    (cdb.synchronize_cache(), "35" + "00" * 9),
])
def test_cdb_bytes(built, hexcdb):
    assert built.hex() == hexcdb

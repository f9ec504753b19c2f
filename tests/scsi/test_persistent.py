"""PERSISTENT RESERVE IN/OUT (SPC-4 §6.15, §6.16): raw CDB and parameter list bytes written out
from the standard's tables, answers decoded, malformed answers refused, keys and types parsed."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iscsifs.scsi.persistent import (
    PrIn,
    PrOut,
    PrType,
    key_text,
    parse_key,
    parse_pr_type,
    parse_read_keys,
    parse_read_reservation,
    parse_report_capabilities,
    persistent_reserve_in,
    persistent_reserve_out,
)
from iscsifs.scsi.response import ScsiParseError


@pytest.mark.parametrize("built, hexcdb", [
    # opcode, service action, 5 reserved, allocation length (2), control
    (persistent_reserve_in(PrIn.READ_KEYS, 1024), "5e" "00" "0000000000" "0400" "00"),
    (persistent_reserve_in(PrIn.READ_RESERVATION, 64), "5e" "01" "0000000000" "0040" "00"),
    (persistent_reserve_in(PrIn.REPORT_CAPABILITIES, 8), "5e" "02" "0000000000" "0008" "00"),
    (persistent_reserve_in(PrIn.READ_KEYS, 1 << 20), "5e" "00" "0000000000" "ffff" "00"),
])
def test_persistent_reserve_in_cdb(built, hexcdb):
    assert built.hex() == hexcdb


@pytest.mark.parametrize("args, hexcdb, hexparams", [
    # opcode, service action, scope|type, 2 reserved, parameter list length (4), control;
    # RESERVATION KEY (8), SERVICE ACTION RESERVATION KEY (8), obsolete (4), flags, reserved, obsolete (2)
    ((PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0xA1), "5f" "06" "00" "0000" "00000018" "00",
     "0000000000000000" "00000000000000a1" "00000000" "00" "00" "0000"),
    ((PrOut.RESERVE, 0xA1, 0, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY), "5f" "01" "05" "0000" "00000018" "00",
     "00000000000000a1" "0000000000000000" "00000000" "00" "00" "0000"),
    ((PrOut.PREEMPT, 0xA1, 0xB2, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS), "5f" "04" "08" "0000" "00000018" "00",
     "00000000000000a1" "00000000000000b2" "00000000" "00" "00" "0000"),
    ((PrOut.CLEAR, 0xFFFFFFFFFFFFFFFF), "5f" "03" "00" "0000" "00000018" "00",
     "ffffffffffffffff" "0000000000000000" "00000000" "00" "00" "0000"),
])
def test_persistent_reserve_out_cdb_and_parameters(args, hexcdb, hexparams):
    built, params = persistent_reserve_out(*args)
    assert built.hex() == hexcdb and params.hex() == hexparams


def test_all_target_ports_bit():
    assert persistent_reserve_out(PrOut.REGISTER, 0, 1, all_tg_pt=True)[1][20] == 0x04


def test_read_keys():
    data = struct.pack(">II", 7, 24) + struct.pack(">QQQ", 0xA1, 0xA1, 0xB2)
    keys, length = parse_read_keys(data)
    assert keys.generation == 7 and keys.keys == (0xA1, 0xA1, 0xB2) and length == 24
    keys, length = parse_read_keys(data[:20])  # allocation too small: what fits, and how much there is
    assert keys.keys == (0xA1,) and length == 24
    assert parse_read_keys(struct.pack(">II", 0, 0))[0].keys == ()


def test_read_reservation():
    assert parse_read_reservation(struct.pack(">II", 3, 0)).type is None
    data = struct.pack(">IIQ4xxBxx", 3, 16, 0xA1, 0x05)
    r = parse_read_reservation(data)
    assert (r.generation, r.key, r.type) == (3, 0xA1, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY)


@pytest.mark.parametrize("parse, data", [
    (parse_read_keys, b""), (parse_read_keys, b"\0" * 7),
    (parse_read_keys, struct.pack(">II", 0, 12) + b"\0" * 12),  # not a whole number of keys
    (parse_read_reservation, b"\0" * 7),
    (parse_read_reservation, struct.pack(">II", 0, 16) + b"\0" * 8),  # cut short
    (parse_read_reservation, struct.pack(">IIQ4xxBxx", 3, 16, 0xA1, 0x02)),  # type 2 is obsolete
])
def test_malformed_answers_are_refused(parse, data):
    with pytest.raises(ScsiParseError):
        parse(data)


def test_report_capabilities():
    caps = parse_report_capabilities(bytes([0, 8, 0x04, 0x80, 0x80 | 0x20 | 0x02, 0x01, 0, 0]))
    assert caps.all_target_ports
    assert caps.types == {PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
                          PrType.WRITE_EXCLUSIVE, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS}
    assert parse_report_capabilities(bytes([0, 8, 0, 0, 0, 0, 0, 0])).types == set(PrType)  # TMV 0: no mask
    with pytest.raises(ScsiParseError):
        parse_report_capabilities(b"\0\x08")


@given(st.integers(1, (1 << 64) - 1))
def test_keys_parse_as_hex_or_decimal(key):
    assert parse_key(hex(key)) == parse_key(str(key)) == parse_key(key_text(key)) == key


@pytest.mark.parametrize("text", ["0", "0x0", "-1", "0x1" + "0" * 16, "12ab", "", "key"])
def test_bad_keys(text):
    with pytest.raises(ValueError):
        parse_key(text)


def test_types_by_name():
    assert parse_pr_type("Write-Exclusive-Registrants-Only") is PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY
    assert [t.word for t in PrType] == ["write-exclusive", "exclusive-access", "write-exclusive-registrants-only",
                                        "exclusive-access-registrants-only", "write-exclusive-all-registrants",
                                        "exclusive-access-all-registrants"]
    with pytest.raises(ValueError, match="unknown reservation type"):
        parse_pr_type("shared")

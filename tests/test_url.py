"""SCSI codec (raw CDB bytes, parsers, sense -> errno) and iscsi:// URLs."""

from __future__ import annotations

import errno

import pytest
from iscsifs.scsi import cdb
from iscsifs.scsi.response import (
    decode_lun,
    encode_lun,
    parse_inquiry,
    parse_read_capacity_10,
    parse_read_capacity_16,
    parse_report_luns,
)
from iscsifs.scsi.sense import ScsiError, errno_for, parse_sense
from iscsifs.url import UrlError, parse_url


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


@pytest.mark.parametrize("url, expect", [
    ("iscsi://127.0.0.1", ("127.0.0.1", 3260, None, None, None, None)),
    ("iscsi://host.example:3261/iqn.2026-11.example:disk1",
     ("host.example", 3261, "iqn.2026-11.example:disk1", None, None, None)),
    ("iscsi://[::1]/iqn.2026-11.example:disk1/7", ("::1", 3260, "iqn.2026-11.example:disk1", 7, None, None)),
    ("iscsi://bob%p%40ss@[fe80::1]:99/eui.0123456789abcdef/0",
     ("fe80::1", 99, "eui.0123456789abcdef", 0, "bob", "p%40ss")),
])
def test_urls(url, expect):
    u = parse_url(url)
    assert (u.host, u.port, u.target, u.lun, u.user, u.password) == expect


@pytest.mark.parametrize("url", [
    "iscsi:/x", "iscsi://", "iscsi://h:", "iscsi://h:70000", "iscsi://[::1", "iscsi://::1/iqn.2026-11.a:b",
    "iscsi://h/iqn.x", "iscsi://h/iqn.2026-11.a:b/-1", "iscsi://h/iqn.2026-11.a:b/1/2", "iscsi://@h", "iscsi://h?bogus=1",
    "iscsi://h h", "iscsi://h:\u00b2", "iscsi://h/iqn.2026-11.a:b/\u00b2",  # '²'.isdigit() but int('²') fails
])
def test_malformed_urls(url):
    with pytest.raises(UrlError):
        parse_url(url)


def test_password_never_in_repr_str_or_errors():
    u = parse_url("iscsi://bob%hunter2@h/iqn.2026-11.a:b")
    assert "hunter2" not in repr(u) and "hunter2" not in str(u) and "hunter2" not in u.redacted()
    with pytest.raises(UrlError) as e:
        parse_url("iscsi://bob%hunter2@h/notaname")
    assert "hunter2" not in str(e.value)


def test_send_targets_with_several_addresses_per_target():
    from iscsifs.block.client import parse_send_targets
    from iscsifs.proto.errors import RemoteProtocolError

    pairs = [("TargetName", "iqn.2026-11.a:one"), ("TargetAddress", "10.0.0.1:3260,1"),
             ("TargetAddress", "[fe80::1]:3261,2"), ("TargetAddress", "san.example,3"),
             ("TargetName", "iqn.2026-11.a:two")]
    one, two = parse_send_targets(pairs, 3260)
    assert one.name == "iqn.2026-11.a:one"
    assert [(p.host, p.port, tag) for p, tag in one.addresses] == [
        ("10.0.0.1", 3260, 1), ("fe80::1", 3261, 2), ("san.example", 3260, 3)]
    assert two.addresses == ()
    with pytest.raises(RemoteProtocolError):
        parse_send_targets([("TargetAddress", "10.0.0.1:3260,1")], 3260)
    with pytest.raises(RemoteProtocolError):
        parse_send_targets([("TargetName", "iqn.2026-11.a:x"), ("TargetAddress", "h:port,1")], 3260)


def test_libiscsi_query_keys_and_their_redaction():
    u = parse_url("iscsi://bob%pw1@h/iqn.2026-11.a:b/1?target_user=tgt&target_password=tpw2&header_digest=CRC32C"
                  "&data_digest=none-crc32c")
    assert (u.target_user, u.target_password) == ("tgt", "tpw2")
    assert (u.header_digest, u.data_digest) == ("crc32c", "none-crc32c")
    shown = u.redacted() + repr(u) + str(u)
    assert "pw1" not in shown and "tpw2" not in shown and "target_password=***" in u.redacted()
    assert u.without_query() == "iscsi://bob%***@h:3260/iqn.2026-11.a:b/1"
    for bad in ("?header_digest=md5", "?target_user", "?target_user=", "?iser=1"):
        with pytest.raises(UrlError):
            parse_url("iscsi://h/iqn.2026-11.a:b" + bad)


def test_chap_credentials_come_field_by_field_url_then_file_then_environment(tmp_path):
    from iscsifs.url import CredentialsError, chap_credentials

    url = parse_url("iscsi://alice@h/iqn.2026-11.a:b?target_user=t")
    f = tmp_path / "c"
    f.write_text("password = from-file\ntarget_password = t-from-file\nusername = ignored\n")
    f.chmod(0o600)
    env = {"LIBISCSI_CHAP_PASSWORD": "from-env", "LIBISCSI_CHAP_TARGET_PASSWORD": "t-from-env"}
    c = chap_credentials(url, str(f), env)
    assert (c.username, c.secret, c.target_username, c.target_secret) == ("alice", b"from-file", "t", b"t-from-file")
    c = chap_credentials(url, None, env)
    assert (c.secret, c.target_secret) == (b"from-env", b"t-from-env")
    assert chap_credentials(parse_url("iscsi://h"), None, {}) is None
    for url_text, environ, words in [
        ("iscsi://alice@h", {}, "has no password"),
        ("iscsi://h", {"LIBISCSI_CHAP_PASSWORD": "x"}, "no user name"),
        ("iscsi://h?target_user=t&target_password=p", {}, "needs a user and password"),
        ("iscsi://a%b@h?target_user=t", {}, "no target password"),
    ]:
        with pytest.raises(CredentialsError, match=words) as e:
            chap_credentials(parse_url(url_text), None, environ)
        assert "=x" not in str(e.value)

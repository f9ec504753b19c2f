"""``iscsifs inq``, ``opcodes`` and ``raw`` against real tgt: through a URL (a login of their own)
and through a mount's LUN file (the mount's session, by extended attributes); compared with the
backing file and with libiscsi's iscsi-inq; sg_raw's lines and exit statuses; refused to a user
without CAP_SYS_RAWIO, on the command line and in the mount."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from support.targets import ISCSIFS, mounted, needs_fuse, run

MIB = 1 << 20
READ10_LBA0_16 = ["28", "00", "00", "00", "00", "00", "00", "00", "10", "00"]  # 16 blocks of 512 bytes
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")


def err_lines(stderr: bytes) -> list[str]:
    return stderr.decode().splitlines()


def one_line(stderr: bytes) -> str:
    lines = err_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("iscsifs: "), lines
    return lines[0]


@pytest.fixture
def target(make_target):
    return make_target({1: 4 * MIB})


def test_raw_read10_through_a_url_is_the_backing_file(target):
    r = run(*ISCSIFS, "raw", "-r", "8k", "-o", "-", target.lun_url(1), *READ10_LBA0_16)
    assert r.returncode == 0, r.stderr
    assert r.stdout == target.backing[1].read_bytes()[:8192]
    assert err_lines(r.stderr) == ["SCSI Status: Good ", "", "Writing 8192 bytes of data to stdout"]
    # Without -o: sg_raw's hex dump on stderr, nothing on stdout.
    r = run(*ISCSIFS, "raw", "-r", "0x20", target.lun_url(1), *READ10_LBA0_16)
    assert r.returncode == 0 and not r.stdout, r.stderr
    lines = err_lines(r.stderr)
    assert lines[2] == "Received 32 bytes of data:"
    assert lines[3].startswith(" 00     " + " ".join(f"{b:02x}" for b in target.backing[1].read_bytes()[:8]))


def test_the_library_api_sends_raw_commands_too(target):
    from iscsifs.block.sync import LunFile

    with LunFile(target.lun_url(1)) as lun:
        result = lun.raw(bytes.fromhex(" ".join(READ10_LBA0_16)), expected_in=8192)
        assert result.status == 0 and bytes(result.data) == target.backing[1].read_bytes()[:8192]
        # WRITE(10) of LBA 1 with data out, then a CHECK CONDITION comes back as a result, not an error.
        block = os.urandom(512)
        assert lun.raw(bytes.fromhex("2a00 00000001 00 0001 00"), data_out=block).status == 0
        assert target.backing[1].read_bytes()[512:1024] == block
        refused = lun.raw(bytes.fromhex("28 00 ffffffff 00 0001 00"), expected_in=512)
        assert refused.status == 0x02 and refused.sense[2] & 0x0F == 0x05  # ILLEGAL REQUEST (LBA out of range)


@needs_fuse
def test_raw_through_a_mount_uses_its_session(target, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = tmp_path / "out"
    with mounted(target.url, mnt):
        r = run(*ISCSIFS, "raw", "-r", "8192", "-o", "-", str(mnt / "1"), *READ10_LBA0_16)
        assert r.returncode == 0, r.stderr
        assert r.stdout == target.backing[1].read_bytes()[:8192]
        r = run(*ISCSIFS, "raw", "-r", "1024", "-o", str(out), str(mnt / "1"), "28", "0", "0", "0", "0", "8",
                "0", "0", "2", "0")
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == target.backing[1].read_bytes()[8 * 512 : 10 * 512]
        # Data out: WRITE(10) of one block, read back through the file.
        block = bytes(range(256)) * 2
        r = run(*ISCSIFS, "raw", "-s", "512", str(mnt / "1"), "2a", "0", "0", "0", "0", "20", "0", "0", "1", "0",
                input=block)
        assert r.returncode == 0, r.stderr
        assert target.backing[1].read_bytes()[0x20 * 512 : 0x21 * 512] == block
        # Two requests in a row: each caller reads its own result.
        r = run(*ISCSIFS, "raw", "-r", "36", "-b", str(mnt / "1"), "12", "0", "0", "0", "24", "0")
        assert r.returncode == 0 and r.stdout[8:11] == b"IET", r.stderr
        # Not a LUN file: one line, the project's code.
        r = run(*ISCSIFS, "raw", str(mnt), "0", "0", "0", "0", "0", "0")
        assert r.returncode == 2 and "is not a LUN file" in one_line(r.stderr)


def test_a_check_condition_prints_the_sense_and_sg3_utils_status(target):
    # INQUIRY with EVPD=0 and a page code: ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00).
    r = run(*ISCSIFS, "raw", "-r", "36", target.lun_url(1), "12", "0", "83", "0", "24", "0")
    assert r.returncode == 5, r.stderr
    assert err_lines(r.stderr) == [
        "SCSI Status: Check Condition ", "", "Sense Information:",
        "Fixed format, current; Sense key: Illegal Request", "Additional sense: Invalid field in cdb", "",
        "Error 5 occurred, no data received"]
    # READ past the end: ILLEGAL REQUEST, LBA OUT OF RANGE (21/00): sg3_utils gives it its own status, 22.
    r = run(*ISCSIFS, "raw", "-r", "512", target.lun_url(1), "28", "0", "0", "1", "0", "0", "0", "0", "1", "0")
    assert r.returncode == 22, r.stderr
    assert "Sense key: Illegal Request" in r.stderr.decode()
    assert "Additional sense: Logical block address out of range" in r.stderr.decode()
    # -n: the status alone.
    r = run(*ISCSIFS, "raw", "-n", target.lun_url(1), "12", "0", "83", "0", "24", "0")
    assert r.returncode == 5 and "Sense" not in r.stderr.decode(), r.stderr


def test_a_malformed_cdb_is_one_line_and_exit_1_before_any_login():
    # A portal nobody listens on: the CDB is refused before any connection is tried.
    for cdb in (["28", "zz"], ["12", "0"], ["28", "0", "0", "0", "0", "0"]):
        r = run(*ISCSIFS, "raw", "iscsi://127.0.0.1:9/iqn.2026-11.test:none/1", *cdb)
        assert r.returncode == 1, (cdb, r.stderr)
        one_line(r.stderr)
    r = run(*ISCSIFS, "raw", "-i", "/dev/null", "iscsi://127.0.0.1:9/iqn.2026-11.test:none/1", "0", "0", "0", "0",
            "0", "0")
    assert r.returncode == 1 and "--send" in one_line(r.stderr)


@needs_setpriv
@needs_fuse
def test_raw_needs_cap_sys_rawio_on_the_command_line_and_in_the_mount(target):
    r = run(*SETPRIV, *ISCSIFS, "raw", target.lun_url(1), "0", "0", "0", "0", "0", "0")
    assert r.returncode == 1 and "CAP_SYS_RAWIO" in one_line(r.stderr)
    # pytest's own directories are root's alone: nobody must reach the mount point.
    with tempfile.TemporaryDirectory(prefix="iscsifs-raw-") as top:
        os.chmod(top, 0o755)
        mnt = Path(top) / "mnt"
        mnt.mkdir()
        _refused_in_the_mount(target, mnt)


def _refused_in_the_mount(target, mnt: Path) -> None:
    with mounted(target.url, mnt, "-o", "allow_other,umask=000"):
        lun = str(mnt / "1")
        r = run(*SETPRIV, *ISCSIFS, "raw", lun, "0", "0", "0", "0", "0", "0")
        assert r.returncode == 1 and "CAP_SYS_RAWIO" in one_line(r.stderr)
        # setxattr by hand, past the command line's check: the mount refuses it (EPERM).
        probe = ("import errno, os, sys\n"
                 "from iscsifs.mount.fs import RAW_XATTR, RawRequest, pack_raw_request\n"
                 "try:\n"
                 "    os.setxattr(sys.argv[1], RAW_XATTR.decode(), pack_raw_request(RawRequest(bytes(6), 0)))\n"
                 "except OSError as exc:\n"
                 "    print(errno.errorcode[exc.errno])\n")
        r = run(*SETPRIV, ISCSIFS[0], "-c", probe, lun)
        assert r.stdout.decode().strip() == "EPERM", r.stderr
        # inq and opcodes change nothing: read access is enough.
        r = run(*SETPRIV, *ISCSIFS, "inq", lun)
        assert r.returncode == 0 and " Vendor identification: IET" in r.stdout.decode(), r.stderr
        r = run(*SETPRIV, *ISCSIFS, "opcodes", lun)
        assert r.returncode == 0, r.stderr


def iscsi_inq_designators(output: bytes) -> list[tuple[int, int, int, bytes]]:
    """(code set, association, designator type, value as a C string) of iscsi-inq -e 1 -c 131."""
    found = re.findall(rb"Code Set:\((\d+)\).*?\nAssociation:\((\d+)\).*?\nDesignator Type:\((\d+)\).*?\n"
                       rb"Designator:\[(.*?)\]\n(?=DEVICE DESIGNATOR|\Z)", output, re.S)
    return [(int(c), int(a), int(t), v) for c, a, t, v in found]


@pytest.mark.skipif(shutil.which("iscsi-inq") is None, reason="needs iscsi-inq (libiscsi-bin)")
def test_inq_page_0x83_matches_iscsi_inq(target):
    r = run(*ISCSIFS, "inq", "--page", "0x83", "--json", target.lun_url(1))
    assert r.returncode == 0, r.stderr
    ours = [(d["code_set"], d["association"], d["designator_type"], bytes.fromhex(d["designator"]).split(b"\0")[0])
            for d in json.loads(r.stdout)["descriptors"]]
    libiscsi = run("iscsi-inq", "-e", "1", "-c", "131", target.lun_url(1))  # -c is atoi(): decimal
    assert libiscsi.returncode == 0, libiscsi.stderr
    theirs = iscsi_inq_designators(libiscsi.stdout)
    assert theirs and sorted(ours) == sorted(theirs)  # iscsi-inq lists them last first
    text = run(*ISCSIFS, "inq", "--page", "131", target.lun_url(1))
    assert text.returncode == 0 and text.stdout.decode().startswith("Device Identification VPD page:\n"), text.stderr


def test_inq_standard_has_what_tgt_reports(target):
    r = run(*ISCSIFS, "inq", target.lun_url(1))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "standard INQUIRY:"
    assert " Vendor identification: IET     " in lines
    assert " Product identification: VIRTUAL-DISK    " in lines
    assert " Product revision level: 0001" in lines
    assert "Supported VPD pages VPD page:" in lines
    standard = json.loads(run(*ISCSIFS, "inq", "--json", target.lun_url(1)).stdout)["standard"]
    assert (standard["t10_vendor_identification"], standard["product_identification"]) == ("IET     ",
                                                                                          "VIRTUAL-DISK    ")


@needs_fuse
def test_opcodes_lists_read_and_write_through_a_url_and_a_mount(target, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(target.url, mnt):
        for where in (target.lun_url(1), str(mnt / "1")):
            r = run(*ISCSIFS, "opcodes", where)
            assert r.returncode == 0, r.stderr
            lines = r.stdout.decode().splitlines()
            assert lines[:2] == ["  IET       VIRTUAL-DISK      0001", "  Peripheral device type: disk"]
            assert any(re.fullmatch(r" 28 +10 +\d,\d +Read\(10\)", line) for line in lines), lines
            assert any(re.fullmatch(r" 2a +10 +\d,\d +Write\(10\)", line) for line in lines), lines
            codes = json.loads(run(*ISCSIFS, "opcodes", "--json", where).stdout)["commands"]
            assert {0x28, 0x2A} <= {c["operation_code"] for c in codes}
        r = run(*ISCSIFS, "inq", "--page", "0x83", str(mnt / "1"))
        assert r.returncode == 0 and "Device Identification VPD page:" in r.stdout.decode(), r.stderr


def test_inq_of_a_path_outside_any_mount_is_one_line_exit_2(tmp_path):
    r = run(*ISCSIFS, "inq", str(tmp_path))
    assert r.returncode == 2 and "is not in an iscsifs mount" in one_line(r.stderr)


# -- the pieces without a target ----------------------------------------------------------------------


def test_the_xattr_framing_round_trips_and_refuses_what_is_not_ours():
    from iscsifs.mount.fs import (
        RAW_MAX_DATA,
        RawRequest,
        RawResult,
        pack_raw_request,
        pack_raw_result,
        unpack_raw_request,
        unpack_raw_result,
    )

    request = RawRequest(bytes.fromhex("2a00000000200000 0100"), 0, 20000, b"x" * 512)
    assert unpack_raw_request(pack_raw_request(request)) == request
    result = RawResult(2, 0, bytes.fromhex("7000050000000a0000000000210000"), 512, b"")
    assert unpack_raw_result(pack_raw_result(result)) == result
    for bad in (b"", b"\x02" + pack_raw_request(request)[1:], pack_raw_request(RawRequest(b"\0" * 5, 0)),
                pack_raw_request(RawRequest(bytes(6), RAW_MAX_DATA + 1))):
        with pytest.raises(ValueError):
            unpack_raw_request(bad)


def test_who_may_send_raw_commands():
    from iscsifs.cli.commands import has_cap_sys_rawio
    from iscsifs.mount.fs import may_raw_io

    assert may_raw_io("Uid:\t0\t0\t0\t0\nCapEff:\t0000000000000000\n")
    assert may_raw_io("Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000020000\n")  # bit 17
    assert not may_raw_io("Uid:\t0\t1000\t1000\t1000\nCapEff:\t0000000000000000\n")  # the effective uid counts
    assert not may_raw_io("Uid:\t65534\t65534\t65534\t65534\nCapEff:\t000001fffffdffff\n")
    assert has_cap_sys_rawio("CapEff:\t000001ffffffffff\n") and not has_cap_sys_rawio("CapEff:\t0\n")


def test_only_read_only_queries_run_on_read_access():
    from iscsifs.mount.fs import query_cdb

    assert query_cdb(b"120183100000") == bytes.fromhex("120183100000")
    assert query_cdb(b"a30c00000000000020000000") is not None
    assert query_cdb(b"28000000000000000100") is None  # READ(10)
    assert query_cdb(b"a30b00000000000020000000") is None  # REPORT TARGET PORT GROUPS...
    assert query_cdb(b"zz") is None


def test_page_codes_and_lengths_are_read_as_the_sg3_utils_tools_read_them():
    from iscsifs.cli.options import page_code, sg_length

    assert page_code("0x83") == page_code("131") == 0x83
    with pytest.raises(ValueError):
        page_code("256")
    assert sg_length("512") == sg_length("0x200") == sg_length("200h") == 512
    assert sg_length("8k") == 8192

"""Against a real tgtd: discovery, CHAP, digests, block sizes, huge LUNs, `iscsifs ls` vs libiscsi, sync API."""

from __future__ import annotations

import logging
import os
import re
import shutil

import pytest
import trio
from iscsifs.block.client import Client, ClientConfig, scan_luns
from iscsifs.block.identity import read_capacity
from iscsifs.block.lun import Lun
from iscsifs.block.sync import LunFile, discover, list_luns
from iscsifs.proto.errors import LoginError
from iscsifs.proto.text import Offer
from iscsifs.url import parse_url

from support.targets import ISCSIFS, needs_tgt, pattern, run

pytestmark = needs_tgt
HAVE_LIBISCSI = shutil.which("iscsi-ls") is not None


def test_discovery_lists_every_target(private_tgt, tmp_path):
    names = [f"iqn.2026-11.example:d{i}" for i in range(5)]
    for n in names:
        private_tgt.add_target(n)
    found = discover(private_tgt.url)
    assert sorted(t.name for t in found) == names
    for t in found:
        (portal, tpgt), = t.addresses
        assert (portal.host, portal.port, tpgt) == ("127.0.0.1", private_tgt.port, 1)


def test_sync_api_reads_writes_and_flushes(make_target):
    t = make_target({1: 1 << 20})
    with LunFile(t.lun_url(1)) as lun:
        assert lun.size == 1 << 20 and lun.block_size == 512
        assert lun.read(1000, 3000) == pattern(1 << 20, seed=_seed(t))[1000:4000]
        assert lun.write(777, b"sync api") == 8
        lun.flush()
    assert t.backing[1].read_bytes()[777:785] == b"sync api"
    infos = list_luns(t.url)
    assert [(i.lun, i.is_disk) for i in infos] == [(0, False), (1, True)]


def _seed(t) -> int:
    return int(t.iqn.rsplit(":t", 1)[1]) * 100 + 1


def test_chap_one_way_with_tgt_accounts(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    good = t.require_chap("chapuser", "chapsecret12") + "/1"
    with LunFile(good) as lun:
        assert lun.read(0, 16) == t.backing[1].read_bytes()[:16]
    # No credentials, and wrong ones: authentication failure, exit 4, no secret in the message.
    r = run(*ISCSIFS, "ls", t.url)
    assert r.returncode == 4, r.stderr
    bad = t.url.replace("iscsi://", "iscsi://chapuser%wrongsecret99@")
    r = run(*ISCSIFS, "ls", bad)
    assert r.returncode == 4 and "authentication failed" in r.stderr.decode()
    assert "wrongsecret99" not in r.stderr.decode()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run(*ISCSIFS, bad, str(mnt))
    assert r.returncode == 4 and "wrongsecret99" not in r.stderr.decode()
    assert len(r.stderr.decode().strip().splitlines()) == 1


async def test_header_and_data_digests_with_tgt(make_target):
    """tgt checks our CRC32C and we check its: any byte-order mistake would fail the login or the I/O."""
    t = make_target({1: 1 << 20})
    for key in ("HeaderDigest", "DataDigest"):
        t.tgt.tgtadm("--op", "update", "--mode", "target", "--tid", t.tid, "-n", key, "-v", "CRC32C")
    offer = Offer(header_digest=("CRC32C",), data_digest=("CRC32C",))
    client = Client(ClientConfig(offer=offer))
    async with trio.open_nursery() as nursery:
        session = await client.login(nursery, parse_url(t.url), t.iqn)
        assert session.params.header_digest and session.params.data_digest
        infos = await scan_luns(session)
        lun = Lun(session, 1, infos[1].capacity)
        data = os.urandom(300_001)
        await lun.write(12345, data)
        assert await lun.read(12345, len(data)) == data
        await session.logout()
        nursery.cancel_scope.cancel()
    assert t.backing[1].read_bytes()[12345 : 12345 + len(data)] == data


async def test_a_1_mib_read_from_tgt_is_one_placed_data_in(make_target, caplog):
    """We declare a MaxRecvDataSegmentLength as large as our largest command, and tgt then sends a
    1 MiB read in one Data-In (past its MaxBurstLength, which we accept), received in place."""
    t = make_target({1: 4 << 20})
    client = Client(ClientConfig())
    async with trio.open_nursery() as nursery:
        session = await client.login(nursery, parse_url(t.url), t.iqn)
        lun = Lun(session, 1, await read_capacity(session, 1))
        assert session.params.our_max_recv_data_segment_length == 1 << 20
        assert session.params.max_burst_length == 262144
        caplog.set_level(logging.DEBUG, logger="iscsifs.connection")
        caplog.clear()
        data = await lun.read(1 << 20, 1 << 20)
        await session.logout()
        nursery.cancel_scope.cancel()
    assert data == t.backing[1].read_bytes()[1 << 20 : 2 << 20]
    data_ins = [r.getMessage() for r in caplog.records if " <- DataIn " in r.getMessage()]
    assert len(data_ins) == 1 and data_ins[0].endswith("data=1048576 (placed)"), data_ins


async def test_4096_byte_blocks_and_huge_sparse_lun(make_target):
    t = make_target({1: 8 << 20, 2: 3 << 40}, block_size=4096, fill=False)
    client = Client(ClientConfig())
    async with trio.open_nursery() as nursery:
        session = await client.login(nursery, parse_url(t.url), t.iqn)
        cap = await read_capacity(session, 2)
        assert (cap.size, cap.block_size) == (3 << 40, 4096)
        lun = Lun(session, 2, cap)
        end = cap.size
        await lun.write(end - 5000, b"near the end of 3 TiB")  # READ/WRITE(16) territory for 512-byte LBAs
        assert await lun.read(end - 5000, 21) == b"near the end of 3 TiB"
        assert await lun.read(end - 3, 100) == bytes(3)
        small = Lun(session, 1, await read_capacity(session, 1))
        await small.write(4095, b"ab")  # straddles two 4 KiB blocks
        assert await small.read(4090, 10) == bytes(5) + b"ab" + bytes(3)
        await session.logout()
        nursery.cancel_scope.cancel()
    with open(t.backing[2], "rb") as f:
        f.seek((3 << 40) - 5000)
        assert f.read(21) == b"near the end of 3 TiB"


def _ls_rows(out: str) -> list[list[str]]:
    lines = out.strip().splitlines()
    assert lines[0].split() == ["TARGET", "LUN", "TYPE", "SIZE", "VENDOR", "PRODUCT"]
    return [line.split() for line in lines[1:]]


def test_ls_matches_libiscsi(private_tgt, tmp_path):
    if not HAVE_LIBISCSI:
        pytest.skip("libiscsi-bin not installed")
    a, b = "iqn.2026-11.example:alpha", "iqn.2026-11.example:beta"
    private_tgt.add_target(a)
    private_tgt.add_target(b)
    sizes = {(a, 1): 64 << 20, (a, 2): (5 << 40) + 4096, (b, 1): 123 * 512}
    for (iqn, lun), size in sizes.items():
        private_tgt.add_lun(iqn, lun, tmp_path / f"{iqn[-4:]}{lun}.img", size=size)
    r = run(*ISCSIFS, "ls", private_tgt.url)
    assert r.returncode == 0, r.stderr
    rows = _ls_rows(r.stdout.decode())
    ours = {(row[0], int(row[1])): row for row in rows}
    # libiscsi's iscsi-ls: same targets and LUNs, same device types.
    ref = run("iscsi-ls", "-s", private_tgt.url).stdout.decode()
    ref_targets = re.findall(r"Target:(\S+)", ref)
    assert sorted(ref_targets) == sorted({row[0] for row in rows})
    for (iqn, lun), size in sizes.items():
        row = ours[(iqn, lun)]
        assert row[2] == "disk" and int(row[3]) == size
        assert row[4:6] == ["IET", "VIRTUAL-DISK"]
        rc16 = run("iscsi-readcapacity16", f"{private_tgt.url}/{iqn}/{lun}").stdout.decode()
        total = int(re.search(r"Total size:(\d+)", rc16).group(1))
        assert total == size  # exact bytes: no 2 TiB cap, no off-by-one
    for iqn in (a, b):
        assert ours[(iqn, 0)][2] == "controller" and ours[(iqn, 0)][3] == "-"
    # A target URL lists just that target; a LUN URL just that LUN.
    assert {row[0] for row in _ls_rows(run(*ISCSIFS, "ls", f"{private_tgt.url}/{b}").stdout.decode())} == {b}
    one = _ls_rows(run(*ISCSIFS, "ls", f"{private_tgt.url}/{a}/2").stdout.decode())
    assert [(row[1], row[3]) for row in one] == [("2", str((5 << 40) + 4096))]
    r = run(*ISCSIFS, "ls", f"{private_tgt.url}/{a}/9")
    assert r.returncode == 5 and "LUN 9" in r.stderr.decode()


def test_ls_errors(private_tgt):
    # tgt with no target at all closes the connection instead of answering 0x0203; with one, it answers.
    private_tgt.add_target("iqn.2026-11.example:present")
    r = run(*ISCSIFS, "ls", "iscsi://127.0.0.1:1")
    assert r.returncode == 3 and "cannot connect to portal 127.0.0.1:1" in r.stderr.decode()
    r = run(*ISCSIFS, "ls", f"{private_tgt.url}/iqn.2026-11.example:nothere")
    assert r.returncode == 5 and "target not found" in r.stderr.decode()
    r = run(*ISCSIFS, "ls", "iscsi://bob@127.0.0.1")
    assert r.returncode == 2 and "no password" in r.stderr.decode()
    r = run(*ISCSIFS, "ls", "not-a-url")
    assert r.returncode == 2 and len(r.stderr.decode().strip().splitlines()) == 1


async def test_missing_target_is_login_error(private_tgt):
    private_tgt.add_target("iqn.2026-11.example:present")
    client = Client(ClientConfig())
    async with trio.open_nursery() as nursery:
        with pytest.raises(LoginError) as e:
            await client.login(nursery, parse_url(private_tgt.url), "iqn.2026-11.example:nothere")
    assert e.value.is_not_found


def test_version_and_help():
    r = run(*ISCSIFS, "--version")
    assert r.returncode == 0 and r.stdout.decode().startswith("iscsifs ")
    r = run(*ISCSIFS, "--help")
    assert r.returncode == 0 and "exit codes" in r.stdout.decode()

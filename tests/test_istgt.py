"""Interoperability with istgt, a second, independent target: discovery (where libiscsi's
iscsi-ls hangs here, we must not), mounts with data checked against the backing files, CHAP
one-way and mutual, digests, identity."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from support.istgt import IstgtDaemon
from support.reservations import pr, pr_json, write
from support.targets import HAVE_FUSE, ISCSIFS, ROOT, mounted, pattern, run

pytestmark = pytest.mark.skipif(not (ROOT and HAVE_FUSE and shutil.which("istgt")),
                                reason="needs root, FUSE and istgt (Debian package istgt)")


def _fill(d: IstgtDaemon) -> None:
    for name, size in d.luns.items():
        d.backing(name).write_bytes(pattern(size, seed=len(name)))


def test_discovery_listing_mount_read_write(tmp_path):
    with IstgtDaemon(tmp_path / "istgt", {"disk1": 8 << 20, "disk2": 3 << 20}) as d:
        _fill(d)
        r = run(*ISCSIFS, "ls", d.url, timeout=30)
        out = r.stdout.decode()
        assert r.returncode == 0, r.stderr
        assert d.iqn("disk1") in out and d.iqn("disk2") in out and str(8 << 20) in out and "FreeBSD" in out
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with mounted(d.url, mnt, "-d") as m:
            f1, f2 = mnt / d.iqn("disk1") / "0", mnt / d.iqn("disk2") / "0"
            assert os.stat(f1).st_size == 8 << 20 and os.stat(f2).st_size == 3 << 20
            assert run("cmp", str(f1), str(d.backing("disk1"))).returncode == 0
            data = os.urandom(1 << 20)
            with open(f2, "r+b") as f:
                f.seek(12345)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            r = run("dd", f"if={f1}", f"of={f1}", "bs=64k", "skip=1", "seek=64", "count=16", "conv=notrunc,fsync")
            assert r.returncode == 0, r.stderr
            assert os.getxattr(f1, "user.iscsi.serial") and os.getxattr(f1, "user.iscsi.vendor") == b"FreeBSD"
        assert d.backing("disk2").read_bytes()[12345 : 12345 + len(data)] == data
        b1 = d.backing("disk1").read_bytes()
        assert b1[64 << 16 : 80 << 16] == pattern(8 << 20, seed=5)[1 << 16 : 17 << 16]
        # istgt declares its MaxRecvDataSegmentLength (tgt does not): we use what it says.
        assert "max_recv_data_segment_length=65536" in m.stderr


@pytest.mark.parametrize("auth", ["CHAP", "CHAP Mutual"])
def test_chap_with_istgt(tmp_path, auth):
    accounts = [("alice", "alice-secret-1", "istgt-side", "istgt-secret-1")]
    with IstgtDaemon(tmp_path / "istgt", {"disk1": 1 << 20}, auth_method=auth, accounts=accounts) as d:
        _fill(d)
        base = f"iscsi://alice%alice-secret-1@127.0.0.1:{d.port}/{d.iqn('disk1')}"
        mutual = "?target_user=istgt-side&target_password=istgt-secret-1"
        r = run(*ISCSIFS, "ls", base + mutual, timeout=30)
        assert r.returncode == 0 and d.iqn("disk1") in r.stdout.decode(), r.stderr
        r = run(*ISCSIFS, "ls", base.replace("alice-secret-1", "wrong-secret-9"), timeout=30)
        assert r.returncode == 4 and "wrong-secret-9" not in r.stderr.decode(), r.stderr
        r = run(*ISCSIFS, "ls", base + mutual.replace("istgt-secret-1", "not-its-secret"), timeout=30)
        assert r.returncode == 4 and "does not know the target secret" in r.stderr.decode(), r.stderr
        if auth == "CHAP Mutual":  # istgt insists on mutual: one-way credentials are refused
            r = run(*ISCSIFS, "ls", base, timeout=30)
            assert r.returncode == 4, r.stderr
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with mounted(base + mutual, mnt):
            assert (mnt / "0").read_bytes() == d.backing("disk1").read_bytes()


def test_digests_with_istgt(tmp_path):
    with IstgtDaemon(tmp_path / "istgt", {"disk1": 2 << 20}, use_digest="Header Data") as d:
        _fill(d)
        url = f"{d.url}/{d.iqn('disk1')}?data_digest=crc32c"
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with mounted(url, mnt, "-d") as m:
            assert (mnt / "0").read_bytes() == d.backing("disk1").read_bytes()
            with open(mnt / "0", "r+b") as f:
                f.write(b"digest" * 1000)
        assert d.backing("disk1").read_bytes()[:6000] == b"digest" * 1000
        assert "header_digest=True" in m.stderr and "data_digest=True" in m.stderr


def test_disk_tools_and_provisioning_with_istgt(tmp_path):
    """Image restore, by-id, and thin provisioning as far as istgt goes: what it says of its
    provisioning decides whether discard works or is refused, and map agrees with it."""
    with IstgtDaemon(tmp_path / "istgt", {"disk1": 8 << 20}) as d:
        _fill(d)
        before = d.backing("disk1").read_bytes()
        img = tmp_path / "disk.img"
        data = pattern((2 << 20) + 512, seed=3)
        img.write_bytes(data[: 1 << 20] + bytes(1 << 20) + data[2 << 20 :])  # zeros in the middle
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with mounted(d.url + "/" + d.iqn("disk1"), mnt):
            lun = mnt / "0"
            tool = ["qemu-img", "convert", "-f", "raw", "-O", "raw"] if shutil.which("qemu-img") else ["cp"]
            r = run(*tool, str(img), str(lun))  # truncates, then leaves the zeros for us to write
            assert r.returncode == 0, r.stderr.decode()
            assert len(os.listdir(mnt / "by-id")) == 1 and (mnt / "by-id" / os.listdir(mnt / "by-id")[0]).exists()
            provisioning = os.getxattr(lun, "user.iscsi.provisioning").decode()
            r = run(*ISCSIFS, "discard", str(lun), "--offset", "4M", "--length", "1M")
            m = run(*ISCSIFS, "map", str(lun))
            assert m.returncode == 0, m.stderr
            if provisioning == "full":
                assert r.returncode == 7 and "cannot unmap" in r.stderr.decode()
                assert "allocated 8.0 MiB of 8.0 MiB (100.0%)" in m.stdout.decode()
            else:
                assert provisioning == "thin" and r.returncode == 0, r.stderr
                assert "deallocated" in m.stdout.decode()
        after = d.backing("disk1").read_bytes()
        assert after[: len(img.read_bytes())] == img.read_bytes()
        rest = -(-len(data) // 512) * 512
        if provisioning == "full":
            assert after[rest:] == before[rest:]


def test_persistent_reservations_with_istgt(tmp_path):
    """What istgt (0.4~20111008) carries out of persistent reservations, two mounts as two hosts:
    register, reserve, release, READ KEYS and READ RESERVATION as SPC-4 says. Its PREEMPT takes
    the reservation over and refuses the preempted host's writes, but leaves READ KEYS listing the
    preempted key instead of the preempting one, and tells the preempted host nothing (README:
    Shared LUNs)."""
    with IstgtDaemon(tmp_path / "istgt", {"disk1": 4 << 20}) as d:
        url = f"{d.url}/{d.iqn('disk1')}"
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        wero = "write-exclusive-registrants-only"
        with mounted(url, a, "-o", f"initiator_name={d.iqn('host-a')},reservation_key=0xa1,reservation={wero}"), \
                mounted(url, b, "-o", f"initiator_name={d.iqn('host-b')}"):
            assert pr_json(a / "0")["reservation"] == {"key": "0x00000000000000a1", "type": wero, "ours": True}
            assert write(b / "0", b"b") == errno.EBUSY
            assert pr(b / "0", "--register", "0xb2").returncode == 0
            assert pr_json(b / "0")["keys"] == ["0x00000000000000a1", "0x00000000000000b2"]
            assert write(b / "0", b"b, registered") is None
            assert pr(a / "0", "--release").returncode == 0
            assert pr_json(a / "0")["reservation"] is None
            assert pr(b / "0", "--reserve", "write-exclusive").returncode == 0
            assert write(a / "0", b"a") == errno.EBUSY  # registered, but write-exclusive is B's alone
            assert pr(b / "0", "--release").returncode == 0
            assert pr(a / "0", "--reserve", wero).returncode == 0
            # Fencing: B preempts A. A's writes are refused and B's go through, as SPC-4 says...
            assert pr(b / "0", "--preempt", "0xa1").returncode == 0
            assert write(a / "0", b"a, fenced") == errno.EBUSY
            assert write(b / "0", b"b, holder") is None
            # ...but istgt's READ KEYS still lists A's key, not B's.
            assert pr_json(b / "0")["keys"] == ["0x00000000000000a1"]
        assert d.backing("disk1").read_bytes()[:9] == b"b, holder"

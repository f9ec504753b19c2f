"""Every LUN shape, truthfully, against a real tgtd: identity xattrs (checked against libiscsi),
LUNs appearing, disappearing and changing size while mounted, IPv6 portals and host names."""

from __future__ import annotations

import errno
import os
import re
import time

import pytest

from support.targets import ISCSIFS, mounted, needs_fuse, pattern, run, wait_for
from support.tgt import TgtDaemon

pytestmark = needs_fuse


def test_identity_xattrs_match_libiscsi(make_target, tmp_path):
    t = make_target({1: 1 << 20}, block_size=4096)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        r = run("getfattr", "-d", str(mnt / "1"))
        assert r.returncode == 0, r.stderr
        attrs = dict(re.findall(r'^(user\.iscsi\.\w+)="(.*)"$', r.stdout.decode(), re.M))
        assert set(attrs) == {f"user.iscsi.{k}" for k in ("vendor", "product", "revision", "serial", "wwn",
                                                          "block_size", "size", "target", "portal", "paths", "lun",
                                                          "provisioning")}
        assert attrs["user.iscsi.target"] == t.iqn and attrs["user.iscsi.lun"] == "1"
        assert attrs["user.iscsi.portal"] == t.tgt.portal and attrs["user.iscsi.block_size"] == "4096"
        assert attrs["user.iscsi.size"] == str(1 << 20) == str(os.stat(mnt / "1").st_size)
        assert attrs["user.iscsi.wwn"].startswith("naa.")
        assert attrs["user.iscsi.paths"] == f"{t.tgt.portal} logged_in active"  # the one path, in use
        assert os.getxattr(mnt, "user.iscsi.paths") == os.getxattr(mnt / "1", "user.iscsi.paths")
        serial = run("iscsi-inq", "-e", "1", "-c", "128", t.lun_url(1)).stdout.decode()
        assert re.search(r"Unit Serial Number:\[\s*(\S+)\]", serial).group(1) == attrs["user.iscsi.serial"]
        inq = run("iscsi-inq", t.lun_url(1)).stdout.decode()
        assert f"Vendor:{attrs['user.iscsi.vendor']}" in inq.replace("Vendor Identification:", "Vendor:")
        assert os.getxattr(mnt, "user.iscsi.target") == t.iqn.encode()  # the target's directory
        with pytest.raises(OSError) as e:
            os.setxattr(mnt / "1", "user.iscsi.serial", b"forged")
        assert e.value.errno == errno.EPERM
        with pytest.raises(OSError) as e:
            os.getxattr(mnt / "1", "user.other")
        assert e.value.errno == errno.ENODATA


def test_luns_added_removed_and_resized_while_mounted(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    extra = t.backing[1].parent / f"{t.iqn.rsplit(':', 1)[1]}-extra.img"
    extra.write_bytes(pattern(2 << 20, seed=7))

    def touch_lun1() -> None:
        # Any command brings the target's UNIT ATTENTION (3F/0E REPORTED LUNS DATA HAS CHANGED).
        with open(mnt / "1", "rb", buffering=0) as f:
            f.read(512)

    with mounted(t.url, mnt) as m:
        assert sorted(os.listdir(mnt)) == ["1", "by-id"]
        t.tgt.add_lun(t.iqn, 2, extra)
        touch_lun1()
        wait_for(lambda: "2" in os.listdir(mnt))
        assert (mnt / "2").read_bytes() == extra.read_bytes()
        # Same LUN number, bigger device: the size follows.
        t.tgt.tgtadm("--op", "delete", "--mode", "logicalunit", "--tid", t.tid, "--lun", "2")
        with open(extra, "ab") as f:
            f.write(pattern(1 << 20, seed=8))
        t.tgt.add_lun(t.iqn, 2, extra)
        touch_lun1()
        wait_for(lambda: os.stat(mnt / "2").st_size == 3 << 20)
        assert (mnt / "2").read_bytes() == extra.read_bytes()
        t.tgt.tgtadm("--op", "delete", "--mode", "logicalunit", "--tid", t.tid, "--lun", "2")
        touch_lun1()
        wait_for(lambda: "2" not in os.listdir(mnt))
    assert "LUN 2 of" in m.stderr and "appeared" in m.stderr and "is gone" in m.stderr


def test_the_tree_follows_luns_added_and_removed_while_idle(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    extra = t.backing[1].parent / f"{t.iqn.rsplit(':', 1)[1]}-idle.img"
    extra.write_bytes(pattern(1 << 20, seed=9))
    interval = 1.0
    with mounted(t.url, mnt, "-o", f"nop_interval={interval:g}") as m:
        assert sorted(os.listdir(mnt)) == ["1", "by-id"]
        time.sleep(interval * 1.5)  # the first poll has its baseline
        t.tgt.add_lun(t.iqn, 2, extra)
        added = time.monotonic()
        wait_for(lambda: "2" in os.listdir(mnt), timeout=10)  # listing sends no command to the target
        assert time.monotonic() - added <= 2 * interval + 1  # two keepalive periods, and a margin
        t.tgt.tgtadm("--op", "delete", "--mode", "logicalunit", "--tid", t.tid, "--lun", "2")
        removed = time.monotonic()
        wait_for(lambda: "2" not in os.listdir(mnt), timeout=10)
        assert time.monotonic() - removed <= 2 * interval + 1
    assert "appeared" in m.stderr and "is gone" in m.stderr


@pytest.mark.parametrize("host", ["::1", "localhost"])
def test_ipv6_portal_and_host_names(tmp_path, host):
    with TgtDaemon(tmp_path / "tgt", host="::1") as tgt:
        iqn = "iqn.2026-11.test.iscsifs:v6"
        tgt.add_target(iqn)
        backing = tmp_path / "v6.img"
        backing.write_bytes(pattern(1 << 20, seed=6))
        tgt.add_lun(iqn, 1, backing)
        if host == "localhost":
            tgt.tgtadm("--op", "new", "--mode", "portal", "--param", f"portal=127.0.0.1:{tgt.port}")
            url = f"iscsi://localhost:{tgt.port}"
        else:
            url = f"iscsi://[::1]:{tgt.port}"
        r = run(*ISCSIFS, "ls", url)
        assert r.returncode == 0 and iqn in r.stdout.decode(), r.stderr
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with mounted(url, mnt):
            assert (mnt / iqn / "1").read_bytes() == backing.read_bytes()
            assert os.getxattr(mnt / iqn / "1", "user.iscsi.portal").decode() in (
                f"[::1]:{tgt.port}", f"localhost:{tgt.port}")


def test_by_id_links_name_every_disk_lun_without_colons_and_follow_the_tree(private_tgt, tmp_path):
    from iscsifs.mount.tree import by_id_name

    assert by_id_name("naa.60000000000000000e00000000010001") == "wwn-0x60000000000000000e00000000010001"
    assert by_id_name("eui.0011223344556677") == "wwn-0x0011223344556677"
    assert by_id_name("iqn.2026-11.example:disk") is None and by_id_name("t10.IET VIRTUAL-DISK") is None
    iqns = ["iqn.2026-11.test.iscsifs:byid-a", "iqn.2026-11.test.iscsifs:byid-b"]
    backing = {}
    for n, iqn in enumerate(iqns):
        private_tgt.add_target(iqn)
        backing[iqn] = tmp_path / f"byid{n}.img"
        backing[iqn].write_bytes(pattern(2 << 20, seed=90 + n))
        private_tgt.add_lun(iqn, 1, backing[iqn])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(private_tgt.url, mnt, "-o", "nop_interval=1"):
        links = sorted(os.listdir(mnt / "by-id"))
        assert len(links) == 2 and all(name.startswith("wwn-0x") and ":" not in name for name in links)
        for iqn in iqns:
            wwn = os.getxattr(mnt / iqn / "1", "user.iscsi.wwn").decode()
            link = mnt / "by-id" / by_id_name(wwn)
            assert os.readlink(link) == f"../{iqn}/1"
            assert link.read_bytes() == backing[iqn].read_bytes()
        # fio splits --filename at ':', which every IQN has; a by-id path has none
        path = mnt / "by-id" / links[0]
        r = run("fio", "--name=byid", f"--filename={path}", "--rw=randwrite", "--bs=4k", "--size=1m",
                "--ioengine=psync", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
                "--output-format=terse", timeout=120, cwd=tmp_path)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        extra = tmp_path / "byid-extra.img"
        extra.write_bytes(pattern(1 << 20, seed=99))
        private_tgt.add_lun(iqns[1], 2, extra)  # the links follow the tree
        wait_for(lambda: len(os.listdir(mnt / "by-id")) == 3, 15)
        private_tgt.tgtadm("--op", "delete", "--mode", "logicalunit", "--tid",
                           str(private_tgt.targets[iqns[1]]), "--lun", "2")
        wait_for(lambda: len(os.listdir(mnt / "by-id")) == 2, 15)

"""Every LUN shape, truthfully, against a real tgtd: identity xattrs (checked against libiscsi),
LUNs appearing, disappearing and changing size while mounted, IPv6 portals and host names."""

from __future__ import annotations

import errno
import os
import re
import time

import pytest

from support.targets import ISCSIFS, mounted, needs_fuse, pattern, run, wait_for
from iscsifs.tgt import TgtDaemon

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
                                                          "block_size", "target", "portal", "paths", "lun")}
        assert attrs["user.iscsi.target"] == t.iqn and attrs["user.iscsi.lun"] == "1"
        assert attrs["user.iscsi.portal"] == t.tgt.portal and attrs["user.iscsi.block_size"] == "4096"
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
        assert sorted(os.listdir(mnt)) == ["1"]
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
        assert os.listdir(mnt) == ["1"]
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

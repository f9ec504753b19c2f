"""Thin provisioning (SBC-3 logical block provisioning) against tgt: the provisioning xattr,
detect_zeroes=unmap giving space back, iscsifs discard and iscsifs map through the mount, each
checked on the backing file itself (st_blocks, SEEK_DATA/SEEK_HOLE)."""

from __future__ import annotations

import json
import os

import pytest

from support.targets import ISCSIFS, mounted, needs_fuse, run

pytestmark = needs_fuse

MIB = 1 << 20


def _allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def _backing_map(path) -> list[tuple[int, int, str]]:
    """The backing file's own data/hole map (what tgt's GET LBA STATUS reports from)."""
    size = os.stat(path).st_size
    out, offset = [], 0
    with open(path, "rb") as f:
        fd = f.fileno()
        while offset < size:
            try:
                data = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                data = size
            if data > offset:
                out.append((offset, data - offset, "deallocated"))
            if data >= size:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            out.append((data, hole - data, "mapped"))
            offset = hole
    return out


@pytest.fixture
def thin(make_target, tmp_path):
    """A target with a thin-provisioned 8 MiB LUN 1 (fully written) and a full 1 MiB LUN 2."""
    t = make_target({1: 8 * MIB, 2: MIB}, params={1: "thin_provisioning=1"})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    return t, mnt


def test_provisioning_is_shown_and_discard_gives_space_back(thin):
    t, mnt = thin
    with mounted(t.url, mnt):
        assert os.getxattr(mnt / "1", "user.iscsi.provisioning") == b"thin"
        assert os.getxattr(mnt / "2", "user.iscsi.provisioning") == b"full"
        before = _allocated(t.backing[1])
        assert (mnt / "1").read_bytes()[MIB : 3 * MIB] != bytes(2 * MIB)  # cached by the kernel now
        r = run(*ISCSIFS, "discard", str(mnt / "1"), "--offset", "1M", "--length", "2M")
        assert r.returncode == 0 and "discarded 2.0 MiB" in r.stdout.decode(), r.stderr
        assert _allocated(t.backing[1]) == before - 2 * MIB
        assert (mnt / "1").read_bytes()[MIB : 3 * MIB] == bytes(2 * MIB)  # the cached pages went too
        r = run(*ISCSIFS, "discard", str(mnt / "1"))  # the whole LUN
        assert r.returncode == 0 and _allocated(t.backing[1]) == 0


def test_discard_is_refused_clearly(thin, tmp_path):
    t, mnt = thin
    with mounted(t.url, mnt):
        r = run(*ISCSIFS, "discard", str(mnt / "2"))
        assert r.returncode == 7 and "cannot unmap (it is not thin-provisioned)" in r.stderr.decode()
        r = run(*ISCSIFS, "discard", str(mnt / "1"), "--offset", "100", "--length", "4096")
        assert r.returncode == 2 and "whole 512-byte blocks" in r.stderr.decode()
        r = run(*ISCSIFS, "discard", str(tmp_path))
        assert r.returncode == 2 and "not in an iscsifs mount" in r.stderr.decode()
    ro = tmp_path / "ro"
    ro.mkdir()
    with mounted(t.url, ro, "-o", "ro"):
        r = run(*ISCSIFS, "discard", str(ro / "1"))
        assert r.returncode == 7 and "read-only" in r.stderr.decode()
    assert _allocated(t.backing[1]) == 8 * MIB  # nothing was discarded


def test_detect_zeroes_unmap_deallocates_zero_writes(thin):
    t, mnt = thin
    with mounted(t.url, mnt, "-o", "detect_zeroes=unmap"):
        r = run("dd", "if=/dev/zero", f"of={mnt / '1'}", "bs=1M", "count=4", "seek=2", "oflag=direct", "conv=notrunc")
        assert r.returncode == 0, r.stderr
        assert (mnt / "1").read_bytes()[2 * MIB : 6 * MIB] == bytes(4 * MIB)
    assert _allocated(t.backing[1]) == 4 * MIB
    assert t.backing[1].read_bytes()[2 * MIB : 6 * MIB] == bytes(4 * MIB)


@pytest.mark.parametrize("mode", ["on", "off"])
def test_detect_zeroes_on_and_off_write_zeros_without_deallocating(thin, mode):
    t, mnt = thin
    with mounted(t.url, mnt, "-o", f"detect_zeroes={mode}"):
        r = run("dd", "if=/dev/zero", f"of={mnt / '1'}", "bs=1M", "count=2", "oflag=direct", "conv=notrunc")
        assert r.returncode == 0, r.stderr
    assert t.backing[1].read_bytes()[: 2 * MIB] == bytes(2 * MIB)
    assert _allocated(t.backing[1]) == 8 * MIB  # written, as zeros: still allocated


def test_map_matches_the_backing_files_own_map(thin):
    t, mnt = thin
    with mounted(t.url, mnt):
        assert run(*ISCSIFS, "discard", str(mnt / "1"), "--offset", "1M", "--length", "2M").returncode == 0
        assert run(*ISCSIFS, "discard", str(mnt / "1"), "--offset", "5M", "--length", "1M").returncode == 0
        r = run(*ISCSIFS, "map", "--json", str(mnt / "1"))
        assert r.returncode == 0, r.stderr
        extents = [(e["offset"], e["length"], e["state"]) for e in json.loads(r.stdout)["extents"]]
        assert extents == _backing_map(t.backing[1])
        assert extents == [(0, MIB, "mapped"), (MIB, 2 * MIB, "deallocated"), (3 * MIB, 2 * MIB, "mapped"),
                           (5 * MIB, MIB, "deallocated"), (6 * MIB, 2 * MIB, "mapped")]
        r = run(*ISCSIFS, "map", str(mnt / "1"))
        assert r.returncode == 0 and r.stdout.decode().rstrip().endswith("allocated 5.0 MiB of 8.0 MiB (62.5%)")
        r = run(*ISCSIFS, "map", str(mnt / "2"))  # a full LUN: every block mapped
        assert r.returncode == 0 and "allocated 1.0 MiB of 1.0 MiB (100.0%)" in r.stdout.decode()


def test_ls_json_says_how_each_lun_is_provisioned(thin):
    t, _ = thin
    r = run(*ISCSIFS, "ls", "--json", t.url)
    assert r.returncode == 0, r.stderr
    assert {row["lun"]: row["provisioning"] for row in json.loads(r.stdout)} == {0: None, 1: "thin", 2: "full"}

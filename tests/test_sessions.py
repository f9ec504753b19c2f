"""The session pool against a real tgtd: sessions a target sees after the scan, after idle_timeout,
after a read of one LUN, and with max_sessions."""

from __future__ import annotations

import time

from support.targets import mounted, needs_fuse, pattern, wait_for

pytestmark = needs_fuse


def _sessions(tgt, iqn) -> int:
    shown = tgt.tgtadm("--op", "show", "--mode", "conn", "--tid", str(tgt.targets[iqn]))
    return sum(1 for line in shown.splitlines() if line.split()[:1] == ["Session:"])


def _three_targets(tgt, tmp_path) -> list[str]:
    iqns = [f"iqn.2026-11.test.iscsifs:pool{n}" for n in range(3)]
    for n, iqn in enumerate(iqns):
        tgt.add_target(iqn)
        backing = tmp_path / f"pool{n}.img"
        backing.write_bytes(pattern(1 << 20, seed=60 + n))
        tgt.add_lun(iqn, 1, backing)
    return iqns


def test_idle_sessions_are_logged_out_and_a_read_logs_in_only_its_target(private_tgt, tmp_path):
    iqns = _three_targets(private_tgt, tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(private_tgt.url, mnt, "-o", "idle_timeout=2"):
        assert sorted(p.name for p in mnt.iterdir()) == sorted([*iqns, "by-id"])  # the scan saw every target
        wait_for(lambda: [_sessions(private_tgt, i) for i in iqns] == [0, 0, 0], 10)
        assert (mnt / iqns[1] / "1").stat().st_size == 1 << 20  # stat needs no session
        assert [_sessions(private_tgt, i) for i in iqns] == [0, 0, 0]
        with open(mnt / iqns[1] / "1", "rb", buffering=0) as f:
            assert f.read(4096) == pattern(4096, seed=61)
            assert [_sessions(private_tgt, i) for i in iqns] == [0, 1, 0]
            time.sleep(3)  # an open file keeps its session past idle_timeout
            assert _sessions(private_tgt, iqns[1]) == 1
        wait_for(lambda: _sessions(private_tgt, iqns[1]) == 0, 10)


def test_max_sessions_bounds_the_logins_of_a_portal(private_tgt, tmp_path):
    iqns = _three_targets(private_tgt, tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(private_tgt.url, mnt, "-o", "max_sessions=1"):
        assert sum(_sessions(private_tgt, i) for i in iqns) == 1
        for n, iqn in enumerate(iqns):  # each read takes the one session over
            assert (mnt / iqn / "1").read_bytes() == pattern(1 << 20, seed=60 + n)
            assert [_sessions(private_tgt, i) for i in iqns] == [int(i == iqn) for i in iqns]

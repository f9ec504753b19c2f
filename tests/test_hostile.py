"""Nothing a target sends ends the mount: the mount stack against a hostile target
(``support.hostile``: disks, tape drives and a changer), driven by hypothesis. The suite's summary
prints how many answers it sent."""

from __future__ import annotations

import errno
import mmap
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.hostile import TALLY, run
from support.pduproxy import PduProxy
from support.targets import is_mounted, mounted, needs_fuse, pattern, wait_for


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), hostility=st.sampled_from([0.02, 0.1, 0.3, 1.0]))
def test_a_hostile_target_never_ends_the_mount(seed, hostility):
    run(seed, hostility)


def test_the_hostile_scenarios_exercise_the_stack():
    # On its own (whatever else ran): a fixed set of scenarios must get past the scan into file
    # I/O, against answers that are really spoiled, or the test above would prove nothing.
    # The tape drives and the changer too: tape blocks written must come back where the answers
    # were left alone.
    def counts() -> tuple[int, ...]:
        return (TALLY.answers, TALLY.hostile, TALLY.operations, TALLY.failed_operations, TALLY.scans_refused,
                TALLY.device_operations, TALLY.blocks_read_back)

    start = counts()
    for seed in range(40):
        run(seed, 0.1)
    answers, hostile, operations, failed, refused, device_operations, read_back = (
        now - then for now, then in zip(counts(), start, strict=True))
    assert answers >= 1500 and hostile >= 100, TALLY
    assert operations >= 500 and failed >= 10 and operations - failed >= 400, TALLY
    assert refused < 40, TALLY
    assert device_operations >= 1000 and read_back >= 50, TALLY


# -- the same against real tgt, through a proxy that spoils its answers, under a live mount ---------

IQN = "iqn.2026-11.test.iscsifs:spoiled"


@needs_fuse
def test_answers_spoiled_on_the_way_from_tgt_never_end_a_live_mount(private_tgt, tmp_path):
    backing = tmp_path / "lun1.img"
    content = pattern(4 << 20, seed=19)
    backing.write_bytes(content)
    private_tgt.add_target(IQN)
    private_tgt.add_lun(IQN, 1, backing)
    proxy = PduProxy(("127.0.0.1", private_tgt.port))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with mounted(f"iscsi://{proxy.portal}/{IQN}", mnt, "-o",
                     "nop_interval=1,header_digest=none,data_digest=none") as m:
            # The report: REPORT LUNS data cut to 3 bytes at an idle poll unmounted the mount.
            proxy.cut[0xA0] = 3
            wait_for(lambda: proxy.spoiled.get(0xA0, 0) >= 3, timeout=20)
            assert m.proc.poll() is None and is_mounted(mnt)
            assert (mnt / "1").read_bytes() == content
            # A rescan whose INQUIRY answers are cut: the LUN shown stays, the new one waits.
            del proxy.cut[0xA0]
            proxy.cut[0x12] = 2
            private_tgt.add_lun(IQN, 2, tmp_path / "lun2.img", size=1 << 20)
            wait_for(lambda: proxy.spoiled.get(0x12, 0) >= 2, timeout=20)
            assert sorted(os.listdir(mnt)) == ["1", "by-id"] and m.proc.poll() is None
            # Once the answers are whole again, the next poll's rescan shows it.
            del proxy.cut[0x12]
            wait_for(lambda: "2" in os.listdir(mnt), timeout=20)
            # Read data cut short: that read fails with EIO, the next one succeeds.
            proxy.cut[0x28] = proxy.cut[0x88] = 100
            fd = os.open(mnt / "1", os.O_RDONLY | os.O_DIRECT)
            try:
                buf = mmap.mmap(-1, 1 << 16)
                with pytest.raises(OSError) as failed:
                    os.preadv(fd, [buf], 0)
                assert failed.value.errno == errno.EIO
                del proxy.cut[0x28], proxy.cut[0x88]
                assert os.preadv(fd, [buf], 0) == 1 << 16 and buf[:] == content[: 1 << 16]
            finally:
                os.close(fd)
            assert m.proc.poll() is None and is_mounted(mnt)
        # The REPORT LUNS answers were cut (spoiled[0xA0] above): an idle poll's failure is a debug
        # line only. The rescan's cut INQUIRY is a warning naming the LUN it skipped.
        assert "INQUIRY data of 2 bytes" in m.stderr, m.stderr
        assert "LUN 2 of " + IQN + " skipped" in m.stderr and "Traceback" not in m.stderr, m.stderr
    finally:
        proxy.close()

"""Metrics a monitoring system reads: ``iscsifs stats --prometheus`` and ``-o metrics_file=``,
parsed back with prometheus_client's own parser and checked against the I/O the test did."""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.targets import ISCSIFS, mounted, needs_fuse, run, wait_for

pytestmark = needs_fuse

MIB = 1 << 20


def families(text: str) -> dict[str, list]:
    """Every sample, by metric family name (a histogram's _bucket/_sum/_count in its family)."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples, name: str, **labels) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == str(v) for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_prometheus_metrics_count_what_was_done(make_target, tmp_path):
    t = make_target({1: 4 * MIB, 2: MIB})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    metrics = tmp_path / "metrics" / "iscsifs.prom"
    metrics.parent.mkdir()
    with mounted(t.url, mnt, "-o", f"metrics_file={metrics},nop_interval=1"):
        with open(mnt / "1", "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        fd = os.open(mnt / "1", os.O_RDONLY | os.O_DIRECT)
        try:
            for i in range(16):
                os.pread(fd, 64 << 10, i * (64 << 10))  # 1 MiB in 64 KiB O_DIRECT reads
        finally:
            os.close(fd)
        fd = os.open(mnt / "2", os.O_WRONLY | os.O_DIRECT)
        try:
            buf = bytearray(os.urandom(4096))
            for i in range(8):
                os.pwrite(fd, memoryview(buf), i * 4096)
        finally:
            os.close(fd)
        r = run(*ISCSIFS, "stats", "--prometheus", str(mnt))
        assert r.returncode == 0, r.stderr
        text = r.stdout.decode()
        got = families(text)
        commands = got["iscsifs_commands"]  # the parser drops _total from a counter's family name
        reads = value(commands, "iscsifs_commands_total", target=t.iqn, lun=1, op="READ")
        writes = value(commands, "iscsifs_commands_total", target=t.iqn, lun=2, op="WRITE")
        assert reads >= 16 and writes == 8
        read_bytes = value(got["iscsifs_bytes"], "iscsifs_bytes_total", target=t.iqn, lun=1, direction="read")
        assert read_bytes >= MIB
        assert value(got["iscsifs_bytes"], "iscsifs_bytes_total", target=t.iqn, lun=2, direction="write") == 8 * 4096
        latency = got["iscsifs_command_duration_seconds"]
        assert value(latency, "iscsifs_command_duration_seconds_count", target=t.iqn, lun=1, op="READ") == reads
        buckets = [(float(s.labels["le"]), s.value) for s in latency if s.name.endswith("_bucket")
                   and s.labels["lun"] == "1" and s.labels["op"] == "READ"]
        assert [b for _, b in buckets] == sorted(b for _, b in buckets)  # cumulative
        assert buckets[-1] == (float("inf"), reads)
        assert 0 < value(latency, "iscsifs_command_duration_seconds_sum", target=t.iqn, lun=1, op="READ") < 60
        assert value(got["iscsifs_path_up"], "iscsifs_path_up", target=t.iqn, portal=t.tgt.portal) == 1
        assert value(got["iscsifs_reconnects"], "iscsifs_reconnects_total", target=t.iqn) == 0
        polls = value(got["iscsifs_loop_polls"], "iscsifs_loop_polls_total")  # 0 with session workers
        assert 0 <= value(got["iscsifs_loop_polls_answered"], "iscsifs_loop_polls_answered_total") <= polls
        # There, though counted only where the loop polls (tests/test_mount.py counts them).
        assert value(got["iscsifs_own_answers"], "iscsifs_own_answers_total") <= reads + writes + 64
        assert "# TYPE iscsifs_command_duration_seconds histogram" in text
        # The file is rewritten every nop_interval with the same figures, whole each time.
        wait_for(lambda: metrics.exists(), 10)
        time.sleep(2.5)
        filed = families(metrics.read_text())
        assert value(filed["iscsifs_commands"], "iscsifs_commands_total", target=t.iqn, lun=2, op="WRITE") == 8
        assert [p.name for p in metrics.parent.iterdir()] == ["iscsifs.prom"]  # no temporary file left
    # Unmounting writes the last figures: every path logged out.
    final = families(metrics.read_text())
    assert value(final["iscsifs_path_up"], "iscsifs_path_up", target=t.iqn, portal=t.tgt.portal) == 0


def test_metrics_options_are_checked(make_target, tmp_path):
    t = make_target({1: MIB})
    r = run(*ISCSIFS, "-o", f"metrics_file={tmp_path}/no/such/dir/x.prom", t.url, str(tmp_path))
    assert r.returncode == 2 and "does not exist" in r.stderr.decode()
    r = run(*ISCSIFS, "stats", "--prometheus", "--json", str(tmp_path))
    assert r.returncode == 2


@pytest.mark.parametrize("name", ['quote"d', "back\\slash", "new\nline"])
def test_label_values_are_escaped(name):
    from iscsifs.block.stats import Stats, prometheus_text

    stats = Stats()
    stats.record("READ", 0.001, read=512, target=name, lun=3)
    got = families(prometheus_text(stats.snapshot()))
    assert value(got["iscsifs_commands"], "iscsifs_commands_total", target=name, lun=3, op="READ") == 1


def test_the_mount_totals_are_the_sums_of_the_per_lun_counts():
    from iscsifs.block.stats import Stats

    stats = Stats()
    stats.record("READ", 0.0001, read=4096, target="t1", lun=1)
    stats.record("READ", 0.0100, read=4096, target="t2", lun=0)
    stats.record("WRITE", 0.0010, written=512, ok=False, target="t1", lun=1)
    snap = stats.snapshot()
    assert snap["commands"] == 3 and snap["commands_by_kind"] == {"READ": 2, "WRITE": 1}
    assert (snap["bytes_read"], snap["bytes_written"], snap["errors"]) == (8192, 512, 1)
    latency = snap["latency_us"]
    assert latency["p50"] == 1023 and latency["max"] == 10000 and latency["p99"] == 10000  # log2 buckets
    assert [(o["target"], o["lun"], o["op"], o["commands"]) for o in snap["by_lun"]] == [
        ("t1", 1, "READ", 1), ("t1", 1, "WRITE", 1), ("t2", 0, "READ", 1)]

"""Statistics belong to whoever makes them (a mount, a library user): two ``Stats`` never share a
count, a LUN opened without one counts nowhere, and the gauges a mount hands in at construction
are what a snapshot reports."""

from __future__ import annotations

import trio
from iscsifs.block.lun import Lun
from iscsifs.block.stats import Stats
from iscsifs.proto.connection import ScsiResult
from iscsifs.scsi.response import Capacity

BS = 512


class Zeros:
    """An executor whose LUNs read as zeros and take every write."""

    def __init__(self, target_name: str) -> None:
        self.target_name = target_name

    async def execute(self, lun: int, cdb: bytes, *, data_out=None, expected_in: int = 0, into=None) -> ScsiResult:
        await trio.lowlevel.checkpoint()
        return ScsiResult(0, b"", bytes(expected_in))


def lun_on(target: str, stats: Stats | None) -> Lun:
    return Lun(Zeros(target), 1, Capacity(64, BS), stats=stats)


def test_two_stats_objects_do_not_share_counts():
    a, b = Stats(), Stats()

    async def main() -> None:
        lun_a, lun_b = lun_on("iqn.2026-11.test:a", a), lun_on("iqn.2026-11.test:b", b)
        for i in range(3):
            await lun_a.read(i * BS, BS)
        await lun_b.write(0, bytes(BS))
        await lun_on("iqn.2026-11.test:none", None).read(0, BS)  # counted nowhere

    trio.run(main)
    snap_a, snap_b = a.snapshot(), b.snapshot()
    assert snap_a["commands_by_kind"] == {"READ": 3} and snap_a["bytes_read"] == 3 * BS
    assert snap_a["bytes_written"] == 0
    assert snap_b["commands_by_kind"] == {"WRITE": 1} and snap_b["bytes_written"] == BS
    assert snap_b["bytes_read"] == 0
    assert {o["target"] for o in snap_a["by_lun"]} == {"iqn.2026-11.test:a"}
    assert {o["target"] for o in snap_b["by_lun"]} == {"iqn.2026-11.test:b"}
    assert Stats().snapshot()["commands"] == 0  # a new one starts from nothing


class Gauges:
    def sessions(self) -> int:
        return 2

    def reconnects_by_target(self) -> dict[str, int]:
        return {"t1": 1, "t2": 3}

    def paths(self) -> dict[str, list[dict[str, object]]]:
        return {"t1": [{"portal": "127.0.0.1:3260", "state": "logged_in", "active": True, "isid": "x"}]}

    def reservations(self) -> dict[str, dict[str, object]]:
        return {}

    def workers(self) -> int:
        return 4

    def worker_restarts(self) -> int:
        return 1

    def loop_polls(self) -> tuple[int, int]:
        return 10, 9

    def own_answers(self) -> int:
        return 7


def test_a_snapshot_reports_the_gauges_it_was_made_with():
    snap = Stats(Gauges()).snapshot()
    assert (snap["sessions"], snap["reconnects"], snap["workers"], snap["worker_restarts"]) == (2, 4, 4, 1)
    assert snap["reconnects_by_target"] == {"t1": 1, "t2": 3}
    assert (snap["polls"], snap["polls_answered"], snap["own_answers"]) == (10, 9, 7)
    assert snap["paths"]["t1"][0]["state"] == "logged_in"
    bare = Stats().snapshot()  # no mount reports to it
    assert (bare["sessions"], bare["reconnects"], bare["workers"], bare["paths"]) == (0, 0, 0, {})

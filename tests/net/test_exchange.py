"""What the FUSE process does with a session worker's unanswered commands when the worker dies:
those whose budget is spent fail, those of a LUN forgotten since they were issued (its file
went) fail with ENXIO and are not sent again, the rest go to the worker started in its place."""

from __future__ import annotations

import errno

import trio
from iscsifs.net.api import LunForgotten
from iscsifs.net.exchange import Exchange
from iscsifs.proto.policy import RecoveryPolicy

READ = bytes([0x28]) + bytes(9)


async def test_a_command_of_a_lun_forgotten_since_is_not_sent_again():
    sent: list[object] = []
    exchange = Exchange(arena=None, next_tag=iter(range(1, 100)).__next__, send=sent.append,  # type: ignore[arg-type]
                        on_event=lambda event: None)
    outcomes: dict[int, object] = {}
    forgotten = {(1, 3): 0, (1, 4): 0}

    async def issue(lun: int) -> None:
        try:
            await exchange.execute(1, lun, READ, None, 512, None, RecoveryPolicy(), "iqn.t", forgotten[(1, lun)])
        except Exception as exc:  # noqa: BLE001 - what it ended with is the test's
            outcomes[lun] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(issue, 3)
        nursery.start_soon(issue, 4)
        while len(exchange) < 2:
            await trio.sleep(0)
        forgotten[(1, 3)] += 1  # LUN 3's file went while its worker was dying
        exchange.worker_died("killed by SIGKILL", lambda sid, lun: forgotten[(sid, lun)])
        assert len(exchange.frames()) == 1  # LUN 4's command goes to the next worker; LUN 3's does not
        exchange.fail_all(RuntimeError("end of test"))
    assert isinstance(outcomes[3], LunForgotten) and outcomes[3].errno == errno.ENXIO
    assert isinstance(outcomes[4], RuntimeError)


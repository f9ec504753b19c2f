"""The end-of-turn hook: what is held is sent once, before the loop waits for I/O, after every
task of the turn ran; one hook per trio run; a sender that raises is logged and does not take
the hook (and every later write) down with it."""

from __future__ import annotations

import logging

import trio
from iscsifs.net.turnend import turn_end


class Sender:
    def __init__(self, log: list[str], name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail = log, name, fail

    def send_held(self) -> None:
        self.log.append(f"sent {self.name}")
        if self.fail:
            raise RuntimeError("a bug in a sender")


async def test_held_senders_go_after_the_turns_tasks_and_a_raising_one_does_not_stop_the_hook(caplog):
    assert turn_end() is turn_end()  # one per run
    log: list[str] = []

    async def task(name: str, sender: Sender) -> None:
        turn_end().hold(sender)
        log.append(f"ran {name}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task, "a", Sender(log, "a", fail=True))
        nursery.start_soon(task, "b", Sender(log, "b"))
    assert sorted(log[:2]) == ["ran a", "ran b"] and sorted(log[2:]) == ["sent a", "sent b"]
    with trio.fail_after(1):
        while "a bug in a sender" not in caplog.text:  # logged from a task, soon after
            await trio.sleep(0)
    assert caplog.records[0].levelno == logging.ERROR
    log.clear()
    turn_end().hold(Sender(log, "c"))
    await trio.sleep(0)
    assert log == ["sent c"]  # the hook is still there


def test_each_trio_run_has_its_own_hook():
    hooks = [trio.run(_hook) for _ in range(2)]
    assert hooks[0] is not hooks[1]


async def _hook() -> object:
    return turn_end()

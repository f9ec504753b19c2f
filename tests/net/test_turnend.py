"""The end-of-turn hook: what is held is sent once, before the loop waits for I/O, after every
task of the turn ran; one hook per trio run; a sender that raises is logged and does not take
the hook (and every later write) down with it. Where asked, it polls the watched descriptors
before the loop sleeps, only while the loop's sleeps are short."""

from __future__ import annotations

import logging
import os
import socket

import trio
import trio.testing
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


async def test_the_loop_polls_before_it_sleeps_only_while_its_sleeps_are_short():
    hook = turn_end()
    a, b = socket.socketpair()
    try:
        hook.watch(a.fileno())
        hook.poll_before_sleep(10_000)  # 10 ms: sleeps of 0.2 ms stay under it on a busy machine
        await trio.sleep(0.0002)
        assert hook.polled == 0  # closed until sleeps have been seen short

        for _ in range(80):  # the average of the sleeps falls below 10 ms, and polling starts
            await trio.sleep(0.0002)
        assert hook.polled > 0 and hook.polled_ready == 0  # nothing to read: each ran to the timer

        polled = hook.polled
        hook.waits_ns = 0  # open, whatever a stall of this machine did to the average meanwhile
        b.send(b"x")  # ready while nobody waits for it: the poll ends at once, the sleep does not
        await trio.sleep(0.0002)
        assert hook.polled > polled and hook.polled_ready == 1
        a.recv(1)

        # Called as trio calls it: after a wake from the hook (here a held write's, as a full
        # socket's) the loop will not sleep, so it polls for nothing.
        class Waking:
            def send_held(self) -> None:
                hook.wake(lambda: None)

        polled = hook.polled
        hook.waits_ns = 0
        hook.hold(Waking())
        hook.before_io_wait(0.01)
        assert hook.polled == polled
        hook.after_io_wait(0.01)
        hook.waits_ns = 0
        hook.before_io_wait(0.0001)  # no wake since the last sleep: polled, up to the timeout
        assert hook.polled == polled + 1
        hook.after_io_wait(0.0001)

        await trio.sleep(0.5)  # one long sleep: the average is then above 10 ms, and polling stops
        polled = hook.polled
        await trio.sleep(0.0002)
        assert hook.polled == polled

        for _ in range(80):
            await trio.sleep(0.0002)
        assert hook.polled > polled  # short sleeps again
        polled = hook.polled
        hook.unwatch(a.fileno())  # nothing watched: nothing to poll
        for _ in range(10):
            await trio.sleep(0.0002)
        assert hook.polled == polled
        hook.watch(a.fileno())
        hook.poll_before_sleep(0)  # never
        for _ in range(10):
            await trio.sleep(0.0002)
        assert hook.polled == polled
    finally:
        hook.unwatch(a.fileno())
        a.close()
        b.close()


async def test_a_poll_that_fails_stops_polling_and_not_the_hook(caplog):
    hook = turn_end()

    class Broken:
        def poll(self, timeout: int) -> list[tuple[int, int]]:
            raise OSError("a poll that fails")

    a, b = socket.socketpair()
    try:
        hook.watch(a.fileno())
        hook._poll = Broken()  # type: ignore[assignment]
        hook.poll_before_sleep(10_000)
        hook.waits_ns = 0  # as after short sleeps
        await trio.sleep(0.001)
        with trio.fail_after(1):
            while "polling before the loop sleeps stopped" not in caplog.text:
                await trio.sleep(0)
        assert hook.poll_ns == 0
        log: list[str] = []
        hook.hold(Sender(log, "d"))
        await trio.sleep(0)
        assert log == ["sent d"]  # the hook is still there
    finally:
        hook._watched.clear()
        a.close()
        b.close()


async def test_a_vacant_descriptor_gets_a_task_before_the_loop_sleeps_or_after_two_busy_turns(caplog):
    """``vacant``: nobody waits on a descriptor for now. The loop may not sleep so: the hook
    wakes a task for it first (and ends that sleep at once), unless one came to wait meanwhile
    (``filled``). A loop that keeps busy does not sleep: two turns, then the task anyway."""
    hook = turn_end()
    filled: list[str] = []

    def fill(name: str, woke: bool = True) -> bool:
        filled.append(name)
        return woke

    woken = trio.Event()
    ran: list[float] = []

    async def task() -> None:  # the one a fill wakes
        await woken.wait()
        ran.append(trio.current_time())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task)
            await trio.testing.wait_all_tasks_blocked()
            hook.vacant(1000, lambda: fill("old"))
            # One vacancy a descriptor, with the last fill given: its number may be another file's now.
            hook.vacant(1000, lambda: fill("a") and woken.set() is None)
            start = trio.current_time()
            await trio.sleep(0.5)  # the loop would sleep 0.5 s: the hook wakes the task, and ends that sleep
    assert filled == ["a"] and ran[0] - start < 0.25  # the woken task did not wait for the sleep's end

    hook.vacant(1001, lambda: fill("b"))
    hook.filled(1001)  # a task came to wait on it
    await trio.sleep(0.001)
    assert filled == ["a"]

    hook.vacant(1002, lambda: fill("c"))
    hook.before_io_wait(0)  # busy: the loop does not sleep
    assert filled == ["a"]
    hook.before_io_wait(0)
    assert filled == ["a", "c"]  # the second busy turn

    def broken() -> bool:
        raise RuntimeError("a bug in a fill")

    hook.vacant(1003, broken)
    await trio.sleep(0.001)
    with trio.fail_after(1):
        while "waking a task to wait on a descriptor failed" not in caplog.text:
            await trio.sleep(0)
    log: list[str] = []
    hook.hold(Sender(log, "e"))
    await trio.sleep(0)
    assert log == ["sent e"]  # the hook is still there


async def test_polling_a_vacancy_waits_while_a_descriptor_a_task_waits_on_is_ready():
    """Polling, the sleep ends on a ready descriptor a task waits on (``wait_readable``): the
    loop does not sleep, so the vacancy can wait for the next turn's end. Not when the ready one
    is the vacant descriptor itself, nor when the poll ran out."""
    hook = turn_end()
    a, b = socket.socketpair()
    r, w = os.pipe()
    filled: list[int] = []
    try:
        hook.watch(a.fileno())
        hook.watch(r)
        hook.poll_before_sleep(10_000)
        woken: list[bool] = []

        async def waiter() -> None:
            await hook.wait_readable(a.fileno(), a)
            woken.append(True)

        with trio.fail_after(5):
            await _vacancy_beside_a_waiter(hook, waiter, a, b, r, w, filled)
        assert woken == [True]
    finally:
        hook.unwatch(a.fileno())
        hook.unwatch(r)
        a.close()
        b.close()
        os.close(r)
        os.close(w)


async def _vacancy_beside_a_waiter(hook, waiter, a, b, r, w, filled) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        hook.vacant(r, lambda: filled.append(r) is None)
        b.send(b"x")  # ready, and a task waits on it
        hook.waits_ns = 0
        hook.before_io_wait(0.01)  # as trio calls it
        hook.after_io_wait(0.01)
        assert filled == [] and hook.polled_ready
        os.write(w, b"x")  # the vacant descriptor ready: a task must read it
        hook.waits_ns = 0
        hook.before_io_wait(0.01)
        hook.after_io_wait(0.01)
        assert filled == [r]
        os.read(r, 1)
        hook.vacant(r, lambda: filled.append(-r) is None)
        a.recv(1)
        hook.waits_ns = 0
        hook.before_io_wait(0.001)  # nothing ready: the poll runs out, the loop would sleep
        hook.after_io_wait(0.001)
        assert filled == [r, -r]
        b.send(b"y")

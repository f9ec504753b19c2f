"""The wait that stands in for pyfuse3's: True at once while a request is queued, a real wait
when none is, one waiter at a time, and False for good once the loop is told to end, even with
requests still queued (a task that read one then would drop it unanswered). A pipe stands in
for /dev/fuse; pyfuse3 itself is left alone unless its version is one the wait was written for."""

from __future__ import annotations

import os
import select

import pyfuse3
import trio
import trio.testing
from iscsifs.mount.fuseloop import TAKEN_PER_TURN, FuseWait
from iscsifs.net.turnend import turn_end


async def test_queued_requests_are_taken_without_waiting_and_none_after_the_end():
    r, w = os.pipe()
    try:
        wait = FuseWait(r)
        os.write(w, b"x")  # a request queued
        steps = []

        async def other() -> None:
            steps.append("other ran")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            assert await wait.wait() is True
            assert not steps  # no checkpoint on the way: no loop turn
        woken: list[bool] = []

        async def waiter() -> None:
            woken.append(await wait.wait())

        os.read(r, 1)  # nothing queued now
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)  # parked behind the first, which waits on the descriptor
            await trio.sleep(0.05)
            assert woken == []
            os.write(w, b"x")
            await trio.sleep(0.05)
            assert woken == [True, True]  # the second finds it still queued
        async with trio.open_nursery() as nursery:
            os.read(r, 1)
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            await trio.sleep(0.05)
            wait.ending = True  # what terminate() does, with pyfuse3's notify_closing below
            os.write(w, b"x")  # queued, but the loop is ending
            trio.lowlevel.notify_closing(r)
        assert woken[2:] == [False, False]
        assert await wait.wait() is False  # and from now on
        os.read(r, 1)
        with trio.fail_after(1):  # with nothing queued: at once, not a wait no one will end
            assert await wait.wait() is False
    finally:
        os.close(r)
        os.close(w)


async def test_a_queued_request_is_taken_at_once_while_another_task_waits_for_one():
    r, w = os.pipe()
    try:
        wait = FuseWait(r)
        woken: list[bool] = []
        steps = []

        async def waiter() -> None:
            woken.append(await wait.wait())

        async def other() -> None:
            steps.append("other ran")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.05)  # waiting on the descriptor
            os.write(w, b"x")
            nursery.start_soon(other)
            # A task back from answering a request takes the next without a loop turn, rather
            # than hand it to the waiter (which is woken too: the pipe stays readable here).
            assert await wait.wait() is True
            assert not steps
        assert woken == [True]
    finally:
        os.close(r)
        os.close(w)


async def test_a_waiter_woken_for_a_request_another_task_took_waits_again():
    """pyfuse3 reads /dev/fuse blocking: a wait that said True with nothing queued would stall
    the whole loop in read(2). Who runs first after the wake-up is trio's coin toss, so rounds."""
    r, w = os.pipe()
    probe = select.poll()
    probe.register(r, select.POLLIN)
    try:
        wait = FuseWait(r)
        taken_first = 0
        for _ in range(40):
            while probe.poll(0):
                os.read(r, 1)
            seen: list[bool] = []

            async def waiter(seen: list[bool] = seen) -> None:
                ok = await wait.wait()
                queued = bool(probe.poll(0))
                seen.append(ok and queued)
                if queued:
                    os.read(r, 1)  # as pyfuse3 reads it

            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(waiter)
                    await trio.sleep(0.01)  # parked in wait_readable
                    os.write(w, b"x")
                    await trio.sleep(0)  # the loop wakes the waiter: it and this task run next
                    if probe.poll(0):  # this task ran first: it takes the request
                        assert await wait.wait() is True
                        os.read(r, 1)
                        taken_first += 1
                        await trio.sleep(0.01)
                        os.write(w, b"x")  # the waiter's own
            assert seen == [True]
        assert taken_first  # the case was met (each round is a coin toss)
    finally:
        os.close(r)
        os.close(w)


async def test_requests_that_never_wait_leave_the_loop_a_turn_every_so_many():
    """Handlers such as getattr answer without waiting: with requests kept queued, the tasks
    taking them at once would otherwise hold trio's loop (the iSCSI readers, the
    deadlines, the signals) for as long as requests come."""
    r, w = os.pipe()
    try:
        wait = FuseWait(r)
        total = 4 * TAKEN_PER_TURN + 5
        os.write(w, b"x" * total)
        taken = 0
        seen: list[int] = []  # how many were taken each time another task got to run

        async def task() -> None:  # as pyfuse3's: wait, read, answer (no await), again
            nonlocal taken
            while True:
                assert await wait.wait()
                os.read(r, 1)
                taken += 1
                if taken == total:
                    nursery.cancel_scope.cancel()  # the other task waits for more

        async def other() -> None:
            while taken < total:
                seen.append(taken)
                await trio.sleep(0)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(task)
                nursery.start_soon(task)
                nursery.start_soon(other)
        # Between two of its steps, the other task sees one turn's takes, or two when it ran
        # first in one turn and last in the next (trio shuffles each turn's tasks).
        steps = [b - a for a, b in zip([0, *seen], [*seen, total], strict=True)]
        assert max(steps) <= 2 * TAKEN_PER_TURN and len(seen) >= 3
    finally:
        os.close(r)
        os.close(w)


def test_pyfuse3_is_left_alone_when_its_version_is_not_known(monkeypatch):
    original = pyfuse3._wait_fuse_readable
    monkeypatch.setattr(pyfuse3, "__version__", "3.6.0")
    assert FuseWait.install() is None
    assert pyfuse3._wait_fuse_readable is original


def test_without_a_dev_fuse_descriptor_pyfuse3_is_left_alone(monkeypatch):
    original = pyfuse3._wait_fuse_readable
    monkeypatch.setattr(pyfuse3, "__version__", "3.5.0")
    assert FuseWait.install() is None  # no mount in this process
    assert pyfuse3._wait_fuse_readable is original


async def test_the_task_woken_for_a_request_hands_the_wait_over_at_once_only_where_the_loop_does_not_poll():
    """One task waits on /dev/fuse, the others park. Not polling, the loop sleeps next: the task
    woken for a request wakes an idle one to wait in its place. Polling, it leaves the wait
    vacant: the task back from its answer waits again itself (at queue depth 1, no turn spent on a
    hand-over), and an idle task is woken only if the loop would sleep with nobody waiting."""
    r, w = os.pipe()
    hook = turn_end()
    try:
        for polling in (False, True):
            wait = FuseWait(r)
            hook.poll_before_sleep(10_000 if polling else 0)
            seen: list[tuple[str, bool, int]] = []

            async def task(name: str, wait: FuseWait = wait, seen: list[tuple[str, bool, int]] = seen) -> None:
                while True:
                    assert await wait.wait()
                    seen.append((name, wait._armed, len(wait._idle)))  # as the wait returned
                    os.read(r, 1)  # as pyfuse3 reads it; then back at once, as at queue depth 1

            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(task, "first")
                    await trio.testing.wait_all_tasks_blocked()
                    assert wait._armed  # the first waits on the descriptor
                    nursery.start_soon(task, "second")
                    await trio.testing.wait_all_tasks_blocked()  # the second parks
                    hook.waits_ns = 0  # short sleeps: the gate open
                    os.write(w, b"x")
                    while not seen:
                        await trio.sleep(0)
                    await trio.testing.wait_all_tasks_blocked()
                    # The first took it; nobody waited on the descriptor then. Not polling, the
                    # second was woken at once to take its place (0 parked); polling, it stayed
                    # parked, and the first, back at once, waits again itself.
                    assert seen[0] == ("first", False, 0 if not polling else 1)
                    assert wait._armed  # someone waits again either way
                    assert len(wait._idle) == 1  # and one is parked: the second, or the first
                    nursery.cancel_scope.cancel()
            hook.filled(r)
    finally:
        hook.poll_before_sleep(0)
        os.close(r)
        os.close(w)


async def test_polling_an_idle_task_waits_while_the_one_woken_handles_its_request():
    r, w = os.pipe()
    hook = turn_end()
    try:
        wait = FuseWait(r)
        hook.poll_before_sleep(10_000)
        returned: list[str] = []

        async def task(name: str) -> None:
            while True:
                assert await wait.wait()
                returned.append(name)
                os.read(r, 1)
                await trio.sleep(0.2)  # a slow command: the loop sleeps meanwhile

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(task, "first")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(task, "second")
                await trio.testing.wait_all_tasks_blocked()
                hook.waits_ns = 0
                os.write(w, b"x")
                while not returned:
                    await trio.sleep(0.01)
                os.write(w, b"y")  # while the first handles its request
                await trio.sleep(0.1)
                assert returned == ["first", "second"]  # read by the idle one, not after the first's 0.2 s
                nursery.cancel_scope.cancel()
    finally:
        hook.poll_before_sleep(0)
        os.close(r)
        os.close(w)

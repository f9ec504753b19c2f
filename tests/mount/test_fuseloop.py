"""The wait that stands in for pyfuse3's: True at once while a request is queued, a real wait
when none is, one waiter at a time, and False for good once the loop is told to end, even with
requests still queued (a task that read one then would drop it unanswered). A pipe stands in
for /dev/fuse; pyfuse3 itself is left alone unless its version is one the wait was written for."""

from __future__ import annotations

import os

import pyfuse3
import trio
from iscsifs.mount.fuseloop import FuseWait


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
            nursery.start_soon(waiter)  # parked on the lock behind the first
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

"""Byte ranges (the zeros a file's holes read as) against a set of offsets as the model, and the
block-range lock: overlapping ranges wait for each other, others never do."""

from __future__ import annotations

import itertools

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsifs.block.ranges import ByteRanges, RangeLock

spans = st.tuples(st.integers(0, 200), st.integers(0, 200)).map(sorted)
operations = st.lists(st.tuples(st.booleans(), spans), max_size=30)


@settings(max_examples=300, deadline=None)
@given(operations, spans)
def test_byte_ranges_hold_exactly_the_bytes_added_and_not_removed(ops, query):
    ranges, model = ByteRanges(), set()
    for add, (start, end) in ops:
        if add:
            ranges.add(start, end)
            model |= set(range(start, end))
        else:
            ranges.remove(start, end)
            model -= set(range(start, end))
    held = list(ranges)
    assert {b for a, z in held for b in range(a, z)} == model
    assert bool(ranges) == bool(model)
    # Kept sorted, disjoint and merged: no two ranges touch.
    assert all(a < z for a, z in held) and all(z1 < a2 for (_, z1), (a2, _) in itertools.pairwise(held))
    start, end = query
    covered = {b for a, z in ranges.overlapping(start, end) for b in range(a, z)}
    assert covered == model & set(range(start, end))


async def test_overlapping_block_ranges_wait_and_disjoint_ones_do_not(autojump_clock):
    lock = RangeLock()
    order: list[str] = []

    async def hold(name: str, first: int, last: int, seconds: float) -> None:
        async with lock.hold(first, last):
            order.append(f"{name}+")
            await trio.sleep(seconds)
            order.append(f"{name}-")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, "a", 0, 9, 1.0)
        await trio.sleep(0.1)
        nursery.start_soon(hold, "b", 9, 12, 1.0)  # shares block 9 with a: waits for it
        nursery.start_soon(hold, "c", 10, 20, 0.1)  # overlaps b only, which waits: c runs now
        await trio.sleep(0.5)
        assert order == ["a+", "c+", "c-"]
    assert order == ["a+", "c+", "c-", "a-", "b+", "b-"]
    assert trio.current_time() == 2.0  # b waited for a (until 1.0), and only for a


holds = st.lists(st.tuples(spans, st.integers(0, 3), st.booleans()), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(holds)
def test_block_range_locks_never_overlap_and_survive_cancelled_waiters(plan):
    """Tasks hold random ranges for random times, some cancelled while they wait or hold: no
    block is ever held twice, every task not cancelled gets its range, and the lock is empty
    after (a cancelled waiter leaves nothing behind)."""
    lock = RangeLock()
    holding: set[int] = set()
    got: list[int] = []

    async def hold(n: int, first: int, last: int, ticks: int) -> None:
        async with lock.hold(first, last):
            blocks = set(range(first, last + 1))
            assert not blocks & holding
            holding.update(blocks)
            got.append(n)
            try:
                await trio.sleep(ticks)
            finally:
                holding.difference_update(blocks)

    async def main() -> None:
        with trio.fail_after(1000):  # a waiter never woken fails at once (the clock jumps to it)
            await everyone()

    async def everyone() -> None:
        async with trio.open_nursery() as nursery:
            for n, ((first, last), ticks, cancelled) in enumerate(plan):
                if cancelled:  # cancelled half a tick in: while it waits, or while it holds
                    async with trio.open_nursery() as inner:
                        inner.start_soon(hold, n, first, last, ticks)
                        await trio.sleep(0.5)
                        inner.cancel_scope.cancel()
                else:
                    nursery.start_soon(hold, n, first, last, ticks)
        assert not holding
        with trio.fail_after(1):  # the whole range is free again at once
            async with lock.hold(0, 200):
                pass

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert {n for n, (_, _, cancelled) in enumerate(plan) if not cancelled} <= set(got)

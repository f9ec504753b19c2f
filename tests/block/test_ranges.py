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

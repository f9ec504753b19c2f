"""Byte ranges and block-range locks: what a LUN's writers coordinate with."""

from __future__ import annotations

import bisect
from collections.abc import Coroutine, Iterator
from typing import Any

import trio


class ByteRanges:
    """Disjoint half-open byte ranges, kept sorted and merged."""

    def __init__(self) -> None:
        self._ranges: list[tuple[int, int]] = []

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self._ranges))

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        kept = []
        for a, b in self._ranges:
            if b < start or a > end:
                kept.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        kept.append((start, end))
        self._ranges = sorted(kept)

    def remove(self, start: int, end: int) -> None:
        if start >= end:
            return
        kept = []
        for a, b in self._ranges:
            if b <= start or a >= end:
                kept.append((a, b))
                continue
            if a < start:
                kept.append((a, start))
            if b > end:
                kept.append((end, b))
        self._ranges = kept

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        return [(max(a, start), min(b, end)) for a, b in self._ranges if a < end and b > start]


class RangeLock:
    """Exclusive locks on inclusive block ranges; non-overlapping ranges never wait for each other.

    The ranges held are disjoint, so kept sorted by their first block they are sorted by their
    last too: whether a range is free is one bisection, where a scan of the 32 held at 4 KiB QD32
    cost 3.6 µs per write. A release wakes the waiters, if there are any, to look again."""

    def __init__(self) -> None:
        self._firsts: list[int] = []
        self._lasts: list[int] = []
        self._waiting = 0
        self._released = trio.Event()

    def hold(self, first: int, last: int) -> HeldRange:
        """``async with lock.hold(first, last):`` the blocks first..last are ours."""
        assert first <= last, (first, last)  # an empty range would break the order the bisection relies on
        return HeldRange(self, first, last)

    def _free(self, first: int, last: int) -> bool:
        below = bisect.bisect_right(self._firsts, last)  # the held ranges that start at or before last
        return not below or self._lasts[below - 1] < first

    async def _take(self, first: int, last: int) -> None:
        while not self._free(first, last):
            self._waiting += 1
            try:
                await self._released.wait()
            finally:
                self._waiting -= 1
        at = bisect.bisect_left(self._firsts, first)
        self._firsts.insert(at, first)
        self._lasts.insert(at, last)

    def _give(self, first: int) -> None:
        at = bisect.bisect_left(self._firsts, first)
        del self._firsts[at], self._lasts[at]
        if self._waiting:
            self._released.set()
            self._released = trio.Event()


class HeldRange:
    """One ``RangeLock.hold``: a class rather than an async generator, which costs no generator
    per write."""

    __slots__ = ("_first", "_last", "_lock")

    def __init__(self, lock: RangeLock, first: int, last: int) -> None:
        self._lock = lock
        self._first = first
        self._last = last

    def __aenter__(self) -> Coroutine[Any, Any, None]:
        return self._lock._take(self._first, self._last)  # awaited by ``async with``: no frame of ours around it

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock._give(self._first)

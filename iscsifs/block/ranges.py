"""Byte ranges and block-range locks: what a LUN's writers coordinate with."""

from __future__ import annotations

from collections.abc import Iterator

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
    """Exclusive locks on inclusive block ranges; non-overlapping ranges never wait for each other."""

    def __init__(self) -> None:
        self._held: list[tuple[int, int]] = []
        self._released = trio.Event()

    def hold(self, first: int, last: int) -> HeldRange:
        """``async with lock.hold(first, last):`` the blocks first..last are ours."""
        return HeldRange(self, first, last)


class HeldRange:
    """One ``RangeLock.hold``: a class rather than an async generator, which costs no generator
    per write."""

    __slots__ = ("_entry", "_lock")

    def __init__(self, lock: RangeLock, first: int, last: int) -> None:
        self._lock = lock
        self._entry = (first, last)

    async def __aenter__(self) -> None:
        lock = self._lock
        first, last = self._entry
        while any(a <= last and first <= b for a, b in lock._held):
            await lock._released.wait()
        lock._held.append(self._entry)

    async def __aexit__(self, *exc_info: object) -> None:
        lock = self._lock
        lock._held.remove(self._entry)
        lock._released.set()
        lock._released = trio.Event()

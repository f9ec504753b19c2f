"""Byte ranges and block-range locks: what a LUN's writers coordinate with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

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

    @asynccontextmanager
    async def hold(self, first: int, last: int) -> AsyncIterator[None]:
        while any(a <= last and first <= b for a, b in self._held):
            await self._released.wait()
        entry = (first, last)
        self._held.append(entry)
        try:
            yield
        finally:
            self._held.remove(entry)
            self._released.set()
            self._released = trio.Event()

"""Read buffers, reused."""

from __future__ import annotations


class BufferPool:
    """Read buffers to reuse. A fresh 1 MiB bytearray is 256 page faults to fill and an munmap
    to free: on sequential reads that cost more than parsing the PDUs that fill it."""

    def __init__(self, keep_bytes: int = 32 << 20) -> None:
        self._free: dict[int, list[bytearray]] = {}
        self._kept = 0
        self._keep_bytes = keep_bytes

    def take(self, size: int) -> bytearray:
        """A buffer of at least ``size`` bytes (contents undefined)."""
        size = max(4096, 1 << (size - 1).bit_length())  # power-of-two classes
        free = self._free.get(size)
        if free:
            self._kept -= size
            return free.pop()
        return bytearray(size)

    def give(self, buf: bytearray | memoryview) -> None:
        if not isinstance(buf, bytearray):
            return  # not one of ours
        if self._kept + len(buf) <= self._keep_bytes:
            self._free.setdefault(len(buf), []).append(buf)
            self._kept += len(buf)

"""Buffers shared with the session workers: one memfd, mapped by the FUSE process and by every
worker, so a read's data is received by a worker straight into the buffer the FUSE handler
replies from, and a large write's data is in the worker without crossing a socket.

Only the FUSE process allocates (``take``/``give``); a worker is told an offset and a length.
"""

from __future__ import annotations

import ctypes
import mmap
import os

ARENA_BYTES = 64 << 20  # virtual: only the pages in use are memory (QD8 x 1 MiB reads touch ~16 MiB)
SMALLEST = 4096


class Arena:
    """The shared mapping. Create with no ``fd`` in the FUSE process; a worker maps the fd it
    inherited."""

    def __init__(self, size: int = ARENA_BYTES, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("iscsifs-buffers")  # close-on-exec: the workers get it by pass_fds
            os.ftruncate(fd, size)
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)
        self.view = memoryview(self.map)
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self._top = 0  # below: carved into slots; above: never used yet
        self._free: dict[int, list[int]] = {}  # slot size -> offsets of free slots
        self._taken: dict[int, int] = {}  # id() of a handed-out view -> its offset

    def __repr__(self) -> str:
        return f"<Arena {self._top >> 20}/{self.size >> 20} MiB carved, fd {self.fd}>"

    def offset_of(self, buf: object) -> int | None:
        """Where ``buf`` starts in the arena, if it is a view into it (else None)."""
        if not isinstance(buf, memoryview) or buf.obj is not self.map or not buf.nbytes:
            return None
        return ctypes.addressof(ctypes.c_char.from_buffer(buf)) - self._base

    def take(self, size: int) -> memoryview | None:
        """A slot of at least ``size`` bytes (contents undefined), or None when the arena is full."""
        slot = max(SMALLEST, 1 << (size - 1).bit_length())  # power-of-two classes, page aligned
        free = self._free.get(slot)
        if free:
            offset = free.pop()
        elif self._top + slot <= self.size:
            offset, self._top = self._top, self._top + slot
        else:
            return None
        view = self.view[offset : offset + slot]
        self._taken[id(view)] = offset
        return view

    def give(self, view: memoryview) -> None:
        offset = self._taken.pop(id(view), None)
        if offset is not None:
            self._free.setdefault(len(view), []).append(offset)


class ArenaBuffers:
    """``lun.BufferPool``'s interface over an arena: a read buffer the workers can fill. When the
    arena is full, a private buffer (the worker's data then crosses the socket)."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena

    def take(self, size: int) -> memoryview | bytearray:
        view = self.arena.take(size)
        return view if view is not None else bytearray(size)

    def give(self, buf: memoryview | bytearray) -> None:
        if isinstance(buf, memoryview):
            self.arena.give(buf)

"""A queue of buffers written to a non-blocking socket as far as it takes them now: one
writev(2)/sendmsg(2) per IOV_MAX buffers, never joined, the rest kept in order. Used by the
connection to the target and by both ends of a session worker's channel."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable

IOV_MAX = 1024  # buffers per system call (Linux UIO_MAXIOV)

Buffer = bytes | bytearray | memoryview


def drain(out: collections.deque[Buffer], write: Callable[[list[Buffer]], int]) -> None:
    """Write from the head of ``out`` until it is empty or the socket is full. ``write`` is
    writev or sendmsg on the socket; an OSError other than a full socket is the caller's."""
    while out:
        batch = list(itertools.islice(out, IOV_MAX))
        try:
            sent = write(batch)
        except (BlockingIOError, InterruptedError):
            return
        for buf in batch:
            if sent < len(buf):
                if sent:
                    out[0] = memoryview(buf)[sent:]
                return  # the socket is full
            sent -= len(buf)
            out.popleft()

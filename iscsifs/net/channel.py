"""One end of the socket pair between the FUSE process and a session worker: frames out without
an await (a command's send must not cost a task switch), frames in from one reader loop.
"""

from __future__ import annotations

import collections
import itertools
import os
import socket
from collections.abc import AsyncIterator

import trio

from iscsifs.net.ipc import FrameBuffer
from iscsifs.net.nursery import others_runnable

Parts = list[bytes | bytearray | memoryview]
IOV_MAX = os.sysconf("SC_IOV_MAX")


class ChannelClosed(Exception):
    """The other end is gone."""


class Channel:
    def __init__(self, sock: socket.socket, *, batch: bool = False) -> None:
        self.batch = batch
        sock.setblocking(False)
        self.sock = sock
        self._outbox: collections.deque[bytes | bytearray | memoryview] = collections.deque()
        self._outbox_filled = trio.Event()
        self.closed = False

    def __repr__(self) -> str:
        return f"<Channel fd {self.sock.fileno()} outbox {len(self._outbox)} buffers>"

    def send(self, parts: Parts) -> None:
        """Queue one frame, without waiting: written now, or with the frames of the other tasks
        that run before this process waits again (``others_runnable``)."""
        if self.closed:
            raise ChannelClosed("session worker channel is closed")
        self._outbox.extend(parts)
        if self.batch and others_runnable():
            self._outbox_filled.set()
            return
        self._flush()
        if self._outbox:
            self._outbox_filled.set()

    def _flush(self) -> None:
        """Write what the socket takes now from the head of the outbox: one sendmsg per IOV_MAX
        buffers, no joining."""
        out = self._outbox
        while out:
            batch = list(itertools.islice(out, IOV_MAX))
            try:
                sent = self.sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                out.clear()
                raise ChannelClosed(str(exc)) from None
            for buf in batch:
                if sent < len(buf):
                    if sent:
                        out[0] = memoryview(buf)[sent:]
                    return  # the socket is full
                sent -= len(buf)
                out.popleft()

    async def flush_forever(self) -> None:
        """Run as a task: writes the outbox after the other tasks have queued theirs, and whenever
        the socket can take more."""
        while not self.closed:
            await self._outbox_filled.wait()
            self._outbox_filled = trio.Event()
            try:
                self._flush()
                while self._outbox and not self.closed:
                    await trio.lowlevel.wait_writable(self.sock)
                    self._flush()
            except (ChannelClosed, trio.ClosedResourceError):
                return  # the reader sees the end too

    async def frames(self) -> AsyncIterator[tuple[int, int, memoryview]]:
        """Every frame received, until the other end closes (then the iteration ends). A payload
        is valid until the next frame is asked for."""
        buffer = FrameBuffer()
        while not self.closed:
            try:
                await trio.lowlevel.wait_readable(self.sock)
            except trio.ClosedResourceError:
                return  # we closed it (close())
            try:
                n = self.sock.recv_into(buffer.space())
            except BlockingIOError:
                continue
            except OSError:
                return
            if not n:
                return
            buffer.filled(n)
            for frame in buffer.frames():
                yield frame

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._outbox_filled.set()
            trio.lowlevel.notify_closing(self.sock)  # wakes our tasks waiting on it
            self.sock.close()

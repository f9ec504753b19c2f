"""One end of the socket pair between the FUSE process and a session worker: frames out without
an await (a command's send must not cost a task switch), frames in from one reader loop.
"""

from __future__ import annotations

import collections
import socket
from collections.abc import AsyncIterator

import trio

from iscsifs.net.ipc import FrameBuffer
from iscsifs.net.nursery import others_runnable
from iscsifs.net.outbox import Buffer, drain

Parts = list[Buffer]


class ChannelClosed(Exception):
    """The other end is gone."""


class Channel:
    def __init__(self, sock: socket.socket, *, batch: bool = False) -> None:
        self.batch = batch
        sock.setblocking(False)
        self.sock = sock
        self._outbox: collections.deque[Buffer] = collections.deque()
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
        try:
            drain(self._outbox, self.sock.sendmsg)
        except OSError as exc:
            self._outbox.clear()
            raise ChannelClosed(str(exc)) from None

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

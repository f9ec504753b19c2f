"""The socket pair between the FUSE process and a session worker: frames arrive whole and in
order, large ones too; the end of the other side ends the iteration; a closed end refuses sends."""

from __future__ import annotations

import socket

import pytest
import trio
from iscsifs.net.channel import Channel, ChannelClosed
from iscsifs.net.ipc import Kind, Logout, call_from, frame, pickled


async def test_frames_arrive_whole_in_order_and_end_with_the_other_side():
    ours, theirs = socket.socketpair()
    a, b = Channel(ours), Channel(theirs, batch=True)
    sizes = [0, 1, 4096, 3 << 20, 17]  # the 3 MiB one is more than a socket buffer holds
    received: list[tuple[int, int, bytes]] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.flush_forever)

            async def read() -> None:
                async for kind, tag, payload in b.frames():
                    received.append((kind, tag, bytes(payload)))

            nursery.start_soon(read)
            for tag, size in enumerate(sizes, 1):
                a.send(frame(Kind.RESULT, tag, bytes([tag]) * size))
            a.send(pickled(Kind.CALL, 99, Logout(7)))
            while len(received) < len(sizes) + 1:
                await trio.sleep(0.01)
            a.close()  # b's iteration ends: read() returns and the nursery can close
    assert [(k, t, len(p)) for k, t, p in received[:-1]] == [(Kind.RESULT, t, s) for t, s in enumerate(sizes, 1)]
    assert all(p == bytes([t]) * len(p) for _, t, p in received[:-1])
    kind, tag, payload = received[-1]
    assert (kind, tag, call_from(memoryview(payload))) == (Kind.CALL, 99, Logout(7))
    with pytest.raises(ChannelClosed):
        a.send(frame(Kind.RESULT, 1, b"late"))
    b.close()


def test_a_payload_that_is_not_a_call_is_refused():
    with pytest.raises(TypeError):
        call_from(memoryview(pickled(Kind.CALL, 1, ("logout", 7))[1]))

"""The frames between the FUSE process and its session workers (iscsifs.net.ipc), and the shared
arena (iscsifs.net.arena): no process, no trio."""

from __future__ import annotations

import errno
import pickle

import pytest
from iscsifs.net.arena import Arena, ArenaBuffers
from iscsifs.net.ipc import (
    EXEC,
    HEADER,
    INLINE,
    RESULT,
    FrameBuffer,
    Kind,
    error_frame,
    exec_frame,
    frame,
    rebuild_error,
)
from iscsifs.proto.errors import IscsiError, LoginError
from iscsifs.scsi.sense import ScsiError, Sense, Status


def _wire(parts) -> bytes:
    return b"".join(bytes(p) for p in parts)


STREAM = [
    exec_frame(7, 3, 1, bytes(range(16)), 4096, 0, 8192, None),
    exec_frame(8, 3, 2, b"\x2a" + bytes(9), 0, 5, INLINE, b"hello"),
    frame(Kind.RESULT, 7, RESULT.pack(0, 0, 0, 4096, 0, 0)),
    frame(Kind.EVENT, 0, pickle.dumps(("log", 30, "iscsifs", "x" * 300_000))),  # larger than the buffer
]


def _expected():
    return [(p[0][4], HEADER.unpack(bytes(p[0]))[2], b"".join(bytes(x) for x in p[1:])) for p in STREAM]


def _read(chunks: list[bytes]) -> list[tuple[int, int, bytes]]:
    buffer = FrameBuffer(size=4096)
    got = []
    for chunk in chunks:
        while chunk:
            space = buffer.space()
            n = min(len(space), len(chunk))
            space[:n] = chunk[:n]
            buffer.filled(n)
            chunk = chunk[n:]
            got += [(kind, tag, bytes(payload)) for kind, tag, payload in buffer.frames()]
    return got


def test_frames_whole_byte_by_byte_and_with_trailing_bytes():
    wire = b"".join(_wire(p) for p in STREAM)
    assert _read([wire]) == _expected()
    assert _read([wire[i : i + 1] for i in range(0, 9000)] + [wire[9000:]]) == _expected()
    partial = _wire(STREAM[0])[:-3]
    assert _read([wire + partial]) == _expected()  # the unfinished frame waits for its bytes


def test_exec_frame_layout():
    kind_tag = HEADER.unpack(bytes(STREAM[1][0]))
    payload = _wire(STREAM[1])[HEADER.size :]
    assert kind_tag == (len(payload), Kind.EXEC, 8)
    sid, lun, expected_in, out_len, offset, cdb_len = EXEC.unpack_from(payload)
    assert (sid, lun, expected_in, out_len, offset, cdb_len) == (3, 2, 0, 5, INLINE, 10)
    assert payload[EXEC.size + cdb_len :] == b"hello"


@pytest.mark.parametrize("exc", [
    LoginError(0x02, 0x01, "iqn.x", chap_algorithm=5),
    ScsiError(Status.CHECK_CONDITION, Sense(0x05, 0x24, 0x00), "READ on LUN 1"),
    IscsiError("plain"),
])
def test_an_error_crosses_with_its_class_and_attributes(exc):
    rebuilt = rebuild_error(memoryview(_wire(error_frame(1, exc))[HEADER.size :]))
    assert type(rebuilt) is type(exc) and str(rebuilt) == str(exc) and vars(rebuilt) == vars(exc)
    assert rebuilt.errno == exc.errno


def test_an_error_that_does_not_pickle_becomes_an_iscsi_error_with_its_message():
    class Local(IscsiError):  # not importable by name: cannot be pickled
        errno = errno.ENXIO

    rebuilt = rebuild_error(memoryview(_wire(error_frame(1, Local("gone")))[HEADER.size :]))
    assert type(rebuilt) is IscsiError and "Local: gone" in str(rebuilt)


def test_arena_slots_are_reused_and_found_by_address():
    arena = Arena(1 << 20)
    a = arena.take(4096)
    b = arena.take(5000)  # an 8 KiB slot
    assert a is not None and b is not None and len(b) == 8192
    assert arena.offset_of(a) == 0 and arena.offset_of(b) == 4096
    assert arena.offset_of(memoryview(b)[100:200]) == 4196  # a slice: where it starts
    assert arena.offset_of(bytearray(10)) is None and arena.offset_of(memoryview(bytearray(10))) is None
    arena.give(a)
    assert arena.offset_of(arena.take(100)) == 0  # the freed slot again
    assert arena.take(1 << 20) is None  # no room left: the caller falls back


def test_arena_buffers_fall_back_to_private_memory_when_full():
    buffers = ArenaBuffers(Arena(8192))
    first = buffers.take(8192)
    assert isinstance(first, memoryview)
    second = buffers.take(4096)
    assert isinstance(second, bytearray) and len(second) == 4096
    buffers.give(second)
    buffers.give(first)
    assert isinstance(buffers.take(8192), memoryview)


def test_a_worker_maps_the_same_memory():
    arena = Arena(1 << 16)
    other = Arena(1 << 16, fd=arena.fd)  # what a worker does with the fd it inherits
    slot = arena.take(4096)
    assert slot is not None
    other.view[arena.offset_of(slot) : arena.offset_of(slot) + 5] = b"hello"
    assert bytes(slot[:5]) == b"hello"

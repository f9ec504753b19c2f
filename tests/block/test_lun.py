"""A LUN in bytes over an in-memory disk that speaks SCSI (an ``Executor``, no network): partial
blocks are read, merged and written back; concurrent writers of one block never lose or tear
each other's bytes; a write past the end writes nothing; a file's holes read and are written as
zeros; the transfer limit splits commands."""

from __future__ import annotations

import errno
import random
import struct

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsifs.block.errors import LunRangeError, LunRemoved
from iscsifs.block.lun import Lun
from iscsifs.proto.connection import ScsiResult
from iscsifs.scsi.response import BlockLimits, Capacity

BS = 512


class Disk:
    """Blocks of bytes behind READ/WRITE(10/16), WRITE SAME(16) and SYNCHRONIZE CACHE; each
    command yields to other tasks between reading its CDB and touching the blocks, as a target
    answering over a network would, so interleavings happen."""

    target_name = "iqn.2026-11.test:disk"

    def __init__(self, blocks: int, rng: random.Random | None = None) -> None:
        self.data = bytearray(blocks * BS)
        self.rng = rng or random.Random(0)
        self.commands: list[tuple[int, int, int]] = []  # (opcode, lba, blocks)

    async def execute(self, lun: int, cdb: bytes, *, data_out=None, expected_in: int = 0, into=None) -> ScsiResult:
        op = cdb[0]
        if op in (0x28, 0x2A):
            lba, n = struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">H", cdb, 7)[0]
        elif op in (0x88, 0x8A, 0x93):
            lba, n = struct.unpack_from(">QI", cdb, 2)
        else:
            lba = n = 0
        self.commands.append((op, lba, n))
        for _ in range(self.rng.randrange(3)):
            await trio.lowlevel.checkpoint()
        if op in (0x28, 0x88):
            data = bytes(self.data[lba * BS : (lba + n) * BS])
            if into is not None:
                into[: len(data)] = data
                return ScsiResult(0, b"", memoryview(into)[: len(data)])
            return ScsiResult(0, b"", data)
        if op in (0x2A, 0x8A):
            self.data[lba * BS : (lba + n) * BS] = bytes(data_out)
        elif op == 0x93:
            self.data[lba * BS : (lba + n) * BS] = bytes(data_out) * n
        return ScsiResult(0)


def lun_over(disk: Disk, **kw) -> Lun:
    return Lun(disk, 1, Capacity(len(disk.data) // BS, BS), **kw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8 * BS - 1), st.binary(min_size=1, max_size=3 * BS)), max_size=12))
def test_unaligned_writes_read_modify_write_exactly(writes):
    async def main() -> None:
        disk = Disk(8)
        disk.data[:] = random.Random(1).randbytes(len(disk.data))
        model = bytearray(disk.data)
        lun = lun_over(disk)
        for offset, data in writes:
            data = data[: len(model) - offset]
            assert await lun.write(offset, data) == len(data)
            model[offset : offset + len(data)] = data
        assert disk.data == model
        assert await lun.read(3, 5 * BS) == bytes(model[3 : 3 + 5 * BS])

    trio.run(main)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.tuples(st.integers(0, 2 * BS - 1), st.integers(1, 40)), min_size=2,
                                       max_size=8))
def test_concurrent_writers_of_one_block_never_lose_each_others_bytes(seed, writes):
    # Each writer owns distinct bytes of the same two blocks; a read-modify-write that raced another
    # would put back the bytes it read before the other wrote.
    async def main() -> None:
        disk = Disk(2, random.Random(seed))
        lun = lun_over(disk)
        owner = bytearray(len(disk.data))  # 0: nobody
        mine: list[tuple[int, bytes]] = []
        for i, (offset, length) in enumerate(writes, 1):
            span = [b for b in range(offset, min(offset + length, len(owner))) if not owner[b]]
            if span and span == list(range(span[0], span[0] + len(span))):
                for b in span:
                    owner[b] = i
                mine.append((span[0], bytes([i]) * len(span)))
        async with trio.open_nursery() as nursery:
            for offset, data in mine:
                nursery.start_soon(lun.write, offset, data)
        for offset, data in mine:
            assert bytes(disk.data[offset : offset + len(data)]) == data

    trio.run(main)


async def test_a_write_past_the_end_writes_nothing():
    disk = Disk(4)
    lun = lun_over(disk)
    with pytest.raises(LunRangeError) as failed:
        await lun.write(4 * BS - 10, b"x" * 11)
    assert failed.value.errno == errno.ENOSPC and disk.commands == [] and not any(disk.data)
    assert await lun.read(4 * BS - 10, 100) == bytes(10)  # short at the end, empty past it
    assert await lun.read(4 * BS, 100) == b""


async def test_holes_of_a_truncated_file_read_and_are_written_as_zeros():
    disk = Disk(8)
    disk.data[:] = b"\xff" * len(disk.data)
    lun = lun_over(disk)
    lun.truncate(0)  # an O_TRUNC open: the file on the LUN starts empty
    await lun.write(3 * BS, b"a" * 100)  # the writer seeks over a hole first (cp of a sparse image)
    assert await lun.read(0, 3 * BS + 100) == bytes(3 * BS) + b"a" * 100  # the hole reads as zeros at once
    assert disk.data[:BS] == b"\xff" * BS  # ...and is still on the LUN as it was, until the flush
    await lun.flush()
    assert disk.data[: 3 * BS + 100] == bytes(3 * BS) + b"a" * 100
    assert disk.data[3 * BS + 100 :] == b"\xff" * (5 * BS - 100)  # past the file's end: as it was
    assert (0x93, 0, 3) in disk.commands  # whole blocks of zeros went as one WRITE SAME


async def test_commands_are_split_at_the_transfer_limit():
    disk = Disk(64)
    lun = lun_over(disk, max_transfer=8 * BS, limits=BlockLimits(maximum_transfer_length=4, optimal_transfer_length=0))
    await lun.write(0, b"z" * 10 * BS)
    assert [(op, n) for op, _, n in disk.commands] == [(0x2A, 4), (0x2A, 4), (0x2A, 2)]


async def test_a_removed_lun_sends_nothing_more_of_its_io():
    # Its file went while a large write was under way: the chunks it had yet to send are refused
    # (ENXIO), so none of them reaches whatever the target has under the number now.
    disk = Disk(64)
    lun = lun_over(disk, max_transfer=8 * BS)
    plain = disk.execute

    async def execute(lun_number: int, cdb: bytes, **kw):
        result = await plain(lun_number, cdb, **kw)
        lun.removed()  # during the first command
        return result

    disk.execute = execute  # type: ignore[method-assign]
    with pytest.raises(LunRemoved) as e:
        await lun.write(0, b"w" * (32 * BS))
    assert e.value.errno == errno.ENXIO
    assert [op for op, _, _ in disk.commands] == [0x2A]  # one chunk of four went out
    assert disk.data[8 * BS :] == bytes(56 * BS)
    with pytest.raises(LunRemoved):
        await lun.read(0, BS)
    assert len(disk.commands) == 1


async def test_a_retry_after_the_lun_was_removed_is_refused_too():
    # BUSY, then its file goes during the backoff: the retry is not sent (command's ``again``).
    disk = Disk(8)
    lun = lun_over(disk)
    plain = disk.execute

    async def execute(lun_number: int, cdb: bytes, **kw):
        if len(disk.commands) == 0:
            disk.commands.append((cdb[0], 0, 0))
            lun.removed()
            return ScsiResult(0x08)  # BUSY
        return await plain(lun_number, cdb, **kw)

    disk.execute = execute  # type: ignore[method-assign]
    with pytest.raises(LunRemoved):
        await lun.write(0, b"w" * BS)
    assert len(disk.commands) == 1 and disk.data == bytes(8 * BS)

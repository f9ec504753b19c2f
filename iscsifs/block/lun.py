"""Byte-offset I/O on one LUN: alignment, read-modify-write, flush, and the SCSI command policy.

Writes that do not cover whole blocks read the edge blocks, merge, and write back. Every write
holds an exclusive lock on the block range it touches for its whole duration, so concurrent
writers to the same block can neither lose nor tear each other's updates.

A LUN has the size the target gives it, but a writer may make a file on it as on a regular file:
``truncate`` (an O_TRUNC open, ftruncate) sets where that file ends without touching the LUN,
and what the writer then skips inside the file (a hole it seeks over, the part an extending
truncate adds) must read as zeros, as it would in a file: cp leaves the holes of a sparse image
unwritten, and qemu-img convert leaves zero areas unwritten after it truncated its target to 0.
Those ranges read as zeros at once and are written as zeros on the next flush (close, fsync),
so the copy is exact byte for byte; the LUN past the file's end is left as it is, as on a disk.
"""

from __future__ import annotations

import enum
from typing import NoReturn

from iscsifs.block.command import command
from iscsifs.block.errors import (
    LunCannotUnmap,
    LunGrowError,
    LunRangeError,
    LunReadOnly,
    LunRemoved,
    UnalignedRange,
)
from iscsifs.block.ranges import ByteRanges, RangeLock
from iscsifs.block.reservation import LunFenced, LunPr
from iscsifs.block.stats import Stats
from iscsifs.net.api import DataOut, Executor, Into
from iscsifs.proto.connection import ScsiResult
from iscsifs.scsi import cdb
from iscsifs.scsi.response import (
    FULL_PROVISIONING,
    NO_BLOCK_LIMITS,
    BlockLimits,
    Capacity,
    Provisioning,
    ScsiParseError,
    lba_status_word,
    parse_get_lba_status,
)
from iscsifs.scsi.sense import (
    ScsiError,
    SenseKey,
    Status,
)

DEFAULT_MAX_TRANSFER = 1 << 20
ZEROS = bytes(DEFAULT_MAX_TRANSFER)
UNMAP_BLOCKS = 1 << 22  # blocks per UNMAP descriptor when the LUN gives no limit (2 GiB of 512)
LBA_STATUS_ALLOCATION = 4096  # bytes of GET LBA STATUS answer: 255 extents per command
WRITE_SAME_BLOCKS = 1 << 21  # blocks per WRITE SAME command: 1 GiB of 512-byte blocks, bounded work per command


class DetectZeroes(enum.Enum):
    """What a write of all zeros becomes (QEMU's option of the same name and values)."""

    OFF = "off"  # a WRITE like any other
    ON = "on"  # WRITE SAME(16) of one zero block
    UNMAP = "unmap"  # WRITE SAME(16) with UNMAP, where deallocated blocks read as zeros


class Lun:
    """A disk LUN addressed in bytes. ``size`` is exact: blocks * block size."""

    def __init__(self, session: Executor, lun: int, capacity: Capacity, *, read_only: bool = False,
                 max_transfer: int = DEFAULT_MAX_TRANSFER, limits: BlockLimits = NO_BLOCK_LIMITS,
                 provisioning: Provisioning = FULL_PROVISIONING,
                 detect_zeroes: DetectZeroes = DetectZeroes.OFF, stats: Stats | None = None) -> None:
        self.session = session
        self._again = lambda: self.session  # where a retry goes: the executor as it is then (``removed``)
        self.stats = stats  # where its commands are counted: its mount's (None: nowhere)
        self.limits = limits
        self.provisioning = provisioning
        self.detect_zeroes = detect_zeroes
        self.lun = lun
        self.capacity = capacity
        self.read_only = read_only
        self.block_size = capacity.block_size
        # Whole blocks per command, at least one, and never more than the device's VPD 0xB0 limit.
        self.max_blocks = max(1, max_transfer // self.block_size)
        if limits.maximum_transfer_length:
            self.max_blocks = min(self.max_blocks, limits.maximum_transfer_length)
        self.dirty = False
        self._locks = RangeLock()
        self.end: int | None = None  # where the file being written ends (see the module docstring)
        self.zeros = ByteRanges()  # ranges that read as zeros until the next flush writes them
        self.write_same = True  # WRITE SAME(16) works, until the LUN says otherwise
        self.pr = LunPr()  # this mount's persistent reservation on the LUN (``block.reservation``)

    def __repr__(self) -> str:
        return f"<Lun {self.session.target_name}/{self.lun} {self.size} bytes bs={self.block_size}>"

    @property
    def size(self) -> int:
        return self.capacity.size

    def removed(self) -> None:
        """Its file went: every command it has yet to send (the rest of a large read or write, a
        write waiting for its block range, a flush) fails with ENXIO from now on."""
        self.session = _Removed(self.session.target_name, self.lun)

    def set_capacity(self, capacity: Capacity) -> None:
        """The target changed the LUN's size (UNIT ATTENTION 2A/09)."""
        if capacity.block_size != self.block_size:
            self.max_blocks = max(1, self.max_blocks * self.block_size // capacity.block_size)
            self.block_size = capacity.block_size
        self.capacity = capacity

    async def read_blocks(self, lba: int, blocks: int,
                          into: bytearray | memoryview | None = None) -> bytes | bytearray | memoryview:
        """``blocks`` blocks at ``lba``, in as many READ commands as the transfer limit needs;
        into ``into`` (at least that long) if given."""
        if into is None and blocks <= self.max_blocks:
            return await self._read_command(lba, blocks, None)
        out = memoryview(into if into is not None else bytearray(blocks * self.block_size))
        done = 0
        while done < blocks:
            n = min(blocks - done, self.max_blocks)
            await self._read_command(lba + done, n, out[done * self.block_size : (done + n) * self.block_size])
            done += n
        return out[: blocks * self.block_size]

    async def _read_command(self, lba: int, blocks: int, into: memoryview | None) -> bytes | bytearray | memoryview:
        length = blocks * self.block_size
        result = await command(self.session, self.lun, cdb.read(lba, blocks), name="READ", expected_in=length,
                               into=into, stats=self.stats, again=self._again)
        if len(result.data) != length:
            raise ScsiError(Status.CHECK_CONDITION, None,
                            f"READ at LBA {lba} returned {len(result.data)} of {length} bytes")
        return result.data

    @property
    def unmaps_to_zeros(self) -> bool:
        """WRITE SAME(16) with UNMAP deallocates, and deallocated blocks read as zeros."""
        return self.provisioning.write_same_unmap and self.provisioning.zeroes_after_unmap

    async def write_blocks(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        """One WRITE per transfer-limit chunk; with ``detect_zeroes`` (as QEMU's), a chunk that is
        all zeros goes out as WRITE SAME(16) with one block of data (``unmap``: deallocating it,
        where the LUN reads deallocated blocks as zeros)."""
        view = memoryview(data).cast("B")
        step = self.max_blocks * self.block_size
        for off in range(0, len(view), step):
            chunk = view[off : off + step]
            blocks = len(chunk) // self.block_size
            self.dirty = True
            # ZEROS.startswith is one memcmp that stops at the first non-zero byte.
            unmap = self.detect_zeroes is DetectZeroes.UNMAP and self.unmaps_to_zeros
            if (self.detect_zeroes is not DetectZeroes.OFF and self.write_same and ZEROS.startswith(chunk)
                    and await self._write_same(lba, blocks, unmap=unmap)):
                lba += blocks
                continue
            await command(self.session, self.lun, cdb.write(lba, blocks), name="WRITE", data_out=chunk,
                          stats=self.stats, again=self._again)
            lba += blocks

    async def discard(self, offset: int, length: int) -> None:
        """Deallocate whole blocks (SBC-3 logical block provisioning): UNMAP where the LUN has it,
        else WRITE SAME(16) with UNMAP, in commands no larger than its VPD 0xB0 limits."""
        if not self.provisioning.can_unmap:
            raise LunCannotUnmap(f"LUN {self.lun} of {self.session.target_name} cannot unmap: it is not "
                                 "thin-provisioned (VPD 0xB2)")
        if self.read_only:
            raise LunReadOnly(f"LUN {self.lun} of {self.session.target_name} is read-only")
        if self.pr.fenced:
            self._refuse_fenced()
        bs = self.block_size
        if offset < 0 or length < 0 or offset % bs or length % bs or offset + length > self.size:
            raise UnalignedRange(f"discard of {length} bytes at {offset}: whole {bs}-byte blocks inside the LUN only")
        lba, end = offset // bs, (offset + length) // bs
        per = min(self.limits.maximum_unmap_lba_count or UNMAP_BLOCKS, 0xFFFFFFFF)
        self.dirty = True
        async with self._locks.hold(lba, max(lba, end - 1)):
            while lba < end:
                n = min(end - lba, per)
                if self.provisioning.unmap:
                    unmap_cdb, params = cdb.unmap([(lba, n)])
                    await command(self.session, self.lun, unmap_cdb, name="UNMAP", data_out=params, stats=self.stats,
                                  again=self._again)
                else:
                    await command(self.session, self.lun, cdb.write_same_16(lba, n, unmap=True), name="WRITE SAME",
                                  data_out=ZEROS[:bs], stats=self.stats, again=self._again)
                lba += n

    async def lba_status(self, offset: int) -> tuple[list[tuple[int, int, str]], int | None]:
        """The allocation of the LUN from byte ``offset`` on, from one GET LBA STATUS: extents as
        (offset, length, state) in bytes, and where the next call starts (None: the end). A LUN
        that does not report it is fully provisioned (SBC-3: every block mapped)."""
        bs = self.block_size
        lba = offset // bs
        try:
            result = await command(self.session, self.lun, cdb.get_lba_status(lba, LBA_STATUS_ALLOCATION),
                                   name="GET LBA STATUS", expected_in=LBA_STATUS_ALLOCATION, stats=self.stats,
                                   again=self._again)
        except ScsiError as exc:
            if self.provisioning.can_unmap or exc.sense is None or exc.sense.key != SenseKey.ILLEGAL_REQUEST:
                raise
            return [(lba * bs, self.size - lba * bs, "mapped")], None
        extents, reached = [], lba
        for e in parse_get_lba_status(result.data):
            start, stop = max(e.lba, reached), min(e.lba + e.blocks, self.capacity.blocks)
            if stop > start:
                extents.append((start * bs, (stop - start) * bs, lba_status_word(e.status)))
                reached = stop
        if reached <= lba:
            raise ScsiParseError(f"GET LBA STATUS at LBA {lba} described no block")
        return extents, (None if reached >= self.capacity.blocks else reached * bs)

    async def _write_same(self, lba: int, blocks: int, *, unmap: bool = False) -> bool:
        """WRITE SAME(16) of zeros; False (and never again) where the LUN does not know it."""
        try:
            await command(self.session, self.lun, cdb.write_same_16(lba, blocks, unmap=unmap), name="WRITE SAME",
                          data_out=ZEROS[: self.block_size], stats=self.stats, again=self._again)
            return True
        except ScsiError as exc:
            if exc.sense is None or exc.sense.key != SenseKey.ILLEGAL_REQUEST:
                raise
            self.write_same = False
            return False

    def read_span(self, offset: int, size: int) -> int:
        """Bytes of the whole blocks that ``read_into(offset, size, ...)`` needs as a buffer."""
        end = min(offset + size, self.size)
        if offset < 0 or offset >= end:
            return 0
        bs = self.block_size
        return ((end - 1) // bs - offset // bs + 1) * bs

    async def read_into(self, offset: int, size: int, buf: bytearray | memoryview) -> memoryview:
        """Up to ``size`` bytes at ``offset``, read into ``buf`` (``read_span`` bytes at least);
        returns the part of ``buf`` that holds them: short at the end of the LUN, empty past it."""
        if offset < 0 or size < 0:
            raise LunRangeError("negative offset or size")
        end = min(offset + size, self.size)
        if offset >= end:
            return memoryview(b"")
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        data = await self.read_blocks(first, last - first + 1, memoryview(buf)[: (last - first + 1) * bs])
        start = offset - first * bs
        view = memoryview(data)[start : start + end - offset]
        if self.zeros:
            for a, b in self.zeros.overlapping(offset, end):
                view[a - offset : b - offset] = bytes(b - a)
        return view

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; short at the end of the LUN, empty past it."""
        return bytes(await self.read_into(offset, size, bytearray(self.read_span(offset, size))))

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write all of ``data`` at ``offset`` or raise; never changes the size of the LUN."""
        if self.pr.fenced:
            self._refuse_fenced()
        n = len(data)
        if n == 0:
            return 0
        if offset < 0 or offset + n > self.size:
            raise LunRangeError(f"write of {n} bytes at offset {offset} goes past the end of the LUN "
                                f"({self.size} bytes)")
        if self.end is not None:
            self.zeros.add(self.end, offset)  # written past the file's end: the gap is a hole
            self.end = max(self.end, offset + n)
        if self.zeros:  # the common case is none: nothing to do on every write
            self.zeros.remove(offset, offset + n)
        return await self._write(offset, data)

    def _refuse_fenced(self) -> NoReturn:
        """Fenced: fail at once, sending nothing (the target would refuse it anyway, and a write
        that raced the fencing must not be tried again later)."""
        raise LunFenced(f"LUN {self.lun} of {self.session.target_name}: this host was fenced (another host "
                            "removed its reservation key)")

    def truncate(self, length: int) -> None:
        """The file being written on the LUN ends at ``length`` (see the module docstring): a
        shorter file leaves the LUN as it is; a longer one reads as zeros up to ``length``."""
        if length > self.size:
            raise LunGrowError(f"a LUN cannot grow: {length} bytes asked, the LUN has {self.size}")
        end = self.size if self.end is None else self.end
        if length < end:
            self.zeros.remove(length, self.size)
        else:
            self.zeros.add(end, length)
            self.dirty = self.dirty or length > end  # the next flush writes those zeros
        self.end = length

    def closed(self) -> None:
        """The last open file is closed: the LUN is whole again (its zeros written by the flush)."""
        if not self.zeros:
            self.end = None

    async def _write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        bs = self.block_size
        self.dirty = True  # from the first attempt: a close after a failed write must report it too
        async with self._locks.hold(offset // bs, (offset + len(data) - 1) // bs):
            return await self._write_locked(offset, data)

    async def _write_locked(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """``_write`` with the blocks' range lock already held."""
        n = len(data)
        bs = self.block_size
        end = offset + n
        first, last = offset // bs, (end - 1) // bs
        head, tail = offset % bs, end % bs
        if not head and not tail:
            await self.write_blocks(first, data)
            return n
        buf = bytearray((last - first + 1) * bs)
        if head:
            buf[:bs] = await self.read_blocks(first, 1)
        if tail and (last != first or not head):
            buf[-bs:] = await self.read_blocks(last, 1)
        buf[head : head + n] = data
        await self.write_blocks(first, buf)
        return n

    async def flush(self) -> None:
        """The ranges that read as zeros are written as zeros, then SYNCHRONIZE CACHE for the
        whole LUN (SBC-3 §5.22)."""
        if self.pr.fenced:
            self._refuse_fenced()
        self.dirty = False
        bs = self.block_size
        try:
            for start, end in self.zeros:
                # Under the blocks' lock, and only what is still to be zeroed then: a write that
                # came meanwhile has taken its bytes out, and one that comes now waits for us.
                async with self._locks.hold(start // bs, (end - 1) // bs):
                    for a, b in self.zeros.overlapping(start, end):
                        await self._write_zeros_locked(a, b)
                        self.zeros.remove(a, b)
            await command(self.session, self.lun, cdb.synchronize_cache(), name="SYNCHRONIZE CACHE", stats=self.stats,
                          again=self._again)
        except BaseException:
            self.dirty = True
            raise

    async def _write_zeros_locked(self, start: int, end: int) -> None:
        """Zeros from byte ``start`` to ``end``, the blocks' lock held: WRITE SAME(16) for whole
        blocks (one block of data crosses the wire), or zero buffers where the LUN cannot;
        partial blocks merged."""
        bs = self.block_size
        first, last = -(-start // bs), end // bs  # the whole blocks inside
        if first >= last:
            await self._write_locked(start, bytes(end - start))
            return
        if start < first * bs:
            await self._write_locked(start, bytes(first * bs - start))
        self.dirty = True
        lba = first
        while lba < last:
            blocks = min(last - lba, self.limits.maximum_write_same_length or WRITE_SAME_BLOCKS)
            if self.write_same and await self._write_same(lba, blocks):
                lba += blocks
                continue
            step = min(last - lba, self.max_blocks)
            await self.write_blocks(lba, ZEROS[: step * bs])
            lba += step
        if end > last * bs:
            await self._write_locked(last * bs, bytes(end - last * bs))


class _Removed:
    """The executor of a LUN whose file went: it sends nothing."""

    def __init__(self, target_name: str, lun: int) -> None:
        self._target_name = target_name
        self._lun = lun

    @property
    def target_name(self) -> str:
        return self._target_name

    async def execute(self, lun: int, cdb: bytes, *, data_out: DataOut | None = None, expected_in: int = 0,
                      into: Into | None = None) -> ScsiResult:
        raise LunRemoved(f"LUN {self._lun} of {self._target_name} was removed (gone, or another device now)")

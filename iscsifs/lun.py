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

import errno
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import trio

from iscsifs.net.api import ScsiSession
from iscsifs.proto.errors import IscsiError
from iscsifs.proto.session import ScsiResult
from iscsifs.scsi import cdb
from iscsifs.scsi.response import (
    Capacity,
    ScsiParseError,
    StandardInquiry,
    Vpd,
    mode_sense_write_protected,
    BlockLimits,
    LbaStatus,
    Provisioning,
    parse_block_limits,
    parse_get_lba_status,
    parse_logical_block_provisioning,
    parse_device_identification,
    parse_inquiry,
    parse_read_capacity_10,
    parse_read_capacity_16,
    parse_supported_vpd_pages,
    parse_unit_serial_number,
    world_wide_name,
)
from iscsifs.scsi.sense import (
    Sense,
    ScsiError,
    SenseKey,
    Status,
    is_unit_attention,
    parse_sense,
)
from iscsifs.stats import STATS

log = logging.getLogger("iscsifs.lun")

UNIT_ATTENTION_RETRIES = 8  # every target reports at least one (29/00) after login
DEFAULT_MAX_TRANSFER = 1 << 20
ZEROS = bytes(DEFAULT_MAX_TRANSFER)
UNMAP_BLOCKS = 1 << 22  # blocks per UNMAP descriptor when the LUN gives no limit (2 GiB of 512)
LBA_STATUS_ALLOCATION = 4096  # bytes of GET LBA STATUS answer: 255 extents per command
WRITE_SAME_BLOCKS = 1 << 21  # blocks per WRITE SAME command: 1 GiB of 512-byte blocks, bounded work per command


class LunRangeError(IscsiError):
    """I/O outside the LUN. ``errno`` is what writing past the end of a disk gives."""

    errno = errno.ENOSPC


# SAM-5 statuses and sense that say "not now", not "no": retried with backoff, within a time bound,
# without using up the UNIT ATTENTION retries.
BUSY_STATUSES = (Status.BUSY, Status.TASK_SET_FULL)
RETRY_TIME_LIMIT = 60.0  # seconds of BUSY / NOT READY (becoming ready) / ABORTED COMMAND, then the error


def _transient(status: int, sense: Sense | None) -> bool:
    if status in BUSY_STATUSES:
        return True
    if status != Status.CHECK_CONDITION or sense is None:
        return False
    if sense.key == SenseKey.ABORTED_COMMAND:
        return True
    # NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY (04/01) or in transition (04/0A).
    return sense.key == SenseKey.NOT_READY and sense.asc_ascq in ((0x04, 0x01), (0x04, 0x0A))


async def command(session: ScsiSession, lun: int, cdb_bytes: bytes, *, name: str,
                  data_out: bytes | bytearray | memoryview | None = None, expected_in: int = 0,
                  into: bytearray | memoryview | None = None) -> ScsiResult:
    """Run a SCSI command; return on GOOD. UNIT ATTENTION is retried (and reported), BUSY, TASK SET
    FULL, ABORTED COMMAND and NOT READY (becoming ready) are retried with backoff, everything
    else (RESERVATION CONFLICT included: someone else holds the LUN) raises ScsiError at once."""
    attentions = 0
    backoff = 0.005
    first_refusal: float | None = None
    while True:
        started = trio.current_time()
        try:
            result = await session.execute(lun, cdb_bytes, data_out=data_out, expected_in=expected_in, into=into)
        except IscsiError:
            STATS.record(name, trio.current_time() - started, ok=False)
            raise
        STATS.record(name, trio.current_time() - started, read=len(result.data),
                     written=len(data_out) if data_out is not None and result.status == Status.GOOD else 0,
                     ok=result.status in (Status.GOOD, Status.CONDITION_MET) and result.response == 0)
        if result.response != 0:
            raise ScsiError(Status.TASK_ABORTED, None, f"{name} (iSCSI response 0x{result.response:02x}, target failure)")
        if result.status in (Status.GOOD, Status.CONDITION_MET):
            if result.status == Status.GOOD:
                session.queue_ok()
            return result
        sense = parse_sense(result.sense)
        if is_unit_attention(result.status, sense) and attentions < UNIT_ATTENTION_RETRIES:
            # A UNIT ATTENTION reports an event (reset, parameters changed) and fails this
            # command only; the same command is valid again (SAM-5 §5.14).
            attentions += 1
            log.debug("LUN %d: %s reported unit attention %s; retrying", lun, name, sense)
            assert sense is not None
            if session.on_unit_attention is not None:
                session.on_unit_attention(lun, sense)
            continue
        if result.status == Status.CHECK_CONDITION and sense is not None and sense.key == SenseKey.RECOVERED_ERROR:
            return result
        now = trio.current_time()
        first_refusal = now if first_refusal is None else first_refusal
        if _transient(result.status, sense) and now - first_refusal < RETRY_TIME_LIMIT:
            if result.status == Status.TASK_SET_FULL:
                session.queue_full()  # fewer commands in flight until the target keeps up
            log.debug("LUN %d: %s answered %s; retrying in %.3f s", lun, name,
                      Status.NAMES.get(result.status, result.status) if sense is None else sense, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
            continue
        raise ScsiError(result.status, sense, f"{name} on LUN {lun}")


async def inquiry(session: ScsiSession, lun: int) -> StandardInquiry:
    result = await command(session, lun, cdb.inquiry(255), name="INQUIRY", expected_in=255)
    return parse_inquiry(result.data)


async def read_capacity(session: ScsiSession, lun: int) -> Capacity:
    """READ CAPACITY(16), falling back to (10) for devices that do not know it (SBC-3 §5.16)."""
    try:
        result = await command(session, lun, cdb.read_capacity_16(32), name="READ CAPACITY(16)", expected_in=32)
        return parse_read_capacity_16(result.data)
    except ScsiError as exc:
        if exc.sense is None or exc.sense.key != SenseKey.ILLEGAL_REQUEST:
            raise
    result = await command(session, lun, cdb.read_capacity_10(), name="READ CAPACITY(10)", expected_in=8)
    cap = parse_read_capacity_10(result.data)
    if cap.blocks - 1 == 0xFFFFFFFF:
        raise ScsiError(Status.CHECK_CONDITION, None, "READ CAPACITY(10) says the LUN is too large for it, "
                        "and READ CAPACITY(16) is not supported")
    return cap


@dataclass(frozen=True, slots=True)
class Identity:
    """What a disk LUN says about itself beyond INQUIRY; empty where it says nothing."""

    serial: str = ""  # VPD 0x80
    wwn: str = ""  # VPD 0x83, the best logical-unit designator
    write_protected: bool = False  # MODE SENSE, WP bit
    limits: BlockLimits = BlockLimits(0, 0)  # VPD 0xB0; zeros: no limit reported
    provisioning: Provisioning = Provisioning()  # VPD 0xB2; a LUN without the page is fully provisioned

    @property
    def maximum_transfer_blocks(self) -> int:
        return self.limits.maximum_transfer_length


async def _vpd(session: ScsiSession, lun: int, page: int) -> bytes | bytearray | memoryview:
    result = await command(session, lun, cdb.inquiry(4096, page), name=f"INQUIRY VPD 0x{page:02x}",
                           expected_in=4096)
    return result.data


async def write_protected(session: ScsiSession, lun: int) -> bool:
    """MODE SENSE(6), or (10) for devices without it; a device that answers neither is not WP."""
    for ten in (False, True):
        built = cdb.mode_sense_10() if ten else cdb.mode_sense_6()
        try:
            result = await command(session, lun, built, name="MODE SENSE", expected_in=512 if ten else 255)
            return mode_sense_write_protected(result.data, ten)
        except ScsiError as exc:
            if exc.sense is None or exc.sense.key != SenseKey.ILLEGAL_REQUEST:
                raise
        except ScsiParseError:
            pass
    return False


def _unsupported(exc: ScsiError) -> bool:
    """ILLEGAL REQUEST: the LUN does not know the command or page (as opposed to a failure)."""
    return exc.sense is not None and exc.sense.key == SenseKey.ILLEGAL_REQUEST


async def _supported_pages(session: ScsiSession, lun: int) -> frozenset[int]:
    try:
        return parse_supported_vpd_pages(await _vpd(session, lun, Vpd.SUPPORTED_PAGES))
    except ScsiError as exc:
        if not _unsupported(exc):
            raise
        log.debug("LUN %d: no VPD pages (%s)", lun, exc)
        return frozenset()


async def _identity(session: ScsiSession, lun: int, pages: frozenset[int]) -> tuple[str, str]:
    serial = wwn = ""
    if Vpd.UNIT_SERIAL_NUMBER in pages:
        serial = parse_unit_serial_number(await _vpd(session, lun, Vpd.UNIT_SERIAL_NUMBER))
    if Vpd.DEVICE_IDENTIFICATION in pages:
        wwn = world_wide_name(parse_device_identification(await _vpd(session, lun, Vpd.DEVICE_IDENTIFICATION)))
    return serial, wwn


async def identify(session: ScsiSession, lun: int) -> Identity:
    """Serial, WWN, block limits, provisioning and write protection. The identity pages (0x80,
    0x83) that the LUN lists must be read, or this raises (the scan then skips the LUN): a
    garbled answer must not become an identity that a later login compares against. A page a
    LUN lacks (ILLEGAL REQUEST) is left out; the others, garbled, are too, with a log line."""
    pages = await _supported_pages(session, lun)
    serial, wwn = await _identity(session, lun, pages)
    limits, provisioning = BlockLimits(0, 0), Provisioning()
    try:
        if Vpd.BLOCK_LIMITS in pages:
            limits = parse_block_limits(await _vpd(session, lun, Vpd.BLOCK_LIMITS))
        if Vpd.LOGICAL_BLOCK_PROVISIONING in pages:
            provisioning = parse_logical_block_provisioning(await _vpd(session, lun, Vpd.LOGICAL_BLOCK_PROVISIONING))
    except (ScsiError, ScsiParseError) as exc:
        log.warning("LUN %d of %s: a VPD page is unreadable (%s); using no limits and full provisioning", lun,
                    session.target_name, exc)
    return Identity(serial, wwn, await write_protected(session, lun), limits, provisioning)


async def identity_of(session: ScsiSession, lun: int) -> tuple[str, str]:
    """(serial, wwn): what a session checks after every login (``net.api.Identify``). An answer
    that cannot be read raises, so the login is tried again rather than the LUN being taken for
    another device."""
    return await _identity(session, lun, await _supported_pages(session, lun))


class ByteRanges:
    """Disjoint half-open byte ranges, kept sorted and merged."""

    def __init__(self) -> None:
        self._ranges: list[tuple[int, int]] = []

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __iter__(self):
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


class LunCannotUnmap(IscsiError):
    """Discard asked of a LUN that cannot deallocate blocks (not thin-provisioned, VPD 0xB2)."""

    errno = errno.EOPNOTSUPP


class LunReadOnly(IscsiError):
    errno = errno.EROFS


class UnalignedRange(IscsiError):
    """A byte range that is not whole blocks inside the LUN, where only whole blocks make sense."""

    errno = errno.EINVAL


class LunGrowError(IscsiError):
    """A LUN cannot be made larger by truncating it: its size is the target's."""

    errno = errno.EFBIG


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

    def give(self, buf: bytearray) -> None:
        if self._kept + len(buf) <= self._keep_bytes:
            self._free.setdefault(len(buf), []).append(buf)
            self._kept += len(buf)


class Lun:
    """A disk LUN addressed in bytes. ``size`` is exact: blocks × block size."""

    def __init__(self, session: ScsiSession, lun: int, capacity: Capacity, *, read_only: bool = False,
                 max_transfer: int = DEFAULT_MAX_TRANSFER, maximum_transfer_blocks: int = 0,
                 limits: BlockLimits = BlockLimits(0, 0), provisioning: Provisioning = Provisioning(),
                 detect_zeroes: str = "off") -> None:
        self.session = session
        self.limits = limits
        self.provisioning = provisioning
        self.detect_zeroes = detect_zeroes  # "off", "on" or "unmap" (see write_blocks)
        self.lun = lun
        self.capacity = capacity
        self.read_only = read_only
        self.block_size = capacity.block_size
        # Whole blocks per command, at least one, and never more than the device's VPD 0xB0 limit.
        self.max_blocks = max(1, max_transfer // self.block_size)
        if maximum_transfer_blocks:
            self.max_blocks = min(self.max_blocks, maximum_transfer_blocks)
        self.dirty = False
        self._locks = RangeLock()
        self.end: int | None = None  # where the file being written ends (see the module docstring)
        self.zeros = ByteRanges()  # ranges that read as zeros until the next flush writes them
        self.write_same = True  # WRITE SAME(16) works, until the LUN says otherwise

    def __repr__(self) -> str:
        return f"<Lun {self.session.target_name}/{self.lun} {self.size} bytes bs={self.block_size}>"

    @property
    def size(self) -> int:
        return self.capacity.size

    def set_capacity(self, capacity: Capacity) -> None:
        """The target changed the LUN's size (UNIT ATTENTION 2A/09)."""
        if capacity.block_size != self.block_size:
            self.max_blocks = max(1, self.max_blocks * self.block_size // capacity.block_size)
            self.block_size = capacity.block_size
        self.capacity = capacity

    async def read_blocks(self, lba: int, blocks: int, into: bytearray | memoryview | None = None) -> bytes | bytearray | memoryview:
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
                               into=into)
        if len(result.data) != length:
            raise ScsiError(Status.CHECK_CONDITION, None, f"READ at LBA {lba} returned {len(result.data)} of {length} bytes")
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
            if self.detect_zeroes != "off" and self.write_same and ZEROS.startswith(chunk):
                if await self._write_same(lba, blocks, unmap=self.detect_zeroes == "unmap" and self.unmaps_to_zeros):
                    lba += blocks
                    continue
            await command(self.session, self.lun, cdb.write(lba, blocks), name="WRITE", data_out=chunk)
            lba += blocks

    async def discard(self, offset: int, length: int) -> None:
        """Deallocate whole blocks (SBC-3 logical block provisioning): UNMAP where the LUN has it,
        else WRITE SAME(16) with UNMAP, in commands no larger than its VPD 0xB0 limits."""
        if not self.provisioning.can_unmap:
            raise LunCannotUnmap(f"LUN {self.lun} of {self.session.target_name} cannot unmap: it is not "
                                 "thin-provisioned (VPD 0xB2)")
        if self.read_only:
            raise LunReadOnly(f"LUN {self.lun} of {self.session.target_name} is read-only")
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
                    await command(self.session, self.lun, unmap_cdb, name="UNMAP", data_out=params)
                else:
                    await command(self.session, self.lun, cdb.write_same_16(lba, n, unmap=True), name="WRITE SAME",
                                  data_out=ZEROS[:bs])
                lba += n

    async def lba_status(self, offset: int) -> tuple[list[tuple[int, int, str]], int | None]:
        """The allocation of the LUN from byte ``offset`` on, from one GET LBA STATUS: extents as
        (offset, length, state) in bytes, and where the next call starts (None: the end). A LUN
        that does not report it is fully provisioned (SBC-3: every block mapped)."""
        bs = self.block_size
        lba = offset // bs
        try:
            result = await command(self.session, self.lun, cdb.get_lba_status(lba, LBA_STATUS_ALLOCATION),
                                   name="GET LBA STATUS", expected_in=LBA_STATUS_ALLOCATION)
        except ScsiError as exc:
            if self.provisioning.can_unmap or exc.sense is None or exc.sense.key != SenseKey.ILLEGAL_REQUEST:
                raise
            return [(lba * bs, self.size - lba * bs, "mapped")], None
        extents, reached = [], lba
        for e in parse_get_lba_status(result.data):
            start, stop = max(e.lba, reached), min(e.lba + e.blocks, self.capacity.blocks)
            if stop > start:
                extents.append((start * bs, (stop - start) * bs, LbaStatus.NAMES.get(e.status, "mapped")))
                reached = stop
        if reached <= lba:
            raise ScsiParseError(f"GET LBA STATUS at LBA {lba} described no block")
        return extents, (None if reached >= self.capacity.blocks else reached * bs)

    async def _write_same(self, lba: int, blocks: int, *, unmap: bool = False) -> bool:
        """WRITE SAME(16) of zeros; False (and never again) where the LUN does not know it."""
        try:
            await command(self.session, self.lun, cdb.write_same_16(lba, blocks, unmap=unmap), name="WRITE SAME",
                          data_out=ZEROS[: self.block_size])
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
        n = len(data)
        if n == 0:
            return 0
        if offset < 0 or offset + n > self.size:
            raise LunRangeError(f"write of {n} bytes at offset {offset} goes past the end of the LUN ({self.size} bytes)")
        if self.end is not None:
            self.zeros.add(self.end, offset)  # written past the file's end: the gap is a hole
            self.end = max(self.end, offset + n)
        if self.zeros:  # the common case is none: nothing to do on every write
            self.zeros.remove(offset, offset + n)
        return await self._write(offset, data)

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
            await command(self.session, self.lun, cdb.synchronize_cache(), name="SYNCHRONIZE CACHE")
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

"""A tape drive as Linux st(4)'s non-rewinding device (``/dev/nst0``) presents one, over an
``Executor``: one ``read_block`` is one ``read()`` of one variable-length block, a filemark reads
as b"", closing a written file writes a filemark, and mt-st's verbs move the tape.

The position (file number, block number in the file, end of data) is kept here, as st keeps it,
because tgt 1.0.85's READ POSITION answers zeros. What has been read or written of the tape's
layout (each file's length where its filemark was seen, where the data ends) is kept too, so
``tell`` can give the logical block number from the beginning (filemarks count, as SSC's do)
and a backward move knows where it lands.

Tape commands are not run through ``iscsifs.block.command``: a filemark, the end of data, a short
block and the early warning all come back as CHECK CONDITION and are not failures, so each answer
is read with ``iscsifs.scsi.ssc.tape_condition``; UNIT ATTENTION and BUSY are retried here as
``command`` retries them.

tgt 1.0.85's quirks handled here (``iscsifs.scsi.ssc`` documents the sense): a short block's length
is the request minus INFORMATION, never the residual; when the block is between half and all of
the request tgt sends part of it, so the block is spaced back over and read again at its exact
length; a filemark's and the end of data's data-in is junk; a backward SPACE over filemarks lands
one block too far back, so ``bsf`` rewinds and spaces forward; LOAD UNLOAD is read as START STOP
UNIT, so its LOEJ bit is set; fixed-block mode crashes tgtd on some block lengths, so only variable
mode is offered.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

import trio

from iscsifs.block.identity import inquiry
from iscsifs.block.stats import Stats
from iscsifs.net.api import DataOut, Executor
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import IscsiError
from iscsifs.proto.policy import DEFAULT_POLICY
from iscsifs.scsi import cdb, ssc
from iscsifs.scsi.response import ScsiParseError
from iscsifs.scsi.sense import ScsiError, SenseKey, Status, parse_sense
from iscsifs.scsi.ssc import Condition, SpaceCode, TapeCondition

log = logging.getLogger("iscsifs.block.tape")

UNIT_ATTENTION_RETRIES = 8
# SPACE's count is 24 bits signed; st's MTEOM spaces this many filemarks (0x7fffff).
MAX_SPACE = (1 << 23) - 1


# tgt 1.0.85 runs LOAD UNLOAD as SBC's START STOP UNIT (``spc_start_stop``): byte 4 bit 1, SSC's
# RETEN, is its LOEJ, without which an unload or a load does nothing there (TEST UNIT READY stays
# GOOD and READ goes on reading). To an SSC drive RETEN asks for a retension with the move, which
# can take minutes: the bit goes only to tgt's drives, known by tgt's INQUIRY vendor.
_TGT_LOEJ = 0x02
_TGT_VENDOR = "IET"


def _load_unload(load: bool, tgt: bool) -> bytes:
    raw = bytearray(ssc.load_unload(load))
    if tgt:
        raw[4] |= _TGT_LOEJ
    return bytes(raw)


# -- errors --------------------------------------------------------------------------------------


class TapeError(IscsiError):
    """A tape command failed; ``errno`` is what st would return (EIO unless a subclass says)."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        if errno_ is not None:
            self.errno = errno_


class NoMedium(TapeError):
    errno = errno.ENOMEDIUM


class WriteProtected(TapeError):
    errno = errno.EROFS


class EndOfMedium(TapeError):
    """The early warning was passed: this write was refused, nothing of it was written (st)."""

    errno = errno.ENOSPC


class BlockTooLong(TapeError):
    """The block is longer than the read asked for: st returns ENOMEM ("Cannot allocate memory"),
    and the block is gone: the tape has moved past it."""

    errno = errno.ENOMEM

    def __init__(self, message: str, block_length: int | None) -> None:
        super().__init__(message)
        self.block_length = block_length


class FixedBlockRefused(TapeError):
    errno = errno.EINVAL


_ERRORS: dict[int, type[TapeError]] = {
    errno.ENOMEDIUM: NoMedium,
    errno.EROFS: WriteProtected,
    errno.ENOSPC: EndOfMedium,
}


def _error(what: str, tc: TapeCondition) -> TapeError:
    detail = tc.kind.value if tc.sense is None else f"{tc.kind.value}: {tc.sense}"
    number = tc.errno or errno.EIO
    kind = _ERRORS.get(number)
    if kind is not None:
        return kind(f"{what}: {detail}")
    return TapeError(f"{what}: {detail}", number)


# -- status --------------------------------------------------------------------------------------


# mt-st's General status bits (linux/mtio.h GMT_*), in the order ``mt status`` prints them.
GMT_BITS: tuple[tuple[str, int], ...] = (
    ("EOF", 0x80000000), ("BOT", 0x40000000), ("EOT", 0x20000000), ("SM", 0x10000000), ("EOD", 0x08000000),
    ("WR_PROT", 0x04000000), ("ONLINE", 0x01000000), ("D_6250", 0x800000), ("D_1600", 0x400000),
    ("D_800", 0x200000), ("DR_OPEN", 0x40000), ("IM_REP_EN", 0x10000), ("CLN", 0x8000),
)


@dataclass(frozen=True, slots=True)
class TapeStatus:
    """What ``mt status`` prints (st's MTIOCGET): -1 is st's "unknown"."""

    file_number: int
    block_number: int
    block_size: int  # 0: variable-block mode
    density: int
    bot: bool
    eof: bool  # at the start of a file other than the first: just after a filemark
    eot: bool  # past the early warning
    eod: bool
    online: bool
    write_protected: bool
    door_open: bool  # no tape (DR_OPEN)
    # IM_REP_EN: st sets it whenever it writes asynchronously (do_async_writes, its default), or
    # buffers writes in fixed-block mode, or the drive buffers (MODE SENSE): so with or without a tape.
    buffered: bool
    partition: int = 0
    soft_errors: int = 0

    @property
    def general_status(self) -> int:
        flags = {"EOF": self.eof, "BOT": self.bot, "EOT": self.eot, "EOD": self.eod, "WR_PROT": self.write_protected,
                 "ONLINE": self.online, "DR_OPEN": self.door_open, "IM_REP_EN": self.buffered}
        return sum(bit for name, bit in GMT_BITS if flags.get(name, False))

    def text(self) -> str:
        """mt-st 1.7's ``do_status`` for a SCSI-2 drive, line for line."""
        gstat = self.general_status
        density_name = "default" if self.density == 0 else "no translation"
        bits = "".join(f" {name}" for name, bit in GMT_BITS if gstat & bit)
        return ("SCSI 2 tape drive:\n"
                f"File number={self.file_number}, block number={self.block_number}, partition={self.partition}.\n"
                f"Tape block size {self.block_size} bytes. Density code 0x{self.density:x} ({density_name}).\n"
                f"Soft error count since last status={self.soft_errors}\n"
                f"General status bits on ({gstat:x}):\n"
                f"{bits}\n")


# -- the drive -----------------------------------------------------------------------------------


class TapeDrive:
    """One tape drive (an SSC LUN) with st's non-rewinding semantics. Not safe for concurrent use:
    like a tape device, one caller at a time (the caller serializes).

    Created on a tape at its beginning (just loaded, as a changer's MOVE MEDIUM leaves it) or with
    no tape; ``rewind`` makes the position known again whenever in doubt."""

    def __init__(self, session: Executor, lun: int, stats: Stats | None = None) -> None:
        self.session = session
        self.lun = lun
        self.stats = stats
        self.file: int | None = 0  # None: unknown (st's -1)
        self.block: int | None = 0  # within the file
        self.at_eod = False
        self.past_early_warning = False  # st's EOT bit: written past the early warning
        self.medium: bool | None = None  # what the drive last said; None: not asked yet
        self.write_protected = False
        self._written = False  # the last operation was a write: closing writes a filemark
        self._enospc_due = False  # the last write crossed the early warning: the next one is refused
        self._lengths: dict[int, int] = {}  # file number -> its data blocks, where its filemark was seen
        self._eod: tuple[int, int | None] | None = None  # (file, block) of the end of data, where known
        self._tgt: bool | None = None  # tgt's drive (LOAD UNLOAD needs its LOEJ); None: not asked yet

    def __repr__(self) -> str:
        return (f"<TapeDrive {self.session.target_name} LUN {self.lun} file={self.file} block={self.block}"
                f"{' EOD' if self.at_eod else ''}>")

    # -- running one command

    async def _run(self, cdb_bytes: bytes, name: str, *, data_out: DataOut | None = None,
                   expected_in: int = 0) -> tuple[ScsiResult, TapeCondition | None]:
        """Run one command; GOOD gives (result, None), CHECK CONDITION its interpretation. UNIT
        ATTENTION and BUSY are retried (a tape that was changed says so: the position is then the
        beginning); any other status raises."""
        attentions = 0
        backoff = 0.005
        first_refusal: float | None = None
        requested = expected_in if data_out is None else len(data_out)
        while True:
            started = trio.current_time()
            try:
                result = await self.session.execute(self.lun, cdb_bytes, data_out=data_out, expected_in=expected_in)
            except IscsiError:
                self._record(name, started, ok=False)
                raise
            good = result.status in (Status.GOOD, Status.CONDITION_MET) and result.response == 0
            self._record(name, started, ok=good, read=len(result.data),
                         written=len(data_out) if data_out is not None and good else 0)
            if result.response != 0:
                raise TapeError(f"{name} (iSCSI response 0x{result.response:02x}, target failure)")
            if result.status in (Status.GOOD, Status.CONDITION_MET):
                self.medium = True
                return result, None
            sense = parse_sense(bytes(result.sense))
            if result.status == Status.CHECK_CONDITION and sense is not None \
                    and sense.key == SenseKey.UNIT_ATTENTION and attentions < UNIT_ATTENTION_RETRIES:
                attentions += 1
                # tgt raises 29/00 after each login and keeps the position; 28/00 (not ready to
                # ready change, medium may have changed) is a tape loaded: at its beginning.
                if sense.asc == 0x28:
                    log.info("LUN %d: a tape was loaded (%s): at its beginning", self.lun, sense)
                    self._reset_position(forget_layout=True)
                else:
                    log.debug("LUN %d: %s reported unit attention %s; retrying", self.lun, name, sense)
                continue
            busy = result.status in (Status.BUSY, Status.TASK_SET_FULL) or (
                sense is not None and (sense.key == SenseKey.ABORTED_COMMAND or (
                    sense.key == SenseKey.NOT_READY and sense.asc_ascq in ((0x04, 0x01), (0x04, 0x0A)))))
            now = trio.current_time()
            first_refusal = now if first_refusal is None else first_refusal
            if busy and now - first_refusal < DEFAULT_POLICY.busy_retry_time:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            if result.status != Status.CHECK_CONDITION:
                raise ScsiError(result.status, sense, f"{name} on LUN {self.lun}")
            tc = ssc.tape_condition(bytes(result.sense), requested)
            if tc.kind is Condition.NO_MEDIUM:
                self._no_medium()
            else:
                self.medium = True
            return result, tc

    def _record(self, name: str, started: float, *, ok: bool, read: int = 0, written: int = 0) -> None:
        if self.stats is not None:
            self.stats.record(name, trio.current_time() - started, read=read, written=written, ok=ok,
                              target=self.session.target_name, lun=self.lun)

    async def _simple(self, cdb_bytes: bytes, name: str, *, data_out: DataOut | None = None,
                      expected_in: int = 0) -> ScsiResult:
        """A command whose every CHECK CONDITION (bar RECOVERED ERROR) is a failure."""
        result, tc = await self._run(cdb_bytes, name, data_out=data_out, expected_in=expected_in)
        if tc is not None and tc.kind is not Condition.RECOVERED:
            raise _error(name, tc)
        return result

    # -- position bookkeeping

    def _reset_position(self, *, forget_layout: bool = False) -> None:
        self.file, self.block = 0, 0
        self.at_eod = self.past_early_warning = self._written = self._enospc_due = False
        if forget_layout:  # another tape, maybe
            self._lengths.clear()
            self._eod = None
            self.write_protected = False

    def _no_medium(self) -> None:
        # Whatever tape comes next arrives at its beginning (a changer's MOVE MEDIUM leaves it so;
        # ``load`` rewinds), and may be another one.
        self.medium = False
        self._reset_position(forget_layout=True)

    def _unknown(self) -> None:
        self.block = None
        self.at_eod = False

    def _wrote_at(self, file: int | None, block: int | None) -> None:
        """Data went to the tape here: what followed is gone (a write truncates the tape)."""
        if file is None or block is None:
            self._lengths.clear()
            self._eod = None
            return
        for f in [f for f in self._lengths if f >= file]:
            del self._lengths[f]
        self._eod = (file, block)

    def tell(self) -> int:
        """The logical block number from the beginning of the tape, filemarks counted (what SSC's
        READ POSITION would give and ``mt tell`` prints), from the tracked position: tgt's READ
        POSITION reports none. EIO when the position is not known (st's MTIOCPOS on tgt fails too)."""
        if self.medium is False:
            raise NoMedium("tell: no tape in the drive")
        if self.file is None or self.block is None:
            raise TapeError("tell: the position on the tape is not known (rewind first)")
        before = 0
        for f in range(self.file):
            if f not in self._lengths:
                raise TapeError(f"tell: the length of file {f} is not known: this drive has not read or written it "
                                "since the tape was loaded (rewind and read through it)")
            before += self._lengths[f] + 1
        return before + self.block

    # -- reading and writing

    async def read_block(self, max_length: int) -> bytes:
        """One READ(6) in variable mode: the next block, of its real length. b"" at a filemark
        (the tape is then past it: the next file) and at the end of data (every time). A block
        longer than ``max_length`` raises ``BlockTooLong`` (ENOMEM, as st); its data is lost."""
        if max_length <= 0:
            raise TapeError(f"read of {max_length} bytes", errno.EINVAL)
        self._written = False  # st: reading after writing ends the writing, with no filemark
        result, tc = await self._run(ssc.read_6(max_length), "READ(6)", expected_in=max_length)
        if tc is None:
            self._advance(1)
            return bytes(result.data)
        if tc.kind is Condition.FILEMARK:
            # tgt sends junk data-in with a filemark: ignored.
            if self.file is not None and self.block is not None:
                self._lengths[self.file] = self.block
            self.file = None if self.file is None else self.file + 1
            self.block = 0
            self.at_eod = False
            return b""
        if tc.kind is Condition.END_OF_DATA:
            self.at_eod = True
            if self.file is not None:
                self._eod = (self.file, self.block)
            return b""
        if tc.kind is Condition.SHORT_BLOCK:
            received = len(result.data)
            if tc.needs_reread(received):
                # tgt before 1.0.94 sends (request - block) bytes of a short block: when that is
                # less than the block, go back over it and read exactly its length.
                log.debug("LUN %d: short block of %d bytes came as %d: reading it again", self.lun,
                          tc.data_length, received)
                await self._simple(ssc.space_6(SpaceCode.BLOCKS, -1), "SPACE(6)")
                result, again = await self._run(ssc.read_6(tc.data_length), "READ(6)", expected_in=tc.data_length)
                if (again is not None and again.kind is not Condition.RECOVERED) or len(result.data) < tc.data_length:
                    self._unknown()
                    raise TapeError(f"READ(6) of a {tc.data_length}-byte block again failed"
                                    + ("" if again is None else f": {again.kind.value}"))
            self._advance(1)
            return bytes(result.data[: tc.data_length])
        if tc.kind is Condition.LONG_BLOCK:
            self._advance(1)
            size = "" if tc.block_length is None else f"{tc.block_length}-byte "
            raise BlockTooLong(f"a {size}block does not fit a read of {max_length} bytes: its data is lost "
                               "(the tape is past it; st returns ENOMEM)", tc.block_length)
        if tc.kind in (Condition.RECOVERED, Condition.END_OF_MEDIUM):
            self._advance(1)
            return bytes(result.data[: tc.data_length])
        self._unknown()
        raise _error("READ(6)", tc)

    def _advance(self, blocks: int) -> None:
        if self.block is not None:
            self.block += blocks
        self.at_eod = False

    async def write_block(self, data: DataOut) -> bool:
        """One WRITE(6) in variable mode: ``data`` is one block. True when it was written past the
        early warning (st's write then still returns its count). As st, the write after that is
        refused with ``EndOfMedium`` (ENOSPC) without being sent, and the one after it is tried
        again, and so on, until the medium is really full."""
        if self.write_protected:
            raise WriteProtected("write: the tape is write-protected")
        if self._enospc_due:
            self._enospc_due = False
            raise EndOfMedium("write: past the early warning: end of medium")
        if not len(data):
            return False  # st: a write of nothing writes no block
        _, tc = await self._run(ssc.write_6(len(data)), "WRITE(6)", data_out=data)
        file, block = self.file, self.block  # after the command: a changed tape starts at the beginning
        if tc is not None and tc.kind is Condition.END_OF_MEDIUM and tc.residue == len(data):
            self._unknown()
            raise EndOfMedium("WRITE(6): end of medium: the block was not written")
        if tc is not None and tc.kind not in (Condition.END_OF_MEDIUM, Condition.RECOVERED):
            if tc.kind is Condition.DATA_PROTECT:
                self.write_protected = True
            else:
                self._unknown()
            raise _error("WRITE(6)", tc)
        self._wrote_at(file, None if block is None else block + 1)
        self._advance(1)
        self.at_eod = True
        self._written = True
        crossed = tc is not None and tc.kind is Condition.END_OF_MEDIUM
        if crossed:
            log.info("LUN %d: written past the early warning (end of medium near)", self.lun)
            self.past_early_warning = True
        self._enospc_due = crossed
        return crossed

    async def write_filemarks(self, count: int = 1) -> None:
        """WRITE FILEMARKS: ``count`` files end here (st's MTWEOF); the tape is after them."""
        if count < 0:
            raise TapeError("weof: negative count", errno.EINVAL)
        if self.write_protected:
            raise WriteProtected("weof: the tape is write-protected")
        _, tc = await self._run(ssc.write_filemarks_6(count), "WRITE FILEMARKS(6)")
        file, block = self.file, self.block
        if tc is not None and tc.kind not in (Condition.END_OF_MEDIUM, Condition.RECOVERED):
            if tc.kind is Condition.DATA_PROTECT:
                self.write_protected = True
            else:
                self._unknown()
            raise _error("WRITE FILEMARKS(6)", tc)
        self._written = False
        if count == 0:
            return
        if tc is not None:
            self.past_early_warning = True
        self._wrote_at(file, block)
        if file is not None and block is not None:
            self._lengths[file] = block
            for f in range(file + 1, file + count):
                self._lengths[f] = 0
            self._eod = (file + count, 0)
        self.file = None if file is None else file + count
        self.block = 0
        self.at_eod = True

    async def weof(self, count: int = 1) -> None:
        """mt-st's name for ``write_filemarks``."""
        await self.write_filemarks(count)

    async def close_after_write(self) -> bool:
        """What st does when a file written through the device is closed: one filemark ends it.
        True when one was written (the last operation was a write)."""
        if not self._written:
            return False
        await self.write_filemarks(1)
        return True

    async def _filemark_if_written(self) -> None:
        # st: rewind, offline and bsf after a write first end the file with a filemark.
        if self._written:
            await self.write_filemarks(1)

    # -- moving

    async def rewind(self) -> None:
        await self._filemark_if_written()
        await self._simple(ssc.rewind(), "REWIND")
        self._reset_position()

    async def _space(self, code: SpaceCode, count: int, name: str) -> TapeCondition | None:
        _, tc = await self._run(ssc.space_6(code, count), name)
        return tc

    async def fsf(self, count: int = 1) -> None:
        """MTFSF: forward past ``count`` filemarks: the first block of a later file."""
        if count <= 0:
            return
        self._written = False
        tc = await self._space(SpaceCode.FILEMARKS, count, "SPACE(6) filemarks")
        file = self.file
        if tc is None or tc.kind is Condition.RECOVERED:
            self.file = None if file is None else file + count
            self.block = 0
            self.at_eod = False
            return
        if tc.kind is Condition.END_OF_DATA:
            self._at_end_of_data()
            raise TapeError(f"fsf {count}: reached the end of data")
        self._unknown()
        raise _error(f"fsf {count}", tc)

    def _at_end_of_data(self) -> None:
        self.at_eod = True
        if self._eod is not None:
            self.file, self.block = self._eod
        else:
            self.file, self.block = None, None

    async def bsf(self, count: int = 1) -> None:
        """MTBSF: back over ``count`` filemarks, landing on the beginning-of-tape side of the last
        one: the end of an earlier file. tgt 1.0.85's backward SPACE over filemarks lands one block
        too far back (it counts the block under the head), so this rewinds and spaces forward from
        the tracked file number instead."""
        if count <= 0:
            return
        await self._filemark_if_written()
        if self.file is None:
            raise TapeError(f"bsf {count}: the file number is not known (rewind first)")
        target = self.file - count
        await self._simple(ssc.rewind(), "REWIND")
        self._reset_position()
        if target < 0:
            raise TapeError(f"bsf {count}: the tape has only {count + target} filemarks before this file: "
                            "at the beginning")
        tc = await self._space(SpaceCode.FILEMARKS, target + 1, "SPACE(6) filemarks")
        if tc is not None and tc.kind is not Condition.RECOVERED:
            if tc.kind is Condition.END_OF_DATA:
                self._at_end_of_data()
            else:
                self._unknown()
            raise _error(f"bsf {count}", tc)
        # After filemark ``target``: one block back is before it (tgt counts a filemark as a block
        # when spacing blocks; a drive that stops at it reports FILEMARK, also before it).
        tc = await self._space(SpaceCode.BLOCKS, -1, "SPACE(6) blocks")
        if tc is not None and tc.kind not in (Condition.RECOVERED, Condition.FILEMARK):
            self._unknown()
            raise _error(f"bsf {count}", tc)
        self.file = target
        self.block = self._lengths.get(target)
        self.at_eod = False

    async def fsr(self, count: int = 1) -> None:
        """MTFSR: forward over ``count`` blocks. As st on a drive that stops at a filemark: one in
        the way is crossed, the tape is at the start of the next file, and it is an error (EIO)."""
        if count <= 0:
            return
        self._written = False
        length = None if self.file is None else self._lengths.get(self.file)
        if self.block is not None and length is not None and self.block + count > length:
            # tgt spaces over filemarks as if they were blocks: stop at the first, as SSC says.
            tc = await self._space(SpaceCode.BLOCKS, length - self.block + 1, "SPACE(6) blocks")
            if tc is not None and tc.kind not in (Condition.RECOVERED, Condition.FILEMARK):
                self._unknown()
                raise _error(f"fsr {count}", tc)
            crossed = length - self.block
            self.file = None if self.file is None else self.file + 1
            self.block = 0
            self.at_eod = False
            raise TapeError(f"fsr {count}: crossed a filemark after {crossed} blocks")
        tc = await self._space(SpaceCode.BLOCKS, count, "SPACE(6) blocks")
        await self._spaced_blocks(count, tc, f"fsr {count}")

    async def bsr(self, count: int = 1) -> None:
        """MTBSR: back over ``count`` blocks; a filemark in the way stops it on its far side (the
        end of the previous file) with EIO, the beginning of the tape too."""
        if count <= 0:
            return
        self._written = False
        if self.block is not None and count > self.block:
            # tgt would space over the filemark as a block, and stops silently at the beginning.
            back = self.block + (0 if self.file == 0 else 1)
            if back:
                tc = await self._space(SpaceCode.BLOCKS, -back, "SPACE(6) blocks")
                if tc is not None and tc.kind not in (Condition.RECOVERED, Condition.FILEMARK,
                                                      Condition.BEGINNING_OF_MEDIUM):
                    self._unknown()
                    raise _error(f"bsr {count}", tc)
            self.at_eod = False
            if self.file == 0:
                self.block = 0
                raise TapeError(f"bsr {count}: reached the beginning of the tape")
            self.file = None if self.file is None else self.file - 1
            self.block = None if self.file is None else self._lengths.get(self.file)
            raise TapeError(f"bsr {count}: crossed a filemark")
        tc = await self._space(SpaceCode.BLOCKS, -count, "SPACE(6) blocks")
        await self._spaced_blocks(-count, tc, f"bsr {count}")

    async def _spaced_blocks(self, count: int, tc: TapeCondition | None, what: str) -> None:
        if tc is None or tc.kind is Condition.RECOVERED:
            self._advance(count)
            return
        if tc.kind is Condition.END_OF_DATA:
            # tgt says so even when the move ended exactly at the end of data: fine if that is
            # where it was to go.
            landing = None if self.file is None or self.block is None else (self.file, self.block + count)
            if tc.residue is None and self._eod is not None and landing == self._eod:
                self.block = landing[1]
                self.at_eod = True
                return
            if tc.residue is None and self._eod is None:
                self._advance(count)
                self.at_eod = True
                return
            self._at_end_of_data()
            raise TapeError(f"{what}: reached the end of data")
        if tc.kind is Condition.FILEMARK:  # a drive that stops at a filemark (not tgt)
            if count > 0:
                self.file = None if self.file is None else self.file + 1
                self.block = 0
            else:
                self.file = None if self.file is None else self.file - 1
                self.block = None if self.file is None else self._lengths.get(self.file)
            self.at_eod = False
            raise TapeError(f"{what}: crossed a filemark")
        if tc.kind is Condition.BEGINNING_OF_MEDIUM:
            self._reset_position()
        else:
            self._unknown()
        raise _error(what, tc)

    async def eod(self) -> None:
        """MTEOM: to the end of data, where a write appends. The file number is counted (st spaces
        filemarks first for it; tgt's SPACE says nothing of how many it crossed, so one at a time
        when the tape's layout is not known)."""
        self._written = False
        if self._eod is None or self.file is None:
            while True:
                tc = await self._space(SpaceCode.FILEMARKS, 1, "SPACE(6) filemarks")
                if tc is None or tc.kind is Condition.RECOVERED:
                    self.file = None if self.file is None else self.file + 1
                    self.block = 0
                    continue
                if tc.kind is Condition.END_OF_DATA:
                    break
                self._unknown()
                raise _error("eod", tc)
            self.block = None
            if self.file is not None:
                self._eod = (self.file, None)
        tc = await self._space(SpaceCode.END_OF_DATA, 0, "SPACE(6) end of data")
        if tc is not None and tc.kind not in (Condition.RECOVERED, Condition.END_OF_DATA):
            self._unknown()
            raise _error("eod", tc)
        if self._eod is not None:
            self.file, self.block = self._eod
        self.at_eod = True

    # -- the medium and the mode

    async def offline(self) -> None:
        """MTOFFL (``mt offline``, ``eject``): rewind and unload; then no tape (ENOMEDIUM)."""
        await self._filemark_if_written()
        tgt = await self._is_tgt()
        await self._simple(ssc.rewind(), "REWIND")
        await self._simple(_load_unload(False, tgt), "LOAD UNLOAD")
        self._no_medium()

    async def _is_tgt(self) -> bool:
        """Is this drive tgt's (its INQUIRY vendor)? Asked once, on the first load or unload."""
        if self._tgt is None:
            self._tgt = (await inquiry(self.session, self.lun, self.stats)).vendor.strip() == _TGT_VENDOR
        return self._tgt

    async def eject(self) -> None:
        """mt-st's other name for ``offline``."""
        await self.offline()

    async def load(self) -> None:
        """MTLOAD: load the tape in the drive, at its beginning. tgt keeps the position across an
        unload and a load, so this rewinds too."""
        await self._simple(_load_unload(True, await self._is_tgt()), "LOAD UNLOAD")
        await self._simple(ssc.rewind(), "REWIND")
        self._reset_position(forget_layout=True)
        self.medium = True

    async def erase(self) -> None:
        """MTERASE (long). tgt does not support ERASE: it answers ILLEGAL REQUEST, raised as is."""
        if self.write_protected:
            raise WriteProtected("erase: the tape is write-protected")
        try:
            await self._simple(ssc.erase_6(long=True), "ERASE(6)")
        except TapeError as e:
            if e.errno == errno.EOPNOTSUPP:
                raise TapeError("erase: the drive does not support ERASE (ILLEGAL REQUEST, invalid command "
                                "operation code)", errno.EOPNOTSUPP) from None
            raise
        self._wrote_at(self.file, self.block)

    async def mode(self) -> ssc.TapeMode:
        result = await self._simple(ssc.mode_sense_6_block_descriptor(), "MODE SENSE(6)",
                                    expected_in=ssc.MODE_SENSE_BLOCK_DESCRIPTOR_ALLOCATION)
        try:
            mode = ssc.parse_mode_sense_6(result.data)
        except ScsiParseError as e:
            raise TapeError(f"MODE SENSE(6): {e}") from None
        self.write_protected = mode.write_protected
        return mode

    async def setblk(self, block_length: int) -> None:
        """MTSETBLK: 0 is variable-block mode, the only one offered: fixed-block mode crashes
        tgtd 1.0.85 on some block lengths (and READ BLOCK LIMITS truncates them to 8 bits)."""
        if block_length != 0:
            raise FixedBlockRefused(f"setblk {block_length}: fixed-block mode is not supported (it crashes "
                                    "tgtd 1.0.85 on some block lengths); use setblk 0, variable-block mode")
        current = await self.mode()
        cdb_bytes, params = ssc.mode_select_6_block_length(0, density_code=current.density_code or 0,
                                                           buffered_mode=current.buffered_mode)
        await self._simple(cdb_bytes, "MODE SELECT(6)", data_out=params)

    async def status(self) -> TapeStatus:
        """What ``mt status`` shows: TEST UNIT READY and MODE SENSE for the drive's side, the
        tracked position for the rest."""
        _, tc = await self._run(cdb.test_unit_ready(), "TEST UNIT READY")
        if tc is not None and tc.kind not in (Condition.RECOVERED, Condition.NO_MEDIUM):
            raise _error("TEST UNIT READY", tc)
        if self.medium is False:
            return TapeStatus(-1, -1, 0, 0, bot=False, eof=False, eot=False, eod=False, online=False,
                              write_protected=False, door_open=True, buffered=True)
        mode = await self.mode()
        file = -1 if self.file is None else self.file
        block = -1 if self.block is None else self.block
        return TapeStatus(file, block, mode.block_length or 0, mode.density_code or 0,
                          bot=block == 0 and file == 0, eof=block == 0 and file != 0,
                          eot=self.past_early_warning, eod=self.at_eod and not self.past_early_warning,
                          online=True, write_protected=mode.write_protected, door_open=False,
                          buffered=True)  # st's asynchronous writes (see TapeStatus.buffered)


__all__ = [
    "BlockTooLong",
    "EndOfMedium",
    "FixedBlockRefused",
    "NoMedium",
    "TapeDrive",
    "TapeError",
    "TapeStatus",
    "WriteProtected",
]

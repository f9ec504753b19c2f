"""Tape drives (SSC-3): the CDBs of the stream commands, their answers as typed data, and what a
tape command's CHECK CONDITION means (as Linux st(4) reads it). Nothing here keeps state or does
I/O: the position (file and block numbers) is the caller's to track, as st does, because tgt's
READ POSITION does not report it.

Only variable-block mode is the norm here (FIXED=0: one READ or WRITE moves one block of any
length); fixed mode is buildable but the sense interpretation assumes variable mode, where the
INFORMATION field counts bytes.
"""

from __future__ import annotations

import enum
import errno
import struct
from dataclasses import dataclass
from typing import Final

from iscsifs.proto.errors import LocalProtocolError
from iscsifs.scsi.cdb import Op
from iscsifs.scsi.response import ScsiParseError
from iscsifs.scsi.sense import Sense, SenseKey, Status, errno_for, parse_sense


class SscOp:
    """SSC-3 Table 5 opcodes (TEST UNIT READY and MODE SENSE(6) are ``cdb``'s)."""

    REWIND: Final = 0x01
    READ_BLOCK_LIMITS: Final = 0x05
    READ_6: Final = 0x08
    WRITE_6: Final = 0x0A
    WRITE_FILEMARKS_6: Final = 0x10
    SPACE_6: Final = 0x11
    MODE_SELECT_6: Final = 0x15
    ERASE_6: Final = 0x19
    LOAD_UNLOAD: Final = 0x1B
    READ_POSITION: Final = 0x34


MAX_24 = 0xFFFFFF  # the 3-byte TRANSFER LENGTH and COUNT fields of the 6-byte CDBs


def _u24(value: int, what: str) -> bytes:
    if not 0 <= value <= MAX_24:
        raise LocalProtocolError(f"{what} {value} does not fit the 24-bit field of its CDB")
    return value.to_bytes(3, "big")


# -- CDBs ----------------------------------------------------------------------------------------


def read_6(transfer_length: int, *, sili: bool = False, fixed: bool = False) -> bytes:
    """READ(6) (SSC-3 §6.4). Variable mode (FIXED=0): one block, ``transfer_length`` bytes at
    most. SILI asks the drive not to report a shorter block (tgt 1.0.85 reports it anyway). With
    ``fixed``, the length counts blocks of the mode block length; FIXED and SILI together are
    illegal (SSC-3 §6.4: ILLEGAL REQUEST)."""
    if fixed and sili:
        raise LocalProtocolError("READ(6) with both FIXED and SILI is illegal (SSC-3 §6.4)")
    return bytes([SscOp.READ_6, (0x02 if sili else 0) | (0x01 if fixed else 0)]) \
        + _u24(transfer_length, "READ(6) transfer length") + b"\0"


def write_6(transfer_length: int, *, fixed: bool = False) -> bytes:
    """WRITE(6) (SSC-3 §6.8). Variable mode: one block of ``transfer_length`` bytes."""
    return bytes([SscOp.WRITE_6, 0x01 if fixed else 0]) + _u24(transfer_length, "WRITE(6) transfer length") + b"\0"


def write_filemarks_6(count: int = 1, *, immed: bool = False) -> bytes:
    """WRITE FILEMARKS(6) (SSC-3 §6.9). Count 0 only flushes the drive's buffer."""
    return bytes([SscOp.WRITE_FILEMARKS_6, 0x01 if immed else 0]) + _u24(count, "filemark count") + b"\0"


class SpaceCode(enum.IntEnum):
    """SSC-3 Table 29: what SPACE counts."""

    BLOCKS = 0
    FILEMARKS = 1
    SEQUENTIAL_FILEMARKS = 2
    END_OF_DATA = 3


def space_6(code: SpaceCode, count: int = 0) -> bytes:
    """SPACE(6) (SSC-3 §6.6): ``count`` is signed (negative: towards the beginning), two's
    complement in 24 bits; END_OF_DATA ignores it."""
    if not -(1 << 23) <= count < (1 << 23):
        raise LocalProtocolError(f"SPACE count {count} does not fit 24 bits signed")
    return bytes([SscOp.SPACE_6, code & 0x0F]) + (count & MAX_24).to_bytes(3, "big") + b"\0"


def rewind(*, immed: bool = False) -> bytes:
    return bytes([SscOp.REWIND, 0x01 if immed else 0, 0, 0, 0, 0])


def load_unload(load: bool, *, immed: bool = False) -> bytes:
    """LOAD UNLOAD (SSC-3 §7.2): LOAD=1 loads, LOAD=0 unloads (ejects). tgt keeps the position
    across an unload and load: rewind first if it matters."""
    return bytes([SscOp.LOAD_UNLOAD, 0x01 if immed else 0, 0, 0, 0x01 if load else 0, 0])


def read_block_limits() -> bytes:
    return bytes([SscOp.READ_BLOCK_LIMITS, 0, 0, 0, 0, 0])


READ_POSITION_SHORT_LENGTH = 20


def read_position() -> bytes:
    """READ POSITION, short form (SSC-3 §7.5, service action 00h): 20 bytes come back whatever
    the ALLOCATION LENGTH, which this form leaves zero."""
    return bytes([SscOp.READ_POSITION]) + bytes(9)


def erase_6(*, long: bool = True, immed: bool = False) -> bytes:
    """ERASE(6) (SSC-3 §6.2). LONG erases to the end of the medium (what ``mt erase`` sends);
    tgt does not support ERASE at all (ILLEGAL REQUEST 20/00)."""
    return bytes([SscOp.ERASE_6, (0x01 if long else 0) | (0x02 if immed else 0), 0, 0, 0, 0])


MODE_BLOCK_DESCRIPTOR_LENGTH = 8
MODE_SENSE_BLOCK_DESCRIPTOR_ALLOCATION = 4 + MODE_BLOCK_DESCRIPTOR_LENGTH


def mode_sense_6_block_descriptor(allocation_length: int = MODE_SENSE_BLOCK_DESCRIPTOR_ALLOCATION) -> bytes:
    """MODE SENSE(6) with DBD clear and page 0, as st asks: the header (WP, BUFFERED MODE) and
    the block descriptor (density, block length). ``cdb.mode_sense_6`` sets DBD, so not that."""
    return struct.pack(">BBBxBx", Op.MODE_SENSE_6, 0, 0, allocation_length & 0xFF)


def mode_select_6_block_length(block_length: int, *, density_code: int = 0,
                               buffered_mode: int = 0) -> tuple[bytes, bytes]:
    """MODE SELECT(6) (SPC-4 §6.9) with a header and one block descriptor and no page: block
    length 0 is variable-block mode. PF is set: tgt refuses PF=0. ``buffered_mode`` goes in the
    device-specific byte (SSC-3 §8.3.3; st sends back what MODE SENSE said, tgt ignores it)."""
    params = bytes([0, 0, (buffered_mode & 0x07) << 4, MODE_BLOCK_DESCRIPTOR_LENGTH, density_code & 0xFF, 0, 0, 0, 0]) \
        + _u24(block_length, "block length")
    return bytes([SscOp.MODE_SELECT_6, 0x10, 0, 0, len(params), 0]), params


# -- answers -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockLimits:
    """READ BLOCK LIMITS (SSC-3 §7.4). Equal limits mean fixed-block mode with that length.
    tgt 1.0.85 truncates a fixed block length to 8 bits here (512 reads as 0): trust the mode
    block descriptor for the block length, not this."""

    granularity: int  # block lengths are multiples of 2**granularity
    maximum_block_length: int  # 0: no limit
    minimum_block_length: int


def parse_read_block_limits(data: bytes | bytearray | memoryview) -> BlockLimits:
    d = bytes(data)
    if len(d) < 6:
        raise ScsiParseError(f"READ BLOCK LIMITS data of {len(d)} bytes (6 expected)")
    return BlockLimits(d[0] & 0x1F, int.from_bytes(d[1:4], "big"), int.from_bytes(d[4:6], "big"))


@dataclass(frozen=True, slots=True)
class TapeMode:
    """A MODE SENSE(6) header and its block descriptor (SPC-4 §7.5.5, SSC-3 §8.3.3)."""

    medium_type: int
    write_protected: bool  # WP, bit 7 of the device-specific parameter
    buffered_mode: int  # bits 6..4: 0 unbuffered, 1 buffered
    speed: int
    density_code: int | None  # None: no block descriptor came (DBD, or the drive gives none)
    number_of_blocks: int | None
    block_length: int | None  # 0: variable-block mode

    @property
    def variable(self) -> bool:
        return not self.block_length


def parse_mode_sense_6(data: bytes | bytearray | memoryview) -> TapeMode:
    d = bytes(data)
    if len(d) < 4:
        raise ScsiParseError(f"MODE SENSE(6) data of {len(d)} bytes")
    specific, descriptors = d[2], d[3]
    header = (d[1], bool(specific & 0x80), (specific >> 4) & 0x07, specific & 0x0F)
    if descriptors == 0:
        return TapeMode(*header, None, None, None)
    if descriptors < MODE_BLOCK_DESCRIPTOR_LENGTH or len(d) < 4 + MODE_BLOCK_DESCRIPTOR_LENGTH:
        raise ScsiParseError(f"MODE SENSE(6) block descriptor length {descriptors} with {len(d)} bytes of data")
    bd = d[4:12]
    return TapeMode(*header, bd[0], int.from_bytes(bd[1:4], "big"), int.from_bytes(bd[5:8], "big"))


@dataclass(frozen=True, slots=True)
class Position:
    """READ POSITION short form (SSC-3 §7.5.2). tgt 1.0.85 answers zeros with BPU set: the
    position is unknown there (and st's MTIOCPOS fails with EIO), so track it instead."""

    beginning_of_partition: bool  # BOP
    end_of_partition: bool  # EOP: between early warning and the end
    position_unknown: bool  # BPU (SSC-2's name; LOLU in SSC-4): the block locations mean nothing
    programmable_early_warning: bool  # BPEW
    partition: int
    first_block: int | None  # FIRST BLOCK LOCATION: the next block to transfer; None when unknown
    last_block: int | None  # LAST BLOCK LOCATION: the next block to go to the medium
    blocks_in_buffer: int | None  # None when LOCU says unknown
    bytes_in_buffer: int | None  # None when BYCU says unknown


def parse_read_position(data: bytes | bytearray | memoryview) -> Position:
    d = bytes(data)
    if len(d) < READ_POSITION_SHORT_LENGTH:
        raise ScsiParseError(f"READ POSITION data of {len(d)} bytes ({READ_POSITION_SHORT_LENGTH} expected)")
    flags = d[0]
    unknown = bool(flags & 0x04)
    first, last = struct.unpack_from(">II", d, 4)
    return Position(bool(flags & 0x80), bool(flags & 0x40), unknown, bool(flags & 0x01), d[1],
                    None if unknown else first, None if unknown else last,
                    None if flags & 0x20 else int.from_bytes(d[13:16], "big"),
                    None if flags & 0x10 else int.from_bytes(d[16:20], "big"))


# -- sense of a stream command -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamSense:
    """Sense data with what SSC adds to it: the FILEMARK, EOM and ILI bits (byte 2 of fixed
    format, the stream commands descriptor of descriptor format) and the INFORMATION field, signed
    (SSC-3 §4.2.14: a negative residue is a block longer than asked). ``sense.Sense`` keeps
    neither the bits nor a descriptor-format INFORMATION, so they are read here."""

    sense: Sense
    filemark: bool = False
    eom: bool = False
    ili: bool = False
    information: int | None = None  # signed; None when not VALID


def _signed(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


def parse_stream_sense(raw: bytes | bytearray | memoryview) -> StreamSense | None:
    """Fixed (0x70/0x71) or descriptor (0x72/0x73) sense; None when it is neither."""
    d = bytes(raw)
    sense = parse_sense(d)
    if sense is None:
        return None
    if d[0] & 0x7F in (0x70, 0x71):
        d = d.ljust(7, b"\0")
        info = _signed(d[3:7]) if d[0] & 0x80 else None
        return StreamSense(sense, bool(d[2] & 0x80), bool(d[2] & 0x40), bool(d[2] & 0x20), info)
    filemark = eom = ili = False
    info = None
    end = min(len(d), 8 + (d[7] if len(d) > 7 else 0))
    i = 8
    while i + 2 <= end:
        kind, length = d[i], d[i + 1]
        body = d[i + 2 : min(i + 2 + length, end)]
        if kind == 0x00 and len(body) >= 10 and body[0] & 0x80:  # information (SPC-4 §4.5.2.2)
            info = _signed(body[2:10])
        elif kind == 0x04 and len(body) >= 2:  # stream commands (SSC-3 §4.2.16.3)
            filemark, eom, ili = bool(body[1] & 0x80), bool(body[1] & 0x40), bool(body[1] & 0x20)
        i += 2 + length
    return StreamSense(sense, filemark, eom, ili, info)


class Condition(enum.Enum):
    """What a tape command's CHECK CONDITION was, in st(4)'s terms."""

    FILEMARK = "filemark"  # a read crossed a filemark: read() returns 0, the tape is past it
    END_OF_DATA = "end of data"  # nothing more recorded (BLANK CHECK, or 00/05)
    END_OF_MEDIUM = "end of medium"  # early warning: the data WAS written; the next write is ENOSPC
    SHORT_BLOCK = "short block"  # the block was shorter than asked: its length is requested - INFO
    LONG_BLOCK = "long block"  # longer than asked: not delivered (st: ENOMEM), and skipped
    BEGINNING_OF_MEDIUM = "beginning of medium"  # a backward move stopped at the start
    NO_MEDIUM = "no medium"
    DATA_PROTECT = "write protected"
    RECOVERED = "recovered"  # RECOVERED ERROR: the command did complete
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TapeCondition:
    """The interpretation of one CHECK CONDITION of a variable-mode stream command that asked
    for (READ) or sent (WRITE) ``requested`` bytes.

    ``data_length`` is how many leading bytes of the data-in are the block's (READ) or of the
    block the drive took (WRITE); 0 means ignore the data-in. It comes from the INFORMATION
    field, never from the iSCSI residual: tgt 1.0.85 sends the wrong amount for a short block
    (requested - length bytes, residual = length; fixed in v1.0.94) and ``requested`` bytes of
    junk with residual 0 at a filemark or the end of data."""

    kind: Condition
    errno: int  # 0: not a failure of the command by itself
    data_length: int = 0
    block_length: int | None = None  # the block's true length, where the sense says it
    residue: int | None = None  # INFORMATION, signed
    sense: Sense | None = None

    def needs_reread(self, received: int) -> bool:
        """tgt before v1.0.94 sent fewer bytes of a short block than it has (``received`` <
        ``data_length``): SPACE back one block and READ again with exactly ``block_length``."""
        return self.kind is Condition.SHORT_BLOCK and received < self.data_length


# Sense keys under which the tape bits describe a command that completed as far as it could.
_BENIGN = (SenseKey.NO_SENSE, SenseKey.RECOVERED_ERROR)
_FILEMARK_DETECTED = (0x00, 0x01)
_END_OF_PARTITION = (0x00, 0x02)  # end-of-partition/medium detected
_BEGINNING_OF_PARTITION = (0x00, 0x04)
_END_OF_DATA_DETECTED = (0x00, 0x05)
_MEDIUM_NOT_PRESENT = 0x3A


def tape_condition(sense_data: bytes | bytearray | memoryview, requested: int) -> TapeCondition:
    """Classify the sense of a variable-mode READ(6), WRITE(6), SPACE or WRITE FILEMARKS that
    ended in CHECK CONDITION. Never raises: sense it cannot read is an ERROR (EIO)."""
    ss = parse_stream_sense(sense_data)
    if ss is None:
        return TapeCondition(Condition.ERROR, errno.EIO)
    s, info = ss.sense, ss.information
    if s.key == SenseKey.NOT_READY and s.asc == _MEDIUM_NOT_PRESENT:
        return TapeCondition(Condition.NO_MEDIUM, errno.ENOMEDIUM, residue=info, sense=s)
    if s.key == SenseKey.DATA_PROTECT:
        return TapeCondition(Condition.DATA_PROTECT, errno.EROFS, residue=info, sense=s)
    # tgt 1.0.85 reports the end of data as key byte 0x48 (BLANK CHECK with a bogus EOM bit) and
    # ASC 00/00, not 00/05; a SPACE into it gives NO SENSE 00/05. Any BLANK CHECK is the end.
    if s.key == SenseKey.BLANK_CHECK or (s.key in _BENIGN and s.asc_ascq == _END_OF_DATA_DETECTED):
        return TapeCondition(Condition.END_OF_DATA, errno.EIO, residue=info, sense=s)
    if s.key not in _BENIGN:
        return TapeCondition(Condition.ERROR, errno_for(Status.CHECK_CONDITION, s), residue=info, sense=s)
    if ss.filemark or s.asc_ascq == _FILEMARK_DETECTED:
        return TapeCondition(Condition.FILEMARK, 0, residue=info, sense=s)
    if ss.ili:
        if info is None or info > requested:  # no residue to go by, or a length below zero
            return TapeCondition(Condition.ERROR, errno.EIO, residue=info, sense=s)
        if info < 0:
            return TapeCondition(Condition.LONG_BLOCK, errno.ENOMEM, 0, requested - info, info, s)
        return TapeCondition(Condition.SHORT_BLOCK, 0, requested - info, requested - info, info, s)
    if s.asc_ascq == _BEGINNING_OF_PARTITION:
        return TapeCondition(Condition.BEGINNING_OF_MEDIUM, errno.EIO, residue=info, sense=s)
    done = requested - info if info is not None and 0 <= info <= requested else requested
    # tgt 1.0.85 signals early warning with the EOM bit and ASC 00/00, after writing the block.
    if ss.eom or s.asc_ascq == _END_OF_PARTITION:
        return TapeCondition(Condition.END_OF_MEDIUM, 0, done, residue=info, sense=s)
    if s.key == SenseKey.RECOVERED_ERROR:
        return TapeCondition(Condition.RECOVERED, 0, done, residue=info, sense=s)
    return TapeCondition(Condition.ERROR, errno.EIO, residue=info, sense=s)

"""SCSI status and sense data (SPC-4 §4.5), and the one table that maps them to errno values."""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass

from iscsifs.proto.errors import IscsiError


class Status(enum.IntEnum):
    """SAM-5 §5.3 status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class SenseKey(enum.IntEnum):
    """SPC-4 §4.5.6 sense keys."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE


def status_text(status: int) -> str:
    """"CHECK CONDITION", as SAM-5 writes it; a code it does not name, in hex."""
    try:
        return Status(status).name.replace("_", " ")
    except ValueError:
        return f"status 0x{status:02x}"


def sense_key_text(key: int) -> str:
    try:
        return SenseKey(key).name.replace("_", " ")
    except ValueError:
        return hex(key)


@dataclass(frozen=True, slots=True)
class Sense:
    key: int
    asc: int
    ascq: int
    information: int | None = None

    @property
    def asc_ascq(self) -> tuple[int, int]:
        return self.asc, self.ascq

    def __str__(self) -> str:
        return f"{sense_key_text(self.key)} {self.asc:02x}/{self.ascq:02x}"


def parse_sense(raw: bytes) -> Sense | None:
    """Fixed (0x70/0x71) and descriptor (0x72/0x73) format sense data."""
    if len(raw) < 2:
        return None
    code = raw[0] & 0x7F
    if code in (0x70, 0x71):
        raw = raw.ljust(14, b"\0")
        info = int.from_bytes(raw[3:7], "big") if raw[0] & 0x80 else None
        return Sense(raw[2] & 0x0F, raw[12], raw[13], info)
    if code in (0x72, 0x73):
        raw = raw.ljust(8, b"\0")
        return Sense(raw[1] & 0x0F, raw[2], raw[3])
    return None


# ASC/ASCQ pairs worth naming in messages.
ASC_TEXT: dict[tuple[int, int], str] = {
    (0x04, 0x01): "becoming ready",
    (0x11, 0x00): "unrecovered read error",
    (0x1A, 0x00): "parameter list length error",
    (0x20, 0x00): "invalid command operation code",
    (0x21, 0x00): "LBA out of range",
    (0x24, 0x00): "invalid field in CDB",
    (0x25, 0x00): "logical unit not supported",
    (0x27, 0x00): "write protected",
    (0x28, 0x00): "medium may have changed",
    (0x29, 0x00): "power on, reset, or bus device reset occurred",
    (0x29, 0x01): "power on occurred",
    (0x29, 0x02): "SCSI bus reset occurred",
    (0x29, 0x03): "bus device reset function occurred",
    (0x29, 0x04): "device internal reset",
    (0x29, 0x07): "I_T nexus loss occurred",
    (0x2A, 0x01): "mode parameters changed",
    (0x2A, 0x09): "capacity data has changed",
    (0x3A, 0x00): "medium not present",
    (0x3F, 0x0E): "reported LUNs data has changed",
}


class ScsiError(IscsiError):
    """A SCSI command did not complete with GOOD status. ``errno`` is what a file user should see."""

    def __init__(self, status: int, sense: Sense | None = None, command: str = "") -> None:
        self.status = status
        self.sense = sense
        self.command = command
        self.errno = errno_for(status, sense)
        what = status_text(status)
        if sense is not None:
            detail = ASC_TEXT.get(sense.asc_ascq, "")
            what = f"{what}: {sense}" + (f" ({detail})" if detail else "")
        super().__init__(f"{command or 'SCSI command'} failed: {what}")


# The sense -> errno table. A file user sees these through FUSE; keep them what a local disk gives.
SENSE_KEY_ERRNO: dict[int, int] = {
    SenseKey.NOT_READY: errno.EIO,
    SenseKey.MEDIUM_ERROR: errno.EIO,
    SenseKey.HARDWARE_ERROR: errno.EIO,
    SenseKey.ILLEGAL_REQUEST: errno.EINVAL,
    SenseKey.UNIT_ATTENTION: errno.EIO,  # only seen after retries are used up
    SenseKey.DATA_PROTECT: errno.EROFS,
    SenseKey.BLANK_CHECK: errno.EIO,
    SenseKey.ABORTED_COMMAND: errno.EIO,
    SenseKey.VOLUME_OVERFLOW: errno.ENOSPC,
    SenseKey.MISCOMPARE: errno.EILSEQ,
}
ASC_ERRNO: dict[tuple[int, int], int] = {
    (0x21, 0x00): errno.ENOSPC,  # LBA out of range: what a write past the end of a device gives
    (0x20, 0x00): errno.EOPNOTSUPP,  # invalid opcode: the LUN cannot do this
    (0x25, 0x00): errno.ENXIO,  # logical unit not supported
    (0x3A, 0x00): errno.ENOMEDIUM,
    (0x27, 0x00): errno.EROFS,
}
STATUS_ERRNO: dict[int, int] = {
    Status.BUSY: errno.EBUSY,
    Status.TASK_SET_FULL: errno.EBUSY,
    Status.RESERVATION_CONFLICT: errno.EBUSY,  # fail fast: someone else holds the LUN
    Status.ACA_ACTIVE: errno.EIO,
    Status.TASK_ABORTED: errno.EIO,
}


def errno_for(status: int, sense: Sense | None) -> int:
    if status == Status.CHECK_CONDITION and sense is not None:
        return ASC_ERRNO.get(sense.asc_ascq, SENSE_KEY_ERRNO.get(sense.key, errno.EIO))
    return STATUS_ERRNO.get(status, errno.EIO)


def is_unit_attention(status: int, sense: Sense | None) -> bool:
    return status == Status.CHECK_CONDITION and sense is not None and sense.key == SenseKey.UNIT_ATTENTION

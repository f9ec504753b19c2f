"""The sans-I/O half of ``iscsifs raw``: CDB arguments in, and out the lines and exit status that
sg3_utils' ``sg_raw`` (1.46) gives for the same outcome, so scripts written for it keep working.

Nothing here sends a command. The texts (sense keys, ASC/ASCQ names, hex dumps, the status line)
are the ones sg3_utils prints, checked against libsgutils2 1.46; the names themselves are SPC-4's
(Annex D) in sg3_utils' capitalisation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from iscsifs.scsi.sense import SenseKey, Status

# sg_raw's own bounds (MIN_SCSI_CDBSZ, MAX_SCSI_CDBSZ): SPC-4 variable-length CDBs reach 260 bytes.
MIN_CDB_LENGTH = 6
MAX_CDB_LENGTH = 260


class CdbArgumentError(ValueError):
    """A CDB given on the command line is malformed; the message is one line, sg_raw's words."""


_HEX_BYTE = re.compile(r"[0-9a-fA-F]{1,2}")


def expected_cdb_length(cdb: bytes) -> int | None:
    """The length SPC-4 §4.2.5.1 fixes for this CDB's operation code group, or None where it
    does not (the reserved group 3 and the vendor-specific groups 6 and 7)."""
    opcode = cdb[0]
    if opcode == 0x7F and len(cdb) >= 8:
        return 8 + cdb[7]  # variable-length CDB (SPC-4 §4.2.5.3): ADDITIONAL CDB LENGTH
    return {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(opcode >> 5)


def parse_cdb_arguments(args: Sequence[str]) -> bytes:
    """sg_raw's ``CDB0 CDB1 ...``: one hex byte (1 or 2 digits) per argument."""
    for arg in args:
        if not _HEX_BYTE.fullmatch(arg):
            raise CdbArgumentError(f"Invalid command byte '{arg}'")
    cdb = bytes(int(arg, 16) for arg in args)
    if len(cdb) < MIN_CDB_LENGTH:
        raise CdbArgumentError(f"CDB too short (min. {MIN_CDB_LENGTH} bytes)")
    if len(cdb) > MAX_CDB_LENGTH:
        raise CdbArgumentError(f"CDB too long (max. {MAX_CDB_LENGTH} bytes)")
    # sg_raw sends any length; a target reads a short CDB's missing bytes as whatever follows,
    # so a length the opcode's group contradicts is refused before anything is sent.
    want = expected_cdb_length(cdb)
    if want is not None and want != len(cdb):
        raise CdbArgumentError(f"CDB of {len(cdb)} bytes, but opcode 0x{cdb[0]:02x} takes {want}")
    return cdb


# -- hex dumps (sg3_utils' hex2stderr / hex2str) ---------------------------------------------------


def _hex_bytes(chunk: bytes) -> str:
    return "".join(f"{b:02x} " + (" " if i == 7 else "") for i, b in enumerate(chunk))


def _ascii(chunk: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)


def hex_dump(data: bytes) -> list[str]:
    """sg_raw's "Received N bytes of data:" dump: offset, 16 bytes, ASCII from column 60."""
    return [f" {at:02x}".ljust(8) + _hex_bytes(data[at : at + 16]).ljust(52) + _ascii(data[at : at + 16])
            for at in range(0, len(data), 16)]


def hex_lines(data: bytes, *, ascii_column: bool) -> list[str]:
    """The dump sg_vpd prints under a designator it cannot decode: no offset; with the ASCII
    column every line is padded to full width, without it trailing spaces go."""
    if ascii_column:
        return [_hex_bytes(data[at : at + 16]).ljust(52) + _ascii(data[at : at + 16]).ljust(16)
                for at in range(0, len(data), 16)]
    return [_hex_bytes(data[at : at + 16]).rstrip() for at in range(0, len(data), 16)]


# -- status and sense texts -----------------------------------------------------------------------

_STATUS_TEXT: dict[int, str] = {
    0x00: "Good", 0x02: "Check Condition", 0x04: "Condition Met", 0x08: "Busy",
    0x10: "Intermediate (obsolete)", 0x14: "Intermediate-Condition Met (obsolete)",
    0x18: "Reservation Conflict", 0x22: "Command terminated (obsolete)", 0x28: "Task Set Full",
    0x30: "ACA Active", 0x40: "Task Aborted",
}


def scsi_status_text(status: int) -> str:
    # sg3_utils masks the status byte with 0x7e (bits 0 and 7 are reserved in SAM-5).
    status &= 0x7E
    return _STATUS_TEXT.get(status, f"Unknown status [0x{status:x}]")


_SENSE_KEY_TEXT = (
    "No Sense", "Recovered Error", "Not Ready", "Medium Error", "Hardware Error", "Illegal Request",
    "Unit Attention", "Data Protect", "Blank Check", "Vendor specific(9)", "Copy Aborted",
    "Aborted Command", "Equal", "Volume Overflow", "Miscompare", "Completed",
)

# SPC-4 Annex D, the additional sense codes a disk, a tape, a changer or tgt gives.
ASC_ASCQ_TEXT: dict[tuple[int, int], str] = {
    (0x00, 0x00): "No additional sense information",
    (0x00, 0x01): "Filemark detected",
    (0x00, 0x02): "End-of-partition/medium detected",
    (0x00, 0x03): "Setmark detected",
    (0x00, 0x04): "Beginning-of-partition/medium detected",
    (0x00, 0x05): "End-of-data detected",
    (0x00, 0x06): "I/O process terminated",
    (0x00, 0x16): "operation in progress",  # sg3_utils spells it so
    (0x00, 0x17): "Cleaning requested",
    (0x00, 0x18): "Erase operation in progress",
    (0x00, 0x19): "Locate operation in progress",
    (0x00, 0x1a): "Rewind operation in progress",
    (0x02, 0x00): "No seek complete",
    (0x03, 0x00): "Peripheral device write fault",
    (0x03, 0x02): "Excessive write errors",
    (0x04, 0x00): "Logical unit not ready, cause not reportable",
    (0x04, 0x01): "Logical unit is in process of becoming ready",
    (0x04, 0x02): "Logical unit not ready, initializing command required",
    (0x04, 0x03): "Logical unit not ready, manual intervention required",
    (0x04, 0x04): "Logical unit not ready, format in progress",
    (0x04, 0x07): "Logical unit not ready, operation in progress",
    (0x04, 0x09): "Logical unit not ready, self-test in progress",
    (0x04, 0x0a): "Logical unit not accessible, asymmetric access state transition",
    (0x04, 0x0b): "Logical unit not accessible, target port in standby state",
    (0x04, 0x0c): "Logical unit not accessible, target port in unavailable state",
    (0x04, 0x11): "Logical unit not ready, notify (enable spinup) required",
    (0x04, 0x12): "Logical unit not ready, offline",
    (0x04, 0x1b): "Logical unit not ready, sanitize in progress",
    (0x05, 0x00): "Logical unit does not respond to selection",
    (0x08, 0x00): "Logical unit communication failure",
    (0x08, 0x01): "Logical unit communication time-out",
    (0x0c, 0x00): "Write error",
    (0x0c, 0x02): "Write error - auto reallocation failed",
    (0x0c, 0x03): "Write error - recommend reassignment",
    (0x0e, 0x03): "Invalid field in command information unit",
    (0x10, 0x01): "Logical block guard check failed",
    (0x10, 0x02): "Logical block application tag check failed",
    (0x10, 0x03): "Logical block reference tag check failed",
    (0x11, 0x00): "Unrecovered read error",
    (0x11, 0x01): "Read retries exhausted",
    (0x11, 0x04): "Unrecovered read error - auto reallocate failed",
    (0x14, 0x00): "Recorded entity not found",
    (0x14, 0x01): "Record not found",
    (0x14, 0x02): "Filemark or setmark not found",
    (0x14, 0x03): "End-of-data not found",
    (0x14, 0x04): "Block sequence error",
    (0x15, 0x00): "Random positioning error",
    (0x15, 0x02): "Positioning error detected by read of medium",
    (0x1a, 0x00): "Parameter list length error",
    (0x1d, 0x00): "Miscompare during verify operation",
    (0x20, 0x00): "Invalid command operation code",
    (0x20, 0x02): "Access denied - no access rights",
    (0x21, 0x00): "Logical block address out of range",
    (0x21, 0x01): "Invalid element address",
    (0x24, 0x00): "Invalid field in cdb",
    (0x25, 0x00): "Logical unit not supported",
    (0x26, 0x00): "Invalid field in parameter list",
    (0x26, 0x01): "Parameter not supported",
    (0x26, 0x02): "Parameter value invalid",
    (0x27, 0x00): "Write protected",
    (0x27, 0x01): "Hardware write protected",
    (0x27, 0x02): "Logical unit software write protected",
    (0x27, 0x07): "Space allocation failed write protect",
    (0x28, 0x00): "Not ready to ready change, medium may have changed",
    (0x28, 0x01): "Import or export element accessed",
    (0x29, 0x00): "Power on, reset, or bus device reset occurred",
    (0x29, 0x01): "Power on occurred",
    (0x29, 0x02): "SCSI bus reset occurred",
    (0x29, 0x03): "Bus device reset function occurred",
    (0x29, 0x04): "Device internal reset",
    (0x29, 0x07): "I_T nexus loss occurred",
    (0x2a, 0x00): "Parameters changed",
    (0x2a, 0x01): "Mode parameters changed",
    (0x2a, 0x02): "Log parameters changed",
    (0x2a, 0x03): "Reservations preempted",
    (0x2a, 0x04): "Reservations released",
    (0x2a, 0x05): "Registrations preempted",
    (0x2a, 0x06): "Asymmetric access state changed",
    (0x2a, 0x07): "Implicit asymmetric access state transition failed",
    (0x2a, 0x09): "Capacity data has changed",
    (0x2c, 0x00): "Command sequence error",
    (0x2f, 0x00): "Commands cleared by another initiator",
    (0x30, 0x00): "Incompatible medium installed",
    (0x30, 0x01): "Cannot read medium - unknown format",
    (0x30, 0x02): "Cannot read medium - incompatible format",
    (0x30, 0x03): "Cleaning cartridge installed",
    (0x30, 0x07): "Cleaning failure",
    (0x31, 0x00): "Medium format corrupted",
    (0x33, 0x00): "Tape length error",
    (0x35, 0x00): "Enclosure services failure",
    (0x37, 0x00): "Rounded parameter",
    (0x38, 0x07): "Thin provisioning soft threshold reached",
    (0x39, 0x00): "Saving parameters not supported",
    (0x3a, 0x00): "Medium not present",
    (0x3a, 0x01): "Medium not present - tray closed",
    (0x3a, 0x02): "Medium not present - tray open",
    (0x3b, 0x00): "Sequential positioning error",
    (0x3b, 0x01): "Tape position error at beginning-of-medium",
    (0x3b, 0x02): "Tape position error at end-of-medium",
    (0x3b, 0x0d): "Medium destination element full",
    (0x3b, 0x0e): "Medium source element empty",
    (0x3b, 0x11): "Medium magazine not accessible",
    (0x3b, 0x12): "Medium magazine removed",
    (0x3b, 0x13): "Medium magazine inserted",
    (0x3b, 0x14): "Medium magazine locked",
    (0x3b, 0x15): "Medium magazine unlocked",
    (0x3d, 0x00): "Invalid bits in identify message",
    (0x3e, 0x00): "Logical unit has not self-configured yet",
    (0x3e, 0x01): "Logical unit failure",
    (0x3e, 0x02): "Timeout on logical unit",
    (0x3f, 0x00): "Target operating conditions have changed",
    (0x3f, 0x01): "Microcode has been changed",
    (0x3f, 0x03): "Inquiry data has changed",
    (0x3f, 0x04): "Component device attached",
    (0x3f, 0x05): "Device identifier changed",
    (0x3f, 0x0e): "Reported luns data has changed",
    (0x40, 0x00): "Ram failure (should use 40 nn)",
    (0x43, 0x00): "Message error",
    (0x44, 0x00): "Internal target failure",
    (0x45, 0x00): "Select or reselect failure",
    (0x47, 0x00): "SCSI parity error",
    (0x47, 0x03): "Information unit iuCRC error detected",
    (0x48, 0x00): "Initiator detected error message received",
    (0x49, 0x00): "Invalid message error",
    (0x4a, 0x00): "Command phase error",
    (0x4b, 0x00): "Data phase error",
    (0x4b, 0x01): "Invalid target port transfer tag received",
    (0x4b, 0x02): "Too much write data",
    (0x4b, 0x03): "Ack/nak timeout",
    (0x4b, 0x04): "Nak received",
    (0x4b, 0x05): "Data offset error",
    (0x4b, 0x06): "Initiator response timeout",
    (0x4c, 0x00): "Logical unit failed self-configuration",
    (0x4e, 0x00): "Overlapped commands attempted",
    (0x50, 0x00): "Write append error",
    (0x50, 0x01): "Write append position error",
    (0x50, 0x02): "Position error related to timing",
    (0x51, 0x00): "Erase failure",
    (0x52, 0x00): "Cartridge fault",
    (0x53, 0x00): "Media load or eject failed",
    (0x53, 0x01): "Unload tape failure",
    (0x53, 0x02): "Medium removal prevented",
    (0x55, 0x03): "Insufficient resources",
    (0x55, 0x04): "Insufficient registration resources",
    (0x5a, 0x01): "Operator medium removal request",
    (0x5d, 0x00): "Failure prediction threshold exceeded",
    (0x5e, 0x00): "Low power condition on",
    (0x67, 0x0a): "Set target port groups command failed",
    (0x68, 0x00): "Logical unit not configured",
}

_OVERFLOW = "<<<Sense data overflow (SDAT_OVFL)>>>"
_FLAG_NAMES = ((0x80, "FMK"), (0x40, "EOM"), (0x20, "ILI"))


def asc_ascq_text(asc: int, ascq: int) -> str:
    """One line as sg3_utils prints an additional sense code, its fallbacks included."""
    text = ASC_ASCQ_TEXT.get((asc, ascq))
    if text is not None:
        return f"Additional sense: {text}"
    # SPC-4 Annex D defines these three codes with the qualifier as a number.
    if asc == 0x40 and ascq:
        what = "Ram failure" if ascq < 0x80 else "Diagnostic failure on component"
        return f"Additional sense: {what} [0x{ascq:x}]"
    if asc == 0x4D:
        return f"Additional sense: Tagged overlapped commands [0x{ascq:x}]"
    if asc >= 0x80:
        return f"vendor specific ASC={asc:02x}, ASCQ={ascq:02x} (hex)"
    if ascq >= 0x80:
        return f"ASC={asc:02x}, vendor specific qualification ASCQ={ascq:02x} (hex)"
    return f"ASC={asc:02x}, ASCQ={ascq:02x} (hex)"


def _sense_key_specific(key: int, sks: bytes) -> str | None:
    """SPC-4 §4.5.2.4: what the SENSE KEY SPECIFIC field means depends on the key."""
    if not sks[0] & 0x80:
        return None
    field = int.from_bytes(sks[1:3], "big")
    bit = f" bit {sks[0] & 0x07}" if sks[0] & 0x08 else ""
    if key == SenseKey.ILLEGAL_REQUEST:
        where = "Command" if sks[0] & 0x40 else "Data parameters"
        return f"  Sense Key Specific: Error in {where}: byte {field}{bit}"
    if key in (SenseKey.NO_SENSE, SenseKey.NOT_READY):
        # sg3_utils' arithmetic, hundredths included (656 is 65536 / 100, rounded down).
        percent, rest = divmod(field * 100, 65536)
        return f"  Progress indication: {percent}.{rest // 656:02d}%"
    if key in (SenseKey.RECOVERED_ERROR, SenseKey.MEDIUM_ERROR, SenseKey.HARDWARE_ERROR):
        return f"  Actual retry count: 0x{field:04x}"
    if key == SenseKey.UNIT_ATTENTION:
        return f"  Unit attention condition queue: overflow flag is {sks[0] & 0x01}"
    if key == SenseKey.COPY_ABORTED:
        start = "segment descriptor" if sks[0] & 0x20 else "parameter list"
        return f"  Segment pointer: Relative to start of {start}, byte {field}{bit}"
    return f"  Sense_key: 0x{key:x} unexpected"


def sense_lines(sense: bytes) -> list[str]:
    """The sense data as sg3_utils' sg_get_sense_str prints it (not verbose)."""
    if not sense:
        return [" >>> sense buffer empty"]
    code = sense[0] & 0x7F
    if code in (0x70, 0x71):
        return _fixed_sense_lines(sense)
    if code in (0x72, 0x73):
        return _descriptor_sense_lines(sense)
    if len(sense) < 4:
        return ["sense buffer too short (4 byte minimum)"]
    if code == 0x7F:
        return ["Vendor specific sense buffer, in hex:", *hex_lines(sense, ascii_column=False)]
    # Any other response code: perhaps SCSI-1 sense (SCSI-2 §8.2.14.1), perhaps garbage.
    lines = ["Probably uninitialized data.", "  Try to view as SCSI-1 non-extended sense:",
             f"  AdValid={sense[0] >> 7}  Error class={(sense[0] >> 4) & 7}  Error code={sense[0] & 0x0F}"]
    if sense[0] & 0x80:
        lines.append(f"  lba=0x{int.from_bytes(sense[1:4], 'big') & 0x1FFFFF:x}")
    return [*lines, ""]


def _fixed_sense_lines(sense: bytes) -> list[str]:
    n = len(sense)
    when = "current" if sense[0] & 0x7F == 0x70 else "<<<deferred>>>"
    key = sense[2] & 0x0F if n > 2 else 0
    lines = [f"Fixed format, {when}; Sense key: {_SENSE_KEY_TEXT[key]}"]
    if n < 3:
        return [*lines, f" fixed descriptor length too short, len={n}"]
    if sense[2] & 0x10:
        lines.append(_OVERFLOW)
    # Bytes past the ADDITIONAL SENSE LENGTH are not sense data, however many arrived.
    usable = min(n, 8 + sense[7]) if n > 7 else n
    padded = sense[:usable].ljust(18, b"\0")
    if usable > 12:
        lines.append(asc_ascq_text(padded[12], padded[13]))
    flags = "".join(f" {name}" for bit, name in _FLAG_NAMES if sense[2] & bit)
    info = int.from_bytes(sense[3:7], "big") if n >= 7 else 0
    if n >= 7 and (sense[0] & 0x80 or info):
        valid = "" if sense[0] & 0x80 else "Valid=0, "
        lines.append(f"  {valid}Info fld=0x{info:x} [{info}] {flags}")
    elif flags or sense[0] & 0x80:
        lines.append(flags)
    if usable > 13 and n > 14 and sense[14]:  # sg3_utils reads it past a short ADDITIONAL SENSE LENGTH
        lines.append(f"  Field replaceable unit code: {sense[14]}")
    if usable > 17:
        specific = _sense_key_specific(key, padded[15:18])
        if specific is not None:
            lines.append(specific)
    return lines


def _descriptor_sense_lines(sense: bytes) -> list[str]:
    padded = sense.ljust(8, b"\0")
    when = "current" if sense[0] & 0x7F == 0x72 else "<<<deferred>>>"
    lines = [f"Descriptor format, {when}; Sense key: {_SENSE_KEY_TEXT[padded[1] & 0x0F]}"]
    if padded[4] & 0x80:
        lines.append(_OVERFLOW)
    lines.append(asc_ascq_text(padded[2], padded[3]))
    # SPC-4 §4.5.2: the descriptors a block or tape device sends with no transport in between;
    # the rest (sense key specific, stream and block commands, ...) are left undecoded.
    at, end = 8, min(len(sense), 8 + padded[7])
    while at + 2 <= end:
        kind, length = sense[at], sense[at + 1]
        body = sense[at + 2 : at + 2 + length]
        if kind in (0x00, 0x01) and len(body) >= 10:
            what = "Information:" if kind == 0 else "Command specific:"
            if kind == 0 and not body[0] & 0x80:
                what += " Valid=0 (-> vendor specific)"
            lines.append(f"  Descriptor type: {what} 0x{int.from_bytes(body[2:10], 'big'):016x}")
        elif kind == 0x03 and len(body) >= 2:
            lines.append(f"  Descriptor type: Field replaceable unit code: 0x{body[1]:x}")
        elif kind >= 0x80:
            lines.append(f"  Descriptor type: Vendor specific [0x{kind:x}]")
            if body:
                lines.append("    " + "".join(f"{b:02x} " for b in body))
        at += 2 + length
    return lines


# -- exit status (sg3_utils' SG_LIB_CAT_* numbers, include/sg_lib.h) ---------------------------------

EXIT_OK = 0
EXIT_SYNTAX_ERROR = 1
EXIT_NOT_READY = 2
EXIT_MEDIUM_HARD = 3
EXIT_ILLEGAL_REQ = 5
EXIT_UNIT_ATTENTION = 6
EXIT_DATA_PROTECT = 7
EXIT_INVALID_OP = 9
EXIT_COPY_ABORTED = 10
EXIT_ABORTED_COMMAND = 11
EXIT_MISCOMPARE = 14
EXIT_FILE_ERROR = 15
EXIT_NO_SENSE = 20
EXIT_RECOVERED = 21
EXIT_LBA_OUT_OF_RANGE = 22
EXIT_RES_CONFLICT = 24
EXIT_TIMEOUT = 33
EXIT_PROTECTION = 40
EXIT_SENSE = 98
EXIT_OTHER = 99

_KEY_EXIT: dict[int, int] = {
    SenseKey.NO_SENSE: EXIT_NO_SENSE, SenseKey.RECOVERED_ERROR: EXIT_RECOVERED,
    SenseKey.NOT_READY: EXIT_NOT_READY, SenseKey.MEDIUM_ERROR: EXIT_MEDIUM_HARD,
    SenseKey.HARDWARE_ERROR: EXIT_MEDIUM_HARD, SenseKey.BLANK_CHECK: EXIT_MEDIUM_HARD,
    SenseKey.ILLEGAL_REQUEST: EXIT_ILLEGAL_REQ, SenseKey.UNIT_ATTENTION: EXIT_UNIT_ATTENTION,
    SenseKey.DATA_PROTECT: EXIT_DATA_PROTECT, SenseKey.COPY_ABORTED: EXIT_COPY_ABORTED,
    SenseKey.ABORTED_COMMAND: EXIT_ABORTED_COMMAND, SenseKey.MISCOMPARE: EXIT_MISCOMPARE,
}


def sense_category(sense: bytes) -> int:
    """sg_err_category_sense(): the exit status a CHECK CONDITION with this sense gives."""
    code = sense[0] & 0x7F if sense else 0
    if code in (0x70, 0x71) and len(sense) > 2:
        key = sense[2] & 0x0F
        usable = min(len(sense), 8 + sense[7]) if len(sense) > 7 else len(sense)
        asc = sense[12] if usable > 12 else None
        ascq = sense[13] if usable > 13 else 0
    elif code in (0x72, 0x73) and len(sense) > 2:
        key = sense[1] & 0x0F
        asc = sense[2]
        ascq = sense[3] if len(sense) > 3 else 0
    else:
        return EXIT_SENSE
    if key == SenseKey.ILLEGAL_REQUEST and asc is not None and ascq == 0:
        return {0x20: EXIT_INVALID_OP, 0x21: EXIT_LBA_OUT_OF_RANGE}.get(asc, EXIT_ILLEGAL_REQ)
    if key == SenseKey.ABORTED_COMMAND and asc == 0x10:
        return EXIT_PROTECTION  # a protection information check failed (SBC-3 §4.18)
    return _KEY_EXIT.get(key, EXIT_SENSE)


def exit_status(status: int, sense: bytes = b"") -> int:
    """What sg_raw exits with for a command that ended with this status and sense."""
    status &= 0x7E
    if status == Status.GOOD:
        return EXIT_OK
    if status in (Status.CHECK_CONDITION, 0x22):  # COMMAND TERMINATED (obsolete) carries sense too
        return sense_category(sense)
    return EXIT_RES_CONFLICT if status == Status.RESERVATION_CONFLICT else EXIT_OTHER


@dataclass(frozen=True, slots=True)
class SgRawReport:
    """One command's outcome, printed as sg_raw prints it (every line goes to stderr there)."""

    status: int
    sense: bytes = b""
    data: bytes = b""  # the data-in received
    requested: int = 0  # -r RLEN: the data-in length asked for; 0 prints nothing about data
    no_sense: bool = False  # -n

    @property
    def exit_status(self) -> int:
        return exit_status(self.status, self.sense)

    def lines(self) -> list[str]:
        status = self.status & 0x7E
        out: list[str] = []
        if status not in (Status.GOOD, Status.CHECK_CONDITION, 0x22):
            # sg_raw has no case for libsgutils' "status" result category and says so.
            out.append(">>> unknown pass through result category (1)")
        out += [f"SCSI Status: {scsi_status_text(status)} ", ""]
        if status == Status.CHECK_CONDITION and not self.no_sense:
            if not self.sense:
                out.append(">>> Strange: status is CHECK CONDITION but no Sense Information")
            else:
                out += ["Sense Information:", *sense_lines(self.sense), ""]
        if self.requested:
            code = self.exit_status
            if code not in (EXIT_OK, EXIT_NO_SENSE, EXIT_RECOVERED):
                out.append(f"Error {code} occurred, no data received")
            elif not self.data:
                out.append("No data received")
            else:
                out += [f"Received {len(self.data)} bytes of data:", *hex_dump(self.data)]
        return out

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines())

"""The SCSI command policy (SAM-5 §5.14, SPC-4): which statuses are retried, how and for how
long; and the commands a LUN is found and identified with (INQUIRY, READ CAPACITY, its VPD pages,
MODE SENSE)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from iscsifs.block.stats import STATS
from iscsifs.net.api import DataOut, Executor, Into
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import IscsiError
from iscsifs.scsi import cdb
from iscsifs.scsi.response import (
    FULL_PROVISIONING,
    NO_BLOCK_LIMITS,
    BlockLimits,
    Capacity,
    Provisioning,
    ScsiParseError,
    StandardInquiry,
    Vpd,
    mode_sense_write_protected,
    parse_block_limits,
    parse_device_identification,
    parse_inquiry,
    parse_logical_block_provisioning,
    parse_read_capacity_10,
    parse_read_capacity_16,
    parse_supported_vpd_pages,
    parse_unit_serial_number,
    world_wide_name,
)
from iscsifs.scsi.sense import (
    ScsiError,
    Sense,
    SenseKey,
    Status,
    is_unit_attention,
    parse_sense,
    status_text,
)

log = logging.getLogger("iscsifs.block")


UNIT_ATTENTION_RETRIES = 8  # every target reports at least one (29/00) after login
# SAM-5 statuses and sense that say "not now", not "no": retried with backoff, within a time bound,
# without using up the UNIT ATTENTION retries.
BUSY_STATUSES = (Status.BUSY, Status.TASK_SET_FULL)
# Plain ints on every command's path: an IntEnum member costs an attribute lookup each time.
_GOOD = int(Status.GOOD)
_COMPLETED = frozenset({int(Status.GOOD), int(Status.CONDITION_MET)})
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


async def command(session: Executor, lun: int, cdb_bytes: bytes, *, name: str,
                  data_out: DataOut | None = None, expected_in: int = 0,
                  into: Into | None = None) -> ScsiResult:
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
            STATS.record(name, trio.current_time() - started, ok=False, target=session.target_name, lun=lun)
            raise
        STATS.record(name, trio.current_time() - started, read=len(result.data),
                     written=len(data_out) if data_out is not None and result.status == _GOOD else 0,
                     ok=result.status in _COMPLETED and result.response == 0, target=session.target_name, lun=lun)
        if result.response != 0:
            raise ScsiError(Status.TASK_ABORTED, None,
                            f"{name} (iSCSI response 0x{result.response:02x}, target failure)")
        if result.status in _COMPLETED:
            return result
        sense = parse_sense(result.sense)
        if is_unit_attention(result.status, sense) and attentions < UNIT_ATTENTION_RETRIES:
            # A UNIT ATTENTION reports an event (reset, parameters changed) and fails this
            # command only; the same command is valid again (SAM-5 §5.14).
            attentions += 1
            # The executor has told whoever follows the target (``net.api``).
            log.debug("LUN %d: %s reported unit attention %s; retrying", lun, name, sense)
            continue
        if result.status == Status.CHECK_CONDITION and sense is not None and sense.key == SenseKey.RECOVERED_ERROR:
            return result
        now = trio.current_time()
        first_refusal = now if first_refusal is None else first_refusal
        if _transient(result.status, sense) and now - first_refusal < RETRY_TIME_LIMIT:
            log.debug("LUN %d: %s answered %s; retrying in %.3f s", lun, name,
                      status_text(result.status) if sense is None else sense, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
            continue
        raise ScsiError(result.status, sense, f"{name} on LUN {lun}")


async def inquiry(session: Executor, lun: int) -> StandardInquiry:
    result = await command(session, lun, cdb.inquiry(255), name="INQUIRY", expected_in=255)
    return parse_inquiry(result.data)


async def read_capacity(session: Executor, lun: int) -> Capacity:
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
    limits: BlockLimits = NO_BLOCK_LIMITS  # VPD 0xB0; zeros: no limit reported
    provisioning: Provisioning = FULL_PROVISIONING  # VPD 0xB2

    @property
    def maximum_transfer_blocks(self) -> int:
        return self.limits.maximum_transfer_length


async def _vpd(session: Executor, lun: int, page: int) -> bytes | bytearray | memoryview:
    result = await command(session, lun, cdb.inquiry(4096, page), name=f"INQUIRY VPD 0x{page:02x}",
                           expected_in=4096)
    return result.data


async def write_protected(session: Executor, lun: int) -> bool:
    """MODE SENSE(6), or (10) for devices without it; a device that answers neither is not WP."""
    for ten in (False, True):
        built = cdb.mode_sense_10() if ten else cdb.mode_sense_6()
        try:
            result = await command(session, lun, built, name="MODE SENSE", expected_in=512 if ten else 255)
            return mode_sense_write_protected(result.data, ten)
        except ScsiError as exc:
            if exc.status == Status.RESERVATION_CONFLICT:
                # tgt refuses MODE SENSE to a nexus that does not hold a write-exclusive
                # reservation (SPC-4 Table 65 allows it): another host's reservation says
                # nothing of write protection.
                log.debug("LUN %d: MODE SENSE refused by a reservation; taken as not write-protected", lun)
                return False
            if exc.sense is None or exc.sense.key != SenseKey.ILLEGAL_REQUEST:
                raise
        except ScsiParseError:
            pass
    return False


def _unsupported(exc: ScsiError) -> bool:
    """ILLEGAL REQUEST: the LUN does not know the command or page (as opposed to a failure)."""
    return exc.sense is not None and exc.sense.key == SenseKey.ILLEGAL_REQUEST


async def _supported_pages(session: Executor, lun: int) -> frozenset[int]:
    try:
        return parse_supported_vpd_pages(await _vpd(session, lun, Vpd.SUPPORTED_PAGES))
    except ScsiError as exc:
        if not _unsupported(exc):
            raise
        log.debug("LUN %d: no VPD pages (%s)", lun, exc)
        return frozenset()


async def _identity(session: Executor, lun: int, pages: frozenset[int]) -> tuple[str, str]:
    serial = wwn = ""
    if Vpd.UNIT_SERIAL_NUMBER in pages:
        serial = parse_unit_serial_number(await _vpd(session, lun, Vpd.UNIT_SERIAL_NUMBER))
    if Vpd.DEVICE_IDENTIFICATION in pages:
        wwn = world_wide_name(parse_device_identification(await _vpd(session, lun, Vpd.DEVICE_IDENTIFICATION)))
    return serial, wwn


async def identify(session: Executor, lun: int) -> Identity:
    """Serial, WWN, block limits, provisioning and write protection. The identity pages (0x80,
    0x83) that the LUN lists must be read, or this raises (the scan then skips the LUN): a
    garbled answer must not become an identity that a later login compares against. A page a
    LUN lacks (ILLEGAL REQUEST) is left out; the others, garbled, are too, with a log line."""
    pages = await _supported_pages(session, lun)
    serial, wwn = await _identity(session, lun, pages)
    limits, provisioning = NO_BLOCK_LIMITS, FULL_PROVISIONING
    try:
        if Vpd.BLOCK_LIMITS in pages:
            limits = parse_block_limits(await _vpd(session, lun, Vpd.BLOCK_LIMITS))
        if Vpd.LOGICAL_BLOCK_PROVISIONING in pages:
            provisioning = parse_logical_block_provisioning(await _vpd(session, lun, Vpd.LOGICAL_BLOCK_PROVISIONING))
    except (ScsiError, ScsiParseError) as exc:
        log.warning("LUN %d of %s: a VPD page is unreadable (%s); using no limits and full provisioning", lun,
                    session.target_name, exc)
    return Identity(serial, wwn, await write_protected(session, lun), limits, provisioning)


async def identity_of(session: Executor, lun: int) -> tuple[str, str]:
    """(serial, wwn): what a session checks after every login (``net.api.Identify``). An answer
    that cannot be read raises, so the login is tried again rather than the LUN being taken for
    another device."""
    return await _identity(session, lun, await _supported_pages(session, lun))



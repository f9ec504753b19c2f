"""What a LUN is: INQUIRY, READ CAPACITY, its identity and limits (VPD pages) and write
protection (MODE SENSE), each through the command policy (``iscsifs.block.command``).
``identity_of`` travels to the session workers by reference (pickled).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from iscsifs.block.command import command
from iscsifs.block.stats import Stats
from iscsifs.net.api import Executor, LunAbsent
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
from iscsifs.scsi.sense import ScsiError, SenseKey, Status

log = logging.getLogger("iscsifs.block")


async def inquiry(session: Executor, lun: int, stats: Stats | None = None) -> StandardInquiry:
    result = await command(session, lun, cdb.inquiry(255), name="INQUIRY", expected_in=255, stats=stats)
    return parse_inquiry(result.data)


async def read_capacity(session: Executor, lun: int, stats: Stats | None = None) -> Capacity:
    """READ CAPACITY(16), falling back to (10) for devices that do not know it (SBC-3 §5.16)."""
    try:
        result = await command(session, lun, cdb.read_capacity_16(32), name="READ CAPACITY(16)", expected_in=32,
                               stats=stats)
        return parse_read_capacity_16(result.data)
    except ScsiError as exc:
        if exc.sense is None or exc.sense.key != SenseKey.ILLEGAL_REQUEST:
            raise
    result = await command(session, lun, cdb.read_capacity_10(), name="READ CAPACITY(10)", expected_in=8,
                           stats=stats)
    cap = parse_read_capacity_10(result.data)
    if cap.blocks - 1 == 0xFFFFFFFF:
        raise ScsiError(Status.CHECK_CONDITION, None, "READ CAPACITY(10) says the LUN is too large for it, "
                        "and READ CAPACITY(16) is not supported")
    return cap


@dataclass(frozen=True, slots=True)
class Identity:
    """What a LUN says about itself beyond INQUIRY (for a tape or a changer, only serial and WWN);
    empty where it says nothing."""

    serial: str = ""  # VPD 0x80
    wwn: str = ""  # VPD 0x83, the best logical-unit designator
    write_protected: bool = False  # MODE SENSE, WP bit
    limits: BlockLimits = NO_BLOCK_LIMITS  # VPD 0xB0; zeros: no limit reported
    provisioning: Provisioning = FULL_PROVISIONING  # VPD 0xB2

    @property
    def maximum_transfer_blocks(self) -> int:
        return self.limits.maximum_transfer_length


async def _vpd(session: Executor, lun: int, page: int, stats: Stats | None) -> bytes | bytearray | memoryview:
    result = await command(session, lun, cdb.inquiry(4096, page), name=f"INQUIRY VPD 0x{page:02x}",
                           expected_in=4096, stats=stats)
    return result.data


async def write_protected(session: Executor, lun: int, stats: Stats | None = None) -> bool:
    """MODE SENSE(6), or (10) for devices without it; a device that answers neither is not WP."""
    for ten in (False, True):
        built = cdb.mode_sense_10() if ten else cdb.mode_sense_6()
        try:
            result = await command(session, lun, built, name="MODE SENSE", expected_in=512 if ten else 255,
                                   stats=stats)
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


async def _supported_pages(session: Executor, lun: int, stats: Stats | None) -> frozenset[int]:
    try:
        return parse_supported_vpd_pages(await _vpd(session, lun, Vpd.SUPPORTED_PAGES, stats))
    except ScsiError as exc:
        if not _unsupported(exc):
            raise
        log.debug("LUN %d: no VPD pages (%s)", lun, exc)
        return frozenset()


async def _identity(session: Executor, lun: int, pages: frozenset[int], stats: Stats | None) -> tuple[str, str]:
    serial = wwn = ""
    if Vpd.UNIT_SERIAL_NUMBER in pages:
        serial = parse_unit_serial_number(await _vpd(session, lun, Vpd.UNIT_SERIAL_NUMBER, stats))
    if Vpd.DEVICE_IDENTIFICATION in pages:
        wwn = world_wide_name(parse_device_identification(await _vpd(session, lun, Vpd.DEVICE_IDENTIFICATION,
                                                                     stats)))
    return serial, wwn


async def identify(session: Executor, lun: int, stats: Stats | None = None) -> Identity:
    """Serial, WWN, block limits, provisioning and write protection. The identity pages (0x80,
    0x83) that the LUN lists must be read, or this raises (the scan then skips the LUN): a
    garbled answer must not become an identity that a later login compares against. A page a
    LUN lacks (ILLEGAL REQUEST) is left out; the others, garbled, are too, with a log line."""
    pages = await _supported_pages(session, lun, stats)
    serial, wwn = await _identity(session, lun, pages, stats)
    limits, provisioning = NO_BLOCK_LIMITS, FULL_PROVISIONING
    try:
        if Vpd.BLOCK_LIMITS in pages:
            limits = parse_block_limits(await _vpd(session, lun, Vpd.BLOCK_LIMITS, stats))
        if Vpd.LOGICAL_BLOCK_PROVISIONING in pages:
            provisioning = parse_logical_block_provisioning(await _vpd(session, lun, Vpd.LOGICAL_BLOCK_PROVISIONING,
                                                                       stats))
    except (ScsiError, ScsiParseError) as exc:
        log.warning("LUN %d of %s: a VPD page is unreadable (%s); using no limits and full provisioning", lun,
                    session.target_name, exc)
    return Identity(serial, wwn, await write_protected(session, lun, stats), limits, provisioning)


async def device_identity(session: Executor, lun: int, stats: Stats | None = None) -> Identity:
    """Serial and WWN alone, for a LUN that is not a disk: a tape drive's serial is how a medium
    changer's READ ELEMENT STATUS names it (SMC-3 device identifier)."""
    return Identity(*await _identity(session, lun, await _supported_pages(session, lun, stats), stats))


async def identity_of(session: Executor, lun: int) -> tuple[str, str]:
    """(serial, wwn): what a session checks after every login (``net.api.Identify``). An answer
    that cannot be read raises, so the login is tried again rather than the LUN being taken for
    another device; so does a LUN with no device connected now (``LunAbsent``), whose VPD pages
    are not its own. Not counted: net runs it on a login of its own, or on a path where it checks
    an absent LUN again, maybe in a session worker."""
    standard = await inquiry(session, lun)
    if not standard.connected:
        raise LunAbsent(f"LUN {lun} of {session.target_name}: no device connected "
                        f"(INQUIRY peripheral qualifier {standard.peripheral_qualifier})")
    return await _identity(session, lun, await _supported_pages(session, lun, None), None)

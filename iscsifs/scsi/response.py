"""Parsers for SCSI responses (SPC-4, SBC-3) into typed dataclasses, and LUN encoding (SAM-5)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from iscsifs.proto.errors import IscsiError, LocalProtocolError

# The largest logical block and device we believe: a READ CAPACITY beyond them is garbage, and
# a file size must fit st_size (a signed 64-bit number).
MAX_BLOCK_SIZE = 1 << 20
MAX_DEVICE_BYTES = (1 << 63) - 1


class ScsiParseError(IscsiError):
    """The target's SCSI data is too short or malformed to decode: that command fails (EIO);
    the connection and the mount carry on."""


class DeviceType(enum.IntEnum):
    """SPC-4 Table 49: peripheral device types."""

    DIRECT_ACCESS = 0x00
    SEQUENTIAL_ACCESS = 0x01
    CD_DVD = 0x05
    OPTICAL_MEMORY = 0x07
    MEDIUM_CHANGER = 0x08
    STORAGE_ARRAY_CONTROLLER = 0x0C
    ENCLOSURE_SERVICES = 0x0D
    SIMPLIFIED_DIRECT_ACCESS = 0x0E
    WELL_KNOWN_LUN = 0x1E
    UNKNOWN = 0x1F


# What ``iscsifs ls`` calls each (lsscsi's words).
_DEVICE_TYPE_WORDS: dict[int, str] = {
    DeviceType.DIRECT_ACCESS: "disk", DeviceType.SEQUENTIAL_ACCESS: "tape", DeviceType.CD_DVD: "cdrom",
    DeviceType.OPTICAL_MEMORY: "optical", DeviceType.MEDIUM_CHANGER: "changer",
    DeviceType.STORAGE_ARRAY_CONTROLLER: "controller", DeviceType.ENCLOSURE_SERVICES: "enclosure",
    DeviceType.SIMPLIFIED_DIRECT_ACCESS: "rbc-disk", DeviceType.WELL_KNOWN_LUN: "well-known",
    DeviceType.UNKNOWN: "unknown",
}


def device_type_word(code: int) -> str:
    return _DEVICE_TYPE_WORDS.get(code, f"type-0x{code:02x}")


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip(" \0")


@dataclass(frozen=True, slots=True)
class StandardInquiry:
    peripheral_qualifier: int
    device_type: int
    removable: bool
    version: int
    vendor: str
    product: str
    revision: str

    @property
    def connected(self) -> bool:
        """Qualifier 0: a device of this type is connected to this LUN (SPC-4 §6.4.2)."""
        return self.peripheral_qualifier == 0

    @property
    def is_disk(self) -> bool:
        return self.connected and self.device_type in (DeviceType.DIRECT_ACCESS, DeviceType.SIMPLIFIED_DIRECT_ACCESS)


def parse_inquiry(data: bytes | bytearray | memoryview) -> StandardInquiry:
    d = bytes(data)
    if len(d) < 5:
        raise ScsiParseError(f"INQUIRY data of {len(d)} bytes")
    d = d.ljust(36, b" ")
    return StandardInquiry(d[0] >> 5, d[0] & 0x1F, bool(d[1] & 0x80), d[2], _text(d[8:16]), _text(d[16:32]),
                           _text(d[32:36]))


@dataclass(frozen=True, slots=True)
class Capacity:
    """READ CAPACITY result. ``blocks`` = returned last LBA + 1 (the classic off-by-one)."""

    blocks: int
    block_size: int
    logical_per_physical_exponent: int = 0
    protection: bool = False

    @property
    def size(self) -> int:
        return self.blocks * self.block_size


def parse_read_capacity_10(data: bytes | bytearray | memoryview) -> Capacity:
    if len(data) < 8:
        raise ScsiParseError(f"READ CAPACITY(10) data of {len(data)} bytes")
    last_lba, block_size = struct.unpack_from(">II", data)
    return _checked(Capacity(last_lba + 1, block_size), "READ CAPACITY(10)")


def parse_read_capacity_16(data: bytes | bytearray | memoryview) -> Capacity:
    if len(data) < 12:
        raise ScsiParseError(f"READ CAPACITY(16) data of {len(data)} bytes")
    last_lba, block_size = struct.unpack_from(">QI", data)
    d = bytes(data).ljust(14, b"\0")
    return _checked(Capacity(last_lba + 1, block_size, d[13] & 0x0F, bool(d[12] & 0x01)), "READ CAPACITY(16)")


def _checked(capacity: Capacity, command: str) -> Capacity:
    if not 0 < capacity.block_size <= MAX_BLOCK_SIZE:
        raise ScsiParseError(f"{command} says the block size is {capacity.block_size} bytes")
    if capacity.size > MAX_DEVICE_BYTES:
        raise ScsiParseError(f"{command} says the LUN has {capacity.blocks} blocks of {capacity.block_size} bytes")
    return capacity


def decode_lun(raw: bytes) -> int:
    """SAM-5 §4.7: single-level peripheral (method 0) and flat (method 1) addressing."""
    method = raw[0] >> 6
    if method == 0 and raw[0] & 0x3F == 0:
        return raw[1]
    if method == 1:
        return ((raw[0] & 0x3F) << 8) | raw[1]
    return int.from_bytes(raw[:8], "big") | (1 << 64)  # not a simple LUN: keep it opaque but unique


def encode_lun(lun: int) -> int:
    """The 64-bit LUN field value for a LUN number (as the iSCSI BHS carries it)."""
    if lun >> 64:
        return lun & ((1 << 64) - 1)
    if lun < 256:
        return lun << 48
    if lun < 16384:
        return (0x4000 | lun) << 48
    raise LocalProtocolError(f"LUN {lun} cannot be addressed with flat addressing")


def parse_report_luns(data: bytes | bytearray | memoryview) -> tuple[list[int], int]:
    """Return (LUNs in this data, total LUN list length in bytes) so the caller can re-ask."""
    d = bytes(data)
    if len(d) < 8:
        raise ScsiParseError(f"REPORT LUNS data of {len(d)} bytes")
    list_length = int.from_bytes(d[:4], "big")
    end = min(len(d), 8 + list_length)
    luns = [decode_lun(d[i : i + 8]) for i in range(8, end - 7, 8)]
    return luns, list_length


# -- MODE SENSE and VPD pages ----------------------------------------------------------------------


def mode_sense_write_protected(data: bytes | bytearray | memoryview, ten: bool) -> bool:
    """The WP bit of the DEVICE-SPECIFIC PARAMETER in a mode parameter header (SBC-3 §6.4.1)."""
    offset = 3 if ten else 2
    if len(data) <= offset:
        raise ScsiParseError(f"MODE SENSE data of {len(data)} bytes")
    return bool(data[offset] & 0x80)


class Vpd(enum.IntEnum):
    """SPC-4 §7.8 / SBC-3 §6.5 VPD page codes."""

    SUPPORTED_PAGES = 0x00
    UNIT_SERIAL_NUMBER = 0x80
    DEVICE_IDENTIFICATION = 0x83
    BLOCK_LIMITS = 0xB0
    LOGICAL_BLOCK_PROVISIONING = 0xB2


def vpd_body(data: bytes | bytearray | memoryview, page: int) -> bytes:
    d = bytes(data)
    if len(d) < 4 or d[1] != page:
        raise ScsiParseError(f"VPD page 0x{page:02x} answer is not that page")
    return d[4 : 4 + int.from_bytes(d[2:4], "big")]


def parse_supported_vpd_pages(data: bytes | bytearray | memoryview) -> frozenset[int]:
    return frozenset(vpd_body(data, Vpd.SUPPORTED_PAGES))


def parse_unit_serial_number(data: bytes | bytearray | memoryview) -> str:
    return vpd_body(data, Vpd.UNIT_SERIAL_NUMBER).decode("ascii", "replace").strip(" \0")


@dataclass(frozen=True, slots=True)
class Designator:
    """One identification descriptor of VPD page 0x83 (SPC-4 §7.8.6)."""

    code_set: int  # 1 binary, 2 ASCII, 3 UTF-8
    association: int  # 0 the logical unit, 1 the target port, 2 the target device
    designator_type: int  # 1 T10 vendor, 2 EUI-64, 3 NAA, 8 SCSI name string, ...
    value: bytes

    def text(self) -> str:
        if self.designator_type == 3:
            return "naa." + self.value.hex()
        if self.designator_type == 2:
            return "eui." + self.value.hex()
        if self.code_set in (2, 3):
            prefix = "t10." if self.designator_type == 1 else ""
            return prefix + " ".join(self.value.decode("utf-8", "replace").rstrip("\0").split())
        return self.value.hex()


def parse_device_identification(data: bytes | bytearray | memoryview) -> list[Designator]:
    body = vpd_body(data, Vpd.DEVICE_IDENTIFICATION)
    out: list[Designator] = []
    i = 0
    while i + 4 <= len(body):
        length = body[i + 3]
        value = body[i + 4 : i + 4 + length]
        if len(value) < length:
            break
        out.append(Designator(body[i] & 0x0F, (body[i + 1] >> 4) & 0x03, body[i + 1] & 0x0F, value))
        i += 4 + length
    return out


# Which designator names the logical unit best, as Linux's /dev/disk/by-id does: NAA, EUI-64,
# SCSI name string, then the T10 vendor id.
_DESIGNATOR_PREFERENCE = (3, 2, 8, 1)


def world_wide_name(designators: list[Designator]) -> str:
    lu = [d for d in designators if d.association == 0 and d.designator_type in _DESIGNATOR_PREFERENCE]
    if not lu:
        return ""
    # Among several NAA designators (tgt sends two), the longest carries the most.
    best = min(lu, key=lambda d: (_DESIGNATOR_PREFERENCE.index(d.designator_type), -len(d.value)))
    return best.text()


@dataclass(frozen=True, slots=True)
class BlockLimits:
    """VPD page 0xB0 (SBC-3 §6.5.3). Zero means "no limit reported"."""

    maximum_transfer_length: int  # logical blocks per command
    optimal_transfer_length: int
    maximum_unmap_lba_count: int = 0  # blocks per UNMAP command
    maximum_unmap_descriptors: int = 0  # block descriptors per UNMAP command
    unmap_granularity: int = 0  # blocks (optimal)
    maximum_write_same_length: int = 0  # blocks per WRITE SAME command


NO_BLOCK_LIMITS = BlockLimits(0, 0)


def parse_block_limits(data: bytes | bytearray | memoryview) -> BlockLimits:
    body = vpd_body(data, Vpd.BLOCK_LIMITS).ljust(40, b"\0")

    def word(at: int) -> int:
        return int.from_bytes(body[at : at + 4], "big")

    return BlockLimits(word(4), word(8), word(16), word(20), word(24), int.from_bytes(body[32:40], "big"))


@dataclass(frozen=True, slots=True)
class Provisioning:
    """VPD page 0xB2 (SBC-3 §6.5.4): what the LUN can deallocate, and how it reads then."""

    unmap: bool = False  # LBPU: the UNMAP command
    write_same_unmap: bool = False  # LBPWS: WRITE SAME(16) with the UNMAP bit
    zeroes_after_unmap: bool = False  # LBPRZ: deallocated blocks read as zeros
    thin: bool = False  # provisioning type 2 (thin)

    @property
    def can_unmap(self) -> bool:
        return self.unmap or self.write_same_unmap


FULL_PROVISIONING = Provisioning()  # what a LUN without the page is


def parse_logical_block_provisioning(data: bytes | bytearray | memoryview) -> Provisioning:
    body = vpd_body(data, Vpd.LOGICAL_BLOCK_PROVISIONING).ljust(3, b"\0")
    flags = body[1]
    # LBPRZ is bit 2 of byte 5 in SBC-3; SBC-4 widens it to bits 4..2 (any non-zero: zeros).
    return Provisioning(bool(flags & 0x80), bool(flags & 0x40), bool(flags & 0x1C), body[2] & 0x07 == 2)


class LbaStatus(enum.IntEnum):
    """GET LBA STATUS provisioning status (SBC-3 §5.4.2)."""

    MAPPED = 0
    DEALLOCATED = 1
    ANCHORED = 2


def lba_status_word(status: int) -> str:
    """"mapped", "deallocated" or "anchored"; a status SBC-3 does not name reads as mapped."""
    try:
        return LbaStatus(status).name.lower()
    except ValueError:
        return "mapped"


@dataclass(frozen=True, slots=True)
class LbaExtent:
    lba: int
    blocks: int
    status: int  # LbaStatus


def parse_get_lba_status(data: bytes | bytearray | memoryview) -> list[LbaExtent]:
    """The LBA status descriptors of a GET LBA STATUS answer (SBC-3 §5.4.2.2)."""
    d = bytes(data)
    if len(d) < 8:
        raise ScsiParseError(f"GET LBA STATUS data of {len(d)} bytes")
    end = min(len(d), 4 + int.from_bytes(d[0:4], "big"))
    return [LbaExtent(int.from_bytes(d[i : i + 8], "big"), int.from_bytes(d[i + 8 : i + 12], "big"), d[i + 12] & 0x0F)
            for i in range(8, end - 15, 16)]

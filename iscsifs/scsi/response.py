"""Parsers for SCSI responses (SPC-4, SBC-3) into typed dataclasses, and LUN encoding (SAM-5)."""

from __future__ import annotations

import struct
from dataclasses import dataclass


class ScsiParseError(ValueError):
    """A response too short or malformed to decode."""


class DeviceType:
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

    NAMES = {
        0x00: "disk", 0x01: "tape", 0x05: "cdrom", 0x07: "optical", 0x08: "changer",
        0x0C: "controller", 0x0D: "enclosure", 0x0E: "rbc-disk", 0x1E: "well-known", 0x1F: "unknown",
    }

    @classmethod
    def name(cls, code: int) -> str:
        return cls.NAMES.get(code, f"type-0x{code:02x}")


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


def parse_inquiry(data: bytes | memoryview) -> StandardInquiry:
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


def parse_read_capacity_10(data: bytes | memoryview) -> Capacity:
    if len(data) < 8:
        raise ScsiParseError(f"READ CAPACITY(10) data of {len(data)} bytes")
    last_lba, block_size = struct.unpack_from(">II", data)
    return Capacity(last_lba + 1, block_size)


def parse_read_capacity_16(data: bytes | memoryview) -> Capacity:
    if len(data) < 12:
        raise ScsiParseError(f"READ CAPACITY(16) data of {len(data)} bytes")
    last_lba, block_size = struct.unpack_from(">QI", data)
    d = bytes(data).ljust(14, b"\0")
    return Capacity(last_lba + 1, block_size, d[13] & 0x0F, bool(d[12] & 0x01))


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
    raise ValueError(f"LUN {lun} cannot be addressed with flat addressing")


def parse_report_luns(data: bytes | memoryview) -> tuple[list[int], int]:
    """Return (LUNs in this data, total LUN list length in bytes) so the caller can re-ask."""
    d = bytes(data)
    if len(d) < 8:
        raise ScsiParseError(f"REPORT LUNS data of {len(d)} bytes")
    list_length = int.from_bytes(d[:4], "big")
    end = min(len(d), 8 + list_length)
    luns = [decode_lun(d[i : i + 8]) for i in range(8, end - 7, 8)]
    return luns, list_length

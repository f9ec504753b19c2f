"""CDB builders (SPC-4, SBC-3). Each returns the raw CDB bytes; nothing keeps state."""

from __future__ import annotations

import struct
from typing import Final


class Op:
    TEST_UNIT_READY: Final = 0x00
    INQUIRY: Final = 0x12
    MODE_SENSE_6: Final = 0x1A
    READ_CAPACITY_10: Final = 0x25
    READ_10: Final = 0x28
    WRITE_10: Final = 0x2A
    SYNCHRONIZE_CACHE_10: Final = 0x35
    MODE_SENSE_10: Final = 0x5A
    READ_16: Final = 0x88
    WRITE_16: Final = 0x8A
    SYNCHRONIZE_CACHE_16: Final = 0x91
    WRITE_SAME_16: Final = 0x93
    UNMAP: Final = 0x42
    SERVICE_ACTION_IN_16: Final = 0x9E
    REPORT_LUNS: Final = 0xA0


SA_READ_CAPACITY_16 = 0x10
SA_GET_LBA_STATUS = 0x12

def test_unit_ready() -> bytes:
    return bytes(6)


def inquiry(allocation_length: int = 255, page_code: int | None = None) -> bytes:
    evpd = page_code is not None
    return struct.pack(">BBBHB", Op.INQUIRY, 1 if evpd else 0, page_code or 0, allocation_length, 0)


def mode_sense_6(page_code: int = 0x3F, allocation_length: int = 255) -> bytes:
    """DBD set: we want the header (its WP bit), not block descriptors (SPC-4 §6.11)."""
    return struct.pack(">BBBxBx", Op.MODE_SENSE_6, 0x08, page_code & 0x3F, allocation_length)


def mode_sense_10(page_code: int = 0x3F, allocation_length: int = 512) -> bytes:
    return struct.pack(">BBB4xHx", Op.MODE_SENSE_10, 0x08, page_code & 0x3F, allocation_length)


def report_luns(allocation_length: int = 16384, select_report: int = 0) -> bytes:
    return struct.pack(">BxB3xIxx", Op.REPORT_LUNS, select_report, allocation_length)


def read_capacity_10() -> bytes:
    return struct.pack(">B9x", Op.READ_CAPACITY_10)


def read_capacity_16(allocation_length: int = 32) -> bytes:
    return struct.pack(">BB8xIxx", Op.SERVICE_ACTION_IN_16, SA_READ_CAPACITY_16, allocation_length)


def fits_10(lba: int, blocks: int) -> bool:
    """Can READ/WRITE(10) address this range (32-bit LBA, 16-bit length)?"""
    return lba + blocks <= 0xFFFFFFFF and blocks <= 0xFFFF


def read(lba: int, blocks: int) -> bytes:
    if not fits_10(lba, blocks):
        return struct.pack(">BxQIxx", Op.READ_16, lba, blocks)
    return struct.pack(">BxIxHx", Op.READ_10, lba, blocks)


def write(lba: int, blocks: int) -> bytes:
    if not fits_10(lba, blocks):
        return struct.pack(">BxQIxx", Op.WRITE_16, lba, blocks)
    return struct.pack(">BxIxHx", Op.WRITE_10, lba, blocks)


def synchronize_cache(lba: int = 0, blocks: int = 0) -> bytes:
    """Blocks 0 means 'to the end of the medium' (SBC-3 §5.22)."""
    if not fits_10(lba, blocks):
        return struct.pack(">BxQIxx", Op.SYNCHRONIZE_CACHE_16, lba, blocks)
    return struct.pack(">BxIxHx", Op.SYNCHRONIZE_CACHE_10, lba, blocks)


def write_same_16(lba: int, blocks: int, *, unmap: bool = False) -> bytes:
    """WRITE SAME(16) (SBC-3 §5.42): one block of data, written to ``blocks`` blocks; with
    ``unmap``, the target may deallocate them instead (thin provisioning)."""
    return struct.pack(">BBQIBB", Op.WRITE_SAME_16, 0x08 if unmap else 0, lba, blocks, 0, 0)


def unmap(extents: list[tuple[int, int]]) -> tuple[bytes, bytes]:
    """UNMAP (SBC-3 §5.28): the CDB and its parameter list, one descriptor per (lba, blocks)."""
    descriptors = b"".join(struct.pack(">QI4x", lba, blocks) for lba, blocks in extents)
    params = struct.pack(">HH4x", len(descriptors) + 6, len(descriptors)) + descriptors
    return struct.pack(">BB4xBHB", Op.UNMAP, 0, 0, len(params), 0), params


def get_lba_status(lba: int, allocation_length: int) -> bytes:
    """GET LBA STATUS (SBC-3 §5.4): the provisioning status of the blocks from ``lba`` on."""
    return struct.pack(">BBQIxB", Op.SERVICE_ACTION_IN_16, SA_GET_LBA_STATUS, lba, allocation_length, 0)

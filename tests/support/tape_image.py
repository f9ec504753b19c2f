"""tgt's virtual tape file (``usr/bs_ssc.h``, ``usr/libssc.c``, ``usr/tgtimg.c``, tgt 1.0.85),
read and written independently of tgt, so tests can check what a tape holds byte for byte and
start from a tape of known contents.

The file: a 48-byte BOT header at 0 (its ``blk_sz`` is the capacity in MB), the MAM (1104
bytes, the barcode at its offset 568), then from offset 1152 a chain of 48-byte block headers,
each followed by its data, ending in an EOD header whose ``next`` is itself. Header integers are
big-endian; the CRC-32C of header bytes 4..47 is stored little-endian (host order on x86).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import crc32c

HEADER = struct.Struct(">4sIIIQQQQ")  # h_csum, ondisk_sz, blk_sz, blk_type, blk_num, prev, curr, next
FIRST_HEADER = 1152  # SSC_1ST_HDR_OFFSET: the BOT header and the MAM come first
MAM_OFFSET = 48
MAM_LENGTH = 1104
MAM_BARCODE = 568  # char barcode[32], "%-31s"
MAM_MAX_CAPACITY = 16  # u64, capacity in bytes

BLK_UNCOMPRESS_DATA = 0x02
BLK_BOT = 0x10
BLK_EOD = 0x20
BLK_FILEMARK = 0x40


class TapeImageError(ValueError):
    """The file is not a tgt tape as this reader understands it."""


@dataclass(frozen=True, slots=True)
class DataBlock:
    number: int  # blk_num: 1 for the first block after BOT; filemarks count too
    data: bytes


@dataclass(frozen=True, slots=True)
class Filemark:
    number: int


@dataclass(frozen=True, slots=True)
class EndOfData:
    number: int


Record = DataBlock | Filemark | EndOfData


@dataclass(frozen=True, slots=True)
class TapeImage:
    capacity_mb: int
    barcode: str
    records: tuple[Record, ...]  # from the first block to the EOD, which is last

    @property
    def files(self) -> list[list[bytes]]:
        """The blocks between filemarks, as ``dd`` through the non-rewinding device reads them:
        one list per file; the last is what follows the last filemark (maybe empty)."""
        out: list[list[bytes]] = [[]]
        for r in self.records:
            if isinstance(r, DataBlock):
                out[-1].append(r.data)
            elif isinstance(r, Filemark):
                out.append([])
        return out


def _header(raw: bytes, offset: int, check_crc: bool) -> tuple[int, int, int, int, int, int, int]:
    if offset + HEADER.size > len(raw):
        raise TapeImageError(f"header at {offset} runs past the end of the file ({len(raw)} bytes)")
    csum, ondisk, size, kind, number, prev, curr, nxt = HEADER.unpack_from(raw, offset)
    if check_crc and csum != struct.pack("<I", crc32c.crc32c(raw[offset + 4 : offset + HEADER.size])):
        raise TapeImageError(f"header at {offset} fails its CRC-32C")
    if curr != offset:
        raise TapeImageError(f"header at {offset} says it is at {curr}")
    return ondisk, size, kind, number, prev, curr, nxt


def read_tape_image(source: bytes | Path, *, check_crc: bool = True) -> TapeImage:
    raw = source.read_bytes() if isinstance(source, Path) else bytes(source)
    _, capacity, kind, *_ = _header(raw, 0, check_crc)
    if kind != BLK_BOT:
        raise TapeImageError(f"first header is of type 0x{kind:02x}, not BOT")
    barcode = raw[MAM_OFFSET + MAM_BARCODE : MAM_OFFSET + MAM_BARCODE + 32].decode("latin-1").rstrip(" \0")
    records: list[Record] = []
    offset, previous = FIRST_HEADER, 0
    while True:
        ondisk, size, kind, number, prev, curr, nxt = _header(raw, offset, check_crc)
        if prev != previous:
            raise TapeImageError(f"header at {offset} says the previous one is at {prev}, not {previous}")
        if kind == BLK_EOD:
            if nxt != curr:
                raise TapeImageError(f"EOD header at {offset} points on to {nxt}")
            records.append(EndOfData(number))
            return TapeImage(capacity, barcode, tuple(records))
        if nxt != curr + HEADER.size + ondisk:
            raise TapeImageError(f"header at {offset}: next {nxt} is not after its {ondisk} bytes")
        if kind == BLK_FILEMARK:
            records.append(Filemark(number))
        elif kind == BLK_UNCOMPRESS_DATA:
            data = raw[curr + HEADER.size : nxt]
            if len(data) != size or ondisk != size:
                raise TapeImageError(f"block at {offset} has {len(data)} bytes of {size}")
            records.append(DataBlock(number, data))
        else:
            raise TapeImageError(f"header at {offset} is of type 0x{kind:02x}")
        previous, offset = curr, nxt


def _pack_header(ondisk: int, size: int, kind: int, number: int, prev: int, curr: int, nxt: int) -> bytes:
    body = HEADER.pack(b"\0\0\0\0", ondisk, size, kind, number, prev, curr, nxt)[4:]
    return struct.pack("<I", crc32c.crc32c(body)) + body


def build_tape_image(blocks: list[bytes | None], *, capacity_mb: int = 1, barcode: str = "00000001") -> bytes:
    """A tape as tgt would leave it after writing ``blocks`` from BOT (None: a filemark). The MAM
    holds only the version, capacity and barcode: tgt reads nothing else of it."""
    mam = bytearray(MAM_LENGTH)
    struct.pack_into(">I", mam, 0, 2)  # TGT_TAPE_VERSION
    struct.pack_into(">Q", mam, MAM_MAX_CAPACITY, capacity_mb << 20)
    mam[MAM_BARCODE : MAM_BARCODE + 32] = f"{barcode:<31}".encode("latin-1")[:31] + b"\0"
    out = bytearray(_pack_header(0, capacity_mb, BLK_BOT, 0, 0, 0, FIRST_HEADER) + mam)
    prev = 0
    for number, block in enumerate(blocks, 1):
        curr = len(out)
        size = 0 if block is None else len(block)
        kind = BLK_FILEMARK if block is None else BLK_UNCOMPRESS_DATA
        out += _pack_header(size, size, kind, number, prev, curr, curr + HEADER.size + size) + (block or b"")
        prev = curr
    out += _pack_header(0, 0, BLK_EOD, len(blocks) + 1, prev, len(out), len(out))
    return bytes(out)

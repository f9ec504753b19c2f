"""An in-memory tape library for the fake target: tape drives (SSC-3) and a medium changer
(SMC-3) answering CDBs as the standards say, sans-I/O. ``support.hostile`` serves them through
``FakeTarget`` (and spoils the answers); tgt's own library is tested elsewhere, so this one
follows the standards where tgt does not (end of data as BLANK CHECK 00/05, READ ELEMENT STATUS
answers of their full length, real element descriptors with DVCID identifiers) and so takes the
codec's other paths.

Written from SSC-3 and SMC-3, independently of ``iscsifs.scsi``: no codec of the project is used
to build an answer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Sense keys (SPC-4 Table 51) and the additional sense codes used below.
NO_SENSE, NOT_READY, MEDIUM_ERROR, ILLEGAL_REQUEST, DATA_PROTECT, BLANK_CHECK, VOLUME_OVERFLOW = (
    0x0, 0x2, 0x3, 0x5, 0x7, 0x8, 0xD)
FILEMARK_DETECTED = (0x00, 0x01)
END_OF_PARTITION = (0x00, 0x02)
BEGINNING_OF_PARTITION = (0x00, 0x04)
END_OF_DATA = (0x00, 0x05)
INVALID_OPCODE = (0x20, 0x00)
INVALID_FIELD_IN_CDB = (0x24, 0x00)
INVALID_ELEMENT_ADDRESS = (0x21, 0x01)
WRITE_PROTECTED = (0x27, 0x00)
MEDIUM_NOT_PRESENT = (0x3A, 0x00)
DESTINATION_FULL = (0x3B, 0x0D)
SOURCE_EMPTY = (0x3B, 0x0E)

TRANSPORT, STORAGE, IMPORT_EXPORT, DATA_TRANSFER = 1, 2, 3, 4
BECOMING_READY = 3  # commands a drive answers NOT READY 04/01 after the changer gave it a tape
MEDIUM_MAY_HAVE_CHANGED = (0x28, 0x00)
LUN_BECOMING_READY = (0x04, 0x01)
UNIT_ATTENTION = 0x6
FIRST_ADDRESS = {TRANSPORT: 0x0001, DATA_TRANSFER: 0x0100, IMPORT_EXPORT: 0x0300, STORAGE: 0x0400}


def sense(key: int, code: tuple[int, int], *, filemark: bool = False, eom: bool = False, ili: bool = False,
          info: int | None = None) -> bytes:
    """Fixed-format sense (SPC-4 §4.5.3) with SSC's FILEMARK, EOM and ILI bits and INFORMATION."""
    b = bytearray(18)
    b[0] = 0x70 | (0x80 if info is not None else 0)
    b[2] = key | (0x80 if filemark else 0) | (0x40 if eom else 0) | (0x20 if ili else 0)
    if info is not None:
        b[3:7] = (info & 0xFFFFFFFF).to_bytes(4, "big")
    b[7] = 10
    b[12], b[13] = code
    return bytes(b)


@dataclass
class Answer:
    """What a device answers one command with: GOOD and ``data``, or CHECK CONDITION and
    ``sense`` (with ``data`` too, for a short block read)."""

    data: bytes = b""
    sense: bytes | None = None


def illegal(code: tuple[int, int] = INVALID_FIELD_IN_CDB) -> Answer:
    return Answer(sense=sense(ILLEGAL_REQUEST, code))


def _inquiry(cdb: bytes, peripheral_type: int, product: bytes, serial: bytes, naa: bytes) -> Answer:
    if cdb[1] & 1:  # EVPD
        t10 = b"FAKE    " + product.ljust(16) + serial
        pages = {0x00: bytes([0x00, 0x80, 0x83]), 0x80: serial,
                 0x83: bytes([0x02, 0x01, 0x00, len(t10)]) + t10 + bytes([0x01, 0x03, 0x00, 8]) + naa}
        body = pages.get(cdb[2])
        if body is None:
            return illegal()
        return Answer(bytes([peripheral_type, cdb[2]]) + len(body).to_bytes(2, "big") + body)
    return Answer(bytes([peripheral_type, 0x80, 5, 2, 31, 0, 0, 0]) + b"FAKE    " + product.ljust(16)[:16] + b"0001")


@dataclass
class Cartridge:
    """A tape: its barcode and what is on it, a block as bytes and a filemark as None."""

    barcode: str
    records: list[bytes | None] = field(default_factory=list)
    capacity: int = 1 << 20  # bytes of data; the early warning comes 4 KiB before
    write_protected: bool = False
    home: int | None = None  # the storage element it was last moved from (SVALID)

    @property
    def used(self) -> int:
        return sum(len(r) for r in self.records if r is not None)


@dataclass
class Library:
    """What the changer and the drives share: where each cartridge is."""

    slots: list[Cartridge | None]
    drives: list[Cartridge | None]
    import_export: list[Cartridge | None] = field(default_factory=lambda: [None])
    # Each drive: loaded (a LOAD, or the changer's move, made it ready) and its position.
    loaded: list[bool] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    # A drive given a tape by the changer, as real drives do and tgt's do not: the next command
    # gets UNIT ATTENTION 28/00 (not ready to ready: the medium may have changed), and the next
    # ``BECOMING_READY`` ones NOT READY 04/01 (becoming ready) while it threads the tape.
    attention: list[bool] = field(default_factory=list)
    becoming_ready: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.loaded = [c is not None for c in self.drives]
        self.position = [0] * len(self.drives)
        self.attention = [False] * len(self.drives)
        self.becoming_ready = [0] * len(self.drives)

    @classmethod
    def of(cls, slots: int = 4, drives: int = 2) -> Library:
        return cls([Cartridge(f"FAKE{n:02d}L5") for n in range(1, slots + 1)], [None] * drives)


class FakeTapeDrive:
    """One drive of the library, in variable-block mode only (as iscsifs uses it)."""

    def __init__(self, library: Library, index: int) -> None:
        self.library = library
        self.index = index
        self.serial = f"FAKEDRV{index:03d}".encode()
        self.naa = bytes.fromhex(f"60014050ab{index:02x}0001")

    @property
    def cartridge(self) -> Cartridge | None:
        return self.library.drives[self.index] if self.library.loaded[self.index] else None

    @property
    def position(self) -> int:
        return self.library.position[self.index]

    @position.setter
    def position(self, value: int) -> None:
        self.library.position[self.index] = value

    def answer(self, cdb: bytes, data_out: bytes) -> Answer:
        op = cdb[0]
        if op == 0x12:
            return _inquiry(cdb, 0x01, b"fake tape drive", self.serial, self.naa)
        lib, n = self.library, self.index
        if lib.attention[n]:
            lib.attention[n] = False
            return Answer(sense=sense(UNIT_ATTENTION, MEDIUM_MAY_HAVE_CHANGED))
        if lib.becoming_ready[n]:
            lib.becoming_ready[n] -= 1
            return Answer(sense=sense(NOT_READY, LUN_BECOMING_READY))
        if op == 0x05:  # READ BLOCK LIMITS: any length from 1 byte to 16 MiB - 1
            return Answer(bytes([0]) + (0xFFFFFF).to_bytes(3, "big") + (1).to_bytes(2, "big"))
        if op == 0x1E:  # PREVENT ALLOW MEDIUM REMOVAL
            return Answer()
        if op == 0x1B:  # LOAD UNLOAD
            if cdb[4] & 0x01:
                if self.library.drives[self.index] is None:
                    return Answer(sense=sense(NOT_READY, MEDIUM_NOT_PRESENT))
                self.library.loaded[self.index], self.position = True, 0
            else:
                self.library.loaded[self.index] = False
            return Answer()
        if op == 0x1A:  # MODE SENSE(6): header and one block descriptor, block length 0
            wp = self.cartridge is not None and self.cartridge.write_protected
            return Answer(bytes([11, 0, 0x10 | (0x80 if wp else 0), 8]) + bytes([0x00, 0, 0, 0, 0, 0, 0, 0]))
        if op == 0x15:  # MODE SELECT(6): only variable-block mode
            if len(data_out) >= 12 and data_out[3] >= 8 and int.from_bytes(data_out[9:12], "big"):
                return illegal()
            return Answer()
        tape = self.cartridge
        if tape is None:
            return Answer(sense=sense(NOT_READY, MEDIUM_NOT_PRESENT))
        if op == 0x00:
            return Answer()
        if op == 0x01:  # REWIND
            self.position = 0
            return Answer()
        if op == 0x08:
            return self._read(tape, cdb)
        if op in (0x0A, 0x10):
            return self._write(tape, cdb, data_out)
        if op == 0x11:
            return self._space(tape, cdb)
        if op == 0x19:  # ERASE: from here to the end
            if tape.write_protected:
                return Answer(sense=sense(DATA_PROTECT, WRITE_PROTECTED))
            del tape.records[self.position :]
            return Answer()
        if op == 0x34:  # READ POSITION, short form: BOP, and the block number both ways
            block = self.position
            return Answer(bytes([0x80 if block == 0 else 0, 0, 0, 0]) + struct.pack(">II", block, block)
                          + bytes(12))
        return illegal(INVALID_OPCODE)

    def _read(self, tape: Cartridge, cdb: bytes) -> Answer:
        if cdb[1] & 0x01:  # FIXED
            return illegal()
        length = int.from_bytes(cdb[2:5], "big")
        if self.position >= len(tape.records):
            return Answer(sense=sense(BLANK_CHECK, END_OF_DATA, eom=True, info=length))
        record = tape.records[self.position]
        self.position += 1
        if record is None:
            return Answer(sense=sense(NO_SENSE, FILEMARK_DETECTED, filemark=True, info=length))
        if len(record) == length:
            return Answer(record)
        # ILI: INFORMATION is the requested length less the block's (negative: the block is longer;
        # its first ``length`` bytes come, the rest is lost).
        return Answer(record[:length], sense(NO_SENSE, (0, 0), ili=True, info=length - len(record)))

    def _write(self, tape: Cartridge, cdb: bytes, data_out: bytes) -> Answer:
        if tape.write_protected:
            return Answer(sense=sense(DATA_PROTECT, WRITE_PROTECTED))
        if cdb[0] == 0x0A and cdb[1] & 0x01:
            return illegal()
        del tape.records[self.position :]  # writing truncates what followed
        if cdb[0] == 0x10:  # WRITE FILEMARKS(6)
            count = int.from_bytes(cdb[2:5], "big")
            tape.records.extend([None] * count)
            self.position += count
            return Answer()
        if tape.used + len(data_out) > tape.capacity:  # past the end of the partition: not written
            return Answer(sense=sense(VOLUME_OVERFLOW, END_OF_PARTITION, eom=True, info=len(data_out)))
        tape.records.append(bytes(data_out))
        self.position += 1
        if tape.used > tape.capacity - 4096:  # written, and the early warning
            return Answer(sense=sense(NO_SENSE, (0, 0), eom=True, info=0))
        return Answer()

    def _space(self, tape: Cartridge, cdb: bytes) -> Answer:
        code = cdb[1] & 0x07
        count = int.from_bytes(cdb[2:5], "big", signed=True)
        records = tape.records
        if code == 3:  # END OF DATA
            self.position = len(records)
            return Answer()
        if code not in (0, 1):
            return illegal()
        want_filemarks = code == 1
        step = 1 if count > 0 else -1
        left = abs(count)
        while left:
            if step > 0:
                if self.position >= len(records):
                    return Answer(sense=sense(BLANK_CHECK, END_OF_DATA, eom=True, info=left))
                record = records[self.position]
                self.position += 1
            else:
                if self.position == 0:
                    return Answer(sense=sense(NO_SENSE, BEGINNING_OF_PARTITION, eom=True, info=left))
                record = records[self.position - 1]
                self.position -= 1
            if record is None and not want_filemarks:  # spacing blocks stops at a filemark, past it
                return Answer(sense=sense(NO_SENSE, FILEMARK_DETECTED, filemark=True, info=left))
            if record is None or not want_filemarks:
                left -= 1
        return Answer()


class FakeChanger:
    """The library's changer: one transport, its drives, its storage slots and one import/export
    element, at the addresses of ``FIRST_ADDRESS``."""

    def __init__(self, library: Library, drives: list[FakeTapeDrive]) -> None:
        self.library = library
        self.drives = drives

    def _elements(self) -> dict[int, list[tuple[int, Cartridge | None]]]:
        lib = self.library
        kinds: dict[int, list[Cartridge | None]] = {TRANSPORT: [None], DATA_TRANSFER: lib.drives,
                                                     IMPORT_EXPORT: lib.import_export, STORAGE: lib.slots}
        return {t: [(FIRST_ADDRESS[t] + i, c) for i, c in enumerate(cs)] for t, cs in kinds.items()}

    def _where(self, address: int) -> tuple[list[Cartridge | None], int] | None:
        lib = self.library
        for t, holder in ((DATA_TRANSFER, lib.drives), (IMPORT_EXPORT, lib.import_export), (STORAGE, lib.slots)):
            if 0 <= address - FIRST_ADDRESS[t] < len(holder):
                return holder, address - FIRST_ADDRESS[t]
        return None

    def answer(self, cdb: bytes, data_out: bytes) -> Answer:
        op = cdb[0]
        if op == 0x12:
            return _inquiry(cdb, 0x08, b"fake changer", b"FAKECHG001", bytes.fromhex("60014050abff0001"))
        if op in (0x00, 0x1E, 0x07):  # TEST UNIT READY, PREVENT ALLOW, INITIALIZE ELEMENT STATUS
            return Answer()
        if op == 0x1A:  # MODE SENSE(6): the element address assignment page
            if cdb[2] & 0x3F not in (0x1D, 0x3F):
                return illegal()
            counts = {t: len(e) for t, e in self._elements().items()}
            page = bytes([0x1D, 0x12]) + struct.pack(
                ">8H", FIRST_ADDRESS[TRANSPORT], counts[TRANSPORT], FIRST_ADDRESS[STORAGE], counts[STORAGE],
                FIRST_ADDRESS[IMPORT_EXPORT], counts[IMPORT_EXPORT], FIRST_ADDRESS[DATA_TRANSFER],
                counts[DATA_TRANSFER]) + bytes(2)
            return Answer(bytes([3 + len(page), 0, 0, 0]) + page)
        if op == 0xB8:
            return self._read_element_status(cdb)
        if op == 0xA5:
            return self._move(cdb)
        return illegal(INVALID_OPCODE)

    def _read_element_status(self, cdb: bytes) -> Answer:
        voltag, kind = bool(cdb[1] & 0x10), cdb[1] & 0x0F
        start, number = struct.unpack_from(">HH", cdb, 2)
        dvcid = bool(cdb[6] & 0x01)
        allocation = int.from_bytes(cdb[7:10], "big")
        if kind > DATA_TRANSFER:
            return illegal()
        elements = self._elements()
        pages = b""
        first: int | None = None
        reported = 0
        for t in (TRANSPORT, STORAGE, IMPORT_EXPORT, DATA_TRANSFER):
            if kind not in (0, t):
                continue
            chosen = [(a, c) for a, c in elements[t] if a >= start][: max(0, number - reported)]
            if not chosen:
                continue
            first = chosen[0][0] if first is None else first
            reported += len(chosen)
            with_id = dvcid and t == DATA_TRANSFER
            descriptors = b"".join(self._descriptor(t, a, c, voltag, with_id) for a, c in chosen)
            length = len(descriptors) // len(chosen)
            pages += bytes([t, 0x80 if voltag else 0]) + length.to_bytes(2, "big") + bytes(1) \
                + len(descriptors).to_bytes(3, "big") + descriptors
        data = struct.pack(">HH", first or 0, reported) + bytes(1) + len(pages).to_bytes(3, "big") + pages
        return Answer(data[:allocation])

    def _descriptor(self, kind: int, address: int, cartridge: Cartridge | None, voltag: bool,
                    with_id: bool) -> bytes:
        source = cartridge.home if cartridge is not None and kind == DATA_TRANSFER else None
        d = bytearray(12)
        d[0:2] = address.to_bytes(2, "big")
        d[2] = (0x01 if cartridge is not None else 0) | (0x08 if kind != TRANSPORT else 0)
        if source is not None:
            d[9] = 0x80
            d[10:12] = source.to_bytes(2, "big")
        if voltag:
            d += (cartridge.barcode.encode().ljust(32) if cartridge is not None else bytes(32)) + bytes(4)
        if with_id:
            serial = self.drives[address - FIRST_ADDRESS[DATA_TRANSFER]].serial
            t10 = b"FAKE    " + b"fake tape drive".ljust(16) + serial
            d += bytes([0x02, 0x01, 0x00, len(t10)]) + t10
        return bytes(d)

    def _move(self, cdb: bytes) -> Answer:
        source, destination = struct.unpack_from(">HH", cdb, 4)
        src, dst = self._where(source), self._where(destination)
        if src is None or dst is None:
            return illegal(INVALID_ELEMENT_ADDRESS)
        (s_holder, s_index), (d_holder, d_index) = src, dst
        cartridge = s_holder[s_index]
        if cartridge is None:
            return illegal(SOURCE_EMPTY)
        if d_holder[d_index] is not None:
            return illegal(DESTINATION_FULL)
        s_holder[s_index], d_holder[d_index] = None, cartridge
        lib = self.library
        if s_holder is lib.slots:
            cartridge.home = source
        if s_holder is lib.drives:
            lib.loaded[s_index] = False
        if d_holder is lib.drives:  # a drive loads what it is given, at the beginning, and says so
            lib.loaded[d_index], lib.position[d_index] = True, 0
            lib.attention[d_index], lib.becoming_ready[d_index] = True, BECOMING_READY
        return Answer()

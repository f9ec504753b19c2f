"""Medium changers (SMC-3): the CDBs that move and inventory media, READ ELEMENT STATUS and the
element address assignment page as typed data, and the text ``mtx status`` prints for them.
Nothing here keeps state or does I/O.

Ask READ ELEMENT STATUS one element type at a time, with VOLTAG, as mtx does: tgt 1.0.85
garbles element type 0 (all types), and its answers are 8 bytes short (see
``parse_read_element_status``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from iscsifs.proto.errors import LocalProtocolError
from iscsifs.scsi import cdb
from iscsifs.scsi.response import Designator, ScsiParseError


class SmcOp:
    """SMC-3 Table 3 opcodes."""

    INITIALIZE_ELEMENT_STATUS: Final = 0x07
    MOVE_MEDIUM: Final = 0xA5
    EXCHANGE_MEDIUM: Final = 0xA6
    READ_ELEMENT_STATUS: Final = 0xB8


class ElementType(enum.IntEnum):
    """SMC-3 Table 27: element type codes (0, all types, is not offered: see the module doc)."""

    MEDIUM_TRANSPORT = 1
    STORAGE = 2
    IMPORT_EXPORT = 3
    DATA_TRANSFER = 4


ELEMENT_ADDRESS_ASSIGNMENT_PAGE = 0x1D
# What mtx allocates for the page (``1a 08 1d 00 88 00``).
ELEMENT_ADDRESS_ASSIGNMENT_ALLOCATION = 136


def _u16(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{what} {value} is not a 16-bit element address")
    return value


# -- CDBs ----------------------------------------------------------------------------------------


def read_element_status(element_type: ElementType, starting_address: int = 0, number_of_elements: int = 0xFFFF,
                        allocation_length: int = 0xFFFF, *, voltag: bool = True, dvcid: bool = False) -> bytes:
    """READ ELEMENT STATUS (SMC-3 §6.11, Table 19). tgt ignores NUMBER OF ELEMENTS and returns
    every element of the type from the starting address on."""
    if not ElementType.MEDIUM_TRANSPORT <= element_type <= ElementType.DATA_TRANSFER:
        raise LocalProtocolError(f"element type {element_type} is not 1..4 (type 0 is garbled on tgt)")
    if not 0 <= allocation_length <= 0xFFFFFF:
        raise LocalProtocolError(f"allocation length {allocation_length} does not fit 24 bits")
    return struct.pack(">BBHHB", SmcOp.READ_ELEMENT_STATUS, (0x10 if voltag else 0) | element_type,
                       _u16(starting_address, "starting address"), _u16(number_of_elements, "number of elements"),
                       0x01 if dvcid else 0) + allocation_length.to_bytes(3, "big") + b"\0\0"


def move_medium(transport: int, source: int, destination: int, *, invert: bool = False) -> bytes:
    """MOVE MEDIUM (SMC-3 §6.6). tgt ignores the transport address; 0 names the default one."""
    return struct.pack(">BxHHHxxBx", SmcOp.MOVE_MEDIUM, _u16(transport, "transport"), _u16(source, "source"),
                       _u16(destination, "destination"), 0x01 if invert else 0)


def exchange_medium(transport: int, source: int, first_destination: int, second_destination: int, *,
                    invert_first: bool = False, invert_second: bool = False) -> bytes:
    """EXCHANGE MEDIUM (SMC-3 §6.3): the source's medium to the first destination, the first
    destination's to the second (the source, for a swap). tgt does not support it (20/00)."""
    flags = (0x02 if invert_first else 0) | (0x01 if invert_second else 0)
    return struct.pack(">BxHHHHBx", SmcOp.EXCHANGE_MEDIUM, _u16(transport, "transport"), _u16(source, "source"),
                       _u16(first_destination, "first destination"), _u16(second_destination, "second destination"),
                       flags)


def initialize_element_status() -> bytes:
    """INITIALIZE ELEMENT STATUS (SMC-3 §6.4): inventory again (``mtx inventory``)."""
    return bytes([SmcOp.INITIALIZE_ELEMENT_STATUS, 0, 0, 0, 0, 0])


def mode_sense_element_address_assignment(allocation_length: int = ELEMENT_ADDRESS_ASSIGNMENT_ALLOCATION) -> bytes:
    """MODE SENSE(6), DBD set, page 0x1D: how many elements of each type, at which addresses."""
    return cdb.mode_sense_6(ELEMENT_ADDRESS_ASSIGNMENT_PAGE, allocation_length)


# -- the element address assignment page ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ElementRange:
    first: int
    count: int

    @property
    def addresses(self) -> range:
        return range(self.first, self.first + self.count)


@dataclass(frozen=True, slots=True)
class ElementAddressAssignment:
    """Mode page 0x1D (SMC-3 §7.3.3)."""

    medium_transport: ElementRange
    storage: ElementRange
    import_export: ElementRange
    data_transfer: ElementRange

    def range_of(self, element_type: ElementType) -> ElementRange:
        return (self.medium_transport, self.storage, self.import_export, self.data_transfer)[element_type - 1]


def parse_element_address_assignment(data: bytes | bytearray | memoryview,
                                     ten: bool = False) -> ElementAddressAssignment:
    """The page from a MODE SENSE(6) (or, with ``ten``, (10)) answer, block descriptors skipped."""
    d = bytes(data)
    header = 8 if ten else 4
    if len(d) < header:
        raise ScsiParseError(f"MODE SENSE data of {len(d)} bytes")
    descriptors = int.from_bytes(d[6:8], "big") if ten else d[3]
    page = d[header + descriptors :]
    if len(page) < 18 or page[0] & 0x3F != ELEMENT_ADDRESS_ASSIGNMENT_PAGE or page[1] < 16:
        raise ScsiParseError("MODE SENSE answer has no element address assignment page (0x1D)")
    words = struct.unpack_from(">8H", page, 2)
    return ElementAddressAssignment(*(ElementRange(words[i], words[i + 1]) for i in range(0, 8, 2)))


# -- READ ELEMENT STATUS -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VolumeTag:
    """A volume tag (SMC-3 §7.6): 32 bytes of identifier, 2 reserved, a 16-bit sequence number."""

    identifier: str  # trailing spaces (and NULs) stripped
    sequence: int
    raw: bytes  # the 36 bytes as they came (mtx prints from these)


def _volume_tag(raw: bytes) -> VolumeTag:
    return VolumeTag(raw[:32].decode("latin-1").rstrip(" \0"), int.from_bytes(raw[34:36], "big"), raw)


@dataclass(frozen=True, slots=True)
class ElementDescriptor:
    """One element status descriptor (SMC-3 §6.11.4; Tables 23 to 26 share this layout)."""

    element_type: ElementType
    address: int
    full: bool
    access: bool = False  # the transport may reach it
    exception: bool = False  # EXCEPT: ASC/ASCQ say what is wrong
    import_export: bool = False  # IMPEXP: an import/export element's medium came from outside
    asc: int = 0
    ascq: int = 0
    svalid: bool = False
    invert: bool = False
    source_storage_element_address: int = 0  # as sent, whatever SVALID says (mtx reads it so)
    primary_volume_tag: VolumeTag | None = None
    alternate_volume_tag: VolumeTag | None = None
    identifier: Designator | None = None  # the device identifier (DVCID): drives have one
    truncated: bool = False  # the answer ended inside this descriptor: missing bytes read as zero

    @property
    def source(self) -> int | None:
        """The element the medium came from, when SVALID says it is known."""
        return self.source_storage_element_address if self.svalid else None

    @property
    def volume_tag(self) -> str | None:
        """The primary volume tag (the barcode), stripped; None when there is none."""
        tag = self.primary_volume_tag
        return tag.identifier if tag is not None and tag.identifier else None


@dataclass(frozen=True, slots=True)
class ElementStatusPage:
    element_type: ElementType
    pvoltag: bool
    avoltag: bool
    descriptor_length: int
    descriptors: tuple[ElementDescriptor, ...]


@dataclass(frozen=True, slots=True)
class ElementStatus:
    """A READ ELEMENT STATUS answer (SMC-3 §6.11.2). ``number_of_elements`` is what the header
    promised; ``received`` counts the descriptors that came whole."""

    first_element_address: int  # wrong on tgt 1.0.85: use the descriptors' addresses
    number_of_elements: int
    pages: tuple[ElementStatusPage, ...]

    @property
    def descriptors(self) -> tuple[ElementDescriptor, ...]:
        return tuple(e for page in self.pages for e in page.descriptors)

    @property
    def received(self) -> int:
        return sum(1 for e in self.descriptors if not e.truncated)

    @property
    def complete(self) -> bool:
        return self.received == self.number_of_elements


_MIN_DESCRIPTOR = 12  # address, flags, ASC/ASCQ, source: SMC-3's fixed part


def _descriptor(element_type: ElementType, raw: bytes, pvoltag: bool, avoltag: bool,
                truncated: bool) -> ElementDescriptor:
    d = raw.ljust(_MIN_DESCRIPTOR, b"\0")
    flags, source_flags = d[2], d[9]
    at = _MIN_DESCRIPTOR
    tags: list[VolumeTag | None] = [None, None]
    for n, present in enumerate((pvoltag, avoltag)):
        if present:
            tags[n] = _volume_tag(d[at : at + 36].ljust(36, b"\0"))
            at += 36
    identifier = None
    if len(d) >= at + 4 and d[at + 3]:  # SMC-3 Table 25: the identifier follows the tags; length 0: none
        identifier = Designator(d[at] & 0x0F, (d[at + 1] >> 4) & 0x03, d[at + 1] & 0x0F,
                                d[at + 4 : at + 4 + d[at + 3]])
    return ElementDescriptor(element_type, int.from_bytes(d[0:2], "big"), bool(flags & 0x01), bool(flags & 0x08),
                             bool(flags & 0x04), bool(flags & 0x02), d[4], d[5], bool(source_flags & 0x80),
                             bool(source_flags & 0x40), int.from_bytes(d[10:12], "big"), tags[0], tags[1],
                             identifier, truncated)


def parse_read_element_status(data: bytes | bytearray | memoryview) -> ElementStatus:
    """The header, each element status page and each descriptor (SMC-3 §6.11.2 to §6.11.4).

    tgt 1.0.85 sends 8 + n * (descriptor length) bytes, forgetting its page header: the last
    descriptor loses its last 8 bytes. A descriptor cut short at the end of the data is kept,
    zero-filled (as mtx reads it) and marked ``truncated``; ``complete`` then says False. What the
    data holds must otherwise agree with itself, or ScsiParseError."""
    d = bytes(data)
    if len(d) < 8:
        raise ScsiParseError(f"READ ELEMENT STATUS data of {len(d)} bytes")
    first, count = struct.unpack_from(">HH", d)
    end = min(len(d), 8 + int.from_bytes(d[5:8], "big"))
    pages: list[ElementStatusPage] = []
    at = 8
    while at + 8 <= end:
        code, bits, length = d[at] & 0x0F, d[at + 1], int.from_bytes(d[at + 2 : at + 4], "big")
        page_bytes = int.from_bytes(d[at + 5 : at + 8], "big")
        try:
            element_type = ElementType(code)
        except ValueError:
            raise ScsiParseError(f"READ ELEMENT STATUS page of element type {code}") from None
        if length < 4 or page_bytes % length:
            raise ScsiParseError(f"READ ELEMENT STATUS page with {page_bytes} bytes of {length}-byte descriptors")
        pvoltag, avoltag = bool(bits & 0x80), bool(bits & 0x40)
        body = d[at + 8 : min(at + 8 + page_bytes, end)]
        descriptors = [_descriptor(element_type, body[i : i + length], pvoltag, avoltag,
                                   i + length > len(body))
                       for i in range(0, len(body), length) if len(body) - i >= 4]
        pages.append(ElementStatusPage(element_type, pvoltag, avoltag, length, tuple(descriptors)))
        at += 8 + page_bytes
    return ElementStatus(first, count, tuple(pages))


# -- the library as a whole ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LibraryStatus:
    """Every element of a changer, by type, in the order the changer reported them (the order
    mtx numbers them in: drives from 0, slots from 1)."""

    drives: tuple[ElementDescriptor, ...]  # data transfer elements
    slots: tuple[ElementDescriptor, ...]  # storage elements
    import_export: tuple[ElementDescriptor, ...]
    transports: tuple[ElementDescriptor, ...]
    complete: bool = True  # False: some answer was cut short (tgt 1.0.85 always is)

    def slot_number(self, address: int) -> int | None:
        """The 1-based slot number of a storage element address, as mtx counts slots."""
        for n, slot in enumerate(self.slots, 1):
            if slot.address == address:
                return n
        return None

    def source_slot(self, drive: ElementDescriptor) -> int | None:
        """The slot number a drive's medium came from, when the changer says (SVALID)."""
        source = drive.source
        return None if source is None else self.slot_number(source)


def library_status(answers: Iterable[ElementStatus]) -> LibraryStatus:
    """Put the answers to the per-type READ ELEMENT STATUS commands together."""
    by_type: dict[ElementType, list[ElementDescriptor]] = {t: [] for t in ElementType}
    complete = True
    for answer in answers:
        complete = complete and answer.complete
        for e in answer.descriptors:
            by_type[e.element_type].append(e)
    return LibraryStatus(tuple(by_type[ElementType.DATA_TRANSFER]), tuple(by_type[ElementType.STORAGE]),
                         tuple(by_type[ElementType.IMPORT_EXPORT]), tuple(by_type[ElementType.MEDIUM_TRANSPORT]),
                         complete)


# -- mtx status ----------------------------------------------------------------------------------

# mtx's own skips (mtxl.c ParseElementStatus): ATL/Exabyte slots and drives that are not installed.
_MTX_ABSENT_SLOT = (0x83, 0x02)
_MTX_ABSENT_DRIVE = (0x83, 0x04)


def _mtx_tag(tag: VolumeTag | None) -> str:
    """mtx's copy_barcode: the 36 bytes (tag, reserved, sequence) with any byte below 32 or above
    127 made NUL, printed as a C string. Spaces are kept: tgt's tags print with 24 trailing."""
    if tag is None:
        return ""
    out = []
    for b in tag.raw[:36]:
        if b < 32 or b > 127:
            break
        out.append(chr(b))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class MtxNumbering:
    """A status as mtx numbers it (mtxl.c ReadElementStatus): ``drives[n]`` is drive n,
    ``storage[n - 1]`` slot n (the storage slots, then the import/export elements), ``sources[n]``
    the 0-based storage index drive n's medium goes back to, or -1. Elements that are not
    installed are left out, as mtx leaves them out."""

    drives: tuple[ElementDescriptor, ...]
    storage: tuple[ElementDescriptor, ...]
    slot_count: int  # storage slots proper, import/export elements not counted
    sources: tuple[int, ...]


def mtx_numbering(status: LibraryStatus) -> MtxNumbering:
    """mtx's two passes for the sources: a full drive's source address names a slot when that
    slot is now empty; otherwise the drive is given the next empty slot proper in turn, or -1
    (printed as Unknown). mtx reads the source address whatever SVALID says."""
    drives = tuple(e for e in status.drives if (e.asc, e.ascq) != _MTX_ABSENT_DRIVE)
    slots = tuple(e for e in status.slots if (e.asc, e.ascq) != _MTX_ABSENT_SLOT)
    storage = slots + tuple(status.import_export)
    sources = [-1] * len(drives)
    for i, drive in enumerate(drives):
        if drive.full:
            for j, element in enumerate(storage):
                if element.address == drive.source_storage_element_address and not element.full:
                    sources[i] = j
    unused = iter(j for j, slot in enumerate(slots) if not slot.full)
    for i, drive in enumerate(drives):
        if drive.full and sources[i] < 0:
            sources[i] = next(unused, -1)
    return MtxNumbering(drives, storage, len(slots), tuple(sources))


def mtx_status_text(status: LibraryStatus, device: str = "/dev/changer") -> str:
    """What ``mtx -f DEVICE status`` (mtx 1.3.12, mtx.c Status) prints for this library."""
    numbering = mtx_numbering(status)
    drives, storage, sources = numbering.drives, numbering.storage, numbering.sources
    lines = [f"  Storage Changer {device}:{len(drives)} Drives, {len(storage)} Slots "
             f"( {len(status.import_export)} Import/Export )"]
    for i, drive in enumerate(drives):
        line = f"Data Transfer Element {i}:"
        if not drive.full:
            lines.append(line + "Empty")
            continue
        line += f"Full (Storage Element {sources[i] + 1} Loaded)" if sources[i] > -1 \
            else "Full (Unknown Storage Element Loaded)"
        primary, alternate = _mtx_tag(drive.primary_volume_tag), _mtx_tag(drive.alternate_volume_tag)
        line += f":VolumeTag = {primary}" if primary else ""
        line += f":AlternateVolumeTag = {alternate}" if alternate else ""
        lines.append(line)
    for n, element in enumerate(storage, 1):
        is_ie = element.element_type == ElementType.IMPORT_EXPORT
        line = f"      Storage Element {n}{' IMPORT/EXPORT' if is_ie else ''}:{'Full ' if element.full else 'Empty'}"
        primary, alternate = _mtx_tag(element.primary_volume_tag), _mtx_tag(element.alternate_volume_tag)
        line += f":VolumeTag={primary}" if primary else ""
        line += f":AlternateVolumeTag={alternate}" if alternate else ""
        lines.append(line)
    return "\n".join(lines) + "\n"

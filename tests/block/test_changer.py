"""The changer's rules (``iscsifs.block.changer``) over an in-memory medium changer that answers
MODE SENSE page 0x1D, READ ELEMENT STATUS and MOVE MEDIUM as SMC-3 says, with tgt 1.0.85's short
answers when asked (no network). What a real tgt does is in tests/test_changer.py."""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsifs.block.changer import (
    Changer,
    ElementFull,
    NoMedium,
    NoSourceSlot,
    NoSuchElement,
    match_drive_luns,
    mtx_view,
    serial_of,
)
from iscsifs.block.client import LunInfo
from iscsifs.block.identity import Identity
from iscsifs.proto.connection import ScsiResult
from iscsifs.scsi.response import Designator, DeviceType, StandardInquiry
from iscsifs.scsi.smc import ElementDescriptor, ElementType, LibraryStatus, VolumeTag, mtx_status_text

CHECK_CONDITION = 0x02
LUN = 3


def sense(key: int, asc: int, ascq: int) -> bytes:
    return bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq])


@dataclass
class Element:
    type: ElementType
    address: int
    barcode: str | None = None  # None: empty
    source: int = 0  # the address the medium came from (0: never moved)
    identifier: bytes = b""  # drives: the device identifier (T10 vendor ID)
    absent: bool = False  # mtx's "not installed" (83/02, 83/04)


@dataclass
class FakeChanger:
    """One changer LUN. ``short``: answers lose their last 8 bytes, as tgt 1.0.85's do."""

    elements: list[Element]
    short: bool = False
    refuse_dvcid: bool = False
    understate: bool = False  # page 0x1D says one slot, whatever there are (READ ELEMENT STATUS: all)
    cdbs: list[bytes] = field(default_factory=list)
    target_name: str = "iqn.2026-11.test:changer"

    def of(self, t: ElementType) -> list[Element]:
        return [e for e in self.elements if e.type == t]

    def at(self, address: int) -> Element | None:
        return next((e for e in self.elements if e.address == address), None)

    async def execute(self, lun: int, cdb: bytes, *, data_out=None, expected_in: int = 0, into=None) -> ScsiResult:
        assert lun == LUN
        self.cdbs.append(bytes(cdb))
        op = cdb[0]
        if op == 0x1A:
            assert cdb[2] & 0x3F == 0x1D
            words = []
            for t in ElementType:
                group = self.of(t)
                count = 1 if self.understate and t == ElementType.STORAGE else len(group)
                words += [group[0].address if group else 0, count]
            page = bytes([0x1D, 0x12]) + struct.pack(">8H", *words) + bytes(2)
            data = bytes([3 + len(page), 0, 0, 0]) + page
            return ScsiResult(0, b"", data[: cdb[4]])
        if op == 0xB8:
            return self._read_element_status(cdb)
        if op == 0xA5:
            source, destination = struct.unpack_from(">HH", cdb, 4)
            s, d = self.at(source), self.at(destination)
            if s is None or d is None:
                return ScsiResult(CHECK_CONDITION, sense(0x05, 0x21, 0x01))
            if s.barcode is None:
                return ScsiResult(CHECK_CONDITION, sense(0x05, 0x3B, 0x0E))
            if d.barcode is not None:
                return ScsiResult(CHECK_CONDITION, sense(0x05, 0x3B, 0x0D))
            d.barcode, d.source, s.barcode = s.barcode, s.address, None
            return ScsiResult(0)
        if op == 0x07:
            return ScsiResult(0)
        return ScsiResult(CHECK_CONDITION, sense(0x05, 0x20, 0x00))

    def _read_element_status(self, cdb: bytes) -> ScsiResult:
        t = cdb[1] & 0x0F
        assert t != 0, "element type 0 asked"
        voltag, dvcid = bool(cdb[1] & 0x10), bool(cdb[6] & 0x01)
        if dvcid and self.refuse_dvcid:
            return ScsiResult(CHECK_CONDITION, sense(0x05, 0x24, 0x00))
        start, allocation = struct.unpack_from(">H", cdb, 2)[0], int.from_bytes(cdb[7:10], "big")
        group = [e for e in self.of(ElementType(t)) if e.address >= start]
        length = 12 + (36 if voltag else 0) + (4 + 34 if dvcid and t == ElementType.DATA_TRANSFER else 0)
        body = b""
        for e in group:
            asc = (0x83, 0x04 if t == ElementType.DATA_TRANSFER else 0x02) if e.absent else (0, 0)
            d = struct.pack(">HBxBBxxxBH", e.address, 0x01 if e.barcode else 0, *asc,
                            0x80 if e.source else 0, e.source)
            if voltag:
                d += (e.barcode or "").ljust(32).encode() + bytes(4)
            if len(d) < length:
                d += bytes([0x02, 0x01, 0, 34]) + e.identifier.ljust(34, b"\0")
            body += d
        page = bytes([t, 0x80 if voltag else 0]) + struct.pack(">H", length) + bytes([0]) + len(body).to_bytes(3, "big")
        data = struct.pack(">HHx", group[0].address if group else 0, len(group)) + (8 + len(body)).to_bytes(3, "big")
        data += page + body
        if self.short:
            data = data[:-8]
        return ScsiResult(0, b"", data[:allocation])

    def media(self) -> dict[int, str | None]:
        return {e.address: e.barcode for e in self.elements}


def library(drives: int = 2, slots: int = 4, full: int = 4, ie: int = 0, short: bool = True) -> FakeChanger:
    """tgt's README.vtl layout: drives from 1, the picker, the slots (the first ``full`` holding a
    tape), then import/export elements."""
    elements = [Element(ElementType.DATA_TRANSFER, n, identifier=b"IET     VIRTUAL-TAPE    beaf1" + str(n).encode())
                for n in range(1, drives + 1)]
    elements.append(Element(ElementType.MEDIUM_TRANSPORT, drives + 1))
    first = drives + 2
    elements += [Element(ElementType.STORAGE, first + i, f"{i + 1:08d}" if i < full else None) for i in range(slots)]
    elements += [Element(ElementType.IMPORT_EXPORT, first + slots + i) for i in range(ie)]
    return FakeChanger(elements, short=short)


def moves(fake: FakeChanger) -> list[tuple[int, int]]:
    return [struct.unpack_from(">HH", c, 4) for c in fake.cdbs if c[0] == 0xA5]


async def test_status_asks_each_type_and_tolerates_short_answers():
    fake = library(ie=1)
    status = await Changer(fake, LUN).status()
    assert [c[0] for c in fake.cdbs] == [0x1A, 0xB8, 0xB8, 0xB8, 0xB8]
    assert [c[1] & 0x0F for c in fake.cdbs[1:]] == [1, 2, 3, 4]
    assert [bool(c[6] & 1) for c in fake.cdbs[1:]] == [False, False, False, True]
    assert not status.complete
    assert [s.volume_tag for s in status.slots] == ["00000001", "00000002", "00000003", "00000004"]
    assert len(status.import_export) == 1 and len(status.drives) == 2
    # The last drive's identifier lost its last 8 bytes: what came is its serial's beginning.
    assert await Changer(fake, LUN).drive_serials() == {0: "beaf11", 1: "be"}


async def test_a_larger_allocation_when_the_answer_says_so():
    fake = library(slots=40, full=40, short=False)
    fake.understate = True
    # An answer cut at the allocation is asked again with what its header says it has (mtx's rule).
    status = await Changer(fake, LUN).status()
    assert len(status.slots) == 40 and status.complete
    asked = [int.from_bytes(c[7:10], "big") for c in fake.cdbs if c[0] == 0xB8 and c[1] & 0x0F == 2]
    assert len(asked) == 2 and asked[0] < asked[1] == 16 + 40 * 48


async def test_dvcid_refused_is_asked_without():
    fake = library(short=False)
    fake.refuse_dvcid = True
    status = await Changer(fake, LUN).status()
    assert len(status.drives) == 2 and all(d.identifier is None for d in status.drives)


async def test_load_unload_to_the_source_and_mtx_rule():
    fake = library()
    changer = Changer(fake, LUN)
    await changer.load(1)
    assert moves(fake) == [(4, 1)]  # slot 1 is element 4, drive 0 element 1
    await changer.transfer(2, 1)  # the drive's source is full again
    status = await changer.status()
    view = mtx_view(status)
    assert view.source_slot(0) == 2  # mtx: the first empty slot stands for it
    assert "Data Transfer Element 0:Full (Storage Element 2 Loaded)" in mtx_status_text(status)
    await changer.unload()
    assert moves(fake)[-1] == (1, 5)
    with pytest.raises(NoMedium):
        await changer.unload()


async def test_unload_with_no_source_and_no_empty_slot():
    fake = library(slots=2, full=2)
    fake.elements[0].barcode = "CLEAN001"  # a medium that never moved: no source
    before = fake.media()
    with pytest.raises(NoSourceSlot) as refused:
        await Changer(fake, LUN).unload()
    assert refused.value.errno == errno.ENOSPC and not moves(fake) and fake.media() == before
    with pytest.raises(ElementFull):
        await Changer(fake, LUN).unload(2)


async def test_import_export_elements_are_numbered_after_the_slots():
    fake = library(slots=3, full=3, ie=2)
    changer = Changer(fake, LUN)
    await changer.transfer(1, 4)  # slot 4 is the first import/export element (address 8)
    assert moves(fake) == [(4, 7)]
    with pytest.raises(NoSuchElement):
        await changer.transfer(1, 6)
    fake.cdbs.clear()
    await changer.last()  # the last slot proper (3), not an import/export element
    assert moves(fake) == [(6, 1)]


async def test_absent_elements_are_skipped_as_mtx_skips_them():
    fake = library(slots=3, full=2)
    fake.elements[3].absent = True  # slot at address 4: not installed
    changer = Changer(fake, LUN)
    view = mtx_view(await changer.status())
    assert [s.address for s in view.storage] == [5, 6]
    await changer.load(1)
    assert moves(fake) == [(5, 1)]


async def test_next_first_last_moves():
    fake = library()
    changer = Changer(fake, LUN)
    await changer.next()
    await changer.next()
    await changer.last()
    await changer.first()
    assert moves(fake) == [(4, 1), (1, 4), (5, 1), (1, 5), (7, 1), (1, 7), (4, 1)]
    fake.cdbs.clear()
    await changer.first()  # slot 1's medium is loaded already
    assert moves(fake) == []
    fake.elements[6].barcode = None  # slot 4 (address 7) emptied behind our back
    with pytest.raises(NoMedium):
        await changer.last()
    assert moves(fake) == []


async def test_exchange_passes_through_the_first_empty_slot():
    fake = library(full=3)
    await Changer(fake, LUN).exchange(1, 3)
    assert moves(fake) == [(4, 7), (6, 4), (7, 6)]
    assert [fake.at(a).barcode for a in (4, 5, 6, 7)] == ["00000003", "00000002", "00000001", None]
    assert not [c for c in fake.cdbs if c[0] == 0xA6]  # never EXCHANGE MEDIUM: tgt refuses it


@pytest.mark.parametrize(("verb", "error", "code"), [
    (lambda c: c.load(1, 0), ElementFull, errno.EBUSY),  # a full drive
    (lambda c: c.load(4, 1), NoMedium, errno.ENOMEDIUM),  # an empty slot
    (lambda c: c.load(5), NoSuchElement, errno.EINVAL),
    (lambda c: c.load(0), NoSuchElement, errno.EINVAL),
    (lambda c: c.load(1, 2), NoSuchElement, errno.EINVAL),
    (lambda c: c.unload(drive=1), NoMedium, errno.ENOMEDIUM),  # an empty drive
    (lambda c: c.unload(2), ElementFull, errno.EBUSY),  # into a full slot
    (lambda c: c.unload(0), NoSuchElement, errno.EINVAL),
    (lambda c: c.transfer(4, 1), NoMedium, errno.ENOMEDIUM),
    (lambda c: c.transfer(1, 2), ElementFull, errno.EBUSY),
    (lambda c: c.exchange(1, 4), NoMedium, errno.ENOMEDIUM),
    (lambda c: c.exchange(3, 3), NoSuchElement, errno.EINVAL),
    (lambda c: c.next(0), NoMedium, errno.ENOMEDIUM),  # its tape came from the last slot
])
async def test_refusals_send_no_move(verb, error, code):
    fake = library()
    fake.elements[0].barcode, fake.elements[0].source = "00000004", 7  # drive 0 holds slot 4's tape
    fake.at(7).barcode = None
    before = fake.media()
    with pytest.raises(error) as refused:
        await verb(Changer(fake, LUN))
    assert refused.value.errno == code and str(refused.value) and "\n" not in str(refused.value)
    assert {c[0] for c in fake.cdbs} <= {0x1A, 0xB8} and fake.media() == before


async def test_the_changer_s_own_refusals_are_typed():
    fake = library(full=2)
    changer = Changer(fake, LUN)
    with pytest.raises(NoMedium):
        await changer.move(7, 1)
    with pytest.raises(ElementFull):
        await changer.move(4, 5)
    with pytest.raises(NoSuchElement):
        await changer.move(4, 99)
    assert [c[2:4] for c in fake.cdbs if c[0] == 0xA5] == [b"\0\x03"] * 3  # the picker, address 3


def info(lun: int, serial: str, device_type: int = DeviceType.SEQUENTIAL_ACCESS) -> LunInfo:
    inquiry = StandardInquiry(0, device_type, True, 5, "IET", "VIRTUAL-TAPE", "0001")
    return LunInfo("iqn.2026-11.test:changer", lun, inquiry, None, Identity(serial=serial))


def test_drive_serials_match_luns():
    assert serial_of(Designator(2, 0, 1, b"IET     VIRTUAL-TAPE    beaf11\0\0\0\0")) == "beaf11"
    assert serial_of(Designator(1, 0, 3, bytes.fromhex("600000000000000e"))) == "naa.600000000000000e"
    luns = [info(0, ""), info(1, "beaf11"), info(2, "beaf12"), info(3, "beaf13", DeviceType.MEDIUM_CHANGER)]
    assert match_drive_luns({0: "beaf11", 1: "be"}, luns) == {0: 1, 1: 2}
    assert match_drive_luns({0: "be", 1: "b"}, luns[:3]) == {}  # ambiguous: no guess
    assert match_drive_luns({0: "beaf1234567890"[:10]}, [info(5, "beaf1234567890")]) == {0: 5}


def descriptor(t: ElementType, address: int, full: bool, source: int = 0) -> ElementDescriptor:
    return ElementDescriptor(t, address, full, svalid=bool(source), source_storage_element_address=source,
                             primary_volume_tag=VolumeTag("T", 0, b"T".ljust(36)) if full else None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=6), st.lists(st.integers(0, 12), min_size=1, max_size=3),
       st.lists(st.booleans(), min_size=1, max_size=3))
def test_unload_goes_where_mtx_status_says(slots_full, sources, drives_full):
    """The slot ``unload`` (no slot named) uses is the one ``mtx_status_text`` prints."""
    drives = tuple(descriptor(ElementType.DATA_TRANSFER, 1 + i, full, sources[i % len(sources)])
                   for i, full in enumerate(drives_full))
    slots = tuple(descriptor(ElementType.STORAGE, 10 + i, full) for i, full in enumerate(slots_full))
    status = LibraryStatus(drives, slots, (), ())
    view = mtx_view(status)
    lines = mtx_status_text(status).splitlines()[1 : 1 + len(drives)]
    for n, line in enumerate(lines):
        source = view.source_slot(n) if drives[n].full else None
        if not drives[n].full:
            assert line.endswith(":Empty")
        elif source is None:
            assert "Unknown Storage Element Loaded" in line
        else:
            assert f"(Storage Element {source} Loaded)" in line

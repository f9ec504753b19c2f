"""A medium changer (SMC-3) as a library object: its status, and the moves ``mtx`` makes, in
mtx's numbering (drives from 0, slots from 1, import/export elements numbered after the slots, in
the order the changer reports each type: element-address order on tgt), over any ``Executor``.
The codec is ``iscsifs.scsi.smc``; every command goes through ``block.command``.

Each verb reads the status first and decides from it before it sends anything that moves a
medium (httpcore's "decide synchronously, then do I/O"): a verb refused (an empty source, a full
destination, a number out of range) has sent READ ELEMENT STATUS and MODE SENSE only. Another
initiator may move media between that read and our MOVE MEDIUM; the changer then refuses the move
(3B/0E, 3B/0D) and ``move`` raises the same typed errors.

The status is read afresh by every verb: the library is shared (another host's ``mtx``, the
target's administrator), so nothing about its media is cached; only the transport element's
address, which ``move`` needs, is kept from the last MODE SENSE.

Errors, each an ``IscsiError`` with the errno a tape user expects:

- ``NoMedium`` (``ENOMEDIUM``, "No medium found"): loading from an empty slot, unloading an empty
  drive, moving from an empty element, ``next`` with no full slot after the drive's. It is what
  Linux's st and sd give for a drive without a tape (and our sense table for 3A/00), so a script
  tells "nothing there" from a bad number (``EINVAL``), which ``ENOENT`` would blur: an empty slot
  exists, it just holds nothing.
- ``ElementFull`` (``EBUSY``): loading into a full drive, unloading or moving into a full slot.
- ``NoSuchElement`` (``EINVAL``): a slot or drive number out of range, an address not in the library.
- ``NoSourceSlot`` (``ENOSPC``): unloading to "where it came from" when the changer does not say and
  no empty slot is left to stand for it (mtx: "No Source for tape in drive N").
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from iscsifs.block.client import LunInfo
from iscsifs.block.command import command
from iscsifs.block.stats import Stats
from iscsifs.net.api import Executor
from iscsifs.proto.errors import IscsiError
from iscsifs.scsi import smc
from iscsifs.scsi.response import Designator, DeviceType
from iscsifs.scsi.sense import ScsiError, SenseKey
from iscsifs.scsi.smc import (
    ElementAddressAssignment,
    ElementDescriptor,
    ElementStatus,
    ElementType,
    LibraryStatus,
)

log = logging.getLogger("iscsifs.block")


class ChangerError(IscsiError):
    """A changer verb refused, or a move the changer refused, for a reason a user can fix."""


class NoMedium(ChangerError):
    errno = errno.ENOMEDIUM


class ElementFull(ChangerError):
    errno = errno.EBUSY


class NoSuchElement(ChangerError):
    errno = errno.EINVAL


class NoSourceSlot(ChangerError):
    errno = errno.ENOSPC


# The longest descriptor SMC-3 §6.11.4 allows (header, two volume tags, the identifier header and a 255-byte
# identifier); tgt's are 86 bytes with VOLTAG and DVCID.
_MAX_DESCRIPTOR = 12 + 36 + 36 + 4 + 255
_MAX_ALLOCATION = 0xFFFFFF
# The sense tgt (and SMC-3 §6.6) gives a move from an empty element or into a full one.
_SOURCE_EMPTY = (0x3B, 0x0E)
_DESTINATION_FULL = (0x3B, 0x0D)


def _allocation(count: int) -> int:
    return min(8 + 8 + max(count, 1) * _MAX_DESCRIPTOR, _MAX_ALLOCATION)


@dataclass(frozen=True, slots=True)
class MtxView:
    """A status as mtx numbers it: ``drives[n]`` is drive n, ``storage[n - 1]`` is slot n (the
    storage slots, then the import/export elements), ``sources[n]`` the slot index (0-based) drive
    n's medium goes back to when unloaded to "its source", or -1."""

    drives: tuple[ElementDescriptor, ...]
    storage: tuple[ElementDescriptor, ...]
    slot_count: int  # storage slots proper, import/export elements not counted (``last``)
    sources: tuple[int, ...]

    def slot(self, number: int) -> ElementDescriptor:
        if not 1 <= number <= len(self.storage):
            has = f"slots 1 to {len(self.storage)}" if self.storage else "no slot"
            raise NoSuchElement(f"slot {number} is out of range: the library has {has}")
        return self.storage[number - 1]

    def drive(self, number: int) -> ElementDescriptor:
        if not 0 <= number < len(self.drives):
            has = f"drives 0 to {len(self.drives) - 1}" if self.drives else "no drive"
            raise NoSuchElement(f"drive {number} is out of range: the library has {has}")
        return self.drives[number]

    def source_slot(self, drive: int) -> int | None:
        """The slot number drive ``drive``'s medium goes back to (None: none known, none empty)."""
        source = self.sources[drive]
        return None if source < 0 else source + 1


# The slot a first, last or next loads: (view, the slot the drive's medium goes back to or None) -> slot.
_Pick = Callable[[MtxView, int | None], int]


def mtx_view(status: LibraryStatus) -> MtxView:
    """Number ``status`` as mtx does (``smc.mtx_numbering``, which ``mtx_status_text`` prints)."""
    n = smc.mtx_numbering(status)
    return MtxView(n.drives, n.storage, n.slot_count, n.sources)


def serial_of(identifier: Designator) -> str:
    """The serial number in a device identifier. A T10 vendor ID designator holds the vendor (8
    bytes) then, as SPC-4 §7.8.6.5 recommends and tgt does, the product (16) and the serial: the
    serial is what follows them. Other designators (NAA, EUI-64, ...) are given as
    ``Designator.text`` gives them, which is how ``Identity.wwn`` shows a LUN's."""
    if identifier.designator_type == 1:
        return identifier.value[24:].decode("latin-1").strip(" \0")
    return identifier.text()


def match_drive_luns(serials: Mapping[int, str], luns: Iterable[LunInfo]) -> dict[int, int]:
    """Drive number -> LUN, for the drives whose identifier names one of ``luns`` (by VPD 0x80
    serial, or the WWN for a designator that is not a T10 vendor ID). tgt 1.0.85 puts only the
    first 10 bytes of the serial in the identifier, and its answer loses the last 8 bytes of the
    last drive's: so, after the exact matches, an identifier matches the one LUN left whose serial
    it begins (an identifier that begins several matches none). Changers are not candidates: tgt
    numbers its changer's serial beside its drives'."""
    infos = [i for i in luns if i.inquiry.device_type != DeviceType.MEDIUM_CHANGER]  # a drive is never one
    out: dict[int, int] = {}
    for drive, serial in serials.items():
        exact = [i.lun for i in infos if serial and serial in (i.identity.serial, i.identity.wwn)]
        if len(exact) == 1:
            out[drive] = exact[0]
    taken = set(out.values())
    for drive, serial in serials.items():
        if drive in out or not serial:
            continue
        candidates = [i.lun for i in infos if i.lun not in taken and i.identity.serial.startswith(serial)]
        if len(candidates) == 1:
            out[drive] = candidates[0]
            taken.add(candidates[0])
    return out


class Changer:
    """One medium changer LUN of a target. Its methods are the verbs of ``mtx``; ``move`` is
    MOVE MEDIUM between element addresses."""

    def __init__(self, session: Executor, lun: int, stats: Stats | None = None) -> None:
        self.session = session
        self.lun = lun
        self.stats = stats
        self._layout: ElementAddressAssignment | None = None

    def __repr__(self) -> str:
        return f"<Changer LUN {self.lun} of {self.session.target_name}>"

    async def _command(self, cdb: bytes, name: str, expected_in: int = 0) -> bytes:
        result = await command(self.session, self.lun, cdb, name=name, expected_in=expected_in, stats=self.stats)
        return bytes(result.data)

    async def layout(self) -> ElementAddressAssignment:
        """MODE SENSE page 0x1D: where each type of element is, and how many there are."""
        data = await self._command(smc.mode_sense_element_address_assignment(), "MODE SENSE (page 0x1D)",
                                   smc.ELEMENT_ADDRESS_ASSIGNMENT_ALLOCATION)
        self._layout = smc.parse_element_address_assignment(data)
        return self._layout

    async def _read_element_status(self, element_type: ElementType, first: int, count: int) -> ElementStatus:
        # DVCID for drives: their identifier ties each to its LUN. tgt 1.0.85 garbles element type
        # 0 and overruns its heap buffer answering it: one type at a time, as mtx asks. A changer
        # that refuses DVCID, then VOLTAG (ILLEGAL REQUEST) is asked without (mtx drops VOLTAG so).
        dvcid = element_type == ElementType.DATA_TRANSFER
        asks = list(dict.fromkeys([(True, dvcid), (True, False), (False, False)]))
        allocation = _allocation(count)
        while True:
            voltag, dvcid = asks[0]
            cdb = smc.read_element_status(element_type, first, count, allocation, voltag=voltag, dvcid=dvcid)
            try:
                data = await self._command(cdb, "READ ELEMENT STATUS", allocation)
            except ScsiError as exc:
                if len(asks) == 1 or exc.sense is None or exc.sense.key != SenseKey.ILLEGAL_REQUEST:
                    raise
                del asks[0]
                continue
            answer = smc.parse_read_element_status(data)
            needed = 8 + int.from_bytes(data[5:8], "big") if len(data) >= 8 else 0
            if needed <= allocation or allocation >= _MAX_ALLOCATION:
                return answer
            allocation = min(needed, _MAX_ALLOCATION)  # mtx's rule: ask again with what it said it has

    async def status(self) -> LibraryStatus:
        """Every element, by type. tgt 1.0.85's answers are 8 bytes short (``complete`` is then
        False and the last element of each type reads as zeros past what came), which costs
        nothing with VOLTAG but the end of the last drive's identifier."""
        layout = await self.layout()
        answers = []
        for element_type in (ElementType.MEDIUM_TRANSPORT, ElementType.STORAGE, ElementType.IMPORT_EXPORT,
                             ElementType.DATA_TRANSFER):
            elements = layout.range_of(element_type)
            if elements.count:  # mtx asks only for the types the library has
                answers.append(await self._read_element_status(element_type, elements.first, elements.count))
        return smc.library_status(answers)

    async def drive_serials(self) -> dict[int, str]:
        """Drive number (mtx's) -> the serial in its device identifier (``serial_of``): what maps
        a drive to the LUN whose VPD 0x80 serial it is (``match_drive_luns``). A drive with no
        identifier is left out; one cut short (tgt's last drive) gives what came."""
        view = mtx_view(await self.status())
        return {n: serial_of(d.identifier) for n, d in enumerate(view.drives) if d.identifier is not None}

    # -- moves ------------------------------------------------------------------------------------

    async def _transport(self) -> int:
        layout = self._layout or await self.layout()
        return layout.medium_transport.first if layout.medium_transport.count else 0

    async def move(self, source_address: int, destination_address: int) -> None:
        """MOVE MEDIUM from one element address to another with the first transport element.
        The changer's refusals become ``NoMedium`` (source empty, 3B/0E), ``ElementFull``
        (destination full, 3B/0D) and ``NoSuchElement`` (an address it does not have, 21/01 or
        tgt's 24/00); any other failure stays a ``ScsiError``."""
        transport = await self._transport()
        cdb = smc.move_medium(transport, source_address, destination_address)
        try:
            await self._command(cdb, "MOVE MEDIUM")
        except ScsiError as exc:
            sense = exc.sense
            if sense is None:
                raise
            if sense.asc_ascq == _SOURCE_EMPTY:
                raise NoMedium(f"element {source_address} is empty: nothing to move") from exc
            if sense.asc_ascq == _DESTINATION_FULL:
                raise ElementFull(f"element {destination_address} is already full") from exc
            if sense.key == SenseKey.ILLEGAL_REQUEST and sense.asc_ascq in ((0x21, 0x01), (0x24, 0x00)):
                raise NoSuchElement(f"MOVE MEDIUM from element {source_address} to {destination_address} "
                                    f"refused: {exc}") from exc
            raise
        log.info("%s: moved the medium of element %d to element %d", self, source_address, destination_address)

    async def load(self, slot: int, drive: int = 0) -> None:
        """mtx load: slot ``slot``'s medium into drive ``drive``."""
        view = mtx_view(await self.status())
        source, destination = _check_load(view, slot, drive)
        await self.move(source, destination)

    async def unload(self, slot: int | None = None, drive: int = 0) -> None:
        """mtx unload: drive ``drive``'s medium into slot ``slot``; None: the slot it came from
        (mtx's rule when the changer does not say: see ``mtx_view``)."""
        view = mtx_view(await self.status())
        source, destination = _check_unload(view, slot, drive)
        await self.move(source, destination)

    async def transfer(self, slot_from: int, slot_to: int) -> None:
        """mtx transfer: one slot's medium into another slot."""
        view = mtx_view(await self.status())
        source, destination = view.slot(slot_from), view.slot(slot_to)
        if not source.full:
            raise NoMedium(f"slot {slot_from} is empty")
        if destination.full:
            raise ElementFull(f"slot {slot_to} is already full")
        await self.move(source.address, destination.address)

    async def exchange(self, slot_a: int, slot_b: int) -> None:
        """Swap two slots' media. tgt 1.0.85 answers EXCHANGE MEDIUM with ILLEGAL REQUEST (20/00,
        invalid opcode), so this is three moves through the first empty slot proper: a to the
        empty one, b to a, then the first to b. Both slots must be full (an empty one: use
        ``transfer``), and an empty slot must be left to pass through."""
        view = mtx_view(await self.status())
        a, b = view.slot(slot_a), view.slot(slot_b)
        if slot_a == slot_b:
            raise NoSuchElement(f"exchanging slot {slot_a} with itself")
        for number, element in ((slot_a, a), (slot_b, b)):
            if not element.full:
                raise NoMedium(f"slot {number} is empty: nothing to exchange (transfer moves one medium)")
        spare = next((e for e in view.storage[: view.slot_count] if not e.full), None)
        if spare is None:
            raise NoSourceSlot(f"exchanging slots {slot_a} and {slot_b} needs an empty slot to pass through")
        await self.move(a.address, spare.address)
        await self.move(b.address, a.address)
        await self.move(spare.address, b.address)

    async def inventory(self) -> None:
        """mtx inventory: INITIALIZE ELEMENT STATUS (tgt: GOOD, and nothing done)."""
        await self._command(smc.initialize_element_status(), "INITIALIZE ELEMENT STATUS")

    async def first(self, drive: int = 0) -> None:
        """mtx first: slot 1 into the drive, the drive's medium unloaded first (to its source)."""
        await self._go_to(drive, lambda view, current: 1)

    async def last(self, drive: int = 0) -> None:
        """mtx last: the last slot proper (import/export elements aside) into the drive."""
        await self._go_to(drive, lambda view, current: view.slot_count)

    async def next(self, drive: int = 0) -> None:
        """mtx next: the next full slot after the one the drive's medium came from (from slot 1
        for an empty drive), the drive unloaded first."""

        def after(view: MtxView, current: int | None) -> int:
            start = current or 0
            for number in range(start + 1, view.slot_count + 1):
                if view.storage[number - 1].full:
                    return number
            raise NoMedium(f"no full slot after slot {start}: no more media" if start else "no full slot: no media")

        await self._go_to(drive, after)

    async def _go_to(self, drive: int, pick: _Pick) -> None:
        """Unload the drive to its source slot (when full), then load slot ``pick(view, source)``;
        mtx's first, last and next. All is decided on one status before the first move."""
        view = mtx_view(await self.status())
        element = view.drive(drive)
        home = _check_unload(view, None, drive)[1] if element.full else None
        current = view.source_slot(drive) if element.full else None
        slot = pick(view, current)
        if current == slot:
            return  # mtx: the drive holds that slot's medium already ("loading...done")
        target = view.slot(slot)
        if not target.full:
            raise NoMedium(f"slot {slot} is empty: nothing to load")
        if home is not None:
            await self.move(element.address, home)
        await self.move(target.address, element.address)


def _check_load(view: MtxView, slot: int, drive: int) -> tuple[int, int]:
    source, destination = view.slot(slot), view.drive(drive)
    if not source.full:
        raise NoMedium(f"slot {slot} is empty: nothing to load")
    if destination.full:
        loaded = view.source_slot(drive)
        raise ElementFull(f"drive {drive} is full" + (f" (slot {loaded} loaded)" if loaded else ""))
    return source.address, destination.address


def _check_unload(view: MtxView, slot: int | None, drive: int) -> tuple[int, int]:
    source = view.drive(drive)
    if slot is not None:
        view.slot(slot)  # the range is checked first, as mtx does
    if not source.full:
        raise NoMedium(f"drive {drive} is empty: nothing to unload")
    if slot is None:
        slot = view.source_slot(drive)
        if slot is None:
            raise NoSourceSlot(f"no source slot for the medium in drive {drive}, and no empty slot")
    destination = view.slot(slot)
    if destination.full:
        raise ElementFull(f"slot {slot} is already full")
    return source.address, destination.address

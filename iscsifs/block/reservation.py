"""SCSI-3 persistent reservations (SPC-4 §5.13): a mount's registration on a LUN, on each of its
I_T nexuses, and the operations ``iscsifs pr`` asks of it.

A registration belongs to an I_T nexus: here, each path of a target and each session worker's
session (each has an ISID of its own). So the key is registered on every nexus the mount has
(``Target.every_nexus``) and again by every later login (``KeyRegistration.login``, which
``net`` runs before the nexus serves). ALL_TG_PT would register one initiator port on every
target port; it does not cover our other ISIDs, so it is not used.

Fencing must hold: once another host has removed this mount's key (PREEMPT), registering it again
would undo the fencing. So a nexus logging in, or one told its registration was preempted, first
reads the keys. Our key still there: only this nexus lost it (tgt ties a registration to its
session, so a reconnect makes a new nexus; another nexus of ours took the reservation back), and
it registers again. Our key gone and other keys there: fenced; the mount's writes fail with EBUSY
at once, and nothing registers again until someone runs ``iscsifs pr --register``. No keys at all:
the target lost every registration (a power-on, a reset, a restarted tgtd), which is no fencing:
register again and take back the reservation held.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

from iscsifs.block.command import command
from iscsifs.net.api import Executor, Target
from iscsifs.proto.errors import IscsiError
from iscsifs.scsi.persistent import (
    PrCapabilities,
    PrIn,
    PrOut,
    PrType,
    RegisteredKeys,
    Reservation,
    key_text,
    parse_read_keys,
    parse_read_reservation,
    parse_report_capabilities,
    persistent_reserve_in,
    persistent_reserve_out,
)
from iscsifs.scsi.sense import ScsiError, SenseKey, Status

log = logging.getLogger("iscsifs.block")


class PrUnsupported(IscsiError):
    """The LUN does not carry out persistent reservations (or this service action of them)."""

    errno = errno.EOPNOTSUPP


class NotRegistered(IscsiError):
    """The operation needs a key registered by this mount (or names a key nobody registered)."""

    errno = errno.ENOKEY


class LunFenced(IscsiError):
    """Another host removed this mount's registration: writes fail at once (SPC-4 fencing)."""

    errno = errno.EBUSY


@dataclass(slots=True)
class LunPr:
    """This mount's part in one LUN's persistent reservations."""

    key: int | None = None  # registered on every nexus, and again by every login
    reservation: PrType | None = None  # the type this mount reserves and takes back after a reset
    fenced: bool = False

    def registrar(self) -> KeyRegistration | None:
        return KeyRegistration(self.key, self.reservation) if self.key is not None and not self.fenced else None


def _unsupported(exc: ScsiError) -> bool:
    """ILLEGAL REQUEST, invalid operation code or field in CDB: no persistent reservations."""
    return (exc.sense is not None and exc.sense.key == SenseKey.ILLEGAL_REQUEST
            and exc.sense.asc_ascq in ((0x20, 0x00), (0x24, 0x00)))


async def _pr_in(nexus: Executor, lun: int, action: PrIn, allocation: int) -> bytes | bytearray | memoryview:
    name = f"PERSISTENT RESERVE IN ({action.name.replace('_', ' ')})"
    try:
        result = await command(nexus, lun, persistent_reserve_in(action, allocation), name=name,
                               expected_in=allocation)
    except ScsiError as exc:
        if _unsupported(exc):
            raise PrUnsupported(f"LUN {lun} of {nexus.target_name} does not support persistent reservations "
                                f"({action.name.replace('_', ' ')} refused: {exc.sense})") from None
        raise
    return result.data


async def read_keys(nexus: Executor, lun: int) -> RegisteredKeys:
    allocation = 1024
    while True:
        keys, length = parse_read_keys(await _pr_in(nexus, lun, PrIn.READ_KEYS, allocation))
        if length + 8 <= allocation or allocation >= 0xFFFF:
            return keys
        allocation = min(length + 8, 0xFFFF)


async def read_reservation(nexus: Executor, lun: int) -> Reservation:
    return parse_read_reservation(await _pr_in(nexus, lun, PrIn.READ_RESERVATION, 64))


async def report_capabilities(nexus: Executor, lun: int) -> PrCapabilities | None:
    """None where the LUN has persistent reservations but not this service action."""
    try:
        return parse_report_capabilities(await _pr_in(nexus, lun, PrIn.REPORT_CAPABILITIES, 8))
    except PrUnsupported:
        return None


async def pr_out(nexus: Executor, lun: int, action: PrOut, key: int = 0, service_action_key: int = 0,
                 pr_type: PrType | None = None) -> None:
    """One PERSISTENT RESERVE OUT. RESERVATION CONFLICT raises ScsiError (EBUSY), as SPC-4 answers
    an operation this nexus may not do (not registered, wrong key, held by another)."""
    cdb, params = persistent_reserve_out(action, key, service_action_key, pr_type)
    name = f"PERSISTENT RESERVE OUT ({action.name.replace('_', ' ')})"
    try:
        await command(nexus, lun, cdb, name=name, data_out=params)
    except ScsiError as exc:
        if _unsupported(exc) and exc.sense is not None and exc.sense.asc_ascq == (0x20, 0x00):
            raise PrUnsupported(f"LUN {lun} of {nexus.target_name} does not support persistent reservations") from None
        raise


def _conflict(exc: ScsiError) -> bool:
    return exc.status == Status.RESERVATION_CONFLICT


# -- on each nexus (net runs these: they must pickle) --------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRegistration:
    """``net.api.Registrar``: the mount's key, and the reservation it holds, on one nexus."""

    key: int
    reservation: PrType | None = None

    async def register(self, nexus: Executor, lun: int) -> None:
        # REGISTER AND IGNORE EXISTING KEY: the same whether or not this nexus has a key already.
        await pr_out(nexus, lun, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, 0, self.key)
        if self.reservation is not None:
            await self._hold(nexus, lun, take_back=False)

    async def login(self, nexus: Executor, lun: int) -> bool:
        keys = await read_keys(nexus, lun)
        if self.key not in keys.keys:
            if keys.keys:
                return False
            log.warning("LUN %d of %s lost every registration (a reset or restart of the target): registering "
                        "key %s again", lun, nexus.target_name, key_text(self.key))
        await pr_out(nexus, lun, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, 0, self.key)
        if self.reservation is not None:
            await self._hold(nexus, lun, take_back=True)
        return True

    async def preempted(self, nexus: Executor, lun: int) -> bool:
        keys = await read_keys(nexus, lun)
        if self.key not in keys.keys:
            return False
        await pr_out(nexus, lun, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, 0, self.key)
        return True

    async def _hold(self, nexus: Executor, lun: int, *, take_back: bool) -> None:
        """Reserve where nobody holds a reservation; with ``take_back`` (a login), take a
        one-holder reservation of our key from another nexus of ours, which a reconnect to tgt
        leaves holding it (PREEMPT of one's own key, SPC-4 §5.13.11.4.3)."""
        wanted = self.reservation
        assert wanted is not None
        now = await read_reservation(nexus, lun)
        try:
            if now.type is None:
                await pr_out(nexus, lun, PrOut.RESERVE, self.key, 0, wanted)
            elif now.type is wanted and now.key in (self.key, 0) and wanted.single_holder:
                try:
                    await pr_out(nexus, lun, PrOut.RESERVE, self.key, 0, wanted)  # GOOD if this nexus holds it
                except ScsiError as exc:
                    if not _conflict(exc):
                        raise
                    if not take_back:
                        log.info("LUN %d of %s: %s admits one I_T nexus, and another of this mount holds it: "
                                 "writes through this one conflict", lun, nexus.target_name, wanted.word)
                        return
                    await pr_out(nexus, lun, PrOut.PREEMPT, self.key, self.key, wanted)
            elif now.key not in (self.key, 0) or now.type is not wanted:
                log.warning("LUN %d of %s: %s is held by key %s; not reserving %s", lun, nexus.target_name,
                            now.type.word, key_text(now.key or 0), wanted.word)
        except ScsiError as exc:
            if not _conflict(exc):
                raise
            log.warning("LUN %d of %s: reserving %s conflicts with another host's reservation", lun,
                        nexus.target_name, wanted.word)


@dataclass(frozen=True, slots=True)
class Unregister:
    """``net.api.NexusAction``: REGISTER AND IGNORE EXISTING KEY with key 0 unregisters this
    nexus, and releases a reservation it holds (SPC-4 §5.13.11.3)."""

    async def __call__(self, nexus: Executor, lun: int) -> None:
        await pr_out(nexus, lun, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0)


@dataclass(frozen=True, slots=True)
class Release:
    """``net.api.NexusAction``: RELEASE on this nexus; a nexus that is not the holder gets GOOD
    and nothing changes (SPC-4 §5.13.11.2), so it is sent on each."""

    key: int
    pr_type: PrType

    async def __call__(self, nexus: Executor, lun: int) -> None:
        await pr_out(nexus, lun, PrOut.RELEASE, self.key, 0, self.pr_type)


# -- what a mount does, and what ``iscsifs pr`` asks of it ---------------------------------------


@dataclass(frozen=True, slots=True)
class PrStatus:
    """``user.iscsi.pr``: the LUN's registrations and reservation, and this mount's part in them."""

    generation: int
    keys: tuple[int, ...]
    reservation: Reservation
    ours: int | None
    fenced: bool

    @property
    def registered(self) -> bool:
        return self.ours is not None and self.ours in self.keys

    @property
    def holder(self) -> bool:
        r = self.reservation
        return r.type is not None and self.ours is not None and (r.key == self.ours or
                                                                 (r.type.all_registrants and self.registered))

    def to_json(self) -> dict[str, object]:
        r = self.reservation
        return {
            "generation": self.generation,
            "keys": [key_text(k) for k in self.keys],
            "reservation": None if r.type is None else {"key": key_text(r.key or 0), "type": r.type.word,
                                                        "ours": self.holder},
            "key": None if self.ours is None else key_text(self.ours),
            "registered": self.registered,
            "fenced": self.fenced,
        }


class Reservations:
    """One LUN's persistent reservations, as this mount takes part in them."""

    def __init__(self, target: Target, lun: int, state: LunPr) -> None:
        self.target = target
        self.lun = lun
        self.state = state

    def __repr__(self) -> str:
        return f"<Reservations {self.target.target_name}/{self.lun} {self.state}>"

    async def status(self) -> PrStatus:
        keys = await read_keys(self.target, self.lun)
        reservation = await read_reservation(self.target, self.lun)
        return PrStatus(keys.generation, keys.keys, reservation, self.state.key, self.state.fenced)

    async def join(self, key: int, reservation: PrType | None = None) -> None:
        """Register ``key`` on every nexus (and reserve, if asked), and keep it registered."""
        if reservation is not None:
            capabilities = await report_capabilities(self.target, self.lun)
            if capabilities is not None and reservation not in capabilities.types:
                raise PrUnsupported(f"LUN {self.lun} of {self.target.target_name} does not support "
                                    f"{reservation.word} reservations")
        else:
            await read_keys(self.target, self.lun)  # a LUN without persistent reservations says so here
        try:
            await self.target.register(self.lun, KeyRegistration(key, reservation))
        except IscsiError:
            if self.state.key is None:  # not registered before: leave nothing behind on any nexus
                try:
                    await self.target.every_nexus(self.lun, Unregister())
                except IscsiError as exc:
                    log.debug("LUN %d: unregistering after a failed registration: %s", self.lun, exc)
            raise
        self.state.key, self.state.reservation, self.state.fenced = key, reservation, False
        log.info("LUN %d of %s: registered key %s%s", self.lun, self.target.target_name, key_text(key),
                 f" and reserved {reservation.word}" if reservation is not None else "")

    async def leave(self) -> None:
        """Unregister every nexus, which releases a reservation this mount holds (unmount)."""
        self.target.keep_registered(self.lun, None)
        if self.state.key is None or self.state.fenced:
            return
        await self.target.every_nexus(self.lun, Unregister())
        log.info("LUN %d of %s: unregistered key %s", self.lun, self.target.target_name, key_text(self.state.key))
        self.state.key = self.state.reservation = None

    def fenced(self) -> None:
        self.state.fenced = True

    def _key(self) -> int:
        if self.state.key is None or self.state.fenced:
            raise NotRegistered(f"this mount has no key registered on LUN {self.lun} of {self.target.target_name}")
        return self.state.key

    def _keep(self) -> None:
        self.target.keep_registered(self.lun, self.state.registrar())

    async def reserve(self, pr_type: PrType) -> None:
        key = self._key()
        await pr_out(self.target, self.lun, PrOut.RESERVE, key, 0, pr_type)
        self.state.reservation = pr_type
        self._keep()

    async def release(self) -> None:
        key = self._key()
        now = await read_reservation(self.target, self.lun)
        self.state.reservation = None
        self._keep()
        if now.type is not None and now.key in (key, 0):
            await self.target.every_nexus(self.lun, Release(key, now.type))

    async def clear(self) -> None:
        """CLEAR: every registration and the reservation go, ours too (SPC-4 §5.13.11.6)."""
        key = self._key()
        self.target.keep_registered(self.lun, None)  # first: the 2A/03 it brings our other nexuses is ours
        try:
            await pr_out(self.target, self.lun, PrOut.CLEAR, key)
        except BaseException:
            self._keep()
            raise
        self.state.key = self.state.reservation = None

    async def preempt(self, victim: int, pr_type: PrType | None) -> None:
        """Remove ``victim``'s registrations, and take over its reservation (SPC-4 §5.13.11.4):
        as the victim's type unless ``pr_type`` says another. Fencing."""
        key = self._key()
        keys = await read_keys(self.target, self.lun)
        if victim not in keys.keys:
            raise NotRegistered(f"key {key_text(victim)} is not registered on LUN {self.lun} of "
                                f"{self.target.target_name}")
        now = await read_reservation(self.target, self.lun)
        held = now.type if now.key == victim else None
        new_type = pr_type or held or self.state.reservation or now.type or PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY
        await pr_out(self.target, self.lun, PrOut.PREEMPT, key, victim, new_type)
        if held is not None or pr_type is not None:
            self.state.reservation = new_type
            self._keep()

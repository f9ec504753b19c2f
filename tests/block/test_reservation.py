"""The rules that keep a mount's registration on each I_T nexus and let fencing hold, over an
in-memory logical unit that carries out PERSISTENT RESERVE IN and OUT as SPC-4 §5.13 says (each
``Nexus`` is one I_T nexus; no network). What a real target does is in tests/test_reservations.py."""

from __future__ import annotations

import errno
import pickle
import struct

import pytest
import trio
from iscsifs.block.lun import Lun
from iscsifs.block.reservation import (
    KeyRegistration,
    LunFenced,
    LunPr,
    NotRegistered,
    PrUnsupported,
    Release,
    Reservations,
    Unregister,
    read_keys,
)
from iscsifs.net.ipc import Register, call_from, pickled
from iscsifs.proto.connection import ScsiResult
from iscsifs.scsi.persistent import PrOut, PrType
from iscsifs.scsi.response import Capacity

CHECK_CONDITION, RESERVATION_CONFLICT = 0x02, 0x18
ILLEGAL_OPCODE = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00])


class LogicalUnit:
    """Registrations by nexus name, one reservation; writes checked against it."""

    def __init__(self, supports_pr: bool = True) -> None:
        self.registrations: dict[str, int] = {}  # nexus -> key, in registration order
        self.holder: str | None = None
        self.type: PrType | None = None
        self.generation = 0
        self.supports_pr = supports_pr
        self.out: list[tuple[str, PrOut]] = []  # every PERSISTENT RESERVE OUT carried out

    def holds(self, nexus: str) -> bool:
        return self.type is not None and (nexus == self.holder or
                                          (self.type.all_registrants and nexus in self.registrations))


class Nexus:
    target_name = "iqn.2026-11.test:pr"

    def __init__(self, lu: LogicalUnit, name: str) -> None:
        self.lu = lu
        self.name = name

    async def execute(self, lun: int, cdb: bytes, *, data_out=None, expected_in: int = 0, into=None) -> ScsiResult:
        await trio.lowlevel.checkpoint()
        lu = self.lu
        if cdb[0] in (0x5E, 0x5F) and not lu.supports_pr:
            return ScsiResult(CHECK_CONDITION, ILLEGAL_OPCODE)
        if cdb[0] == 0x5E:
            return ScsiResult(0, b"", self._pr_in(cdb[1] & 0x1F))
        if cdb[0] == 0x5F:
            key, sa_key = struct.unpack_from(">QQ", bytes(data_out))
            pr_type = PrType(cdb[2] & 0x0F) if cdb[2] else None
            return ScsiResult(self._pr_out(PrOut(cdb[1] & 0x1F), key, sa_key, pr_type))
        if cdb[0] in (0x2A, 0x8A):
            registered = self.name in lu.registrations
            free = lu.type is None or lu.holds(self.name) or (
                registered and lu.type in (PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
                                           PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY))
            return ScsiResult(0 if free else RESERVATION_CONFLICT)
        return ScsiResult(0)

    def _pr_in(self, action: int) -> bytes:
        lu = self.lu
        if action == 0:
            keys = b"".join(struct.pack(">Q", k) for k in lu.registrations.values())
            return struct.pack(">II", lu.generation, len(keys)) + keys
        if lu.type is None:
            return struct.pack(">II", lu.generation, 0)
        key = 0 if lu.type.all_registrants else lu.registrations[lu.holder or ""]
        return struct.pack(">IIQ4xxBxx", lu.generation, 16, key, lu.type)

    def _pr_out(self, action: PrOut, key: int, sa_key: int, pr_type: PrType | None) -> int:
        lu, me = self.lu, self.name
        mine = lu.registrations.get(me)
        if action in (PrOut.REGISTER, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY):
            if action is PrOut.REGISTER and (mine or 0) != key:
                return RESERVATION_CONFLICT
            if sa_key:
                lu.registrations[me] = sa_key
            elif mine is not None:
                del lu.registrations[me]
                if lu.holder == me:
                    lu.holder = lu.type = None
            lu.generation += 1
        elif mine is None or mine != key:
            return RESERVATION_CONFLICT
        elif action is PrOut.RESERVE:
            if lu.type is not None:
                return 0 if lu.holds(me) and lu.type is pr_type else RESERVATION_CONFLICT
            lu.holder, lu.type = me, pr_type
        elif action is PrOut.RELEASE:
            if lu.holds(me):
                lu.holder = lu.type = None
        elif action is PrOut.CLEAR:
            lu.registrations.clear()
            lu.holder = lu.type = None
            lu.generation += 1
        elif action is PrOut.PREEMPT:
            if sa_key not in lu.registrations.values():
                return RESERVATION_CONFLICT
            if lu.holder is not None and lu.registrations.get(lu.holder) == sa_key:
                lu.holder, lu.type = me, pr_type
            for nexus in [n for n, k in lu.registrations.items() if k == sa_key and n != me]:
                del lu.registrations[nexus]
            lu.generation += 1
        lu.out.append((me, action))
        return 0


def counted(nexus: Nexus) -> list[int]:
    """The operation codes ``nexus`` is sent, from now on."""
    sent: list[int] = []
    original = nexus.execute

    async def counting(lun, cdb, **kw):
        sent.append(cdb[0])
        return await original(lun, cdb, **kw)

    nexus.execute = counting  # type: ignore[method-assign]
    return sent


A1, A2 = 0xA1, 0xA1  # one mount's key, on two of its nexuses
B = 0xB2
WERO = PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY


def run(fn, *args):
    return trio.run(fn, *args)


def test_a_login_registers_again_while_the_key_is_there():
    lu = LogicalUnit()
    lu.registrations = {"a-path1": A1, "b": B}
    assert run(KeyRegistration(A1).login, Nexus(lu, "a-path2"), 1)
    assert lu.registrations == {"a-path1": A1, "b": B, "a-path2": A1}


def test_a_login_after_a_reset_registers_and_reserves_again():
    lu = LogicalUnit()  # the target forgot every registration
    assert run(KeyRegistration(A1, WERO).login, Nexus(lu, "a"), 1)
    assert lu.registrations == {"a": A1} and lu.holder == "a" and lu.type is WERO


def test_a_login_after_fencing_registers_nothing():
    lu = LogicalUnit()
    lu.registrations = {"b": B}
    lu.holder, lu.type = "b", WERO
    assert not run(KeyRegistration(A1, WERO).login, Nexus(lu, "a"), 1)
    assert lu.out == [] and lu.registrations == {"b": B}


def test_a_preempted_nexus_tells_fencing_from_its_own_loss():
    lu = LogicalUnit()
    lu.registrations = {"a-path1": A1}
    assert run(KeyRegistration(A1).preempted, Nexus(lu, "a-path2"), 1)  # a sibling still has the key
    assert lu.registrations == {"a-path1": A1, "a-path2": A1}
    lu.registrations = {"b": B}
    lu.out.clear()
    assert not run(KeyRegistration(A1).preempted, Nexus(lu, "a-path2"), 1)
    assert lu.out == []


def test_a_login_takes_back_a_one_holder_reservation_from_a_stale_nexus():
    """tgt: a reconnect is a new nexus, and the old one keeps holding write-exclusive."""
    lu = LogicalUnit()
    lu.registrations = {"a-old": A1}
    lu.holder, lu.type = "a-old", PrType.WRITE_EXCLUSIVE
    assert run(KeyRegistration(A1, PrType.WRITE_EXCLUSIVE).login, Nexus(lu, "a-new"), 1)
    assert lu.holder == "a-new" and lu.registrations == {"a-new": A1}
    # Joining (not a login) never takes it from a sibling: only the one nexus may hold it.
    lu.out.clear()
    run(KeyRegistration(A1, PrType.WRITE_EXCLUSIVE).register, Nexus(lu, "a-other"), 1)
    assert lu.holder == "a-new" and (("a-other", PrOut.PREEMPT) not in lu.out)


def test_a_reservation_held_by_another_key_is_left_alone():
    lu = LogicalUnit()
    lu.registrations = {"b": B}
    lu.holder, lu.type = "b", PrType.EXCLUSIVE_ACCESS
    run(KeyRegistration(A1, WERO).register, Nexus(lu, "a"), 1)
    assert lu.holder == "b" and lu.out == [("a", PrOut.REGISTER_AND_IGNORE_EXISTING_KEY)]


class TwoPaths:
    """A ``net.api.Target`` over two nexuses of one mount, running actions on each as net does."""

    target_name = "iqn.2026-11.test:pr"

    def __init__(self, lu: LogicalUnit) -> None:
        self.nexuses = [Nexus(lu, "a-path1"), Nexus(lu, "a-path2")]
        self.kept: dict[int, object] = {}

    async def execute(self, lun, cdb, **kw):
        return await self.nexuses[0].execute(lun, cdb, **kw)

    async def register(self, lun, registrar):
        self.kept[lun] = registrar
        for nexus in self.nexuses:
            await registrar.register(nexus, lun)

    async def every_nexus(self, lun, action):
        for nexus in self.nexuses:
            await action(nexus, lun)

    def keep_registered(self, lun, registrar):
        if registrar is None:
            self.kept.pop(lun, None)
        else:
            self.kept[lun] = registrar


def test_join_reserve_release_leave_on_every_nexus():
    lu = LogicalUnit()
    target = TwoPaths(lu)
    state = LunPr()
    reservations = Reservations(target, 1, state)

    async def main():
        await reservations.join(A1, WERO)
        assert lu.registrations == {"a-path1": A1, "a-path2": A1} and lu.holder == "a-path1"
        assert target.kept[1] == KeyRegistration(A1, WERO)
        status = await reservations.status()
        assert status.registered and status.holder and status.keys == (A1, A1)
        await reservations.release()
        assert lu.type is None and target.kept[1] == KeyRegistration(A1, None)
        await reservations.reserve(PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS)
        assert (await reservations.status()).holder
        await reservations.leave()
        assert lu.registrations == {} and lu.type is None and 1 not in target.kept and state.key is None

    run(main)


def test_preempt_of_a_key_nobody_registered_changes_nothing():
    lu = LogicalUnit()
    target = TwoPaths(lu)
    reservations = Reservations(target, 1, LunPr())

    async def main():
        await reservations.join(A1)
        lu.out.clear()
        with pytest.raises(NotRegistered):
            await reservations.preempt(B, None)
        assert lu.out == []
        lu.registrations["b"] = B
        lu.holder, lu.type = "b", WERO
        await reservations.preempt(B, None)  # fencing: B's registration goes, its reservation is ours
        assert lu.registrations == {"a-path1": A1, "a-path2": A1} and lu.holder == "a-path1" and lu.type is WERO

    run(main)


def test_a_lun_without_persistent_reservations_says_so_and_nothing_is_sent():
    lu = LogicalUnit(supports_pr=False)
    reservations = Reservations(TwoPaths(lu), 1, LunPr())

    async def main():
        for attempt in (reservations.status(), reservations.join(A1)):
            with pytest.raises(PrUnsupported) as caught:
                await attempt
            assert caught.value.errno == errno.EOPNOTSUPP
        with pytest.raises(NotRegistered) as caught:
            await reservations.reserve(WERO)  # no key of ours: refused before anything is sent
        assert caught.value.errno == errno.ENOKEY

    run(main)


def test_a_fenced_lun_fails_writes_at_once_without_sending_them():
    lu = LogicalUnit()
    nexus = Nexus(lu, "a")
    sent = counted(nexus)
    disk = Lun(nexus, 1, Capacity(64, 512))
    disk.pr.fenced = True

    async def main():
        for attempt in (disk.write(0, b"x" * 512), disk.flush()):
            with pytest.raises(LunFenced) as caught:
                await attempt
            assert caught.value.errno == errno.EBUSY
        assert sent == []
        assert await read_keys(nexus, 1) is not None  # reads and PR IN still go

    run(main)


def test_what_net_runs_in_a_worker_pickles():
    """Registrars and nexus actions cross to session workers in ``net.ipc`` frames."""
    call = Register(7, 1, KeyRegistration(A1, WERO))
    frame = pickled(2, 0, call)
    assert call_from(memoryview(b"".join(bytes(p) for p in frame[1:]))) == call
    for action in (Unregister(), Release(A2, WERO)):
        assert pickle.loads(pickle.dumps(action)) == action


def test_reservation_conflict_is_never_retried():
    """Someone else holds the LUN: the command fails at once (EBUSY), sent once; a retry, here or
    on another path, could land after the fencing that caused it."""
    from iscsifs.block.command import command
    from iscsifs.scsi.sense import ScsiError

    lu = LogicalUnit()
    lu.registrations = {"b": B}
    lu.holder, lu.type = "b", WERO
    nexus = Nexus(lu, "a")
    calls = counted(nexus)

    async def main():
        with pytest.raises(ScsiError) as caught:
            await command(nexus, 1, bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]), name="WRITE", data_out=b"x" * 512)
        assert caught.value.errno == errno.EBUSY and calls == [0x2A]

    run(main)

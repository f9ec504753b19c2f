"""The medium changer as a library object (``iscsifs.block.changer``) against a real tgtd's virtual
tape library (``TgtDaemon.add_tape_library``, a fresh one per test): its status, mtx's verbs in
mtx's numbering, the drive a load makes ready, and refusals that change nothing and move nothing.
Reached through the block client: no FUSE mount."""

from __future__ import annotations

import errno
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
from iscsifs.block.changer import (
    Changer,
    ElementFull,
    NoMedium,
    NoSourceSlot,
    NoSuchElement,
    match_drive_luns,
    mtx_view,
)
from iscsifs.block.client import Client, ClientConfig, scan_luns
from iscsifs.block.command import command
from iscsifs.net.api import DataOut, Executor, Into
from iscsifs.net.multipath import Multipath
from iscsifs.proto.connection import ScsiResult
from iscsifs.scsi import cdb, smc
from iscsifs.scsi.sense import ScsiError, SenseKey, parse_sense
from iscsifs.scsi.smc import ElementType, LibraryStatus, mtx_status_text
from iscsifs.url import parse_url

from support.targets import needs_tgt
from support.tgt import TapeLibrary, TgtDaemon

pytestmark = [
    needs_tgt,
    pytest.mark.skipif(shutil.which("tgtimg") is None, reason="needs tgtimg (Debian package tgt)"),
    pytest.mark.timeout(60),
]

IQN = "iqn.2026-11.test.iscsifs:changer"
DEADLINE = 30  # seconds for any one test's iSCSI work
READS = {0x1A, smc.SmcOp.READ_ELEMENT_STATUS}  # MODE SENSE(6), READ ELEMENT STATUS: what a refusal may send


@pytest.fixture
def library(tmp_path):
    """A private tgtd with a fresh library (2 drives, 4 tapes in slots 1..4); stopped whatever happens."""
    with TgtDaemon(tmp_path / "tgt") as tgt:
        yield tgt, tgt.add_tape_library(IQN, tmp_path / "media", drives=2, tapes=4, tape_size_mb=16)


@dataclass
class Counting:
    """An ``Executor`` that records each CDB it passes on."""

    inner: Executor
    cdbs: list[bytes] = field(default_factory=list)

    @property
    def target_name(self) -> str:
        return self.inner.target_name

    async def execute(self, lun: int, cdb: bytes, *, data_out: DataOut | None = None, expected_in: int = 0,
                      into: Into | None = None) -> ScsiResult:
        self.cdbs.append(bytes(cdb))
        return await self.inner.execute(lun, cdb, data_out=data_out, expected_in=expected_in, into=into)

    def opcodes(self) -> set[int]:
        return {c[0] for c in self.cdbs}


@dataclass
class Rig:
    session: Multipath
    counting: Counting
    changer: Changer
    lib: TapeLibrary


@asynccontextmanager
async def rig(tgt: TgtDaemon, lib: TapeLibrary) -> AsyncIterator[Rig]:
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            session = await Client(ClientConfig()).login(nursery, parse_url(tgt.url), lib.iqn)
            try:
                for lun in lib.luns:  # take the UNIT ATTENTION of the fresh login (29/00) here
                    try:
                        await command(session, lun, cdb.test_unit_ready(), name="TEST UNIT READY")
                    except ScsiError:
                        pass  # a drive without a tape: NOT READY, medium not present
                counting = Counting(session)
                yield Rig(session, counting, Changer(counting, lib.changer_lun), lib)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await session.logout()
                nursery.cancel_scope.cancel()


def media(status: LibraryStatus) -> tuple[list[str | None], list[str | None]]:
    """(each drive's barcode, each slot's barcode), None where empty, in mtx's order."""
    view = mtx_view(status)
    return ([d.volume_tag if d.full else None for d in view.drives],
            [s.volume_tag if s.full else None for s in view.storage])


async def tur(session: Executor, lun: int) -> ScsiResult:
    """One TEST UNIT READY, its status as the target gave it (no retries)."""
    return await session.execute(lun, cdb.test_unit_ready())


async def test_status_of_a_fresh_library(library):
    tgt, lib = library
    async with rig(tgt, lib) as r:
        status = await r.changer.status()
        # MODE SENSE page 0x1D, then one READ ELEMENT STATUS per type the library has (no
        # import/export element here), each with VOLTAG, DVCID for drives only, never type 0.
        assert [c[0] for c in r.counting.cdbs] == [0x1A, 0xB8, 0xB8, 0xB8]
        assert r.counting.cdbs[0][2] == smc.ELEMENT_ADDRESS_ASSIGNMENT_PAGE
        types = [c[1] & 0x0F for c in r.counting.cdbs[1:]]
        assert types == [ElementType.MEDIUM_TRANSPORT, ElementType.STORAGE, ElementType.DATA_TRANSFER]
        assert all(c[1] & 0x10 for c in r.counting.cdbs[1:])
        assert [c[6] & 0x01 for c in r.counting.cdbs[1:]] == [0, 0, 1]
        assert [d.address for d in status.drives] == list(lib.drive_addresses)
        assert [t.address for t in status.transports] == [lib.picker_address]
        assert [s.address for s in status.slots] == list(lib.slots)
        assert status.import_export == ()
        assert media(status) == ([None, None], ["00000001", "00000002", "00000003", "00000004"])
        assert not status.complete  # tgt 1.0.85's answers are 8 bytes short
        # Drives name their LUN: tgt's identifier holds the first 10 bytes of the serial, and the
        # last drive's loses 8 bytes more to the short answer; the match still finds each.
        infos = await scan_luns(r.session)
        serial = {i.lun: i.identity.serial for i in infos}
        drives = await r.changer.drive_serials()
        assert drives[0] == serial[lib.drive_luns[0]][:10]
        assert serial[lib.drive_luns[1]].startswith(drives[1])
        assert match_drive_luns(drives, infos) == {0: lib.drive_luns[0], 1: lib.drive_luns[1]}
        assert mtx_status_text(status).splitlines() == [
            "  Storage Changer /dev/changer:2 Drives, 4 Slots ( 0 Import/Export )",
            "Data Transfer Element 0:Empty",
            "Data Transfer Element 1:Empty",
            *(f"      Storage Element {n}:Full :VolumeTag={b}{' ' * 24}" for n, b in enumerate(lib.barcodes, 1)),
        ]


async def test_load_makes_the_drive_ready_and_unload_puts_it_back(library):
    tgt, lib = library
    async with rig(tgt, lib) as r:
        drive_lun = lib.drive_luns[0]
        before = await tur(r.session, drive_lun)
        assert before.status == 0x02 and (sense := parse_sense(before.sense)) is not None
        assert sense.key == SenseKey.NOT_READY and sense.asc_ascq == (0x3A, 0x00)  # no medium
        await r.changer.load(1)
        status = await r.changer.status()
        assert media(status) == (["00000001", None], [None, "00000002", "00000003", "00000004"])
        drive = status.drives[0]
        assert drive.source == lib.slots[0] and status.source_slot(drive) == 1
        # The drive's LUN is ready at once: GOOD on the first TEST UNIT READY, no UNIT ATTENTION.
        assert (await tur(r.session, drive_lun)).status == 0
        assert mtx_status_text(status, "/dev/sg3").splitlines()[:4] == [
            "  Storage Changer /dev/sg3:2 Drives, 4 Slots ( 0 Import/Export )",
            f"Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = 00000001{' ' * 24}",
            "Data Transfer Element 1:Empty",
            f"      Storage Element 1:Empty:VolumeTag={' ' * 32}",
        ]
        await r.changer.unload()  # to the slot it came from
        assert media(await r.changer.status()) == ([None, None], ["00000001", "00000002", "00000003", "00000004"])
        after = await tur(r.session, drive_lun)
        assert after.status == 0x02 and (sense := parse_sense(after.sense)) is not None
        assert sense.asc_ascq == (0x3A, 0x00)
        # Into the second drive, and out to another slot, named.
        await r.changer.load(4, drive=1)
        assert (await tur(r.session, lib.drive_luns[1])).status == 0
        await r.changer.transfer(3, 4)
        await r.changer.unload(3, drive=1)
        assert media(await r.changer.status()) == ([None, None], ["00000001", "00000002", "00000004", "00000003"])


async def test_transfer_and_mtx_s_rule_for_an_unknown_source(library):
    tgt, lib = library
    async with rig(tgt, lib) as r:
        await r.changer.load(1)
        await r.changer.transfer(2, 1)  # slot 1, the drive's source, is full again
        status = await r.changer.status()
        assert media(status) == (["00000001", None], ["00000002", None, "00000003", "00000004"])
        # mtx then gives the drive the first empty slot: it prints so, and unload goes there.
        assert "Data Transfer Element 0:Full (Storage Element 2 Loaded)" in mtx_status_text(status)
        await r.changer.unload()
        assert media(await r.changer.status()) == ([None, None], ["00000002", "00000001", "00000003", "00000004"])


async def test_exchange_is_three_moves_through_an_empty_slot(library):
    tgt, lib = library
    async with rig(tgt, lib) as r:
        # tgt refuses EXCHANGE MEDIUM itself: invalid operation code.
        with pytest.raises(ScsiError) as refused:
            await command(r.session, lib.changer_lun, smc.exchange_medium(0, lib.slots[1], lib.slots[2], lib.slots[1]),
                          name="EXCHANGE MEDIUM")
        assert refused.value.sense is not None and refused.value.sense.key == SenseKey.ILLEGAL_REQUEST
        assert refused.value.sense.asc_ascq == (0x20, 0x00)
        # With every slot full there is nowhere to pass through: refused, nothing moved.
        before = await r.changer.status()
        r.counting.cdbs.clear()
        with pytest.raises(NoSourceSlot) as full:
            await r.changer.exchange(2, 3)
        assert full.value.errno == errno.ENOSPC and r.counting.opcodes() <= READS
        assert await r.changer.status() == before
        await r.changer.load(1)
        r.counting.cdbs.clear()
        await r.changer.exchange(2, 3)
        assert [c[0] for c in r.counting.cdbs if c[0] not in READS] == [smc.SmcOp.MOVE_MEDIUM] * 3
        assert media(await r.changer.status()) == (["00000001", None], [None, "00000003", "00000002", "00000004"])


async def test_next_first_last(library):
    tgt, lib = library
    async with rig(tgt, lib) as r:
        async def drive0() -> tuple[str | None, list[str | None]]:
            drives, slots = media(await r.changer.status())
            return drives[0], slots

        await r.changer.next()  # an empty drive: the first full slot
        assert await drive0() == ("00000001", [None, "00000002", "00000003", "00000004"])
        await r.changer.next()  # back to slot 1, then slot 2
        assert await drive0() == ("00000002", ["00000001", None, "00000003", "00000004"])
        await r.changer.last()
        assert await drive0() == ("00000004", ["00000001", "00000002", "00000003", None])
        before = await r.changer.status()
        r.counting.cdbs.clear()
        with pytest.raises(NoMedium) as none_left:  # mtx: "No More Media"
            await r.changer.next()
        assert none_left.value.errno == errno.ENOMEDIUM and r.counting.opcodes() <= READS
        assert await r.changer.status() == before
        await r.changer.first()
        assert await drive0() == ("00000001", [None, "00000002", "00000003", "00000004"])
        r.counting.cdbs.clear()
        await r.changer.first()  # slot 1's medium is in the drive already: nothing moves
        assert r.counting.opcodes() <= READS
        await r.changer.inventory()
        assert await drive0() == ("00000001", [None, "00000002", "00000003", "00000004"])


async def test_refusals_change_nothing_and_move_nothing(library):
    tgt, lib = library
    async with rig(tgt, lib) as r:
        c = r.changer
        await c.load(1)  # drive 0 full (from slot 1), drive 1 empty, slot 1 empty
        refusals = [
            (c.load(1, 1), NoMedium, errno.ENOMEDIUM),  # an empty slot
            (c.load(2, 0), ElementFull, errno.EBUSY),  # a full drive
            (c.unload(drive=1), NoMedium, errno.ENOMEDIUM),  # an empty drive
            (c.unload(2, 0), ElementFull, errno.EBUSY),  # into a full slot
            (c.load(0), NoSuchElement, errno.EINVAL),  # slots count from 1
            (c.load(5), NoSuchElement, errno.EINVAL),
            (c.load(2, 2), NoSuchElement, errno.EINVAL),  # drives 0 and 1
            (c.load(2, -1), NoSuchElement, errno.EINVAL),
            (c.unload(9), NoSuchElement, errno.EINVAL),
            (c.transfer(1, 2), NoMedium, errno.ENOMEDIUM),
            (c.transfer(2, 3), ElementFull, errno.EBUSY),
            (c.transfer(2, 7), NoSuchElement, errno.EINVAL),
            (c.exchange(1, 2), NoMedium, errno.ENOMEDIUM),
            (c.exchange(2, 2), NoSuchElement, errno.EINVAL),
        ]
        for call, error, code in refusals:
            before = await c.status()
            r.counting.cdbs.clear()
            with pytest.raises(error) as refused:
                await call
            assert refused.value.errno == code, refused.value
            assert str(refused.value) and "\n" not in str(refused.value)
            assert r.counting.opcodes() <= READS, (refused.value, r.counting.cdbs)
            assert await c.status() == before, refused.value
        # What the changer itself refuses (another host moved a medium since) is typed the same.
        with pytest.raises(ElementFull):
            await c.move(lib.slots[1], lib.slots[2])
        with pytest.raises(NoMedium):
            await c.move(lib.slots[0], lib.drive_addresses[1])
        with pytest.raises(NoSuchElement):
            await c.move(lib.slots[1], 999)
        assert media(await c.status()) == (["00000001", None], [None, "00000002", "00000003", "00000004"])

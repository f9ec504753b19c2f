"""The watch keeps the tree true to the target: unit attentions (2A/09 capacity, 3F/0E LUNs, on a
command or as a SCSI Async Event) change a file's size and the directory; a LUN whose answers a
rescan cannot use is kept as it was (not removed), and the next idle poll tries the rescan again
until it sees it whole. A LUN a rescan does not find goes only once it has been missing for a
grace period, so one that a restarting target adds back in time keeps its file and handles."""

from __future__ import annotations

import contextlib
import os

import pyfuse3
import pytest
import trio
from iscsifs.block.client import open_lun, scan, scan_luns
from iscsifs.block.errors import LunRemoved
from iscsifs.block.identity import identity_of
from iscsifs.mount.fs import IscsiFs
from iscsifs.mount.tree import ROOT_INODE, Tree
from iscsifs.mount.watch import TargetWatch
from iscsifs.net.multipath import Multipath
from iscsifs.net.pool import TargetPool
from iscsifs.proto import pdu as P
from iscsifs.proto.address import Portal
from iscsifs.proto.errors import IscsiError
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import RecoveryPolicy

from support.fake_multipath import in_pool, open_multipath
from support.fake_target import FakePortals, FakeTarget, sense_bytes

CONFIG = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt")


class Garbling:
    """Shared by every connection's fake target: LUNs whose INQUIRY answers are cut to 2 bytes."""

    def __init__(self) -> None:
        self.luns: set[int] = set()
        self.listed = [0, 1]
        self.cut = 0  # answers cut so far


async def test_a_lun_the_rescan_cannot_read_stays_and_is_tried_again():
    # Real time, not trio's virtual clock: the watch asks the kernel to forget inodes from a
    # thread, and virtual time would run on while it does.
    garbling = Garbling()
    async with trio.open_nursery() as nursery:

        def setup(portal: Portal, target: FakeTarget) -> None:
            target.luns = garbling.listed
            plain = target.respond

            async def respond(req: P.ScsiCommand, data: bytes) -> None:
                lun = req.lun >> 48
                cut = req.cdb[0] == 0x12 and not req.cdb[1] & 1 and lun in garbling.luns
                garbling.cut += cut
                await plain(req, data[:2] if cut else data)

            target.respond = respond  # type: ignore[method-assign]

        fakes = FakePortals(nursery, max_cmd_sn_delta=8)
        fakes.setup = setup
        multipath = await Multipath.open(nursery, [Portal("fake")], CONFIG, RecoveryPolicy(), connect=fakes,
                                         identify=identity_of)

        async def opener(target: str, identities: object) -> Multipath:
            return multipath

        pooled = TargetPool(nursery, opener).target(CONFIG.target_name or "", [Portal("fake")])
        tree = Tree()
        found = await scan(pooled)
        for info in found.luns:
            tree.add_lun(ROOT_INODE, str(info.lun), info, open_lun(pooled, info), pooled)
        watch = TargetWatch(nursery, tree, pooled, ROOT_INODE, read_only=False)
        watch.poll(0.05, pooled.logged_in, found)
        assert sorted(tree.lun_inodes(ROOT_INODE)) == [0, 1]

        garbling.luns = {0, 1, 2}  # every INQUIRY of these is cut from now on
        garbling.listed.append(2)  # a LUN is added: the next poll rescans
        with trio.fail_after(10):
            while garbling.cut < 6:  # two rescans, each cut for all three LUNs
                await trio.sleep(0.01)
        assert sorted(tree.lun_inodes(ROOT_INODE)) == [0, 1]  # kept as they were; 2 is not shown yet

        garbling.luns = set()  # the target answers whole again: a later poll's rescan shows LUN 2
        with trio.fail_after(10):
            while sorted(tree.lun_inodes(ROOT_INODE)) != [0, 1, 2]:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


# -- unit attentions --------------------------------------------------------------------------------


async def _watched(nursery, missing_grace=0.0):
    """The fake target's LUN 0 as a file in an IscsiFs, with a TargetWatch on the session."""
    target, session = await open_multipath(nursery)
    fs = IscsiFs(Tree())
    (info,) = await scan_luns(session)
    pooled = in_pool(nursery, session)
    lun = open_lun(pooled, info)
    inode = fs.tree.add_lun(ROOT_INODE, "0", info, lun, pooled)
    TargetWatch(nursery, fs.tree, pooled, ROOT_INODE, read_only=False, missing_grace=missing_grace)
    await lun.read(0, 512)  # the pool logs in (it hands out the multipath) and hears its unit attentions
    return target, fs, lun, inode


async def test_capacity_changed_unit_attention_updates_the_size():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, fs, lun, inode = await _watched(nursery)
            old = lun.size
            target.disk += bytearray(1 << 16)  # the LUN grows on the target...
            target.pending_sense.append(sense_bytes(0x06, 0x2A, 0x09))  # ...which says so on the next command
            assert await lun.read(0, 512) == bytes(target.disk[:512])  # that command is retried
            while lun.size == old:
                await trio.sleep(0.01)
            assert lun.size == len(target.disk)
            assert (await fs.getattr(inode)).st_size == len(target.disk)
            await lun.write(len(target.disk) - 512, b"x" * 512)  # the new end is writable
            nursery.cancel_scope.cancel()


REPORTED_LUNS_CHANGED = sense_bytes(0x06, 0x3F, 0x0E)


async def _lun_1_added(target, fs) -> None:
    # Announced by a SCSI Async Event this time (RFC 7143 §11.9.1), not by a command.
    target.luns = [0, 1]
    sense = REPORTED_LUNS_CHANGED
    event = P.AsyncMessage(lun=0, async_event=P.AsyncEvent.SCSI_ASYNC_EVENT,
                           data=len(sense).to_bytes(2, "big") + sense, **target.sn())
    await target.send(event)
    while 1 not in fs.tree.lun_inodes(ROOT_INODE):
        await trio.sleep(0.01)


async def _luns_changed(target, fs, luns: list[int]) -> None:
    """The target lists ``luns`` and says so on the next command, which a read on LUN 0 sends."""
    target.luns = luns
    target.pending_sense.append(REPORTED_LUNS_CHANGED)
    await fs.nodes[fs.tree.lun_inodes(ROOT_INODE)[0]].lun.read(0, 512)


@contextlib.asynccontextmanager
async def _lun_1_watched(caplog, grace: float):
    """LUN 0 watched with ``missing_grace=grace``, LUN 1 added and shown, the log captured; all
    within 10 s. Yields the fake target, the file system, LUN 0's inode and LUN 1's."""
    caplog.set_level("INFO", logger="iscsifs")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, fs, _, lun0 = await _watched(nursery, missing_grace=grace)
            await _lun_1_added(target, fs)
            yield target, fs, lun0, fs.tree.lun_inodes(ROOT_INODE)[1]
            nursery.cancel_scope.cancel()


async def test_reported_luns_changed_rescans_the_directory():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, fs, _, _ = await _watched(nursery)
            await _lun_1_added(target, fs)
            assert (await fs.lookup(ROOT_INODE, b"1")).st_size == len(target.disk)
            gone = fs.tree.lun_inodes(ROOT_INODE)[1]
            await _luns_changed(target, fs, [0])  # this time on a command
            while 1 in fs.tree.lun_inodes(ROOT_INODE):
                await trio.sleep(0.01)
            with pytest.raises(pyfuse3.FUSEError) as e:
                await fs.getattr(gone)
            assert e.value.errno == 6  # ENXIO: a handle to a LUN that is gone
            nursery.cancel_scope.cancel()


async def test_a_lun_missing_from_a_rescan_goes_only_after_the_grace(caplog):
    # tgt, restarted, takes logins before it has added its LUNs back: a rescan in that window does
    # not find them. Real time: the watch forgets inodes from a thread.
    grace = 1.0
    async with _lun_1_watched(caplog, grace) as (target, fs, _, kept):
        handle = fs.nodes[kept].lun
        assert handle is not None

        await _luns_changed(target, fs, [0])
        while "LUN 1 of iqn.2026-11.test:tgt is no longer reported" not in caplog.text:
            await trio.sleep(0.01)
        await _luns_changed(target, fs, [0, 1])  # back within the grace
        while "is reported again" not in caplog.text:
            await trio.sleep(0.01)
        await trio.sleep(grace + 0.3)  # past the grace, and the rescan due then
        assert fs.tree.lun_inodes(ROOT_INODE).get(1) == kept  # the same file throughout
        assert await handle.read(0, 512) == bytes(target.disk[:512])
        assert "is gone" not in caplog.text

        await _luns_changed(target, fs, [0])  # missing for good: it goes at the end of the grace
        missed = trio.current_time()
        while 1 in fs.tree.lun_inodes(ROOT_INODE):
            await trio.sleep(0.01)
        assert grace <= trio.current_time() - missed <= grace + 0.5
        assert "LUN 1 of iqn.2026-11.test:tgt is gone" in caplog.text
        with pytest.raises(pyfuse3.FUSEError) as e:
            await fs.getattr(kept)
        assert e.value.errno == 6  # ENXIO


async def test_a_lun_back_as_another_device_gets_a_new_file(caplog):
    # Deleted, then another device added under its number while its file was kept: the old file's
    # handles must not reach the new device (ENXIO), and the new device is shown.
    async with _lun_1_watched(caplog, 5.0) as (target, fs, lun0, old):
        await _luns_changed(target, fs, [0])
        while "is no longer reported" not in caplog.text:
            await trio.sleep(0.01)
        target.lun_serials[1] = b"OTHER001"
        await _luns_changed(target, fs, [0, 1])  # back within the grace, as another device
        while fs.tree.lun_inodes(ROOT_INODE).get(1, old) == old:
            await trio.sleep(0.01)
        new = fs.tree.lun_inodes(ROOT_INODE)[1]
        assert fs.nodes[new].info.identity.serial == "OTHER001"
        with pytest.raises(pyfuse3.FUSEError) as e:
            await fs.getattr(old)
        assert e.value.errno == 6  # ENXIO
        assert fs.tree.lun_inodes(ROOT_INODE)[0] == lun0  # LUN 0 is the device it was
        assert "is another device now (serial 'FAKE0001' -> 'OTHER001')" in caplog.text


async def test_a_lun_reported_but_unreadable_is_not_counted_as_missing(caplog):
    # Missing, then reported again but with answers the rescan cannot use (kept as it was), then
    # missing again: the grace starts anew from the second miss, not from the first.
    grace = 1.0
    async with _lun_1_watched(caplog, grace) as (target, fs, _, kept):
        garbled = []
        plain = target.respond

        async def respond(req: P.ScsiCommand, data: bytes) -> None:
            cut = req.cdb[0] == 0x12 and not req.cdb[1] & 1 and req.lun >> 48 == 1
            if cut:
                garbled.append(1)
            await plain(req, data[:2] if cut else data)

        target.respond = respond  # type: ignore[method-assign]
        await _luns_changed(target, fs, [0])
        while "no longer reported" not in caplog.text:
            await trio.sleep(0.01)
        await _luns_changed(target, fs, [0, 1])  # reported, its INQUIRY cut: skipped
        while not garbled:
            await trio.sleep(0.01)
        await trio.sleep(grace)  # the first miss is now older than the grace
        await _luns_changed(target, fs, [0])
        while caplog.text.count("no longer reported") < 2:
            assert "is gone" not in caplog.text, "removed at once: the first miss was still counted"
            await trio.sleep(0.01)
        assert fs.tree.lun_inodes(ROOT_INODE).get(1) == kept


def test_another_device_only_where_both_say_what_they_are():
    from iscsifs.block.client import LunInfo
    from iscsifs.block.identity import Identity
    from iscsifs.mount.watch import _changed
    from iscsifs.scsi.response import StandardInquiry

    disk = StandardInquiry(0, 0, False, 6, "FAKE", "disk", "0001")

    def info(serial: str, wwn: str) -> LunInfo:
        return LunInfo("iqn.2026-11.test:tgt", 1, disk, None, Identity(serial=serial, wwn=wwn))

    assert _changed(info("A", "naa.1"), info("B", "naa.1"))
    assert _changed(info("A", "naa.1"), info("A", "naa.2"))
    assert not _changed(info("A", "naa.1"), info("A", "naa.1"))
    assert not _changed(info("A", "naa.1"), info("", ""))  # says nothing: cannot be told apart
    assert not _changed(info("", ""), info("A", "naa.1"))
    assert not _changed(None, info("A", "naa.1"))


@contextlib.asynccontextmanager
async def _fenced_at_a_relogin(caplog, poll: float | None = None, changed: int = 1):
    """LUNs 0 and 1 shown and watched (polled every ``poll`` s, if given); then the connection
    drops and the next login finds LUN ``changed`` another device, which the multipath fences.
    Yields the target logged in to now, the file system, the other LUN, and the changed LUN's
    old inode and Lun; all within 10 s."""
    caplog.set_level("INFO", logger="iscsifs")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            state = {"luns": [0, 1], "serials": {}}

            def setup(portal: Portal, target: FakeTarget) -> None:
                target.luns, target.lun_serials = list(state["luns"]), dict(state["serials"])

            fakes = FakePortals(nursery, max_cmd_sn_delta=8)
            fakes.setup = setup
            multipath = await Multipath.open(nursery, [Portal("fake")], CONFIG, RecoveryPolicy(), connect=fakes,
                                             identify=identity_of)
            pooled = in_pool(nursery, multipath)
            fs = IscsiFs(Tree())
            found = await scan(pooled)
            for info in found.luns:
                fs.tree.add_lun(ROOT_INODE, str(info.lun), info, open_lun(pooled, info), pooled)
            watch = TargetWatch(nursery, fs.tree, pooled, ROOT_INODE, read_only=False, missing_grace=0.2)
            if poll is not None:
                watch.poll(poll, pooled.logged_in, found)
            other, old = (fs.nodes[fs.tree.lun_inodes(ROOT_INODE)[n]].lun for n in (1 - changed, changed))
            await other.read(0, 512)
            fenced = fs.tree.lun_inodes(ROOT_INODE)[changed]

            state["serials"] = {changed: b"OTHER001"}
            await fakes.targets[-1][1].stream.aclose()  # the next login finds the LUN changed
            with pytest.raises(IscsiError, match="another device"):
                await old.read(0, 512)
            yield fakes.targets[-1][1], fs, other, fenced, old
            nursery.cancel_scope.cancel()


async def _shown_anew(fs, target, fenced: int, old, number: int = 1) -> None:
    """The LUN's old file is gone (ENXIO, and its Lun sends nothing more) and a new one shows the
    new device, read and written."""
    while fs.tree.lun_inodes(ROOT_INODE).get(number, fenced) == fenced:
        await trio.sleep(0.01)
    new = fs.tree.lun_inodes(ROOT_INODE)[number]
    assert fs.nodes[new].info.identity.serial == "OTHER001"
    with pytest.raises(pyfuse3.FUSEError) as e:
        await fs.getattr(fenced)
    assert e.value.errno == 6  # ENXIO
    with pytest.raises(LunRemoved):
        await old.read(0, 512)
    fh = (await fs.open(new, os.O_RDWR, None)).fh
    await fs.write(fh, 0, b"n" * 512)
    assert bytes(await fs.read(fh, 0, 512)) == b"n" * 512
    assert bytes(target.disk[:512]) == b"n" * 512


async def test_a_lun_fenced_at_a_relogin_is_shown_anew_as_the_new_device(caplog):
    # The multipath refuses every command to the fenced LUN, the scan's too. A rescan (here for a
    # LUN the target adds) takes its file away, which lifts the refusal, and shows the new device
    # as a new file; the target's other changes show as well.
    async with _fenced_at_a_relogin(caplog) as (target, fs, lun0, fenced, old):
        target.luns = [0, 1, 2]
        target.pending_sense.append(REPORTED_LUNS_CHANGED)
        await lun0.read(0, 512)
        await _shown_anew(fs, target, fenced, old)
        while 2 not in fs.tree.lun_inodes(ROOT_INODE):
            await trio.sleep(0.01)
        assert "LUN 1 of iqn.2026-11.test:tgt has been another device since a relogin" in caplog.text
        assert "LUN 1 of iqn.2026-11.test:tgt appeared" in caplog.text


async def test_the_poll_rescans_after_a_relogin(caplog):
    # No unit attention says anything: the next poll sees that the target was logged in again.
    async with _fenced_at_a_relogin(caplog, poll=0.05) as (target, fs, _, fenced, old):
        await _shown_anew(fs, target, fenced, old)
        assert "was logged in again: rescanning it" in caplog.text


async def test_lun_0_fenced_at_a_relogin_is_shown_anew_too(caplog):
    # REPORT LUNS goes to LUN 0: the fence lets it (and INQUIRY) through, or no rescan of the
    # target could run while LUN 0 is fenced.
    async with _fenced_at_a_relogin(caplog, poll=0.05, changed=0) as (target, fs, lun1, fenced, old):
        await _shown_anew(fs, target, fenced, old, number=0)
        assert bytes(await lun1.read(0, 512)) == bytes(target.disk[:512])  # the other LUN is as it was

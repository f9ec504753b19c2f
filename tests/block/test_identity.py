"""Identity (VPD 0x80/0x83), write protection (MODE SENSE), VPD 0xB0 transfer limits and unit
attentions (2A/09 capacity, 3F/0E LUNs) against the in-memory fake target; tgt covers the rest."""

from __future__ import annotations

import os

import pyfuse3
import pytest
import trio
from iscsifs.block.buffers import BufferPool
from iscsifs.block.client import open_lun, scan_luns
from iscsifs.block.identity import identify, identity_of
from iscsifs.mount.fs import IscsiFs
from iscsifs.mount.tree import ROOT_INODE, Tree
from iscsifs.mount.watch import TargetWatch
from iscsifs.net.multipath import Multipath
from iscsifs.net.pool import TargetPool
from iscsifs.proto import pdu as P
from iscsifs.proto.address import Portal
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.scsi.response import (
    Designator,
    parse_device_identification,
    world_wide_name,
)

from support.fake_target import FakePortals, sense_bytes

CONFIG = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt")


async def _session(nursery, **kw):
    """A Multipath (what the layers above use) to one fake target, which ``kw`` sets up."""
    fakes = FakePortals(nursery, max_cmd_sn_delta=8)
    fakes.setup = lambda portal, target: [setattr(target, k, v) for k, v in kw.items()]
    session = await Multipath.open(nursery, [Portal("fake")], CONFIG, RecoveryPolicy(), connect=fakes,
                                   identify=identity_of)
    return fakes.targets[0][1], session


def _pooled(nursery, multipath):
    """``multipath`` as the mount holds a target: in a pool (files open on it keep it)."""

    async def opener(target, identities):
        return multipath

    return TargetPool(nursery, opener).target(multipath.target_name, [multipath.portal])


async def test_identity_write_protection_and_block_limits():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _target, session = await _session(nursery, write_protected=True, max_transfer_blocks=8)
            ident = await identify(session, 0)
            assert ident.serial == "FAKE0001" and ident.wwn == "naa.6001405fa4e4c0de"
            assert ident.write_protected and ident.maximum_transfer_blocks == 8
            (info,) = await scan_luns(session)
            lun = open_lun(session, info)
            assert lun.read_only and lun.max_blocks == 8
            nursery.cancel_scope.cancel()


async def test_io_is_split_at_the_maximum_transfer_length():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await _session(nursery, max_transfer_blocks=8)
            (info,) = await scan_luns(session)
            lun = open_lun(session, info)
            data = bytes(range(256)) * 2 * 20  # 20 blocks
            await lun.write(512, data)
            assert bytes(target.disk[512 : 512 + len(data)]) == data
            assert await lun.read(512, len(data)) == data
            blocks = [int.from_bytes(p.cdb[7:9], "big") for p in target.log
                      if isinstance(p, P.ScsiCommand) and p.cdb[0] in (0x28, 0x2A)]
            assert blocks == [8, 8, 4, 8, 8, 4]
            nursery.cancel_scope.cancel()


async def test_file_reads_use_pooled_buffers_split_and_unaligned():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await _session(nursery, max_transfer_blocks=8)
            target.disk[: 1 << 16] = bytes(range(256)) * 256
            (info,) = await scan_luns(session)
            fs = IscsiFs(Tree())
            pooled = _pooled(nursery, session)
            inode = fs.tree.add_lun(ROOT_INODE, "0", info, open_lun(pooled, info), pooled)
            for off, size in ((0, 4096), (100, 9000), (511, 2), (0, 4096), (len(target.disk) - 10, 4096)):
                got = bytes(await fs.read(inode, off, size))  # pyfuse3 copies it out at once, as here
                assert got == bytes(target.disk[off : off + size])
            nursery.cancel_scope.cancel()


async def test_o_direct_opens_get_direct_io_and_others_the_page_cache():
    # direct_io only where the caller asked to bypass the cache anyway: it spares each O_DIRECT
    # write a getxattr round trip under the inode lock, and keeps readahead for everyone else.
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, session = await _session(nursery)
            (info,) = await scan_luns(session)
            fs = IscsiFs(Tree())
            pooled = _pooled(nursery, session)
            inode = fs.tree.add_lun(ROOT_INODE, "0", info, open_lun(pooled, info), pooled)
            for flags, direct in ((os.O_RDONLY, False), (os.O_RDWR, False),
                                  (os.O_RDONLY | os.O_DIRECT, True), (os.O_WRONLY | os.O_DIRECT, True)):
                fi = await fs.open(inode, flags, None)
                assert (fi.direct_io, fi.keep_cache) == (direct, False)
            nursery.cancel_scope.cancel()


def test_buffer_pool_reuses_by_size_class_within_its_budget():
    pool = BufferPool(keep_bytes=8192)
    a = pool.take(100)
    assert len(a) == 4096
    pool.give(a)
    assert pool.take(4000) is a  # reused, no new allocation
    b, c = pool.take(5000), pool.take(5000)
    assert len(b) == len(c) == 8192
    pool.give(b)
    pool.give(c)  # over the budget: dropped
    assert pool.take(8192) is b and pool.take(8192) is not c


async def _watched(nursery):
    """The fake target's LUN 0 as a file in an IscsiFs, with a TargetWatch on the session."""
    target, session = await _session(nursery)
    fs = IscsiFs(Tree())
    (info,) = await scan_luns(session)
    pooled = _pooled(nursery, session)
    lun = open_lun(pooled, info)
    inode = fs.tree.add_lun(ROOT_INODE, "0", info, lun, pooled)
    TargetWatch(nursery, fs.tree, pooled, ROOT_INODE, read_only=False)
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


async def test_reported_luns_changed_rescans_the_directory():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, fs, _, _ = await _watched(nursery)
            # Announced by a SCSI Async Event this time (RFC 7143 §11.9.1), not by a command.
            target.luns = [0, 1]
            sense = sense_bytes(0x06, 0x3F, 0x0E)
            event = P.AsyncMessage(lun=0, async_event=P.AsyncEvent.SCSI_ASYNC_EVENT,
                                   data=len(sense).to_bytes(2, "big") + sense, **target.sn())
            await target.send(event)
            while 1 not in fs.tree.lun_inodes(ROOT_INODE):
                await trio.sleep(0.01)
            assert (await fs.lookup(ROOT_INODE, b"1")).st_size == len(target.disk)
            gone = fs.tree.lun_inodes(ROOT_INODE)[1]
            target.luns = [0]
            target.pending_sense.append(sense)  # this time on a command
            await fs.nodes[fs.tree.lun_inodes(ROOT_INODE)[0]].lun.read(0, 512)
            while 1 in fs.tree.lun_inodes(ROOT_INODE):
                await trio.sleep(0.01)
            with pytest.raises(pyfuse3.FUSEError) as e:
                await fs.getattr(gone)
            assert e.value.errno == 6  # ENXIO: a handle to a LUN that is gone
            nursery.cancel_scope.cancel()


def test_world_wide_name_prefers_naa_then_eui_then_names():
    naa8 = Designator(1, 0, 3, bytes.fromhex("6000000000000000"))
    naa16 = Designator(1, 0, 3, bytes.fromhex("60000000000000000e00000000010001"))
    eui = Designator(1, 0, 2, bytes.fromhex("0011223344556677"))
    t10 = Designator(2, 0, 1, b"IET     00010001")
    port = Designator(1, 1, 3, bytes.fromhex("5000000000000001"))  # a target port, not the LU
    assert world_wide_name([t10, naa8, naa16, port]) == "naa.60000000000000000e00000000010001"
    assert world_wide_name([t10, eui]) == "eui.0011223344556677"
    assert world_wide_name([t10]) == "t10.IET 00010001"
    assert world_wide_name([port]) == ""
    page = bytes([0, 0x83, 0, 12]) + bytes([0x01, 0x03, 0, 8]) + bytes(8)
    assert parse_device_identification(page + b"\x01\x03\x00\x40") == [Designator(1, 0, 3, bytes(8))]  # truncated tail

"""Identity (VPD 0x80/0x83), write protection (MODE SENSE) and the VPD 0xB0 transfer limit a
LUN's I/O is split at, against the in-memory fake target; tgt covers the rest."""

from __future__ import annotations

import trio
from iscsifs.block.client import open_lun, scan_luns
from iscsifs.block.identity import identify
from iscsifs.proto import pdu as P

from support.fake_multipath import open_multipath


async def test_identity_write_protection_and_block_limits():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _target, session = await open_multipath(nursery, write_protected=True, max_transfer_blocks=8)
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
            target, session = await open_multipath(nursery, max_transfer_blocks=8)
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

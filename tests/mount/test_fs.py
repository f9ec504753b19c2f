"""The FUSE operations over a LUN of the in-memory fake target: reads in pooled buffers, split at
the transfer limit and unaligned; O_DIRECT and (without the writeback cache) write-only opens get
direct I/O, the others the page cache."""

from __future__ import annotations

import os

import pytest
import trio
from iscsifs.block.client import open_lun, scan_luns
from iscsifs.mount.fs import IscsiFs
from iscsifs.mount.tree import ROOT_INODE, Tree

from support.fake_multipath import in_pool, open_multipath


async def test_file_reads_use_pooled_buffers_split_and_unaligned():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await open_multipath(nursery, max_transfer_blocks=8)
            target.disk[: 1 << 16] = bytes(range(256)) * 256
            (info,) = await scan_luns(session)
            fs = IscsiFs(Tree())
            pooled = in_pool(nursery, session)
            inode = fs.tree.add_lun(ROOT_INODE, "0", info, open_lun(pooled, info), pooled)
            for off, size in ((0, 4096), (100, 9000), (511, 2), (0, 4096), (len(target.disk) - 10, 4096)):
                got = bytes(await fs.read(inode, off, size))  # pyfuse3 copies it out at once, as here
                assert got == bytes(target.disk[off : off + size])
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("writeback", [False, True])
async def test_o_direct_and_write_only_opens_get_direct_io_and_others_the_page_cache(writeback):
    # direct_io only where the page cache gives nothing: O_DIRECT, and without the writeback
    # cache a write-only open. It spares each write a copy into the cache and a getxattr round
    # trip under the inode lock, and keeps readahead for every open that reads.
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, session = await open_multipath(nursery)
            (info,) = await scan_luns(session)
            fs = IscsiFs(Tree(), writeback=writeback)
            pooled = in_pool(nursery, session)
            inode = fs.tree.add_lun(ROOT_INODE, "0", info, open_lun(pooled, info), pooled)
            for flags, direct in ((os.O_RDONLY, False), (os.O_RDWR, False), (os.O_WRONLY, not writeback),
                                  (os.O_WRONLY | os.O_TRUNC | os.O_APPEND, not writeback),
                                  (os.O_RDONLY | os.O_DIRECT, True), (os.O_WRONLY | os.O_DIRECT, True)):
                fi = await fs.open(inode, flags, None)
                assert (fi.direct_io, fi.keep_cache) == (direct, False), flags
            nursery.cancel_scope.cancel()

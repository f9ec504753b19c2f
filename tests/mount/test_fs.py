"""The FUSE operations over a LUN of the in-memory fake target: reads in pooled buffers, split at
the transfer limit and unaligned; O_DIRECT and (without the writeback cache) write-only opens get
direct I/O, the others the page cache."""

from __future__ import annotations

import os

import pytest
import trio
from iscsifs.block.client import open_lun, scan_luns
from iscsifs.mount.fs import IscsiFs, direct_writes_drop_cached_pages
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
            write_only = not writeback and direct_writes_drop_cached_pages(os.uname().release)
            assert fs.write_only_direct == write_only
            for flags, direct in ((os.O_RDONLY, False), (os.O_RDWR, False), (os.O_WRONLY, write_only),
                                  (os.O_WRONLY | os.O_TRUNC | os.O_APPEND, write_only),
                                  (os.O_RDONLY | os.O_DIRECT, True), (os.O_WRONLY | os.O_DIRECT, True)):
                fi = await fs.open(inode, flags, None)
                assert (fi.direct_io, fi.keep_cache) == (direct, False), flags
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("release", "drops"), [
    ("6.1.0-13-amd64", False),  # Debian 12: a write-only open keeps the page cache there
    ("5.15.0-91-generic", False),
    ("6.6.0", True),
    ("6.10.0-rc1", True),
    ("6.18.44-fc-v1272", True),
    ("7.0.0", True),
    ("6", False),
    ("", False),
])
def test_write_only_opens_skip_the_page_cache_only_on_kernels_that_keep_it_coherent(release, drops):
    assert direct_writes_drop_cached_pages(release) is drops

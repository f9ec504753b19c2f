"""Tape drives and a changer that follow SSC-3 and SMC-3 where tgt does not (``support.fake_library``:
end of data as BLANK CHECK 00/05, a longer block's negative INFORMATION, full READ ELEMENT STATUS
answers with DVCID identifiers, an import/export element, a drive that reports a tape loaded and
is becoming ready for a while), through the mount's file operations
(``IscsiFs``), on trio's virtual clock. tgt's library is tested in ``tests/test_mt_mtx.py``."""

from __future__ import annotations

import errno
import json
import os
import random

import pyfuse3
import pytest
import trio
from iscsifs.mount.fs import MT_STATUS_XATTR, MT_TELL_XATTR, MT_XATTR, MTX_STATUS_XATTR, MTX_XATTR, IscsiFs
from iscsifs.mount.serve import shutdown

from support.fake_library import Cartridge
from support.hostile import World, mount


def inode_of(fs: IscsiFs, lun: int) -> int:
    (inode,) = [i for i, n in fs.nodes.items() if n.info is not None and n.info.lun == lun]
    return inode


async def fuse_errno(call) -> int:
    with pytest.raises(pyfuse3.FUSEError) as raised:
        await call
    return raised.value.errno


async def write_file(fs: IscsiFs, inode: int, blocks: list[bytes]) -> None:
    """What tar does: open, one write(2) per block, close (a filemark)."""
    fh = (await fs.open(inode, os.O_WRONLY, None)).fh
    for block in blocks:
        assert await fs.write(fh, 0, block) == len(block)
    await fs.flush(fh)
    await fs.release(fh)


async def read_blocks(fs: IscsiFs, inode: int, count: int, size: int = 1 << 17) -> list[bytes]:
    fh = (await fs.open(inode, os.O_RDONLY, None)).fh
    try:
        return [bytes(await fs.read(fh, 0, size)) for _ in range(count)]
    finally:
        await fs.release(fh)


async def mt(fs: IscsiFs, inode: int, verb: str) -> None:
    await fs.setxattr(inode, MT_XATTR, verb.encode(), None)


async def tell(fs: IscsiFs, inode: int) -> int:
    return int(await fs.getxattr(inode, MT_TELL_XATTR, None))


async def test_a_library_that_follows_the_standards(autojump_clock):
    world = World(random.Random(0), hostility=0.0)
    library = world.library
    async with trio.open_nursery() as nursery:
        fs, tree, pool = await mount(nursery, world)
        drive0, drive1, changer = inode_of(fs, 3), inode_of(fs, 4), inode_of(fs, 5)

        # Two tape files, each ended by a filemark; read back block by block, a filemark reads as
        # b"", and the end of data (BLANK CHECK 00/05 here, not tgt's 0x48) as b"" again.
        a, b = [os.urandom(10240), os.urandom(3000)], [os.urandom(70000)]
        await write_file(fs, drive0, a)
        await write_file(fs, drive0, b)
        assert library.drives[0].records == [*a, None, *b, None]
        await mt(fs, drive0, "rewind")
        assert await read_blocks(fs, drive0, 6) == [*a, b"", *b, b"", b""]
        await mt(fs, drive0, "rewind")
        await mt(fs, drive0, "fsf 1")
        assert await tell(fs, drive0) == 3
        assert await read_blocks(fs, drive0, 1) == b

        # bsf 1 in file 1 lands before the filemark that ends file 0, bsr a block back; eod then
        # appends a third file.
        await mt(fs, drive0, "bsf 1")
        assert await tell(fs, drive0) == 2
        await mt(fs, drive0, "bsr 1")
        assert await read_blocks(fs, drive0, 1) == a[1:]
        await mt(fs, drive0, "eod")
        await write_file(fs, drive0, [b"c" * 512])
        assert library.drives[0].records == [*a, None, *b, None, b"c" * 512, None]
        status = json.loads(await fs.getxattr(drive0, MT_STATUS_XATTR, None))
        assert (status["file_number"], status["block_number"], status["online"]) == (3, 0, True)

        # A block longer than the read: ENOMEM, as st, and the tape is past it.
        await mt(fs, drive0, "rewind")
        fh = (await fs.open(drive0, os.O_RDONLY, None)).fh
        assert await fuse_errno(fs.read(fh, 0, 4096)) == errno.ENOMEM
        assert bytes(await fs.read(fh, 0, 1 << 17)) == a[1]
        await fs.release(fh)

        # The changer: full answers with DVCID identifiers map each drive to its file; an
        # import/export element is listed apart.
        view = json.loads(await fs.getxattr(changer, MTX_STATUS_XATTR, None))
        assert [d["lun"] for d in view["drives"]] == [3, 4]
        assert [os.path.basename(d["file"]) for d in view["drives"]] == ["3", "4"]
        assert view["drives"][0] == {**view["drives"][0], "full": True, "barcode": "FAKE01L5", "source_slot": 1}
        assert [s["barcode"] for s in view["slots"]] == [None, "FAKE02L5", "FAKE03L5", "FAKE04L5"]
        assert [e["full"] for e in view["import_export"]] == [False]

        # Moves: an unloaded drive has no tape; a load into the other drive serves the new tape
        # from its beginning; refusals change nothing.
        await fs.setxattr(changer, MTX_XATTR, b"unload", None)
        assert library.slots[0] is not None and library.drives[0] is None
        assert await fuse_errno(fs.open(drive0, os.O_RDONLY, None)) == errno.ENOMEDIUM
        await fs.setxattr(changer, MTX_XATTR, b"load 1 1", None)
        # The drive says the tape changed (28/00), then is becoming ready (04/01) for a while, as
        # real drives do: the mount waits it out, and serves the new tape from its beginning.
        assert library.attention[1] is False and library.becoming_ready[1] == 0
        assert await read_blocks(fs, drive1, 2) == a
        before = (list(library.slots), list(library.drives))
        assert await fuse_errno(fs.setxattr(changer, MTX_XATTR, b"load 1 0", None)) == errno.ENOMEDIUM
        assert await fuse_errno(fs.setxattr(changer, MTX_XATTR, b"load 2 1", None)) == errno.EBUSY
        assert (list(library.slots), list(library.drives)) == before
        fh = (await fs.open(changer, os.O_RDONLY, None)).fh
        text = bytes(await fs.read(fh, 0, 65536)).decode()
        await fs.release(fh)
        assert "Data Transfer Element 0:Empty\n" in text
        assert "Data Transfer Element 1:Full (Storage Element 1 Loaded):VolumeTag = FAKE01L5" in text
        assert "      Storage Element 5 IMPORT/EXPORT:Empty\n" in text

        # The end of the medium: ENOSPC, and nothing written twice or lost.
        library.slots[1] = Cartridge("SMALL1L5", capacity=50000)
        await fs.setxattr(changer, MTX_XATTR, b"load 2 0", None)
        fh = (await fs.open(drive0, os.O_WRONLY, None)).fh
        written = []
        for n in range(10):
            try:
                await fs.write(fh, 0, bytes([n]) * 10000)
            except pyfuse3.FUSEError as exc:
                assert exc.errno == errno.ENOSPC
                break
            written.append(bytes([n]) * 10000)
        await fs.flush(fh)
        await fs.release(fh)
        assert 3 <= len(written) < 10
        assert [r for r in library.drives[0].records if r is not None] == written

        await shutdown(tree.files(), pool)
        nursery.cancel_scope.cancel()

"""The ceiling of any pyfuse3 file system on this machine: one file that does no I/O at all.

    python bench/nullfs.py [--wait] MOUNTPOINT SIZE_BYTES

Reads return zeros from a preallocated buffer and writes are acknowledged and dropped, on the
same trio + pyfuse3 stack iscsifs runs on, with iscsifs's FUSE settings (no writeback cache,
kernel cache not kept, direct_io for O_DIRECT opens, 1 MiB readahead). What fio measures on it
is what FUSE dispatch and pyfuse3 alone cost: no iSCSI file system written with them can go
faster. bench/run.py runs it next to iscsifs.

With ``--wait``, each read and write is handed to another task, which completes it at once, and
the handler waits for that: the least any file system that does I/O must do on trio (in iscsifs
the session's reader task completes a command and wakes the FUSE handler waiting for it). That
is the ceiling of a file system that waits once per request.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import stat
import sys

import pyfuse3
import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from iscsifs.mount.serve import DEFAULT_READAHEAD_KIB, FUSE_TASKS, set_readahead

FILE_INODE = pyfuse3.ROOT_INODE + 1
NAME = b"null"


class NullFs(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, size: int, mountpoint: str,
                 completions: trio.MemorySendChannel[trio.Event] | None = None) -> None:
        super().__init__()
        self.size = size
        self.mountpoint = os.path.realpath(mountpoint)
        self.zeros = bytes(1 << 20)
        self.completions = completions  # --wait: where each request goes to be completed

    def init(self) -> None:
        # iscsifs's readahead too, set as it does: after this step has answered INIT.
        async def readahead() -> None:
            set_readahead(self.mountpoint, DEFAULT_READAHEAD_KIB)

        trio.lowlevel.spawn_system_task(readahead)

    async def _wait_once(self) -> None:
        if self.completions is not None:
            done = trio.Event()
            self.completions.send_nowait(done)
            await done.wait()

    async def getattr(self, inode, ctx=None):
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        a.attr_timeout = a.entry_timeout = 1.0
        if inode == FILE_INODE:
            a.st_mode, a.st_nlink, a.st_size = stat.S_IFREG | 0o644, 1, self.size
        else:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o755, 2
        return a

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(FILE_INODE)

    async def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=inode, keep_cache=False, direct_io=bool(flags & os.O_DIRECT))  # as iscsifs

    async def read(self, fh, off, size):
        await self._wait_once()
        return memoryview(self.zeros)[: max(0, min(size, self.size - off))]

    async def write(self, fh, off, buf):
        await self._wait_once()
        return len(buf)


async def _complete(completions: trio.MemoryReceiveChannel[trio.Event]) -> None:
    async for done in completions:
        done.set()


async def _main(completions: trio.MemoryReceiveChannel[trio.Event]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_complete, completions)

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signal)
        await pyfuse3.main(min_tasks=FUSE_TASKS)  # as iscsifs runs it: the same request tasks
        nursery.cancel_scope.cancel()


def main() -> None:
    args = sys.argv[1:]
    wait = "--wait" in args
    mountpoint, size = [a for a in args if a != "--wait"]
    send, receive = trio.open_memory_channel(math.inf)
    options = set(pyfuse3.default_options)
    options.add("fsname=nullfs")
    pyfuse3.init(NullFs(int(size), mountpoint, send if wait else None), mountpoint, options)
    try:
        trio.run(_main, receive)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()

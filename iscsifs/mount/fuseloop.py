"""pyfuse3's wait for the next FUSE request, without a loop turn when one is already there.

pyfuse3's session loop (``internal.pxi`` of 3.4.2 and 3.5.0, read line by line) has each of its
tasks call the module's ``_wait_fuse_readable`` before it reads a request: under a trio Lock of
its own, ``wait_readable`` on /dev/fuse. So every request costs a hand-over of that lock, an
``epoll_ctl`` (trio arms a descriptor one-shot for each wait) and a turn of the loop, even while
requests are queued in the kernel, as they are whenever the mount is busy. The loop looks the
function up by name at each call, so ``FuseWait.install`` puts in its place one that asks
poll(2) first and waits only when nothing is there: at 4 KiB and 32 in flight, 1.19x the reads
and 1.23x the writes (``bench/README.md``, "VM 3, second visit").

What it keeps of the original's contract: True once the descriptor is readable, False when the
loop is to end, one waiter at a time. What it cannot see is libfuse's exit flag (a C global), so
``terminate`` must be how the mount ends the loop: after it no task reads again. (A task that
read after the exit would drop the request unanswered: libfuse returns 0 for it, and pyfuse3
ends the task, so the program that made the request would wait for ever.) An unmount from
outside (fusermount3 -u) makes the descriptor readable with an error, and libfuse's read then
ends each task, as before.

pyfuse3 counts its waiting tasks in a C attribute this wait does not touch, so it starts a task
per request read until ``max_tasks`` (99) and never ends one for idleness: a pool of at most
99 tasks, each parked on the lock when idle.

Any other pyfuse3 version, or no /dev/fuse descriptor found, leaves pyfuse3 as it is.
"""

from __future__ import annotations

import logging
import os
import select

import pyfuse3
import trio

log = logging.getLogger("iscsifs")

KNOWN = frozenset({"3.4.2", "3.5.0"})  # whose session loop this was written against


class FuseWait:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.ending = False
        self._lock = trio.Lock()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._original: object = None

    @classmethod
    def install(cls) -> FuseWait | None:
        """After ``pyfuse3.init``: in place of pyfuse3's wait, if this pyfuse3 is one it knows."""
        version = getattr(pyfuse3, "__version__", "")
        if version not in KNOWN:
            log.debug("pyfuse3 %s: its own wait for requests is kept", version)
            return None
        fd = _fuse_fd()
        if fd is None:
            log.debug("no /dev/fuse descriptor found: pyfuse3's own wait for requests is kept")
            return None
        wait = cls(fd)
        wait._original = pyfuse3._wait_fuse_readable  # type: ignore[attr-defined]
        pyfuse3._wait_fuse_readable = wait.wait  # type: ignore[attr-defined]
        return wait

    def uninstall(self) -> None:
        pyfuse3._wait_fuse_readable = self._original  # type: ignore[attr-defined]

    def terminate(self) -> None:
        """End the loop (``pyfuse3.terminate``): no task reads a request from now on."""
        self.ending = True
        pyfuse3.terminate()

    async def wait(self) -> bool:
        lock = self._lock
        try:
            lock.acquire_nowait()  # no checkpoint when nobody waits: that is the point
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if not self.ending and not self._poll.poll(0):
                await trio.lowlevel.wait_readable(self.fd)
        except trio.ClosedResourceError:  # pyfuse3.terminate's notify_closing
            return False
        finally:
            lock.release()
        return not self.ending


def _fuse_fd() -> int | None:
    """The descriptor of /dev/fuse that ``pyfuse3.init`` opened (pyfuse3 does not give it), if
    it is the process's only one."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                found.append(int(name))
        except OSError:
            continue
    return found[0] if len(found) == 1 else None

"""pyfuse3's wait for the next FUSE request, without a loop turn when one is already there.

pyfuse3's session loop (``internal.pxi`` of 3.4.2 and 3.5.0, read line by line) has each of its
tasks call the module's ``_wait_fuse_readable`` before it reads a request: under a trio Lock of
its own, ``wait_readable`` on /dev/fuse. So every request costs a hand-over of that lock, an
``epoll_ctl`` (trio arms a descriptor one-shot for each wait) and a turn of the loop, even while
requests are queued in the kernel, as they are whenever the mount is busy. The loop looks the
function up by name at each call, so ``FuseWait.install`` puts in its place one that asks
poll(2) first and waits only when nothing is there: at 4 KiB and 32 in flight, 1.19x the reads
and 1.23x the writes (``bench/README.md``, "VM 3, second visit"). A request found queued is
taken without the lock, too: the lock then only orders the tasks that wait, and a task back from
answering reads the next request in the same loop turn instead of handing the lock to an idle
task that runs in the next one (1.44x the reads and 1.40x the writes again, "VM 3, third visit").
At most ``TAKEN_PER_TURN`` a turn, though: with handlers that never wait (getattr) and other
processes keeping requests queued, one task would otherwise keep trio's loop for good.

What it keeps of the original's contract: True once the descriptor is readable (pyfuse3 reads it
blocking, so a waiter woken for a request that a task without the lock took meanwhile waits
again), False when the loop is to end, one task at a time in ``wait_readable``. What it cannot
see is libfuse's exit flag (a C global), so ``terminate`` must be how the mount ends the loop:
after it no task reads again. (A task that read after the exit would drop the request
unanswered: libfuse returns 0 for it, and pyfuse3 ends the task, so the program that made the
request would wait for ever.) An unmount from outside (fusermount3 -u) makes the descriptor
readable with an error, and libfuse's read then ends each task, as before.

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

from iscsifs.net.turnend import turn_end

log = logging.getLogger("iscsifs")

KNOWN = frozenset({"3.4.2", "3.5.0"})  # whose session loop this was written against
# Requests read without a checkpoint in one turn of trio's loop, at most; then the loop gets its
# turn. At 4 KiB and 32 in flight a turn reads 3 to 4 (each handler waits for its command).
TAKEN_PER_TURN = 32


class FuseWait:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.ending = False
        self._lock = trio.Lock()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._taken = 0  # requests found queued and taken without the lock
        self._turn_end = turn_end()
        self._turn_end.watch(fd)  # polled before the loop sleeps, where the mount asks it
        self._turn = -1
        self._in_turn = 0  # of them, in the loop turn ``_turn``
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
        self._turn_end.unwatch(self.fd)

    def terminate(self) -> None:
        """End the loop (``pyfuse3.terminate``): no task reads a request from now on."""
        self.ending = True
        pyfuse3.terminate()

    async def wait(self) -> bool:
        if self.ending:
            return False
        if self._poll.poll(0):
            # Queued: read it now, without the lock. Waiters parked on the lock are for when the
            # kernel has nothing; a hand-over to one of them would cost this request a loop turn.
            turns = self._turn_end.turns
            if turns != self._turn:
                self._turn, self._in_turn = turns, 0
            if self._in_turn < TAKEN_PER_TURN:
                self._in_turn += 1
                self._taken += 1
                return True
            # This turn's share is read. Handlers that never wait (getattr, lookup) would
            # otherwise keep the loop, and with it the iSCSI readers, the deadlines and the
            # signals, for as long as other processes keep requests queued.
            await trio.lowlevel.checkpoint()
            return await self.wait()
        lock = self._lock
        try:
            lock.acquire_nowait()
            queued = False  # as polled just now: no checkpoint since
        except trio.WouldBlock:
            await lock.acquire()
            queued = bool(self._poll.poll(0))
        try:
            while not self.ending and not queued:
                taken = self._taken
                await trio.lowlevel.wait_readable(self.fd)
                # Readable when trio woke us; a task that took a request without the lock since
                # may have left nothing (a blocking read would then stall the whole loop).
                queued = self._taken == taken or bool(self._poll.poll(0))
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

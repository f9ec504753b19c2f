"""pyfuse3's wait for the next FUSE request, without a loop turn when one is already there.

pyfuse3's session loop (``internal.pxi`` of 3.4.2 and 3.5.0, read line by line) has each of its
tasks call the module's ``_wait_fuse_readable`` before it reads a request: under a trio Lock of
its own, ``wait_readable`` on /dev/fuse. So every request costs a hand-over of that lock, an
``epoll_ctl`` (trio arms a descriptor one-shot for each wait) and a turn of the loop, even while
requests are queued in the kernel, as they are whenever the mount is busy. The loop looks the
function up by name at each call, so ``FuseWait.install`` puts in its place one that asks
poll(2) first and waits only when nothing is there: at 4 KiB and 32 in flight, 1.19x the reads
and 1.23x the writes (``bench/README.md``, "VM 3, second visit"). A request found queued is
taken at once, too, by whichever task asks: a task back from answering reads the next request in
the same loop turn instead of handing over to an idle task that runs in the next one (1.44x the
reads and 1.40x the writes again, "VM 3, third visit"). At most ``TAKEN_PER_TURN`` a turn,
though: with handlers that never wait (getattr) and other processes keeping requests queued, one
task would otherwise keep trio's loop for good.

One task at a time waits on the descriptor (is armed); the others park as idle. When the armed
task is woken for a request, nobody waits on the descriptor while it handles it. Not polling
(``net.turnend``), the loop sleeps next, so an idle task is woken to arm at once, a loop turn of
its own. Polling, the descriptor is left vacant instead: at queue depth 1 the task back from its
answer arms it again itself, and no turn is spent on a hand-over; ``TurnEnd`` wakes an idle task
only if the loop would otherwise sleep with nobody waiting on /dev/fuse, or stays busy for two
turns ("VM 3, sixth visit").

What it keeps of the original's contract: True once the descriptor is readable (pyfuse3 reads it
blocking, so a waiter woken for a request that another task took meanwhile waits again), False
when the loop is to end, one task at a time in ``wait_readable``. What it cannot
see is libfuse's exit flag (a C global), so ``terminate`` must be how the mount ends the loop:
after it no task reads again. (A task that read after the exit would drop the request
unanswered: libfuse returns 0 for it, and pyfuse3 ends the task, so the program that made the
request would wait for ever.) An unmount from outside (fusermount3 -u) makes the descriptor
readable with an error, and libfuse's read then ends each task, as before.

pyfuse3 counts its waiting tasks in a C attribute this wait does not touch, so it starts a task
per request read until ``max_tasks`` (99) and never ends one for idleness: a pool of at most
99 tasks, each parked when idle.

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
        self._armed = False  # a task waits on the descriptor (one at most: trio allows no more)
        self._idle = trio.lowlevel.ParkingLot()  # tasks with nothing to do while one is armed
        self._summoned = False  # an idle task was woken to arm, and has not run yet
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._taken = 0  # requests found queued and taken at once, without waiting
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
        self._turn_end.filled(self.fd)  # its number may be another file's next

    def terminate(self) -> None:
        """End the loop (``pyfuse3.terminate``): no task reads a request from now on."""
        self.ending = True
        pyfuse3.terminate()
        self._idle.unpark_all()

    async def wait(self) -> bool:
        while True:
            if self.ending:
                return False
            if self._poll.poll(0):
                # Queued: read it now. A hand-over to a waiting task would cost this request a
                # loop turn.
                turns = self._turn_end.turns
                if turns != self._turn:
                    self._turn, self._in_turn = turns, 0
                if self._in_turn < TAKEN_PER_TURN:
                    self._in_turn += 1
                    self._taken += 1
                    if not self._armed:
                        self._vacate()
                    return True
                # This turn's share is read. Handlers that never wait (getattr, lookup) would
                # otherwise keep the loop, and with it the iSCSI readers, the deadlines and the
                # signals, for as long as other processes keep requests queued.
                await trio.lowlevel.checkpoint()
                continue
            if not self._armed:
                break
            try:
                await self._idle.park()
            finally:
                self._summoned = False  # (whichever ran: at worst one more is woken than needed)
        self._armed = True
        self._turn_end.filled(self.fd)
        try:
            while not self.ending:
                taken = self._taken
                await self._turn_end.wait_readable(self.fd, self.fd)
                # Readable when trio woke us; a task that took a request without waiting since
                # may have left nothing (a blocking read would then stall the whole loop).
                if self._taken == taken or self._poll.poll(0):
                    break
        except trio.ClosedResourceError:  # pyfuse3.terminate's notify_closing
            self._armed = False
            self._idle.unpark_all()
            return False
        except BaseException:  # cancelled: another task waits in its place
            self._armed = False
            self._vacate()
            raise
        self._armed = False
        if self._ended():  # terminate() came while we waited
            self._idle.unpark_all()
            return False
        # Nobody waits on the descriptor now. Polling, the next task back with nothing to do
        # will; if none is before the loop would sleep, an idle one is woken to
        # (``TurnEnd.vacant``). Not polling, the loop sleeps next: an idle task arms it now.
        self._vacate()
        return True

    def _ended(self) -> bool:
        return self.ending  # a call: set meanwhile, which the type checker's narrowing cannot see

    def _vacate(self) -> None:
        if self._turn_end.polling:
            self._turn_end.vacant(self.fd, self._fill)
        elif not self._summoned and self._idle:
            self._summoned = True  # one is on its way: it arms, or takes a request and calls this again
            self._idle.unpark()

    def _fill(self) -> bool:
        if self._armed or not self._idle:
            return False
        self._idle.unpark()
        return True


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

"""Writes held to the end of a turn of trio's loop: what several tasks queued in one turn goes out
in one system call, just before the loop asks the kernel for I/O, with no task of its own.

At 4 KiB and 32 in flight the FUSE process answers several requests a turn, and each starts a
command: written at once, each cost a ``writev`` and a wake-up of the target. Held here, the
turn's commands leave together, and at queue depth 1 a command still leaves before the loop
sleeps, so no round trip waits longer. (A writer task woken per burst, tried before, cost a task
switch more than the system calls it saved: ``bench/README.md``.)

The hook runs inside trio's loop after it has chosen how long to sleep: a task woken there would
sleep with it. So a ``Held`` may not wake a task in ``send_held``; what needs a task (a full
socket, a failure) goes through ``wake``, which uses ``TrioToken.run_sync_soon`` and with it the
loop's own wake-up descriptor. What runs there runs in trio's system task, where an exception
ends the whole run: keep it to what cannot raise (setting an Event, a log line: logging's
handlers report their own errors). ``turns`` counts the loop's turns, for the
FUSE wait's share of one (``mount.fuseloop``).

The same hook can poll before the loop sleeps (``poll_before_sleep``): while the loop's recent
sleeps were short, it asks poll(2) for the descriptors the process waits on (the iSCSI sockets,
/dev/fuse) until one is ready or the time is up, and only then lets the loop sleep, which it then
does not, as something is ready. A sleeping vCPU halts, and waking it is dearer than the wait
was: at 4 KiB and one request in flight, where the FUSE process is busy 93% of each round trip
anyway, 1.08x the reads with 50 us (``bench/README.md``, "VM 3, fifth visit"). While sleeps are
long (an idle mount, a slow network, 1 MiB transfers), it does not poll: ``waits_ns``, an
average of the last sleeps, polled ones included, is then above the time it would poll. A task
that waits to write is polled for too (``writing``), and a ``wake`` skips the poll; other waits
(timers, signals, threads) are late by a poll at most.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol

import trio

log = logging.getLogger("iscsifs.connection")

# How many of the last sleeps the average of their lengths follows, about: after an idle spell
# (one sleep of a second) polling at 50 us starts again within some 75 short sleeps, a few
# milliseconds of busy I/O. It starts closed: a mount polls once it has seen short sleeps.
POLL_GATE_WEIGHT = 8
POLL_GATE_START_NS = 1_000_000_000


class Held(Protocol):
    def send_held(self) -> None:
        """Write what was held, without waiting and without waking a task (see ``wake``)."""


class TurnEnd(trio.abc.Instrument):
    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._held: list[Held] = []
        self.turns = 0  # turns of the loop so far (each ends here)
        self.poll_ns = 0  # how long to poll before a sleep (poll_before_sleep); 0: never
        self.waits_ns = float(POLL_GATE_START_NS)  # the recent sleeps' average, polled or not
        self.polled = 0  # sleeps polled before, and of them, ended by the poll
        self.polled_ready = 0
        self._poll = select.poll()
        self._watched: set[int] = set()
        self._sleep_from = 0  # when the sleep being timed began; 0: none
        self._woken = False  # ``wake`` was called since the loop last slept: it will not sleep

    def hold(self, sender: Held) -> None:
        """``sender.send_held()`` at the end of this turn (once per call: callers hold once)."""
        self._held.append(sender)

    def wake(self, fn: Callable[[], object]) -> None:
        """``fn()`` in a task context soon, and the loop not asleep meanwhile."""
        self._woken = True  # through trio's own wake-up descriptor, which no poll here sees
        self._token.run_sync_soon(fn)

    def poll_before_sleep(self, microseconds: int) -> None:
        """Poll the watched descriptors for up to this long before the loop sleeps (0: never).
        Only for a process whose every wait is on a watched descriptor: a wait on another would
        be polled for in vain, at each sleep until the average says sleeps are long."""
        self.poll_ns = microseconds * 1000

    def watch(self, fd: int) -> None:
        """A descriptor the loop waits on for reading, to be polled before it sleeps."""
        if fd not in self._watched:
            self._watched.add(fd)
            self._poll.register(fd, select.POLLIN)

    def writing(self, fd: int, waiting: bool) -> None:
        """A watched descriptor's task waits (or no longer waits) for it to take more: polled for
        that too meanwhile, else the poll would run to its end every time."""
        if fd in self._watched:
            self._poll.modify(fd, select.POLLIN | select.POLLOUT if waiting else select.POLLIN)

    def watching(self, fd: int) -> bool:
        return fd in self._watched

    def unwatch(self, fd: int) -> None:
        """Before ``fd`` is closed: its number may be another file's next."""
        if fd in self._watched:
            self._watched.discard(fd)
            self._poll.unregister(fd)

    def before_io_wait(self, timeout: float) -> None:
        self.turns += 1
        held = self._held
        if held:
            self._held = []
            for sender in held:
                try:
                    sender.send_held()
                except Exception as exc:  # noqa: BLE001 - trio would drop this hook for good, and every later write with it
                    # Logged from a task: in a session worker a log line is a frame to the FUSE
                    # process, whose send may wake a task.
                    self.wake(partial(log.error, "sending %r at the end of a loop turn", sender, exc_info=exc))
        if self.poll_ns and timeout > 0 and self._watched:
            self._sleep_from = now = time.perf_counter_ns()
            if self.waits_ns < self.poll_ns and not self._woken:
                try:
                    self._poll_until(now + (self.poll_ns if timeout * 1e9 >= self.poll_ns else int(timeout * 1e9)))
                except Exception as exc:  # noqa: BLE001 - as above: trio would drop the hook, and the held writes with it
                    self.poll_ns = 0
                    self.wake(partial(log.error, "polling before the loop sleeps stopped", exc_info=exc))

    def after_io_wait(self, timeout: float) -> None:
        self._woken = False
        if self._sleep_from:
            slept = time.perf_counter_ns() - self._sleep_from
            self._sleep_from = 0
            self.waits_ns += (slept - self.waits_ns) / POLL_GATE_WEIGHT

    def _poll_until(self, deadline: int) -> None:
        self.polled += 1
        poll = self._poll.poll
        clock = time.perf_counter_ns
        while not poll(0):
            if clock() >= deadline:
                return
        self.polled_ready += 1


_TURN_END: trio.lowlevel.RunVar[TurnEnd] = trio.lowlevel.RunVar("iscsifs_turn_end")


def turn_end() -> TurnEnd:
    """This trio run's ``TurnEnd``, installed on first use."""
    try:
        return _TURN_END.get()
    except LookupError:
        hook = TurnEnd(trio.lowlevel.current_trio_token())
        trio.lowlevel.add_instrument(hook)
        _TURN_END.set(hook)
        return hook

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

While it polls, a descriptor may be left with no task waiting on it (``vacant``): /dev/fuse
while the task woken for a request handles it, and an iSCSI socket its reader lends to a command
alone in flight. That saves the hand-over to another task, a loop turn each, on the round trip
of a request at queue depth 1 (``mount.fuseloop``, ``net.connection``). The hook sees that one
gets a task again before the loop sleeps: if the poll ended on a descriptor a task waits on
(``wait_readable``), trio's wait returns at once; otherwise, or if the vacant descriptor is the
ready one, it wakes a task for it and ends the sleep through the wake-up descriptor. A busy loop
does not sleep, so a descriptor left for two turns gets its task then.
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
# Busy turns a descriptor may stay without a task waiting on it (``vacant``): at queue depth 1 a
# request's turn leaves /dev/fuse so, and the task back from its answer two turns later waits on it
# again itself.
VACANT_TURNS = 2


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
        # Answers a command read in its own task, from a socket its reader lent it
        # (``net.connection``): counted here, once per process, as the polls are.
        self.own_answers = 0
        self._poll = select.poll()
        self._watched: set[int] = set()
        self._sleep_from = 0  # when the sleep being timed began; 0: none
        self._woken = False  # ``wake`` was called since the loop last slept: it will not sleep
        self._in_hook = False  # ``before_io_wait`` runs
        self._vacant: dict[int, _Vacancy] = {}  # descriptors nobody waits on for now (``vacant``)
        self._armed: set[int] = set()  # descriptors a task waits on, through ``wait_readable``

    def hold(self, sender: Held) -> None:
        """``sender.send_held()`` at the end of this turn (once per call: callers hold once)."""
        self._held.append(sender)

    def wake(self, fn: Callable[[], object]) -> None:
        """``fn()`` in a task context soon, and the loop not asleep meanwhile."""
        if self._in_hook:
            # The sleep about to start ends at once, through trio's own wake-up descriptor, which
            # no poll here sees. (From a task, trio may drain that descriptor in the same turn:
            # then the next sleep is an ordinary one.)
            self._woken = True
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

    def vacant(self, fd: int, fill: Callable[[], bool]) -> None:
        """No task waits on ``fd`` for now, and one must before the loop sleeps: then, or after
        two busy turns, ``fill()`` wakes one (True if it did), unless ``filled(fd)`` came first.
        Polling, a vacancy does not stop the loop from waiting for a descriptor that a task
        waits on (``wait_readable``) and that the poll found ready: the loop will not sleep."""
        vacancy = self._vacant.get(fd)
        if vacancy is None:
            self._vacant[fd] = _Vacancy(fill)
        else:
            vacancy.fill = fill  # the same descriptor, maybe another file's now: the turns go on

    def filled(self, fd: int) -> None:
        self._vacant.pop(fd, None)

    @property
    def polling(self) -> bool:
        """The loop polls before it sleeps now (its recent sleeps were short)."""
        return bool(self.poll_ns) and self.waits_ns < self.poll_ns

    async def wait_readable(self, fd: int, obj: int | trio.socket.SocketType) -> None:
        """``trio.lowlevel.wait_readable(obj)``, known here to be waited on meanwhile."""
        self._armed.add(fd)
        try:
            await trio.lowlevel.wait_readable(obj)
        finally:
            self._armed.discard(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._watched

    def unwatch(self, fd: int) -> None:
        """Before ``fd`` is closed: its number may be another file's next."""
        if fd in self._watched:
            self._watched.discard(fd)
            self._poll.unregister(fd)

    def before_io_wait(self, timeout: float) -> None:
        self._in_hook = True
        try:
            self._before_io_wait(timeout)
        finally:
            self._in_hook = False

    def _before_io_wait(self, timeout: float) -> None:
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
        vacant = self._vacant
        if vacant and timeout <= 0:
            # The loop does not sleep this time; a descriptor vacant for two busy turns gets its
            # task anyway, which runs in the next (requests must not queue behind a busy loop).
            for fd, vacancy in list(vacant.items()):
                vacancy.turns += 1
                if vacancy.turns >= VACANT_TURNS:
                    vacant.pop(fd, None)
                    self._fill(vacancy)
            vacant = {}
        ready: list[tuple[int, int]] = []
        if self.poll_ns and timeout > 0 and self._watched:
            self._sleep_from = now = time.perf_counter_ns()
            if self.waits_ns < self.poll_ns and not self._woken:
                try:
                    budget = self.poll_ns if timeout * 1e9 >= self.poll_ns else int(timeout * 1e9)
                    ready = self._poll_until(now + budget)
                except Exception as exc:  # noqa: BLE001 - as above: trio would drop the hook, and the held writes with it
                    self.poll_ns = 0
                    self.wake(partial(log.error, "polling before the loop sleeps stopped", exc_info=exc))
        if vacant and not self._woken:
            ready_fds = {fd for fd, _ in ready}
            # A descriptor a task waits on is ready: trio's wait returns at once, the loop does
            # not sleep, and the vacancies can wait for the next turn's end.
            sleeps = ready_fds.isdisjoint(self._armed)
            woke = False
            for fd, vacancy in list(vacant.items()):
                if sleeps or fd in ready_fds:
                    # The loop would sleep with nobody waiting on ``fd``: a task must, so it must not.
                    vacant.pop(fd, None)
                    woke = self._fill(vacancy) or woke
            if woke:
                self._woken = True
                self._token.run_sync_soon(_nothing)  # through the wake-up descriptor: the sleep ends at once

    def after_io_wait(self, timeout: float) -> None:
        self._woken = False
        if self._sleep_from:
            slept = time.perf_counter_ns() - self._sleep_from
            self._sleep_from = 0
            self.waits_ns += (slept - self.waits_ns) / POLL_GATE_WEIGHT

    def _fill(self, vacancy: _Vacancy) -> bool:
        try:
            return vacancy.fill()
        except Exception as exc:  # noqa: BLE001 - as above: trio would drop the hook, and the held writes with it
            self.wake(partial(log.error, "waking a task to wait on a descriptor failed", exc_info=exc))
            return True

    def _poll_until(self, deadline: int) -> list[tuple[int, int]]:
        self.polled += 1
        poll = self._poll.poll
        clock = time.perf_counter_ns
        while not (ready := poll(0)):
            if clock() >= deadline:
                return ready
        self.polled_ready += 1
        return ready


class _Vacancy:
    __slots__ = ("fill", "turns")

    def __init__(self, fill: Callable[[], bool]) -> None:
        self.fill = fill  # wakes a task to wait on the descriptor; True if it did
        self.turns = 0  # busy turns (the loop did not sleep) since the descriptor was left


def _nothing() -> None:
    pass


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

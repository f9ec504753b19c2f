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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Protocol

import trio

log = logging.getLogger("iscsifs.connection")


class Held(Protocol):
    def send_held(self) -> None:
        """Write what was held, without waiting and without waking a task (see ``wake``)."""


class TurnEnd(trio.abc.Instrument):
    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._held: list[Held] = []
        self.turns = 0  # turns of the loop so far (each ends here)

    def hold(self, sender: Held) -> None:
        """``sender.send_held()`` at the end of this turn (once per call: callers hold once)."""
        self._held.append(sender)

    def wake(self, fn: Callable[[], object]) -> None:
        """``fn()`` in a task context soon, and the loop not asleep meanwhile."""
        self._token.run_sync_soon(fn)

    def before_io_wait(self, timeout: float) -> None:
        self.turns += 1
        held = self._held
        if not held:
            return
        self._held = []
        for sender in held:
            try:
                sender.send_held()
            except Exception as exc:  # noqa: BLE001 - trio would drop this hook for good, and every later write with it
                # Logged from a task: in a session worker a log line is a frame to the FUSE
                # process, whose send may wake a task.
                self.wake(partial(log.error, "sending %r at the end of a loop turn", sender, exc_info=exc))


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

"""What the layers above ``net`` (``block``, ``mount``) need from it, in three widths, and nothing
more; every argument and result is plain data or a buffer, so the work behind them can run in a
session worker process (``net.remote``, ``net.workers``).

- ``Executor``: what I/O needs, to run one SCSI command. A ``Multipath``, the pool's
  ``PooledTarget``, a ``RemoteMultipath`` and one connection (``ConnectionExecutor``, for the
  identity check after a login) are executors.
- ``Target``: an executor that is a target the mount shows: its paths, whether it lives, the
  identities its LUNs must keep, and who hears its unit attentions.
- ``LoggedIn``: a target logged in now, as the pool holds it: it can be told to bring up its
  other paths, and be logged out. ``Multipath`` and ``RemoteMultipath`` are.
- ``MountedTarget``: a target whose files can be open, which keeps it logged in
  (``net.pool.PooledTarget``).

Persistent reservations (SPC-4 §5.13) are kept per I_T nexus, and each path of a target (and each
worker's session) is a nexus of its own: so ``block`` hands ``net`` what to do on each nexus (a
``Registrar``, a ``NexusAction``), and ``net`` runs it on every nexus it has and on every later
login. A registration that another host removed (fencing) is reported through ``on_fenced``.

The feedback of a command's status (TASK SET FULL shrinks the queue; unit attentions are
reported) is the executor's own business: it sees every result.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from iscsifs.proto.address import Portal
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import IscsiError
from iscsifs.scsi.sense import Sense

UnitAttention = Callable[[int, Sense], None]  # (LUN, sense) of a UNIT ATTENTION or SCSI Async Event
Fenced = Callable[[int], None]  # (LUN): another host removed this mount's registration
DataOut = bytes | bytearray | memoryview
Into = bytearray | memoryview


@dataclass(frozen=True, slots=True)
class PathInfo:
    """One path of a target (an iSCSI session through one portal), for ``stats``, ``ls --json``
    and the ``user.iscsi.paths`` xattr."""

    portal: Portal
    state: str  # a SessionState name, lower case: logged_in, recovering, failed, closed
    active: bool  # the path commands go to now (with round-robin, every healthy path is)
    isid: str = ""  # the session's ISID, in hex: the same across its relogins (reinstatement)


class Executor(Protocol):
    @property
    def target_name(self) -> str: ...

    async def execute(self, lun: int, cdb: bytes, *, data_out: DataOut | None = None, expected_in: int = 0,
                      into: Into | None = None) -> ScsiResult:
        """Run one command to completion, across connection failures; its status is the caller's."""
        ...


class NexusAction(Protocol):
    """Something done on one I_T nexus (a PERSISTENT RESERVE OUT that holds per nexus). Picklable:
    it may run in a session worker."""

    async def __call__(self, nexus: Executor, lun: int) -> None: ...


class Registrar(Protocol):
    """Keeps a LUN's registration on each I_T nexus of the mount (``iscsifs.block.reservation``
    says how). Picklable: it runs in the session workers too."""

    async def register(self, nexus: Executor, lun: int) -> None:
        """Join: register (and reserve, if asked) on this nexus, whatever others hold."""
        ...

    async def login(self, nexus: Executor, lun: int) -> bool:
        """After this nexus logged in (again): register it again, unless the mount was fenced
        meanwhile (False)."""
        ...

    async def preempted(self, nexus: Executor, lun: int) -> bool:
        """This nexus was told its registration was preempted (UNIT ATTENTION 2A/03, 2A/05): False
        if the mount was fenced; True if it was only this nexus (it registers again)."""
        ...


class Target(Executor, Protocol):
    on_unit_attention: UnitAttention | None
    on_fenced: Fenced | None

    @property
    def portal(self) -> Portal:
        """The active path's portal (the first one configured while none is up)."""
        ...

    @property
    def alive(self) -> bool:
        """Usable, possibly after a recovery: False once closed or refused for good."""
        ...

    def paths(self) -> list[PathInfo]: ...

    def expect_identity(self, lun: int, serial: str, wwn: str) -> None:
        """After any later login, ``lun`` must still answer with this serial and WWN."""
        ...

    def forget_lun(self, lun: int) -> None:
        """``lun`` is no longer shown: expect nothing of it (identity, registration, a fence as
        another device), so that what the target has under its number can be shown anew; its
        commands from before fail with ENXIO."""
        ...

    async def every_nexus(self, lun: int, action: NexusAction) -> None:
        """Run ``action`` on every I_T nexus logged in now (each path; each worker's session);
        raises the first error, after trying them all."""
        ...

    async def register(self, lun: int, registrar: Registrar) -> None:
        """Join: ``registrar.register`` on every I_T nexus logged in now, and on any that logs in
        meanwhile; then ``keep_registered``. Raises the first error (and keeps nothing)."""
        ...

    def keep_registered(self, lun: int, registrar: Registrar | None) -> None:
        """From now on every login runs ``registrar.login`` for ``lun`` and a nexus told it was
        preempted runs ``registrar.preempted`` (None: no more)."""
        ...


class LoggedIn(Target, Protocol):
    @property
    def recovering(self) -> bool:
        """No path is healthy now: commands wait (within recovery_timeout)."""
        ...

    @property
    def reconnects(self) -> int:
        """Logins beyond each path's first."""
        ...

    def start_paths(self) -> None:
        """The identities are registered: bring up the other paths, which are checked against them."""
        ...

    def close_now(self) -> None:
        """Give up at once (unmounting during an outage): waiting commands fail, nothing is sent."""
        ...

    async def logout(self) -> None: ...


class MountedTarget(Target, Protocol):
    @property
    def reconnects(self) -> int:
        """Logins beyond each path's first (0 while logged out for idleness)."""
        ...

    def hold(self) -> None:
        """A file is open on this target: keep it logged in."""
        ...

    def release(self) -> None:
        """That file is closed."""
        ...


# The identity check a session runs after every login, passed down from ``iscsifs.block`` (net
# never imports from above): (an executor over the new connection, LUN) -> (serial, wwn), or
# ``LunAbsent`` if no device is connected at that LUN now.
Identify = Callable[[Executor, int], Awaitable[tuple[str, str]]]


class LunAbsent(IscsiError):
    """INQUIRY says no device is connected at the LUN now (peripheral qualifier not 0, SPC-4
    §6.4.2), so its VPD pages say nothing of what it is: tgt, restarted, takes logins before its
    LUNs are added back, and answers a missing LUN's pages with LUN 0's."""


class LunForgotten(IscsiError):
    """The layers above no longer show the LUN (``Target.forget_lun``): a command to it from
    before ends, wherever it was waiting, and is never sent again."""

    errno = _errno.ENXIO

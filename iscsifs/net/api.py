"""What the layers above ``net`` (``lun``, ``client``, ``watch``, ``fs``, ``mount``) need from a
session, and nothing more. This narrow boundary is where sessions could later move into a worker
process: every argument and result is plain data or a buffer.

Implemented by ``net.session.Session`` (a target over its paths), by ``net.pool.PooledSession``
(the same, opened on first use and closed when idle) and by ``net.path.ConnectionScsi`` (one
connection, for the identity check after a login).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from iscsifs.proto.address import Portal
from iscsifs.proto.session import ScsiResult
from iscsifs.scsi.sense import Sense

UnitAttention = Callable[[int, Sense], None]  # (LUN, sense) of a UNIT ATTENTION or SCSI Async Event


@dataclass(frozen=True, slots=True)
class PathInfo:
    """One path of a session, for ``stats``, ``ls --json`` and the ``user.iscsi.paths`` xattr."""

    portal: Portal
    state: str  # a PathState name, lower case: logged_in, recovering, failed, closed, refused
    active: bool  # the path commands go to now (with round-robin, every healthy path is)


class ScsiSession(Protocol):
    @property
    def target_name(self) -> str: ...

    @property
    def portal(self) -> Portal:
        """The active path's portal (the first one configured while none is up)."""
        ...

    @property
    def alive(self) -> bool:
        """Usable, possibly after a recovery: False once closed or refused for good."""
        ...

    on_unit_attention: UnitAttention | None

    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | bytearray | memoryview | None = None,
                      expected_in: int = 0, into: bytearray | memoryview | None = None) -> ScsiResult:
        """Run one command to completion, across connection failures; its status is the caller's."""
        ...

    def queue_full(self) -> None:
        """The target answered TASK SET FULL: fewer commands in flight."""
        ...

    def queue_ok(self) -> None:
        """A command completed GOOD: the queue depth may grow back."""
        ...

    def expect_identity(self, lun: int, serial: str, wwn: str) -> None:
        """After any later login, ``lun`` must still answer with this serial and WWN."""
        ...

    def paths(self) -> list[PathInfo]: ...

    def hold(self) -> None:
        """A file is open on this session: keep it logged in (``net.pool``)."""
        ...

    def release(self) -> None:
        """That file is closed."""
        ...


# The identity check a session runs after every login, passed down from ``iscsifs.lun`` (net never
# imports from above): (a session over the new connection, LUN) -> (serial, wwn).
Identify = Callable[[ScsiSession, int], Awaitable[tuple[str, str]]]

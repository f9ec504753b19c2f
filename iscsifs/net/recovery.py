"""A session that outlives its connections: keepalive, command timeouts and session
reinstatement at ErrorRecoveryLevel 0 (RFC 7143 §6.3.5, §7.1).

``ManagedSession`` has the interface the layers above use (``execute``, ``on_unit_attention``,
``logout``...) and holds one live ``Session`` at a time. When that connection fails (the reader
sees EOF or garbage, a digest fails, the keepalive gets no NOP-In, task management gives up) it
logs in again with the same ISID and TSIH 0, which makes the target drop the old session's tasks,
after DefaultTime2Wait and with exponential backoff. Every command that had not completed is
issued again by the ``execute`` call waiting on it, Data-Out included, so nothing acknowledged is
lost and nothing unacknowledged is mistaken for done. While recovering, ``execute`` waits; past
``recovery_timeout`` it fails with EIO at once, and recovery keeps trying in the background so the
mount serves again when the target returns. After a relogin each LUN's identity (VPD 0x80/0x83) is
checked: a LUN that is now another device fails its I/O instead of writing to the wrong disk.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, replace
from typing import Callable

import trio

from iscsifs.net.session import CommandTimeout, ConnectError, Portal, Session, TaskManagement
from iscsifs.proto.errors import (
    AuthenticationError, ConnectionLost, IscsiError, LoginError, RemoteProtocolError,
)
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.session import ScsiResult
from iscsifs.proto.text import OperationalParams
from iscsifs.scsi.sense import Sense
from iscsifs.stats import STATS

log = logging.getLogger("iscsifs")


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """Timeouts, in seconds. The defaults are open-iscsi's (noop_out 5/5, replacement_timeout 120)."""

    nop_interval: float = 5.0
    nop_timeout: float = 5.0
    command_timeout: float = 30.0
    recovery_timeout: float = 120.0
    login_timeout: float = 15.0
    max_backoff: float = 30.0


class RecoveryTimeout(IscsiError):
    """The target has been unreachable for longer than recovery_timeout."""

    errno = errno.EIO


class LunChanged(IscsiError):
    """After reconnecting, a LUN answers with another device's identity: its I/O is refused."""

    errno = errno.EIO


MAX_QUEUE_DEPTH = 64

# Failures of one connection, which a new connection may cure.
CONNECTION_ERRORS = (ConnectionLost, RemoteProtocolError, ConnectError, trio.TooSlowError)


class ManagedSession:
    def __init__(self, nursery: trio.Nursery, portal: Portal, config: LoginConfig, session: Session,
                 policy: RecoveryPolicy) -> None:
        self._nursery = nursery
        self.portal = portal
        self.config = session.config  # as logged in (e.g. after tgt's CHAP fallback)
        self.policy = policy
        self._session = session
        self._closed = False
        self._fatal: IscsiError | None = None
        self._recovering = False
        self._ready = trio.Event()
        self._ready.set()
        self._lost_at = 0.0
        self._on_unit_attention: Callable[[int, Sense], None] | None = None
        self.identities: dict[int, tuple[str, str]] = {}  # LUN -> (serial, wwn) to check after relogin
        self._changed: dict[int, str] = {}
        # Commands in flight, at most queue_depth. TASK SET FULL shrinks it (queue_full); it grows
        # back slowly (queue_ok). A counter and a ParkingLot, not a CapacityLimiter: this is on
        # every command's path, and a free slot must cost no await.
        self._depth = MAX_QUEUE_DEPTH
        self._in_flight = 0
        self._slot_waiters = trio.lowlevel.ParkingLot()
        self._good_since_shrink = 0
        self._adopt(session)
        nursery.start_soon(self._keepalive)

    @classmethod
    async def open(cls, nursery: trio.Nursery, portal: Portal, config: LoginConfig,
                   policy: RecoveryPolicy = RecoveryPolicy()) -> ManagedSession:
        with trio.fail_after(policy.login_timeout):
            session = await Session.open(nursery, portal, config)
        return cls(nursery, portal, config, session, policy)

    def __repr__(self) -> str:
        return f"<ManagedSession {self.target_name} {'recovering' if self._recovering else repr(self._session)}>"

    # -- what the layers above see ------------------------------------------------------------------

    @property
    def target_name(self) -> str | None:
        return self.config.target_name

    @property
    def params(self) -> OperationalParams:
        """Of the live connection (they may differ after a reconnect)."""
        return self._session.params

    @property
    def alive(self) -> bool:
        """Usable, possibly after a recovery: False only once logged out or given up for good."""
        return not self._closed and self._fatal is None

    @property
    def recovering(self) -> bool:
        return self._recovering and not self._closed

    @property
    def on_unit_attention(self) -> Callable[[int, Sense], None] | None:
        return self._on_unit_attention

    @on_unit_attention.setter
    def on_unit_attention(self, callback: Callable[[int, Sense], None] | None) -> None:
        self._on_unit_attention = callback
        self._session.on_unit_attention = callback

    def expect_identity(self, lun: int, serial: str, wwn: str) -> None:
        if serial or wwn:
            self.identities[lun] = (serial, wwn)

    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | bytearray | memoryview | None = None,
                      expected_in: int = 0, into: bytearray | memoryview | None = None) -> ScsiResult:
        """Run a command to completion across connection failures (see the module docstring)."""
        while True:
            if lun in self._changed:
                raise LunChanged(self._changed[lun])
            session = await self._live_session()
            try:
                await self._take_slot()
                try:
                    return await session.execute(lun, cdb, data_out=data_out, expected_in=expected_in, into=into,
                                                 timeout=self.policy.command_timeout)
                finally:
                    self._give_slot()
            except CommandTimeout as exc:
                await self._abort(session, lun, exc)
            except CONNECTION_ERRORS as exc:
                self._connection_failed(session, exc)  # usually already told by on_failure

    @property
    def queue_depth(self) -> int:
        return self._depth

    async def _take_slot(self) -> None:
        if self._in_flight < self._depth and not self._slot_waiters:
            self._in_flight += 1
            return
        await self._slot_waiters.park()  # woken holding the slot its waker handed over (FIFO)

    def _give_slot(self) -> None:
        if self._slot_waiters and self._in_flight <= self._depth:
            self._slot_waiters.unpark()  # the slot passes on; _in_flight is unchanged
        else:
            self._in_flight -= 1

    def queue_full(self) -> None:
        """The target said TASK SET FULL: allow fewer commands in flight than there are now."""
        depth = max(1, min(self._depth, self._in_flight) - 1)
        if depth < self._depth:
            log.info("target %s is full: queue depth %d -> %d", self.target_name, self._depth, depth)
            self._depth = depth
        self._good_since_shrink = 0

    def queue_ok(self) -> None:
        """A command completed: after enough of them, allow one more in flight again."""
        if self._depth < MAX_QUEUE_DEPTH:
            self._good_since_shrink += 1
            if self._good_since_shrink >= 64:
                self._good_since_shrink = 0
                self._depth += 1
                if self._slot_waiters and self._in_flight < self._depth:
                    self._in_flight += 1
                    self._slot_waiters.unpark()

    async def ping(self) -> None:
        await (await self._live_session()).ping()

    def close_now(self) -> None:
        """Give up at once (unmounting during an outage): waiting commands fail, nothing is sent."""
        self._closed = True
        self._ready.set()
        if self._session.alive:
            self._session.abort(ConnectionLost("closed"))

    async def logout(self) -> None:
        """Log out (or just close, if the connection is down); waiting commands fail at once."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        await self._session.logout()

    # -- recovery -------------------------------------------------------------------------------------

    def _adopt(self, session: Session) -> None:
        session.on_failure = self._connection_failed
        session.on_unit_attention = self._on_unit_attention
        self._session = session

    async def _live_session(self) -> Session:
        while True:
            if self._closed:
                raise ConnectionLost(f"session to {self.target_name} is logged out")
            if self._fatal is not None:
                raise self._fatal
            session = self._session
            if session.alive and not self._recovering:
                return session
            if not self._recovering:
                self._connection_failed(session, ConnectionLost("connection closed"))
            ready = self._ready
            with trio.move_on_at(self._lost_at + self.policy.recovery_timeout):
                await ready.wait()
            if not ready.is_set():
                raise RecoveryTimeout(f"target {self.target_name} unreachable for more than "
                                      f"{self.policy.recovery_timeout:.0f} s (recovery_timeout); still reconnecting")

    def _connection_failed(self, session: Session, error: BaseException) -> None:
        if self._closed or self._recovering or session is not self._session:
            return
        log.warning("connection to %s at %s lost: %s; reconnecting", self.target_name, self.portal, error)
        self._recovering = True
        self._ready = trio.Event()
        self._lost_at = trio.current_time()
        self._nursery.start_soon(self._recover)
        if session.alive:
            session.abort(ConnectionLost(str(error)))

    async def _recover(self) -> None:
        # §6.3.5: wait DefaultTime2Wait, then reinstate: same ISID, TSIH 0.
        delay = float(max(1, min(self._session.params.default_time2wait, 60)))
        config = replace(self.config, tsih=0)
        while not self._closed:
            await trio.sleep(delay)
            delay = min(delay * 2, self.policy.max_backoff)
            try:
                with trio.fail_after(self.policy.login_timeout):
                    session = await Session.open(self._nursery, self.portal, config)
            except AuthenticationError as exc:
                return self._give_up(exc)
            except LoginError as exc:
                if exc.status_class == 0x02:  # initiator errors do not heal by retrying; 0x03 may
                    return self._give_up(exc)
                log.info("reconnecting to %s: %s; retrying in %.0f s", self.target_name, exc, delay)
                continue
            except CONNECTION_ERRORS as exc:
                log.info("reconnecting to %s: %s; retrying in %.0f s", self.target_name, exc, delay)
                continue
            try:
                await self._check_identities(session)
            except CONNECTION_ERRORS as exc:
                log.info("reconnecting to %s: %s; retrying in %.0f s", self.target_name, exc, delay)
                session.abort(ConnectionLost(str(exc)))
                continue
            if self._closed:
                await session.logout()
                return
            self._adopt(session)
            self._recovering = False
            self._ready.set()
            STATS.reconnects += 1
            log.warning("recovered the session to %s after %.1f s", self.target_name,
                        trio.current_time() - self._lost_at)
            return

    def _give_up(self, error: IscsiError) -> None:
        log.error("giving up on %s: %s", self.target_name, error)
        self._fatal = error
        self._recovering = False
        self._ready.set()

    async def _check_identities(self, session: Session) -> None:
        from iscsifs.lun import identify  # the SCSI layer sits above this one

        for lun, (serial, wwn) in self.identities.items():
            with trio.fail_after(self.policy.command_timeout):
                now = await identify(session, lun)
            if (now.serial, now.wwn) != (serial, wwn):
                message = (f"LUN {lun} of {self.target_name} is another device since reconnecting "
                           f"(serial {serial!r} -> {now.serial!r}, wwn {wwn!r} -> {now.wwn!r}): refusing its I/O")
                log.error("%s", message)
                self._changed[lun] = message

    # -- keepalive and task management -----------------------------------------------------------------

    async def _keepalive(self) -> None:
        """NOP-Out every nop_interval; no NOP-In within nop_timeout means the connection is dead."""
        while not self._closed and self._fatal is None:
            await trio.sleep(self.policy.nop_interval)
            session = self._session
            if self._recovering or not session.alive:
                continue
            with trio.move_on_after(self.policy.nop_timeout) as scope:
                try:
                    await session.ping()
                except IscsiError:
                    continue  # the failure itself starts recovery
            if scope.cancelled_caught and session is self._session and not self._closed:
                self._connection_failed(session, ConnectionLost(
                    f"no NOP-In answer within {self.policy.nop_timeout:.0f} s"))

    async def _abort(self, session: Session, lun: int, timeout: CommandTimeout) -> None:
        """ABORT TASK, then LOGICAL UNIT RESET, then drop the connection (RFC 7143 §7.1, SAM-5)."""
        task = timeout.task
        log.warning("command 0x%02x on LUN %d of %s got no answer in %.0f s: aborting it", task.cdb[0], lun,
                    self.target_name, self.policy.command_timeout)
        for function, referenced in ((TaskManagement.ABORT_TASK, task), (TaskManagement.LOGICAL_UNIT_RESET, None)):
            try:
                with trio.fail_after(self.policy.nop_timeout * 2):
                    response = await session.task_management(function, lun, referenced)
            except (IscsiError, trio.TooSlowError) as exc:
                log.warning("task management function %d on %s failed: %s", function, self.target_name, exc)
                continue
            if response in (TaskManagement.FUNCTION_COMPLETE, TaskManagement.TASK_DOES_NOT_EXIST):
                session.forget(task)
                return
            log.warning("task management function %d on %s answered %d", function, self.target_name, response)
        self._connection_failed(session, ConnectionLost("the target answers neither the command nor task management"))

"""An iSCSI session (RFC 7143: an ISID and a TSIH) through one portal, that outlives its
connections: keepalive, command timeouts and session reinstatement at ErrorRecoveryLevel 0
(§6.3.5, §7.1). Its lifecycle is ``iscsifs.proto.lifecycle.SESSION_TRANSITIONS``. For the
multipath layer above (``net.multipath``) each session is one path to the target.

When the connection fails (the reader sees EOF or garbage, a digest fails, the keepalive gets no
NOP-In, task management gives up) the session says so at once (``SessionDown`` to every command
on it, ``on_change`` to its multipath, which re-issues them on another path or waits) and
reinstates itself in the background: same ISID, TSIH 0, which makes the target drop the old
session's tasks.

Prompt recovery: after DefaultTime2Wait the portal is probed every ``probe_interval`` seconds (a
TCP connect, which is what a login starts with), so a login follows within a probe of the target
listening again, however long the outage was. Only logins that the target refuses back off.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import trio

from iscsifs.net.api import DataOut, Into, PathInfo, UnitAttention
from iscsifs.net.connection import CommandTimeout, Connection
from iscsifs.net.dial import Connect, ConnectError, tcp_connect
from iscsifs.net.nursery import fail_after
from iscsifs.net.policy import RecoveryPolicy
from iscsifs.proto.address import Portal
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import (
    AuthenticationError,
    ConnectionLost,
    IscsiError,
    LoginError,
    RemoteProtocolError,
    TimedOut,
)
from iscsifs.proto.lifecycle import (
    SESSION_TRANSITIONS,
    SessionInput,
    SessionState,
    step,
)
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.pdu import TmfFunction, TmfResponse
from iscsifs.proto.text import OperationalParams

log = logging.getLogger("iscsifs")



class SessionDown(IscsiError):
    """The command did not complete on this path (its connection failed, or it was aborted):
    issue it again, on this path once it is back or on another."""


class SessionRefused(IscsiError):
    """The session will not use this path: it leads to other devices than its other paths do."""


# Failures of one connection, which a new connection may cure.
CONNECTION_ERRORS = (ConnectionLost, RemoteProtocolError, ConnectError, TimedOut)


class ConnectionExecutor:
    """One connection as an ``Executor``, with the session's command timeout: for the identity
    check that must pass before the connection serves anything."""

    def __init__(self, connection: Connection, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout

    @property
    def target_name(self) -> str:
        return self._connection.target_name or ""

    async def execute(self, lun: int, cdb: bytes, *, data_out: DataOut | None = None, expected_in: int = 0,
                      into: Into | None = None) -> ScsiResult:
        return await self._connection.execute(lun, cdb, data_out=data_out, expected_in=expected_in, into=into,
                                              timeout=self._timeout)


# Called with a new connection before it serves anything (the first login and every relogin);
# raises IscsiError to refuse it. The multipath supplies it (identity checks).
CheckLogin = Callable[["Session", ConnectionExecutor], Awaitable[None]]


def _unchanged(session: Session) -> None:
    return None


@dataclass(frozen=True, slots=True)
class SessionHooks:
    """How a session reaches its portal, and whom it tells what."""

    connect: Connect = tcp_connect
    on_change: Callable[[Session], None] = _unchanged  # its state changed
    on_unit_attention: UnitAttention | None = None  # a SCSI Async Event arrived
    check_login: CheckLogin | None = None  # a new connection, before it serves anything


class Session:
    """Create with ``await Session.open(...)`` (logs in once, or raises) or ``Session.start(...)`` (logs
    in in the background, as a recovery does)."""

    def __init__(self, nursery: trio.Nursery, portal: Portal, config: LoginConfig, policy: RecoveryPolicy,
                 hooks: SessionHooks = SessionHooks()) -> None:
        self._nursery = nursery
        self.portal = portal
        self.config = config
        self.policy = policy
        self._connect = hooks.connect
        self._on_change = hooks.on_change
        self._on_unit_attention = hooks.on_unit_attention
        self._check_login = hooks.check_login
        self.state = SessionState.RECOVERING
        self.connection: Connection | None = None
        self.error: IscsiError | None = None  # why it FAILED
        self.logins = 0

    def __repr__(self) -> str:
        return f"<Session {self.config.target_name} via {self.portal} {self.state.name.lower()}>"

    @classmethod
    async def open(cls, nursery: trio.Nursery, portal: Portal, config: LoginConfig, policy: RecoveryPolicy,
                   hooks: SessionHooks = SessionHooks()) -> Session:
        """Log in now (errors are the caller's), then keep the session up."""
        session = cls(nursery, portal, config, policy, hooks)
        connection = await session._login(config)
        await session._adopt(connection)
        nursery.start_soon(session._keepalive)
        return session

    @classmethod
    def start(cls, nursery: trio.Nursery, portal: Portal, config: LoginConfig, policy: RecoveryPolicy,
              hooks: SessionHooks = SessionHooks()) -> Session:
        """Log in in the background, retrying as a recovery does; ``on_change`` says when it is up."""
        session = cls(nursery, portal, config, policy, hooks)
        nursery.start_soon(session._recover, 0.0)
        nursery.start_soon(session._keepalive)
        return session

    @property
    def target_name(self) -> str:
        return self.config.target_name or ""

    @property
    def params(self) -> OperationalParams | None:
        return self.connection.params if self.connection is not None else None

    @property
    def usable(self) -> bool:
        return self.state is SessionState.LOGGED_IN

    def info(self, active: bool) -> PathInfo:
        return PathInfo(self.portal, self.state.name.lower(), active)

    def _step(self, event: SessionInput) -> None:
        before = self.state
        self.state = step(SESSION_TRANSITIONS, before, event)
        if self.state is not before:
            self._on_change(self)

    # -- commands --------------------------------------------------------------------------------------

    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | bytearray | memoryview | None = None,
                      expected_in: int = 0, into: bytearray | memoryview | None = None) -> ScsiResult:
        """One attempt on this path's connection; SessionDown if it must be issued again."""
        connection = self.connection
        if self.state is not SessionState.LOGGED_IN or connection is None:
            raise SessionDown(f"path {self.portal} is {self.state.value}")
        try:
            return await connection.execute(lun, cdb, data_out=data_out, expected_in=expected_in, into=into,
                                            timeout=self.policy.command_timeout)
        except CommandTimeout as timed_out:
            await self._abort(connection, lun, timed_out)
            raise SessionDown("command aborted after its timeout") from None
        except CONNECTION_ERRORS as exc:
            self._connection_failed(connection, exc)  # usually already told by on_failure
            raise SessionDown(str(exc)) from None

    def close_now(self) -> None:
        """Give up at once (unmounting during an outage): nothing is sent."""
        self._step(SessionInput.CLOSE)
        if self.connection is not None and self.connection.alive:
            self.connection.abort(ConnectionLost("closed"))

    async def logout(self) -> None:
        """Log out (or just close, if the connection is down)."""
        if self.state is SessionState.CLOSED:
            return
        self._step(SessionInput.CLOSE)
        if self.connection is not None:
            await self.connection.logout()

    # -- logging in and recovery ------------------------------------------------------------------------

    async def _login(self, config: LoginConfig) -> Connection:
        connection = await Connection.open_within(self._nursery, self.portal, config, self._connect,
                                                  self.policy.login_timeout)
        self.config = connection.config  # as logged in (e.g. after tgt's CHAP fallback)
        return connection

    async def _adopt(self, connection: Connection) -> None:
        """Check the new connection (identity), then serve on it; refused: IscsiError."""
        if self._check_login is not None:
            try:
                await self._check_login(self, ConnectionExecutor(connection, self.policy.command_timeout))
            except BaseException:
                connection.abort(ConnectionLost("refused after login"))
                raise
        connection.on_failure = self._connection_failed
        connection.on_unit_attention = self._on_unit_attention
        self.connection = connection
        self.logins += 1
        if self.state is SessionState.CLOSED:
            await connection.logout()
            return
        self._step(SessionInput.RECOVERED)

    def _connection_failed(self, connection: Connection, error: BaseException) -> None:
        if connection is not self.connection or self.state is not SessionState.LOGGED_IN:
            return
        log.warning("connection to %s at %s lost: %s; reconnecting", self.target_name, self.portal, error)
        self._step(SessionInput.CONNECTION_LOST)
        if connection.alive:
            connection.abort(ConnectionLost(str(error)))
        # §6.3.5: wait DefaultTime2Wait before reinstating the session.
        self._nursery.start_soon(self._recover, float(max(1, min(connection.params.default_time2wait, 60))))

    async def _recover(self, time2wait: float) -> None:
        """Log in again, same ISID, TSIH 0, until it works or is refused for good. A portal that
        does not take the TCP connection is probed every ``probe_interval``; logins that the target
        refuses (busy, out of resources) back off exponentially."""
        lost_at = trio.current_time()
        config = replace(self.config, tsih=0)
        await trio.sleep(time2wait)
        backoff = max(time2wait, self.policy.probe_interval)
        while self.state is SessionState.RECOVERING:
            delay = self.policy.probe_interval
            try:
                connection = await self._login(config)
                await self._adopt(connection)
            except (AuthenticationError, SessionRefused) as refused:
                return self._give_up(refused)
            except LoginError as exc:
                if exc.status_class == 0x02 and not exc.is_not_found:
                    return self._give_up(exc)  # refused: retrying does not heal it
                # Not found: a restarted target listens before it is configured (tgt). 0x03: busy.
                if exc.status_class == 0x03:
                    delay, backoff = backoff, min(backoff * 2, self.policy.max_backoff)
                log.info("reconnecting to %s at %s: %s; retrying in %.0f s", self.target_name, self.portal, exc, delay)
            except (ConnectError, ConnectionLost) as unreachable:
                # Refused, or closed during the login: tgt closes it while it has no target
                # configured (restarting), so this is a probe that failed, not a refusal.
                log.debug("reconnecting to %s: %s", self.target_name, unreachable)
            except (*CONNECTION_ERRORS, IscsiError) as failed:
                delay, backoff = backoff, min(backoff * 2, self.policy.max_backoff)
                log.info("reconnecting to %s at %s: %s; retrying in %.0f s", self.target_name, self.portal, failed,
                         delay)
            else:
                if self.logins > 1:
                    log.warning("recovered the session to %s at %s after %.1f s", self.target_name, self.portal,
                                trio.current_time() - lost_at)
                return
            await trio.sleep(delay)

    def _give_up(self, error: IscsiError) -> None:
        log.error("giving up on %s at %s: %s", self.target_name, self.portal, error)
        self.error = error
        self._step(SessionInput.GIVE_UP)

    # -- keepalive and task management -------------------------------------------------------------------

    async def _keepalive(self) -> None:
        """NOP-Out every nop_interval; no NOP-In within nop_timeout means the connection is dead."""
        while self.state in (SessionState.LOGGED_IN, SessionState.RECOVERING):
            await trio.sleep(self.policy.nop_interval)
            connection = self.connection
            if not self.usable or connection is None:
                continue
            with trio.move_on_after(self.policy.nop_timeout) as scope:
                try:
                    await connection.ping()
                except IscsiError:
                    pass  # the failure itself starts recovery
            if scope.cancelled_caught:
                self._connection_failed(connection, ConnectionLost(
                    f"no NOP-In answer within {self.policy.nop_timeout:.0f} s"))

    async def _abort(self, connection: Connection, lun: int, timeout: CommandTimeout) -> None:
        """ABORT TASK, then LOGICAL UNIT RESET, then drop the connection (RFC 7143 §7.1, SAM-5)."""
        task = timeout.task
        log.warning("command 0x%02x on LUN %d of %s got no answer in %.0f s: aborting it", task.cdb[0], lun,
                    self.target_name, self.policy.command_timeout)
        for function, referenced in ((TmfFunction.ABORT_TASK, task), (TmfFunction.LOGICAL_UNIT_RESET, None)):
            try:
                with fail_after(self.policy.nop_timeout * 2, f"task management function {function}"):
                    response = await connection.task_management(function, lun, referenced)
            except IscsiError as exc:
                log.warning("task management function %d on %s failed: %s", function, self.target_name, exc)
                continue
            if response in (TmfResponse.FUNCTION_COMPLETE, TmfResponse.TASK_DOES_NOT_EXIST):
                connection.forget(task)
                return
            log.warning("task management function %d on %s answered %d", function, self.target_name, response)
        self._connection_failed(connection,
                                ConnectionLost("the target answers neither the command nor task management"))

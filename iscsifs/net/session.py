"""An iSCSI session (RFC 7143: an ISID and a TSIH) through one portal, that outlives its
connections: the trio driver of the sans-I/O session core (``iscsifs.proto.session``), which
makes every decision (keepalive, the ladder of a command without an answer, a logout the target
asks for, when to log in again); this module only carries its actions out and reports what
happened. For the multipath layer above (``net.multipath``) each session is one path.

Every relogin is a session reinstatement: the same ISID with TSIH 0 (§6.3.5), so the target ends
the old nexus's tasks before the new one serves.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import trio

from iscsifs.net.api import DataOut, Into, PathInfo, UnitAttention
from iscsifs.net.connection import Connection
from iscsifs.net.dial import Connect, ConnectError, tcp_connect
from iscsifs.proto.address import Portal
from iscsifs.proto.connection import (
    AsyncReceived,
    DropAnnounced,
    LogoutRequested,
    NegotiationRequested,
    ScsiEventReported,
    ScsiResult,
    ScsiTask,
)
from iscsifs.proto.errors import (
    AuthenticationError,
    ConnectionLost,
    Delivery,
    IscsiError,
    LoginError,
    RemoteProtocolError,
    TimedOut,
    Undelivered,
)
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.pdu import TmfFunction, TmfResponse
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.proto.session import (
    AbortTask,
    Action,
    AsyncAsk,
    Drain,
    DropConnection,
    EndTask,
    GiveUp,
    LogIn,
    LoginFailure,
    Logout,
    Renegotiate,
    ResetLun,
    SendNop,
    SessionCore,
    SessionState,
)
from iscsifs.proto.text import OperationalParams
from iscsifs.scsi.response import decode_lun
from iscsifs.scsi.sense import parse_sense

log = logging.getLogger("iscsifs")


class SessionRefused(IscsiError):
    """The session will not use this path: it leads to other devices than its other paths do."""


# Failures of one connection, which a new connection may cure.
CONNECTION_ERRORS = (ConnectionLost, RemoteProtocolError, ConnectError, TimedOut)
_TASK_GONE = frozenset({TmfResponse.FUNCTION_COMPLETE, TmfResponse.TASK_DOES_NOT_EXIST})


class ConnectionExecutor:
    """One connection as an ``Executor``: for the checks that must pass before the connection
    serves anything (identity, registration), which their caller bounds in time."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def target_name(self) -> str:
        return self._connection.target_name or ""

    async def execute(self, lun: int, cdb: bytes, *, data_out: DataOut | None = None, expected_in: int = 0,
                      into: Into | None = None) -> ScsiResult:
        return await self._connection.execute(lun, cdb, data_out=data_out, expected_in=expected_in, into=into)


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


# The READ/WRITE family, whose LBA a log line names: 10-byte CDBs carry it in bytes 2-5, 16-byte
# ones in bytes 2-9 (SBC-3).
_LBA_10 = frozenset({0x28, 0x2A, 0x2E, 0x2F, 0x35, 0x41})
_LBA_16 = frozenset({0x88, 0x8A, 0x8E, 0x8F, 0x91, 0x93})


def describe_command(cdb: bytes, lun: int, target: str) -> str:
    """A command as a log line names it: the opcode, the LBA of a read or write, where it went."""
    op = cdb[0] if cdb else 0
    where = f"on LUN {lun} of {target}"
    if op in _LBA_16 and len(cdb) >= 16:
        return f"command 0x{op:02x} at LBA {int.from_bytes(cdb[2:10], 'big')} {where}"
    if op in _LBA_10 and len(cdb) >= 10:
        return f"command 0x{op:02x} at LBA {int.from_bytes(cdb[2:6], 'big')} {where}"
    return f"command 0x{op:02x} {where}"


def _lun_number(field: int) -> int:
    """The LUN a 64-bit LUN field (as ``ScsiTask.lun`` holds it, encoded) addresses: the core
    groups tasks by the field, task management and log lines want the number."""
    return decode_lun(field.to_bytes(8, "big"))


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
        self._core = SessionCore(policy, trio.current_time())
        self._last_state = self._core.state
        self.connection: Connection | None = None
        self.error: IscsiError | None = None  # why it FAILED
        self._wake = trio.Event()
        self._sleeping_until = 0.0

    def __repr__(self) -> str:
        return f"<Session {self.config.target_name} via {self.portal} {self.state.name.lower()}>"

    @classmethod
    async def open(cls, nursery: trio.Nursery, portal: Portal, config: LoginConfig, policy: RecoveryPolicy,
                   hooks: SessionHooks = SessionHooks()) -> Session:
        """Log in now (errors are the caller's), then keep the session up."""
        session = cls(nursery, portal, config, policy, hooks)
        connection = await session._login(config)
        await session._adopt(connection)
        nursery.start_soon(session._run)
        return session

    @classmethod
    def start(cls, nursery: trio.Nursery, portal: Portal, config: LoginConfig, policy: RecoveryPolicy,
              hooks: SessionHooks = SessionHooks()) -> Session:
        """Log in in the background, retrying as a recovery does; ``on_change`` says when it is up."""
        session = cls(nursery, portal, config, policy, hooks)
        nursery.start_soon(session._run)
        return session

    @property
    def state(self) -> SessionState:
        return self._core.state

    @property
    def logins(self) -> int:
        return self._core.logins

    @property
    def target_name(self) -> str:
        return self.config.target_name or ""

    @property
    def isid(self) -> bytes:
        return self.config.isid

    @property
    def params(self) -> OperationalParams | None:
        return self.connection.params if self.connection is not None else None

    @property
    def usable(self) -> bool:
        return self._core.usable

    def info(self, active: bool) -> PathInfo:
        return PathInfo(self.portal, self.state.name.lower(), active, self.config.isid.hex())

    # -- commands (the connection's TaskWatch) ------------------------------------------------------------

    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | bytearray | memoryview | None = None,
                      expected_in: int = 0, into: bytearray | memoryview | None = None,
                      expires: float = float("inf")) -> ScsiResult:
        """One attempt on this path's connection; ``Undelivered`` says how it ended without an answer."""
        connection = self.connection
        if connection is None or not self._core.usable:
            raise Undelivered(Delivery.NEVER_SENT, f"path {self.portal} is {self.state.value}")
        return await connection.execute(lun, cdb, data_out=data_out, expected_in=expected_in, into=into,
                                        expires=expires)

    def started(self, task: ScsiTask, expires: float) -> None:
        # The timer loop sleeps until the core's earliest time; only a command due before it
        # (the first after a quiet spell, as the keepalive wakes it every nop_interval) wakes it.
        if self._core.command_sent(task.initiator_task_tag, task.lun, trio.current_time(), expires) \
                < self._sleeping_until:
            self._wake.set()

    def ended(self, task: ScsiTask) -> None:
        actions = self._core.command_ended(task.initiator_task_tag)
        if actions:
            self._act(actions)

    # -- the core's actions ----------------------------------------------------------------------------

    def _act(self, actions: tuple[Action, ...]) -> None:
        connection = self.connection
        for action in actions:
            if isinstance(action, EndTask):
                if connection is not None:
                    connection.end_task(action.initiator_task_tag, Undelivered(action.delivery, action.reason))
            elif isinstance(action, AbortTask):
                self._log_late(action.initiator_task_tag, action.lun)
                if connection is not None:
                    self._nursery.start_soon(self._task_management, connection, TmfFunction.ABORT_TASK,
                                             action.lun, action.initiator_task_tag)
            elif isinstance(action, ResetLun):
                log.warning("LUN %d of %s through %s: ABORT TASK did not end a late command; resetting the LUN",
                            _lun_number(action.lun), self.target_name, self.portal)
                if connection is not None:
                    self._nursery.start_soon(self._task_management, connection, TmfFunction.LOGICAL_UNIT_RESET,
                                             action.lun, None)
            elif isinstance(action, DropConnection):
                if connection is not None and connection.alive:
                    connection.abort(ConnectionLost(action.reason))  # on_failure tells the core
            elif isinstance(action, SendNop):
                if connection is not None:
                    self._nursery.start_soon(self._ping, connection)
            elif isinstance(action, Drain):
                if connection is not None:
                    log.warning("target %s asks us to log out within %.0f s: finishing %d outstanding "
                                "command(s) first", self.target_name, action.within + 1, connection.outstanding)
                    connection.drain()
            elif isinstance(action, Logout):
                if connection is not None:
                    self._nursery.start_soon(self._logout_asked, connection)
            elif isinstance(action, LogIn):
                self._nursery.start_soon(self._login_once)
            elif isinstance(action, Renegotiate):
                if connection is not None:
                    self._nursery.start_soon(connection.renegotiate, self.policy)
            elif isinstance(action, GiveUp):
                log.error("giving up on %s at %s: %s", self.target_name, self.portal, action.reason)
        if self._core.state is not self._last_state:
            self._last_state = self._core.state
            self._on_change(self)
        self._wake.set()  # the next timer may be earlier now

    def _log_late(self, itt: int, lun: int) -> None:
        log.info("command on LUN %d of %s through %s got no answer in %g s: aborting it", _lun_number(lun),
                 self.target_name, self.portal, self.policy.command_timeout)

    async def _run(self) -> None:
        """Sleep until the core's next timer (or an event moves it), then do what is due."""
        core = self._core
        while core.state not in (SessionState.CLOSED, SessionState.FAILED):
            self._wake = trio.Event()
            self._sleeping_until = core.timer()
            with trio.move_on_at(self._sleeping_until):
                await self._wake.wait()
            self._sleeping_until = 0.0
            self._act(core.handle_timer(trio.current_time()))

    # -- what the actions start ------------------------------------------------------------------------

    async def _ping(self, connection: Connection) -> None:
        try:
            await connection.ping()
        except IscsiError:
            return  # the connection's failure is reported by on_failure; the core's deadline covers the rest
        if connection is self.connection:
            self._core.nop_answered(trio.current_time())

    async def _task_management(self, connection: Connection, function: int, lun: int, itt: int | None) -> None:
        """``lun`` is the core's: the LUN field as the command carried it (``ScsiTask.lun``)."""
        try:
            done = await connection.task_management(function, _lun_number(lun), itt) in _TASK_GONE
        except IscsiError as exc:
            log.info("task management function %d on %s failed: %s", function, self.target_name, exc)
            done = False
        if connection is self.connection:
            self._act(self._core.task_management_done(itt, lun, done, trio.current_time()))

    async def _logout_asked(self, connection: Connection) -> None:
        """The logout the target asked for, once the commands it let finish are done."""
        time2wait = None
        with trio.move_on_after(self.policy.logout_timeout):
            time2wait = await connection.logout()
        if connection.alive:
            await connection.aclose()
        if connection is self.connection:
            log.warning("logged out of %s at %s as it asked; logging in again in %d s", self.target_name,
                        self.portal, time2wait if time2wait is not None else self._core.login_delay())
            self._act(self._core.logged_out(trio.current_time(), time2wait))

    def _connection_failed(self, connection: Connection, error: BaseException) -> None:
        if connection is not self.connection:
            return
        if self._core.state in (SessionState.LOGGED_IN, SessionState.DRAINING):
            log.warning("connection to %s at %s lost: %s; reconnecting", self.target_name, self.portal, error)
        self._act(self._core.connection_lost(trio.current_time(), str(error)))

    def _async_message(self, connection: Connection, event: AsyncReceived) -> None:
        if connection is not self.connection:
            return
        now = trio.current_time()
        if isinstance(event, ScsiEventReported):
            sense = parse_sense(event.sense)
            log.info("target %s reports a SCSI asynchronous event: %s", self.target_name, sense or "no sense data")
            if sense is not None and self._on_unit_attention is not None:
                self._on_unit_attention(decode_lun(event.lun.to_bytes(8, "big")), sense)
        elif isinstance(event, LogoutRequested):
            self._act(self._core.async_event(AsyncAsk.LOGOUT, event.within, now))
        elif isinstance(event, DropAnnounced):
            ask = AsyncAsk.DROP_SESSION if event.session else AsyncAsk.DROP_CONNECTION
            log.warning("target %s drops the %s (Time2Wait %d s)", self.target_name,
                        "session" if event.session else "connection", event.time2wait)
            self._act(self._core.async_event(ask, event.time2wait, now))
        elif isinstance(event, NegotiationRequested):
            self._act(self._core.async_event(AsyncAsk.RENEGOTIATE, 0, now))
        else:
            log.info("target %s sent async event %d", self.target_name, event.code)

    # -- logging in ------------------------------------------------------------------------------------

    async def _login(self, config: LoginConfig) -> Connection:
        connection = await Connection.open_within(self._nursery, self.portal, config, self._connect,
                                                  self.policy.login_timeout)
        self.config = connection.config  # as logged in (e.g. after tgt's CHAP fallback)
        return connection

    async def _adopt(self, connection: Connection) -> None:
        """Check the new connection (identity), then serve on it; refused: IscsiError."""
        if self._check_login is not None:
            try:
                await self._check_login(self, ConnectionExecutor(connection))
            except BaseException:
                connection.abort(ConnectionLost("refused after login"))
                raise
        lost_at = self._core.lost_at
        old, self.connection = self.connection, connection
        if old is not None and old.alive:
            old.abort(ConnectionLost("replaced by a new login"))
        connection.on_failure = self._connection_failed
        connection.on_async = self._async_message
        connection.watch = self
        actions = self._core.logged_in(trio.current_time(), connection.params.default_time2wait)
        if lost_at is not None and self._core.usable:
            log.warning("recovered the session to %s at %s after %.1f s", self.target_name, self.portal,
                        trio.current_time() - lost_at)
        if any(isinstance(a, Logout) for a in actions):
            await connection.logout()  # closed while it logged in
            return
        self._act(actions)

    async def _login_once(self) -> None:
        """One login with the same ISID and TSIH 0; the core decides when the next is, if any."""
        try:
            connection = await self._login(replace(self.config, tsih=0))
            await self._adopt(connection)
            return
        except (AuthenticationError, SessionRefused) as refused:
            self.error = refused
            self._act(self._core.login_refused(str(refused)))
            return
        except LoginError as exc:
            if exc.status_class == 0x02 and not exc.is_not_found:
                self.error = exc  # refused: retrying does not heal it
                self._act(self._core.login_refused(str(exc)))
                return
            # Not found: a restarted target listens before it is configured (tgt). 0x03: busy.
            failure = LoginFailure.BUSY if exc.status_class == 0x03 else LoginFailure.NOT_FOUND
            log.info("reconnecting to %s at %s: %s", self.target_name, self.portal, exc)
        except (ConnectError, ConnectionLost) as unreachable:
            # Refused, or closed during the login: tgt closes it while it has no target
            # configured (restarting), so this is a probe that failed, not a refusal.
            log.debug("reconnecting to %s: %s", self.target_name, unreachable)
            failure = LoginFailure.UNREACHABLE
        except IscsiError as failed:
            log.info("reconnecting to %s at %s: %s", self.target_name, self.portal, failed)
            failure = LoginFailure.OTHER
        self._act(self._core.login_failed(trio.current_time(), failure))

    # -- closing ---------------------------------------------------------------------------------------

    def close_now(self) -> None:
        """Give up at once (unmounting during an outage): nothing is sent."""
        self._act(self._core.close())
        if self.connection is not None and self.connection.alive:
            self.connection.abort(ConnectionLost("closed"))

    async def logout(self) -> None:
        """Log out (or just close, if the connection is down)."""
        if self.state is SessionState.CLOSED:
            return
        self._act(self._core.close())
        if self.connection is not None:
            await self.connection.logout()

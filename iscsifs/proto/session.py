"""The session core: every failure decision of one iSCSI session (an ISID and a TSIH through one
portal, at ErrorRecoveryLevel 0), sans I/O, as tables.

Time is an argument (aioquic's shape): each event is a method that takes ``now`` and returns the
actions the I/O layer must carry out (``net.session`` does, and nothing more); ``timer()`` says
when the core next needs waking and ``handle_timer(now)`` what is due then. Nothing here sleeps,
sends or reads.

What it decides, each in one table below:

- the session's lifecycle (``SESSION_TRANSITIONS``): logged in, draining for a logout the target
  asked for, logging out, recovering (Time2Wait, then a login with the same ISID and TSIH 0: a
  reinstatement, §6.3.5, which makes the target end the old nexus's tasks first), refused for good,
  closed. A pair missing from the table is a bug of ours (``LocalProtocolError``);
- what a target's Asynchronous Message asks (``ASYNC_ACTIONS``, §11.9.1);
- the ladder of a command that gets no answer (``TASK_LADDER``), as the Linux SCSI midlayer's
  error handler climbs it: ABORT TASK after ``command_timeout``; LOGICAL UNIT RESET when the abort
  is refused or unanswered (in ``command_timeout`` again); dropping the connection (and so
  reinstating the session) when the reset is too. Every rung ends the attempt with a
  ``Delivery`` that says how;
- the keepalive: a NOP-Out every ``nop_interval``, the connection dropped without its NOP-In
  within ``nop_timeout``;
- when to log in again: Time2Wait after a loss, a probe every ``probe_interval`` while the portal
  is down, backoff for a target that refuses (busy), giving up on a refusal for good;
- across sessions, for one command (``Attempts``): issued again after an attempt that failed, at
  most ``retries + 1`` sends, and never past ``command_bound`` from its start; an attempt that
  was never sent costs nothing.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from iscsifs.proto.errors import CommandFailed, Delivery, Undelivered
from iscsifs.proto.lifecycle import step
from iscsifs.proto.policy import RecoveryPolicy

# -- actions: what the I/O layer does ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendNop:
    """Send a NOP-Out ping; report its NOP-In with ``nop_answered``."""


@dataclass(frozen=True, slots=True)
class AbortTask:
    """Send ABORT TASK for the task; report the answer with ``task_management_done``."""

    initiator_task_tag: int
    lun: int


@dataclass(frozen=True, slots=True)
class ResetLun:
    """Send LOGICAL UNIT RESET; report the answer with ``task_management_done``."""

    lun: int


@dataclass(frozen=True, slots=True)
class EndTask:
    """The attempt is over: the command's caller gets ``Undelivered(delivery, reason)``, and the
    connection stops expecting an answer (the target no longer has the task, or the connection is
    being dropped)."""

    initiator_task_tag: int
    delivery: Delivery
    reason: str


@dataclass(frozen=True, slots=True)
class DropConnection:
    """Close the connection at once; every task on it is ended by the core (``connection_lost``
    follows from the I/O layer as for any loss)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Drain:
    """Send nothing new on the connection; its outstanding commands finish there."""

    within: float


@dataclass(frozen=True, slots=True)
class Logout:
    """Send a Logout Request (close the session); report the end with ``logged_out``."""


@dataclass(frozen=True, slots=True)
class LogIn:
    """Log in again with the session's ISID and TSIH 0 (a reinstatement); report the outcome
    with ``logged_in``, ``login_failed`` or ``login_refused``."""


@dataclass(frozen=True, slots=True)
class Renegotiate:
    """Answer the target's renegotiation with Text Requests (§6.2)."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The target refused the session for good: commands fail, no more logins."""

    reason: str


Action = SendNop | AbortTask | ResetLun | EndTask | DropConnection | Drain | Logout | LogIn | Renegotiate | GiveUp
NO_ACTIONS: tuple[Action, ...] = ()  # what most events return: no list is built on a command's path


# -- the session's lifecycle -------------------------------------------------------------------------


class SessionState(enum.Enum):
    LOGGED_IN = "logged in"
    DRAINING = "finishing its commands: the target asked for a logout"
    LOGGING_OUT = "logging out"
    RECOVERING = "reconnecting"
    FAILED = "refused for good"
    CLOSED = "closed"


class SessionInput(enum.Enum):
    LOGGED_IN = "a login succeeded"
    LOGIN_FAILED = "a login failed and is tried again"
    LOGIN_REFUSED = "the target refused the login for good"
    CONNECTION_LOST = "its connection was lost"
    LOGOUT_REQUESTED = "the target asked us to log out"
    DRAINED = "its outstanding commands are done, or their time to finish is up"
    LOGGED_OUT = "its logout is over"
    CLOSE = "closed by us"


_S, _I = SessionState, SessionInput
SESSION_TRANSITIONS: dict[tuple[SessionState, SessionInput], SessionState] = {
    (_S.LOGGED_IN, _I.CONNECTION_LOST): _S.RECOVERING,
    (_S.LOGGED_IN, _I.LOGOUT_REQUESTED): _S.DRAINING,
    (_S.DRAINING, _I.LOGOUT_REQUESTED): _S.DRAINING,  # asked again: the first deadline holds
    (_S.DRAINING, _I.DRAINED): _S.LOGGING_OUT,
    (_S.DRAINING, _I.CONNECTION_LOST): _S.RECOVERING,
    (_S.LOGGING_OUT, _I.LOGGED_OUT): _S.RECOVERING,  # then logged in again after Time2Wait
    (_S.LOGGING_OUT, _I.CONNECTION_LOST): _S.LOGGING_OUT,  # tgt closes the socket after its Logout Response
    (_S.LOGGING_OUT, _I.LOGOUT_REQUESTED): _S.LOGGING_OUT,
    (_S.LOGGING_OUT, _I.DRAINED): _S.LOGGING_OUT,  # the drain's deadline, after the last command ended
    (_S.RECOVERING, _I.LOGGED_IN): _S.LOGGED_IN,
    (_S.RECOVERING, _I.LOGIN_FAILED): _S.RECOVERING,
    (_S.RECOVERING, _I.LOGIN_REFUSED): _S.FAILED,
    (_S.RECOVERING, _I.CONNECTION_LOST): _S.RECOVERING,  # the old connection's reader ends late
    (_S.RECOVERING, _I.LOGOUT_REQUESTED): _S.RECOVERING,  # from a connection already given up
    (_S.RECOVERING, _I.DRAINED): _S.RECOVERING,
    (_S.RECOVERING, _I.LOGGED_OUT): _S.RECOVERING,
    (_S.FAILED, _I.CONNECTION_LOST): _S.FAILED,
    (_S.FAILED, _I.LOGGED_OUT): _S.FAILED,
    (_S.FAILED, _I.DRAINED): _S.FAILED,
    **{(state, _I.CLOSE): _S.CLOSED for state in SessionState},
    # Closed by us while something was under way: it ends, and changes nothing (a login that
    # completes now is logged out by the I/O layer).
    **{(_S.CLOSED, event): _S.CLOSED for event in SessionInput},
}


# -- the Asynchronous Messages (§11.9.1) -------------------------------------------------------------


class AsyncAsk(enum.Enum):
    """What an AsyncEvent code asks of the initiator."""

    SCSI_EVENT = 0  # reported like the UNIT ATTENTION it carries: no failure decision
    LOGOUT = 1  # Parameter3: log out within so many seconds
    DROP_CONNECTION = 2  # Parameter2: Time2Wait
    DROP_SESSION = 3  # Parameter2: Time2Wait
    RENEGOTIATE = 4  # the initiator MUST send Text Requests
    NOTHING = 255  # task termination, vendor specific, unknown: logged, nothing else


class AsyncResponse(enum.Enum):
    REPORT = "report it"
    DRAIN_THEN_LOGOUT = "issue nothing more, let the outstanding commands finish, log out"
    LOST = "the connection's tasks are lost now (ErrorRecoveryLevel 0): recover after Time2Wait"
    RENEGOTIATE = "answer with Text Requests"
    IGNORE = "nothing to do"


ASYNC_ACTIONS: dict[AsyncAsk, AsyncResponse] = {
    AsyncAsk.SCSI_EVENT: AsyncResponse.REPORT,
    AsyncAsk.LOGOUT: AsyncResponse.DRAIN_THEN_LOGOUT,
    AsyncAsk.DROP_CONNECTION: AsyncResponse.LOST,
    AsyncAsk.DROP_SESSION: AsyncResponse.LOST,
    AsyncAsk.RENEGOTIATE: AsyncResponse.RENEGOTIATE,
    AsyncAsk.NOTHING: AsyncResponse.IGNORE,
}


# -- the ladder of a command without an answer ------------------------------------------------------


class TaskState(enum.Enum):
    SENT = "sent"
    ABORTING = "ABORT TASK sent"
    RESETTING = "LOGICAL UNIT RESET sent"


class TaskInput(enum.Enum):
    DEADLINE = "its deadline passed"
    TMF_DONE = "the target says the task is gone (FUNCTION COMPLETE or TASK DOES NOT EXIST)"
    TMF_REFUSED = "the task management function was refused or failed"


class Rung(enum.Enum):
    ABORT = "send ABORT TASK"
    RESET = "send LOGICAL UNIT RESET"
    ABORTED = "end the attempt: aborted"
    RESET_DONE = "end the attempt: ended by the reset"
    DROP = "drop the connection: the session is reinstated, which ends the task at the target"


_T, _TI = TaskState, TaskInput
TASK_LADDER: dict[tuple[TaskState, TaskInput], Rung] = {
    (_T.SENT, _TI.DEADLINE): Rung.ABORT,
    (_T.ABORTING, _TI.TMF_DONE): Rung.ABORTED,
    (_T.ABORTING, _TI.TMF_REFUSED): Rung.RESET,
    (_T.ABORTING, _TI.DEADLINE): Rung.RESET,
    (_T.RESETTING, _TI.TMF_DONE): Rung.RESET_DONE,
    (_T.RESETTING, _TI.TMF_REFUSED): Rung.DROP,
    (_T.RESETTING, _TI.DEADLINE): Rung.DROP,
}
# A task management answer for a task that is no longer waiting (it was answered meanwhile, or
# ended by a reset or a drop) changes nothing: (SENT, TMF_*) is not a pair the core ever looks up.


class _Task:
    """An outstanding command, as the core follows it."""

    __slots__ = ("deadline", "expires", "lun", "state")

    def __init__(self, lun: int, deadline: float, expires: float) -> None:
        self.lun = lun  # as the I/O layer names it (the LUN field as sent): only compared, and handed back
        self.deadline = deadline  # of the current rung
        self.expires = expires  # the command's bound, whatever rung it is on
        self.state = TaskState.SENT


# -- login outcomes -------------------------------------------------------------------------------


class LoginFailure(enum.Enum):
    UNREACHABLE = "the portal did not take the connection, or closed it during the login"
    BUSY = "the target is busy or out of resources (0x03xx)"
    NOT_FOUND = "target not found (a restarting target listens before it is configured)"
    OTHER = "the login failed otherwise"


class SessionCore:
    """One session's decisions. Starts RECOVERING with a login due at once (``timer()``), or
    LOGGED_IN when the caller logged in already (``logged_in`` at construction)."""

    def __init__(self, policy: RecoveryPolicy, now: float, *, logged_in: bool = False) -> None:
        self.policy = policy
        self.state = SessionState.RECOVERING
        self.tasks: dict[int, _Task] = {}  # by Initiator Task Tag, in the order sent
        self.error = ""  # why it FAILED
        self.logins = 0
        self.lost_at: float | None = None  # when the session last stopped serving
        self._login_at: float | None = now  # when the next login is due; None while one runs
        self._backoff = policy.probe_interval
        self._time2wait = 2.0  # RFC 7143 DefaultTime2Wait until a login says otherwise
        self._nop_at = math.inf  # the next NOP-Out
        self._nop_deadline = math.inf  # the NOP-In of the one sent
        self._drain_deadline = math.inf
        self._earliest_task = math.inf  # a lower bound of every task's deadline and expiry
        if logged_in:
            self.logged_in(now, 2)

    def __repr__(self) -> str:
        return f"<SessionCore {self.state.name.lower()} tasks={len(self.tasks)}>"

    def _step(self, event: SessionInput) -> SessionState:
        before = self.state
        self.state = step(SESSION_TRANSITIONS, before, event)
        return before

    @property
    def usable(self) -> bool:
        """May new commands go to this session now?"""
        return self.state is SessionState.LOGGED_IN

    # -- logins -------------------------------------------------------------------------------------

    def logged_in(self, now: float, time2wait: int) -> tuple[Action, ...]:
        """A login (the first or a reinstatement) completed; ``time2wait`` is the negotiated
        DefaultTime2Wait, for the next loss."""
        before = self._step(SessionInput.LOGGED_IN)
        if before is SessionState.CLOSED:
            return (Logout(),)  # closed while it logged in: log out of what the login made
        self.logins += 1
        self.lost_at = None
        self._login_at = None
        self._backoff = self.policy.probe_interval
        self._time2wait = float(time2wait)
        self._nop_at = now + self.policy.nop_interval
        self._nop_deadline = math.inf
        return NO_ACTIONS

    def login_failed(self, now: float, failure: LoginFailure) -> tuple[Action, ...]:
        """A login failed in a way that a later one may not: try again, promptly where the portal
        is down, with backoff where the target refuses."""
        if self._step(SessionInput.LOGIN_FAILED) is SessionState.CLOSED:
            return NO_ACTIONS
        delay = self.policy.probe_interval
        if failure in (LoginFailure.BUSY, LoginFailure.OTHER):
            delay = self._backoff
            self._backoff = min(self._backoff * 2, self.policy.max_backoff)
        self._login_at = now + delay
        return NO_ACTIONS

    def login_refused(self, reason: str) -> tuple[Action, ...]:
        """Refused for good (authentication, authorization, another device): no more logins."""
        if self._step(SessionInput.LOGIN_REFUSED) is SessionState.CLOSED:
            return NO_ACTIONS
        self.error = reason
        self._login_at = None
        return (GiveUp(reason),)

    def login_delay(self) -> float:
        """How long the next login waits, from the last loss (for the log line)."""
        return self._time2wait

    # -- commands -----------------------------------------------------------------------------------

    def command_sent(self, initiator_task_tag: int, lun: int, now: float, expires: float) -> float:
        """A command went out; ``expires`` is when its caller's time is up, whatever the ladder
        is doing then. Returns its deadline, so that the I/O layer need not ask ``timer()`` on
        every command's path (no list, no search here either)."""
        deadline = now + self.policy.command_timeout
        self.tasks[initiator_task_tag] = _Task(lun, deadline, expires)
        if deadline < self._earliest_task:
            self._earliest_task = deadline
        return deadline

    def command_ended(self, initiator_task_tag: int) -> tuple[Action, ...]:
        """A command's wait is over (answered, or ended by an action of ours)."""
        if self.tasks.pop(initiator_task_tag, None) is None or self.tasks:
            return NO_ACTIONS
        if self.state is SessionState.DRAINING:
            return self._drained()  # the last one the target let finish
        return NO_ACTIONS

    def task_management_done(self, initiator_task_tag: int | None, lun: int, done: bool,
                             now: float) -> tuple[Action, ...]:
        """The answer to our ABORT TASK (``initiator_task_tag`` of the aborted task) or LOGICAL
        UNIT RESET (None): ``done`` if the target says the task is gone, False if it refused or
        gave no answer in ``command_timeout``."""
        event = TaskInput.TMF_DONE if done else TaskInput.TMF_REFUSED
        if initiator_task_tag is not None:
            task = self.tasks.get(initiator_task_tag)
            if task is None or task.state is not TaskState.ABORTING:
                return NO_ACTIONS  # answered meanwhile, or already further up the ladder
            return tuple(self._climb(initiator_task_tag, task, event, now))
        resetting = [(itt, t) for itt, t in self.tasks.items() if t.lun == lun and t.state is TaskState.RESETTING]
        if not resetting:
            return NO_ACTIONS
        itt, task = resetting[0]
        return tuple(self._climb(itt, task, event, now))  # one answer settles every task it reset

    def _end_lun(self, lun: int) -> list[Action]:
        """A LOGICAL UNIT RESET completed: the target aborted every task of the LUN (SAM-5
        §7.8), not only the ones that were late."""
        ended = [itt for itt, task in self.tasks.items() if task.lun == lun]
        for itt in ended:
            del self.tasks[itt]
        return [EndTask(itt, Delivery.RESET, "ended by a LOGICAL UNIT RESET") for itt in ended]

    def _climb(self, itt: int, task: _Task, event: TaskInput, now: float) -> list[Action]:
        rung = TASK_LADDER[task.state, event]
        timeout = self.policy.command_timeout  # for the answer to each rung, as for the command
        if rung is Rung.ABORT:
            task.state, task.deadline = TaskState.ABORTING, now + timeout
            self._earliest_task = min(self._earliest_task, task.deadline)
            return [AbortTask(itt, task.lun)]
        if rung is Rung.RESET:
            if any(t.state is TaskState.RESETTING and t.lun == task.lun for t in self.tasks.values()):
                task.state, task.deadline = TaskState.RESETTING, now + timeout  # one reset serves both
                return []
            task.state, task.deadline = TaskState.RESETTING, now + timeout
            self._earliest_task = min(self._earliest_task, task.deadline)
            return [ResetLun(task.lun)]
        if rung is Rung.ABORTED:
            del self.tasks[itt]
            return [EndTask(itt, Delivery.ABORTED, f"no answer in {self.policy.command_timeout:g} s; aborted")]
        if rung is Rung.RESET_DONE:
            return self._end_lun(task.lun)
        return [DropConnection("the target answers neither the command nor task management")]

    # -- the connection -----------------------------------------------------------------------------

    def connection_lost(self, now: float, reason: str, time2wait: float | None = None) -> tuple[Action, ...]:
        """The connection failed (EOF, garbage, a digest, the keepalive, a drop we decided): every
        task on it ends, and the session is reinstated after Time2Wait."""
        before = self._step(SessionInput.CONNECTION_LOST)
        ended = self._end_all(Delivery.CONNECTION_DIED, reason)
        if before in (SessionState.LOGGED_IN, SessionState.DRAINING):
            self._down(now, self._time2wait if time2wait is None else time2wait)
        return ended

    def _end_all(self, delivery: Delivery, reason: str) -> tuple[Action, ...]:
        ended = tuple(EndTask(itt, delivery, reason) for itt in self.tasks)
        self.tasks.clear()
        self._earliest_task = math.inf
        return ended

    def _down(self, now: float, time2wait: float) -> None:
        """Stopped serving: log in again after Time2Wait (§6.3.5), at least a second, at most
        ``max_time2wait``."""
        self.lost_at = now if self.lost_at is None else self.lost_at
        self._login_at = now + max(1.0, min(time2wait, self.policy.max_time2wait))
        self._nop_at = self._nop_deadline = self._drain_deadline = math.inf

    def async_event(self, ask: AsyncAsk, parameter: int, now: float) -> tuple[Action, ...]:
        """An Asynchronous Message: ``parameter`` is Parameter3 for a logout (seconds to log out
        within), Parameter2 for a drop (Time2Wait)."""
        response = ASYNC_ACTIONS[ask]
        if response is AsyncResponse.DRAIN_THEN_LOGOUT:
            before = self._step(SessionInput.LOGOUT_REQUESTED)
            if before is not SessionState.LOGGED_IN:
                return NO_ACTIONS
            # Leave a second of the target's time for the logout itself; no pings meanwhile.
            within = max(1.0, float(parameter) - 1.0)
            self._drain_deadline = now + within
            self._nop_at = self._nop_deadline = math.inf
            if not self.tasks:
                return (Drain(within), *self._drained())
            return (Drain(within),)
        if response is AsyncResponse.LOST:
            what = "session" if ask is AsyncAsk.DROP_SESSION else "connection"
            reason = f"the target dropped the {what} (Async Message, Time2Wait {parameter} s)"
            return (DropConnection(reason), *self.connection_lost(now, reason, float(parameter)))
        if response is AsyncResponse.RENEGOTIATE and self.state in (SessionState.LOGGED_IN, SessionState.DRAINING):
            return (Renegotiate(),)
        return NO_ACTIONS  # REPORT is the I/O layer's (a UNIT ATTENTION), IGNORE is nothing

    def _drained(self) -> tuple[Action, ...]:
        self._step(SessionInput.DRAINED)
        self._drain_deadline = math.inf
        return (Logout(),) if self.state is SessionState.LOGGING_OUT else NO_ACTIONS

    def logged_out(self, now: float, time2wait: float | None) -> tuple[Action, ...]:
        """The logout the target asked for is over (answered, refused or lost): tasks still on
        the connection end, and we log in again after Time2Wait (the Logout Response's, else the
        negotiated one)."""
        before = self._step(SessionInput.LOGGED_OUT)
        ended = self._end_all(Delivery.CONNECTION_DIED, "the connection was logged out")
        if before is SessionState.LOGGING_OUT:
            self._down(now, self._time2wait if time2wait is None else time2wait)
        return ended

    def nop_answered(self, now: float) -> None:
        self._nop_deadline = math.inf
        if self.state is SessionState.LOGGED_IN:
            self._nop_at = now + self.policy.nop_interval

    def close(self) -> tuple[Action, ...]:
        """We close it (unmount, the pool): every task ends, nothing more is decided."""
        self._step(SessionInput.CLOSE)
        self._login_at = None
        self._nop_at = self._nop_deadline = self._drain_deadline = math.inf
        return self._end_all(Delivery.CONNECTION_DIED, "the session was closed")

    # -- time ----------------------------------------------------------------------------------------

    def timer(self) -> float:
        """When ``handle_timer`` next has something to do (math.inf: only an event can change that)."""
        login = math.inf if self._login_at is None else self._login_at
        return min(login, self._nop_at, self._nop_deadline, self._drain_deadline, self._earliest_task)

    def handle_timer(self, now: float) -> tuple[Action, ...]:
        actions: list[Action] = []
        if self._login_at is not None and self._login_at <= now and self.state is SessionState.RECOVERING:
            self._login_at = None  # one login at a time: its outcome sets the next
            actions.append(LogIn())
        if self._nop_deadline <= now:
            self._nop_deadline = math.inf
            return (*actions, DropConnection(f"no NOP-In answer within {self.policy.nop_timeout:g} s"))
        if self._nop_at <= now:
            self._nop_at = math.inf  # the next is due once this one is answered
            self._nop_deadline = now + self.policy.nop_timeout
            actions.append(SendNop())
        if self._drain_deadline <= now:
            actions += self._drained()
        if self._earliest_task <= now:
            actions += self._tasks_due(now)
        return tuple(actions)

    def _tasks_due(self, now: float) -> list[Action]:
        actions: list[Action] = []
        earliest = math.inf
        for itt, task in list(self.tasks.items()):
            if task.expires <= now:
                # The caller's time is up. A task the target may still hold is ended there by
                # dropping the connection (the reinstatement ends it), so that it can never land
                # after a later write to the same blocks.
                del self.tasks[itt]
                return [*actions, EndTask(itt, Delivery.EXPIRED, "its time ran out"),
                        DropConnection(f"a command still held by the target is past its time "
                                       f"({self.policy.command_bound:g} s)")]
            if task.deadline <= now:
                actions += self._climb(itt, task, TaskInput.DEADLINE, now)
                if actions and isinstance(actions[-1], DropConnection):
                    return actions
            if itt in self.tasks:
                earliest = min(earliest, task.deadline, task.expires)
        self._earliest_task = earliest
        return actions


# -- one command across attempts ----------------------------------------------------------------------


class Attempts:
    """One command's budget across its attempts, on whatever path (the multipath layer keeps one
    per command that failed once): at most ``retries + 1`` sends, never past ``expires``."""

    __slots__ = ("expires", "history", "retries", "sends", "started", "what")

    def __init__(self, what: str, started: float, policy: RecoveryPolicy) -> None:
        self.what = what
        self.started = started
        self.expires = started + policy.command_bound
        self.retries = policy.retries
        self.sends = 0  # attempts that may have reached the target
        self.history: list[Delivery] = []

    def after(self, failure: Undelivered, now: float) -> None:
        """The attempt ended with ``failure``: return to issue the command again, or raise
        ``CommandFailed`` (EIO) saying what was tried."""
        self.history.append(failure.delivery)
        if failure.delivery is not Delivery.NEVER_SENT:
            self.sends += 1
        if failure.delivery is Delivery.EXPIRED or now >= self.expires or self.sends > self.retries:
            raise CommandFailed(self.summary(now))

    def summary(self, now: float) -> str:
        sent = [d for d in self.history if d is not Delivery.NEVER_SENT]
        counts = {d: sent.count(d) for d in dict.fromkeys(sent)}
        tried = ", ".join(f"{d.value} {n}x" for d, n in counts.items()) or "never sent"
        return (f"{self.what}: no answer after {len(sent)} send{'s' if len(sent) != 1 else ''} in "
                f"{now - self.started:.0f} s ({tried}); giving up (retries={self.retries})")

"""One TCP connection of an iSCSI session in its full feature phase, on trio (logging in is
``net.login``, the TCP connection ``net.dial``). It decides nothing about failures: what a lost
connection, a late command or an Asynchronous Message leads to is the session core's
(``iscsifs.proto.session``), which ``net.session`` drives through the hooks here.

A reader task parses PDUs and hands them to the sans-I/O ``ConnectionCore``; completions wake the
waiter keyed by Initiator Task Tag. PDUs are encoded when they are built (so CmdSN order is wire
order) onto one outgoing queue, and written from it with non-blocking scatter writes
(``os.writev``, no joining): at the end of the loop turn while other commands are in flight
(``net.turnend``: those of every task that ran in the turn in one call), at once when a command
is alone. A 4 KiB command costs no task switch to send, and a writer task only finishes what a
full socket did not take, or fails the connection on what it refused. Its waits are shielded: a half-sent
PDU would corrupt the stream, so cancellation only ever stops the *wait* for a response.
A command waits until it is answered or its session ends its attempt (``end_task``): its
deadline is the session core's, with no cancel scope per command (which cost more than the
command's own codec on the 4 KiB path).

How the TCP connection is made is passed in (``Connect``): ``tcp_connect`` in real life, a socket
pair to an in-memory target in tests. The lifecycle is ``iscsifs.proto.lifecycle``'s table.
"""

from __future__ import annotations

import collections
import logging
import math
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol, TypeVar

import trio

from iscsifs.net.dial import Connect, ConnectError, tcp_connect
from iscsifs.net.login import log_in
from iscsifs.net.outbox import drain
from iscsifs.net.turnend import turn_end
from iscsifs.proto.address import Portal
from iscsifs.proto.connection import (
    AsyncReceived,
    ConnectionCore,
    Event,
    RequestRejected,
    ResponseReceived,
    ScsiResult,
    ScsiTask,
    SendPdus,
    TaskDone,
)
from iscsifs.proto.errors import (
    ConnectionLost,
    Delivery,
    IscsiError,
    RemoteProtocolError,
    Undelivered,
)
from iscsifs.proto.lifecycle import (
    CONNECTION_TRANSITIONS,
    ConnectionInput,
    ConnectionState,
    step,
)
from iscsifs.proto.login import LoginComplete, LoginConfig
from iscsifs.proto.pdu import (
    RESERVED_TAG,
    DataIn,
    DataOutBurst,
    LogoutReason,
    LogoutResponse,
    NopIn,
    Pdu,
    TaskMgmtResponse,
    TextResponse,
    describe,
    encode_burst,
    encode_pdu,
)
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.proto.reader import PduReader, Placement
from iscsifs.proto.text import Negotiation, encode_text, parse_text
from iscsifs.scsi.response import encode_lun

log = logging.getLogger("iscsifs.connection")

_T = TypeVar("_T")
_R = TypeVar("_R", bound=Pdu)
MAX_TEXT_RESPONSE = 1 << 22  # bytes of one Text Response exchange, continuations included

RECEIVE_SIZE = 1 << 18
PLACED_NEXT_RECEIVE = 4096


class TaskWatch(Protocol):
    """Who follows the commands in flight (the session, for its core's deadlines)."""

    def started(self, task: ScsiTask, expires: float) -> None: ...

    def ended(self, task: ScsiTask) -> None: ...


class _Waiter:
    __slots__ = ("error", "event", "pdu")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.pdu: Pdu | None = None
        self.error: IscsiError | None = None


class Connection:
    """A logged-in connection. Create with ``await Connection.open(nursery, portal, config, connect)``."""

    def __init__(self, stream: trio.SocketStream, reader: PduReader, login: LoginComplete, config: LoginConfig,
                 portal: Portal) -> None:
        self.portal = portal
        self.config = config
        self.login = login
        self.params = login.params
        self._stream = stream
        self._sock = stream.socket
        # The socket's descriptor, for the non-blocking direct write; None once closed: a number
        # that might be reused must never be written to.
        self._fd: int | None = self._sock.fileno()
        self._placed_last = False  # the last thing received was a placed Data-In segment
        self._drained = False  # the last receive took less than it asked
        # The socket lent by the reader (parked on ``_resume``) to a command alone in flight,
        # which reads its own answer (``_hold``): see ``_lend``.
        self._lent = False
        self._resume = trio.Event()
        self._holding = False
        self._hold_scope: trio.CancelScope | None = None
        self._hold_itt = RESERVED_TAG  # the holder's command
        self._reader = reader
        self._core = ConnectionCore(login.params, cmd_sn=config.cmd_sn, exp_cmd_sn=login.exp_cmd_sn,
                                 max_cmd_sn=login.max_cmd_sn, exp_stat_sn=(login.stat_sn + 1) & 0xFFFFFFFF)
        self._outgoing: collections.deque[bytes | bytearray | memoryview] = collections.deque()
        self._wake_writer = trio.Event()
        self._turn_end = turn_end()
        self._turn_end.watch(self._fd)  # polled before the loop sleeps, where the mount asks it
        self._held = False  # a send is due at the end of this loop turn
        self._window_changed = trio.Event()
        self._window_waiters = 0
        self._tasks: dict[int, trio.Event] = {}  # by ITT: what a SCSI command waits on
        self._waiters: dict[int, _Waiter] = {}
        self._nursery: trio.Nursery | None = None
        self.state = ConnectionState.FULL_FEATURE
        self._dead: IscsiError | None = None  # why it FAILED
        # Told once when the connection fails (not on a logout we asked for): recovery starts there.
        self.on_failure: Callable[[Connection, BaseException], None] | None = None
        # Told of each Asynchronous Message; without a session, they are only logged.
        self.on_async: Callable[[Connection, AsyncReceived], None] | None = None
        self.watch: TaskWatch | None = None

    def __repr__(self) -> str:
        return (f"<Connection {self.config.target_name or 'discovery'} at {self.portal} tsih={self.login.tsih} "
                f"{self.state.name.lower()} outstanding={self._core.outstanding} window={self._core.window_size}>")

    def _step(self, event: ConnectionInput) -> ConnectionState:
        before = self.state
        self.state = step(CONNECTION_TRANSITIONS, before, event)
        return before

    @property
    def alive(self) -> bool:
        return self.state in (ConnectionState.FULL_FEATURE, ConnectionState.DRAINING, ConnectionState.LOGGING_OUT)

    @property
    def _closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    @property
    def target_name(self) -> str | None:
        return self.config.target_name

    # -- establishing ----------------------------------------------------------------------------

    @classmethod
    async def open(cls, nursery: trio.Nursery, portal: Portal, config: LoginConfig,
                   connect: Connect = tcp_connect) -> Connection:
        """Log in (``net.login``), then run the reader, writer and watchdog tasks in ``nursery``."""
        done = await log_in(portal, config, connect)
        connection = cls(done.stream, done.reader, done.login, done.config, done.portal)
        connection._nursery = nursery
        nursery.start_soon(connection._read_loop)
        nursery.start_soon(connection._write_loop)
        log.debug("logged in: %r params=%s", connection, done.login.params)
        return connection

    @classmethod
    async def open_within(cls, nursery: trio.Nursery, portal: Portal, config: LoginConfig, connect: Connect,
                          login_timeout: float) -> Connection:
        """``open``, given ``login_timeout`` seconds: a portal that takes the TCP connection but
        does not complete a login is a ``ConnectError`` that says so (the portal is not answering)."""
        try:
            with trio.fail_after(login_timeout):
                return await cls.open(nursery, portal, config, connect)
        except trio.TooSlowError:
            raise ConnectError(f"portal {portal} did not complete the login within {login_timeout:g} s "
                               "(login_timeout)") from None

    # -- what the session does through us ------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        return self._core.outstanding

    def drain(self) -> None:
        """Take no new commands (the target asked us to log out); those in flight finish here."""
        self._step(ConnectionInput.LOGOUT_REQUESTED)

    def end_task(self, initiator_task_tag: int, error: IscsiError) -> None:
        """The session ended this command's attempt: its caller gets ``error`` now, and an answer
        that comes later is not expected (the target no longer has the task)."""
        task = self._core.forget(initiator_task_tag)
        if task is not None and not task.done:
            task.error = error
        event = self._tasks.pop(initiator_task_tag, None)
        if event is not None:
            event.set()
        if self._hold_scope is not None and self._hold_itt == initiator_task_tag:
            self._hold_scope.cancel()  # the holder waits on the socket: the event alone would not wake it

    async def renegotiate(self, policy: RecoveryPolicy) -> None:
        """Answer the target's offers (§6.2, §11.10) until it has nothing more to ask; the new
        parameters apply from the next PDU. A failure fails the connection."""
        negotiation = Negotiation(self.config.offer, offered={}, start=self.params)
        replies: list[tuple[str, str]] = []
        try:
            for _ in range(policy.renegotiation_rounds):
                with trio.fail_after(policy.renegotiation_timeout):
                    pairs = await self.text_request(replies)
                replies = negotiation.receive(pairs)
                if not replies:
                    break
            params = negotiation.finish()
        except (IscsiError, trio.TooSlowError) as exc:
            self.fail(RemoteProtocolError(f"renegotiation asked by target {self.target_name} failed: "
                                          f"{exc or 'no answer in time'}"))
            return
        if params != self.params:
            log.info("target %s renegotiated: MaxRecvDataSegmentLength %d -> %d", self.target_name,
                     self.params.max_recv_data_segment_length, params.max_recv_data_segment_length)
            self.params = self._core.params = params

    # -- the reader --------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reader = self._reader
        may_lend = True
        try:
            while True:
                item = reader.next()
                if item is None:
                    if may_lend and self._may_lend():
                        await self._lend()
                        if self._dead is not None or self._closed:
                            return
                        may_lend = False  # woken to read: lending again at once would wake no one
                        continue
                    await self._receive()
                    continue
                may_lend = True
                if isinstance(item, Placement):
                    dest = self._core.data_in_destination(item.header, item.length)
                    if dest is not None:
                        await self._place(item.header, dest)
                        continue
                    item = reader.next_pdu()  # whole, so the core can say what is wrong with it
                    if item is None:
                        await self._receive()
                        continue
                self._received(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, IscsiError) as exc:
            self._reading_failed(exc)
        finally:
            if self._dead is not None:
                self._forget_fd()
                with trio.CancelScope(shield=True):
                    await self._stream.aclose()

    def _received(self, pdu: Pdu) -> None:
        """A whole PDU read (by the reader or a holder): to the core, and its events on."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s <- %s", self.target_name or "discovery", describe(pdu))
        self._dispatch(self._core.receive(pdu))

    def _reading_failed(self, exc: Exception) -> None:
        """Reading the socket (the reader or a holder) ended in ``exc``: the connection fails."""
        if isinstance(exc, IscsiError):
            self.fail(exc)
        else:
            self.fail(ConnectionLost(f"connection to {self.portal} lost: {exc or type(exc).__name__}"))

    def _may_lend(self) -> bool:
        return (self._turn_end.polling and not self._core.outstanding and not self._reader.buffered
                and self._fd is not None and self.state is ConnectionState.FULL_FEATURE)

    async def _lend(self) -> None:
        """Nothing in flight and the loop polling (its sleeps are short): leave the socket to the
        next command alone in flight, which waits on it itself and so runs on as soon as its
        answer is parsed, in the same loop turn, instead of being woken by this task for the
        next. Resumed (``_resume_reader``) when anything else is sent, when the holder leaves
        something for us, when the connection ends, and when the loop would sleep with nobody
        waiting on the socket (``TurnEnd.vacant``): a NOP-In or a close is read then."""
        fd = self._fd
        assert fd is not None
        self._lent = True
        self._resume = trio.Event()
        self._turn_end.vacant(fd, self._fill)
        try:
            await self._resume.wait()
        finally:
            self._lent = False
            self._turn_end.filled(fd)

    def _fill(self) -> bool:
        """From ``TurnEnd``: the loop would sleep with nobody waiting on the lent socket."""
        if self._lent and not self._holding:
            self._resume_reader()
            return True
        return False

    def _resume_reader(self) -> None:
        if self._lent:
            self._lent = False
            if self._fd is not None:
                self._turn_end.filled(self._fd)
            self._resume.set()

    async def _hold(self, itt: int, event: trio.Event) -> None:
        """Read the lent socket in the command's own task until its answer is in (``_lend``)."""
        self._holding = True
        self._hold_itt = itt
        if self._fd is not None:
            self._turn_end.filled(self._fd)
        reader = self._reader
        try:
            with trio.CancelScope() as scope:
                self._hold_scope = scope  # cancelled by end_task, fail and aclose: the event alone would not wake us
                while not event.is_set():
                    item = reader.next()
                    if item is None:
                        await self._receive()
                        continue
                    if isinstance(item, Placement):
                        break  # a segment to place: the reader's job
                    self._received(item)
                    if event.is_set():
                        self._turn_end.own_answers += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, IscsiError) as exc:
            self._reading_failed(exc)
        finally:
            self._holding = False
            self._hold_scope = None
            if self._lent:
                if self._may_lend():
                    assert self._fd is not None  # (``_may_lend`` says so)
                    self._turn_end.vacant(self._fd, self._fill)  # still lent, to the next command
                else:
                    self._resume_reader()
        if not event.is_set():  # Event.wait would yield even then: a loop turn before the caller runs on
            await event.wait()

    async def _receive(self) -> None:
        """More bytes into the reader: received into its buffer, without an intermediate copy."""
        # Right after a placed segment, another Data-In header is likely next: take little
        # more than it, so that its data goes straight to its buffer too, not through ours.
        placed_last, self._placed_last = self._placed_last, False
        size = PLACED_NEXT_RECEIVE if placed_last else RECEIVE_SIZE
        view = self._reader.receive_buffer(size)
        try:
            # The last receive took less than it asked: the socket is likely empty, so wait for it
            # rather than try first (a receive that fails with EAGAIN, then the wait, on most
            # answers at 4 KiB). Otherwise yield once, as trio's own receive would. Right after a
            # placed segment, what came before it says nothing of what follows: try first.
            if self._drained and not placed_last:
                if self._fd is None:
                    raise ConnectionLost("connection closed")
                await self._turn_end.wait_readable(self._fd, self._sock)
            else:
                await trio.lowlevel.checkpoint()
            while True:
                if self._fd is None:
                    raise ConnectionLost("connection closed")
                try:
                    n = os.readv(self._fd, [view])
                    break
                except BlockingIOError:
                    await self._turn_end.wait_readable(self._fd, self._sock)
        finally:
            view.release()
        # After a placed segment we asked for little on purpose: taking less says nothing.
        self._drained = n < size and not placed_last
        self._reader.received(n)
        if not n:
            raise ConnectionLost(f"target {self.portal} closed the connection")

    async def _place(self, header: DataIn, dest: memoryview) -> None:
        """Receive a Data-In's data segment straight into its command's buffer (``dest``).
        Where that is is asked again before every read: if the command stopped waiting meanwhile
        (timeout, cancel: ``ConnectionCore.detach``), the rest goes to its private buffer, never into
        one its caller may already have reused."""
        length = len(dest)
        got = self._reader.start_placing(dest)
        while got < length:
            dest = self._core.data_in_destination(header, length) or memoryview(bytearray(length))
            if self._fd is None:
                raise ConnectionLost("connection closed")
            try:
                n = os.readv(self._fd, [dest[got:]])
            except BlockingIOError:
                await self._turn_end.wait_readable(self._fd, self._sock)
                continue
            if not n:
                raise ConnectionLost(f"target {self.portal} closed the connection")
            self._reader.placing(dest[got : got + n])
            got += n
        self._reader.placed(length)
        self._placed_last = True
        while not self._reader.trailer_done():  # the data digest, before anyone sees the data
            await self._receive()
        pdu = header.with_data(dest)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s <- %s (placed)", self.target_name or "discovery", describe(pdu))
        self._dispatch(self._core.receive_placed(pdu))

    def _dispatch(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, TaskDone):
                event = self._tasks.pop(ev.task.initiator_task_tag, None)
                if event is not None:
                    event.set()
            elif isinstance(ev, SendPdus):
                # Queued, never sent from the reader: a full send buffer must not stop us reading.
                self._queue(ev.pdus)
            elif isinstance(ev, ResponseReceived):
                waiter = self._waiters.pop(ev.initiator_task_tag, None)
                if waiter is not None:
                    waiter.pdu = ev.pdu
                    waiter.event.set()
            elif isinstance(ev, RequestRejected):
                waiter = self._waiters.pop(ev.initiator_task_tag, None)
                if waiter is not None:
                    waiter.error = ev.error
                    waiter.event.set()
            elif isinstance(ev, AsyncReceived):
                if self.on_async is not None:
                    self.on_async(self, ev)
                else:
                    log.info("%s sent an Asynchronous Message: %s", self.target_name or "discovery", ev)
        if self._window_waiters:
            self._window_changed.set()
            self._window_changed = trio.Event()

    def fail(self, error: IscsiError) -> None:
        before = self._step(ConnectionInput.FAIL)
        if before in (ConnectionState.FAILED, ConnectionState.CLOSED):
            return
        self._dead = error
        logging_out = before is ConnectionState.LOGGING_OUT  # the target closes the socket after its answer
        log.log(logging.DEBUG if logging_out else logging.WARNING, "connection to %s at %s failed: %s",
                self.target_name or "discovery", self.portal, error)
        lost = Undelivered(Delivery.CONNECTION_DIED, str(error))
        for itt in list(self._core.tasks):
            task = self._core.forget(itt)
            if task is not None:
                task.error = lost
        for event in self._tasks.values():
            event.set()
        self._tasks.clear()
        for waiter in self._waiters.values():
            waiter.error = error
            waiter.event.set()
        self._waiters.clear()
        self._window_changed.set()
        self._wake_writer.set()
        self._resume_reader()
        if self._hold_scope is not None:
            self._hold_scope.cancel()
        if self.on_failure is not None and not logging_out:
            self.on_failure(self, error)

    def abort(self, error: IscsiError) -> None:
        """Declare the connection dead (keepalive or task management gave up) and close it."""
        self.fail(error)
        if self._nursery is not None:
            self._nursery.start_soon(self._close_stream)

    def _forget_fd(self) -> None:
        """Before the socket is closed: nothing may use its number again (see ``_fd``)."""
        if self._fd is not None:
            self._turn_end.unwatch(self._fd)
            self._turn_end.filled(self._fd)
            self._fd = None

    async def _close_stream(self) -> None:
        self._forget_fd()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    def _check_alive(self, command: bool) -> None:
        """Before anything is queued: a refusal here means the request was never sent. While
        draining, only new SCSI commands are refused: task management, pings and the logout
        still go (§11.9.1 asks only that nothing new is started)."""
        if self._dead is not None:
            raise Undelivered(Delivery.NEVER_SENT, str(self._dead))
        if self._closed:
            raise Undelivered(Delivery.NEVER_SENT, "connection is logged out")
        if command and self.state is ConnectionState.DRAINING:
            raise Undelivered(Delivery.NEVER_SENT, "the target asked us to log out")

    # -- sending -----------------------------------------------------------------------------------

    def _queue(self, pdus: Sequence[Pdu | DataOutBurst]) -> None:
        """Append PDUs to the outgoing stream, in call order (so CmdSN order is wire order) and
        without waiting: written at the end of this loop turn as far as the socket takes them,
        the rest by the writer."""
        hd, dd = self.params.header_digest, self.params.data_digest
        out = self._outgoing
        for pdu in pdus:
            if isinstance(pdu, DataOutBurst):
                if log.isEnabledFor(logging.DEBUG):
                    for one in pdu.pdus():
                        log.debug("%s -> %s", self.target_name or "discovery", describe(one))
                out += encode_burst(pdu, hd, dd)
                continue
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s -> %s", self.target_name or "discovery", describe(pdu))
            out += encode_pdu(pdu, hd, dd)
        if self._held or self._fd is None or self._dead is not None:
            return  # going with what is held already, or never sent
        if self._core.outstanding > 1:
            self._held = True
            self._turn_end.hold(self)
        else:
            # Alone in flight (queue depth 1): at once, so the target starts on it while this
            # turn ends. Held, it paid the rest of the turn in every round trip (0.93x at QD1).
            self._flush()
            if out:
                self._wake_writer.set()

    def send_held(self) -> None:
        """At the end of the loop turn (``TurnEnd``): no task may be woken from here, so what the
        socket did not take, or refused, is left to the writer task, woken through the loop's
        own wake-up. A broken socket then fails its write there, and the connection with it, in
        a task (``fail`` reaches the session, whose errors must not land in trio's system task)."""
        self._held = False
        fd = self._fd
        if fd is None or self._dead is not None:
            return  # closed or failed: what is queued is never sent
        try:
            drain(self._outgoing, lambda batch: os.writev(fd, batch))
        except OSError:
            pass  # kept: the writer's own write meets the error again, and fails the connection
        finally:
            if self._outgoing:
                self._turn_end.wake(self._wake_writer_now)

    def _wake_writer_now(self) -> None:
        self._wake_writer.set()

    def _flush(self) -> None:
        """Write from the head of the outgoing queue what the socket takes now, without waiting."""
        fd = self._fd
        if fd is None:
            return  # closed: what is queued is never sent
        try:
            drain(self._outgoing, lambda batch: os.writev(fd, batch))
        except OSError as exc:
            self._outgoing.clear()
            self.fail(ConnectionLost(f"connection to {self.portal} lost while sending: {exc}"))

    async def _write_loop(self) -> None:
        """Sends what the socket did not take at once. Shielded: a half-sent PDU would corrupt the stream."""
        try:
            while True:
                await self._wake_writer.wait()
                self._wake_writer = trio.Event()
                if self._dead is not None or (self._closed and not self._outgoing):
                    return  # the reader and the writer end together with the connection
                while self._outgoing and self._dead is None:
                    with trio.CancelScope(shield=True):
                        fd = self._fd
                        if fd is None:
                            return
                        self._turn_end.writing(fd, True)
                        try:
                            await trio.lowlevel.wait_writable(self._sock)
                        finally:
                            self._turn_end.writing(fd, False)
                        if self._fd is None:
                            return
                        self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.fail(ConnectionLost(f"connection to {self.portal} lost while sending: {exc or type(exc).__name__}"))

    async def _window_wait(self) -> None:
        self._window_waiters += 1
        try:
            await self._window_changed.wait()
        finally:
            self._window_waiters -= 1

    async def _issue(self, build: Callable[[], tuple[_T, Sequence[Pdu | DataOutBurst]]], command: bool = True) -> _T:
        """Wait for the CmdSN window, then build and queue at once (so CmdSN order = wire order)."""
        while True:
            self._check_alive(command)
            if not self._core.window_open:
                await self._window_wait()
                continue
            item, pdus = build()
            self._queue(pdus)
            return item

    # -- SCSI commands -----------------------------------------------------------------------------

    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | bytearray | memoryview | None = None,
                      expected_in: int = 0, into: bytearray | memoryview | None = None,
                      expires: float = math.inf) -> ScsiResult:
        """Run one SCSI command; returns its result whatever the status (see ``iscsifs.block.lun`` for policy).
        Data read lands in ``into`` if given (at least ``expected_in`` bytes), which is never
        written once this returns. Raises ``Undelivered`` when the attempt ends without an
        answer (never sent, the connection died, or ended by the session: ``end_task``);
        ``expires`` is when the command's time is up, for ``watch``."""
        task = ScsiTask(encode_lun(lun), cdb, expected_in,
                        memoryview(data_out).cast("B") if data_out is not None and len(data_out) else None,
                        buffer=into)
        event = trio.Event()

        def build() -> tuple[ScsiTask, list[Pdu | DataOutBurst]]:
            pdus = self._core.issue(task)
            self._tasks[task.initiator_task_tag] = event
            return task, pdus

        await self._issue(build)
        watch = self.watch
        if watch is not None:
            watch.started(task, expires)
        try:
            if self._lent and not self._holding and self._core.outstanding == 1 \
                    and expected_in < self._reader.place_min:
                await self._hold(task.initiator_task_tag, event)
            else:
                if not self._holding:
                    self._resume_reader()
                await event.wait()
        finally:
            self._tasks.pop(task.initiator_task_tag, None)
            self._core.detach(task)
            if watch is not None:
                watch.ended(task)
        if task.error is not None:
            raise task.error
        if task.result is None:
            raise Undelivered(Delivery.CONNECTION_DIED, "connection closed")
        return task.result

    async def task_management(self, function: int, lun: int, referenced_task_tag: int | None = None) -> int:
        """ABORT TASK (of the task with that tag) or LOGICAL UNIT RESET; returns the Response field
        (§11.6.1)."""
        referenced = None if referenced_task_tag is None else self._core.tasks.get(referenced_task_tag)
        rtt, ref_cmd_sn = (referenced.initiator_task_tag, referenced.cmd_sn) if referenced else (RESERVED_TAG, 0)
        if referenced_task_tag is not None and referenced is None:
            rtt = referenced_task_tag  # answered meanwhile: the target says it does not exist
        resp = await self._roundtrip(
            lambda: self._core.task_management_request(function, encode_lun(lun), rtt, ref_cmd_sn), TaskMgmtResponse)
        return resp.response

    # -- other requests ----------------------------------------------------------------------------

    async def _roundtrip(self, request: Callable[[], Pdu], answer: type[_R]) -> _R:
        """Send what ``request`` builds (once the CmdSN window is open) and wait for its answer."""
        waiter = _Waiter()

        def build() -> tuple[Pdu, list[Pdu | DataOutBurst]]:
            pdu = request()
            self._waiters[pdu.initiator_task_tag] = waiter
            return pdu, [pdu]

        sent = await self._issue(build, command=False)
        if not self._holding:
            self._resume_reader()
        try:
            await waiter.event.wait()
        finally:
            if self._waiters.pop(sent.initiator_task_tag, None) is not None:
                self._core.forget(sent.initiator_task_tag)
        if waiter.error is not None:
            raise waiter.error
        if not isinstance(waiter.pdu, answer):  # the core checked it is the answer this ITT waits for
            raise RemoteProtocolError(f"expected a {answer.__name__}, got {type(waiter.pdu).__name__}")
        return waiter.pdu

    async def text_request(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """A Text Request/Response exchange, following continuations (C bit) to the end."""
        data = encode_text(pairs)
        ttt = RESERVED_TAG
        itt: int | None = None
        received = b""
        while True:
            resp = await self._roundtrip(partial(self._core.text_request, data, ttt, itt), TextResponse)
            itt = resp.initiator_task_tag
            received += bytes(resp.data)
            if len(received) > MAX_TEXT_RESPONSE:
                raise RemoteProtocolError("text response longer than 4 MiB")
            if not resp.cont:
                return parse_text(received)
            ttt, data = resp.target_transfer_tag, b""

    async def ping(self) -> None:
        """NOP-Out with a fresh ITT; returns when the NOP-In answer arrives."""
        await self._roundtrip(self._core.ping, NopIn)

    async def logout(self) -> int | None:
        """Close the session cleanly; quiet if the connection is already gone. Returns the
        Logout Response's Time2Wait, if one came."""
        if not self.alive or self._step(ConnectionInput.LOGOUT) is ConnectionState.LOGGING_OUT:
            await self.aclose()  # gone, or a logout is under way: closing ends it
            return None
        try:
            resp = await self._roundtrip(
                partial(self._core.logout_request, LogoutReason.CLOSE_SESSION, self.config.cid), LogoutResponse)
            if resp.response != 0:
                log.info("target %s answered logout with response %d", self.target_name, resp.response)
            return resp.time2wait
        except IscsiError as exc:
            # Failed while logging out (lost, or the target broke the protocol): closing is all
            # that is left to do, and the session is over either way.
            log.debug("logging out of %s: %s", self.target_name, exc)
            return None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        self._step(ConnectionInput.CLOSE)
        self._resume_reader()
        if self._hold_scope is not None:
            self._hold_scope.cancel()
        self._forget_fd()
        self._wake_writer.set()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()
        for event in self._tasks.values():
            event.set()
        for waiter in self._waiters.values():
            waiter.error = ConnectionLost("connection closed")
            waiter.event.set()

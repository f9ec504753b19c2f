"""One TCP connection of an iSCSI session, on trio: login, then the full feature phase.

A reader task parses PDUs and hands them to the sans-I/O ``ConnectionCore``; completions wake the
waiter keyed by Initiator Task Tag. PDUs are encoded when they are built (so CmdSN order is wire
order) onto one outgoing queue, and written from it at once by the caller with non-blocking
scatter writes (``os.writev``, no joining): a 4 KiB command costs no task switch to send, and a
writer task only finishes what a full socket did not take. Its waits are shielded: a half-sent
PDU would corrupt the stream, so cancellation only ever stops the *wait* for a response.
Command timeouts are checked by one watchdog task, not a cancel scope per command (which cost
more than the command's own codec on the 4 KiB path); other timeouts are the caller's.

How the TCP connection is made is passed in (``Connect``): ``tcp_connect`` in real life, a socket
pair to an in-memory target in tests. The lifecycle is ``iscsifs.proto.lifecycle``'s table.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace

import trio

from iscsifs.net.nursery import fail_after
from iscsifs.net.outbox import drain
from iscsifs.proto.address import Portal, parse_target_address
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
    IscsiError,
    LoginError,
    LoginRedirect,
    RemoteProtocolError,
)
from iscsifs.proto.lifecycle import (
    CONNECTION_TRANSITIONS,
    ConnectionInput,
    ConnectionState,
    step,
)
from iscsifs.proto.login import LoginComplete, LoginConfig, LoginMachine
from iscsifs.proto.pdu import (
    RESERVED_TAG,
    AsyncEvent,
    DataIn,
    DataOutBurst,
    LoginResponse,
    LogoutReason,
    LogoutRequest,
    LogoutResponse,
    NopOut,
    Pdu,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextRequest,
    TextResponse,
    encode_burst,
    encode_pdu,
)
from iscsifs.proto.reader import PduReader, Placement
from iscsifs.proto.text import Negotiation, encode_text, parse_text
from iscsifs.scsi.response import decode_lun, encode_lun
from iscsifs.scsi.sense import Sense, parse_sense

log = logging.getLogger("iscsifs.connection")

RECEIVE_SIZE = 1 << 18
PLACED_NEXT_RECEIVE = 4096
SHA256 = 7  # CHAP_A
MAX_REDIRECTS = 5
RENEGOTIATION_TIMEOUT = 30.0  # seconds for each Text Request of a renegotiation the target asked for


class ConnectError(IscsiError):
    """The portal could not be reached over TCP, or did not answer a login in time."""


class NotIscsiError(ConnectError):
    """Something answered at the portal, but not an iSCSI target (a web server, ssh...)."""


class CommandTimeout(IscsiError):
    """A SCSI command got no answer in time. The task stays known to the session (a late answer
    is not a protocol error) until it is aborted (``task_management``) or the connection dropped."""

    def __init__(self, task: ScsiTask, seconds: float) -> None:
        self.task = task
        super().__init__(f"command timed out after {seconds:.0f} s")


_DESCRIBED = ("initiator_task_tag", "target_transfer_tag", "cmd_sn", "exp_stat_sn", "stat_sn", "exp_cmd_sn",
              "max_cmd_sn", "data_sn", "r2t_sn", "buffer_offset", "desired_data_transfer_length",
              "expected_data_transfer_length", "status", "response", "reason", "async_event")


def describe(pdu: Pdu) -> str:
    """One line per PDU for -d: its kind, the sequence fields it carries, the data length."""
    fields = " ".join(f"{name}={getattr(pdu, name)}" for name in _DESCRIBED if hasattr(pdu, name))
    cdb = f" cdb={pdu.cdb[:16].hex()}" if hasattr(pdu, "cdb") else ""
    return f"{type(pdu).__name__} {fields}{cdb} data={len(pdu.data)}"


class _Pending:
    """A SCSI command waiting for its answer, and when it stops waiting (trio clock)."""

    __slots__ = ("deadline", "event", "expired")

    def __init__(self, deadline: float) -> None:
        self.event = trio.Event()
        self.deadline = deadline
        self.expired = False


class _Waiter:
    __slots__ = ("event", "pdu", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.pdu: Pdu | None = None
        self.error: BaseException | None = None


Connect = Callable[[Portal], Awaitable[trio.SocketStream]]


async def tcp_connect(portal: Portal) -> trio.SocketStream:
    try:
        return await trio.open_tcp_stream(portal.host, portal.port)
    except OSError as exc:
        raise ConnectError(f"cannot connect to portal {portal}: {why_not_connected(exc)}") from None


_CONNECT_ERRNO = {
    errno.ECONNREFUSED: "connection refused (no iSCSI target listens there?)",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.EADDRNOTAVAIL: "address not available",
}


def why_not_connected(exc: OSError) -> str:
    """The cause of a failed TCP connect, in words: trio's "all attempts to connect failed"
    carries each attempt's error in its cause (the first one says it)."""
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    attempts = exc.__cause__.exceptions if isinstance(exc.__cause__, BaseExceptionGroup) else (exc,)
    first = attempts[0]
    if isinstance(first, OSError) and first.errno in _CONNECT_ERRNO:
        return _CONNECT_ERRNO[first.errno]
    if isinstance(first, OSError) and first.strerror:
        return first.strerror.lower()
    return str(first) or type(first).__name__


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
        self._reader = reader
        self._core = ConnectionCore(login.params, cmd_sn=config.cmd_sn, exp_cmd_sn=login.exp_cmd_sn,
                                 max_cmd_sn=login.max_cmd_sn, exp_stat_sn=(login.stat_sn + 1) & 0xFFFFFFFF)
        self._outgoing: collections.deque[bytes | bytearray | memoryview] = collections.deque()
        self._wake_writer = trio.Event()
        self._window_changed = trio.Event()
        self._window_waiters = 0
        self._tasks: dict[int, _Pending] = {}
        self._timed = trio.Event()  # set when a command with a deadline is waiting: wakes the watchdog
        self._waiters: dict[int, _Waiter] = {}
        self._nursery: trio.Nursery | None = None
        self.state = ConnectionState.FULL_FEATURE
        self._dead: BaseException | None = None  # why it FAILED
        # Told of every UNIT ATTENTION and SCSI Async Event (LUN, sense), e.g. by iscsifs.mount.watch.
        self.on_unit_attention: Callable[[int, Sense], None] | None = None
        # Told once when the connection fails (not on a logout we asked for): recovery starts there.
        self.on_failure: Callable[[Connection, BaseException], None] | None = None

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
        for _ in range(MAX_REDIRECTS + 1):
            stream = await connect(portal)
            try:
                reader = PduReader()
                login = await _login(stream, reader, config, portal)
            except LoginRedirect as redirect:
                await stream.aclose()
                portal, _ = parse_target_address(redirect.target_address, portal.port)
                log.info("target %s redirected us to %s", config.target_name or "portal", portal)
                continue
            except LoginError as exc:
                await stream.aclose()
                fallback = tuple(a for a in config.chap_algorithms if a != SHA256)
                if not (exc.is_chap_refusal and exc.chap_algorithm == SHA256 and config.chap_fallback and fallback):
                    raise
                # tgt (1.0.x) takes CHAP_A=7 for SHA-1, so our SHA-256 answer fails (it says 0x0200).
                # Once, on a fresh connection, offer the list without 7; a second refusal is final.
                log.debug("target %s refused our CHAP_A=7 (SHA-256) response; trying %s once (tgt reads 7 as SHA-1)",
                          config.target_name or "portal", ",".join(map(str, fallback)))
                config = replace(config, chap_algorithms=fallback, chap_fallback=False, fell_back=True)
                continue
            except BaseException:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                raise
            if config.fell_back:
                log.info("target %s uses CHAP_A=%s: it refused SHA-256 (tgt reads CHAP_A=7 as SHA-1); "
                         "pin chap_algs= to forbid this", config.target_name or "portal", login.chap_algorithm)
            reader.header_digest = login.params.header_digest
            reader.data_digest = login.params.data_digest
            reader.max_recv_data_segment_length = login.params.our_max_recv_data_segment_length
            connection = cls(stream, reader, login, config, portal)
            connection._nursery = nursery
            nursery.start_soon(connection._read_loop)
            nursery.start_soon(connection._write_loop)
            nursery.start_soon(connection._watchdog)
            log.debug("logged in: %r params=%s", connection, login.params)
            return connection
        raise ConnectError(f"more than {MAX_REDIRECTS} login redirections")

    # -- the reader --------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reader = self._reader
        try:
            while True:
                item = reader.next()
                if item is None:
                    await self._receive()
                    continue
                if isinstance(item, Placement):
                    dest = self._core.data_in_destination(item.header, item.length)
                    if dest is not None:
                        await self._place(item.header, dest)
                        continue
                    item = reader.next_pdu()  # whole, so the core can say what is wrong with it
                    if item is None:
                        await self._receive()
                        continue
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s <- %s", self.target_name or "discovery", describe(item))
                self._dispatch(self._core.receive(item))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionLost(f"connection to {self.portal} lost: {exc or type(exc).__name__}"))
        except IscsiError as exc:
            self._fail(exc)
        finally:
            if self._dead is not None:
                self._fd = None
                with trio.CancelScope(shield=True):
                    await self._stream.aclose()

    async def _receive(self) -> None:
        """More bytes into the reader: received into its buffer, without an intermediate copy."""
        # Right after a placed segment, another Data-In header is likely next: take little
        # more than it, so that its data goes straight to its buffer too, not through ours.
        size = PLACED_NEXT_RECEIVE if self._placed_last else RECEIVE_SIZE
        self._placed_last = False
        view = self._reader.receive_buffer(size)
        try:
            n = await self._sock.recv_into(view)
        finally:
            view.release()
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
                await trio.lowlevel.wait_readable(self._sock)
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
                pending = self._tasks.pop(ev.task.initiator_task_tag, None)
                if pending is not None:
                    pending.event.set()
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
                self._on_async(ev)
        if self._window_waiters:
            self._window_changed.set()
            self._window_changed = trio.Event()

    def _on_async(self, ev: AsyncReceived) -> None:
        m = ev.message
        if m.async_event == AsyncEvent.SCSI_ASYNC_EVENT:
            # §11.9.4: the data segment is SenseLength (2 bytes), then sense data.
            data = bytes(m.data)
            sense = parse_sense(data[2 : 2 + int.from_bytes(data[:2], "big")]) if len(data) >= 2 else None
            log.info("target %s reports a SCSI asynchronous event: %s", self.target_name, sense or "no sense data")
            if sense is not None and self.on_unit_attention is not None:
                self.on_unit_attention(decode_lun(m.lun.to_bytes(8, "big")), sense)
        elif m.async_event == AsyncEvent.LOGOUT_REQUESTED:
            # §11.9.1 event 1: finish what is outstanding, then log out within Parameter3 seconds.
            log.warning("target %s asks us to log out within %d s: finishing %d outstanding command(s) first",
                        self.target_name, m.parameter3, self._core.outstanding)
            assert self._nursery is not None
            self._nursery.start_soon(self._logout_requested, max(1, m.parameter3))
        elif m.async_event in (AsyncEvent.CONNECTION_DROP, AsyncEvent.SESSION_DROP):
            # Events 2 and 3: at ErrorRecoveryLevel 0 the tasks on the connection are lost now.
            what = "connection" if m.async_event == AsyncEvent.CONNECTION_DROP else "session"
            self._fail(ConnectionLost(f"target {self.target_name} dropped the {what} (Async Message, "
                                      f"Time2Wait {m.parameter2} s)"))
        elif m.async_event == AsyncEvent.NEGOTIATION_REQUESTED:
            # Event 4: we MUST start a Text Request on this connection as soon as we can.
            assert self._nursery is not None
            self._nursery.start_soon(self._renegotiate)
        else:
            log.info("target %s sent async event %d", self.target_name, m.async_event)

    async def _logout_requested(self, within: int) -> None:
        self._step(ConnectionInput.LOGOUT_REQUESTED)
        with trio.move_on_after(max(1, within - 1)):
            while self.alive and self._core.outstanding:
                await self._window_wait()
        with trio.move_on_after(5):
            await self.logout()
        if not self._closed:
            await self.aclose()

    async def _renegotiate(self) -> None:
        """Answer the target's offers (§6.2, §11.10) until it has nothing more to ask; only the
        declarations that matter in full feature phase (MaxRecvDataSegmentLength) change anything."""
        negotiation = Negotiation(self.config.offer, offered={}, start=self.params)
        replies: list[tuple[str, str]] = []
        try:
            for _ in range(4):
                with fail_after(RENEGOTIATION_TIMEOUT, "a Text Request"):
                    pairs = await self.text_request(replies)
                replies = negotiation.receive(pairs)
                if not replies:
                    break
            params = negotiation.finish()
        except IscsiError as exc:
            self._fail(RemoteProtocolError(f"renegotiation asked by target {self.target_name} failed: {exc}"))
            return
        if params != self.params:
            log.info("target %s renegotiated: MaxRecvDataSegmentLength %d -> %d", self.target_name,
                     self.params.max_recv_data_segment_length, params.max_recv_data_segment_length)
            self.params = self._core.params = params

    def _fail(self, error: BaseException) -> None:
        before = self._step(ConnectionInput.FAIL)
        if before in (ConnectionState.FAILED, ConnectionState.CLOSED):
            return
        self._dead = error
        logging_out = before is ConnectionState.LOGGING_OUT  # the target closes the socket after its answer
        log.log(logging.DEBUG if logging_out else logging.WARNING, "connection to %s at %s failed: %s",
                self.target_name or "discovery", self.portal, error)
        for itt in list(self._core.tasks):
            task = self._core.forget(itt)
            if task is not None:
                task.error = error
        for pending in self._tasks.values():
            pending.event.set()
        self._tasks.clear()
        for waiter in self._waiters.values():
            waiter.error = error
            waiter.event.set()
        self._waiters.clear()
        self._window_changed.set()
        self._wake_writer.set()
        self._timed.set()
        if self.on_failure is not None and not logging_out:
            self.on_failure(self, error)

    def abort(self, error: IscsiError) -> None:
        """Declare the connection dead (keepalive or task management gave up) and close it."""
        self._fail(error)
        if self._nursery is not None:
            self._nursery.start_soon(self._close_stream)

    async def _close_stream(self) -> None:
        self._fd = None
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    def _check_alive(self) -> None:
        if self._dead is not None:
            raise ConnectionLost(str(self._dead))
        if self._closed:
            raise ConnectionLost("connection is logged out")
        if self.state is ConnectionState.DRAINING:
            raise ConnectionLost("the target asked us to log out")

    # -- sending -----------------------------------------------------------------------------------

    def _queue(self, pdus: list[Pdu | DataOutBurst] | tuple[Pdu | DataOutBurst, ...]) -> None:
        """Append PDUs to the outgoing stream, in call order (so CmdSN order is wire order) and
        without waiting: written at once as far as the socket takes them, the rest by the writer."""
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
        if self._fd is not None and self._dead is None:
            self._flush()
        if out:
            self._wake_writer.set()

    def _flush(self) -> None:
        """Write from the head of the outgoing queue what the socket takes now, without waiting."""
        try:
            drain(self._outgoing, lambda batch: os.writev(self._fd, batch))  # type: ignore[arg-type]
        except OSError as exc:
            self._outgoing.clear()
            self._fail(ConnectionLost(f"connection to {self.portal} lost while sending: {exc}"))

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
                        await trio.lowlevel.wait_writable(self._sock)
                        if self._fd is None:
                            return
                        self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionLost(f"connection to {self.portal} lost while sending: {exc or type(exc).__name__}"))

    async def _watchdog(self) -> None:
        """Ends the wait of every command past its deadline (see ``execute``); sleeps until the
        earliest one, so a steady stream of commands costs it a wake-up per timeout period."""
        while self._dead is None and not self._closed:
            deadlines = [p.deadline for p in self._tasks.values() if not p.expired]
            earliest = min(deadlines, default=math.inf)
            if earliest == math.inf:
                self._timed = trio.Event()
                await self._timed.wait()
                continue
            await trio.sleep_until(earliest)
            now = trio.current_time()
            for pending in list(self._tasks.values()):
                if pending.deadline <= now and not pending.expired:
                    pending.expired = True
                    pending.event.set()

    async def _window_wait(self) -> None:
        self._window_waiters += 1
        try:
            await self._window_changed.wait()
        finally:
            self._window_waiters -= 1

    async def _issue(self, build) -> object:
        """Wait for the CmdSN window, then build and queue at once (so CmdSN order = wire order)."""
        while True:
            self._check_alive()
            if not self._core.window_open:
                await self._window_wait()
                continue
            item, pdus = build()
            self._queue(pdus)
            return item

    # -- SCSI commands -----------------------------------------------------------------------------

    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | bytearray | memoryview | None = None,
                      expected_in: int = 0, into: bytearray | memoryview | None = None,
                      timeout: float | None = None) -> ScsiResult:
        """Run one SCSI command; returns its result whatever the status (see ``iscsifs.block.lun`` for policy).
        Data read lands in ``into`` if given (at least ``expected_in`` bytes), which is never
        written once this returns. Past ``timeout`` seconds raises CommandTimeout (see there)."""
        task = ScsiTask(encode_lun(lun), cdb, expected_in,
                        memoryview(data_out).cast("B") if data_out is not None and len(data_out) else None,
                        buffer=into)
        pending = _Pending(math.inf if timeout is None else trio.current_time() + timeout)

        def build():
            pdus = self._core.issue(task)
            self._tasks[task.initiator_task_tag] = pending
            return task, pdus

        await self._issue(build)
        if timeout is not None and not self._timed.is_set():
            self._timed.set()
        try:
            await pending.event.wait()
        finally:
            self._tasks.pop(task.initiator_task_tag, None)
            self._core.detach(task)
        if task.error is not None:
            raise task.error
        if task.result is None:
            if not pending.expired:
                raise ConnectionLost("connection closed")
            # The task stays known to the core, so a late answer is not a protocol error.
            raise CommandTimeout(task, timeout or 0)
        return task.result

    async def task_management(self, function: int, lun: int, referenced: ScsiTask | None = None) -> int:
        """ABORT TASK (with the task) or LOGICAL UNIT RESET; returns the Response field (§11.6.1)."""
        resp = await self._roundtrip(TaskMgmtRequest, function=function, lun=encode_lun(lun),
                                     referenced_task_tag=referenced.initiator_task_tag if referenced else RESERVED_TAG,
                                     ref_cmd_sn=referenced.cmd_sn if referenced else 0)
        assert isinstance(resp, TaskMgmtResponse)
        return resp.response

    def forget(self, task: ScsiTask) -> None:
        """The target has dropped ``task`` (aborted, or the LUN reset): stop expecting its answer."""
        self._core.forget(task.initiator_task_tag)

    # -- other requests ----------------------------------------------------------------------------

    async def _roundtrip(self, pdu_type: type[Pdu], **fields: object) -> Pdu:
        waiter = _Waiter()

        def build():
            pdu = self._core.request(pdu_type, **fields)
            self._waiters[pdu.initiator_task_tag] = waiter
            return pdu, [pdu]

        sent = await self._issue(build)
        try:
            await waiter.event.wait()
        finally:
            if self._waiters.pop(sent.initiator_task_tag, None) is not None:
                self._core.forget(sent.initiator_task_tag)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.pdu is not None
        return waiter.pdu

    async def text_request(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """A Text Request/Response exchange, following continuations (C bit) to the end."""
        data = encode_text(pairs)
        ttt = RESERVED_TAG
        itt = 0
        received = b""
        while True:
            fields: dict[str, object] = dict(target_transfer_tag=ttt, data=data)
            if itt:
                fields["initiator_task_tag"] = itt
            resp = await self._roundtrip(TextRequest, **fields)
            assert isinstance(resp, TextResponse)
            itt = resp.initiator_task_tag
            received += bytes(resp.data)
            if len(received) > 1 << 22:
                raise RemoteProtocolError("text response longer than 4 MiB")
            if not resp.cont:
                return parse_text(received)
            ttt, data = resp.target_transfer_tag, b""

    async def ping(self) -> None:
        """NOP-Out with a fresh ITT; returns when the NOP-In answer arrives."""
        await self._roundtrip(NopOut, lun=0, target_transfer_tag=RESERVED_TAG)

    async def logout(self) -> None:
        """Close the session cleanly; quiet if the connection is already gone."""
        if not self.alive:
            await self.aclose()
            return
        self._step(ConnectionInput.LOGOUT)
        try:
            resp = await self._roundtrip(LogoutRequest, reason=LogoutReason.CLOSE_SESSION, cid=self.config.cid)
            assert isinstance(resp, LogoutResponse)
            if resp.response != 0:
                log.info("target %s answered logout with response %d", self.target_name, resp.response)
        except IscsiError as exc:
            # Failed while logging out (lost, or the target broke the protocol): closing is all
            # that is left to do, and the session is over either way.
            log.debug("logging out of %s: %s", self.target_name, exc)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        self._step(ConnectionInput.CLOSE)
        self._fd = None
        self._wake_writer.set()
        self._timed.set()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()
        for pending in self._tasks.values():
            pending.event.set()
        for waiter in self._waiters.values():
            waiter.error = ConnectionLost("connection closed")
            waiter.event.set()


async def _login(stream: trio.SocketStream, reader: PduReader, config: LoginConfig, portal: Portal) -> LoginComplete:
    machine = LoginMachine(config)
    request = machine.start()
    first = True
    while True:
        log.debug("%s -> %s", config.target_name or "discovery", describe(request))
        await stream.send_all(b"".join(encode_pdu(request)))
        try:
            response = await _read_one(stream, reader)
        except (RemoteProtocolError, ConnectionLost) as exc:
            # The first answer is not an iSCSI PDU (or bytes that end before one): what listens
            # there is something else, and saying so is more use than "unexpected opcode 0x08".
            if first and (isinstance(exc, RemoteProtocolError) or reader.buffered):
                raise NotIscsiError(f"{portal} answered, but is not an iSCSI target ({exc})") from None
            raise
        log.debug("%s <- %s", config.target_name or "discovery", describe(response))
        if not isinstance(response, LoginResponse):
            if first:
                raise NotIscsiError(f"{portal} answered, but is not an iSCSI target "
                                    f"(a {type(response).__name__} instead of a Login Response)")
            raise RemoteProtocolError(f"expected a Login Response, got {type(response).__name__}")
        first = False
        result = machine.receive(response)
        if isinstance(result, LoginComplete):
            return result
        request = result


async def _read_one(stream: trio.SocketStream, reader: PduReader) -> Pdu:
    while True:
        pdu = reader.next_pdu()
        if pdu is not None:
            return pdu
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, OSError) as exc:
            raise ConnectionLost(f"connection lost during login: {exc}") from None
        if not data:
            raise ConnectionLost("target closed the connection during login")
        reader.feed(data)

"""Full-feature phase of one connection, sans I/O (RFC 7143 §4.2, §11).

``ConnectionCore`` keeps the sequence numbers (CmdSN window, ExpStatSN), the outstanding tasks keyed
by Initiator Task Tag, plans unsolicited and solicited Data-Out, and reassembles Data-In.
``receive(pdu)`` returns events for the I/O layer; nothing here blocks or sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iscsifs.proto.errors import LocalProtocolError, RejectedError, RemoteProtocolError
from iscsifs.proto.pdu import (
    R2T,
    RESERVED_TAG,
    AsyncEvent,
    AsyncMessage,
    DataIn,
    DataOutBurst,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Pdu,
    Reject,
    ScsiCommand,
    ScsiResponse,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextRequest,
    TextResponse,
)
from iscsifs.proto.text import OperationalParams

SN_MASK = 0xFFFFFFFF


def sn_lt(a: int, b: int) -> bool:
    """Serial number arithmetic (RFC 1982, 32 bits), as §4.2.2.1 requires for CmdSN."""
    return a != b and ((b - a) & SN_MASK) < 0x80000000


def sn_le(a: int, b: int) -> bool:
    return a == b or sn_lt(a, b)


@dataclass(slots=True)
class ScsiResult:
    """The outcome of one SCSI command: status byte, sense, and the data read (if any)."""

    status: int
    sense: bytes = b""
    data: bytes | bytearray | memoryview = b""
    residual: int = 0
    response: int = 0  # iSCSI Response: 0 = command completed at target


@dataclass(slots=True, eq=False)
class ScsiTask:
    lun: int
    cdb: bytes
    expected_in: int = 0
    data_out: memoryview | None = None
    initiator_task_tag: int = RESERVED_TAG
    cmd_sn: int = 0
    buffer: bytearray | memoryview | None = None  # Data-In lands here; the caller's, or allocated by issue()
    next_data_sn: int = 0
    next_r2t_sn: int = 0
    received: int = 0
    result: ScsiResult | None = None
    error: Exception | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


@dataclass(frozen=True, slots=True)
class TaskDone:
    task: ScsiTask


@dataclass(frozen=True, slots=True)
class SendPdus:
    """PDUs the I/O layer must send (Data-Out for an R2T, a NOP-Out answer)."""

    pdus: tuple[Pdu | DataOutBurst, ...]


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The answer to a non-SCSI request (Text, Task Management, Logout, NOP-Out ping)."""

    initiator_task_tag: int
    pdu: Pdu


# What an Asynchronous Message (RFC 7143 §11.9) asks of the initiator, by AsyncEvent code. The
# policy (what the connection then does) is the I/O layer's: ``iscsifs.net.async_events``.


@dataclass(frozen=True, slots=True)
class ScsiEventReported:
    """AsyncEvent 0: a SCSI asynchronous event; ``sense`` is the sense data (its SenseLength
    prefix taken off, §11.9.4), for the LUN field's LUN."""

    lun: int  # the 64-bit LUN field, as sent
    sense: bytes


@dataclass(frozen=True, slots=True)
class LogoutRequested:
    """AsyncEvent 1: finish what is outstanding, then log out within ``within`` seconds (Parameter3)."""

    within: int


@dataclass(frozen=True, slots=True)
class DropAnnounced:
    """AsyncEvent 2 or 3: the target drops the connection, or the whole session."""

    session: bool  # the session (3), not only the connection (2)
    time2wait: int  # Parameter2


@dataclass(frozen=True, slots=True)
class NegotiationRequested:
    """AsyncEvent 4: the initiator MUST start a Text Request negotiation on this connection."""


@dataclass(frozen=True, slots=True)
class OtherAsyncEvent:
    """An AsyncEvent with nothing for us to do (task termination, vendor specific, unknown)."""

    code: int


AsyncReceived = ScsiEventReported | LogoutRequested | DropAnnounced | NegotiationRequested | OtherAsyncEvent


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """A Reject for a non-SCSI request we are waiting on."""

    initiator_task_tag: int
    error: RejectedError


Event = TaskDone | SendPdus | ResponseReceived | AsyncReceived | RequestRejected


def _async_event(pdu: AsyncMessage) -> AsyncReceived:
    code = pdu.async_event
    if code == AsyncEvent.SCSI_ASYNC_EVENT:
        data = bytes(pdu.data)
        length = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
        return ScsiEventReported(pdu.lun, data[2 : 2 + length])
    if code == AsyncEvent.LOGOUT_REQUESTED:
        return LogoutRequested(pdu.parameter3)
    if code in (AsyncEvent.CONNECTION_DROP, AsyncEvent.SESSION_DROP):
        return DropAnnounced(code == AsyncEvent.SESSION_DROP, pdu.parameter2)
    if code == AsyncEvent.NEGOTIATION_REQUESTED:
        return NegotiationRequested()
    return OtherAsyncEvent(code)


@dataclass
class ConnectionCore:
    params: OperationalParams
    cmd_sn: int
    exp_cmd_sn: int
    max_cmd_sn: int
    exp_stat_sn: int
    tasks: dict[int, ScsiTask] = field(default_factory=dict)
    requests: dict[int, type[Pdu]] = field(default_factory=dict)  # ITT -> expected response class
    _next_itt: int = 1

    # -- sequence numbers ------------------------------------------------------------------------

    @property
    def window_open(self) -> bool:
        """May a non-immediate command be sent now? (§4.2.2.1: CmdSN <= MaxCmdSN)"""
        return sn_le(self.cmd_sn, self.max_cmd_sn)

    @property
    def window_size(self) -> int:
        if not sn_le(self.exp_cmd_sn, (self.max_cmd_sn + 1) & SN_MASK):
            return 0
        return (self.max_cmd_sn - self.exp_cmd_sn + 1) & SN_MASK

    def _update_window(self, exp_cmd_sn: int, max_cmd_sn: int) -> None:
        # §4.2.2.1: values with MaxCmdSN < ExpCmdSN - 1 are ignored; the window never moves back.
        if sn_lt(max_cmd_sn, (exp_cmd_sn - 1) & SN_MASK):
            return
        if sn_lt(self.exp_cmd_sn, exp_cmd_sn):
            self.exp_cmd_sn = exp_cmd_sn
        if sn_lt(self.max_cmd_sn, max_cmd_sn):
            self.max_cmd_sn = max_cmd_sn

    def _update_stat_sn(self, stat_sn: int) -> None:
        nxt = (stat_sn + 1) & SN_MASK
        if sn_lt(self.exp_stat_sn, nxt):
            self.exp_stat_sn = nxt

    def _take_cmd_sn(self, immediate: bool) -> int:
        sn = self.cmd_sn
        if not immediate:
            if not self.window_open:
                raise LocalProtocolError("CmdSN window is closed")
            self.cmd_sn = (sn + 1) & SN_MASK
        return sn

    def new_itt(self) -> int:
        for _ in range(1 << 16):
            itt = self._next_itt
            self._next_itt = (itt + 1) & SN_MASK
            if self._next_itt == RESERVED_TAG:
                self._next_itt = 1
            if itt != RESERVED_TAG and itt not in self.tasks and itt not in self.requests:
                return itt
        raise LocalProtocolError("no free Initiator Task Tag")

    @property
    def outstanding(self) -> int:
        return len(self.tasks) + len(self.requests)

    # -- building requests -----------------------------------------------------------------------

    def issue(self, task: ScsiTask) -> list[Pdu | DataOutBurst]:
        """Assign ITT and CmdSN to ``task``; return its SCSI Command and any unsolicited Data-Out."""
        p = self.params
        task.initiator_task_tag = self.new_itt()
        task.cmd_sn = self._take_cmd_sn(immediate=False)
        out = task.data_out
        total_out = len(out) if out is not None else 0
        immediate: bytes | memoryview = b""
        unsolicited_end = 0
        if out is not None and total_out:
            limit = min(total_out, p.first_burst_length)
            if p.immediate_data:
                immediate = out[: min(limit, p.max_recv_data_segment_length)]
            unsolicited_end = len(immediate) if p.initial_r2t else limit
        if task.expected_in and (task.buffer is None or len(task.buffer) < task.expected_in):
            task.buffer = bytearray(task.expected_in)
        self.tasks[task.initiator_task_tag] = task
        data_out = self._data_out(task, RESERVED_TAG, len(immediate), unsolicited_end - len(immediate))
        cmd = ScsiCommand(
            lun=task.lun, initiator_task_tag=task.initiator_task_tag,
            expected_data_transfer_length=total_out or task.expected_in, cmd_sn=task.cmd_sn,
            exp_stat_sn=self.exp_stat_sn, cdb=task.cdb, read=bool(task.expected_in), write=bool(total_out),
            final=not data_out, data=immediate)
        return [cmd, *data_out]

    def _data_out(self, task: ScsiTask, ttt: int, offset: int, length: int) -> list[DataOutBurst]:
        if not length or task.data_out is None:
            return []
        return [DataOutBurst(task.lun, task.initiator_task_tag, ttt, self.exp_stat_sn, task.data_out, offset, length,
                             self.params.max_recv_data_segment_length)]

    # Non-SCSI requests (§11.5, 11.10, 11.14, 11.18), each with a fresh ITT (a Text Request that
    # continues an exchange keeps its own) and the answer it waits for.

    def text_request(self, data: bytes, target_transfer_tag: int, itt: int | None = None) -> TextRequest:
        itt = itt or self._expect(TextResponse)
        return TextRequest(itt, target_transfer_tag, self._take_cmd_sn(immediate=False), self.exp_stat_sn,
                           data=data)

    def task_management_request(self, function: int, lun: int, referenced_task_tag: int,
                                ref_cmd_sn: int) -> TaskMgmtRequest:
        return TaskMgmtRequest(function, lun, self._expect(TaskMgmtResponse), referenced_task_tag,
                               self._take_cmd_sn(immediate=True), self.exp_stat_sn, ref_cmd_sn=ref_cmd_sn)

    def logout_request(self, reason: int, cid: int) -> LogoutRequest:
        return LogoutRequest(self._expect(LogoutResponse), self._take_cmd_sn(immediate=True), self.exp_stat_sn,
                             reason=reason, cid=cid)

    def ping(self) -> NopOut:
        """A NOP-Out that asks for a NOP-In (§11.18: ITT set, TTT reserved)."""
        return NopOut(0, self._expect(NopIn), RESERVED_TAG, self._take_cmd_sn(immediate=True), self.exp_stat_sn)

    def _expect(self, response_type: type[Pdu]) -> int:
        itt = self.new_itt()
        self.requests[itt] = response_type
        return itt

    def detach(self, task: ScsiTask) -> None:
        """The caller stops waiting for ``task`` but it stays known (timed out, cancelled): any
        late Data-In goes to a private buffer, never to one the caller has since reused."""
        if task.buffer is not None and not task.done:
            task.buffer = bytearray(task.expected_in)

    def forget(self, itt: int) -> ScsiTask | None:
        """Stop tracking a task or request (it timed out or was cancelled locally)."""
        self.requests.pop(itt, None)
        return self.tasks.pop(itt, None)

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, pdu: Pdu) -> list[Event]:
        handler = _HANDLERS.get(type(pdu))
        if handler is None:
            raise RemoteProtocolError(f"unexpected {type(pdu).__name__} in full feature phase")
        return handler(self, pdu)

    def _task(self, itt: int, what: str) -> ScsiTask:
        task = self.tasks.get(itt)
        if task is None:
            raise RemoteProtocolError(f"{what} for unknown Initiator Task Tag 0x{itt:08x}")
        return task

    def _on_scsi_response(self, pdu: ScsiResponse) -> list[Event]:
        self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
        self._update_stat_sn(pdu.stat_sn)
        task = self._task(pdu.initiator_task_tag, "SCSI Response")
        del self.tasks[pdu.initiator_task_tag]
        sense = b""
        if len(pdu.data) >= 2:
            sense_len = int.from_bytes(pdu.data[:2], "big")
            if sense_len > len(pdu.data) - 2:
                raise RemoteProtocolError("SenseLength exceeds the data segment")
            sense = bytes(pdu.data[2 : 2 + sense_len])
        task.result = ScsiResult(pdu.status, sense, self._read_data(task, pdu.residual_count if pdu.underflow else 0),
                                 pdu.residual_count, pdu.response)
        return [TaskDone(task)]

    def _read_data(self, task: ScsiTask, residual: int) -> bytes | bytearray | memoryview:
        if task.buffer is None:
            return b""
        # Trust the bytes actually placed, bounded by what the residual says was transferred.
        length = min(task.received, max(0, task.expected_in - residual))
        return memoryview(task.buffer)[:length]

    def data_in_destination(self, pdu: DataIn, length: int) -> memoryview | None:
        """Where the ``length`` data bytes of ``pdu`` (a ``Placement`` from ``PduReader.next``)
        belong in their command's read buffer; None if nowhere (``receive`` will say why)."""
        task = self.tasks.get(pdu.initiator_task_tag)
        if task is None or task.buffer is None or pdu.buffer_offset + length > task.expected_in:
            return None
        return memoryview(task.buffer)[pdu.buffer_offset : pdu.buffer_offset + length]

    def receive_placed(self, pdu: DataIn) -> list[Event]:
        """A Data-In whose data (``pdu.data``) was received straight into ``data_in_destination``."""
        return self._on_data_in(pdu, placed=True)

    def _on_data_in(self, pdu: DataIn, placed: bool = False) -> list[Event]:
        self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
        task = self._task(pdu.initiator_task_tag, "Data-In")
        if task.buffer is None:
            raise RemoteProtocolError("Data-In for a command that reads nothing")
        if pdu.data_sn != task.next_data_sn:
            raise RemoteProtocolError(f"Data-In DataSN {pdu.data_sn}, expected {task.next_data_sn}")
        n = len(pdu.data)
        if pdu.buffer_offset + n > task.expected_in:
            raise RemoteProtocolError("Data-In beyond the Expected Data Transfer Length")
        if self.params.data_pdu_in_order and pdu.buffer_offset != task.received:
            raise RemoteProtocolError(f"Data-In at offset {pdu.buffer_offset}, expected {task.received}")
        # No MaxBurstLength check on a Data-In sequence (§13.13): tgt 1.0.85 sends a whole 1 MiB
        # read as one Data-In of our MaxRecvDataSegmentLength past its 262144. The command's
        # buffer bounds it, and the PDU reader bounds each segment.
        if not placed:
            task.buffer[pdu.buffer_offset : pdu.buffer_offset + n] = pdu.data
        task.next_data_sn += 1
        task.received = max(task.received, pdu.buffer_offset + n)
        if not pdu.has_status:
            return []
        if not pdu.final:
            raise RemoteProtocolError("Data-In with status but without the F bit")
        self._update_stat_sn(pdu.stat_sn)
        del self.tasks[pdu.initiator_task_tag]
        residual = pdu.residual_count if pdu.underflow else 0
        task.result = ScsiResult(pdu.status, b"", self._read_data(task, residual), pdu.residual_count)
        return [TaskDone(task)]

    def _on_r2t(self, pdu: R2T) -> list[Event]:
        self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
        task = self._task(pdu.initiator_task_tag, "R2T")
        if task.data_out is None:
            raise RemoteProtocolError("R2T for a command that writes nothing")
        if pdu.r2t_sn != task.next_r2t_sn:
            raise RemoteProtocolError(f"R2TSN {pdu.r2t_sn}, expected {task.next_r2t_sn}")
        length = pdu.desired_data_transfer_length
        if length == 0 or length > self.params.max_burst_length:
            raise RemoteProtocolError(f"R2T asks for {length} bytes (MaxBurstLength {self.params.max_burst_length})")
        if pdu.buffer_offset + length > len(task.data_out):
            raise RemoteProtocolError("R2T beyond the Expected Data Transfer Length")
        if pdu.target_transfer_tag == RESERVED_TAG:
            raise RemoteProtocolError("R2T with the reserved Target Transfer Tag")
        task.next_r2t_sn += 1
        return [SendPdus(tuple(self._data_out(task, pdu.target_transfer_tag, pdu.buffer_offset, length)))]

    def _on_nop_in(self, pdu: NopIn) -> list[Event]:
        self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
        events: list[Event] = []
        if pdu.initiator_task_tag != RESERVED_TAG:
            # The answer to our ping: it carries a real StatSN.
            if self.requests.pop(pdu.initiator_task_tag, None) is not NopIn:
                raise RemoteProtocolError("NOP-In for a ping we did not send")
            self._update_stat_sn(pdu.stat_sn)
            events.append(ResponseReceived(pdu.initiator_task_tag, pdu))
        elif pdu.target_transfer_tag != RESERVED_TAG:
            # §11.19: the target pings us; answer with its TTT, CmdSN not advanced.
            events.append(SendPdus((NopOut(lun=pdu.lun, initiator_task_tag=RESERVED_TAG,
                                           target_transfer_tag=pdu.target_transfer_tag, cmd_sn=self.cmd_sn,
                                           exp_stat_sn=self.exp_stat_sn, immediate=True),)))
        # An unsolicited NOP-In with both tags reserved only opens the window (StatSN not advanced).
        return events

    def _on_response(self, pdu: TextResponse | TaskMgmtResponse | LogoutResponse) -> list[Event]:
        self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
        self._update_stat_sn(pdu.stat_sn)
        if self.requests.get(pdu.initiator_task_tag) is not type(pdu):
            raise RemoteProtocolError(f"{type(pdu).__name__} for a request we did not send")
        if not (isinstance(pdu, TextResponse) and pdu.cont):
            del self.requests[pdu.initiator_task_tag]
        return [ResponseReceived(pdu.initiator_task_tag, pdu)]

    def _on_async(self, pdu: AsyncMessage) -> list[Event]:
        self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
        self._update_stat_sn(pdu.stat_sn)
        return [_async_event(pdu)]

    def _on_reject(self, pdu: Reject) -> list[Event]:
        self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
        self._update_stat_sn(pdu.stat_sn)
        rejected = pdu.rejected_header
        itt = getattr(rejected, "initiator_task_tag", RESERVED_TAG)
        error = RejectedError(pdu.reason)
        if itt in self.tasks:
            # ERL 0: a rejected command or Data-Out will never complete; fail it now.
            task = self.tasks.pop(itt)
            task.error = error
            return [TaskDone(task)]
        if itt in self.requests:
            del self.requests[itt]
            return [RequestRejected(itt, error)]
        raise RemoteProtocolError(str(error))

    def _on_login_response(self, pdu: LoginResponse) -> list[Event]:
        raise RemoteProtocolError("Login Response in full feature phase")


# Any: each handler takes its own PDU class, which the dict's key guarantees.
_HANDLERS: dict[type[Pdu], Callable[[ConnectionCore, Any], list[Event]]] = {
    ScsiResponse: ConnectionCore._on_scsi_response,
    DataIn: ConnectionCore._on_data_in,
    R2T: ConnectionCore._on_r2t,
    NopIn: ConnectionCore._on_nop_in,
    TextResponse: ConnectionCore._on_response,
    TaskMgmtResponse: ConnectionCore._on_response,
    LogoutResponse: ConnectionCore._on_response,
    AsyncMessage: ConnectionCore._on_async,
    Reject: ConnectionCore._on_reject,
    LoginResponse: ConnectionCore._on_login_response,
}

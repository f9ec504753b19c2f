"""Requests to one session worker and their answers, matched by frame tag: a command's frame (its
data inline or in the shared arena), a call's, and what comes back (``net.ipc``). When the worker
dies, what it had not answered is decided here: a call is sent again to its successor; a command
is sent again within its budget (``proto.session.Attempts``: the worker's death is a connection
that died under it), or fails with EIO once its sends or its time are used up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import outcome
import trio

from iscsifs.net.api import DataOut, Into, LunForgotten
from iscsifs.net.arena import Arena
from iscsifs.net.channel import Parts
from iscsifs.net.ipc import (
    INLINE,
    RESULT,
    Call,
    Event,
    Kind,
    event_from,
    exec_frame,
    pickled,
    rebuild_error,
    unpickle,
)
from iscsifs.net.session import describe_command
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import Delivery, IscsiError, Undelivered
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.proto.session import Attempts

INLINE_MAX = 64 << 10  # larger write data goes through the arena (one copy, no socket)


@dataclass(slots=True, eq=False)
class _Pending:
    frame: Parts
    task: trio.lowlevel.Task | None = None
    into: bytearray | memoryview | None = None
    shared: bool = False  # the worker reads or writes arena memory of ours until it answers
    slot: memoryview | None = None  # an arena slot we took for its data-out
    command: _Command | None = None  # what a command's budget needs, should its worker die (None: a call)
    attempts: Attempts | None = None  # its budget, from the first worker that died under it


@dataclass(slots=True, frozen=True)
class _Command:
    started: float
    lun: int
    cdb: bytes
    target: str
    policy: RecoveryPolicy
    sid: int = 0
    forgotten: int = 0  # how many times its LUN had been forgotten when it was issued


class Exchange:
    """The requests in flight to one worker; ``send`` puts a frame on its channel."""

    def __init__(self, arena: Arena, next_tag: Callable[[], int], send: Callable[[Parts], None],
                 on_event: Callable[[Event], None]) -> None:
        self._arena = arena
        self._next_tag = next_tag
        self._send = send
        self._on_event = on_event
        self.pending: dict[int, _Pending] = {}
        self._closed: IscsiError | None = None  # the worker is gone for good: every request fails so

    def __len__(self) -> int:
        return len(self.pending)

    async def execute(self, sid: int, lun: int, cdb: bytes, data_out: DataOut | None, expected_in: int,
                      into: Into | None, policy: RecoveryPolicy, target: str, forgotten: int = 0) -> ScsiResult:
        arena = self._arena
        tag = self._next_tag()
        pending = _Pending([], into=into, command=_Command(trio.current_time(), lun, cdb, target, policy, sid,
                                                          forgotten))
        if data_out is not None and len(data_out):
            n = len(data_out)
            offset = arena.offset_of(data_out)
            if offset is None and n > INLINE_MAX:
                pending.slot = arena.take(n)
                if pending.slot is not None:
                    pending.slot[:n] = data_out
                    offset = arena.offset_of(pending.slot)
            pending.shared = offset is not None
            pending.frame = exec_frame(tag, sid, lun, cdb, 0, n, INLINE if offset is None else offset,
                                       data_out if offset is None else None)
        else:
            offset = arena.offset_of(into) if expected_in and into is not None and len(into) >= expected_in else None
            pending.shared = offset is not None
            pending.frame = exec_frame(tag, sid, lun, cdb, expected_in, 0, INLINE if offset is None else offset, None)
        result = await self._wait(tag, pending)
        assert isinstance(result, ScsiResult)  # what _result reschedules an EXEC's caller with
        return result

    async def call(self, call: Call) -> None:
        """Run ``call`` in the worker and wait for it; its error is raised here."""
        tag = self._next_tag()
        await self._wait(tag, _Pending(pickled(Kind.CALL, tag, call)))

    async def _wait(self, tag: int, pending: _Pending) -> object:
        if self._closed is not None:
            raise self._closed
        pending.task = trio.lowlevel.current_task()
        self.pending[tag] = pending
        self._send(pending.frame)

        def abort(_: object) -> trio.lowlevel.Abort:
            if pending.shared:
                # The worker may still write into (or read from) our arena memory: the caller may
                # reuse it only after the answer, which the worker's own timeouts bound.
                return trio.lowlevel.Abort.FAILED
            self.pending.pop(tag, None)
            return trio.lowlevel.Abort.SUCCEEDED

        answer: object = await trio.lowlevel.wait_task_rescheduled(abort)
        return answer

    def _finish(self, tag: int, result: outcome.Value[object] | outcome.Error) -> None:
        pending = self.pending.pop(tag, None)
        if pending is None:
            return  # its caller was cancelled
        if pending.slot is not None:
            self._arena.give(pending.slot)
        assert pending.task is not None
        trio.lowlevel.reschedule(pending.task, result)

    # -- frames from the worker --------------------------------------------------------------------

    def dispatch(self, kind: int, tag: int, payload: memoryview) -> None:
        if kind == Kind.RESULT:
            self._result(tag, payload)
        elif kind == Kind.REPLY:
            self._finish(tag, outcome.Value(unpickle(payload)))
        elif kind == Kind.FAILED:
            self._finish(tag, outcome.Error(rebuild_error(payload)))
        elif kind == Kind.EVENT:
            self._on_event(event_from(payload))

    def _result(self, tag: int, payload: memoryview) -> None:
        pending = self.pending.get(tag)
        if pending is None:
            return
        status, response, sense_len, data_len, residual, offset = RESULT.unpack_from(payload)
        sense = bytes(payload[RESULT.size : RESULT.size + sense_len])
        into = pending.into
        if offset != INLINE:
            assert into is not None  # execute gave the worker an arena offset only along with a buffer
            data: bytes | bytearray | memoryview = memoryview(into)[:data_len]
        else:
            inline = payload[RESULT.size + sense_len : RESULT.size + sense_len + data_len]
            if into is not None and len(into) >= data_len:
                into[:data_len] = inline
                data = memoryview(into)[:data_len]
            else:
                data = bytes(inline)
        self._finish(tag, outcome.Value(ScsiResult(status, sense, data, residual, response)))

    # -- when the worker dies ------------------------------------------------------------------------

    def worker_died(self, how: str, forgotten: Callable[[int, int], int] = lambda sid, lun: 0) -> None:
        """The worker died with these requests unanswered: a command whose budget that spends
        fails now, and so does one whose LUN was forgotten since it was issued (``forgotten``:
        (session id, LUN) -> how many times now); the rest go to its successor (``frames``)."""
        now = trio.current_time()
        for tag in sorted(self.pending):
            pending = self.pending[tag]
            command = pending.command
            if command is None:
                continue
            if forgotten(command.sid, command.lun) != command.forgotten:
                self._finish(tag, outcome.Error(LunForgotten(
                    f"LUN {command.lun} of {command.target} is no longer shown: its command from before "
                    "is not sent again")))
                continue
            if pending.attempts is None:
                pending.attempts = Attempts(describe_command(command.cdb, command.lun, command.target),
                                            command.started, command.policy)
            try:
                pending.attempts.after(Undelivered(Delivery.CONNECTION_DIED, f"its session worker {how}"), now)
            except IscsiError as spent:
                self._finish(tag, outcome.Error(spent))

    def frames(self) -> list[Parts]:
        """Every unanswered request's frame, in the order first sent: for a worker started again."""
        return [self.pending[tag].frame for tag in sorted(self.pending)]

    def close(self, error: IscsiError) -> None:
        """The worker is gone for good: what waits fails with ``error``, and so does what comes."""
        self._closed = error
        self.fail_all(error)

    def fail_all(self, error: BaseException) -> None:
        for tag in list(self.pending):
            self._finish(tag, outcome.Error(error))

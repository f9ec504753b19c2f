"""One connection against the fake target: reads and writes through R2T, a closed CmdSN window,
text requests and logout, a malformed PDU, Data-In received into the caller's buffer; a
renegotiation the target asks for (RFC 7143 §11.9; the other Asynchronous Messages are the
session's, tests/net/test_async_messages.py), a digest error, a login redirection. The
sans-I/O core under it is tests/proto/test_connection.py. How commands are written: one alone at
once, those of one loop turn together at its end, with a full socket or a failure there handed
to a task without the loop sleeping on it."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest
import trio
import trio.testing
from iscsifs.net.connection import Connection
from iscsifs.net.turnend import turn_end
from iscsifs.proto import pdu as P
from iscsifs.proto.address import Portal
from iscsifs.proto.errors import ConnectionLost, Delivery, IscsiError, Undelivered
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.proto.text import Offer, encode_text, parse_text

from support.fake_target import FakeTarget, logged_in, open_over, stream_pair

CONFIG = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt")
READ_8 = bytes.fromhex("28000000000000000800")  # READ(10) LBA 0, 8 blocks


# -- full feature phase: I/O, the CmdSN window, text, logout -------------------------------------------


async def test_read_write_through_r2t_and_small_segments():
    async with trio.open_nursery() as nursery:
        target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=4, mrdsl=1024)
        assert session.params.max_recv_data_segment_length == 1024 and session.params.initial_r2t

        async def serve():
            while True:
                req = await target.recv()
                await target.serve_scsi(req)

        nursery.start_soon(serve)
        data = bytes(range(256)) * 40  # 10240 bytes = 20 blocks
        res = await session.execute(0, bytes.fromhex("2a00000000010000140000"), data_out=data)
        assert res.status == 0
        assert bytes(target.disk[512 : 512 + len(data)]) == data
        outs = [p for p in target.log if isinstance(p, P.DataOut)]
        assert max(len(p.data) for p in outs) <= 1024  # the target's MaxRecvDataSegmentLength
        res = await session.execute(0, bytes.fromhex("28000000000100001400"), expected_in=len(data))
        assert bytes(res.data) == data
        nursery.cancel_scope.cancel()


async def test_closed_window_waits_until_nop_in_opens_it():
    async with trio.open_nursery() as nursery:
        # MaxCmdSN = ExpCmdSN - 1: the window is closed.
        target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=-1)
        result = []

        async def reader():
            result.append(await session.execute(0, bytes.fromhex("28000000000000000100"), expected_in=512))

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not result and not any(isinstance(p, P.ScsiCommand) for p in target.log)
        # The target opens the window with an unsolicited NOP-In, and pings us at the same time.
        target.delta = 1
        await target.send(P.NopIn(0, P.RESERVED_TAG, 0x77, **target.sn(advance=False)))
        # Both follow; the RFC sets no order between them.
        got = sorted([await target.recv(), await target.recv()], key=lambda p: type(p).__name__)
        nop, cmd = got
        assert isinstance(nop, P.NopOut) and nop.target_transfer_tag == 0x77 and nop.immediate
        assert isinstance(cmd, P.ScsiCommand)
        await target.serve_scsi(cmd)
        await trio.testing.wait_all_tasks_blocked()
        assert result and result[0].status == 0
        nursery.cancel_scope.cancel()


async def test_text_continuation_and_logout():
    async with trio.open_nursery() as nursery:
        target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=4)

        async def serve_text():
            req = await target.recv()
            assert isinstance(req, P.TextRequest) and parse_text(req.data) == [("SendTargets", "All")]
            full = encode_text([("TargetName", "iqn.2026-11.a:x"), ("TargetAddress", "[::1]:3260,1")])
            await target.send(P.TextResponse(req.initiator_task_tag, 0x42, final=False, cont=True, data=full[:10],
                                             **target.sn()))
            req2 = await target.recv()
            assert req2.target_transfer_tag == 0x42 and req2.initiator_task_tag == req.initiator_task_tag
            await target.send(P.TextResponse(req.initiator_task_tag, P.RESERVED_TAG, data=full[10:], **target.sn()))
            logout = await target.recv()
            assert isinstance(logout, P.LogoutRequest)
            await target.send(P.LogoutResponse(logout.initiator_task_tag, 0, **target.sn()))
            await target.stream.aclose()

        async def answer_ping():
            ping = await target.recv()
            assert isinstance(ping, P.NopOut) and ping.immediate and ping.initiator_task_tag != P.RESERVED_TAG
            await target.send(P.NopIn(0, ping.initiator_task_tag, P.RESERVED_TAG, **target.sn()))
            await serve_text()

        nursery.start_soon(answer_ping)
        with trio.fail_after(5):
            await session.ping()
        pairs = await session.text_request([("SendTargets", "All")])
        assert pairs == [("TargetName", "iqn.2026-11.a:x"), ("TargetAddress", "[::1]:3260,1")]
        await session.logout()
        assert not session.alive
        with pytest.raises(ConnectionLost):
            await session.execute(0, bytes(6))


async def test_the_socket_is_watched_for_polling_until_it_is_closed():
    # Polled before the loop sleeps (net.turnend) while open; never after: its number may be
    # another file's next.
    async with trio.open_nursery() as nursery:
        _, connection = await logged_in(nursery, CONFIG, max_cmd_sn_delta=4)
        fd = connection._fd
        assert fd is not None and turn_end().watching(fd)
        await connection.aclose()
        assert not turn_end().watching(fd)

        target, connection = await logged_in(nursery, CONFIG, max_cmd_sn_delta=4)
        fd = connection._fd
        assert fd is not None and turn_end().watching(fd)
        await target.stream.aclose()  # the target goes: the reader fails the connection
        with trio.fail_after(5):
            while turn_end().watching(fd):
                await trio.sleep(0.01)
        assert not connection.alive
        nursery.cancel_scope.cancel()


async def test_malformed_pdu_from_target_fails_waiting_commands():
    async with trio.open_nursery() as nursery:
        target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=4)

        async def misbehave():
            await target.recv()
            await target.stream.send_all(bytes([0x3E]) + bytes(47))  # no such opcode

        nursery.start_soon(misbehave)
        with pytest.raises(Undelivered, match="unexpected PDU opcode") as lost:  # the session decides what next
            await session.execute(0, bytes.fromhex("28000000000000000100"), expected_in=512)
        assert lost.value.delivery is Delivery.CONNECTION_DIED and not session.alive


@pytest.mark.parametrize("digests", [False, True])
async def test_large_data_in_is_received_straight_into_the_callers_buffer(digests):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=8, digests=digests)
            assert session.params.data_digest == digests
            session._reader.place_min = 1000  # the fake target's segments are 4 KiB
            nursery.start_soon(target.serve)
            target.disk[:] = bytes(range(256)) * (len(target.disk) // 256)
            into = bytearray(40960)
            res = await session.execute(0, bytes.fromhex("28000000000000005000"), expected_in=40960, into=into)
            assert res.data.obj is into and into == target.disk[:40960]
            assert session._reader.segments_placed == 10  # every 4 KiB segment of the 40 KiB
            nursery.cancel_scope.cancel()


async def test_a_placed_segment_with_a_bad_data_digest_is_never_returned():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=8, digests=True)
            session._reader.place_min = 1000
            nursery.start_soon(target.serve)

            def corrupt(wire: bytes) -> bytes:
                if wire[0] & 0x3F == P.Opcode.SCSI_DATA_IN and len(wire) > 4000:
                    wire = bytearray(wire)
                    wire[-100] ^= 0x01  # in the data segment, near its end
                return bytes(wire)

            target.corrupt = corrupt
            into = bytearray(4096)
            with pytest.raises(Undelivered, match="data digest mismatch"):  # sent, then the connection died
                await session.execute(0, bytes.fromhex("28000000000000000800"), expected_in=4096, into=into)
            nursery.cancel_scope.cancel()


# -- Asynchronous Messages ---------------------------------------------------------------------------


async def test_negotiation_request_is_answered_with_a_text_request():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=4, mrdsl=8192)
            # What the session does on this message (its core's table: RENEGOTIATE).
            session.on_async = lambda connection, event: nursery.start_soon(connection.renegotiate, RecoveryPolicy())
            await target.send(P.AsyncMessage(lun=0, async_event=P.AsyncEvent.NEGOTIATION_REQUESTED, parameter3=5,
                                             **target.sn()))
            req = await target.recv()
            assert isinstance(req, P.TextRequest) and req.data == b""
            target.exp_cmd_sn = req.cmd_sn + 1
            # The target declares a smaller MaxRecvDataSegmentLength and offers a key we must answer.
            await target.send(P.TextResponse(req.initiator_task_tag, P.RESERVED_TAG, data=encode_text(
                [("MaxRecvDataSegmentLength", "1024"), ("X-com.example.Unknown", "1"), ("NewKey", "1")]),
                **target.sn()))
            answer = await target.recv()
            assert isinstance(answer, P.TextRequest) and parse_text(answer.data) == [("NewKey", "NotUnderstood")]
            target.exp_cmd_sn = answer.cmd_sn + 1
            await target.send(P.TextResponse(answer.initiator_task_tag, P.RESERVED_TAG, **target.sn()))
            while session.params.max_recv_data_segment_length != 1024:
                await trio.sleep(0.01)
            nursery.start_soon(target.serve)
            data = bytes(range(256)) * 16
            res = await session.execute(0, bytes.fromhex("2a00000000000000080000"), data_out=data)
            assert res.status == 0 and bytes(target.disk[:4096]) == data
            outs = [p for p in target.log if isinstance(p, P.DataOut)]
            assert outs and max(len(p.data) for p in outs) <= 1024
            cmds = [p for p in target.log if isinstance(p, P.ScsiCommand)]
            assert len(cmds[-1].data) <= 1024  # immediate data too
            nursery.cancel_scope.cancel()


# -- digests and redirection -------------------------------------------------------------------------


async def test_a_flipped_bit_under_data_digest_drops_the_connection_never_returns_data():
    config = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt",
                         offer=Offer(header_digest=("CRC32C",), data_digest=("CRC32C",)))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, config, max_cmd_sn_delta=4, digests=True)
            assert session.params.header_digest and session.params.data_digest
            target.disk[:4096] = b"D" * 4096
            nursery.start_soon(target.serve)
            assert bytes((await session.execute(0, READ_8, expected_in=4096)).data) == b"D" * 4096
            target.corrupt = lambda wire: wire[:100] + bytes([wire[100] ^ 0x01]) + wire[101:]  # in the data
            with pytest.raises(Undelivered, match="data digest mismatch"):
                await session.execute(0, READ_8, expected_in=4096)
            assert not session.alive
            nursery.cancel_scope.cancel()


async def test_login_redirection_is_followed():
    moved, there = stream_pair(), stream_pair()
    streams = {"first.example": moved[0], "second.example": there[0]}
    seen = []

    async def connect(portal):
        seen.append(portal)
        return streams[portal.host]

    async def redirect(server):
        req = FakeTarget(server)
        first = await req.recv()
        await req.send(P.LoginResponse(isid=first.isid, tsih=0, initiator_task_tag=first.initiator_task_tag,
                                       status_class=1, status_detail=1, csg=0, nsg=0, transit=False,
                                       data=encode_text([("TargetAddress", "second.example:3262,1")]), **req.sn()))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(redirect, moved[1])
            nursery.start_soon(FakeTarget(there[1]).login)
            connection = await Connection.open(nursery, Portal("first.example", 3260), CONFIG, connect)
            assert connection.alive and connection.portal == Portal("second.example", 3262)
            nursery.cancel_scope.cancel()
    assert [p.host for p in seen] == ["first.example", "second.example"]


# -- writing: at once when alone, the turn's commands together ------------------------------------


def _count_writes(monkeypatch, session, fake=None) -> list[bool]:
    """Each ``writev`` of ``session``'s socket: True when a task made it, False when the loop's
    end-of-turn hook did. ``fake(fd, buffers)`` stands in for the hook's writes if given."""
    real = os.writev
    writes: list[bool] = []

    def writev(fd, buffers):
        if fd != session._fd:
            return real(fd, buffers)
        try:
            trio.lowlevel.current_task()
            writes.append(True)
        except RuntimeError:  # no task: trio's loop, between turns
            writes.append(False)
            if fake is not None:
                return fake(fd, buffers)
        return real(fd, buffers)

    monkeypatch.setattr(os, "writev", writev)
    return writes


class _Results(list):
    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.all_in = trio.Event()

    def append(self, item) -> None:
        super().append(item)
        if len(self) == self.expected:
            self.all_in.set()


async def _reads(nursery, session, results: list, n: int) -> None:
    """``n`` reads started in one turn (the window is open for them all)."""

    async def read():
        try:
            results.append(await session.execute(0, READ_8, expected_in=4096))
        except Undelivered as exc:
            results.append(exc)

    for _ in range(n):
        nursery.start_soon(read)


async def test_the_commands_of_one_turn_leave_in_one_write_and_one_alone_at_once(monkeypatch):
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=32)
            writes = _count_writes(monkeypatch, session)
            results = _Results(8)
            await _reads(nursery, session, results, 8)
            commands = [await target.recv() for _ in range(8)]
            # The first is alone in flight: written at once, by its task. The other seven are
            # issued in the same turn while it is out: one write for them, at the turn's end.
            assert writes == [True, False]
            for cmd in commands:
                await target.serve_scsi(cmd)
            await results.all_in.wait()
            assert [r.status for r in results] == [0] * 8
            nursery.cancel_scope.cancel()


async def _one_then_seven(nursery, target, session, results: list) -> list:
    """One read, received by the target; then seven in one turn, held to its end. Nothing else
    moves on the sockets then, so a task woken from inside trio's loop would sleep with it."""
    await _reads(nursery, session, results, 1)
    first = await target.recv()
    await _reads(nursery, session, results, 7)
    return [first]


async def test_a_full_socket_at_the_turns_end_is_finished_by_the_writer_without_a_stall(monkeypatch):
    def full(fd, buffers):
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    with trio.fail_after(5):  # woken from inside trio's loop, the writer would sleep until then
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=32)
            writes = _count_writes(monkeypatch, session, fake=full)
            results = _Results(8)
            commands = await _one_then_seven(nursery, target, session, results)
            commands += [await target.recv() for _ in range(7)]
            assert writes == [True, False, True]  # the seven by the writer task, in one write
            for cmd in commands:
                await target.serve_scsi(cmd)
            await results.all_in.wait()
            assert [r.status for r in results] == [0] * 8
            nursery.cancel_scope.cancel()


async def test_a_failed_write_at_the_turns_end_fails_the_connection_at_once(monkeypatch):
    """The socket breaks after the first command: the held seven's write fails at the turn's end,
    and the writer task, woken for them, meets the error again and fails the connection (in a
    task: the session hears of it there)."""
    real = os.writev
    writes: list[bool] = []

    def writev(fd, buffers):
        if fd != session._fd:
            return real(fd, buffers)
        writes.append(True)
        if len(writes) == 1:
            return real(fd, buffers)
        raise OSError(errno.EPIPE, "Broken pipe")

    with trio.fail_after(5):  # a writer woken from inside trio's loop would sleep until then
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=32)
            monkeypatch.setattr(os, "writev", writev)
            results = _Results(8)
            await _one_then_seven(nursery, target, session, results)
            await results.all_in.wait()  # no timer of its own: a stall shows as fail_after's
            assert all(isinstance(r, Undelivered) and r.delivery is Delivery.CONNECTION_DIED for r in results)
            assert not session.alive and len(writes) == 3  # the first, the turn's end, the writer's
            nursery.cancel_scope.cancel()


# -- while the loop polls: the socket lent to a command alone in flight ------------------------------


def _polling() -> None:
    """This run's loop polls before it sleeps, and its gate is open (its sleeps were short)."""
    hook = turn_end()
    hook.poll_before_sleep(10_000)
    hook.waits_ns = 0


async def _polled(nursery: trio.Nursery) -> tuple[FakeTarget, Connection]:
    """A connection to a fake target whose disk holds random bytes, in a loop that polls."""
    target, connection = await logged_in(nursery, CONFIG, max_cmd_sn_delta=8)
    target.disk[:] = os.urandom(len(target.disk))
    _polling()
    return target, connection


async def _serve(target: FakeTarget) -> None:
    while True:
        req = await target.recv()
        if isinstance(req, P.ScsiCommand):
            await target.serve_scsi(req)


async def test_while_the_loop_polls_a_command_alone_reads_its_own_answer():
    async with trio.open_nursery() as nursery:
        target, connection = await _polled(nursery)
        nursery.start_soon(_serve, target)
        hook = turn_end()
        for lba in range(20):  # 4 KiB reads one at a time: the reader lends the socket after the first
            hook.waits_ns = 0
            res = await connection.execute(0, bytes.fromhex(f"28000000{lba:04x}00000800"), expected_in=4096)
            assert bytes(res.data) == target.disk[lba * 512 : lba * 512 + 4096]
        assert 15 <= hook.own_answers <= 20
        data = os.urandom(4096)  # a write, R2T and all, alone too
        res = await connection.execute(0, bytes.fromhex("2a00000000400000080000"), data_out=data)
        assert res.status == 0 and target.disk[0x40 * 512 : 0x40 * 512 + 4096] == data
        # A read to be placed (64 KiB) is the reader's: the command hands it back.
        hook.waits_ns = 0
        owned = hook.own_answers
        res = await connection.execute(0, bytes.fromhex("28000000000000008000"), expected_in=65536)
        assert bytes(res.data) == target.disk[:65536] and hook.own_answers == owned
        # Two at once: whichever reads, both get theirs.
        got: dict[int, bytes] = {}

        async def read(lba: int) -> None:
            res = await connection.execute(0, bytes.fromhex(f"28000000{lba:04x}00000800"), expected_in=4096)
            got[lba] = bytes(res.data)

        for _ in range(5):
            hook.waits_ns = 0
            async with trio.open_nursery() as both:
                both.start_soon(read, 8)
                both.start_soon(read, 16)
            assert got == {8: target.disk[4096:8192], 16: target.disk[8192:12288]}
        nursery.cancel_scope.cancel()


async def _lent(connection: Connection) -> None:
    """One read, so that the reader lends the socket after its answer (until the loop sleeps)."""
    turn_end().waits_ns = 0
    await connection.execute(0, READ_8, expected_in=4096)
    assert connection._lent  # the reader waits to be resumed, not on the socket


async def test_a_lent_socket_is_read_again_before_the_loop_sleeps():
    # Nothing in flight, the socket lent: a NOP-In the target sends then (a ping, a close) is
    # read once the loop would sleep, and answered.
    async with trio.open_nursery() as nursery:
        target, connection = await _polled(nursery)

        async def serve_one() -> None:
            await target.serve_scsi(await target.recv())

        nursery.start_soon(serve_one)
        await _lent(connection)
        await target.send(P.NopIn(0, P.RESERVED_TAG, 0x55, **target.sn(advance=False)))
        with trio.fail_after(2):
            answer = await target.recv()
        assert isinstance(answer, P.NopOut) and answer.target_transfer_tag == 0x55
        await target.stream.aclose()  # and the target going is seen too
        with trio.fail_after(2):
            while connection.alive:
                await trio.sleep(0.01)
        with pytest.raises(Undelivered):
            await connection.execute(0, READ_8, expected_in=4096)
        nursery.cancel_scope.cancel()


async def test_a_command_reading_its_own_answer_is_ended_by_the_session_and_by_a_failure():
    async with trio.open_nursery() as nursery:
        target, connection = await _polled(nursery)

        errors: list[BaseException] = []

        async def lent_then_read() -> None:
            # The second read is issued as the first returns, the socket lent: it holds it.
            await _lent(connection)
            try:
                await connection.execute(0, READ_8, expected_in=4096)
            except Undelivered as exc:
                errors.append(exc)

        # The target never answers the second; the session ends it (its time is up).
        nursery.start_soon(lent_then_read)
        await target.serve_scsi(await target.recv())  # the first
        req = await target.recv()
        await trio.testing.wait_all_tasks_blocked()
        assert connection._holding  # the command waits on the socket itself
        connection.end_task(req.initiator_task_tag, Undelivered(Delivery.CONNECTION_DIED, "time is up"))
        with trio.fail_after(2):
            while not errors:
                await trio.sleep(0)
        assert "time is up" in str(errors[0])
        # The connection goes on: the next commands are answered (through the reader or their own).
        errors.clear()
        nursery.start_soon(lent_then_read)
        await target.serve_scsi(await target.recv())
        await target.recv()
        await trio.testing.wait_all_tasks_blocked()
        assert connection._holding
        # Holding, and the target goes: the command learns it at once.
        await target.stream.aclose()
        with trio.fail_after(2):
            while not errors:
                await trio.sleep(0)
        assert errors[0].delivery is Delivery.CONNECTION_DIED and not connection.alive
        nursery.cancel_scope.cancel()


async def _holding(connection: Connection, target: FakeTarget, nursery: trio.Nursery,
                   errors: list[BaseException], read_into: list[bytes] | None = None) -> P.ScsiCommand:
    """A read alone in flight that waits on the lent socket for its answer, which the target
    has not sent: its command, as the target got it. What the read raises goes to ``errors``,
    what it read to ``read_into``."""

    async def lent_then_read() -> None:
        await _lent(connection)
        try:
            res = await connection.execute(0, READ_8, expected_in=4096)
            if read_into is not None:
                read_into.append(bytes(res.data))
        except IscsiError as exc:
            errors.append(exc)

    nursery.start_soon(lent_then_read)
    await target.serve_scsi(await target.recv())  # the first, which makes the reader lend
    req = await target.recv()
    await trio.testing.wait_all_tasks_blocked()
    assert connection._holding  # the command waits on the socket itself
    return req


async def _until(predicate: Callable[[], object]) -> None:
    with trio.fail_after(2):
        while not predicate():
            await trio.sleep(0)


@pytest.mark.parametrize("how", ["close", "fail"])
async def test_a_connection_closed_or_failed_from_elsewhere_releases_the_command_holding_its_socket(how):
    # The session closes it, or fails it (a lost ping, the writer's error): the holder is
    # woken, its caller told, and the connection's tasks all end, none left waiting.
    async with trio.open_nursery() as outer:
        client, server = stream_pair()
        target = FakeTarget(server, max_cmd_sn_delta=8)
        outer.start_soon(target.login)
        errors: list[BaseException] = []
        with trio.fail_after(5):
            async with trio.open_nursery() as tasks:  # the connection's: reader, writer, the read
                connection = await open_over(tasks, client, CONFIG)
                _polling()
                await _holding(connection, target, tasks, errors)
                if how == "close":
                    await connection.aclose()
                else:
                    connection.fail(ConnectionLost("the session gave up on it"))
            # ... and ended by itself, every task in it done
        assert len(errors) == 1 and errors[0].delivery is Delivery.CONNECTION_DIED
        outer.cancel_scope.cancel()


async def test_while_a_command_holds_the_socket_the_others_answers_reach_them():
    # A second command, a ping, the end of the second: the holder reads what comes for them
    # too, and is not disturbed by what is not its own.
    async with trio.open_nursery() as nursery:
        target, connection = await _polled(nursery)
        errors: list[BaseException] = []
        got: list[bytes] = []
        first = await _holding(connection, target, nursery, errors, got)
        second_errors: list[BaseException] = []

        async def second() -> None:
            try:
                await connection.execute(0, READ_8, expected_in=4096)
            except IscsiError as exc:
                second_errors.append(exc)

        pinged: list[bool] = []

        async def ping() -> None:
            await connection.ping()
            pinged.append(True)

        nursery.start_soon(second)
        req2 = await target.recv()
        nursery.start_soon(ping)
        nop = await target.recv()
        assert isinstance(nop, P.NopOut)
        await target.send(P.NopIn(0, nop.initiator_task_tag, P.RESERVED_TAG, **target.sn()))
        await _until(lambda: pinged)
        connection.end_task(req2.initiator_task_tag, Undelivered(Delivery.CONNECTION_DIED, "time is up"))
        await _until(lambda: second_errors)
        assert connection._holding and not errors and not got  # the first still waits, on the socket
        await target.serve_scsi(first)
        await _until(lambda: got)
        assert got == [bytes(target.disk[:4096])] and not errors
        nursery.cancel_scope.cancel()


async def test_a_data_in_too_large_for_the_holders_read_fails_the_connection_not_the_mount():
    # A segment to place goes to the reader, which finds it beyond the read: a protocol error.
    async with trio.open_nursery() as nursery:
        target, connection = await _polled(nursery)
        errors: list[BaseException] = []
        req = await _holding(connection, target, nursery, errors)
        await target.send(P.DataIn(0, req.initiator_task_tag, P.RESERVED_TAG, data_sn=0, buffer_offset=0,
                                   final=True, has_status=True, data=bytes(40960), **target.sn()))
        await _until(lambda: errors)
        assert not connection.alive
        nursery.cancel_scope.cancel()


async def test_a_holder_cancelled_by_its_caller_leaves_the_socket_to_the_next_command():
    async with trio.open_nursery() as nursery:
        target, connection = await _polled(nursery)
        errors: list[BaseException] = []
        with trio.CancelScope() as scope:  # the caller's own: it gives up on the read
            async with trio.open_nursery() as reads:
                req = await _holding(connection, target, reads, errors)
                scope.cancel()
        assert not errors and not connection._holding
        await target.serve_scsi(req)  # late: into the cancelled read's private buffer, never to anyone
        nursery.start_soon(_serve, target)
        with trio.fail_after(2):
            res = await connection.execute(0, READ_8, expected_in=4096)
        assert bytes(res.data) == target.disk[:4096]
        nursery.cancel_scope.cancel()

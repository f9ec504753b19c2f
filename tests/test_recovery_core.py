"""The recovery policy against the fake target: statuses that mean "not now", queue depth,
command timeouts with ABORT TASK, relogin statuses, and fuzzing of what a target can send."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from fake_target import FakeTarget, logged_in, sense_bytes
from iscsifs.lun import command
from iscsifs.net import session as net_session
from iscsifs.net.recovery import ManagedSession, RecoveryPolicy
from iscsifs.net.session import Portal
from iscsifs.proto import chap
from iscsifs.proto import pdu as P
from iscsifs.proto.errors import IscsiError, LoginError, RemoteProtocolError
from iscsifs.proto.login import LoginConfig
from iscsifs.scsi import cdb
from iscsifs.scsi.sense import ScsiError, Status

CONFIG = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt")
READ = cdb.read(0, 8)
FAST = RecoveryPolicy(nop_interval=60, nop_timeout=1, command_timeout=0.5, recovery_timeout=15, login_timeout=2)


async def _managed(nursery, **target_kw):
    target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=16)
    for k, v in target_kw.items():
        setattr(target, k, v)
    nursery.start_soon(target.serve)
    return target, ManagedSession(nursery, Portal("fake", 3260), CONFIG, session, FAST)


async def test_busy_task_set_full_and_becoming_ready_are_retried_and_shrink_the_queue():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, ms = await _managed(nursery)
            target.disk[:4096] = b"b" * 4096
            target.pending_status = [Status.BUSY, Status.TASK_SET_FULL]
            target.pending_sense = [sense_bytes(0x02, 0x04, 0x01), sense_bytes(0x0B, 0x00, 0x00)]
            depth = ms.queue_depth
            result = await command(ms, 0, READ, name="READ", expected_in=4096)
            assert bytes(result.data) == b"b" * 4096
            assert ms.queue_depth < depth
            commands = [p for p in target.log if isinstance(p, P.ScsiCommand)]
            assert len(commands) == 5
            for _ in range(64):
                await command(ms, 0, READ, name="READ", expected_in=4096)
            assert ms.queue_depth == 2  # grows back one at a time after enough successes
            nursery.cancel_scope.cancel()


async def test_reservation_conflict_fails_at_once():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, ms = await _managed(nursery)
            target.pending_status = [Status.RESERVATION_CONFLICT]
            with pytest.raises(ScsiError) as e:
                await command(ms, 0, READ, name="READ", expected_in=4096)
            assert e.value.errno == errno.EBUSY
            assert len([p for p in target.log if isinstance(p, P.ScsiCommand)]) == 1
            nursery.cancel_scope.cancel()


async def test_a_command_without_answer_is_aborted_then_issued_again():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, ms = await _managed(nursery, swallow=1)
            target.disk[:4096] = b"t" * 4096
            result = await command(ms, 0, READ, name="READ", expected_in=4096)
            assert bytes(result.data) == b"t" * 4096
            (abort,) = target.task_management
            assert abort.function == 1 and abort.referenced_task_tag == target.swallowed[0].initiator_task_tag
            assert abort.ref_cmd_sn == target.swallowed[0].cmd_sn
            nursery.cancel_scope.cancel()


async def test_a_late_answer_to_a_timed_out_read_never_lands_in_the_callers_buffer():
    # fs.read hands its pooled buffer to the next read as soon as this one returns, so a Data-In
    # that arrives after the timeout must go elsewhere (and is not a protocol error either).
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=16)
            target.swallow = 1
            nursery.start_soon(target.serve)
            buf = bytearray(b"z" * 4096)
            with pytest.raises(net_session.CommandTimeout):
                await session.execute(0, READ, expected_in=4096, into=buf, timeout=0.2)
            await target.respond(target.swallowed[0], b"L" * 4096)
            target.disk[:4096] = b"n" * 4096
            other = bytearray(4096)
            result = await session.execute(0, READ, expected_in=4096, into=other)  # after the late answer
            assert bytes(result.data) == b"n" * 4096 and result.data.obj is other
            assert buf == b"z" * 4096 and session.alive
            nursery.cancel_scope.cancel()


async def test_a_read_that_times_out_while_its_data_is_being_placed_leaves_the_buffer_alone():
    # The Data-In's header and part of its data arrive (placement starts into the caller's buffer),
    # the command times out, then the rest arrives: it must go to the task's private buffer, and
    # the data digest over the whole segment still holds (no spurious digest failure).
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=16, digests=True)
            session._reader.place_min = 1000
            target.swallow = 1
            nursery.start_soon(target.serve)
            buf = bytearray(b"z" * 4096)
            late = trio.Event()

            async def answer_in_two_parts():
                while not target.swallowed:
                    await trio.sleep(0.01)
                req = target.swallowed[0]
                target.exp_cmd_sn = req.cmd_sn + 1
                wire = P.pdu_bytes(P.DataIn(0, req.initiator_task_tag, P.RESERVED_TAG, data_sn=0, buffer_offset=0,
                                            final=True, has_status=True, data=b"L" * 4096, **target.sn()), True, True)
                await target.stream.send_all(wire[:1000])
                await late.wait()
                await target.stream.send_all(wire[1000:])

            nursery.start_soon(answer_in_two_parts)
            with pytest.raises(net_session.CommandTimeout):
                await session.execute(0, READ, expected_in=4096, into=buf, timeout=0.3)
            assert buf[200:900] == b"L" * 700 and buf[1000:] == b"z" * 3096  # the part placed in time
            buf[:] = b"r" * 4096  # reused by its owner
            late.set()
            target.disk[:4096] = b"n" * 4096
            result = await session.execute(0, READ, expected_in=4096)
            assert bytes(result.data) == b"n" * 4096 and session.alive
            assert buf == b"r" * 4096
            nursery.cancel_scope.cancel()


async def test_unanswered_task_management_escalates_to_a_new_connection():
    connects = []

    async def connect(portal):
        client, server = trio.testing.memory_stream_pair()
        fake = FakeTarget(server, max_cmd_sn_delta=16)
        fake.disk[:4096] = b"n" * 4096

        async def run():
            await fake.login()
            await fake.serve()

        nursery.start_soon(run)
        connects.append(fake)
        return client

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            target, ms = await _managed(nursery, swallow=1, answer_task_management=False)
            orig = net_session._connect
            net_session._connect = connect
            try:
                result = await command(ms, 0, READ, name="READ", expected_in=4096)
            finally:
                net_session._connect = orig
            assert bytes(result.data) == b"n" * 4096 and len(connects) == 1
            assert [t.function for t in target.task_management] == [1, 5]  # ABORT TASK, then LUN RESET
            relogin = connects[0].log[0]
            assert relogin.isid == ms.config.isid and relogin.tsih == 0  # session reinstatement
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("status, final", [((0x03, 0x01), False), ((0x02, 0x01), True)])
async def test_relogin_statuses_03xx_retried_02xx_final(status, final):
    attempts = []

    async def connect(portal):
        client, server = trio.testing.memory_stream_pair()
        fake = FakeTarget(server, max_cmd_sn_delta=16)
        attempts.append(fake)

        async def refuse_then_serve():
            if len(attempts) == 1:
                req = await fake.recv()
                await fake.send(P.LoginResponse(isid=req.isid, tsih=0, initiator_task_tag=req.initiator_task_tag,
                                                status_class=status[0], status_detail=status[1], csg=0, nsg=0,
                                                transit=False, **fake.sn()))
                return
            await fake.login()
            await fake.serve()

        nursery.start_soon(refuse_then_serve)
        return client

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            target, ms = await _managed(nursery)
            orig = net_session._connect
            net_session._connect = connect
            try:
                await target.stream.aclose()  # the connection drops
                if final:
                    with pytest.raises(LoginError):
                        await command(ms, 0, READ, name="READ", expected_in=4096)
                    assert len(attempts) == 1 and not ms.alive
                else:
                    await command(ms, 0, READ, name="READ", expected_in=4096)
                    assert len(attempts) == 2 and ms.alive
            finally:
                net_session._connect = orig
            nursery.cancel_scope.cancel()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"]),
                       st.text(max_size=80) | st.from_regex(r"0x[0-9a-f]{0,64}", fullmatch=True)))
def test_fuzz_chap_parsers_only_raise_our_errors(keys):
    ours = chap.ChapChallenge(5, 1, bytes(16))
    creds = chap.ChapCredentials("u", b"secret-1", "t", b"secret-2")
    for parse in (lambda: chap.parse_challenge(keys, (5, 7)), lambda: chap.verify_target(keys, ours, creds)):
        try:
            parse()
        except (IscsiError, RemoteProtocolError):
            pass

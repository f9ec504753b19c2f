"""The recovery policy against the fake target, on trio's mock clock (``autojump_clock``: timeouts
take no real time): statuses that mean "not
now", queue depth, command timeouts with ABORT TASK, relogin statuses, prompt recovery after a long
outage, multipath failover and round-robin, and fuzzing of what a target can send."""

from __future__ import annotations

import errno
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsifs.block.command import command
from iscsifs.block.identity import identity_of
from iscsifs.net.multipath import Multipath
from iscsifs.proto import chap
from iscsifs.proto import pdu as P
from iscsifs.proto.address import Portal
from iscsifs.proto.errors import IscsiError, LoginError, RemoteProtocolError
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import PathPolicy, RecoveryPolicy
from iscsifs.scsi import cdb
from iscsifs.scsi.sense import ScsiError, Status

from support.fake_target import FakePortals, logged_in, login_and_serve, sense_bytes

CONFIG = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt")
READ = cdb.read(0, 8)
FAST = RecoveryPolicy(nop_interval=60, nop_timeout=1, command_timeout=0.5, recovery_timeout=15, login_timeout=2)
A, B = Portal("a.example", 3260), Portal("b.example", 3260)


async def _managed(nursery, *, serve=login_and_serve, portals=(A,), identities=None, policy=FAST,
                   path_policy=PathPolicy.FAILOVER, **target_kw):
    """A Multipath through ``portals`` of fake targets; ``target_kw`` applies to the first target."""
    fakes = FakePortals(nursery, serve, max_cmd_sn_delta=16)

    def setup(portal, target):
        if not fakes.targets:
            for k, v in target_kw.items():
                setattr(target, k, v)

    fakes.setup = setup
    session = await Multipath.open(nursery, list(portals), CONFIG, policy, connect=fakes, identify=identity_of,
                                 identities=identities, path_policy=path_policy)
    return fakes, session


async def test_busy_task_set_full_and_becoming_ready_are_retried_and_shrink_the_queue(autojump_clock):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery)
            target = fakes.targets[0][1]
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


async def test_reservation_conflict_fails_at_once(autojump_clock):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery)
            target = fakes.targets[0][1]
            target.pending_status = [Status.RESERVATION_CONFLICT]
            with pytest.raises(ScsiError) as e:
                await command(ms, 0, READ, name="READ", expected_in=4096)
            assert e.value.errno == errno.EBUSY
            assert len([p for p in target.log if isinstance(p, P.ScsiCommand)]) == 1
            nursery.cancel_scope.cancel()


async def test_a_command_without_answer_is_aborted_then_issued_again(autojump_clock):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, swallow=1)
            target = fakes.targets[0][1]
            target.disk[:4096] = b"t" * 4096
            result = await command(ms, 0, READ, name="READ", expected_in=4096)
            assert bytes(result.data) == b"t" * 4096
            (abort,) = target.task_management
            assert abort.function == 1 and abort.referenced_task_tag == target.swallowed[0].initiator_task_tag
            assert abort.ref_cmd_sn == target.swallowed[0].cmd_sn
            nursery.cancel_scope.cancel()


async def test_a_late_answer_to_a_cancelled_read_never_lands_in_the_callers_buffer(autojump_clock):
    # fs.read hands its pooled buffer to the next read as soon as this one returns, so a Data-In
    # that arrives after the timeout must go elsewhere (and is not a protocol error either).
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=16)
            target.swallow = 1
            nursery.start_soon(target.serve)
            buf = bytearray(b"z" * 4096)
            with trio.move_on_after(0.2):  # its caller gives up (a FUSE interrupt), the task stays known
                await session.execute(0, READ, expected_in=4096, into=buf)
            await target.respond(target.swallowed[0], b"L" * 4096)
            target.disk[:4096] = b"n" * 4096
            other = bytearray(4096)
            result = await session.execute(0, READ, expected_in=4096, into=other)  # after the late answer
            assert bytes(result.data) == b"n" * 4096 and result.data.obj is other
            assert buf == b"z" * 4096 and session.alive
            nursery.cancel_scope.cancel()


async def test_a_read_cancelled_while_its_data_is_being_placed_leaves_the_buffer_alone(autojump_clock):
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
            late, sent = trio.Event(), trio.Event()

            async def answer_in_two_parts():
                while not target.swallowed:
                    await trio.sleep(0.01)
                req = target.swallowed[0]
                target.exp_cmd_sn = req.cmd_sn + 1
                wire = P.pdu_bytes(P.DataIn(0, req.initiator_task_tag, P.RESERVED_TAG, data_sn=0, buffer_offset=0,
                                            final=True, has_status=True, data=b"L" * 4096, **target.sn()), True, True)
                await target.send_raw(wire[:1000])
                await late.wait()
                await target.send_raw(wire[1000:])
                sent.set()

            nursery.start_soon(answer_in_two_parts)
            with trio.move_on_after(0.3):
                await session.execute(0, READ, expected_in=4096, into=buf)
            assert buf[200:900] == b"L" * 700 and buf[1000:] == b"z" * 3096  # the part placed in time
            buf[:] = b"r" * 4096  # reused by its owner
            late.set()
            await sent.wait()  # the rest of that PDU is on the wire before the next command's answer
            target.disk[:4096] = b"n" * 4096
            result = await session.execute(0, READ, expected_in=4096)
            assert bytes(result.data) == b"n" * 4096 and session.alive
            assert buf == b"r" * 4096
            nursery.cancel_scope.cancel()


async def test_unanswered_task_management_escalates_to_a_new_connection(autojump_clock):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, swallow=1, answer_task_management=False)
            target = fakes.targets[0][1]
            fakes.setup = lambda portal, t: t.disk.__setitem__(slice(0, 4096), b"n" * 4096)
            result = await command(ms, 0, READ, name="READ", expected_in=4096)
            assert bytes(result.data) == b"n" * 4096 and len(fakes.targets) == 2
            assert [t.function for t in target.task_management] == [1, 5]  # ABORT TASK, then LUN RESET
            relogin = fakes.targets[1][1].log[0]
            assert relogin.isid == CONFIG.isid and relogin.tsih == 0  # session reinstatement
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("status, final", [((0x03, 0x01), False), ((0x02, 0x03), False), ((0x02, 0x01), True)])
async def test_relogin_statuses_03xx_and_not_found_retried_other_02xx_final(autojump_clock, status, final):
    logins = []

    async def refuse_then_serve(fake):
        logins.append(fake)
        if len(logins) == 2:  # the first relogin is refused
            req = await fake.recv()
            await fake.send(P.LoginResponse(isid=req.isid, tsih=0, initiator_task_tag=req.initiator_task_tag,
                                            status_class=status[0], status_detail=status[1], csg=0, nsg=0,
                                            transit=False, **fake.sn()))
            return
        await login_and_serve(fake)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, serve=refuse_then_serve)
            await fakes.targets[0][1].stream.aclose()  # the connection drops
            if final:
                with pytest.raises(LoginError):
                    await command(ms, 0, READ, name="READ", expected_in=4096)
                assert len(logins) == 2 and not ms.alive
            else:
                await command(ms, 0, READ, name="READ", expected_in=4096)
                assert len(logins) == 3 and ms.alive
            nursery.cancel_scope.cancel()


async def test_io_resumes_within_a_probe_of_the_target_listening_again_after_a_long_outage(autojump_clock):
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, policy=RecoveryPolicy(nop_interval=5, nop_timeout=5,
                                                                      recovery_timeout=3000))
            fakes.down.add(A)
            await fakes.targets[0][1].stream.aclose()
            await trio.sleep(1800)  # half an hour of outage: a backoff would be at its longest by now
            assert ms.recovering
            fakes.down.clear()
            back = trio.current_time()
            await command(ms, 0, READ, name="READ", expected_in=4096)
            assert trio.current_time() - back <= RecoveryPolicy().probe_interval + 0.5
            nursery.cancel_scope.cancel()


async def test_past_recovery_timeout_io_fails_at_once_then_serves_again_when_the_target_returns(autojump_clock):
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery)
            fakes.down.add(A)
            await fakes.targets[0][1].stream.aclose()
            started = trio.current_time()
            with pytest.raises(IscsiError) as e:
                await command(ms, 0, READ, name="READ", expected_in=4096)
            assert e.value.errno == errno.EIO and "recovery_timeout" in str(e.value)
            assert FAST.recovery_timeout <= trio.current_time() - started <= FAST.recovery_timeout + 0.1
            with pytest.raises(IscsiError):  # at once now
                with trio.fail_after(0.01):
                    await command(ms, 0, READ, name="READ", expected_in=4096)
            fakes.down.clear()
            await trio.sleep(RecoveryPolicy().probe_interval + 0.5)
            await command(ms, 0, READ, name="READ", expected_in=4096)
            nursery.cancel_scope.cancel()


# -- multipath -------------------------------------------------------------------------------------------


def _identity():
    return {0: ("FAKE0001", "naa.6001405fa4e4c0de")}


async def _path_relogs_in(fakes, ms, portal, prepare) -> None:
    """The path through ``portal`` logs in again, to a target that ``prepare`` sets up."""
    fakes.setup = lambda at, target: prepare(target) if at == portal else None
    index = [p.portal for p in ms.paths()].index(portal)
    before = len(fakes.at(portal))
    await fakes.at(portal)[-1].stream.aclose()
    while len(fakes.at(portal)) == before or ms.paths()[index].state not in ("logged_in", "failed"):
        await trio.sleep(0.05)


async def _a_relogs_in_without_the_lun(fakes, ms) -> None:
    """Path A logs in again to a target where LUN 0 is absent; B keeps it."""
    await _path_relogs_in(fakes, ms, A, lambda target: setattr(target, "absent", True))


@asynccontextmanager
async def _a_without_the_lun():
    """Both paths up, then A logged in again to a target where LUN 0 is absent."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _both_paths_up(nursery)
            await _a_relogs_in_without_the_lun(fakes, ms)
            yield fakes, ms
            nursery.cancel_scope.cancel()


async def _both_paths_up(nursery):
    """A multipath through A and B, once both are logged in."""
    fakes, ms = await _managed(nursery, portals=(A, B), identities=_identity())
    while len([p for p in ms.paths() if p.state == "logged_in"]) < 2:
        await trio.sleep(0.1)
    return fakes, ms


async def test_failover_reissues_on_the_standby_path_at_once_and_fails_back(autojump_clock):
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _both_paths_up(nursery)
            assert [(p.portal, p.active) for p in ms.paths()] == [(A, True), (B, False)]
            (first,) = fakes.at(A)
            first.swallow = 1  # the command in flight when the path dies
            fakes.down.add(A)
            async with trio.open_nursery() as io:
                io.start_soon(partial(command, ms, 0, READ, name="READ", expected_in=4096))
                while not first.swallowed:
                    await trio.sleep(0.01)
                cut = trio.current_time()
                await first.stream.aclose()
            # re-issued on B long before A's relogin (DefaultTime2Wait is 2 s at least)
            assert trio.current_time() - cut < 0.5
            assert any(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in fakes.at(B)[0].log)
            assert [(p.portal, p.state, p.active) for p in ms.paths()] == [(A, "recovering", False),
                                                                          (B, "logged_in", True)]
            fakes.down.clear()
            while not ms.paths()[0].active:
                await trio.sleep(0.1)
            await command(ms, 0, READ, name="READ", expected_in=4096)
            assert any(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in fakes.at(A)[-1].log)
            nursery.cancel_scope.cancel()


async def test_a_preferred_portal_down_at_login_takes_over_when_it_comes_up(autojump_clock):
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fakes = FakePortals(nursery, max_cmd_sn_delta=16)
            fakes.down.add(A)
            ms = await Multipath.open(nursery, [A, B], CONFIG, FAST, connect=fakes, identify=identity_of,
                                    identities={})
            await trio.sleep(0.1)
            assert [(p.portal, p.state, p.active) for p in ms.paths()] == [(A, "recovering", False),
                                                                          (B, "logged_in", True)]
            await command(ms, 0, READ, name="READ", expected_in=4096)
            fakes.down.clear()
            await trio.sleep(RecoveryPolicy().probe_interval + 0.5)
            assert [(p.portal, p.state, p.active) for p in ms.paths()] == [(A, "logged_in", True),
                                                                          (B, "logged_in", False)]
            nursery.cancel_scope.cancel()


async def test_a_path_to_another_device_is_refused(autojump_clock):
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, portals=(A, B), identities=_identity())
            fakes.setup = lambda portal, t: setattr(t, "serial", b"OTHER001" if portal == B else b"FAKE0001")
            for portal, target in fakes.targets:
                target.serial = b"OTHER001" if portal == B else b"FAKE0001"
            while ms.paths()[1].state not in ("failed", "logged_in"):
                await trio.sleep(0.1)
            assert [(p.portal, p.state) for p in ms.paths()] == [(A, "logged_in"), (B, "failed")]
            await command(ms, 0, READ, name="READ", expected_in=4096)
            nursery.cancel_scope.cancel()


async def test_round_robin_spreads_commands_over_healthy_paths(autojump_clock):
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, portals=(A, B), identities={}, path_policy=PathPolicy.ROUND_ROBIN)
            while len([p for p in ms.paths() if p.state == "logged_in"]) < 2:
                await trio.sleep(0.1)
            assert all(p.active for p in ms.paths())
            for _ in range(10):
                await command(ms, 0, READ, name="READ", expected_in=4096)
            counts = [sum(isinstance(p, P.ScsiCommand) for t in fakes.at(x) for p in t.log) for x in (A, B)]
            assert counts == [5, 5]
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


async def _relogin_to(fakes, ms, absent: bool, serial: bytes = b"FAKE0001"):
    """Drop the path's connection; the target it logs in to next has the LUN ``absent`` or not."""
    def setup(portal, target):
        target.absent, target.serial = absent, serial

    fakes.setup = setup
    before = len(fakes.targets)
    await fakes.targets[-1][1].stream.aclose()
    while len(fakes.targets) == before or ms.paths()[0].state != "logged_in":
        await trio.sleep(0.05)
    return fakes.targets[-1][1]


@asynccontextmanager
async def _absent_after_a_relogin(serial: bytes = b"FAKE0001", limit: float = 120):
    """A multipath that read LUN 0, then logged in again to a target where the LUN is absent
    (as a restarted tgt before its LUNs are back; ``serial``: what it will be once it is back)."""
    with trio.fail_after(limit):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, identities=_identity())
            await command(ms, 0, READ, name="READ", expected_in=4096)
            yield nursery, ms, await _relogin_to(fakes, ms, absent=True, serial=serial)
            nursery.cancel_scope.cancel()


async def test_a_lun_absent_at_a_relogin_is_waited_for_not_taken_for_another_device(autojump_clock):
    # tgt, restarted, takes logins before its LUNs are added back, and answers a missing LUN's
    # VPD pages with LUN 0's identity: that is "not there yet", not "another device".
    async with _absent_after_a_relogin() as (_, ms, target):
        done: list[float] = []

        async def read() -> None:
            await command(ms, 0, READ, name="READ", expected_in=4096)
            done.append(trio.current_time())

        async with trio.open_nursery() as io:
            for _ in range(4):
                io.start_soon(read)
            await trio.sleep(5)
            assert not done  # waiting, not failed
            inquiries = [p for p in target.log if isinstance(p, P.ScsiCommand) and p.cdb[0] == 0x12
                         and not p.cdb[1] & 1]
            assert 3 <= len(inquiries) <= 8  # checked again about once a second, not once per command
            assert not any(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in target.log)
            came_back = trio.current_time()
            target.absent = False
        assert len(done) == 4 and max(done) - came_back <= 1.5
        await command(ms, 0, READ, name="READ", expected_in=4096)


async def test_a_lun_that_comes_back_as_another_device_is_fenced(autojump_clock):
    async with _absent_after_a_relogin(serial=b"OTHER001") as (nursery, ms, target):

        async def add_it_back() -> None:
            await trio.sleep(2.5)
            target.absent = False

        nursery.start_soon(add_it_back)
        with pytest.raises(IscsiError, match="another device since it came back"):
            await command(ms, 0, READ, name="READ", expected_in=4096)
        assert not any(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in target.log)
        with pytest.raises(IscsiError, match="another device"):
            await command(ms, 0, READ, name="READ", expected_in=4096)


async def test_a_lun_that_stays_absent_fails_its_commands_within_their_bound(autojump_clock):
    async with _absent_after_a_relogin(limit=300) as (_, ms, target):
        start = trio.current_time()
        with pytest.raises(IscsiError, match="no device connected"):
            await command(ms, 0, READ, name="READ", expected_in=4096)
        assert FAST.command_bound - 1 <= trio.current_time() - start <= FAST.command_bound + 1.5
        target.absent = False  # and once it is back, as the same device, it serves again
        await trio.sleep(1)
        await command(ms, 0, READ, name="READ", expected_in=4096)


async def test_forgetting_an_absent_lun_ends_its_waiting_commands_at_once(autojump_clock):
    # The watch removed the LUN's file (missing for its grace): its commands waiting for the LUN
    # to come back end with ENXIO then, not at their bound.
    async with _absent_after_a_relogin() as (_, ms, target):
        failed: list[tuple[float, int]] = []

        async def read() -> None:
            try:
                await command(ms, 0, READ, name="READ", expected_in=4096)
            except IscsiError as exc:
                failed.append((trio.current_time(), exc.errno))

        async with trio.open_nursery() as io:
            for _ in range(3):
                io.start_soon(read)
            await trio.sleep(5.5)  # between two checks of the LUN
            assert not failed  # waiting
            forgotten = trio.current_time()
            ms.forget_lun(0)
        assert [e for _, e in failed] == [errno.ENXIO] * 3
        assert max(t for t, _ in failed) - forgotten < 0.1
        assert not any(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in target.log)  # none sent
        target.absent = False  # what comes under the number is served, nothing expected of it
        await command(ms, 0, READ, name="READ", expected_in=4096)


async def test_forgetting_a_fenced_lun_lifts_the_fence_for_new_commands(autojump_clock):
    async with _absent_after_a_relogin(serial=b"OTHER001") as (_, ms, target):
        target.absent = False
        with pytest.raises(IscsiError, match="another device since it came back"):
            await command(ms, 0, READ, name="READ", expected_in=4096)
        ms.forget_lun(0)  # its file went: the new device may be shown
        assert 0 not in ms.identities
        await command(ms, 0, READ, name="READ", expected_in=4096)
        assert any(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in target.log)
        # Expected from now on: the new device, which a later login must find again.
        ms.expect_identity(0, "OTHER001", "naa.6001405fa4e4c0de")
        assert ms.identities == {0: ("OTHER001", "naa.6001405fa4e4c0de")}


class _Registrar:
    """Counts the nexuses it is asked to register on (a LUN kept registered), and what
    ``seen()`` said at each login."""

    def __init__(self, seen=lambda: None) -> None:
        self.logins: list[int] = []
        self.registered: list[object] = []
        self.seen_at_login: list[object] = []
        self._seen = seen

    async def register(self, nexus, lun: int) -> None:
        self.registered.append(nexus)

    async def login(self, nexus, lun: int) -> bool:
        self.logins.append(lun)
        self.seen_at_login.append(self._seen())
        return True

    async def preempted(self, nexus, lun: int) -> bool:
        return True


async def test_a_lun_forgotten_while_a_login_checks_it_is_not_fenced_by_that_check(autojump_clock):
    # Its file went while a relogin was asking what the LUN is: the answer (another device) no
    # longer has anything to be compared with.
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, identities=_identity())
            await command(ms, 0, READ, name="READ", expected_in=4096)
            held, release = trio.Event(), trio.Event()

            def setup(portal, target) -> None:
                target.serial = b"OTHER001"
                plain = target.respond

                async def respond(req, data) -> None:
                    if req.cdb[0] == 0x12 and req.cdb[1] & 1:  # the check's VPD pages
                        held.set()
                        await release.wait()
                    await plain(req, data)

                target.respond = respond

            fakes.setup = setup
            await fakes.targets[-1][1].stream.aclose()
            await held.wait()
            ms.forget_lun(0)
            release.set()
            while ms.paths()[0].state != "logged_in":
                await trio.sleep(0.05)
            assert 0 not in ms._lun_changed
            await command(ms, 0, READ, name="READ", expected_in=4096)
            nursery.cancel_scope.cancel()


def _reads(target) -> int:
    return sum(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in target.log)


async def test_an_absent_lun_is_registered_once_it_is_back_not_while_absent(autojump_clock):
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, identities=_identity())
            registrar = _Registrar(seen=lambda: _reads(fakes.targets[-1][1]))
            ms.keep_registered(0, registrar)
            target = await _relogin_to(fakes, ms, absent=True)
            assert registrar.logins == []  # nothing registered on a LUN that is not there

            async def add_it_back() -> None:
                await trio.sleep(2.5)
                assert registrar.logins == []
                target.absent = False

            nursery.start_soon(add_it_back)
            await command(ms, 0, READ, name="READ", expected_in=4096)
            assert registrar.logins == [0] and registrar.seen_at_login == [0]  # once back, before the READ
            assert _reads(target) == 1
            nursery.cancel_scope.cancel()


async def test_a_relogin_registers_no_key_on_a_lun_it_found_another_device(autojump_clock):
    # The key is ours to keep on the device we showed, not on what replaced it (its file, once
    # shown, joins by itself); forgetting the LUN stops the registrar for good.
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fakes, ms = await _managed(nursery, identities=_identity())
            registrar = _Registrar()
            ms.keep_registered(0, registrar)
            await _relogin_to(fakes, ms, absent=False, serial=b"OTHER001")
            assert 0 in ms._lun_changed and registrar.logins == [] and registrar.registered == []
            ms.forget_lun(0)
            await _relogin_to(fakes, ms, absent=False, serial=b"OTHER001")
            assert registrar.logins == [] and 0 not in ms._lun_changed
            nursery.cancel_scope.cancel()


async def test_an_absent_lun_is_served_at_once_through_a_path_that_has_it(autojump_clock):
    async with _a_without_the_lun() as (fakes, ms):
        start = trio.current_time()
        await command(ms, 0, READ, name="READ", expected_in=4096)
        assert trio.current_time() - start < 0.1  # not a second's wait for A
        assert not any(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in fakes.at(A)[-1].log)
        assert any(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in fakes.at(B)[-1].log)
        # B goes; the LUN comes back through A as another device: with no other path, it is fenced.
        fakes.at(A)[-1].serial, fakes.at(A)[-1].absent = b"OTHER001", False
        fakes.down.add(B)
        await fakes.at(B)[-1].stream.aclose()
        with pytest.raises(IscsiError, match="another device since it came back"):
            await command(ms, 0, READ, name="READ", expected_in=4096)


def _reads(target) -> int:
    return sum(isinstance(p, P.ScsiCommand) and p.cdb[:10] == READ for p in target.log)


async def test_a_preferred_path_serves_the_lun_again_once_it_has_it(autojump_clock):
    # Failover prefers A. While A lacks the LUN, its commands go to B, and A is checked again in
    # the background (about once a second), so A serves again once the LUN is back there.
    async with _a_without_the_lun() as (fakes, ms):
        await command(ms, 0, READ, name="READ", expected_in=4096)
        a = fakes.at(A)[-1]
        checks = sum(isinstance(p, P.ScsiCommand) and p.cdb[0] == 0x12 and not p.cdb[1] & 1 for p in a.log)
        for _ in range(5):  # every command to B within a second: one check of A, not five
            await command(ms, 0, READ, name="READ", expected_in=4096)
        assert sum(isinstance(p, P.ScsiCommand) and p.cdb[0] == 0x12 and not p.cdb[1] & 1 for p in a.log) == checks
        a.absent = False
        await trio.sleep(1.5)
        await command(ms, 0, READ, name="READ", expected_in=4096)  # to B; A is checked behind it
        await trio.sleep(0.1)
        before = _reads(fakes.at(B)[-1])
        await command(ms, 0, READ, name="READ", expected_in=4096)
        assert _reads(a) == 1 and _reads(fakes.at(B)[-1]) == before


async def test_a_path_whose_lun_comes_back_as_another_device_is_dropped_while_another_has_it(autojump_clock, caplog):
    async with _a_without_the_lun() as (fakes, ms):
        await command(ms, 0, READ, name="READ", expected_in=4096)
        fakes.setup = lambda at, target: setattr(target, "serial", b"OTHER001") if at == A else None
        a = fakes.at(A)[-1]
        a.serial, a.absent = b"OTHER001", False
        await trio.sleep(1.5)
        await command(ms, 0, READ, name="READ", expected_in=4096)  # A is checked behind it
        while ms.paths()[0].state == "logged_in":
            await trio.sleep(0.1)
        await trio.sleep(5)  # its relogins are refused: B has LUN 0 as it was
        assert ms.paths()[0].state != "logged_in" and ms.paths()[1].state == "logged_in"
        await command(ms, 0, READ, name="READ", expected_in=4096)
        assert not any(_reads(t) for t in fakes.at(A)) and 0 not in ms._lun_changed
        assert ("another device through a.example:3260 than through the other paths (serial 'FAKE0001' -> "
                "'OTHER001'") in caplog.text
        assert "dropping that path" in caplog.text and "path refused" in caplog.text


async def test_inquiry_passes_an_absent_lun_and_goes_where_the_lun_is(autojump_clock):
    # A rescan must find out what is at the LUN at once, and through a path that has it.
    async with _absent_after_a_relogin() as (_, ms, _target):
        start = trio.current_time()
        result = await ms.execute(0, cdb.inquiry(255), expected_in=255)
        assert trio.current_time() - start < 0.1 and result.data[0] >> 5 == 3  # not connected, said at once
    async with _a_without_the_lun() as (_fakes, ms):
        result = await ms.execute(0, cdb.inquiry(255), expected_in=255)
        assert result.data[0] >> 5 == 0  # through B, which has it
        registrar = _Registrar()
        await ms.register(0, registrar)  # registered on B's nexus only: A has no device there
        assert [nexus.portal for nexus in registrar.registered] == [B]


async def test_a_path_is_not_refused_for_a_lun_that_the_other_path_does_not_have(autojump_clock):
    # A has no device at LUN 0; B then shows another device there. A is no witness to what the
    # LUN was, so B is not refused for good (every LUN with it): the LUN itself is fenced.
    async with _a_without_the_lun() as (fakes, ms):
        await _path_relogs_in(fakes, ms, B, lambda target: setattr(target, "serial", b"OTHER001"))
        assert [(p.portal, p.state) for p in ms.paths()] == [(A, "logged_in"), (B, "logged_in")]
        with pytest.raises(IscsiError, match="another device since reconnecting"):
            await command(ms, 0, READ, name="READ", expected_in=4096)

"""What a target's Asynchronous Messages (RFC 7143 §11.9.1) make a session do, against the fake
target on trio's mock clock: a logout it asks for (every command in flight finishes there, none
fails, none is sent twice, the session comes back with the same ISID after Time2Wait), a dropped
connection or session, and a command that is never answered (EIO within the bound)."""

from __future__ import annotations

import errno

import pytest
import trio
from iscsifs.net.multipath import Multipath
from iscsifs.proto import pdu as P
from iscsifs.proto.address import Portal
from iscsifs.proto.errors import CommandFailed
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.scsi import cdb
from iscsifs.scsi.response import encode_lun

from support.fake_target import FakePortals, FakeTarget, login_and_serve

CONFIG = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt")
POLICY = RecoveryPolicy(nop_interval=60, nop_timeout=5, command_timeout=3, recovery_timeout=10, login_timeout=2)
A = Portal("a.example", 3260)


def _commands(target: FakeTarget) -> list[P.ScsiCommand]:
    return [p for p in target.log if isinstance(p, P.ScsiCommand)]


async def test_a_logout_the_target_asks_for_fails_no_command_and_sends_none_twice(autojump_clock):
    held: list[P.ScsiCommand] = []
    asked = trio.Event()

    async def ask_for_logout_then_serve(fake: FakeTarget) -> None:
        if len(fakes.targets) > 1:
            return await login_and_serve(fake)
        await fake.login()
        while len(held) < 4:  # four commands in flight when the target asks
            pdu = await fake.recv()
            if isinstance(pdu, P.ScsiCommand):
                held.append(pdu)
        await fake.send(P.AsyncMessage(lun=0, async_event=P.AsyncEvent.LOGOUT_REQUESTED, parameter3=10, **fake.sn()))
        asked.set()
        await trio.sleep(2)  # commands issued meanwhile must not come here
        for req in held:
            await fake.serve_scsi(req)
        logout = await fake.recv()
        assert isinstance(logout, P.LogoutRequest)
        await fake.send(P.LogoutResponse(logout.initiator_task_tag, 0, time2wait=3, **fake.sn()))
        await fake.stream.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fakes = FakePortals(nursery, ask_for_logout_then_serve, max_cmd_sn_delta=16)
            fakes.setup = lambda portal, t: t.disk.__setitem__(slice(0, 1 << 16), bytes(range(256)) * 256)
            ms = await Multipath.open(nursery, [A], CONFIG, POLICY, connect=fakes)
            results: dict[int, bytes] = {}

            async def read(block: int) -> None:
                result = await ms.execute(0, cdb.read(block * 8, 8), expected_in=4096)
                results[block] = bytes(result.data)

            for block in range(4):
                nursery.start_soon(read, block)
            await asked.wait()
            await trio.sleep(0.5)
            assert [p.state for p in ms.paths()] == ["draining"]
            for block in range(4, 7):  # new commands wait for the session to come back
                nursery.start_soon(read, block)
            while len(results) < 7:
                await trio.sleep(0.1)
            expected = bytes(range(256)) * 256
            assert results == {b: expected[b * 4096 : (b + 1) * 4096] for b in range(7)}
            first, second = fakes.targets[0][1], fakes.targets[1][1]
            assert len(_commands(first)) == 4 and len(_commands(second)) == 3  # each sent once
            relogin = second.log[0]
            assert isinstance(relogin, P.LoginRequest)
            assert relogin.isid == first.log[0].isid and relogin.tsih == 0  # the same session, reinstated
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("event", [P.AsyncEvent.CONNECTION_DROP, P.AsyncEvent.SESSION_DROP])
async def test_a_dropped_connection_reissues_its_commands_after_the_targets_time2wait(autojump_clock, event):
    dropped_at: list[float] = []

    async def drop_then_serve(fake: FakeTarget) -> None:
        if len(fakes.targets) > 1:
            return await login_and_serve(fake)
        await fake.login()
        assert isinstance(await fake.recv(), P.ScsiCommand)
        await fake.send(P.AsyncMessage(lun=0, async_event=event, parameter2=4, parameter3=0, **fake.sn()))
        dropped_at.append(trio.current_time())
        await trio.sleep_forever()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fakes = FakePortals(nursery, drop_then_serve, max_cmd_sn_delta=16)
            ms = await Multipath.open(nursery, [A], CONFIG, POLICY, connect=fakes)
            result = await ms.execute(0, cdb.read(0, 8), expected_in=4096)
            assert result.status == 0 and len(fakes.targets) == 2
            assert trio.current_time() - dropped_at[0] >= 4  # Parameter2: Time2Wait
            assert len(_commands(fakes.targets[1][1])) == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("lun", [0, 1])  # the task management for LUN 1 carries its LUN field, encoded once
async def test_a_command_never_answered_fails_with_eio_after_its_retries(autojump_clock, lun):
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            fakes = FakePortals(nursery, max_cmd_sn_delta=16)
            fakes.setup = lambda portal, t: setattr(t, "swallow", 1000)  # answers task management only
            ms = await Multipath.open(nursery, [A], CONFIG, POLICY, connect=fakes)
            started = trio.current_time()
            with pytest.raises(CommandFailed) as failed:
                await ms.execute(lun, cdb.read(1234, 8), expected_in=4096)
            took = trio.current_time() - started
            assert took <= POLICY.command_bound  # 3 x 6 + 10
            assert failed.value.errno == errno.EIO and "LBA 1234" in str(failed.value)
            target = fakes.targets[0][1]
            assert len(target.swallowed) == POLICY.retries + 1  # sent retries + 1 times, then EIO
            assert [t.function for t in target.task_management] == [1] * (POLICY.retries + 1)  # ABORT TASK each
            assert {t.lun for t in target.task_management} == {encode_lun(lun)}
            nursery.cancel_scope.cancel()

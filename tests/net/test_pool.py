"""The session pool against fake targets, on trio's mock clock: sessions open on first use, are
logged out when idle (never while a file is open), are bounded by max_sessions (least recently
used idle one first), and are checked against the identities already known when they log in again."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from iscsifs.block.command import command
from iscsifs.block.identity import identity_of
from iscsifs.net.multipath import Multipath
from iscsifs.net.pool import TargetPool
from iscsifs.proto import pdu as P
from iscsifs.proto.address import Portal
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.scsi import cdb

from support.fake_target import FakePortals

READ = cdb.read(0, 8)
POLICY = RecoveryPolicy(nop_interval=3600)


def _pool(nursery, fakes, **kw) -> TargetPool:
    async def opener(target, identities):
        config = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name=target)
        return await Multipath.open(nursery, [Portal(target.rsplit(":", 1)[1])], config, POLICY, connect=fakes,
                                  identify=identity_of, identities=identities)

    return TargetPool(nursery, opener, **kw)


def _logins(fakes, name) -> int:
    return len(fakes.at(Portal(name)))


async def test_a_session_opens_on_first_use_and_logs_out_when_idle(autojump_clock):
    async with trio.open_nursery() as nursery:
        fakes = FakePortals(nursery, max_cmd_sn_delta=16)
        pool = _pool(nursery, fakes, idle_timeout=30)
        handle = pool.target("iqn.2026-11.test:a", [Portal("a")])
        assert pool.logged_in == 0 and _logins(fakes, "a") == 0  # nothing until it is needed
        await command(handle, 0, READ, name="READ", expected_in=4096)
        assert pool.logged_in == 1 and _logins(fakes, "a") == 1
        await trio.sleep(20)
        await command(handle, 0, READ, name="READ", expected_in=4096)  # I/O keeps it
        await trio.sleep(20)
        assert pool.logged_in == 1
        await trio.sleep(30)
        assert pool.logged_in == 0  # idle for idle_timeout: logged out
        assert any(isinstance(p, P.LogoutRequest) for p in fakes.at(Portal("a"))[0].log)
        handle.hold()  # an open file
        await command(handle, 0, READ, name="READ", expected_in=4096)
        assert _logins(fakes, "a") == 2
        await trio.sleep(300)
        assert pool.logged_in == 1  # never while a file is open
        handle.release()
        await trio.sleep(60)
        assert pool.logged_in == 0
        nursery.cancel_scope.cancel()


async def test_max_sessions_logs_out_the_least_recently_used_idle_one(autojump_clock):
    async with trio.open_nursery() as nursery:
        fakes = FakePortals(nursery, max_cmd_sn_delta=16)
        pool = _pool(nursery, fakes, max_sessions=2)
        a, b, c = (pool.target(f"iqn.2026-11.test:{n}", [Portal(n)]) for n in "abc")
        await command(a, 0, READ, name="READ", expected_in=4096)
        await trio.sleep(1)
        await command(b, 0, READ, name="READ", expected_in=4096)
        await trio.sleep(1)
        await command(a, 0, READ, name="READ", expected_in=4096)  # b is now the least recently used
        await command(c, 0, READ, name="READ", expected_in=4096)
        assert (a.multipath is not None, b.multipath is None, c.multipath is not None) == (True, True, True)
        assert pool.logged_in == 2
        a.hold()
        c.hold()  # neither may go: the next one waits for room
        with trio.move_on_after(10) as waited:
            await command(b, 0, READ, name="READ", expected_in=4096)
        assert waited.cancelled_caught and pool.logged_in == 2
        async with trio.open_nursery() as io:
            io.start_soon(partial(command, b, 0, READ, name="READ", expected_in=4096))
            await trio.sleep(5)
            c.release()
        assert b.multipath is not None and c.multipath is None
        nursery.cancel_scope.cancel()


async def test_a_session_logged_in_again_checks_the_identities_known(autojump_clock):
    async with trio.open_nursery() as nursery:
        fakes = FakePortals(nursery, max_cmd_sn_delta=16)
        pool = _pool(nursery, fakes, idle_timeout=10)
        handle = pool.target("iqn.2026-11.test:a", [Portal("a")])
        handle.expect_identity(0, "FAKE0001", "naa.6001405fa4e4c0de")
        handle.scan_done()
        await command(handle, 0, READ, name="READ", expected_in=4096)
        await trio.sleep(30)
        assert pool.logged_in == 0
        fakes.setup = lambda portal, target: setattr(target, "serial", b"SWAPPED1")
        with pytest.raises(Exception) as e:
            await command(handle, 0, READ, name="READ", expected_in=4096)
        assert "another device" in str(e.value)
        nursery.cancel_scope.cancel()


class _SlowTarget:
    """A logged-in target whose commands end when the test says (``done``)."""

    def __init__(self, target: str, done: trio.Event) -> None:
        self.target_name = target
        self.done = done
        self.on_unit_attention = None
        self.recovering = False

    async def execute(self, lun, cdb, **kw):
        await self.done.wait()
        return ScsiResult(0)

    async def logout(self) -> None:
        pass


async def test_an_opener_waiting_for_room_gets_it_when_the_last_command_of_a_session_ends(autojump_clock):
    """max_sessions=1: b waits while a has a command in flight (a file is not open on a, so only
    that command keeps it from being logged out); when it ends, b logs in at once."""
    done = trio.Event()

    async def opener(target, identities):
        return _SlowTarget(target, done)

    async with trio.open_nursery() as nursery:
        pool = TargetPool(nursery, opener, max_sessions=1)
        a, b = (pool.target(f"iqn.2026-11.test:{n}", [Portal(n)]) for n in "ab")
        nursery.start_soon(partial(a.execute, 0, READ))
        await trio.sleep(1)
        nursery.start_soon(partial(b.execute, 0, READ))
        await trio.sleep(1)
        assert a.busy == 1 and b.multipath is None  # no room: a is busy
        done.set()
        await trio.sleep(1)
        assert a.multipath is None and b.multipath is not None
        nursery.cancel_scope.cancel()

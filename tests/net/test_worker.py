"""A session worker applies what the FUSE process tells a session (the identities it expects, a
LUN forgotten, a registrar, its other paths) in the order it was told, before the commands sent
after it and after those sent before: a LUN forgotten and then expected as another device must
end up expected as the new device, and a command of the old file sent before the forget must
still be refused by it. Trio starts the tasks of one scheduling step in no fixed order, so these
run many times over."""

from __future__ import annotations

import socket

import trio
from iscsifs.net.channel import Channel
from iscsifs.net.ipc import INLINE, ExpectIdentity, ForgetLun, Kind, Open, exec_frame, pickled
from iscsifs.net.multipath import Multipath
from iscsifs.net.worker import Worker, _Entry
from iscsifs.proto.address import Portal
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import IscsiError
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import PathPolicy, RecoveryPolicy

SID, LUN = 1, 3


class Recorder:
    """Stands in for a worker's Multipath: what was applied, in order, and what each command
    was issued with."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, object]] = []
        self.forgets = 0

    def expect_identity(self, lun: int, serial: str, wwn: str) -> None:
        self.applied.append(("expect", serial))

    def forget_lun(self, lun: int) -> None:
        self.forgets += 1
        self.applied.append(("forget", lun))

    def forgotten(self, lun: int) -> int:
        return self.forgets

    async def execute(self, lun: int, cdb: bytes, *, data_out: object = None, expected_in: int = 0,
                      into: object = None, forgotten: int | None = None) -> ScsiResult:
        self.applied.append(("command issued after forgets", forgotten))
        raise IscsiError("not sent")


async def _served(frames: list, rounds: int = 30) -> list[list[tuple[str, object]]]:
    """Each round: a worker with one open session; ``frames`` written in one send."""
    seen = []
    for _ in range(rounds):
        ours, theirs = socket.socketpair()
        here = Channel(ours)
        async with trio.open_nursery() as nursery:
            worker = Worker(nursery, Channel(theirs), arena=None)  # type: ignore[arg-type]
            entry = _Entry()
            entry.session = recorder = Recorder()  # type: ignore[assignment]
            worker._sessions[SID] = entry
            nursery.start_soon(worker.serve)
            here.send([part for f in frames for part in f])
            with trio.fail_after(5):
                while len(recorder.applied) < len(frames):
                    await trio.sleep(0.001)
            here.close()
            nursery.cancel_scope.cancel()
        seen.append(recorder.applied)
    return seen


async def test_settings_are_applied_in_the_order_they_were_told():
    told = [pickled(Kind.CALL, 0, ExpectIdentity(SID, LUN, "OLD", "")), pickled(Kind.CALL, 0, ForgetLun(SID, LUN)),
            pickled(Kind.CALL, 0, ExpectIdentity(SID, LUN, "NEW", ""))]
    for applied in await _served(told):
        assert applied == [("expect", "OLD"), ("forget", LUN), ("expect", "NEW")]


async def test_a_command_sent_before_a_forget_is_issued_before_it():
    sent = [exec_frame(7, SID, LUN, bytes(10), 0, 0, INLINE, None), pickled(Kind.CALL, 0, ForgetLun(SID, LUN)),
            exec_frame(8, SID, LUN, bytes(10), 0, 0, INLINE, None)]
    for applied in await _served(sent):
        assert sorted(applied, key=str) == [("command issued after forgets", 0), ("command issued after forgets", 1),
                                            ("forget", LUN)]


async def test_settings_told_while_the_session_reopens_are_applied_in_order_once_it_is_open(monkeypatch):
    # A worker started again: its Open (a reopen, which logs in as a recovery) and then what is
    # told meanwhile; the login completes after them.
    recorder = Recorder()
    logged_in = trio.Event()

    async def open_(*args: object, **kwargs: object) -> Recorder:
        await logged_in.wait()
        return recorder

    monkeypatch.setattr(Multipath, "open", open_)
    for name, value in (("portal", None), ("alive", True), ("recovering", False), ("reconnects", 0)):
        setattr(recorder, name, value)
    recorder.paths = list  # type: ignore[attr-defined]
    recorder.wait_changed = trio.sleep_forever  # type: ignore[attr-defined]
    ours, theirs = socket.socketpair()
    here = Channel(ours)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            worker = Worker(nursery, Channel(theirs), arena=None)  # type: ignore[arg-type]
            nursery.start_soon(worker.serve)
            opening = Open(SID, [Portal("fake")], LoginConfig(initiator_name="i", target_name="t"), RecoveryPolicy(),
                           PathPolicy.FAILOVER, None, {}, reopen=True)
            here.send(pickled(Kind.CALL, 0, opening) + pickled(Kind.CALL, 0, ExpectIdentity(SID, LUN, "OLD", ""))
                      + pickled(Kind.CALL, 0, ForgetLun(SID, LUN))
                      + pickled(Kind.CALL, 0, ExpectIdentity(SID, LUN, "NEW", "")))
            while SID not in worker._sessions or len(worker._sessions[SID].settings) < 3:
                await trio.sleep(0.001)
            assert not recorder.applied  # not before the session is open
            logged_in.set()
            while len(recorder.applied) < 3:
                await trio.sleep(0.001)
            assert recorder.applied == [("expect", "OLD"), ("forget", LUN), ("expect", "NEW")]
            here.close()
            nursery.cancel_scope.cancel()

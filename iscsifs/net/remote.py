"""Sessions that run in worker processes (``-o workers=N``), seen from the FUSE process.

pyfuse3 must stay in one process (its loop reads /dev/fuse after a readiness wait, so processes
cannot share it), and on one thread FUSE dispatch and the iSCSI work of every command compete for
one CPU. So the FUSE process only dispatches: each command goes to a worker (``net.worker``) as
one small frame, the worker runs the session and receives the data straight into the shared arena
(``net.arena``) from which the FUSE handler replies, and the outcome comes back as one frame.

A ``RemoteMultipath`` is a target as the pool (``net.pool``) holds it: one ``Multipath`` in each
worker, whose sessions log in with ISIDs of their own, commands spread round-robin over the
workers. A worker that dies is started again; its sessions log in again in the new process (told
again what was said to them, ``net.ipc``'s typed calls) and every command it had
not answered is sent to it again, as a recovery re-issues commands (the range locks in
``iscsifs.block.lun`` keep overlapping writes from being in flight together, so re-issuing is safe).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Any

import outcome
import trio

from iscsifs.net.api import DataOut, Fenced, Identify, Into, NexusAction, PathInfo, Registrar, UnitAttention
from iscsifs.net.arena import Arena
from iscsifs.net.channel import Channel, ChannelClosed, Parts
from iscsifs.net.ipc import (
    INLINE,
    RESULT,
    Call,
    CloseNow,
    Event,
    EveryNexus,
    ExpectIdentity,
    KeepRegistered,
    Kind,
    LogLine,
    Logout,
    MultipathState,
    Open,
    Register,
    StartPaths,
    StateChanged,
    UnitAttentionReported,
    event_from,
    exec_frame,
    pickled,
    rebuild_error,
    unpickle,
)
from iscsifs.net.privileges import Credentials
from iscsifs.proto.address import Portal
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import ConnectionLost, IscsiError
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import PathPolicy, RecoveryPolicy

log = logging.getLogger("iscsifs")

INLINE_MAX = 64 << 10  # larger write data goes through the arena (one copy, no socket)
RESTART_DELAY_MAX = 5.0  # seconds between attempts to start a worker again, at most
WORKER_EXIT_TIMEOUT = 5.0  # seconds a worker whose channel is closed has to exit, before it is killed


@dataclass(slots=True, eq=False)
class _Pending:
    frame: Parts
    task: trio.lowlevel.Task | None = None
    into: bytearray | memoryview | None = None
    shared: bool = False  # the worker reads or writes arena memory of ours until it answers
    slot: memoryview | None = None  # an arena slot we took for its data-out


class WorkerProcess:
    """One worker process and its channel, restarted when it dies."""

    def __init__(self, workers: Workers, index: int) -> None:
        self._workers = workers
        self.index = index
        self.process: Child | None = None
        self.channel: Channel | None = None
        self.up = False
        self.pending: dict[int, _Pending] = {}
        # What a restarted worker must be told again: how each multipath was opened, and what was
        # said of it since (identities to check, start the other paths).
        self.opened: dict[int, Open] = {}
        self.said: dict[int, list[Call]] = {}
        self.restarts = 0

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"<WorkerProcess {self.index} pid {pid} {'up' if self.up else 'down'} pending {len(self.pending)}>"

    async def spawn(self) -> None:
        arena = self._workers.arena
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            level = logging.getLogger("iscsifs").getEffectiveLevel()
            self.process = Child.start(
                [sys.executable, "-m", "iscsifs.net.worker", str(theirs.fileno()), str(arena.fd), str(arena.size),
                 str(level), self._workers.credentials.to_argument() if self._workers.credentials else "-",
                 *self._workers.preload],
                pass_fds=(theirs.fileno(), arena.fd),
                # Not the terminal's or the caller's pipes: a background mount's command returns once
                # the mount is live, and a pipe a worker held would keep its caller waiting. Whatever
                # a worker has to say goes through its channel to our log.
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.channel = Channel(ours)
        self._workers.nursery.start_soon(self.channel.flush_forever)
        self.up = True
        log.debug("session worker %d started (pid %d)", self.index, self.process.pid)

    def send(self, parts: Parts) -> None:
        if self.up and self.channel is not None:
            try:
                self.channel.send(parts)
            except ChannelClosed:
                pass  # the reader sees the worker's end: it restarts it and sends every pending frame again

    # -- commands and calls --------------------------------------------------------------------------

    async def execute(self, sid: int, lun: int, cdb: bytes, data_out: DataOut | None, expected_in: int,
                      into: Into | None) -> ScsiResult:
        arena = self._workers.arena
        tag = self._workers.next_tag()
        pending = _Pending([], into=into)
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
        tag = self._workers.next_tag()
        await self._wait(tag, _Pending(pickled(Kind.CALL, tag, call)))

    def tell(self, call: Call) -> None:
        """A call that wants no answer (it still runs in order with the commands sent after it)."""
        self.send(pickled(Kind.CALL, 0, call))

    def tell_again(self, call: Call) -> None:
        """``tell``, and again to the worker that replaces this one."""
        self.said.setdefault(call.sid, []).append(call)
        self.tell(call)

    def forget(self, sid: int) -> None:
        self.opened.pop(sid, None)
        self.said.pop(sid, None)

    async def _wait(self, tag: int, pending: _Pending) -> object:
        pending.task = trio.lowlevel.current_task()
        self.pending[tag] = pending
        self.send(pending.frame)

        def abort(_: object) -> trio.lowlevel.Abort:
            if pending.shared:
                # The worker may still write into (or read from) our arena memory: the caller may
                # reuse it only after the answer, which the worker's own timeouts bound.
                return trio.lowlevel.Abort.FAILED
            self.pending.pop(tag, None)
            return trio.lowlevel.Abort.SUCCEEDED

        answer: object = await trio.lowlevel.wait_task_rescheduled(abort)
        return answer

    def _finish(self, tag: int, outcome: outcome.Value[object] | outcome.Error) -> None:
        pending = self.pending.pop(tag, None)
        if pending is None:
            return  # its caller was cancelled
        if pending.slot is not None:
            self._workers.arena.give(pending.slot)
        assert pending.task is not None
        trio.lowlevel.reschedule(pending.task, outcome)

    # -- frames from the worker --------------------------------------------------------------------

    async def serve(self) -> None:
        """Read the worker's frames; when it dies, start it again and resend what it had."""
        delay = 0.1
        while True:
            assert self.channel is not None
            started = trio.current_time()
            async for kind, tag, payload in self.channel.frames():
                self._dispatch(kind, tag, payload)
            self.up = False
            self.channel.close()
            process = self.process
            assert process is not None
            await _reap(process)  # alive with its channel gone, it must not touch the arena again
            if self._workers.closing:
                self._fail_all(ConnectionLost("unmounting"))
                return
            delay = 0.1 if trio.current_time() - started > 10 else min(delay * 2, RESTART_DELAY_MAX)
            log.warning("session worker %d (pid %d) ended (%s); starting it again, %d command%s to issue again",
                        self.index, process.pid, _how(process.returncode), len(self.pending),
                        "" if len(self.pending) == 1 else "s")
            while True:
                await trio.sleep(delay)
                try:
                    await self.spawn()
                    break
                except OSError as exc:  # out of processes or memory: keep trying, commands wait
                    log.error("cannot start session worker %d: %s; trying again", self.index, exc)
                    delay = min(delay * 2, RESTART_DELAY_MAX)
            self.restarts += 1
            for sid, opened in self.opened.items():
                remote = self._workers.sessions.get(sid)
                registrars = dict(remote.registrars) if remote is not None else None
                self.tell(replace(opened, reopen=True, registrars=registrars))
                for told in self.said.get(sid, ()):
                    self.tell(told)
            for tag in sorted(self.pending):
                self.send(self.pending[tag].frame)

    def _dispatch(self, kind: int, tag: int, payload: memoryview) -> None:
        if kind == Kind.RESULT:
            self._result(tag, payload)
        elif kind == Kind.REPLY:
            self._finish(tag, outcome.Value(unpickle(payload)))
        elif kind == Kind.FAILED:
            self._finish(tag, outcome.Error(rebuild_error(payload)))
        elif kind == Kind.EVENT:
            self._workers.event(event_from(payload))

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

    def _fail_all(self, error: BaseException) -> None:
        for tag in list(self.pending):
            self._finish(tag, outcome.Error(error))

    async def close(self) -> None:
        """Close the channel (the worker exits on it), then wait for the process, or kill it."""
        if self.channel is not None:
            self.channel.close()
        if self.process is not None:
            await _reap(self.process)


class Child:
    """A worker process, started on this thread. (trio's open_process starts it on a thread of its
    cache, and a thread still there when ``-o setuid`` drops capabilities would keep them:
    capset(2) is per thread.) Its exit is awaited on a pidfd."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._watching: trio.Event | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except OSError:  # a kernel before 5.3: poll
            self._pidfd = None

    @classmethod
    def start(cls, argv: list[str], **kwargs: Any) -> Child:
        return cls(subprocess.Popen(argv, **kwargs))

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        """Until it has exited (several tasks may wait: one watches the pidfd)."""
        if self._watching is not None:
            await self._watching.wait()
        else:
            self._watching = trio.Event()
            try:
                while self._popen.poll() is None:
                    if self._pidfd is not None:
                        await trio.lowlevel.wait_readable(self._pidfd)
                    else:
                        await trio.sleep(0.05)
            finally:
                watching, self._watching = self._watching, None
                watching.set()
        code = self._popen.poll()
        if code is None:
            return await self.wait()  # the watcher was cancelled: watch in its place
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return code

    def kill(self) -> None:
        if self._popen.returncode is None:
            self._popen.kill()


async def _reap(process: Child) -> None:
    """Wait for a worker whose channel is closed to exit, as it does on its own; kill it after
    WORKER_EXIT_TIMEOUT."""
    with trio.move_on_after(WORKER_EXIT_TIMEOUT):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


def _how(returncode: int | None) -> str:
    if returncode is None:
        return "still running, channel closed"
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class RemoteMultipath:
    """A target over every worker's ``Multipath`` (see the module docstring): what ``net.pool``
    holds in place of a ``net.multipath.Multipath`` (both are ``net.api.LoggedIn``)."""

    def __init__(self, workers: Workers, target: str, portals: list[Portal]) -> None:
        self._workers = workers
        self._target = target
        self._portals = portals
        self._subs: list[tuple[WorkerProcess, int]] = []  # (worker, session id there)
        self._next = 0
        self.primary = 0  # the session id whose state is shown: the first worker's
        self.state: MultipathState | None = None  # the primary's, as it last reported
        self.reconnects_by_sid: dict[int, int] = {}
        self.on_unit_attention: UnitAttention | None = None
        self.on_fenced: Fenced | None = None
        self.registrars: dict[int, Registrar] = {}  # what a restarted worker's first login registers
        self._closed = False

    def __repr__(self) -> str:
        return f"<RemoteMultipath {self._target} on {len(self._subs)} worker(s)>"

    @property
    def target_name(self) -> str:
        return self._target

    @property
    def portal(self) -> Portal:
        return self.state.portal if self.state is not None else self._portals[0]

    @property
    def alive(self) -> bool:
        return not self._closed and (self.state is None or self.state.alive)

    @property
    def recovering(self) -> bool:
        return not self._closed and self.state is not None and self.state.recovering

    @property
    def reconnects(self) -> int:
        return sum(self.reconnects_by_sid.values())

    def paths(self) -> list[PathInfo]:
        if self.state is None:
            return [PathInfo(p, "logging_in", False) for p in self._portals]
        return list(self.state.paths)

    async def execute(self, lun: int, cdb: bytes, *, data_out: DataOut | None = None, expected_in: int = 0,
                      into: Into | None = None) -> ScsiResult:
        if self._closed:
            raise ConnectionLost(f"session to {self._target} is logged out")
        subs = self._subs
        self._next = (self._next + 1) % len(subs)
        worker, sid = subs[self._next]
        return await worker.execute(sid, lun, cdb, data_out, expected_in, into)

    def expect_identity(self, lun: int, serial: str, wwn: str) -> None:
        for worker, sid in self._subs:
            worker.tell_again(ExpectIdentity(sid, lun, serial, wwn))

    def start_paths(self) -> None:
        for worker, sid in self._subs:
            worker.tell_again(StartPaths(sid))

    def keep_registered(self, lun: int, registrar: Registrar | None) -> None:
        if registrar is None:
            self.registrars.pop(lun, None)
        else:
            self.registrars[lun] = registrar
        for worker, sid in self._subs:
            worker.tell(KeepRegistered(sid, lun, registrar))

    async def register(self, lun: int, registrar: Registrar) -> None:
        """In every worker, on each of its paths; none keeps it if one fails."""
        try:
            for worker, sid in self._subs:
                await worker.call(Register(sid, lun, registrar))
        except BaseException:
            self.keep_registered(lun, None)
            raise
        self.registrars[lun] = registrar

    async def every_nexus(self, lun: int, action: NexusAction) -> None:
        """In every worker, on each of its paths; the first error once all were tried."""
        errors: list[IscsiError] = []
        for worker, sid in self._subs:
            try:
                await worker.call(EveryNexus(sid, lun, action))
            except IscsiError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def fenced(self, lun: int) -> None:
        """A worker's multipath found the mount fenced on ``lun``: the others stop keeping it too."""
        if lun not in self.registrars:
            return  # another worker said so first
        self.keep_registered(lun, None)
        if self.on_fenced is not None:
            self.on_fenced(lun)

    def close_now(self) -> None:
        self._closed = True
        for worker, sid in self._subs:
            worker.tell(CloseNow(sid))

    async def logout(self) -> None:
        self._closed = True
        for worker, sid in self._subs:
            worker.forget(sid)
            try:
                await worker.call(Logout(sid))
            except (IscsiError, OSError) as exc:
                log.debug("logging out of %s in worker %d: %s", self._target, worker.index, exc)
            self._workers.sessions.pop(sid, None)


class Workers:
    """A mount's session workers. ``await Workers.start(nursery, count)``."""

    def __init__(self, nursery: trio.Nursery, count: int, arena: Arena, credentials: Credentials | None = None,
                 preload: tuple[str, ...] = ()) -> None:
        self.nursery = nursery
        self.arena = arena
        self.credentials = credentials  # -o setuid: each worker drops to them before it connects anywhere
        # The modules of what the calls carry (identity checks, registrars: functions and classes
        # of the layers above, pickled by name), imported by each worker before it drops.
        self.preload = preload
        self.processes = [WorkerProcess(self, i) for i in range(count)]
        self.sessions: dict[int, RemoteMultipath] = {}  # by sid (a multipath in a worker), unique across workers
        self._tags = itertools.count()
        self._sids = itertools.count(1)
        self.closing = False

    def __repr__(self) -> str:
        return f"<Workers {self.processes}>"

    @classmethod
    async def start(cls, nursery: trio.Nursery, count: int, arena: Arena | None = None,
                    credentials: Credentials | None = None, preload: tuple[str, ...] = ()) -> Workers:
        workers = cls(nursery, count, arena or Arena(), credentials, preload)
        for process in workers.processes:
            await process.spawn()
            nursery.start_soon(process.serve)
        return workers

    def next_tag(self) -> int:
        """1 .. 2**32 - 1 (a frame's tag is 32 bits; 0 asks for no reply), wrapping."""
        return next(self._tags) % 0xFFFFFFFF + 1

    async def open(self, portals: list[Portal], config: LoginConfig, policy: RecoveryPolicy, *,
                   path_policy: PathPolicy, identify: Identify | None,
                   identities: dict[int, tuple[str, str]] | None) -> RemoteMultipath:
        """A multipath to ``config``'s target in every worker (``Multipath.open``'s arguments), or
        the first error. Each worker's is logged in with an ISID of its own."""
        assert config.target_name is not None
        remote = RemoteMultipath(self, config.target_name, portals)
        try:
            for worker in self.processes:
                sid = next(self._sids)
                self.sessions[sid] = remote
                remote.primary = remote.primary or sid
                call = Open(sid, portals, config, policy, path_policy, identify, identities)
                remote._subs.append((worker, sid))  # before the login: a cancelled one is logged out too
                await worker.call(call)
                worker.opened[sid] = call
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(policy.logout_timeout):
                await remote.logout()
            raise
        return remote

    def event(self, event: Event) -> None:
        if isinstance(event, LogLine):
            logging.getLogger(event.logger).log(event.level, "%s", event.message)
            return
        remote = self.sessions.get(event.sid)
        if remote is None:
            return
        if isinstance(event, StateChanged):
            remote.reconnects_by_sid[event.sid] = event.state.reconnects
            if event.sid == remote.primary:
                remote.state = event.state
        elif isinstance(event, UnitAttentionReported):
            if remote.on_unit_attention is not None:
                remote.on_unit_attention(event.lun, event.sense)
        else:
            remote.fenced(event.lun)

    async def close(self) -> None:
        self.closing = True
        for process in self.processes:
            await process.close()

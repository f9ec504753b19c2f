"""The session workers of a mount (``-o workers=N``): starting them, reading their frames, and
starting one again when it dies (each worker's requests are ``net.exchange``'s, the targets they
serve ``net.remote``'s). A worker started again is told how each of its multipaths was opened,
with the same ISIDs, and what was said of them since; then its unanswered requests are sent to it
again, the commands among them within their budget."""

from __future__ import annotations

import itertools
import logging
import socket
import subprocess
import sys
from dataclasses import replace

import trio

from iscsifs.net.api import Identify
from iscsifs.net.arena import Arena
from iscsifs.net.channel import Channel, ChannelClosed, Parts
from iscsifs.net.child import Child, how_it_ended, reap
from iscsifs.net.exchange import Exchange
from iscsifs.net.ipc import (
    Call,
    Event,
    ExpectIdentity,
    Fenced,
    Kind,
    LogLine,
    Open,
    StateChanged,
    UnitAttentionReported,
    pickled,
)
from iscsifs.net.privileges import Credentials
from iscsifs.net.remote import RemoteMultipath
from iscsifs.proto.address import Portal
from iscsifs.proto.errors import ConnectionLost, IscsiError, LocalProtocolError
from iscsifs.proto.login import LoginConfig, new_isid
from iscsifs.proto.policy import DEFAULT_POLICY, PathPolicy, RecoveryPolicy

log = logging.getLogger("iscsifs")


class WorkerProcess:
    """One worker process and its channel, restarted when it dies."""

    def __init__(self, workers: Workers, index: int) -> None:
        self._workers = workers
        self.index = index
        self.process: Child | None = None
        self.channel: Channel | None = None
        self.up = False
        self.answered = False  # it has sent us a frame: it came up once, and is worth starting again
        self.exchange = Exchange(workers.arena, workers.next_tag, self.send, workers.event)
        # What a restarted worker must be told again: how each multipath was opened, and what was
        # said of it since (identities to check, start the other paths).
        self.opened: dict[int, Open] = {}
        self.said: dict[int, list[Call]] = {}
        self.restarts = 0

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"<WorkerProcess {self.index} pid {pid} {'up' if self.up else 'down'} pending {len(self.exchange)}>"

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

    # -- frames from the worker --------------------------------------------------------------------

    async def serve(self) -> None:
        """Read the worker's frames; when it dies, start it again and resend what it had."""
        delay = 0.1
        while True:
            assert self.channel is not None
            started = trio.current_time()
            async for kind, tag, payload in self.channel.frames():
                self.answered = True
                self.exchange.dispatch(kind, tag, payload)
            self.up = False
            self.channel.close()
            process = self.process
            assert process is not None
            policy = self._workers.policy
            await reap(process, policy.worker_exit_timeout)  # alive with its channel gone, it must not touch the arena
            if self._workers.closing:
                self.exchange.fail_all(ConnectionLost("unmounting"))
                return
            how = how_it_ended(process.returncode)
            if not self.answered:
                # It never came up (its interpreter or an import fails): starting it again would
                # fail the same way, forever, while the mount waits. Its requests fail instead.
                log.debug("session worker %d (pid %d) could not start (%s)", self.index, process.pid, how)
                self.exchange.close(IscsiError(f"session worker {self.index} could not start ({how})"))
                return
            # Commands that have used their budget fail now, and those of a LUN forgotten since.
            self.exchange.worker_died(how, self._forgotten)
            delay = 0.1 if trio.current_time() - started > 10 else min(delay * 2, policy.worker_restart_delay)
            log.warning("session worker %d (pid %d) ended (%s); starting it again, %d request%s to issue again",
                        self.index, process.pid, how, len(self.exchange), "" if len(self.exchange) == 1 else "s")
            while True:
                await trio.sleep(delay)
                try:
                    await self.spawn()
                    break
                except OSError as exc:  # out of processes or memory: keep trying, commands wait
                    log.error("cannot start session worker %d: %s; trying again", self.index, exc)
                    delay = min(delay * 2, policy.worker_restart_delay)
            self.restarts += 1
            for sid, opened in self.opened.items():
                remote = self._workers.sessions.get(sid)
                # What the layers above expect now, not what they expected at the first login,
                # nor the calls that changed it since (replayed, forgetting a LUN would undo its
                # new device's registration). Opened without identities, the other paths wait for
                # StartPaths (as the first time, while the first scan runs): the identities go
                # first, as settings, then what was said (StartPaths, if it was).
                registrars = dict(remote.registrars) if remote is not None else None
                identities = dict(remote.identities) if remote is not None else {}
                held_back = opened.identities is None
                self.tell(replace(opened, reopen=True, registrars=registrars,
                                  identities=None if held_back else identities))
                if held_back:
                    for lun, (serial, wwn) in identities.items():
                        self.tell(ExpectIdentity(sid, lun, serial, wwn))
                for told in self.said.get(sid, ()):
                    self.tell(told)
            for frame in self.exchange.frames():
                self.send(frame)

    def _forgotten(self, sid: int, lun: int) -> int:
        remote = self._workers.sessions.get(sid)
        return remote.forgotten.get(lun, 0) if remote is not None else 0

    async def close(self) -> None:
        """Close the channel (the worker exits on it), then wait for the process, or kill it."""
        if self.channel is not None:
            self.channel.close()
        if self.process is not None:
            await reap(self.process, self._workers.policy.worker_exit_timeout)


class Workers:
    """A mount's session workers. ``await Workers.start(nursery, count)``."""

    def __init__(self, nursery: trio.Nursery, count: int, arena: Arena, credentials: Credentials | None = None,
                 preload: tuple[str, ...] = (), policy: RecoveryPolicy = DEFAULT_POLICY) -> None:
        self.nursery = nursery
        self.arena = arena
        self.policy = policy  # how long a worker has to exit, and between restarts
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
                    credentials: Credentials | None = None, preload: tuple[str, ...] = (),
                    policy: RecoveryPolicy = DEFAULT_POLICY) -> Workers:
        workers = cls(nursery, count, arena or Arena(), credentials, preload, policy)
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
        remote = RemoteMultipath(config.target_name, portals, policy, self._logged_out)
        remote.identities = dict(identities or {})
        try:
            for worker in self.processes:
                sid = next(self._sids)
                self.sessions[sid] = remote
                remote.primary = remote.primary or sid
                # The ISIDs of this worker's paths, kept with the call: a worker started again
                # logs in with them (RFC 7143 §6.3.5) instead of leaving the dead one's tasks behind.
                isids = {portal: new_isid() for portal in dict.fromkeys(portals)}
                call = Open(sid, portals, config, policy, path_policy, identify, identities, isids=isids)
                remote._subs.append((worker, sid))  # before the login: a cancelled one is logged out too
                await worker.exchange.call(call)
                worker.opened[sid] = call
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(policy.logout_timeout):
                await remote.logout()
            raise
        return remote

    def _logged_out(self, sid: int) -> None:
        self.sessions.pop(sid, None)

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
        elif isinstance(event, Fenced):
            remote.fenced(event.lun)
        else:
            raise LocalProtocolError(f"a session worker sent an event we do not know: {event!r}")

    async def close(self) -> None:
        self.closing = True
        for process in self.processes:
            await process.close()

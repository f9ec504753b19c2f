"""A session worker: a process that runs sessions (``net.session``) for the FUSE process, so the
iSCSI work of every command (PDUs, digests, the target's sockets) runs beside FUSE dispatch on
another CPU. ``net.workers`` starts it as

    python -m iscsifs.net.worker CHANNEL_FD ARENA_FD ARENA_BYTES LOG_LEVEL CREDENTIALS [MODULE...]

and talks to it in ``net.ipc`` frames over the inherited socket. Data-In is received straight
into the shared arena (``net.arena``) where the FUSE process said; its log lines go back to the
FUSE process, which writes them where the mount logs. It ignores SIGINT, SIGTERM and SIGHUP
(they are the FUSE process's: it unmounts, logs out through us, then closes the channel) and
exits when the channel closes, so it never outlives its mount. With CREDENTIALS (``-o setuid``,
"-" for none) it drops to them before anything else (``net.privileges``), once it has imported
each MODULE that the calls it will get refer to.
"""

from __future__ import annotations

import importlib
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from iscsifs.net.api import DataOut, Into
from iscsifs.net.arena import Arena
from iscsifs.net.channel import Channel, ChannelClosed, Parts
from iscsifs.net.ipc import (
    EXEC,
    INLINE,
    RESULT,
    Call,
    CloseNow,
    EveryNexus,
    ExpectIdentity,
    Fenced,
    ForgetLun,
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
    call_from,
    error_frame,
    frame,
    pickled,
)
from iscsifs.net.multipath import Multipath
from iscsifs.net.privileges import Credentials, drop_privileges
from iscsifs.proto.errors import ConnectionLost, IscsiError
from iscsifs.scsi.sense import Sense

log = logging.getLogger("iscsifs")



Setting = StartPaths | ExpectIdentity | ForgetLun | KeepRegistered
SETTINGS = (StartPaths, ExpectIdentity, ForgetLun, KeepRegistered)


def _apply(session: Multipath, call: Setting) -> None:
    if isinstance(call, StartPaths):
        session.start_paths()
    elif isinstance(call, ExpectIdentity):
        session.expect_identity(call.lun, call.serial, call.wwn)
    elif isinstance(call, ForgetLun):
        session.forget_lun(call.lun)
    else:
        session.keep_registered(call.lun, call.registrar)


class _Entry:
    """A session of this worker, or one being (re)opened: commands wait for it."""

    def __init__(self) -> None:
        self.session: Multipath | None = None
        self.ready = trio.Event()
        self.error: BaseException | None = None
        self.closed = False
        self.settings: list[Setting] = []  # told while it is (re)opened: applied in order once it is open


class Worker:
    def __init__(self, nursery: trio.Nursery, channel: Channel, arena: Arena) -> None:
        self._nursery = nursery
        self._channel = channel
        self._arena = arena
        self._sessions: dict[int, _Entry] = {}
        # How each call is carried out, by its class (``net.ipc``).
        self._handlers: dict[type[Call], Callable[[Call], Awaitable[None]]] = {
            Open: self._open, Logout: self._logout, CloseNow: self._close_now, Register: self._register,
            EveryNexus: self._every_nexus, **{setting: self._set for setting in SETTINGS},
        }

    def send(self, parts: Parts) -> None:
        try:
            self._channel.send(parts)
        except ChannelClosed:
            pass  # the FUSE process is gone or closing; serve() ends on its own

    async def serve(self) -> None:
        self._nursery.start_soon(self._channel.flush_forever)
        async for kind, tag, payload in self._channel.frames():
            if kind == Kind.EXEC:
                self._exec(tag, payload)
            elif kind == Kind.CALL:
                call = call_from(payload)
                if isinstance(call, Open):
                    # Now, not when its task starts: the commands that follow it must find it.
                    self._sessions[call.sid] = _Entry()
                if not tag and isinstance(call, SETTINGS):
                    self._setting(call)
                else:
                    self._nursery.start_soon(self._call, tag, call)
        # The FUSE process closed the channel (unmount) or died: nothing more to serve.

    # -- commands ----------------------------------------------------------------------------------

    def _exec(self, tag: int, payload: memoryview) -> None:
        sid, lun, expected_in, out_len, offset, cdb_len = EXEC.unpack_from(payload)
        body = EXEC.size + cdb_len
        cdb = bytes(payload[EXEC.size : body])
        data_out = into = None
        if out_len:
            data_out = self._arena.view[offset : offset + out_len] if offset != INLINE else bytes(payload[body:])
        elif expected_in and offset != INLINE:
            into = self._arena.view[offset : offset + expected_in]
        # As it arrives, before a ForgetLun that follows it can be applied: it was issued first.
        entry = self._sessions.get(sid)
        forgotten = entry.session.forgotten(lun) if entry is not None and entry.session is not None else None
        self._nursery.start_soon(self._run, tag, sid, lun, cdb, data_out, expected_in, into, forgotten)

    async def _run(self, tag: int, sid: int, lun: int, cdb: bytes, data_out: DataOut | None, expected_in: int,
                   into: Into | None, forgotten: int | None) -> None:
        try:
            session = await self._session(sid)
            result = await session.execute(lun, cdb, data_out=data_out, expected_in=expected_in, into=into,
                                           forgotten=forgotten)
        except (IscsiError, OSError) as exc:
            self.send(error_frame(tag, exc))
            return
        data = b"" if into is not None else result.data
        head = RESULT.pack(result.status, result.response, len(result.sense), len(result.data), result.residual,
                           INLINE if into is None else 0)
        self.send(frame(Kind.RESULT, tag, head, result.sense, data))

    async def _session(self, sid: int) -> Multipath:
        entry = self._sessions.get(sid)
        if entry is None or entry.closed:
            raise ConnectionLost("session is logged out")
        if entry.session is None:
            await entry.ready.wait()  # reopening after a restart: as a recovery, bounded by its timeout
            if entry.session is None:
                raise entry.error or ConnectionLost("session is logged out")
        return entry.session

    # -- calls -------------------------------------------------------------------------------------

    async def _call(self, tag: int, call: Call) -> None:
        """Run one call by the table of handlers; a tag asks for its outcome (REPLY or FAILED)."""
        handler = self._handlers[type(call)]
        try:
            await handler(call)
        except (IscsiError, OSError) as exc:
            if tag:
                self.send(error_frame(tag, exc))
            return
        if tag:
            self.send(pickled(Kind.REPLY, tag, None))

    async def _open(self, call: Call) -> None:
        """Log in (``Multipath.open``). ``reopen``: this worker replaces one that died, so keep trying
        as a recovery would, while commands wait within recovery_timeout."""
        assert isinstance(call, Open)
        sid, config, policy = call.sid, call.config, call.policy
        entry = self._sessions[sid]
        started = trio.current_time()
        while True:
            try:
                # The ISIDs the FUSE process chose for this multipath: the same after a restart.
                session = await Multipath.open(self._nursery, call.portals, config, policy, isids=call.isids,
                                               path_policy=call.path_policy, identify=call.identify,
                                               identities=call.identities, registrars=call.registrars)
                break
            except (IscsiError, OSError) as exc:
                if not call.reopen or entry.closed:
                    self._sessions.pop(sid, None)
                    entry.error = exc
                    entry.ready.set()
                    raise
                if trio.current_time() - started > policy.recovery_timeout and entry.error is None:
                    entry.error = exc  # commands waiting now fail; later ones still wait for the login
                    entry.ready.set()
                    entry.ready = trio.Event()
                log.info("reopening the session to %s: %s; retrying", config.target_name, exc)
                await trio.sleep(policy.probe_interval)
        session.on_unit_attention = partial(self._unit_attention, sid)
        session.on_fenced = partial(self._fenced, sid)
        entry.session, entry.error = session, None
        for told in entry.settings:
            _apply(session, told)
        entry.settings.clear()
        entry.ready.set()
        if entry.closed:
            await session.logout()
            return
        self._nursery.start_soon(self._publish, sid, entry)

    async def _logout(self, call: Call) -> None:
        entry = self._sessions.pop(call.sid, None)
        if entry is None:
            return
        entry.closed = True
        if entry.session is not None:
            await entry.session.logout()

    async def _close_now(self, call: Call) -> None:
        entry = self._sessions.get(call.sid)
        if entry is not None and entry.session is not None:
            entry.session.close_now()

    def _setting(self, call: Setting) -> None:
        """A setting of a session (told, no answer), applied as it arrives: in the order the FUSE
        process told them, and before the commands that follow. A session being (re)opened
        takes them in that order once it is open."""
        entry = self._sessions.get(call.sid)
        if entry is None or entry.closed:
            return
        if entry.session is None:
            entry.settings.append(call)
        else:
            _apply(entry.session, call)

    async def _set(self, call: Call) -> None:
        """A setting told with a tag (its outcome wanted): once the session is open."""
        assert isinstance(call, SETTINGS)
        _apply(await self._session(call.sid), call)

    async def _register(self, call: Call) -> None:
        assert isinstance(call, Register)
        await (await self._session(call.sid)).register(call.lun, call.registrar)

    async def _every_nexus(self, call: Call) -> None:
        assert isinstance(call, EveryNexus)
        await (await self._session(call.sid)).every_nexus(call.lun, call.action)

    # -- events ------------------------------------------------------------------------------------

    def _unit_attention(self, sid: int, lun: int, sense: Sense) -> None:
        self.send(pickled(Kind.EVENT, 0, UnitAttentionReported(sid, lun, sense)))

    def _fenced(self, sid: int, lun: int) -> None:
        self.send(pickled(Kind.EVENT, 0, Fenced(sid, lun)))

    async def _publish(self, sid: int, entry: _Entry) -> None:
        """The session's paths, whenever they change: what ``paths()``, ``alive`` and ``stats``
        show in the FUSE process."""
        session = entry.session
        assert session is not None
        while not entry.closed:
            self.send(pickled(Kind.EVENT, 0, StateChanged(sid, MultipathState(
                session.portal, session.paths(), session.alive, session.recovering, session.reconnects))))
            await session.wait_changed()  # no await since the snapshot: no change is missed


class _Forward(logging.Handler):
    """This worker's log records, to the FUSE process's log."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._worker.send(pickled(Kind.EVENT, 0, LogLine(record.levelno, record.name, record.getMessage())))
        except Exception:  # noqa: BLE001 - logging.Handler's own convention: handleError reports it
            self.handleError(record)


async def serve(sock: socket.socket, arena: Arena, level: int) -> None:
    channel = Channel(sock, batch=True)
    async with trio.open_nursery() as nursery:
        worker = Worker(nursery, channel, arena)
        root = logging.getLogger()
        root.handlers[:] = [_Forward(worker)]
        root.setLevel(level)
        try:
            await worker.serve()
        except Exception:
            log.exception("session worker failed")  # its stderr is /dev/null: this reaches the log
            raise
        nursery.cancel_scope.cancel()
    channel.close()


def main(argv: list[str]) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    fd, arena_fd, arena_bytes, level = map(int, argv[:4])
    for module in argv[5:]:
        importlib.import_module(module)
    if argv[4] != "-":
        drop_privileges(Credentials.from_argument(argv[4]))  # before a byte from the network
    trio.run(serve, socket.socket(fileno=fd), Arena(arena_bytes, fd=arena_fd), level)


if __name__ == "__main__":
    main(sys.argv[1:])

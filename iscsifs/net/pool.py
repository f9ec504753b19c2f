"""A mount's targets: logged in when first needed, logged out when idle, bounded in number.

Each target of a mount has one ``PooledTarget`` for its whole life: what its LUN files and its
watch hold (a ``net.api.MountedTarget``). The ``LoggedIn`` target behind it (a ``Multipath``, or
a ``RemoteMultipath`` in the session workers), with its iSCSI sessions, is logged in by the first
command that needs it (an open, a read, a write, a rescan) and logged out by the pool when it has had
no open file and no command for ``idle_timeout`` seconds (0: never), or when ``max_sessions``
are open and a session for another target is needed (the least recently used idle one goes
first; with none idle, the opener waits for one). Every decision is a plain function of the
pool's state (``_idle``, ``_victim``); only then does it await.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from iscsifs.net.api import DataOut, Fenced, Into, LoggedIn, NexusAction, PathInfo, Registrar, UnitAttention
from iscsifs.proto.address import Portal
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import ConnectionLost
from iscsifs.proto.policy import DEFAULT_POLICY, RecoveryPolicy
from iscsifs.scsi.sense import Sense

log = logging.getLogger("iscsifs")

# Logs in to a target (a Multipath in this process, or a RemoteMultipath run by the session
# workers): the target, and the identities to check after logging in (None: not known yet, see
# Multipath.open).
Opener = Callable[[str, "dict[int, tuple[str, str]] | None"], Awaitable[LoggedIn]]


class PooledTarget:
    """One target, logged in on demand (see the module docstring)."""

    def __init__(self, pool: TargetPool, target: str, portals: list[Portal]) -> None:
        self._pool = pool
        self._target = target
        self._portals = portals
        self.multipath: LoggedIn | None = None
        self._opening = trio.Lock()
        self.on_unit_attention: UnitAttention | None = None
        self.on_reopen: Callable[[], None] | None = None  # logged in again after being logged out
        self.on_fenced: Fenced | None = None
        # LUNs kept registered (persistent reservations): the target stays logged in while there
        # is one, as a logout would end the registrations of its I_T nexuses.
        self.registrars: dict[int, Registrar] = {}
        self.identities: dict[int, tuple[str, str]] = {}
        self.scanned = False  # identities are known: later logins check them and start every path
        self.holds = 0  # open files
        self.busy = 0  # commands in flight
        self.last_used = trio.current_time()
        self.logins = 0

    def __repr__(self) -> str:
        state = "open" if self.multipath is not None else "logged out"
        return f"<PooledTarget {self._target} {state} holds={self.holds} busy={self.busy}>"

    # -- net.api.Target ---------------------------------------------------------------------

    @property
    def target_name(self) -> str:
        return self._target

    @property
    def portal(self) -> Portal:
        return self.multipath.portal if self.multipath is not None else self._portals[0]

    @property
    def alive(self) -> bool:
        return not self._pool.closed and (self.multipath is None or self.multipath.alive)

    def paths(self) -> list[PathInfo]:
        if self.multipath is not None:
            return self.multipath.paths()
        return [PathInfo(p, "logged_out", False) for p in self._portals]

    async def execute(self, lun: int, cdb: bytes, *, data_out: DataOut | None = None, expected_in: int = 0,
                      into: Into | None = None) -> ScsiResult:
        multipath = self.multipath or await self._pool.open(self)
        self.busy += 1
        try:
            return await multipath.execute(lun, cdb, data_out=data_out, expected_in=expected_in, into=into)
        finally:
            self.busy -= 1
            self.last_used = trio.current_time()
            if not self.busy:
                self._pool.may_have_room()  # its last command ended: it may be the idle one an opener waits for

    @property
    def reconnects(self) -> int:
        return self.multipath.reconnects if self.multipath is not None else 0

    def expect_identity(self, lun: int, serial: str, wwn: str) -> None:
        if serial or wwn:
            self.identities[lun] = (serial, wwn)
        if self.multipath is not None:
            self.multipath.expect_identity(lun, serial, wwn)

    def forget_lun(self, lun: int) -> None:
        self.identities.pop(lun, None)
        self.registrars.pop(lun, None)
        if self.multipath is not None:
            self.multipath.forget_lun(lun)

    async def register(self, lun: int, registrar: Registrar) -> None:
        multipath = self.multipath or await self._pool.open(self)
        await multipath.register(lun, registrar)
        self.registrars[lun] = registrar

    async def every_nexus(self, lun: int, action: NexusAction) -> None:
        multipath = self.multipath or await self._pool.open(self)
        await multipath.every_nexus(lun, action)

    def keep_registered(self, lun: int, registrar: Registrar | None) -> None:
        if registrar is None:
            self.registrars.pop(lun, None)
        else:
            self.registrars[lun] = registrar
        if self.multipath is not None:
            self.multipath.keep_registered(lun, registrar)

    def _fenced(self, lun: int) -> None:
        self.registrars.pop(lun, None)
        if self.on_fenced is not None:
            self.on_fenced(lun)

    def hold(self) -> None:
        self.holds += 1

    def release(self) -> None:
        self.holds -= 1
        self.last_used = trio.current_time()
        self._pool.changed()

    # -- for the pool and the mount ----------------------------------------------------------------

    def logged_in(self) -> LoggedIn | None:
        """The target if it is logged in now: commands on it do not count as use (polls)."""
        return self.multipath

    def scan_done(self) -> None:
        """The identities are registered: bring up the other paths, which are checked against them."""
        self.scanned = True
        if self.multipath is not None:
            self.multipath.start_paths()

    def _unit_attention(self, lun: int, sense: Sense) -> None:
        if self.on_unit_attention is not None:
            self.on_unit_attention(lun, sense)

    @property
    def idle(self) -> bool:
        return (self.multipath is not None and not self.holds and not self.busy and not self.registrars
                and not self._opening.locked())


class TargetPool:
    def __init__(self, nursery: trio.Nursery, opener: Opener, policy: RecoveryPolicy = DEFAULT_POLICY, *,
                 idle_timeout: float = 0.0, max_sessions: int = 64) -> None:
        self.policy = policy
        self._nursery = nursery
        self._opener = opener
        self.idle_timeout = idle_timeout
        self.max_sessions = max(1, max_sessions)
        self.targets: dict[str, PooledTarget] = {}
        self._open = 0  # sessions logged in or logging in
        self._changed = trio.Event()
        self._waiting_for_room = 0  # openers waiting for a session to become idle (max_sessions)
        self.closed = False
        if idle_timeout > 0:
            nursery.start_soon(self._reap)

    def __repr__(self) -> str:
        return (f"<TargetPool {self._open}/{self.max_sessions} open of {len(self.targets)} "
                f"idle_timeout={self.idle_timeout}>")

    def target(self, target: str, portals: list[Portal]) -> PooledTarget:
        handle = self.targets.get(target)
        if handle is None:
            handle = self.targets[target] = PooledTarget(self, target, portals)
        return handle

    @property
    def logged_in(self) -> int:
        return sum(1 for h in self.targets.values() if h.multipath is not None)

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def may_have_room(self) -> None:
        """``changed``, only when an opener waits for room: this is on every command's path."""
        if self._waiting_for_room:
            self.changed()

    # -- decisions -----------------------------------------------------------------------------------

    def _victim(self) -> PooledTarget | None:
        """The least recently used idle session, to make room for another."""
        idle = [h for h in self.targets.values() if h.idle]
        return min(idle, key=lambda h: h.last_used, default=None)

    def _expired(self, now: float) -> list[PooledTarget]:
        return [h for h in self.targets.values() if h.idle and now - h.last_used >= self.idle_timeout]

    # -- I/O -----------------------------------------------------------------------------------------

    async def open(self, handle: PooledTarget) -> LoggedIn:
        async with handle._opening:
            if handle.multipath is not None:
                return handle.multipath
            while self._open >= self.max_sessions:
                if self.closed:
                    raise ConnectionLost("unmounting")
                victim = self._victim()
                if victim is not None:
                    await self._logout(victim, "to make room (max_sessions)")
                else:
                    self._waiting_for_room += 1
                    try:
                        await self._changed.wait()
                    finally:
                        self._waiting_for_room -= 1
            if self.closed:
                raise ConnectionLost("unmounting")
            self._open += 1
            try:
                logged_in = await self._opener(handle.target_name, handle.identities if handle.scanned else None)
            except BaseException:
                self._open -= 1
                self.changed()
                raise
            logged_in.on_unit_attention = handle._unit_attention
            logged_in.on_fenced = handle._fenced
            for lun, registrar in handle.registrars.items():
                logged_in.keep_registered(lun, registrar)
            handle.multipath = logged_in
            handle.logins += 1
            handle.last_used = trio.current_time()
            if handle.logins > 1:
                log.debug("target %s: logged in again (it was idle)", handle.target_name)
                if handle.on_reopen is not None:
                    handle.on_reopen()
            return logged_in

    async def _logout(self, handle: PooledTarget, why: str) -> None:
        logged_in, handle.multipath = handle.multipath, None
        if logged_in is None:
            return
        log.debug("target %s: logging out %s", handle.target_name, why)
        try:
            with trio.move_on_after(self.policy.logout_timeout):
                await logged_in.logout()
        finally:
            self._open -= 1
            self.changed()

    async def _reap(self) -> None:
        """Log out sessions idle for idle_timeout; checks twice per period."""
        while not self.closed:
            await trio.sleep(max(0.5, self.idle_timeout / 2))
            for handle in self._expired(trio.current_time()):
                if handle.idle:  # still: an earlier logout awaited
                    await self._logout(handle, f"after {self.idle_timeout:g} s idle (idle_timeout)")

    def recovering(self) -> list[LoggedIn]:
        return [h.multipath for h in self.targets.values() if h.multipath is not None and h.multipath.recovering]

    async def close(self) -> None:
        """Log every session out (unmount)."""
        self.closed = True
        self.changed()
        for handle in list(self.targets.values()):
            await self._logout(handle, "(unmount)")

"""A target served by the session workers (``-o workers=N``), seen from the FUSE process: what
``net.pool`` holds in place of a ``net.multipath.Multipath`` (both are ``net.api.LoggedIn``).

pyfuse3 must stay in one process (its loop reads /dev/fuse after a readiness wait, so processes
cannot share it), and on one thread FUSE dispatch and the iSCSI work of every command compete for
one CPU. So the FUSE process only dispatches: each command goes to a worker (``net.worker``) as
one small frame (``net.exchange``), the worker runs the session and receives the data straight
into the shared arena (``net.arena``) from which the FUSE handler replies. Each worker runs a
``Multipath`` of its own with the ISIDs the FUSE process chose (``net.workers`` starts them and
starts a dead one again, which logs in with the same ISIDs: a reinstatement); commands spread
round-robin over the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from iscsifs.net.api import DataOut, Fenced, Into, NexusAction, PathInfo, Registrar, UnitAttention
from iscsifs.net.exchange import Exchange
from iscsifs.net.ipc import (
    Call,
    CloseNow,
    EveryNexus,
    ExpectIdentity,
    ForgetLun,
    KeepRegistered,
    Logout,
    MultipathState,
    Register,
    StartPaths,
)
from iscsifs.proto.address import Portal
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import ConnectionLost, IscsiError
from iscsifs.proto.policy import RecoveryPolicy

log = logging.getLogger("iscsifs")


class Worker(Protocol):
    """One session worker, as a target it serves needs it (``net.workers.WorkerProcess``)."""

    index: int
    exchange: Exchange

    def tell(self, call: Call) -> None: ...

    def tell_again(self, call: Call) -> None: ...

    def forget(self, sid: int) -> None: ...


class RemoteMultipath:
    """A target over every worker's ``Multipath`` (see the module docstring): what ``net.pool``
    holds in place of a ``net.multipath.Multipath`` (both are ``net.api.LoggedIn``)."""

    def __init__(self, target: str, portals: list[Portal], policy: RecoveryPolicy,
                 logged_out: Callable[[int], None]) -> None:
        self._target = target
        self._portals = portals
        self._policy = policy
        self._logged_out = logged_out  # a session id the workers' events no longer go to
        self._subs: list[tuple[Worker, int]] = []  # (worker, session id there)
        self._next = 0
        self.primary = 0  # the session id whose state is shown: the first worker's
        self.state: MultipathState | None = None  # the primary's, as it last reported
        self.reconnects_by_sid: dict[int, int] = {}
        self.on_unit_attention: UnitAttention | None = None
        self.on_fenced: Fenced | None = None
        self.registrars: dict[int, Registrar] = {}  # what a restarted worker's first login registers
        self.identities: dict[int, tuple[str, str]] = {}  # and what it expects of each LUN
        # LUN -> times forgotten: a command issued before that, unanswered when its worker died,
        # is not sent again (``Exchange.worker_died``).
        self.forgotten: dict[int, int] = {}
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
        return await worker.exchange.execute(sid, lun, cdb, data_out, expected_in, into, self._policy, self._target,
                                             self.forgotten.get(lun, 0))

    def expect_identity(self, lun: int, serial: str, wwn: str) -> None:
        if serial or wwn:
            self.identities[lun] = (serial, wwn)
        for worker, sid in self._subs:
            worker.tell(ExpectIdentity(sid, lun, serial, wwn))

    def forget_lun(self, lun: int) -> None:
        self.forgotten[lun] = self.forgotten.get(lun, 0) + 1
        self.identities.pop(lun, None)
        self.registrars.pop(lun, None)
        for worker, sid in self._subs:
            worker.tell(ForgetLun(sid, lun))

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
                await worker.exchange.call(Register(sid, lun, registrar))
        except BaseException:
            self.keep_registered(lun, None)
            raise
        self.registrars[lun] = registrar

    async def every_nexus(self, lun: int, action: NexusAction) -> None:
        """In every worker, on each of its paths; the first error once all were tried."""
        errors: list[IscsiError] = []
        for worker, sid in self._subs:
            try:
                await worker.exchange.call(EveryNexus(sid, lun, action))
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
                await worker.exchange.call(Logout(sid))
            except (IscsiError, OSError) as exc:
                log.debug("logging out of %s in worker %d: %s", self._target, worker.index, exc)
            self._logged_out(sid)

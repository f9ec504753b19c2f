"""A target over its paths (multipath): what the layers above use (``net.api.Target``).

Every portal a target is known at is a path: a ``Session`` of its own (own ISID) through that
portal, which reconnects by itself. ``failover`` (the default) sends every command to the
first healthy path in the configured order, so a path that comes back is used again; the others
stay logged in and kept alive as standby. ``round-robin`` spreads commands over healthy paths.

A command whose attempt ends without an answer (``Undelivered``: its connection died, it was
aborted or reset after its deadline) is issued again at once on another healthy path, with no
wait for the failed path's relogin, within its budget (``proto.session.Attempts``: at most
``retries + 1`` sends, never past ``command_bound`` from its start; one never sent costs
nothing), and fails with EIO after it, saying what was tried. With no healthy path, commands
wait for one; past ``recovery_timeout`` (counted from when the last path went down) or their own
bound they fail with EIO at once while the paths keep reconnecting, so the mount serves again
when the target returns.

After every login, each LUN the layers above registered (``expect_identity``) must answer with
the same serial and WWN (VPD 0x80/0x83): a path that leads to other devices than the healthy
paths do is refused; a LUN that is another device after every path was down fails its I/O. A
LUN with no device connected at a login (``LunAbsent``: a restarted target that is still adding
its LUNs back) is neither: its commands go through a path that serves it (the path without it
checked again behind them), or, with none, wait within their budget, the LUN checked again every
``RECHECK_INTERVAL`` seconds, until it is there and the same device (then registered, if it is
kept registered), or fenced as another. A LUN fenced so is let go when the layers above no longer
show it (``forget_lun``), and so is everything expected of a LUN they take away.

Each path is an I_T nexus of its own for persistent reservations: a LUN kept registered
(``keep_registered``) is registered again by every login of every path before it serves, and a
path told that its registration was preempted (UNIT ATTENTION 2A/03, 2A/05) asks the registrar
whether the mount was fenced or only that nexus lost it. RESERVATION CONFLICT is a status like
any other here: returned to the caller, never re-issued on another path.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import trio

from iscsifs.net.api import (
    DataOut,
    Executor,
    Fenced,
    Identify,
    Into,
    LunAbsent,
    LunForgotten,
    NexusAction,
    PathInfo,
    Registrar,
    UnitAttention,
)
from iscsifs.net.dial import Connect, tcp_connect
from iscsifs.net.nursery import fail_after
from iscsifs.net.session import (
    CONNECTION_ERRORS,
    ConnectionExecutor,
    Session,
    SessionHooks,
    SessionRefused,
    describe_command,
)
from iscsifs.proto.address import Portal
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import ConnectionLost, IscsiError, Undelivered
from iscsifs.proto.login import LoginConfig, new_isid
from iscsifs.proto.policy import PathPolicy, RecoveryPolicy
from iscsifs.proto.session import Attempts, SessionState
from iscsifs.proto.text import OperationalParams
from iscsifs.scsi.sense import Sense, SenseKey, Status, parse_sense

log = logging.getLogger("iscsifs")

MAX_QUEUE_DEPTH = 64
# SPC-4 §5.13.11: RESERVATIONS PREEMPTED and REGISTRATIONS PREEMPTED (tgt reports a PREEMPT and a
# CLEAR with 2A/03 to every nexus it unregistered).
PREEMPTED = frozenset({(0x2A, 0x03), (0x2A, 0x05)})
_GOOD = int(Status.GOOD)  # a plain int on every command's path (an IntEnum member is a lookup)
RECHECK_INTERVAL = 1.0  # seconds between identity checks of a LUN found absent at a login
# INQUIRY and REPORT LUNS go through whatever is at the LUN: they are how a rescan finds out.
_UNGATED = frozenset({0x12, 0xA0})


def _change(expected: tuple[str, str], now: tuple[str, str]) -> str:
    return f"(serial {expected[0]!r} -> {now[0]!r}, wwn {expected[1]!r} -> {now[1]!r})"


class RecoveryTimeout(IscsiError):
    """No path to the target has worked for longer than recovery_timeout."""


class LunChanged(IscsiError):
    """After a login, a LUN answers with another device's identity: its I/O is refused."""


class Multipath:
    """Create with ``await Multipath.open(...)``."""

    def __init__(self, nursery: trio.Nursery, config: LoginConfig, policy: RecoveryPolicy, *,
                 path_policy: PathPolicy = PathPolicy.FAILOVER, connect: Connect = tcp_connect,
                 identify: Identify | None = None, identities: dict[int, tuple[str, str]] | None = None,
                 registrars: dict[int, Registrar] | None = None, isids: dict[Portal, bytes] | None = None) -> None:
        assert config.target_name is not None
        self._nursery = nursery
        self._config = config
        self.policy = policy
        self.path_policy = path_policy
        self._hooks = SessionHooks(connect, self._path_changed, self._unit_attention, self._check_login)
        self._identify = identify
        self._paths: list[Session] = []
        self._usable: list[Session] = []  # healthy paths, in configured order: the command path reads only this
        self._held_back: list[Portal] = []  # portals that join once identities are known (start_paths)
        self._order: list[Portal] = []  # every portal, in the order of preference
        self._next = 0  # round-robin position
        self._closed = False
        self._changed = trio.Event()  # set (and replaced) whenever a path changes state
        self._down_since: float | None = None
        self.on_unit_attention: UnitAttention | None = None
        self.on_fenced: Fenced | None = None
        self._registrars: dict[int, Registrar] = dict(registrars or {})  # LUN -> how it stays registered
        self._joining: set[int] = set()  # LUNs being registered on every path now (``register``)
        self._checking: set[tuple[int, int]] = set()  # (id of a path, LUN) whose preemption is being looked at
        self.identities: dict[int, tuple[str, str]] = dict(identities or {})  # LUN -> (serial, wwn)
        self._lun_changed: dict[int, str] = {}
        # LUN -> how many times it was forgotten: a command ends if this changes while it runs.
        self._forgotten: dict[int, int] = {}
        # LUN -> the paths through which it had no device connected at their last login: their
        # commands to it check it again first (``_recheck``), one check at a time.
        self._absent: dict[int, set[Session]] = {}
        self._rechecked: dict[tuple[Session, int], float] = {}  # (path, LUN) -> when last checked again
        self._settled = trio.Event()  # set (and replaced) when an absent LUN is settled or a path changes
        self._recheck_lock = trio.Lock()
        self._behind: set[tuple[Session, int]] = set()  # (path, LUN) being checked again in the background
        # Each path's ISID, kept for good: a relogin, in this process or in a worker started again,
        # reinstates the path's session (§6.3.5) instead of leaving the old nexus's tasks behind.
        self.isids: dict[Portal, bytes] = dict(isids or {})
        self._bound = policy.command_bound
        # Commands in flight, at most queue_depth. TASK SET FULL shrinks it (_queue_full); it grows
        # back slowly (_queue_ok). A counter and a ParkingLot, not a CapacityLimiter: this is on
        # every command's path, and a free slot must cost no await.
        self._depth = MAX_QUEUE_DEPTH
        self._in_flight = 0
        self._slot_waiters = trio.lowlevel.ParkingLot()
        self._good_since_shrink = 0

    @classmethod
    async def open(cls, nursery: trio.Nursery, portals: list[Portal], config: LoginConfig, policy: RecoveryPolicy,
                   *, path_policy: PathPolicy = PathPolicy.FAILOVER, connect: Connect = tcp_connect,
                   identify: Identify | None = None,
                   identities: dict[int, tuple[str, str]] | None = None,
                   registrars: dict[int, Registrar] | None = None,
                   isids: dict[Portal, bytes] | None = None) -> Multipath:
        """Log in through the first of ``portals`` that takes us (or raise the first portal's
        error). The other portals become paths at once when ``identities`` are given, else once
        ``start_paths`` is called (after the caller has registered them). ``isids`` gives paths the
        ISIDs they had (a session worker started again); the others get new ones."""
        multipath = cls(nursery, config, policy, path_policy=path_policy, connect=connect, identify=identify,
                        identities=identities, registrars=registrars, isids=isids)
        portals = multipath._order = list(dict.fromkeys(portals))  # the same portal twice is one path
        errors: list[BaseException] = []
        for i, portal in enumerate(portals):
            try:
                path = await Session.open(nursery, portal, multipath._path_config(portal, first=i == 0), policy,
                                          multipath._hooks)
            except IscsiError as exc:
                if len(portals) > 1:
                    log.info("logging in to %s through %s failed: %s", config.target_name, portal, exc)
                errors.append(exc)
                continue
            multipath._paths.append(path)
            multipath._held_back = portals[:i] + portals[i + 1 :]
            multipath._refresh()
            if identities is not None:
                multipath.start_paths()
            return multipath
        raise errors[0]

    def start_paths(self) -> None:
        """The portals held back at open become paths (logging in in the background)."""
        held, self._held_back = self._held_back, []
        for portal in held:
            self.add_path(portal)

    def add_path(self, portal: Portal) -> None:
        if self._closed or any(p.portal == portal for p in self._paths):
            return
        self._paths.append(Session.start(self._nursery, portal, self._path_config(portal), self.policy, self._hooks))
        if portal not in self._order:
            self._order.append(portal)
        self._paths.sort(key=lambda p: self._order.index(p.portal))  # failover prefers the earlier ones
        log.info("target %s: path through %s added", self.target_name, portal)

    def _path_config(self, portal: Portal, first: bool = False) -> LoginConfig:
        """A session of its own through ``portal``: the ISID it had before, else the configured
        one for the first path, else a new one."""
        isid = self.isids.get(portal) or (self._config.isid if first else new_isid())
        self.isids[portal] = isid
        return replace(self._config, isid=isid, tsih=0)

    def __repr__(self) -> str:
        return f"<Multipath {self.target_name} {self.path_policy.value} paths={self._paths}>"

    # -- what the layers above see --------------------------------------------------------------------

    @property
    def target_name(self) -> str:
        return self._config.target_name or ""

    @property
    def portal(self) -> Portal:
        return (self._usable or self._paths)[0].portal

    @property
    def params(self) -> OperationalParams | None:
        """What the active path's connection negotiated."""
        return (self._usable or self._paths)[0].params

    @property
    def alive(self) -> bool:
        return not self._closed and any(p.state is not SessionState.FAILED for p in self._paths)

    @property
    def recovering(self) -> bool:
        return not self._closed and not self._usable

    @property
    def reconnects(self) -> int:
        """Logins beyond each path's first: how often a path came back."""
        return sum(max(0, p.logins - 1) for p in self._paths)

    async def wait_changed(self) -> None:
        """Until a path changes state (a session worker reports it to the FUSE process)."""
        await self._changed.wait()

    def paths(self) -> list[PathInfo]:
        active = self._usable if self.path_policy is PathPolicy.ROUND_ROBIN else self._usable[:1]
        return [p.info(p in active) for p in self._paths]

    def expect_identity(self, lun: int, serial: str, wwn: str) -> None:
        if serial or wwn:
            self.identities[lun] = (serial, wwn)

    def forget_lun(self, lun: int) -> None:
        """The layers above no longer show ``lun``: nothing is expected of it from now on (no
        identity, no registration, no fence as another device, no wait for it to come back), so
        whatever the target has under its number can be shown anew; its commands from before end
        (``LunForgotten``), those waiting for it at once."""
        self.identities.pop(lun, None)
        self._registrars.pop(lun, None)
        if self._lun_changed.pop(lun, None) is not None:
            log.info("LUN %d of %s: the file of the device it was is gone; its I/O is no longer refused",
                     lun, self.target_name)
        self._absent.pop(lun, None)
        for key in [key for key in self._rechecked if key[1] == lun]:
            del self._rechecked[key]
        self._forgotten[lun] = self._forgotten.get(lun, 0) + 1
        self._wake_rechecks()

    def forgotten(self, lun: int) -> int:
        """How many times ``lun`` was forgotten: a command issued before the next time ends then."""
        return self._forgotten.get(lun, 0) if self._forgotten else 0

    async def execute(self, lun: int, cdb: bytes, *, data_out: DataOut | None = None, expected_in: int = 0,
                      into: Into | None = None, forgotten: int | None = None) -> ScsiResult:
        """Run a command to completion across path failures, within its budget (see the module
        docstring). ``forgotten``: ``self.forgotten(lun)`` when the command was issued, if that
        was before this call (a session worker takes it as the command arrives)."""
        started = trio.current_time()
        expires = started + self._bound
        attempts: Attempts | None = None  # made only once an attempt failed: nothing on the usual path
        if forgotten is None:
            forgotten = self.forgotten(lun)
        while True:
            if lun in self._lun_changed or self._forgotten:
                self._check_still_shown(lun, cdb, forgotten)
            usable = self._usable
            if not usable:
                await self._wait_for_path(expires)
                continue
            if self.path_policy is PathPolicy.FAILOVER or len(usable) == 1:
                path = usable[0]
            else:
                self._next = (self._next + 1) % len(usable)
                path = usable[self._next]
            if self._absent and path in self._absent.get(lun, ()):
                absent = self._absent[lun]
                serving = [p for p in usable if p not in absent]
                if serving:
                    self._check_behind(path, lun)  # so that a preferred path is used again once it has it
                    path = serving[self._next % len(serving)]
                elif cdb[0] not in _UNGATED:
                    await self._recheck(path, lun, expires)
                    continue
            await self._take_slot()
            try:
                if lun in self._lun_changed or self._forgotten:
                    self._check_still_shown(lun, cdb, forgotten)  # again: the wait for a slot may have been long
                result: ScsiResult | None = await path.execute(lun, cdb, data_out=data_out, expected_in=expected_in,
                                                               into=into, expires=expires)
            except Undelivered as failed:
                result = None
                if attempts is None:
                    attempts = Attempts(describe_command(cdb, lun, self.target_name), started, self.policy)
                try:
                    attempts.after(failed, trio.current_time())
                except IscsiError as gave_up:
                    log.error("%s", gave_up)
                    raise
            finally:
                self._give_slot()
            if result is None:
                await trio.lowlevel.checkpoint()  # on another path, or on this one once it is back
                continue
            if result.status == _GOOD:
                if self._depth < MAX_QUEUE_DEPTH:
                    self._queue_ok()
            else:
                self._feedback(lun, result, path)
            return result

    def _check_still_shown(self, lun: int, cdb: bytes, forgotten: int) -> None:
        """Raise if the command must not go out: its LUN is fenced as another device (but for
        INQUIRY and REPORT LUNS, which a rescan sends to find out), or was forgotten since."""
        if lun in self._lun_changed and cdb[0] not in _UNGATED:
            raise LunChanged(self._lun_changed[lun])
        if self._forgotten.get(lun, 0) != forgotten:
            raise LunForgotten(f"LUN {lun} of {self.target_name} is no longer shown (gone, or another "
                               "device): its commands from before end")

    def _feedback(self, lun: int, result: ScsiResult, path: Session) -> None:
        """What a result other than GOOD says of the target beyond this command: TASK SET FULL
        shrinks the queue; a UNIT ATTENTION reports an event (SAM-5 §5.14) to whoever follows the
        target, before the caller retries the command; one that says this path's registration
        was preempted has the registrar look at it."""
        if result.status == Status.TASK_SET_FULL:
            self._queue_full()
        elif result.status == Status.CHECK_CONDITION:
            sense = parse_sense(result.sense)
            if sense is None or sense.key != SenseKey.UNIT_ATTENTION:
                return
            if sense.asc_ascq in PREEMPTED and lun in self._registrars:
                self._preempted(path, lun)
            if self.on_unit_attention is not None:
                self.on_unit_attention(lun, sense)

    # -- persistent reservations: each path is an I_T nexus --------------------------------------------

    def keep_registered(self, lun: int, registrar: Registrar | None) -> None:
        if registrar is None:
            self._registrars.pop(lun, None)
        else:
            self._registrars[lun] = registrar

    async def register(self, lun: int, registrar: Registrar) -> None:
        self._registrars[lun] = registrar
        self._joining.add(lun)
        try:
            await self.every_nexus(lun, registrar.register)
        except BaseException:
            if self._registrars.get(lun) is registrar:
                del self._registrars[lun]
            raise
        finally:
            self._joining.discard(lun)

    async def every_nexus(self, lun: int, action: NexusAction) -> None:
        """``action`` on each path logged in now; a path that is down meanwhile is left to its
        next login. The first error is raised once every path was tried."""
        errors: list[IscsiError] = []
        for path in list(self._usable):
            if path in self._absent.get(lun, ()):
                continue  # no device there now: registered once it is back (``_check_again``)
            try:
                await action(path, lun)
            except Undelivered as down:
                log.debug("LUN %d of %s through %s: %s; its next login sees to it", lun, self.target_name,
                          path.portal, down)
            except IscsiError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _fenced(self, lun: int, portal: Portal) -> None:
        if self._registrars.pop(lun, None) is None:
            return
        log.debug("LUN %d of %s: fenced, seen through %s", lun, self.target_name, portal)
        if self.on_fenced is not None:
            self.on_fenced(lun)

    def _preempted(self, path: Session, lun: int) -> None:
        key = (id(path), lun)
        if key not in self._checking:
            self._checking.add(key)
            self._nursery.start_soon(self._look_at_preemption, path, lun, key)

    async def _look_at_preemption(self, path: Session, lun: int, key: tuple[int, int]) -> None:
        try:
            registrar = self._registrars.get(lun)
            if registrar is None:
                return
            with fail_after(self.policy.command_timeout, f"the registration check of LUN {lun}"):
                kept = await registrar.preempted(path, lun)
            if not kept:
                self._fenced(lun, path.portal)
        except IscsiError as exc:
            log.warning("LUN %d of %s: checking the registration through %s failed: %s", lun, self.target_name,
                        path.portal, exc)
        finally:
            self._checking.discard(key)

    async def _register_after_login(self, path: Session, probe: ConnectionExecutor) -> None:
        """Every LUN kept registered, on this nexus, before it serves: until no registrar was
        added meanwhile (``every_nexus`` does not see a path that is not serving yet)."""
        done: dict[int, Registrar] = {}
        while True:
            todo = [(lun, r) for lun, r in self._registrars.items() if done.get(lun) is not r]
            if not todo:
                return
            for lun, registrar in todo:
                done[lun] = registrar
                if path in self._absent.get(lun, ()) or lun in self._lun_changed:
                    # No device there yet: registered once it is back (_check_again). Another
                    # device: not ours to register on (its file, once shown, joins by itself).
                    continue
                await self._register_on(path, probe, lun, registrar)  # a lost connection: the next login does

    async def _register_on(self, path: Session, executor: Executor, lun: int, registrar: Registrar) -> None:
        """``lun`` registered on ``path``'s nexus (through ``executor``) before it serves there;
        fenced if another host removed our key. A lost connection raises (whoever logs in next
        registers); a refusal is logged and the path serves unregistered (its writes may
        conflict), rather than never serving."""
        try:
            with fail_after(self.policy.command_timeout, f"registering LUN {lun} through {path.portal}"):
                if lun in self._joining:  # joining now: this path too, whatever others hold
                    await registrar.register(executor, lun)
                    kept = True
                else:
                    kept = await registrar.login(executor, lun)
        except CONNECTION_ERRORS:
            raise
        except IscsiError as exc:
            log.warning("LUN %d of %s: registering through %s failed: %s", lun, self.target_name, path.portal, exc)
            return
        if not kept:
            self._fenced(lun, path.portal)

    # -- paths ---------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        self._usable = [p for p in self._paths if p.usable]
        if self._usable:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = trio.current_time()
        self._changed.set()
        self._changed = trio.Event()
        self._wake_rechecks()

    def _path_changed(self, path: Session) -> None:
        was_active = bool(self._usable) and self._usable[0] is path
        self._refresh()
        round_robin = self.path_policy is PathPolicy.ROUND_ROBIN
        if path.state is SessionState.RECOVERING and self._usable and (was_active or round_robin):
            log.warning("target %s: path %s is down; commands go through %s", self.target_name, path.portal,
                        self._usable[0].portal)

    def _unit_attention(self, lun: int, sense: Sense) -> None:
        if self.on_unit_attention is not None:
            self.on_unit_attention(lun, sense)

    async def _wait_for_path(self, expires: float) -> None:
        if self._closed:
            raise ConnectionLost(f"session to {self.target_name} is logged out")
        if self._paths and all(p.state is SessionState.FAILED for p in self._paths):
            raise self._paths[0].error or ConnectionLost(f"every path to {self.target_name} was refused")
        if self._down_since is None:
            self._down_since = trio.current_time()
        changed = self._changed
        with trio.move_on_at(min(self._down_since + self.policy.recovery_timeout, expires)):
            await changed.wait()
        if changed.is_set():
            return
        if trio.current_time() >= expires:
            raise RecoveryTimeout(f"target {self.target_name}: no path came back within the command's "
                                  f"{self._bound:g} s (command_timeout x (retries + 1) + recovery_timeout); "
                                  "still reconnecting")
        raise RecoveryTimeout(f"target {self.target_name} unreachable for more than "
                              f"{self.policy.recovery_timeout:.0f} s (recovery_timeout); still reconnecting")

    async def _check_login(self, path: Session, probe: ConnectionExecutor) -> None:
        """Every registered LUN must be the same device through ``path`` as before; then the LUNs
        kept registered are registered on it."""
        await self._check_identities(path, probe)
        if self._registrars:
            await self._register_after_login(path, probe)

    async def _check_identities(self, path: Session, probe: ConnectionExecutor) -> None:
        if self._identify is None:
            return
        for lun, expected in list(self.identities.items()):
            absent: LunAbsent | None = None
            try:
                with fail_after(self.policy.command_timeout, f"the identity check of LUN {lun} through {path.portal}"):
                    now = await self._identify(probe, lun)
            except LunAbsent as exc:
                absent = exc
            if self.identities.get(lun) != expected:
                continue  # forgotten (or expected anew) while it was checked: nothing to compare with
            if absent is not None:
                # Not another device (that would fence it for good): not there yet. The login
                # stands, for the other LUNs; this one's go through a path that has it, or wait.
                log.warning("%s through %s since reconnecting; its commands go where it is, or wait for it", absent,
                            path.portal)
                self._absent.setdefault(lun, set()).add(path)
                continue
            self._present(path, lun)
            if now == expected:
                continue
            change = _change(expected, now)
            if self._witnessed(lun, path):
                raise SessionRefused(f"LUN {lun} of {self.target_name} is another device through {path.portal} "
                                  f"than through the other paths {change}: path refused")
            self._fence_changed(lun, f"LUN {lun} of {self.target_name} is another device since reconnecting through "
                                     f"{path.portal} {change}: refusing its I/O")

    def _witnessed(self, lun: int, path: Session) -> bool:
        """Another usable path has the LUN: it says what the LUN is, against ``path``."""
        absent = self._absent.get(lun, ())
        return any(p is not path and p not in absent for p in self._usable)

    def _present(self, path: Session, lun: int) -> None:
        paths = self._absent.get(lun)
        if paths is not None:
            paths.discard(path)
            if not paths:
                del self._absent[lun]
            self._wake_rechecks()

    def _fence_changed(self, lun: int, message: str) -> None:
        log.error("%s", message)
        self._lun_changed[lun] = message
        self._wake_rechecks()

    def _wake_rechecks(self) -> None:
        """Commands waiting in ``_recheck`` look again: a LUN is settled, or a path changed."""
        self._settled.set()
        self._settled = trio.Event()

    async def _recheck(self, path: Session, lun: int, expires: float) -> None:
        """A command to a LUN that had no device connected when ``path`` (the only usable path)
        last logged in: check it again, at most every RECHECK_INTERVAL per path whoever asks,
        then wait for that or for a path to change, all within the command's budget."""
        settled = self._settled  # taken first: what settles during the check wakes this wait too
        with trio.move_on_at(expires):
            await self._check_if_due(path, lun)
            if path not in self._absent.get(lun, ()):
                return
            with trio.move_on_after(RECHECK_INTERVAL):
                await settled.wait()
            return
        raise RecoveryTimeout(f"LUN {lun} of {self.target_name} has had no device connected through "
                              f"{path.portal} since it logged in again, for longer than the command's "
                              f"{self._bound:g} s")

    def _check_behind(self, path: Session, lun: int) -> None:
        """A command went to another path because ``lun`` was absent through ``path``: check it
        again there in the background, paced as ``_recheck`` is (no command waits for it)."""
        key = (path, lun)
        if key in self._behind or trio.current_time() < self._rechecked.get(key, -float("inf")) + RECHECK_INTERVAL:
            return
        self._behind.add(key)
        self._nursery.start_soon(self._check_in_background, path, lun)

    async def _check_in_background(self, path: Session, lun: int) -> None:
        key = (path, lun)
        try:
            if path in self._usable:
                await self._check_if_due(path, lun)
        except IscsiError as exc:  # no command waits for this check: the next one tries again
            log.info("LUN %d of %s: checking it again through %s: %s", lun, self.target_name, path.portal, exc)
        finally:
            self._behind.discard(key)

    async def _check_if_due(self, path: Session, lun: int) -> None:
        """``_check_again``, one check at a time whoever asks, at most every RECHECK_INTERVAL per
        (path, LUN), and only while the LUN is still absent through ``path``."""
        key = (path, lun)
        async with self._recheck_lock:
            if path in self._absent.get(lun, ()) and \
                    trio.current_time() >= self._rechecked.get(key, -float("inf")) + RECHECK_INTERVAL:
                try:
                    await self._check_again(path, lun)
                finally:
                    self._rechecked[key] = trio.current_time()

    async def _check_again(self, path: Session, lun: int) -> None:
        """One identity check of an absent LUN through ``path``. Still absent, or the check
        failed: it stays absent (the next check, or the command's budget, settles it). Back as
        itself: registered on this nexus if it is kept registered, then served. Back as another
        device: this path is dropped if other paths serve it as it was (its next login is
        refused, as at any login), else the LUN is fenced."""
        try:
            with fail_after(self.policy.command_timeout, f"the identity check of LUN {lun} through {path.portal}"):
                identity = await self._identify(path, lun) if self._identify is not None else None
        except LunAbsent:
            return
        except IscsiError as exc:
            log.info("LUN %d of %s: checking it again through %s: %s", lun, self.target_name, path.portal, exc)
            return
        expected = self.identities.get(lun)
        if identity is not None and expected is not None and identity != expected:
            change = _change(expected, identity)
            if self._witnessed(lun, path):
                log.error("LUN %d of %s is another device through %s than through the other paths %s: "
                          "dropping that path", lun, self.target_name, path.portal, change)
                if path.connection is not None and path.connection.alive:
                    path.connection.abort(ConnectionLost(f"LUN {lun} is another device through this path"))
                return
            self._present(path, lun)
            self._fence_changed(lun, f"LUN {lun} of {self.target_name} is another device since it came back "
                                     f"through {path.portal} {change}: refusing its I/O")
            return
        registrar = self._registrars.get(lun)
        if registrar is not None:
            try:
                await self._register_on(path, path, lun, registrar)
            except CONNECTION_ERRORS:
                return  # still absent here: this path's next login, or the next check, registers it
        self._present(path, lun)
        log.warning("LUN %d of %s is back through %s", lun, self.target_name, path.portal)

    # -- queue depth ------------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._depth

    async def _take_slot(self) -> None:
        if self._in_flight < self._depth and not self._slot_waiters:
            self._in_flight += 1
            return
        await self._slot_waiters.park()  # woken holding the slot its waker handed over (FIFO)

    def _give_slot(self) -> None:
        if self._slot_waiters and self._in_flight <= self._depth:
            self._slot_waiters.unpark()  # the slot passes on; _in_flight is unchanged
        else:
            self._in_flight -= 1

    def _queue_full(self) -> None:
        """The target said TASK SET FULL: allow fewer commands in flight than there are now."""
        depth = max(1, min(self._depth, self._in_flight) - 1)
        if depth < self._depth:
            log.info("target %s is full: queue depth %d -> %d", self.target_name, self._depth, depth)
            self._depth = depth
        self._good_since_shrink = 0

    def _queue_ok(self) -> None:
        """A command completed: after enough of them, allow one more in flight again."""
        if self._depth < MAX_QUEUE_DEPTH:
            self._good_since_shrink += 1
            if self._good_since_shrink >= 64:
                self._good_since_shrink = 0
                self._depth += 1
                if self._slot_waiters and self._in_flight < self._depth:
                    self._in_flight += 1
                    self._slot_waiters.unpark()

    # -- closing ----------------------------------------------------------------------------------------

    def close_now(self) -> None:
        """Give up at once (unmounting during an outage): waiting commands fail, nothing is sent."""
        self._closed = True
        for path in self._paths:
            path.close_now()
        self._refresh()

    async def logout(self) -> None:
        """Log out of every path (or just close those that are down); waiting commands fail at once."""
        if self._closed:
            return
        self._closed = True
        self._refresh()
        for path in self._paths:
            await path.logout()

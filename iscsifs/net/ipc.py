"""The frames between the FUSE process and its session workers (``net.workers``, ``net.worker``).

Sans-I/O, like ``proto``: bytes in, frames out. A frame is a fixed header (payload length,
kind, tag) and a payload. The two frames on every command's path, EXEC and RESULT, are fixed
structs; everything else is rare and pickled, as the typed messages below: a ``Call`` (the FUSE
process asks a worker's multipath to open, log out, ...), which the worker dispatches by its
class, and an ``Event`` (a worker tells the FUSE process). Both ends are the same program,
started by the FUSE process, over a private socket pair.
"""

from __future__ import annotations

import enum
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from iscsifs.net.api import Identify, NexusAction, PathInfo, Registrar
from iscsifs.proto.address import Portal
from iscsifs.proto.errors import IscsiError
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import PathPolicy, RecoveryPolicy
from iscsifs.scsi.sense import Sense

HEADER = struct.Struct("<IB3xI")  # payload length, Kind, tag (0: no reply wanted)
# session id, LUN, expected_in, data-out length, arena offset of the data (-1: none, inline), CDB length
EXEC = struct.Struct("<IQIIqB")
# status, iSCSI response, sense length, data-in length, residual, where the data-in is: INLINE (after
# the sense), or anything else for in the arena at the offset the EXEC gave
RESULT = struct.Struct("<BBHIqq")
INLINE = -1


class Kind(enum.IntEnum):
    EXEC = 1  # FUSE process -> worker: one SCSI command
    CALL = 2  # FUSE process -> worker: a Call, pickled
    RESULT = 3  # worker: a command's outcome, data-in after the sense when INLINE
    FAILED = 4  # worker: a command or call raised; the exception, pickled
    REPLY = 5  # worker: a call's return value, pickled
    EVENT = 6  # worker: an Event (unit attention, path state, a log line), pickled


@dataclass(frozen=True, slots=True)
class MultipathState:
    """What a worker's multipath shows the FUSE process, sent whenever a path changes state."""

    portal: Portal
    paths: list[PathInfo]
    alive: bool
    recovering: bool
    reconnects: int


# -- calls: the FUSE process to a worker; ``sid`` names a multipath there ------------------------


@dataclass(frozen=True, slots=True)
class Open:
    """Log in (``Multipath.open``). ``reopen``: the worker replaces one that died, so it keeps
    trying as a recovery would."""

    sid: int
    portals: list[Portal]
    config: LoginConfig
    policy: RecoveryPolicy
    path_policy: PathPolicy
    identify: Identify | None
    identities: dict[int, tuple[str, str]] | None
    reopen: bool = False
    registrars: dict[int, Registrar] | None = None  # reopening: the LUNs kept registered, from the first login
    # Each portal's ISID, chosen by the FUSE process: a worker started again logs in with them, a
    # reinstatement (RFC 7143 §6.3.5) that ends the dead worker's tasks at the target first.
    isids: dict[Portal, bytes] | None = None


@dataclass(frozen=True, slots=True)
class Logout:
    sid: int


@dataclass(frozen=True, slots=True)
class CloseNow:
    sid: int


@dataclass(frozen=True, slots=True)
class StartPaths:
    sid: int


@dataclass(frozen=True, slots=True)
class ExpectIdentity:
    sid: int
    lun: int
    serial: str
    wwn: str


@dataclass(frozen=True, slots=True)
class ForgetLun:
    sid: int
    lun: int


@dataclass(frozen=True, slots=True)
class KeepRegistered:
    sid: int
    lun: int
    registrar: Registrar | None


@dataclass(frozen=True, slots=True)
class Register:
    sid: int
    lun: int
    registrar: Registrar


@dataclass(frozen=True, slots=True)
class EveryNexus:
    sid: int
    lun: int
    action: NexusAction


Call = Open | Logout | CloseNow | StartPaths | ExpectIdentity | ForgetLun | Register | KeepRegistered | EveryNexus
CALLS = (Open, Logout, CloseNow, StartPaths, ExpectIdentity, ForgetLun, Register, KeepRegistered, EveryNexus)


# -- events: a worker to the FUSE process ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateChanged:
    sid: int
    state: MultipathState


@dataclass(frozen=True, slots=True)
class UnitAttentionReported:
    sid: int
    lun: int
    sense: Sense


@dataclass(frozen=True, slots=True)
class LogLine:
    level: int
    logger: str
    message: str


@dataclass(frozen=True, slots=True)
class Fenced:
    sid: int
    lun: int


Event = StateChanged | UnitAttentionReported | Fenced | LogLine
EVENTS = (StateChanged, UnitAttentionReported, Fenced, LogLine)


def frame(kind: Kind, tag: int, *parts: bytes | bytearray | memoryview) -> list[bytes | bytearray | memoryview]:
    """The buffers of one frame, for ``socket.sendmsg`` (no copy of the data parts)."""
    return [HEADER.pack(sum(len(p) for p in parts), kind, tag), *parts]


def exec_frame(tag: int, sid: int, lun: int, cdb: bytes, expected_in: int, out_len: int, offset: int,
               inline: bytes | bytearray | memoryview | None) -> list[bytes | bytearray | memoryview]:
    head = EXEC.pack(sid, lun, expected_in, out_len, offset, len(cdb))
    return frame(Kind.EXEC, tag, head, cdb, inline) if inline is not None else frame(Kind.EXEC, tag, head, cdb)


def pickled(kind: Kind, tag: int, value: object) -> list[bytes | bytearray | memoryview]:
    return frame(kind, tag, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def unpickle(payload: memoryview) -> object:
    return pickle.loads(payload)


def call_from(payload: memoryview) -> Call:
    call = pickle.loads(payload)
    if not isinstance(call, CALLS):
        raise TypeError(f"not a call: {type(call).__name__}")
    return call


def event_from(payload: memoryview) -> Event:
    event = pickle.loads(payload)
    if not isinstance(event, EVENTS):
        raise TypeError(f"not an event: {type(event).__name__}")
    return event


def error_frame(tag: int, exc: BaseException) -> list[bytes | bytearray | memoryview]:
    """A FAILED frame that rebuilds ``exc`` as it is, class and attributes (LoginError's status
    decides the exit code, an error's ``errno`` what the file user sees), without calling its
    ``__init__``; an error that does not pickle becomes an IscsiError with its message."""
    try:
        return pickled(Kind.FAILED, tag, (type(exc), exc.args, vars(exc)))
    except Exception:  # noqa: BLE001 - pickling an arbitrary error can raise anything: send its words
        return pickled(Kind.FAILED, tag, (IscsiError, (f"{type(exc).__name__}: {exc}",), {}))


def rebuild_error(payload: memoryview) -> BaseException:
    cls, args, attributes = pickle.loads(payload)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return IscsiError(f"a session worker failed with {cls!r}")
    exc = cls.__new__(cls)
    exc.args = args
    vars(exc).update(attributes)
    return exc


class FrameBuffer:
    """Receives bytes (``space``/``filled``) and yields whole frames. A payload is a view into
    the buffer, valid until the next ``space()``: copy what outlives the loop over ``frames()``."""

    def __init__(self, size: int = 1 << 18) -> None:
        self._buf = bytearray(size)
        self._start = 0
        self._end = 0

    def space(self) -> memoryview:
        """Where to receive next: the unread bytes are moved to the front, and the buffer grows
        to hold the frame that has begun."""
        if self._start:
            pending = self._end - self._start
            self._buf[:pending] = self._buf[self._start : self._end]
            self._start, self._end = 0, pending
        need = HEADER.size
        if self._end >= HEADER.size:
            need += HEADER.unpack_from(self._buf)[0]
        if need > len(self._buf) or self._end == len(self._buf):
            # A new buffer, not a resize: a payload view handed out earlier may still be alive.
            grown = bytearray(max(need, 2 * len(self._buf)))
            grown[: self._end] = self._buf[: self._end]
            self._buf = grown
        return memoryview(self._buf)[self._end :]

    def filled(self, n: int) -> None:
        self._end += n

    def frames(self) -> Iterator[tuple[int, int, memoryview]]:
        view = memoryview(self._buf)
        while self._end - self._start >= HEADER.size:
            length, kind, tag = HEADER.unpack_from(self._buf, self._start)
            end = self._start + HEADER.size + length
            if end > self._end:
                return
            payload = view[self._start + HEADER.size : end]
            self._start = end
            yield kind, tag, payload

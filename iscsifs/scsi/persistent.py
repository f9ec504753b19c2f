"""Persistent reservations (SPC-4 §5.13, §6.15, §6.16): the CDBs and parameter lists of PERSISTENT
RESERVE IN and OUT, and their answers as typed data. Nothing here keeps state or does I/O."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from iscsifs.scsi.response import ScsiParseError

PERSISTENT_RESERVE_IN = 0x5E
PERSISTENT_RESERVE_OUT = 0x5F
LU_SCOPE = 0x0  # the only scope SPC-4 keeps (element scope is obsolete)
MAX_KEY = (1 << 64) - 1


class PrIn(enum.IntEnum):
    """SPC-4 Table 162: PERSISTENT RESERVE IN service actions."""

    READ_KEYS = 0x00
    READ_RESERVATION = 0x01
    REPORT_CAPABILITIES = 0x02
    READ_FULL_STATUS = 0x03


class PrOut(enum.IntEnum):
    """SPC-4 Table 172: PERSISTENT RESERVE OUT service actions."""

    REGISTER = 0x00
    RESERVE = 0x01
    RELEASE = 0x02
    CLEAR = 0x03
    PREEMPT = 0x04
    PREEMPT_AND_ABORT = 0x05
    REGISTER_AND_IGNORE_EXISTING_KEY = 0x06
    REGISTER_AND_MOVE = 0x07


class PrType(enum.IntEnum):
    """SPC-4 Table 169: persistent reservation types."""

    WRITE_EXCLUSIVE = 0x1
    EXCLUSIVE_ACCESS = 0x3
    WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5
    EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6
    WRITE_EXCLUSIVE_ALL_REGISTRANTS = 0x7
    EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 0x8

    @property
    def word(self) -> str:
        """The name on the command line and in JSON: ``write-exclusive-registrants-only``."""
        return self.name.lower().replace("_", "-")

    @property
    def single_holder(self) -> bool:
        """Held by the one I_T nexus that reserved (SPC-4 §5.13.10): other nexuses of the same
        host, its other paths included, conflict as another host would."""
        return self in (PrType.WRITE_EXCLUSIVE, PrType.EXCLUSIVE_ACCESS)

    @property
    def all_registrants(self) -> bool:
        """Every registered I_T nexus is a holder (SPC-4 §5.13.10)."""
        return self in (PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS)


PR_TYPE_WORDS: dict[str, PrType] = {t.word: t for t in PrType}


def parse_pr_type(text: str) -> PrType:
    """A reservation type by its name (``exclusive-access``, as ``PrType.word``); ValueError else."""
    try:
        return PR_TYPE_WORDS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown reservation type {text!r} (one of: {', '.join(PR_TYPE_WORDS)})") from None


def parse_key(text: str) -> int:
    """A reservation key: 64-bit, as ``0x``-prefixed hex or decimal, not zero (zero means "no key"
    in every PERSISTENT RESERVE OUT parameter list). ValueError otherwise."""
    raw = text.strip()
    try:
        key = int(raw, 16) if raw.lower().startswith("0x") else int(raw, 10)
    except ValueError:
        raise ValueError(f"reservation key {text!r} is not a number (0x-prefixed hex or decimal)") from None
    if not 0 < key <= MAX_KEY:
        raise ValueError(f"reservation key {text!r} must be between 1 and 0x{MAX_KEY:x}")
    return key


def key_text(key: int) -> str:
    """How a key is shown: 16 hex digits, as sg_persist shows them."""
    return f"0x{key:016x}"


# -- CDBs and parameter lists --------------------------------------------------------------------


def persistent_reserve_in(action: PrIn, allocation_length: int = 8192) -> bytes:
    """SPC-4 §6.15, Table 161: a 10-byte CDB; the allocation length is 16 bits."""
    return struct.pack(">BB5xHx", PERSISTENT_RESERVE_IN, action & 0x1F, min(allocation_length, 0xFFFF))


PARAMETER_LIST_LENGTH = 24  # the basic parameter list (SPC-4 §6.16.3, Table 174)


def persistent_reserve_out(action: PrOut, key: int = 0, service_action_key: int = 0,
                           pr_type: PrType | None = None, *, all_tg_pt: bool = False) -> tuple[bytes, bytes]:
    """SPC-4 §6.16, Table 171: the CDB and its basic parameter list. ``key`` is the RESERVATION KEY
    (the caller's registered key; 0 when it has none), ``service_action_key`` the SERVICE ACTION
    RESERVATION KEY (the new key of a REGISTER, the key a PREEMPT removes). ALL_TG_PT registers
    the key on every target port at once, where REPORT CAPABILITIES says ATP_C."""
    scope_type = (LU_SCOPE << 4) | (pr_type or 0)
    cdb = struct.pack(">BBBxxIx", PERSISTENT_RESERVE_OUT, action & 0x1F, scope_type, PARAMETER_LIST_LENGTH)
    params = struct.pack(">QQ4xBx2x", key, service_action_key, 0x04 if all_tg_pt else 0)
    return cdb, params


# -- answers -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisteredKeys:
    """READ KEYS (SPC-4 §6.15.2): one key per registered I_T nexus, so a key registered through
    two paths is listed twice."""

    generation: int  # PRGENERATION: counts PERSISTENT RESERVE OUT commands that changed registrations
    keys: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Reservation:
    """READ RESERVATION (SPC-4 §6.15.3): the reservation and its holder's key, or none."""

    generation: int
    key: int | None = None  # the holder's; None: no reservation. 0 for an all-registrants reservation.
    type: PrType | None = None


@dataclass(frozen=True, slots=True)
class PrCapabilities:
    """REPORT CAPABILITIES (SPC-4 §6.15.4), what iscsifs looks at."""

    all_target_ports: bool  # ATP_C: a REGISTER may carry ALL_TG_PT
    types: frozenset[PrType]  # the reservation types the LUN supports (all of them if it gives no mask)


def _header(data: bytes | bytearray | memoryview, what: str) -> tuple[int, int, bytes]:
    raw = bytes(data)
    if len(raw) < 8:
        raise ScsiParseError(f"{what} answer too short ({len(raw)} bytes)")
    generation, length = struct.unpack_from(">II", raw)
    return generation, length, raw[8 : 8 + length]


def parse_read_keys(data: bytes | bytearray | memoryview) -> tuple[RegisteredKeys, int]:
    """The keys, and the ADDITIONAL LENGTH the target has (ask again with more room when larger
    than what came)."""
    generation, length, body = _header(data, "READ KEYS")
    if length % 8:
        raise ScsiParseError(f"READ KEYS additional length {length} is not a multiple of 8")
    whole = len(body) - len(body) % 8
    keys = tuple(k for (k,) in struct.iter_unpack(">Q", body[:whole]))
    return RegisteredKeys(generation, keys), length


def parse_read_reservation(data: bytes | bytearray | memoryview) -> Reservation:
    generation, length, body = _header(data, "READ RESERVATION")
    if length == 0:
        return Reservation(generation)
    if length < 16 or len(body) < 16:
        raise ScsiParseError(f"READ RESERVATION additional length {length} with {len(body)} bytes (16 expected)")
    key = struct.unpack_from(">Q", body)[0]
    code = body[13] & 0x0F
    try:
        pr_type = PrType(code)
    except ValueError:
        raise ScsiParseError(f"READ RESERVATION gives type 0x{code:x}, which SPC-4 does not define") from None
    return Reservation(generation, key, pr_type)


# Table 167: the PERSISTENT RESERVATION TYPE MASK, bit by bit (byte 4 high to low, then byte 5).
_TYPE_MASK_BITS: tuple[tuple[int, int, PrType], ...] = (
    (4, 0x80, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS), (4, 0x40, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY),
    (4, 0x20, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY), (4, 0x08, PrType.EXCLUSIVE_ACCESS),
    (4, 0x02, PrType.WRITE_EXCLUSIVE), (5, 0x01, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS),
)


def parse_report_capabilities(data: bytes | bytearray | memoryview) -> PrCapabilities:
    raw = bytes(data)
    if len(raw) < 8:
        raise ScsiParseError(f"REPORT CAPABILITIES answer too short ({len(raw)} bytes)")
    all_target_ports = bool(raw[2] & 0x04)
    if not raw[3] & 0x80:  # TMV 0: the type mask says nothing
        return PrCapabilities(all_target_ports, frozenset(PrType))
    return PrCapabilities(all_target_ports, frozenset(t for i, bit, t in _TYPE_MASK_BITS if raw[i] & bit))

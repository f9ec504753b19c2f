"""Text key=value encoding and operational parameter negotiation (RFC 7143 §6, §13).

The negotiation rules are a table (``KEYS``): each key's kind says how an offer and an answer
combine. ``Negotiation`` holds what we offer and turns the target's answers into typed
``OperationalParams``, producing replies for keys the target offers on its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from iscsifs.proto.errors import NegotiationError, RemoteProtocolError

MAX_KEY_NAME = 63  # §6.1: key names are at most 63 bytes
MAX_VALUE = 8192  # §6.1: a simple value is at most 255 bytes; binary/list values may be longer
MAX_TEXT_TOTAL = 1 << 20  # bound on one (continued) text exchange we are willing to buffer


def parse_text(data: bytes | bytearray | memoryview) -> list[tuple[str, str]]:
    """Split a text data segment into (key, value) pairs, in order. Pad NULs are ignored."""
    raw = bytes(data)
    if len(raw) > MAX_TEXT_TOTAL:
        raise RemoteProtocolError("text data too long")
    pairs: list[tuple[str, str]] = []
    for item in raw.split(b"\0"):
        if not item:
            continue
        key, sep, value = item.partition(b"=")
        if not sep or not key or len(key) > MAX_KEY_NAME:
            raise RemoteProtocolError(f"malformed text key=value pair ({len(item)} bytes)")
        if len(value) > MAX_VALUE:
            raise RemoteProtocolError(f"text value for {key[:MAX_KEY_NAME]!r} too long")
        try:
            pairs.append((key.decode("ascii"), value.decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("text key=value pair is not valid UTF-8") from exc
    return pairs


def encode_text(pairs: list[tuple[str, str]] | dict[str, str]) -> bytes:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in items)


class Kind(enum.Enum):
    """How an offer and an answer combine (§6.2)."""

    DECLARATIVE = "declarative"  # each side states its own value; no answer
    LIST = "list"  # the answer is the first value in the offer's list the answerer supports
    AND = "and"  # Boolean, result = offer AND answer
    OR = "or"  # Boolean, result = offer OR answer
    MIN = "min"  # numerical, result = min(offer, answer)
    MAX = "max"  # numerical, result = max(offer, answer)


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    kind: Kind
    default: str
    low: int = 0
    high: int = 0


def _n(name: str, kind: Kind, default: int, low: int, high: int) -> KeySpec:
    return KeySpec(name, kind, str(default), low, high)


# §13: the operational keys of a Normal or Discovery session, with RFC defaults and ranges.
KEYS: dict[str, KeySpec] = {k.name: k for k in (
    KeySpec("HeaderDigest", Kind.LIST, "None"),
    KeySpec("DataDigest", Kind.LIST, "None"),
    _n("MaxConnections", Kind.MIN, 1, 1, 65535),
    KeySpec("InitialR2T", Kind.OR, "Yes"),
    KeySpec("ImmediateData", Kind.AND, "Yes"),
    _n("MaxRecvDataSegmentLength", Kind.DECLARATIVE, 8192, 512, (1 << 24) - 1),
    _n("MaxBurstLength", Kind.MIN, 262144, 512, (1 << 24) - 1),
    _n("FirstBurstLength", Kind.MIN, 65536, 512, (1 << 24) - 1),
    _n("DefaultTime2Wait", Kind.MAX, 2, 0, 3600),
    _n("DefaultTime2Retain", Kind.MIN, 20, 0, 3600),
    _n("MaxOutstandingR2T", Kind.MIN, 1, 1, 65535),
    KeySpec("DataPDUInOrder", Kind.OR, "Yes"),
    KeySpec("DataSequenceInOrder", Kind.OR, "Yes"),
    _n("ErrorRecoveryLevel", Kind.MIN, 0, 0, 2),
    KeySpec("IFMarker", Kind.AND, "No"),  # obsolete in RFC 7143, still sent by old targets
    KeySpec("OFMarker", Kind.AND, "No"),
    KeySpec("TargetAlias", Kind.DECLARATIVE, ""),
    KeySpec("TargetPortalGroupTag", Kind.DECLARATIVE, ""),
    KeySpec("TargetAddress", Kind.DECLARATIVE, ""),
    KeySpec("TaskReporting", Kind.LIST, "RFC3720"),
)}

# Keys the target may answer that are not operational parameters we negotiate.
_IGNORED_ANSWERS = {"TargetName", "InitiatorName", "SessionType", "InitiatorAlias", "AuthMethod"}
_NO_ANSWER_VALUES = {"Irrelevant", "NotUnderstood", "Reject"}


def _number(spec: KeySpec, value: str) -> int:
    try:
        n = int(value, 0) if value.lower().startswith("0x") else int(value)
    except ValueError:
        raise RemoteProtocolError(f"{spec.name}={value!r} is not a number") from None
    if not spec.low <= n <= spec.high:
        raise RemoteProtocolError(f"{spec.name}={n} is outside {spec.low}..{spec.high}")
    return n


def _boolean(spec: KeySpec, value: str) -> bool:
    if value not in ("Yes", "No"):
        raise RemoteProtocolError(f"{spec.name}={value!r} is not Yes or No")
    return value == "Yes"


@dataclass(frozen=True, slots=True)
class OperationalParams:
    """The negotiated result (§13); defaults are the RFC's, used for keys never answered.

    ``max_recv_data_segment_length`` is the *target's* declared limit: the most we may put in
    one PDU we send. ``our_max_recv_data_segment_length`` is what we declared for our receives.
    """

    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_recv_data_segment_length: int = 8192
    our_max_recv_data_segment_length: int = 8192
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    target_alias: str = ""
    target_portal_group_tag: int = 0


@dataclass(frozen=True, slots=True)
class Offer:
    """What the initiator proposes. Defaults favour throughput (§13.5, §13.13, §13.14)."""

    header_digest: tuple[str, ...] = ("CRC32C", "None")  # cheap, and catches what TCP's checksum misses
    data_digest: tuple[str, ...] = ("None", "CRC32C")  # None unless the target insists
    max_connections: int = 1
    initial_r2t: bool = False
    immediate_data: bool = True
    # As large as our largest command (lun.DEFAULT_MAX_TRANSFER): tgt then sends a 1 MiB read in
    # one Data-In, received straight into its buffer, not four (sequential reads +10%).
    max_recv_data_segment_length: int = 1 << 20
    max_burst_length: int = 16776192
    first_burst_length: int = 262144
    default_time2wait: int = 2
    default_time2retain: int = 0  # ErrorRecoveryLevel 0: nothing to retain
    max_outstanding_r2t: int = 1
    error_recovery_level: int = 0

    def pairs(self, discovery: bool = False) -> list[tuple[str, str]]:
        yes = {True: "Yes", False: "No"}
        common = [
            ("HeaderDigest", ",".join(self.header_digest)),
            ("DataDigest", ",".join(self.data_digest)),
        ]
        if discovery:  # §13: only these make sense in a Discovery session
            return [*common, ("MaxRecvDataSegmentLength", str(self.max_recv_data_segment_length))]
        return [
            *common,
            ("MaxConnections", str(self.max_connections)),
            ("InitialR2T", yes[self.initial_r2t]),
            ("ImmediateData", yes[self.immediate_data]),
            ("MaxRecvDataSegmentLength", str(self.max_recv_data_segment_length)),
            ("MaxBurstLength", str(self.max_burst_length)),
            ("FirstBurstLength", str(self.first_burst_length)),
            ("DefaultTime2Wait", str(self.default_time2wait)),
            ("DefaultTime2Retain", str(self.default_time2retain)),
            ("MaxOutstandingR2T", str(self.max_outstanding_r2t)),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", str(self.error_recovery_level)),
        ]


_FIELD = {
    "HeaderDigest": "header_digest",
    "DataDigest": "data_digest",
    "MaxConnections": "max_connections",
    "InitialR2T": "initial_r2t",
    "ImmediateData": "immediate_data",
    "MaxRecvDataSegmentLength": "max_recv_data_segment_length",
    "MaxBurstLength": "max_burst_length",
    "FirstBurstLength": "first_burst_length",
    "DefaultTime2Wait": "default_time2wait",
    "DefaultTime2Retain": "default_time2retain",
    "MaxOutstandingR2T": "max_outstanding_r2t",
    "DataPDUInOrder": "data_pdu_in_order",
    "DataSequenceInOrder": "data_sequence_in_order",
    "ErrorRecoveryLevel": "error_recovery_level",
    "TargetAlias": "target_alias",
}


@dataclass
class Negotiation:
    """One operational-stage negotiation: feed the target's pairs, read ``params`` at the end."""

    offer: Offer
    discovery: bool = False
    offered: dict[str, str] | None = None  # None: what ``offer`` says (a login); {} to only answer
    answered: dict[str, str] = field(default_factory=dict)
    start: OperationalParams | None = None  # what is in force (renegotiation in full feature phase)
    _offers: dict[str, str] = field(init=False, default_factory=dict)  # ``offered``, once known
    _params: OperationalParams = field(init=False, default_factory=OperationalParams)

    def __post_init__(self) -> None:
        self._offers = dict(self.offer.pairs(self.discovery)) if self.offered is None else self.offered
        self._params = self.start or OperationalParams(
            our_max_recv_data_segment_length=self.offer.max_recv_data_segment_length)

    def first_pairs(self) -> list[tuple[str, str]]:
        return list(self._offers.items())

    def receive(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Apply the target's pairs; return what we must answer (keys the target offered)."""
        replies: list[tuple[str, str]] = []
        for key, value in pairs:
            if key in _IGNORED_ANSWERS or key.startswith("X-") or key.startswith("X#"):
                continue
            spec = KEYS.get(key)
            if spec is None:
                replies.append((key, "NotUnderstood"))  # §6.2: unknown keys are answered so
                continue
            if key in self.answered and key != "TargetAddress":
                raise RemoteProtocolError(f"target sent {key} twice")
            self.answered[key] = value
            if value in _NO_ANSWER_VALUES:
                offered = self._offers.get(key)
                if spec.kind is Kind.LIST and offered is not None and spec.default not in offered.split(","):
                    raise NegotiationError(f"the target answered {key}={value} to our required {key}={offered}")
                continue  # the RFC default stays in force
            if key == "TargetPortalGroupTag":
                self._set("target_portal_group_tag", _number(KeySpec(key, Kind.DECLARATIVE, "", 0, 65535), value))
                continue
            if spec.kind is Kind.DECLARATIVE:
                if key == "MaxRecvDataSegmentLength":
                    self._set("max_recv_data_segment_length", _number(spec, value))
                elif key in _FIELD:
                    self._set(_FIELD[key], value)
                continue
            if key in self._offers:
                self._apply_answer(spec, self._offers[key], value)
            else:
                reply = self._answer_offer(spec, value)
                replies.append((key, reply))
        return replies

    def _set(self, name: str, value: Any) -> None:  # Any: which field ``name`` is decides the type
        self._params = replace(self._params, **{name: value})

    def _apply_answer(self, spec: KeySpec, offered: str, answer: str) -> None:
        """The target answered our offer: check the answer is one the rule allows."""
        name = _FIELD[spec.name]
        if spec.kind is Kind.LIST:
            if answer == spec.default and answer not in offered.split(","):
                # tgt answers HeaderDigest=None when it is not set up for digests, instead of Reject.
                raise NegotiationError(f"the target will not use {spec.name}={offered}, which we require "
                                       f"(it answered {answer})")
            if answer not in offered.split(","):
                raise RemoteProtocolError(f"target answered {spec.name}={answer[:32]} to our offer of {offered}")
            self._set(name, answer == "CRC32C")
        elif spec.kind in (Kind.AND, Kind.OR):
            ours, theirs = _boolean(spec, offered), _boolean(spec, answer)
            result = (ours and theirs) if spec.kind is Kind.AND else (ours or theirs)
            if theirs != result:  # §6.2.2: the answer is the result
                raise RemoteProtocolError(f"target answered {spec.name}={answer}, which the rule forbids")
            if name in ("initial_r2t", "immediate_data", "data_pdu_in_order", "data_sequence_in_order"):
                self._set(name, result)
        else:
            our_number, their_number = int(offered), _number(spec, answer)
            bad = their_number > our_number if spec.kind is Kind.MIN else their_number < our_number
            if bad:
                raise RemoteProtocolError(f"target answered {spec.name}={their_number} to our offer of {our_number}")
            self._set(name, their_number)

    def _answer_offer(self, spec: KeySpec, value: str) -> str:
        """The target offered a key we did not: answer with what we accept, and record it."""
        name = _FIELD.get(spec.name)
        if spec.kind is Kind.LIST:
            choices = value.split(",")
            acceptable = self._offers.get(spec.name, spec.default).split(",") if spec.name in _FIELD else [spec.default]
            for choice in choices:
                if choice in acceptable or choice == spec.default:
                    if name in ("header_digest", "data_digest"):
                        self._set(name, choice == "CRC32C")
                    return choice
            return "Reject"
        if spec.kind in (Kind.AND, Kind.OR):
            theirs = _boolean(spec, value)
            ours = _boolean(spec, spec.default) if spec.name in ("IFMarker", "OFMarker") else theirs
            result = (ours and theirs) if spec.kind is Kind.AND else (ours or theirs)
            if name in ("initial_r2t", "immediate_data", "data_pdu_in_order", "data_sequence_in_order"):
                self._set(name, result)
            return "Yes" if result else "No"
        their_number = _number(spec, value)
        our_number = int(spec.default)
        chosen = min(our_number, their_number) if spec.kind is Kind.MIN else max(our_number, their_number)
        if name:
            self._set(name, chosen)
        return str(chosen)

    def finish(self) -> OperationalParams:
        """Final consistency (§13.14: FirstBurstLength must not exceed MaxBurstLength)."""
        p = self._params
        if p.first_burst_length > p.max_burst_length:
            p = replace(p, first_burst_length=p.max_burst_length)
        self._params = p
        return p

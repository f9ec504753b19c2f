"""CHAP for iSCSI login (RFC 7143 §12.1.3, RFC 1994).

Response = H(identifier || secret || challenge). Binary values are sent as 0x-hex; we accept
0x-hex and 0b-base64 (§6.1). Every field is bounded before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from iscsifs.proto.errors import AuthenticationError, RemoteProtocolError

MAX_CHAP_FIELD = 1024  # bytes of decoded value; longer is hostile or broken

# CHAP_A algorithm identifiers: 5 = MD5 (RFC 1994); 6, 7, 8 = SHA-1, SHA-256, SHA3-256 (RFC 7143bis).
ALGORITHMS: dict[int, str] = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3_256"}


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """Who we are to the target. Secrets never appear in repr()."""

    username: str
    secret: bytes = field(repr=False)
    target_username: str | None = None
    target_secret: bytes | None = field(default=None, repr=False)


def decode_binary(value: str, what: str) -> bytes:
    """Decode a 0x-hex or 0b-base64 binary value (§6.1), bounded by MAX_CHAP_FIELD."""
    if len(value) > 2 * MAX_CHAP_FIELD + 2:
        raise RemoteProtocolError(f"{what} is longer than {MAX_CHAP_FIELD} bytes")
    prefix, body = value[:2].lower(), value[2:]
    try:
        if prefix == "0x":
            raw = bytes.fromhex(body if len(body) % 2 == 0 else "0" + body)
        elif prefix == "0b":
            raw = base64.b64decode(body, validate=True)
        else:
            raise RemoteProtocolError(f"{what} is not a 0x or 0b binary value")
    except (ValueError, binascii.Error) as exc:
        raise RemoteProtocolError(f"{what} is not valid hex/base64") from exc
    if not raw or len(raw) > MAX_CHAP_FIELD:
        raise RemoteProtocolError(f"{what} must be 1..{MAX_CHAP_FIELD} bytes")
    return raw


def encode_binary(raw: bytes) -> str:
    return "0x" + raw.hex()


def chap_response(algorithm: int, identifier: int, secret: bytes, challenge: bytes) -> bytes:
    name = ALGORITHMS.get(algorithm)
    if name is None:
        raise AuthenticationError(f"unsupported CHAP algorithm {algorithm}")
    h = hashlib.new(name)
    h.update(bytes([identifier]))
    h.update(secret)
    h.update(challenge)
    return h.digest()


@dataclass(frozen=True, slots=True)
class ChapChallenge:
    algorithm: int
    identifier: int
    challenge: bytes


def parse_challenge(keys: dict[str, str], offered: tuple[int, ...]) -> ChapChallenge:
    """The target's CHAP_A/CHAP_I/CHAP_C answer to our CHAP_A offer."""
    try:
        a, i, c = keys["CHAP_A"], keys["CHAP_I"], keys["CHAP_C"]
    except KeyError as exc:
        raise RemoteProtocolError(f"CHAP challenge lacks {exc.args[0]}") from None
    if not a.isdigit() or int(a) not in offered:
        raise RemoteProtocolError(f"target chose CHAP_A={a[:16]}, which was not offered")
    if not i.isdigit() or not 0 <= int(i) <= 255:
        raise RemoteProtocolError("CHAP_I is not a number from 0 to 255")
    return ChapChallenge(int(a), int(i), decode_binary(c, "CHAP_C"))

"""CHAP for iSCSI login, one-way and mutual (RFC 7143 §12.1.3, RFC 1994).

Response = H(identifier || secret || challenge). Binary values are sent as 0x-hex; we accept
0x-hex and 0b-base64 (§6.1). Every field is bounded before it is decoded, every comparison of
a response is constant-time, and no secret ever reaches a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from iscsifs.proto.errors import AuthenticationError, RemoteProtocolError

MAX_CHAP_FIELD = 1024  # bytes of a decoded value or characters of a name; longer is hostile or broken
CHALLENGE_LENGTH = 32  # our challenges; §12.1.3 asks for at least as long as the hash (we need ≥ 16)

# CHAP_A values from IANA's PPP Authentication Algorithms registry, as Linux LIO and open-iscsi
# use them: 5 = MD5 (RFC 1994), 6 = SHA-1, 7 = SHA-256, 8 = SHA3-256.
ALGORITHMS: dict[int, str] = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3_256"}
ALGORITHM_NAMES: dict[str, int] = {"md5": 5, "sha1": 6, "sha256": 7, "sha3-256": 8}
# Strongest first: a standard target picks the first one it knows, so it answers SHA-256.
DEFAULT_ALGORITHMS: tuple[int, ...] = (7, 8, 6, 5)


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """Who we are to the target, and (for mutual CHAP) who the target must prove to be.

    Secrets never appear in repr(). ``target_secret`` set means mutual CHAP.
    """

    username: str
    secret: bytes = field(repr=False)
    target_username: str | None = None
    target_secret: bytes | None = field(default=None, repr=False)

    @property
    def mutual(self) -> bool:
        return self.target_secret is not None

    def check(self) -> None:
        """Refuse configurations RFC 7143 §12.1.3 forbids, before anything is sent."""
        if not self.username or len(self.username) > MAX_CHAP_FIELD:
            raise AuthenticationError(f"CHAP user name must be 1..{MAX_CHAP_FIELD} characters")
        if not self.secret or len(self.secret) > MAX_CHAP_FIELD:
            raise AuthenticationError(f"CHAP secret must be 1..{MAX_CHAP_FIELD} bytes")
        if self.target_secret is not None:
            if not self.target_secret or len(self.target_secret) > MAX_CHAP_FIELD:
                raise AuthenticationError(f"target CHAP secret must be 1..{MAX_CHAP_FIELD} bytes")
            # The same secret both ways would let a target reflect our own response back at us.
            if hmac.compare_digest(self.secret, self.target_secret):
                raise AuthenticationError("the initiator and target CHAP secrets must differ (RFC 7143 §12.1.3)")


def parse_algorithms(text: str) -> tuple[int, ...]:
    """``chap_algs=sha256,md5`` or ``7,5``: an ordered list of CHAP_A values to offer."""
    algs: list[int] = []
    for item in filter(None, (s.strip().lower() for s in text.split(","))):
        alg = ALGORITHM_NAMES.get(item) or (int(item) if item.isdecimal() else None)
        if alg not in ALGORITHMS:
            known = ", ".join(f"{n} ({a})" for n, a in ALGORITHM_NAMES.items())
            raise ValueError(f"unknown CHAP algorithm '{item[:20]}' (known: {known})")
        if alg not in algs:
            algs.append(alg)
    if not algs:
        raise ValueError("chap_algs is empty")
    return tuple(algs)


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


# Challenges we sent recently, in any login of this process. A target that sends one of them back
# as its own challenge is trying to make us compute the answer for it (a reflection attack).
_ISSUED: collections.deque[bytes] = collections.deque(maxlen=4096)


def was_issued_by_us(challenge: bytes) -> bool:
    return any(hmac.compare_digest(challenge, c) for c in _ISSUED)


def new_challenge(algorithm: int, avoid: bytes) -> ChapChallenge:
    """Our challenge to the target: CSPRNG bytes, never equal to the target's own challenge."""
    while True:
        challenge = secrets.token_bytes(CHALLENGE_LENGTH)
        if challenge != avoid:
            break
    _ISSUED.append(challenge)
    return ChapChallenge(algorithm, secrets.randbelow(256), challenge)


def parse_challenge(keys: dict[str, str], offered: tuple[int, ...]) -> ChapChallenge:
    """The target's CHAP_A/CHAP_I/CHAP_C answer to our CHAP_A offer."""
    try:
        a, i, c = keys["CHAP_A"], keys["CHAP_I"], keys["CHAP_C"]
    except KeyError as exc:
        raise RemoteProtocolError(f"CHAP challenge lacks {exc.args[0]}") from None
    if not a.isdecimal() or int(a) not in offered:
        raise RemoteProtocolError(f"target chose CHAP_A={a[:16]}, which was not offered")
    if not i.isdecimal() or not 0 <= int(i) <= 255:
        raise RemoteProtocolError("CHAP_I is not a number from 0 to 255")
    challenge = decode_binary(c, "CHAP_C")
    if was_issued_by_us(challenge):
        raise AuthenticationError("the target sent back a challenge we issued (CHAP reflection): refusing")
    return ChapChallenge(int(a), int(i), challenge)


def verify_target(keys: dict[str, str], ours: ChapChallenge, credentials: ChapCredentials) -> None:
    """Mutual CHAP: check the target's CHAP_N/CHAP_R against the challenge we sent."""
    assert credentials.target_secret is not None
    name, response = keys.get("CHAP_N"), keys.get("CHAP_R")
    if name is None or response is None:
        raise AuthenticationError("the target did not answer our CHAP challenge (mutual CHAP)")
    if len(name) > MAX_CHAP_FIELD:
        raise RemoteProtocolError(f"CHAP_N is longer than {MAX_CHAP_FIELD} characters")
    if credentials.target_username is not None and name != credentials.target_username:
        raise AuthenticationError(f"the target authenticated as '{name[:64]}', not as "
                                  f"'{credentials.target_username[:64]}' (mutual CHAP)")
    got = decode_binary(response, "CHAP_R")
    if hmac.compare_digest(got, chap_response(ours.algorithm, ours.identifier, credentials.secret, ours.challenge)):
        raise AuthenticationError("the target answered our challenge with our own secret (CHAP reflection): refusing")
    want = chap_response(ours.algorithm, ours.identifier, credentials.target_secret, ours.challenge)
    if not hmac.compare_digest(got, want):
        raise AuthenticationError("the target's CHAP response is wrong: it does not know the target secret "
                                  "(mutual CHAP)")

"""The login phase as a state machine (RFC 7143 §6.3, §11.12, §11.13).

Every transition lives in ``TRANSITIONS``: (state, what the target did) -> handler. A pair that is
not in the table is a protocol error from the target. The machine never does I/O: ``start()``
gives the first Login Request, ``receive(response)`` gives the next one, or a ``LoginComplete``.

    SECURITY_OFFER  --AuthMethod=None, transit-->  OPERATIONAL
    SECURITY_OFFER  --AuthMethod=CHAP---------->  CHAP_CHALLENGE  --CHAP_C-->  CHAP_RESULT --transit--> OPERATIONAL
    OPERATIONAL     --transit to full feature->  FULL_FEATURE
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field

from iscsifs.proto.chap import (
    DEFAULT_ALGORITHMS,
    ChapChallenge,
    ChapCredentials,
    chap_response,
    encode_binary,
    new_challenge,
    parse_challenge,
    verify_target,
)
from iscsifs.proto.errors import (
    AuthenticationError,
    LoginError,
    LoginRedirect,
    RemoteProtocolError,
)
from iscsifs.proto.pdu import LoginRequest, LoginResponse, Stage
from iscsifs.proto.text import (
    Negotiation,
    Offer,
    OperationalParams,
    encode_text,
    parse_text,
)

LOGIN_ITT = 0


class LoginState(enum.Enum):
    SECURITY_OFFER = "security: AuthMethod offered"
    CHAP_CHALLENGE = "security: waiting for the CHAP challenge"
    CHAP_RESULT = "security: CHAP response sent"
    OPERATIONAL = "operational negotiation"
    FULL_FEATURE = "full feature phase"


class Answer(enum.Enum):
    """What a Login Response did, as far as the state machine cares."""

    STAY = "stays in the current stage"
    TRANSIT = "transits to the next stage"


def new_isid() -> bytes:
    """§10.12.5: type 0b10 (random), 22 random bits, then a 16-bit qualifier."""
    rnd = os.urandom(6)
    return bytes([0x80 | (rnd[0] & 0x3F)]) + rnd[1:]


@dataclass(frozen=True, slots=True)
class LoginConfig:
    initiator_name: str
    target_name: str | None  # None for a Discovery session
    isid: bytes = field(default_factory=new_isid)
    tsih: int = 0
    cid: int = 0
    cmd_sn: int = 1
    offer: Offer = Offer()
    credentials: ChapCredentials | None = None
    chap_algorithms: tuple[int, ...] = DEFAULT_ALGORITHMS
    # tgt takes CHAP_A=7 for SHA-1: after an authentication failure with 7, try once more without it.
    chap_fallback: bool = True
    fell_back: bool = False  # this config is that second try
    initiator_alias: str = ""

    @property
    def discovery(self) -> bool:
        return self.target_name is None


@dataclass(frozen=True, slots=True)
class LoginComplete:
    tsih: int
    params: OperationalParams
    stat_sn: int
    exp_cmd_sn: int
    max_cmd_sn: int
    target_keys: dict[str, str]
    chap_algorithm: int | None = None  # the CHAP_A used, if CHAP was


class LoginMachine:
    def __init__(self, config: LoginConfig) -> None:
        self.config = config
        self.state = LoginState.SECURITY_OFFER
        self.negotiation = Negotiation(config.offer, discovery=config.discovery)
        self.exp_stat_sn = 0
        self.tsih = config.tsih
        self.target_keys: dict[str, str] = {}
        self._pending_text = b""
        self._last_csg = Stage.SECURITY
        self._last_nsg = Stage.OPERATIONAL
        self.chap_algorithm: int | None = None  # what the target chose, once it has
        self._our_challenge: ChapChallenge | None = None  # mutual CHAP: what we asked the target
        self._target_verified = False

    @property
    def _require_target_auth(self) -> bool:
        """Mutual CHAP for Normal sessions. A Discovery session may go unauthenticated (tgt and
        istgt allow discovery without CHAP): what it tells us only leads to logins that are."""
        c = self.config.credentials
        return c is not None and c.mutual and not self.config.discovery

    def _request(self, csg: Stage, nsg: Stage, transit: bool, pairs: list[tuple[str, str]]) -> LoginRequest:
        self._last_csg, self._last_nsg = csg, nsg
        return LoginRequest(
            isid=self.config.isid, tsih=self.tsih, initiator_task_tag=LOGIN_ITT, cid=self.config.cid,
            cmd_sn=self.config.cmd_sn, exp_stat_sn=self.exp_stat_sn, csg=csg, nsg=nsg, transit=transit,
            data=encode_text(pairs))

    def start(self) -> LoginRequest:
        c = self.config
        pairs = [("InitiatorName", c.initiator_name)]
        if c.initiator_alias:
            pairs.append(("InitiatorAlias", c.initiator_alias))
        pairs.append(("SessionType", "Discovery" if c.discovery else "Normal"))
        if c.target_name is not None:
            pairs.append(("TargetName", c.target_name))
        if c.credentials is not None:
            c.credentials.check()
        if c.credentials is None:
            methods = "None"
        elif self._require_target_auth:
            methods = "CHAP"  # we want to authenticate the target: never let it pick None
        else:
            methods = "CHAP,None"
        pairs.append(("AuthMethod", methods))
        # Offer to leave the security stage at once; a CHAP-choosing target answers T=0.
        return self._request(Stage.SECURITY, Stage.OPERATIONAL, c.credentials is None, pairs)

    # -- input -------------------------------------------------------------------------------------

    def receive(self, resp: LoginResponse) -> LoginRequest | LoginComplete:
        # Status first: tgt answers a refused login (e.g. 0x0203) with a zeroed ISID.
        if resp.status_class == 0x01:
            keys = dict(parse_text(resp.data))
            raise LoginRedirect(keys.get("TargetAddress", ""), permanent=resp.status_detail == 0x02)
        if resp.status_class == 0x02 and resp.status_detail == 0x00 and self.state is LoginState.CHAP_CHALLENGE:
            offered = ",".join(map(str, self.config.chap_algorithms))
            raise AuthenticationError(f"the target supports none of the CHAP algorithms offered (CHAP_A={offered})")
        if resp.status_class != 0:
            raise LoginError(resp.status_class, resp.status_detail, self.config.target_name or "",
                             chap_algorithm=self.chap_algorithm if self.state is LoginState.CHAP_RESULT else None)
        if resp.initiator_task_tag != LOGIN_ITT or resp.isid != self.config.isid:
            raise RemoteProtocolError(
                f"Login Response for another login (ITT 0x{resp.initiator_task_tag:08x}, ISID {resp.isid.hex()})")
        self.exp_stat_sn = (resp.stat_sn + 1) & 0xFFFFFFFF
        if resp.csg != self._last_csg:
            raise RemoteProtocolError(f"Login Response in stage {resp.csg}, request was in stage {self._last_csg}")
        if resp.cont:
            # §11.13.3: more text follows; ask for it with an empty request, no transit.
            self._pending_text += bytes(resp.data)
            if len(self._pending_text) > 1 << 20:
                raise RemoteProtocolError("login text continued beyond 1 MiB")
            return self._request(self._last_csg, self._last_nsg, False, [])
        data = self._pending_text + bytes(resp.data)
        self._pending_text = b""
        pairs = parse_text(data)
        for k, v in pairs:
            self.target_keys[k] = v
        if resp.transit and resp.nsg <= resp.csg:
            raise RemoteProtocolError(f"Login Response transits backwards ({resp.csg} -> {resp.nsg})")
        answer = Answer.TRANSIT if resp.transit else Answer.STAY
        handler = TRANSITIONS.get((self.state, answer))
        if handler is None:
            raise RemoteProtocolError(f"Login Response that {answer.value} is not valid in state '{self.state.value}'")
        self.tsih = resp.tsih or self.tsih
        return handler(self, resp, pairs)

    # -- handlers, one per table row ----------------------------------------------------------------

    def _security_offer_stay(self, resp: LoginResponse, pairs: list[tuple[str, str]]) -> LoginRequest:
        method = dict(pairs).get("AuthMethod")
        if method == "CHAP":
            if self.config.credentials is None:
                raise AuthenticationError("the target requires CHAP but no credentials were given")
            self.state = LoginState.CHAP_CHALLENGE
            algs = ",".join(str(a) for a in self.config.chap_algorithms)
            return self._request(Stage.SECURITY, Stage.OPERATIONAL, False, [("CHAP_A", algs)])
        if method == "None" or method is None:
            if method == "None" and self._require_target_auth:
                raise AuthenticationError("the target refused to authenticate itself (AuthMethod=None)")
            # Target agreed to no authentication but wants another round before transit.
            return self._request(Stage.SECURITY, Stage.OPERATIONAL, True, [])
        raise RemoteProtocolError(f"target chose AuthMethod={method[:32]}, which was not offered")

    def _security_offer_transit(self, resp: LoginResponse,
                                pairs: list[tuple[str, str]]) -> LoginRequest | LoginComplete:
        method = dict(pairs).get("AuthMethod", "None")
        if method != "None":
            raise RemoteProtocolError(f"target transited with AuthMethod={method[:32]} before authenticating")
        if self._require_target_auth:
            raise AuthenticationError("the target refused to authenticate itself (AuthMethod=None)")
        return self._enter_operational(resp)

    def _chap_challenge(self, resp: LoginResponse, pairs: list[tuple[str, str]]) -> LoginRequest:
        creds = self.config.credentials
        assert creds is not None
        ch = parse_challenge(dict(pairs), self.config.chap_algorithms)
        self.chap_algorithm = ch.algorithm
        response = chap_response(ch.algorithm, ch.identifier, creds.secret, ch.challenge)
        self.state = LoginState.CHAP_RESULT
        keys = [("CHAP_N", creds.username), ("CHAP_R", encode_binary(response))]
        if creds.mutual:
            # §12.1.3: our challenge goes with our response, with the algorithm the target chose.
            self._our_challenge = new_challenge(ch.algorithm, avoid=ch.challenge)
            keys += [("CHAP_I", str(self._our_challenge.identifier)),
                     ("CHAP_C", encode_binary(self._our_challenge.challenge))]
        return self._request(Stage.SECURITY, Stage.OPERATIONAL, True, keys)

    def _verify_target(self, pairs: list[tuple[str, str]]) -> None:
        creds = self.config.credentials
        if creds is None or not creds.mutual or self._target_verified:
            return
        keys = dict(pairs)
        if "CHAP_R" in keys or "CHAP_N" in keys:
            assert self._our_challenge is not None
            verify_target(keys, self._our_challenge, creds)
            self._target_verified = True

    def _chap_result_transit(self, resp: LoginResponse, pairs: list[tuple[str, str]]) -> LoginRequest | LoginComplete:
        self._verify_target(pairs)
        creds = self.config.credentials
        if creds is not None and creds.mutual and not self._target_verified:
            raise AuthenticationError("the target left the security stage without answering our CHAP challenge")
        return self._enter_operational(resp)

    def _chap_result_stay(self, resp: LoginResponse, pairs: list[tuple[str, str]]) -> LoginRequest:
        # Target accepted our response but is not ready to transit yet (it may answer our
        # challenge now, or with the transit): ask again.
        self._verify_target(pairs)
        return self._request(Stage.SECURITY, Stage.OPERATIONAL, True, [])

    def _enter_operational(self, resp: LoginResponse) -> LoginRequest | LoginComplete:
        if resp.nsg == Stage.FULL_FEATURE:
            # The target skipped the operational stage: every key keeps its RFC default.
            return self._complete(resp)
        self.state = LoginState.OPERATIONAL
        return self._request(Stage.OPERATIONAL, Stage.FULL_FEATURE, True, self.negotiation.first_pairs())

    def _operational_stay(self, resp: LoginResponse, pairs: list[tuple[str, str]]) -> LoginRequest:
        replies = self.negotiation.receive(pairs)
        return self._request(Stage.OPERATIONAL, Stage.FULL_FEATURE, True, replies)

    def _operational_transit(self, resp: LoginResponse, pairs: list[tuple[str, str]]) -> LoginComplete:
        if resp.nsg != Stage.FULL_FEATURE:
            raise RemoteProtocolError(f"operational stage transits to stage {resp.nsg}")
        self.negotiation.receive(pairs)
        return self._complete(resp)

    def _complete(self, resp: LoginResponse) -> LoginComplete:
        if resp.tsih == 0:
            raise RemoteProtocolError("final Login Response carries TSIH 0")
        self.state = LoginState.FULL_FEATURE
        return LoginComplete(resp.tsih, self.negotiation.finish(), resp.stat_sn, resp.exp_cmd_sn,
                             resp.max_cmd_sn, dict(self.target_keys), self.chap_algorithm)


TRANSITIONS = {
    (LoginState.SECURITY_OFFER, Answer.STAY): LoginMachine._security_offer_stay,
    (LoginState.SECURITY_OFFER, Answer.TRANSIT): LoginMachine._security_offer_transit,
    (LoginState.CHAP_CHALLENGE, Answer.STAY): LoginMachine._chap_challenge,
    (LoginState.CHAP_RESULT, Answer.STAY): LoginMachine._chap_result_stay,
    (LoginState.CHAP_RESULT, Answer.TRANSIT): LoginMachine._chap_result_transit,
    (LoginState.OPERATIONAL, Answer.STAY): LoginMachine._operational_stay,
    (LoginState.OPERATIONAL, Answer.TRANSIT): LoginMachine._operational_transit,
}

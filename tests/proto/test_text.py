"""Text key=value codec, negotiation rules, CHAP, and the login state machine (every table pair)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iscsifs.proto import chap
from iscsifs.proto.errors import (
    AuthenticationError,
    LoginError,
    LoginRedirect,
    NegotiationError,
    RemoteProtocolError,
)
from iscsifs.proto.login import (
    TRANSITIONS,
    Answer,
    LoginComplete,
    LoginConfig,
    LoginMachine,
    LoginState,
)
from iscsifs.proto.pdu import LoginRequest, LoginResponse, Stage
from iscsifs.proto.text import Negotiation, Offer, encode_text, parse_text

ISID = bytes.fromhex("800000000001")


def test_text_round_trip_and_bad_pairs():
    pairs = [("HeaderDigest", "CRC32C,None"), ("TargetAlias", "disk é")]
    assert parse_text(encode_text(pairs) + b"\0\0") == pairs
    for bad in (b"novalue\0", b"=x\0", b"K" * 64 + b"=1\0", b"K=\xff\0"):
        with pytest.raises(RemoteProtocolError):
            parse_text(bad)


@given(st.binary(max_size=200))
def test_fuzz_text_parser_only_raises_protocol_errors(blob):
    try:
        parse_text(blob)
    except RemoteProtocolError:
        pass


def test_rfc_defaults_apply_when_target_is_silent():
    # tgt does not declare MaxRecvDataSegmentLength: RFC 7143 §13.12 says assume 8192.
    n = Negotiation(Offer())
    n.receive([("HeaderDigest", "None"), ("DataDigest", "None")])
    p = n.finish()
    assert p.max_recv_data_segment_length == 8192
    assert p.our_max_recv_data_segment_length == Offer().max_recv_data_segment_length
    assert p.max_burst_length == 262144 and p.first_burst_length == 65536
    assert p.initial_r2t is True and p.immediate_data is True


def test_answers_combine_by_rule():
    n = Negotiation(Offer(header_digest=("CRC32C", "None")))
    n.receive([("HeaderDigest", "CRC32C"), ("InitialR2T", "Yes"), ("ImmediateData", "No"),
               ("MaxBurstLength", "65536"), ("FirstBurstLength", "131072"), ("DefaultTime2Wait", "5"),
               ("MaxRecvDataSegmentLength", "65536"), ("TargetPortalGroupTag", "1")])
    p = n.finish()
    assert p.header_digest and not p.data_digest
    assert p.initial_r2t and not p.immediate_data
    assert p.max_burst_length == 65536
    assert p.first_burst_length == 65536  # clipped to MaxBurstLength (§13.14)
    assert p.default_time2wait == 5 and p.max_recv_data_segment_length == 65536
    assert p.target_portal_group_tag == 1


@pytest.mark.parametrize("pairs", [
    [("HeaderDigest", "CRC32C")],  # not offered
    [("MaxBurstLength", str(1 << 24))],  # min rule answered with more than offered
    [("ImmediateData", "Maybe")],
    [("DefaultTime2Wait", "1")],  # max rule answered with less
    [("MaxRecvDataSegmentLength", "1")],  # below 512
    [("ErrorRecoveryLevel", "0"), ("ErrorRecoveryLevel", "0")],
])
def test_answers_the_rules_forbid(pairs):
    with pytest.raises(RemoteProtocolError):
        Negotiation(Offer(header_digest=("None",))).receive(pairs)


def test_default_offer_prefers_header_digest_and_takes_none():
    offered = dict(Offer().pairs())
    assert offered["HeaderDigest"] == "CRC32C,None" and offered["DataDigest"] == "None,CRC32C"
    n = Negotiation(Offer())
    n.receive([("HeaderDigest", "None"), ("DataDigest", "CRC32C")])
    p = n.finish()
    assert not p.header_digest and p.data_digest


@pytest.mark.parametrize("answer", ["None", "Reject", "NotUnderstood"])
def test_a_required_digest_refused_is_a_negotiation_error(answer):
    # tgt answers None (not Reject) when it is not set up for digests.
    with pytest.raises(NegotiationError, match="HeaderDigest"):
        Negotiation(Offer(header_digest=("CRC32C",))).receive([("HeaderDigest", answer)])


def test_digest_none_forced_is_kept():
    n = Negotiation(Offer(header_digest=("None",), data_digest=("None",)))
    n.receive([("HeaderDigest", "None"), ("DataDigest", "None")])
    assert not n.finish().header_digest


def test_keys_the_target_offers_are_answered():
    n = Negotiation(Offer(), discovery=True)  # a Discovery session offers no MaxBurstLength
    replies = n.receive([("X-com.example.Foo", "1"), ("FooBar", "1"), ("IFMarker", "Yes"),
                         ("MaxBurstLength", "65536")])
    assert replies == [("FooBar", "NotUnderstood"), ("IFMarker", "No"), ("MaxBurstLength", "65536")]
    assert n.finish().max_burst_length == 65536


def test_chap_response_md5_vector():
    # RFC 1994: MD5(identifier || secret || challenge)
    secret, challenge = b"s3cr3tpassw0rd", bytes(range(16))
    assert chap.chap_response(5, 7, secret, challenge) == hashlib.md5(b"\x07" + secret + challenge).digest()
    assert chap.chap_response(7, 7, secret, challenge) == hashlib.sha256(b"\x07" + secret + challenge).digest()


def test_chap_binary_values_are_bounded():
    assert chap.decode_binary("0x0102", "CHAP_C") == b"\x01\x02"
    assert chap.decode_binary("0bAQI=", "CHAP_C") == b"\x01\x02"
    for bad in ("0x", "12", "0xzz", "0x" + "00" * 1025, "0b!!"):
        with pytest.raises(RemoteProtocolError):
            chap.decode_binary(bad, "CHAP_C")


def test_chap_credentials_never_show_the_secret():
    c = chap.ChapCredentials("user", b"topsecret", "tuser", b"othersecret")
    assert "topsecret" not in repr(c) and "othersecret" not in repr(c)


# -- the login state machine -------------------------------------------------------------------


def resp(req: LoginRequest, *, transit: bool, nsg: int | None = None, keys=(), status=(0, 0), tsih=0x100,
         cont=False, stat_sn=10) -> LoginResponse:
    return LoginResponse(isid=req.isid, tsih=tsih, initiator_task_tag=req.initiator_task_tag, stat_sn=stat_sn,
                         exp_cmd_sn=req.cmd_sn, max_cmd_sn=req.cmd_sn + 1, status_class=status[0],
                         status_detail=status[1], csg=req.csg, nsg=req.nsg if nsg is None else nsg,
                         transit=transit, cont=cont, data=encode_text(list(keys)))


def config(**kw) -> LoginConfig:
    return LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt", isid=ISID, **kw)


def test_no_auth_login_to_full_feature():
    m = LoginMachine(config())
    r = m.start()
    assert (r.csg, r.nsg, r.transit) == (Stage.SECURITY, Stage.OPERATIONAL, True)
    assert dict(parse_text(r.data))["AuthMethod"] == "None"
    r = m.receive(resp(r, transit=True, keys=[("AuthMethod", "None")]))
    assert (r.csg, r.nsg, r.transit) == (Stage.OPERATIONAL, Stage.FULL_FEATURE, True)
    assert r.exp_stat_sn == 11
    done = m.receive(resp(r, transit=True, keys=[("MaxRecvDataSegmentLength", "65536")], stat_sn=11))
    assert isinstance(done, LoginComplete) and done.tsih == 0x100
    assert done.params.max_recv_data_segment_length == 65536
    assert m.state is LoginState.FULL_FEATURE


def test_chap_login():
    creds = chap.ChapCredentials("alice", b"0123456789ab")
    m = LoginMachine(config(credentials=creds))
    r = m.start()
    assert dict(parse_text(r.data))["AuthMethod"] == "CHAP,None" and not r.transit
    r = m.receive(resp(r, transit=False, keys=[("AuthMethod", "CHAP")]))
    assert dict(parse_text(r.data)) == {"CHAP_A": "7,8,6,5"}
    r = m.receive(resp(r, transit=False, keys=[("CHAP_A", "5"), ("CHAP_I", "9"), ("CHAP_C", "0x" + "ab" * 16)]))
    keys = dict(parse_text(r.data))
    assert keys["CHAP_N"] == "alice"
    assert keys["CHAP_R"] == "0x" + hashlib.md5(b"\x09" + b"0123456789ab" + b"\xab" * 16).hexdigest()
    assert r.transit
    r = m.receive(resp(r, transit=True))
    assert r.csg == Stage.OPERATIONAL
    assert isinstance(m.receive(resp(r, transit=True)), LoginComplete)


def test_chap_required_without_credentials_is_an_authentication_error():
    m = LoginMachine(config())
    r = m.start()
    with pytest.raises(AuthenticationError):
        m.receive(resp(r, transit=False, keys=[("AuthMethod", "CHAP")]))


def test_operational_continuation_and_replies():
    m = LoginMachine(config())
    r = m.receive(resp(m.start(), transit=True))
    r = m.receive(resp(r, transit=False, keys=[("Foo", "1")], cont=True))  # C bit: ask for the rest
    assert r.data == b"" and not r.transit
    r = m.receive(resp(r, transit=False, keys=[("Bar", "2")]))
    assert dict(parse_text(r.data)) == {"Foo": "NotUnderstood", "Bar": "NotUnderstood"}
    assert isinstance(m.receive(resp(r, transit=True)), LoginComplete)


def test_target_skipping_operational_stage_keeps_defaults():
    m = LoginMachine(config())
    done = m.receive(resp(m.start(), transit=True, nsg=Stage.FULL_FEATURE))
    assert isinstance(done, LoginComplete) and done.params.max_recv_data_segment_length == 8192


def test_status_classes():
    m = LoginMachine(config())
    r = m.start()
    with pytest.raises(LoginError) as e:
        m.receive(resp(r, transit=False, status=(2, 3)))
    assert e.value.is_not_found and "target not found" in str(e.value)
    with pytest.raises(LoginRedirect) as e:
        LoginMachine(config()).receive(resp(r, transit=False, status=(1, 1),
                                            keys=[("TargetAddress", "10.0.0.2:3261,1")]))
    assert e.value.target_address == "10.0.0.2:3261,1"


def test_wrong_isid_or_stage_is_a_protocol_error():
    m = LoginMachine(config())
    r = m.start()
    bad = resp(r, transit=True)
    with pytest.raises(RemoteProtocolError):
        m.receive(LoginResponse(**{**{f: getattr(bad, f) for f in ("tsih", "initiator_task_tag", "stat_sn",
                                                                    "exp_cmd_sn", "max_cmd_sn", "status_class",
                                                                    "status_detail", "csg", "nsg", "transit")},
                                   "isid": b"\0" * 6}))
    with pytest.raises(RemoteProtocolError):
        LoginMachine(config()).receive(resp(r, transit=True, nsg=Stage.SECURITY))


def _drive_to(state: LoginState) -> tuple[LoginMachine, LoginRequest]:
    creds = chap.ChapCredentials("u", b"0123456789ab")
    m = LoginMachine(config(credentials=creds))
    r = m.start()
    if state is LoginState.SECURITY_OFFER:
        return m, r
    if state is LoginState.OPERATIONAL:
        m = LoginMachine(config())
        return m, m.receive(resp(m.start(), transit=True))
    r = m.receive(resp(r, transit=False, keys=[("AuthMethod", "CHAP")]))
    if state is LoginState.CHAP_CHALLENGE:
        return m, r
    r = m.receive(resp(r, transit=False, keys=[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x00112233")]))
    assert state is LoginState.CHAP_RESULT
    return m, r


@pytest.mark.parametrize("state", [s for s in LoginState if s is not LoginState.FULL_FEATURE])
@pytest.mark.parametrize("answer", list(Answer))
def test_every_state_and_answer_pair(state, answer):
    """Pairs in the table advance; pairs outside it are the target's protocol error."""
    m, r = _drive_to(state)
    assert m.state is state
    keys = {LoginState.SECURITY_OFFER: [("AuthMethod", "None")],
            LoginState.CHAP_CHALLENGE: [("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x00")]}.get(state, [])
    response = resp(r, transit=answer is Answer.TRANSIT, keys=keys)
    if (state, answer) in TRANSITIONS:
        out = m.receive(response)
        assert isinstance(out, (LoginRequest, LoginComplete))
    else:
        with pytest.raises(RemoteProtocolError):
            m.receive(response)


def test_full_feature_state_accepts_nothing():
    m, r = _drive_to(LoginState.OPERATIONAL)
    m.receive(resp(r, transit=True))
    for answer in Answer:
        with pytest.raises(RemoteProtocolError):
            m.receive(resp(r, transit=answer is Answer.TRANSIT))

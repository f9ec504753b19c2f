"""The login state machine: security (none, CHAP) to operational to full feature, continuations,
status classes, and every state and answer pair of its table."""

from __future__ import annotations

import hashlib

import pytest
from iscsifs.proto import chap
from iscsifs.proto.errors import (
    AuthenticationError,
    LoginError,
    LoginRedirect,
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
from iscsifs.proto.text import encode_text, parse_text

ISID = bytes.fromhex("800000000001")



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

"""CHAP one-way and mutual: the sans-I/O machine, and hostile targets over an in-memory stream."""

from __future__ import annotations

import hashlib

import pytest
import trio
import trio.testing
from iscsifs.net.nursery import first_error
from iscsifs.proto import chap
from iscsifs.proto.errors import AuthenticationError, LoginError, RemoteProtocolError
from iscsifs.proto.login import LoginConfig, LoginMachine, LoginState
from iscsifs.proto.pdu import LoginResponse
from iscsifs.proto.text import encode_text, parse_text

from support.fake_target import (
    ChapScript,
    FakeTarget,
    chap_login,
    open_over,
    stream_pair,
)

SCRIPT = ChapScript()
MUTUAL = chap.ChapCredentials(SCRIPT.user, SCRIPT.secret, SCRIPT.target_user, SCRIPT.target_secret)
ONE_WAY = chap.ChapCredentials(SCRIPT.user, SCRIPT.secret)


def config(credentials=MUTUAL, **kw) -> LoginConfig:
    return LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt",
                       credentials=credentials, **kw)


def test_response_vectors_for_every_algorithm():
    secret, challenge = b"s3cr3tpassw0rd", bytes(range(16))
    for alg, name in ((5, "md5"), (6, "sha1"), (7, "sha256"), (8, "sha3_256")):
        assert chap.chap_response(alg, 7, secret, challenge) == hashlib.new(name, b"\x07" + secret + challenge).digest()


def test_algorithm_lists():
    assert chap.DEFAULT_ALGORITHMS[0] == 7  # a standard target answers SHA-256
    assert chap.parse_algorithms("sha256,md5") == (7, 5)
    assert chap.parse_algorithms("5, 8,5") == (5, 8)
    for bad in ("", "sha512", "9", "md5,,x"):
        with pytest.raises(ValueError):
            chap.parse_algorithms(bad)


def test_our_challenges_are_long_random_and_never_the_targets():
    a, b = chap.new_challenge(7, avoid=b""), chap.new_challenge(7, avoid=b"")
    assert len(a.challenge) >= 16 and a.challenge != b.challenge
    assert chap.was_issued_by_us(a.challenge) and not chap.was_issued_by_us(bytes(32))


def test_same_secret_both_ways_is_refused_before_sending():
    with pytest.raises(AuthenticationError, match="must differ"):
        LoginMachine(config(chap.ChapCredentials("u", b"same-secret", "t", b"same-secret"))).start()


def _resp(req, *, transit=False, keys=(), status=(0, 0)) -> LoginResponse:
    return LoginResponse(isid=req.isid, tsih=0x10 if transit else 0, initiator_task_tag=req.initiator_task_tag,
                         stat_sn=1, exp_cmd_sn=req.cmd_sn, max_cmd_sn=req.cmd_sn + 1, status_class=status[0],
                         status_detail=status[1], csg=req.csg, nsg=req.nsg if transit else 0, transit=transit,
                         data=encode_text(list(keys)))


def _to_response(m: LoginMachine, alg: int = 7, challenge: bytes = b"\x42" * 16):
    r = m.start()
    assert dict(parse_text(r.data))["AuthMethod"] == ("CHAP" if m.config.credentials.mutual else "CHAP,None")
    r = m.receive(_resp(r, keys=[("AuthMethod", "CHAP")]))
    assert dict(parse_text(r.data))["CHAP_A"] == ",".join(map(str, m.config.chap_algorithms))
    return m.receive(_resp(r, keys=[("CHAP_A", str(alg)), ("CHAP_I", "3"), ("CHAP_C", "0x" + challenge.hex())]))


def test_mutual_chap_machine_checks_the_target_with_the_chosen_algorithm():
    m = LoginMachine(config())
    r = _to_response(m)
    keys = dict(parse_text(r.data))
    assert keys["CHAP_R"] == "0x" + hashlib.sha256(b"\x03" + SCRIPT.secret + b"\x42" * 16).hexdigest()
    ours = chap.decode_binary(keys["CHAP_C"], "CHAP_C")
    assert len(ours) >= 16 and 0 <= int(keys["CHAP_I"]) <= 255
    good = chap.chap_response(7, int(keys["CHAP_I"]), SCRIPT.target_secret, ours)
    r = m.receive(_resp(r, transit=True, keys=[("CHAP_N", SCRIPT.target_user), ("CHAP_R", "0x" + good.hex())]))
    assert m.state is LoginState.OPERATIONAL


@pytest.mark.parametrize("case", ["wrong", "own-secret", "missing", "other-name", "oversized", "malformed"])
def test_mutual_chap_machine_refuses_bad_target_answers(case):
    m = LoginMachine(config())
    r = _to_response(m)
    keys = dict(parse_text(r.data))
    ours = chap.decode_binary(keys["CHAP_C"], "CHAP_C")
    ident = int(keys["CHAP_I"])
    answer = {
        "wrong": [("CHAP_N", SCRIPT.target_user), ("CHAP_R", "0x" + "00" * 32)],
        "own-secret": [("CHAP_N", SCRIPT.target_user),
                       ("CHAP_R", "0x" + chap.chap_response(7, ident, SCRIPT.secret, ours).hex())],
        "missing": [],
        "other-name": [("CHAP_N", "mallory"),
                       ("CHAP_R", "0x" + chap.chap_response(7, ident, SCRIPT.target_secret, ours).hex())],
        "oversized": [("CHAP_N", SCRIPT.target_user), ("CHAP_R", "0x" + "11" * 1025)],
        "malformed": [("CHAP_N", SCRIPT.target_user), ("CHAP_R", "deadbeef")],
    }[case]
    error = RemoteProtocolError if case in ("oversized", "malformed") else AuthenticationError
    with pytest.raises(error) as e:
        m.receive(_resp(r, transit=True, keys=answer))
    if case == "own-secret":
        assert "own secret" in str(e.value)
    assert SCRIPT.secret.decode() not in str(e.value) and SCRIPT.target_secret.decode() not in str(e.value)


def test_target_challenge_bounds_and_reflection():
    for bad in ("0x" + "ab" * 1025, "0x", "AAAA"):
        with pytest.raises(RemoteProtocolError):
            m = LoginMachine(config(ONE_WAY))
            r = m.receive(_resp(m.start(), keys=[("AuthMethod", "CHAP")]))
            m.receive(_resp(r, keys=[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", bad)]))
    issued = chap.new_challenge(5, avoid=b"").challenge
    with pytest.raises(AuthenticationError, match="reflection"):
        _to_response(LoginMachine(config(ONE_WAY)), alg=5, challenge=issued)


def test_refusals_say_which_algorithm_failed():
    m = LoginMachine(config(ONE_WAY))
    r = _to_response(m)
    with pytest.raises(LoginError) as e:
        m.receive(_resp(r, status=(2, 0)))  # tgt's answer to a SHA-256 response of the wrong length
    assert e.value.chap_algorithm == 7 and e.value.is_chap_refusal and e.value.is_authentication
    m = LoginMachine(config(ONE_WAY, chap_algorithms=(6,)))
    r = m.receive(_resp(m.start(), keys=[("AuthMethod", "CHAP")]))
    with pytest.raises(AuthenticationError, match="none of the CHAP algorithms"):
        m.receive(_resp(r, status=(2, 0)))


def test_mutual_chap_never_accepts_a_target_that_skips_authentication():
    m = LoginMachine(config())
    with pytest.raises(AuthenticationError):
        m.receive(_resp(m.start(), transit=True, keys=[("AuthMethod", "None")]))


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


# -- over a stream, against the fake target ------------------------------------------------------


async def _login(script: ChapScript, cfg: LoginConfig, stopped: trio.Event | None = None):
    client, server = stream_pair()
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(chap_login, FakeTarget(server), script, stopped)
                try:
                    session = await open_over(nursery, client, cfg)
                    assert session.alive
                finally:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise first_error(group) from None


@pytest.mark.parametrize("alg", [5, 6, 7, 8])
async def test_mutual_chap_logs_in_with_every_algorithm(alg):
    await _login(ChapScript(algorithm=alg), config())


@pytest.mark.parametrize("script, error, text", [
    (ChapScript(answer_secret=b"not-the-target-secret"), AuthenticationError, "does not know the target secret"),
    (ChapScript(answer_secret=SCRIPT.secret), AuthenticationError, "our own secret"),
    (ChapScript(answer_mutual=False), AuthenticationError, "without answering our CHAP challenge"),
    (ChapScript(chap_c="0x" + "ab" * 1025), RemoteProtocolError, "longer than 1024"),
    (ChapScript(chap_r="0x" + "ab" * 2000), RemoteProtocolError, "longer than 1024"),
    (ChapScript(secret=b"the-target-knows-another"), LoginError, "authentication failed"),
])
async def test_hostile_or_wrong_targets_abort_the_login(script, error, text):
    with pytest.raises(error, match=text):
        await _login(script, config())


async def test_a_target_reflecting_our_challenge_from_another_login_is_refused():
    """The classic reflection attack: a target opens two logins and hands us our own challenge."""
    first = ChapScript(stop_after_response=True)
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_login, first, config(), stopped)
        await stopped.wait()
        stolen = chap.decode_binary(first.seen["CHAP_C"], "CHAP_C")
        with pytest.raises(AuthenticationError, match="reflection"):
            await _login(ChapScript(challenge=stolen), config())
        nursery.cancel_scope.cancel()


def test_discovery_may_go_unauthenticated_with_mutual_credentials():
    """tgt and istgt allow discovery without CHAP; the Normal logins that follow stay mutual."""
    m = LoginMachine(LoginConfig(initiator_name="iqn.2026-11.test:init", target_name=None, credentials=MUTUAL))
    r = m.start()
    assert dict(parse_text(r.data))["AuthMethod"] == "CHAP,None"
    r = m.receive(_resp(r, transit=True, keys=[("AuthMethod", "None")]))
    assert m.state is LoginState.OPERATIONAL

"""Text key=value codec and the negotiation rules (RFC 7143 §6, §13)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iscsifs.proto.errors import NegotiationError, RemoteProtocolError
from iscsifs.proto.text import Negotiation, Offer, encode_text, parse_text


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

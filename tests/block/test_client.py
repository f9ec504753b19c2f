"""The client's parsing of what discovery answers: SendTargets (RFC 7143 Appendix C), each target
with its TargetAddresses."""

from __future__ import annotations

import pytest
from iscsifs.block.client import parse_send_targets
from iscsifs.proto.errors import RemoteProtocolError


def test_send_targets_with_several_addresses_per_target():
    pairs = [("TargetName", "iqn.2026-11.a:one"), ("TargetAddress", "10.0.0.1:3260,1"),
             ("TargetAddress", "[fe80::1]:3261,2"), ("TargetAddress", "san.example,3"),
             ("TargetName", "iqn.2026-11.a:two")]
    one, two = parse_send_targets(pairs, 3260)
    assert one.name == "iqn.2026-11.a:one"
    assert [(p.host, p.port, tag) for p, tag in one.addresses] == [
        ("10.0.0.1", 3260, 1), ("fe80::1", 3261, 2), ("san.example", 3260, 3)]
    assert two.addresses == ()
    with pytest.raises(RemoteProtocolError):
        parse_send_targets([("TargetAddress", "10.0.0.1:3260,1")], 3260)
    with pytest.raises(RemoteProtocolError):
        parse_send_targets([("TargetName", "iqn.2026-11.a:x"), ("TargetAddress", "h:port,1")], 3260)

"""The connection's lifecycle, pair by pair: every (state, input) either has its entry in the table
or is refused as a bug of ours (the session's is in tests/proto/test_session.py)."""

from __future__ import annotations

import itertools

import pytest
from iscsifs.proto.errors import LocalProtocolError
from iscsifs.proto.lifecycle import (
    CONNECTION_TRANSITIONS,
    step,
)
from iscsifs.proto.lifecycle import (
    ConnectionInput as CI,
)
from iscsifs.proto.lifecycle import (
    ConnectionState as C,
)

CONNECTION_EXPECTED = {
    (C.FULL_FEATURE, CI.LOGOUT_REQUESTED): C.DRAINING,
    (C.FULL_FEATURE, CI.LOGOUT): C.LOGGING_OUT,
    (C.FULL_FEATURE, CI.FAIL): C.FAILED,
    (C.FULL_FEATURE, CI.CLOSE): C.CLOSED,
    (C.DRAINING, CI.LOGOUT_REQUESTED): C.DRAINING,
    (C.DRAINING, CI.LOGOUT): C.LOGGING_OUT,
    (C.DRAINING, CI.FAIL): C.FAILED,
    (C.DRAINING, CI.CLOSE): C.CLOSED,
    (C.LOGGING_OUT, CI.LOGOUT_REQUESTED): C.LOGGING_OUT,
    (C.LOGGING_OUT, CI.LOGOUT): C.LOGGING_OUT,
    (C.LOGGING_OUT, CI.FAIL): C.FAILED,
    (C.LOGGING_OUT, CI.CLOSE): C.CLOSED,
    (C.FAILED, CI.LOGOUT_REQUESTED): C.FAILED,
    (C.FAILED, CI.LOGOUT): C.FAILED,
    (C.FAILED, CI.FAIL): C.FAILED,
    (C.FAILED, CI.CLOSE): C.CLOSED,
    (C.CLOSED, CI.LOGOUT_REQUESTED): C.CLOSED,
    (C.CLOSED, CI.LOGOUT): C.CLOSED,
    (C.CLOSED, CI.FAIL): C.CLOSED,
    (C.CLOSED, CI.CLOSE): C.CLOSED,
}

@pytest.mark.parametrize("table, expected, states, inputs", [
    (CONNECTION_TRANSITIONS, CONNECTION_EXPECTED, C, CI),
])
def test_every_pair_is_decided(table, expected, states, inputs):
    for state, event in itertools.product(states, inputs):
        if (state, event) in expected:
            assert step(table, state, event) is expected[state, event], (state, event)
        else:
            with pytest.raises(LocalProtocolError):
                step(table, state, event)
    assert set(table) == set(expected)

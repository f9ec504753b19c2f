"""The lifecycle of a connection, as a table (the session's is the session core's,
``iscsifs.proto.session``, with the same ``step``).

Every transition lives in a table: (state, what happened) -> next state. A pair that is not in a
table is a bug of ours (``LocalProtocolError``), never silently ignored: the I/O layers in
``iscsifs.net`` call ``step`` and act on the state it returns. Pairs that change nothing are
listed too, so that "already failed, fails again" is a decision, not an accident.

Connection (RFC 7143 §6.1, §11.14; full feature phase onwards):

    FULL_FEATURE --target asks to log out (§11.9.1 event 1)--> DRAINING
    FULL_FEATURE, DRAINING --we send a Logout Request--> LOGGING_OUT
    FULL_FEATURE, DRAINING, LOGGING_OUT --EOF, reset, garbage, keepalive--> FAILED
    any --closed--> CLOSED
"""

from __future__ import annotations

import enum
from typing import TypeVar

from iscsifs.proto.errors import LocalProtocolError


class ConnectionState(enum.Enum):
    FULL_FEATURE = "full feature phase"
    DRAINING = "finishing its commands: the target asked for a logout"
    LOGGING_OUT = "logging out"
    FAILED = "failed"
    CLOSED = "closed"


class ConnectionInput(enum.Enum):
    LOGOUT_REQUESTED = "the target asked us to log out"
    LOGOUT = "we send a Logout Request"
    FAIL = "the connection failed"
    CLOSE = "the socket is closed"


_C, _CI = ConnectionState, ConnectionInput
CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, ConnectionInput], ConnectionState] = {
    (_C.FULL_FEATURE, _CI.LOGOUT_REQUESTED): _C.DRAINING,
    (_C.DRAINING, _CI.LOGOUT_REQUESTED): _C.DRAINING,
    (_C.FULL_FEATURE, _CI.LOGOUT): _C.LOGGING_OUT,
    (_C.DRAINING, _CI.LOGOUT): _C.LOGGING_OUT,
    (_C.LOGGING_OUT, _CI.LOGOUT): _C.LOGGING_OUT,  # unmounting during a logout the target asked for: close
    (_C.FULL_FEATURE, _CI.FAIL): _C.FAILED,
    (_C.DRAINING, _CI.FAIL): _C.FAILED,
    (_C.LOGGING_OUT, _CI.FAIL): _C.FAILED,  # the target closes the socket right after its Logout Response
    (_C.FAILED, _CI.FAIL): _C.FAILED,  # the first cause is the one reported
    (_C.CLOSED, _CI.FAIL): _C.CLOSED,  # a read or write that ends because we closed
    (_C.FAILED, _CI.LOGOUT): _C.FAILED,  # nothing to log out of: logout() just closes
    (_C.CLOSED, _CI.LOGOUT): _C.CLOSED,
    (_C.FAILED, _CI.LOGOUT_REQUESTED): _C.FAILED,
    (_C.LOGGING_OUT, _CI.LOGOUT_REQUESTED): _C.LOGGING_OUT,
    (_C.CLOSED, _CI.LOGOUT_REQUESTED): _C.CLOSED,
    **{(state, _CI.CLOSE): _C.CLOSED for state in ConnectionState},
}


S = TypeVar("S", bound=enum.Enum)
I = TypeVar("I", bound=enum.Enum)  # noqa: E741 - Input


def step(table: dict[tuple[S, I], S], state: S, event: I) -> S:
    """The state after ``event``; a pair missing from ``table`` is a bug of ours."""
    try:
        return table[state, event]
    except KeyError:
        raise LocalProtocolError(f"{event.value!r} cannot happen when {state.value!r}") from None

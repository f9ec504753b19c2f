"""What a connection does about the target's Asynchronous Messages (RFC 7143 §11.9): the policy,
apart from the connection's mechanics. The sans-I/O core turns each message into a typed event
(``iscsifs.proto.connection.AsyncReceived``); ``on_async_event`` acts on it.

- A SCSI asynchronous event (0) is reported like the UNIT ATTENTION it carries.
- A logout request (1): outstanding commands finish, then we log out within Parameter3 seconds.
- A connection or session drop (2, 3): at ErrorRecoveryLevel 0 the tasks on it are lost now, so
  the connection fails at once and recovery starts.
- A renegotiation request (4): we MUST answer with Text Requests; only what matters in full
  feature phase (MaxRecvDataSegmentLength) changes anything.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from iscsifs.net.nursery import fail_after
from iscsifs.proto.connection import (
    AsyncReceived,
    DropAnnounced,
    LogoutRequested,
    NegotiationRequested,
    ScsiEventReported,
)
from iscsifs.proto.errors import ConnectionLost, IscsiError, RemoteProtocolError
from iscsifs.proto.text import Negotiation
from iscsifs.scsi.response import decode_lun
from iscsifs.scsi.sense import parse_sense

if TYPE_CHECKING:  # the connection calls us; we only call it back
    from iscsifs.net.connection import Connection

log = logging.getLogger("iscsifs.connection")

RENEGOTIATION_TIMEOUT = 30.0  # seconds for each Text Request of a renegotiation the target asked for
RENEGOTIATION_ROUNDS = 4  # exchanges before a target that keeps asking is given up on
LOGOUT_TIMEOUT = 5.0  # seconds for the Logout Response once outstanding commands are done


def on_async_event(connection: Connection, event: AsyncReceived) -> None:
    name = connection.target_name
    if isinstance(event, ScsiEventReported):
        sense = parse_sense(event.sense)
        log.info("target %s reports a SCSI asynchronous event: %s", name, sense or "no sense data")
        if sense is not None:
            connection.report_unit_attention(decode_lun(event.lun.to_bytes(8, "big")), sense)
    elif isinstance(event, LogoutRequested):
        log.warning("target %s asks us to log out within %d s: finishing %d outstanding command(s) first",
                    name, event.within, connection.outstanding)
        connection.start_soon(logout_when_done, connection, max(1, event.within))
    elif isinstance(event, DropAnnounced):
        what = "session" if event.session else "connection"
        connection.fail(ConnectionLost(f"target {name} dropped the {what} (Async Message, "
                                       f"Time2Wait {event.time2wait} s)"))
    elif isinstance(event, NegotiationRequested):
        connection.start_soon(renegotiate, connection)
    else:
        log.info("target %s sent async event %d", name, event.code)


async def logout_when_done(connection: Connection, within: int) -> None:
    """Take no new commands, let the outstanding ones finish (within the time the target gave
    us, less a second for the logout itself), then log out."""
    connection.begin_draining()
    with trio.move_on_after(max(1, within - 1)):
        await connection.wait_idle()
    with trio.move_on_after(LOGOUT_TIMEOUT):
        await connection.logout()
    await connection.aclose()


async def renegotiate(connection: Connection) -> None:
    """Answer the target's offers (§6.2, §11.10) until it has nothing more to ask."""
    negotiation = Negotiation(connection.config.offer, offered={}, start=connection.params)
    replies: list[tuple[str, str]] = []
    try:
        for _ in range(RENEGOTIATION_ROUNDS):
            with fail_after(RENEGOTIATION_TIMEOUT, "a Text Request"):
                pairs = await connection.text_request(replies)
            replies = negotiation.receive(pairs)
            if not replies:
                break
        params = negotiation.finish()
    except IscsiError as exc:
        connection.fail(RemoteProtocolError(f"renegotiation asked by target {connection.target_name} failed: {exc}"))
        return
    if params != connection.params:
        log.info("target %s renegotiated: MaxRecvDataSegmentLength %d -> %d", connection.target_name,
                 connection.params.max_recv_data_segment_length, params.max_recv_data_segment_length)
        connection.renegotiated(params)

"""Logging in to a portal (RFC 7143 §6, §11.12/11.13) on trio: the sans-I/O ``LoginMachine`` driven
over a fresh TCP connection, following redirections (Status-Class 1) and, for tgt, one retry
with an older CHAP algorithm. What it returns is ready for the full feature phase
(``net.connection``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import trio

from iscsifs.net.dial import Connect, ConnectError, NotIscsiError
from iscsifs.proto.address import Portal, parse_target_address
from iscsifs.proto.errors import (
    ConnectionLost,
    LoginError,
    LoginRedirect,
    RemoteProtocolError,
)
from iscsifs.proto.login import LoginComplete, LoginConfig, LoginMachine
from iscsifs.proto.pdu import LoginResponse, Pdu, describe, encode_pdu
from iscsifs.proto.reader import PduReader

log = logging.getLogger("iscsifs.connection")

RECEIVE_SIZE = 1 << 16  # the login phase's PDUs are small
SHA256 = 7  # CHAP_A
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class LoggedInStream:
    """A connection in full feature phase: its stream, its reader (set for the negotiated digests
    and data segment length), what the login settled, and the config and portal as they ended up
    (after a CHAP fallback, after redirections)."""

    stream: trio.SocketStream
    reader: PduReader
    login: LoginComplete
    config: LoginConfig
    portal: Portal


async def log_in(portal: Portal, config: LoginConfig, connect: Connect) -> LoggedInStream:
    """Connect and log in; ``LoginError``, ``ConnectError`` and the rest of the error tree otherwise."""
    for _ in range(MAX_REDIRECTS + 1):
        stream = await connect(portal)
        try:
            reader = PduReader()
            login = await _login(stream, reader, config, portal)
        except LoginRedirect as redirect:
            await stream.aclose()
            portal, _ = parse_target_address(redirect.target_address, portal.port)
            log.info("target %s redirected us to %s", config.target_name or "portal", portal)
            continue
        except LoginError as exc:
            await stream.aclose()
            fallback = tuple(a for a in config.chap_algorithms if a != SHA256)
            if not (exc.is_chap_refusal and exc.chap_algorithm == SHA256 and config.chap_fallback and fallback):
                raise
            # tgt (1.0.x) takes CHAP_A=7 for SHA-1, so our SHA-256 answer fails (it says 0x0200).
            # Once, on a fresh connection, offer the list without 7; a second refusal is final.
            log.debug("target %s refused our CHAP_A=7 (SHA-256) response; trying %s once (tgt reads 7 as SHA-1)",
                      config.target_name or "portal", ",".join(map(str, fallback)))
            config = replace(config, chap_algorithms=fallback, chap_fallback=False, fell_back=True)
            continue
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise
        if config.fell_back:
            log.info("target %s uses CHAP_A=%s: it refused SHA-256 (tgt reads CHAP_A=7 as SHA-1); "
                     "pin chap_algs= to forbid this", config.target_name or "portal", login.chap_algorithm)
        reader.header_digest = login.params.header_digest
        reader.data_digest = login.params.data_digest
        reader.max_recv_data_segment_length = login.params.our_max_recv_data_segment_length
        return LoggedInStream(stream, reader, login, config, portal)
    raise ConnectError(f"more than {MAX_REDIRECTS} login redirections")


async def _login(stream: trio.SocketStream, reader: PduReader, config: LoginConfig, portal: Portal) -> LoginComplete:
    machine = LoginMachine(config)
    request = machine.start()
    first = True
    while True:
        log.debug("%s -> %s", config.target_name or "discovery", describe(request))
        await stream.send_all(b"".join(encode_pdu(request)))
        try:
            response = await _read_one(stream, reader)
        except (RemoteProtocolError, ConnectionLost) as exc:
            # The first answer is not an iSCSI PDU (or bytes that end before one): what listens
            # there is something else, and saying so is more use than "unexpected opcode 0x08".
            if first and (isinstance(exc, RemoteProtocolError) or reader.buffered):
                raise NotIscsiError(f"{portal} answered, but is not an iSCSI target ({exc})") from None
            raise
        log.debug("%s <- %s", config.target_name or "discovery", describe(response))
        if not isinstance(response, LoginResponse):
            if first:
                raise NotIscsiError(f"{portal} answered, but is not an iSCSI target "
                                    f"(a {type(response).__name__} instead of a Login Response)")
            raise RemoteProtocolError(f"expected a Login Response, got {type(response).__name__}")
        first = False
        result = machine.receive(response)
        if isinstance(result, LoginComplete):
            return result
        request = result


async def _read_one(stream: trio.SocketStream, reader: PduReader) -> Pdu:
    while True:
        pdu = reader.next_pdu()
        if pdu is not None:
            return pdu
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, OSError) as exc:
            raise ConnectionLost(f"connection lost during login: {exc}") from None
        if not data:
            raise ConnectionLost("target closed the connection during login")
        reader.feed(data)

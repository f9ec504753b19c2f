"""Making the TCP connection to a portal, and saying in words why it could not be made."""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable

import trio

from iscsifs.proto.address import Portal
from iscsifs.proto.errors import IscsiError


class ConnectError(IscsiError):
    """The portal could not be reached over TCP, or did not answer a login in time."""


class NotIscsiError(ConnectError):
    """Something answered at the portal, but not an iSCSI target (a web server, ssh...)."""


Connect = Callable[[Portal], Awaitable[trio.SocketStream]]


async def tcp_connect(portal: Portal) -> trio.SocketStream:
    try:
        return await trio.open_tcp_stream(portal.host, portal.port)
    except OSError as exc:
        raise ConnectError(f"cannot connect to portal {portal}: {why_not_connected(exc)}") from None


_CONNECT_ERRNO = {
    errno.ECONNREFUSED: "connection refused (no iSCSI target listens there?)",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.EADDRNOTAVAIL: "address not available",
}


def why_not_connected(exc: OSError) -> str:
    """The cause of a failed TCP connect, in words: trio's "all attempts to connect failed"
    carries each attempt's error in its cause (the first one says it)."""
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    attempts = exc.__cause__.exceptions if isinstance(exc.__cause__, BaseExceptionGroup) else (exc,)
    first = attempts[0]
    if isinstance(first, OSError) and first.errno in _CONNECT_ERRNO:
        return _CONNECT_ERRNO[first.errno]
    if isinstance(first, OSError) and first.strerror:
        return first.strerror.lower()
    return str(first) or type(first).__name__

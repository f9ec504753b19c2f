"""Where a target is reached: a portal (host and TCP port), written and read as RFC 7143 §13.8
TargetAddress does (IPv6 in brackets). The one place ``host:port`` is formatted."""

from __future__ import annotations

from dataclasses import dataclass

from iscsifs.proto.errors import RemoteProtocolError

DEFAULT_PORT = 3260


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, order=True)
class Portal:
    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return hostport(self.host, self.port)


def parse_target_address(value: str, default_port: int = DEFAULT_PORT) -> tuple[Portal, int]:
    """TargetAddress=host[:port][,tpgt] with IPv6 in brackets (RFC 7143 §13.8)."""
    addr, _, tpgt = value.partition(",")
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = addr.partition(":")
    if not host or (port and not port.isdecimal()) or (tpgt and not tpgt.isdecimal()):
        raise RemoteProtocolError(f"malformed TargetAddress {value[:80]!r}")
    return Portal(host, int(port) if port else default_port), int(tpgt) if tpgt else 0

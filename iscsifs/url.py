"""iscsi:// URLs in libiscsi's format: iscsi://[user[%password]@]host[:port][/target-iqn[/lun]].

IPv6 hosts are written in brackets. The password is a secret: it never appears in ``repr``,
``str`` or error messages (``redacted()`` gives a printable form).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

DEFAULT_PORT = 3260

# RFC 7143 §4.2.7.2: iqn.YYYY-MM.reversed.domain[:anything], eui.<16 hex>, naa.<16 or 32 hex>.
_IQN = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[^\s/]*)?$", re.IGNORECASE)
_EUI = re.compile(r"^eui\.[0-9a-f]{16}$", re.IGNORECASE)
_NAA = re.compile(r"^naa\.(?:[0-9a-f]{16}|[0-9a-f]{32})$", re.IGNORECASE)


class UrlError(ValueError):
    """A malformed iscsi:// URL. The message never contains the password."""


def is_iscsi_name(name: str) -> bool:
    return bool(_IQN.match(name) or _EUI.match(name) or _NAA.match(name)) and len(name.encode()) <= 223


@dataclass(frozen=True, slots=True)
class IscsiUrl:
    host: str
    port: int = DEFAULT_PORT
    target: str | None = None
    lun: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def portal(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def redacted(self) -> str:
        auth = ""
        if self.user is not None:
            auth = urllib.parse.quote(self.user, safe="") + ("%***" if self.password is not None else "") + "@"
        path = ""
        if self.target:
            path = "/" + self.target + (f"/{self.lun}" if self.lun is not None else "")
        return f"iscsi://{auth}{self.portal}{path}"

    def __str__(self) -> str:
        return self.redacted()


def parse_url(url: str) -> IscsiUrl:
    if not url.startswith("iscsi://"):
        raise UrlError("URL must start with iscsi:// (iscsi://[user[%password]@]host[:port][/target-iqn[/lun]])")
    rest = url[len("iscsi://") :]
    rest, _, query = rest.partition("?")
    if query:
        keys = sorted({k for k, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)} or {query[:20]})
        raise UrlError(f"unsupported URL query key(s): {', '.join(k[:20] for k in keys)}")
    authority, slash, path = rest.partition("/")
    user = password = None
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        # libiscsi separates user and password with the first "%".
        raw_user, pct, raw_password = userinfo.partition("%")
        user = raw_user
        password = raw_password if pct else None
        if not user:
            raise UrlError("URL has an empty user name")
    host, port = _parse_hostport(authority)
    target: str | None = None
    lun: int | None = None
    if slash and path:
        parts = path.split("/")
        if parts and parts[-1] == "":
            parts.pop()
        if len(parts) > 2:
            raise UrlError("URL path must be /target-iqn or /target-iqn/lun")
        target = urllib.parse.unquote(parts[0]) if parts else None
        if target is not None and not is_iscsi_name(target):
            raise UrlError(f"'{target[:80]}' is not an iSCSI name (iqn.YYYY-MM.domain:name, eui. or naa.)")
        if len(parts) == 2:
            if not parts[1].isdigit() or int(parts[1]) >= 16384:
                raise UrlError(f"LUN '{parts[1][:20]}' is not a number from 0 to 16383")
            lun = int(parts[1])
    return IscsiUrl(host, port, target, lun, user, password)


def _parse_hostport(authority: str) -> tuple[str, int]:
    if not authority:
        raise UrlError("URL has no host")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise UrlError("URL has an unterminated [IPv6] host")
        host, rest = authority[1:end], authority[end + 1 :]
        if not host or not all(c in "0123456789abcdefABCDEF:.%" or c.isalnum() for c in host) or ":" not in host:
            raise UrlError(f"'{host}' is not an IPv6 address")
        if rest and not rest.startswith(":"):
            raise UrlError("unexpected text after ]")
        port_text = rest[1:] if rest else ""
    else:
        host, colon, port_text = authority.partition(":")
        if colon and not port_text:
            raise UrlError("URL has an empty port")
        if ":" in port_text:
            raise UrlError("IPv6 hosts must be written in brackets: iscsi://[::1]:3260")
        if not re.match(r"^[A-Za-z0-9._-]+$", host):
            raise UrlError(f"'{host[:80]}' is not a host name or address")
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UrlError(f"port '{port_text[:10]}' is not a number from 1 to 65535")
        port = int(port_text)
    return host, port

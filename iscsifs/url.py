"""iscsi:// URLs in libiscsi's format: iscsi://[user[%password]@]host[:port][/target-iqn[/lun]].

IPv6 hosts are written in brackets. The password is a secret: it never appears in ``repr``,
``str`` or error messages (``redacted()`` gives a printable form).
"""

from __future__ import annotations

import os
import re
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from iscsifs.proto.address import DEFAULT_PORT, Portal, hostport
from iscsifs.proto.chap import ChapCredentials
from iscsifs.proto.errors import IscsiError

# RFC 7143 §4.2.7.2: iqn.YYYY-MM.reversed.domain[:anything], eui.<16 hex>, naa.<16 or 32 hex>.
_IQN = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[^\s/]*)?$", re.IGNORECASE)
_EUI = re.compile(r"^eui\.[0-9a-f]{16}$", re.IGNORECASE)
_NAA = re.compile(r"^naa\.(?:[0-9a-f]{16}|[0-9a-f]{32})$", re.IGNORECASE)


class UrlError(ValueError):
    """A malformed iscsi:// URL. The message never contains the password."""


def is_iscsi_name(name: str) -> bool:
    return bool(_IQN.match(name) or _EUI.match(name) or _NAA.match(name)) and len(name.encode()) <= 223


# libiscsi's URL query keys (plus data_digest, which libiscsi sets only through its API).
QUERY_KEYS = ("target_user", "target_password", "header_digest", "data_digest")
DIGEST_CHOICES = ("none", "crc32c", "crc32c-none", "none-crc32c")


@dataclass(frozen=True, slots=True)
class IscsiUrl:
    host: str
    port: int = DEFAULT_PORT
    target: str | None = None
    lun: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    target_user: str | None = None
    target_password: str | None = field(default=None, repr=False)
    header_digest: str | None = None
    data_digest: str | None = None

    @property
    def portal(self) -> Portal:
        return Portal(self.host, self.port)

    def redacted(self) -> str:
        auth = ""
        if self.user is not None:
            auth = urllib.parse.quote(self.user, safe="") + ("%***" if self.password is not None else "") + "@"
        path = ""
        if self.target:
            path = "/" + self.target + (f"/{self.lun}" if self.lun is not None else "")
        query = []
        if self.target_user is not None:
            query.append("target_user=" + urllib.parse.quote(self.target_user, safe=""))
        if self.target_password is not None:
            query.append("target_password=***")
        digests = (("header_digest", self.header_digest), ("data_digest", self.data_digest))
        query += [f"{k}={v}" for k, v in digests if v]
        return f"iscsi://{auth}{hostport(self.host, self.port)}{path}" + ("?" + "&".join(query) if query else "")

    def without_query(self) -> str:
        """The URL that names the LUN or target, for file system names and messages."""
        return IscsiUrl(self.host, self.port, self.target, self.lun, self.user, self.password).redacted()

    def __str__(self) -> str:
        return self.redacted()


def parse_url(url: str) -> IscsiUrl:
    if not url.startswith("iscsi://"):
        raise UrlError("URL must start with iscsi:// (iscsi://[user[%password]@]host[:port][/target-iqn[/lun]])")
    rest = url[len("iscsi://") :]
    rest, _, query_text = rest.partition("?")
    query = _parse_query(query_text)
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
    host, port = parse_hostport(authority)
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
            if not parts[1].isdecimal() or int(parts[1]) >= 16384:
                raise UrlError(f"LUN '{parts[1][:20]}' is not a number from 0 to 16383")
            lun = int(parts[1])
    return IscsiUrl(host, port, target, lun, user, password, **query)


def _parse_query(text: str) -> dict[str, str]:
    """libiscsi's ?key=value&... arguments. Unknown keys are errors, never silently ignored."""
    query: dict[str, str] = {}
    for item in filter(None, text.split("&")):
        key, eq, raw = item.partition("=")
        if key not in QUERY_KEYS:
            raise UrlError(f"unsupported URL query key '{key[:20]}' (known: {', '.join(QUERY_KEYS)})")
        if not eq or not raw:
            raise UrlError(f"URL query key {key} has no value")
        value = urllib.parse.unquote(raw)
        if key.endswith("_digest"):
            value = value.lower()
            if value not in DIGEST_CHOICES:
                raise UrlError(f"{key}={value[:20]} is not one of {', '.join(DIGEST_CHOICES)}")
        query[key] = value
    return query


def parse_hostport(authority: str) -> tuple[str, int]:
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
        if not port_text.isdecimal() or not 0 < int(port_text) < 65536:
            raise UrlError(f"port '{port_text[:10]}' is not a number from 1 to 65535")
        port = int(port_text)
    return host, port


# -- CHAP credentials: the URL, a credentials file, libiscsi's environment variables ---------------

ENV_KEYS = {
    "username": "LIBISCSI_CHAP_USERNAME",
    "password": "LIBISCSI_CHAP_PASSWORD",
    "target_username": "LIBISCSI_CHAP_TARGET_USERNAME",
    "target_password": "LIBISCSI_CHAP_TARGET_PASSWORD",
}


class CredentialsError(UrlError):
    """Credentials are incomplete, or their file is unsafe or malformed. Never contains a secret."""


@dataclass(frozen=True, slots=True)
class Secrets:
    """CHAP settings from one source; any field may be missing."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    target_username: str | None = None
    target_password: str | None = field(default=None, repr=False)

    def over(self, other: Secrets) -> Secrets:
        """Each field from self if set, else from ``other``."""
        return Secrets(*(a if a is not None else b for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[str | None, ...]:
        return self.username, self.password, self.target_username, self.target_password


def secrets_from_env(environ: Mapping[str, str]) -> Secrets:
    return Secrets(**{name: environ.get(var) or None for name, var in ENV_KEYS.items()})


def secrets_from_url(url: IscsiUrl) -> Secrets:
    return Secrets(url.user, url.password, url.target_user, url.target_password)


def read_credentials_file(path: str | os.PathLike[str]) -> Secrets:
    """``key = value`` lines (username, password, target_username, target_password; # comments).

    Refused unless only its owner can read it: a secret others can read is not a secret.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise CredentialsError(f"cannot open credentials file {name}: {exc.strerror}") from None
    with os.fdopen(fd, encoding="utf-8", errors="strict") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CredentialsError(f"credentials file {name} is not a regular file")
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise CredentialsError(f"credentials file {name} can be read by others (mode {mode:04o});"
                                   f" chmod 600 {name}")
        # Ours, or root's: a unit started as its own user with CAP_DAC_OVERRIDE (iscsifs@.service)
        # reads a secret that only root may read or change, before it drops that capability.
        if st.st_uid not in (os.geteuid(), 0):
            raise CredentialsError(f"credentials file {name} belongs to uid {st.st_uid}, neither to us "
                                   f"({os.geteuid()}) nor to root")
        try:
            text = f.read(1 << 16)
        except UnicodeDecodeError:
            raise CredentialsError(f"credentials file {name} is not UTF-8 text") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            raise CredentialsError(f"credentials file {name} line {number} is not 'key = value'")
        if key not in ENV_KEYS:
            raise CredentialsError(f"credentials file {name} line {number}: unknown key '{key[:32]}' "
                                   f"(known: {', '.join(ENV_KEYS)})")
        if not value:
            raise CredentialsError(f"credentials file {name} line {number}: {key} is empty")
        values[key] = value
    return Secrets(**values)


def chap_credentials(url: IscsiUrl, credentials_file: str | None = None,
                     environ: Mapping[str, str] | None = None) -> ChapCredentials | None:
    """CHAP settings field by field: the URL first, then the credentials file, then libiscsi's
    environment variables (so ``iscsi://alice@host/...`` with LIBISCSI_CHAP_PASSWORD works)."""
    merged = secrets_from_url(url)
    if credentials_file is not None:
        merged = merged.over(read_credentials_file(credentials_file))
    merged = merged.over(secrets_from_env(os.environ if environ is None else environ))
    if merged.username is None and merged.password is None:
        if merged.target_username is not None or merged.target_password is not None:
            raise CredentialsError("mutual CHAP (target_user/target_password) needs a user and password too")
        return None
    if merged.username is None:
        raise CredentialsError("a CHAP password was given but no user name (iscsi://user%password@host/..., "
                               "LIBISCSI_CHAP_USERNAME or 'username =' in the credentials file)")
    if merged.password is None:
        raise CredentialsError(f"CHAP user '{merged.username[:64]}' has no password (iscsi://user%password@host/..., "
                               "LIBISCSI_CHAP_PASSWORD or 'password =' in the credentials file)")
    if merged.target_username is not None and merged.target_password is None:
        raise CredentialsError("mutual CHAP: a target user name was given but no target password")
    creds = ChapCredentials(merged.username, merged.password.encode(), merged.target_username,
                            None if merged.target_password is None else merged.target_password.encode())
    try:
        creds.check()
    except IscsiError as exc:
        raise CredentialsError(str(exc)) from None
    return creds

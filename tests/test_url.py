"""iscsi:// URLs (libiscsi's format and query keys), never showing a password, and where CHAP
secrets come from: the URL, the credentials file, the environment."""

from __future__ import annotations

import pytest
from iscsifs.url import UrlError, parse_url


@pytest.mark.parametrize("url, expect", [
    ("iscsi://127.0.0.1", ("127.0.0.1", 3260, None, None, None, None)),
    ("iscsi://host.example:3261/iqn.2026-11.example:disk1",
     ("host.example", 3261, "iqn.2026-11.example:disk1", None, None, None)),
    ("iscsi://[::1]/iqn.2026-11.example:disk1/7", ("::1", 3260, "iqn.2026-11.example:disk1", 7, None, None)),
    ("iscsi://bob%p%40ss@[fe80::1]:99/eui.0123456789abcdef/0",
     ("fe80::1", 99, "eui.0123456789abcdef", 0, "bob", "p%40ss")),
])
def test_urls(url, expect):
    u = parse_url(url)
    assert (u.host, u.port, u.target, u.lun, u.user, u.password) == expect


@pytest.mark.parametrize("url", [
    "iscsi:/x", "iscsi://", "iscsi://h:", "iscsi://h:70000", "iscsi://[::1", "iscsi://::1/iqn.2026-11.a:b",
    "iscsi://h/iqn.x", "iscsi://h/iqn.2026-11.a:b/-1", "iscsi://h/iqn.2026-11.a:b/1/2", "iscsi://@h", "iscsi://h?bogus=1",
    "iscsi://h h", "iscsi://h:\u00b2", "iscsi://h/iqn.2026-11.a:b/\u00b2",  # '²'.isdigit() but int('²') fails
])
def test_malformed_urls(url):
    with pytest.raises(UrlError):
        parse_url(url)


def test_password_never_in_repr_str_or_errors():
    u = parse_url("iscsi://bob%hunter2@h/iqn.2026-11.a:b")
    assert "hunter2" not in repr(u) and "hunter2" not in str(u) and "hunter2" not in u.redacted()
    with pytest.raises(UrlError) as e:
        parse_url("iscsi://bob%hunter2@h/notaname")
    assert "hunter2" not in str(e.value)


def test_libiscsi_query_keys_and_their_redaction():
    u = parse_url("iscsi://bob%pw1@h/iqn.2026-11.a:b/1?target_user=tgt&target_password=tpw2&header_digest=CRC32C"
                  "&data_digest=none-crc32c")
    assert (u.target_user, u.target_password) == ("tgt", "tpw2")
    assert (u.header_digest, u.data_digest) == ("crc32c", "none-crc32c")
    shown = u.redacted() + repr(u) + str(u)
    assert "pw1" not in shown and "tpw2" not in shown and "target_password=***" in u.redacted()
    assert u.without_query() == "iscsi://bob%***@h:3260/iqn.2026-11.a:b/1"
    for bad in ("?header_digest=md5", "?target_user", "?target_user=", "?iser=1"):
        with pytest.raises(UrlError):
            parse_url("iscsi://h/iqn.2026-11.a:b" + bad)


def test_chap_credentials_come_field_by_field_url_then_file_then_environment(tmp_path):
    from iscsifs.url import CredentialsError, chap_credentials

    url = parse_url("iscsi://alice@h/iqn.2026-11.a:b?target_user=t")
    f = tmp_path / "c"
    f.write_text("password = from-file\ntarget_password = t-from-file\nusername = ignored\n")
    f.chmod(0o600)
    env = {"LIBISCSI_CHAP_PASSWORD": "from-env", "LIBISCSI_CHAP_TARGET_PASSWORD": "t-from-env"}
    c = chap_credentials(url, str(f), env)
    assert (c.username, c.secret, c.target_username, c.target_secret) == ("alice", b"from-file", "t", b"t-from-file")
    c = chap_credentials(url, None, env)
    assert (c.secret, c.target_secret) == (b"from-env", b"t-from-env")
    assert chap_credentials(parse_url("iscsi://h"), None, {}) is None
    for url_text, environ, words in [
        ("iscsi://alice@h", {}, "has no password"),
        ("iscsi://h", {"LIBISCSI_CHAP_PASSWORD": "x"}, "no user name"),
        ("iscsi://h?target_user=t&target_password=p", {}, "needs a user and password"),
        ("iscsi://a%b@h?target_user=t", {}, "no target password"),
    ]:
        with pytest.raises(CredentialsError, match=words) as e:
            chap_credentials(parse_url(url_text), None, environ)
        assert "=x" not in str(e.value)

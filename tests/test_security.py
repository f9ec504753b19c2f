"""Authentication and secrets against a real tgtd: mutual CHAP, algorithms, where secrets come
from, and that no secret ever shows (messages, logs, the process title). File ownership options."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from support.targets import ISCSIFS, is_mounted, mounted, needs_fuse, needs_tgt, run

pytestmark = needs_tgt

USER, PASSWORD = "secuser{n}", "sec-password-{n}"
TUSER, TPASSWORD = "sectarget{n}", "sec-target-pw-{n}"


def _accounts(t, n: int, mutual: bool = True) -> tuple[str, ...]:
    creds = (USER.format(n=n), PASSWORD.format(n=n), TUSER.format(n=n), TPASSWORD.format(n=n))
    url = t.require_mutual_chap(*creds) if mutual else t.require_chap(*creds[:2])
    return (url, *creds)


def _no_secret(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text, f"secret {s[:3]}… leaked"


@needs_fuse
def test_mutual_chap_mount_with_tgt_reads_and_writes(make_target, tmp_path):
    """Default algorithms: tgt takes CHAP_A=7 for SHA-1, so we fall back to MD5 once, and verify
    tgt's own answer to our challenge (its --outgoing account)."""
    t = make_target({1: 1 << 20})
    url, _user, pw, _tuser, tpw = _accounts(t, 1)
    t.tgt.tgtadm("--op", "update", "--mode", "target", "--tid", t.tid, "-n", "HeaderDigest", "-v", "CRC32C")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(url + "&header_digest=crc32c", mnt) as m:
        lun = mnt / t.iqn / "1" if (mnt / t.iqn).exists() else mnt / "1"
        assert lun.read_bytes() == t.backing[1].read_bytes()
        with open(lun, "r+b") as f:
            f.seek(4096)
            f.write(b"mutual")
        # The password in the URL is gone from the process title (ps, /proc/PID/cmdline).
        cmdline = Path(f"/proc/{m.proc.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "iscsi://" in cmdline and "***" in cmdline
        _no_secret(cmdline, pw, tpw)
        ps = run("ps", "-o", "args=", "-p", str(m.proc.pid)).stdout.decode()
        _no_secret(ps, pw, tpw)
    assert t.backing[1].read_bytes()[4096:4102] == b"mutual"
    assert "uses CHAP_A=5: it refused SHA-256" in m.stderr, m.stderr
    _no_secret(m.stderr, pw, tpw)


@pytest.mark.parametrize("case, code, words", [
    ("wrong target secret", 4, "does not know the target secret"),
    ("wrong secret", 4, "authentication failed"),
    ("pinned sha256", 4, "authentication failed"),
    ("target user only", 2, "no target password"),
    ("same secret both ways", 2, "must differ"),
])
def test_authentication_failures_are_final_and_clear(make_target, case, code, words):
    t = make_target({1: 1 << 20})
    n = 10 + ["wrong target secret", "wrong secret", "pinned sha256", "target user only",
              "same secret both ways"].index(case)
    url, user, pw, tuser, tpw = _accounts(t, n)
    base = f"iscsi://{user}%{pw}@{t.tgt.portal}/{t.iqn}"
    args = {
        "wrong target secret": [f"{base}?target_user={tuser}&target_password=not-the-{tpw}"],
        "wrong secret": [url.replace(pw, "wrong-" + pw)],
        "pinned sha256": ["-o", "chap_algs=sha256", url],  # no fallback when the user pins the list
        "target user only": [f"{base}?target_user={tuser}"],
        "same secret both ways": [f"{base}?target_user={tuser}&target_password={pw}"],
    }[case]
    r = run(*ISCSIFS, "ls", *args)
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("iscsifs: ") and words in err, err
    _no_secret(err + r.stdout.decode(), pw, tpw, "not-the-" + tpw, "wrong-" + pw)
    r = run(*ISCSIFS, "ls", "-d", *args)  # every PDU logged, and still no secret
    err = r.stderr.decode()
    assert r.returncode == code
    _no_secret(err, pw, tpw, "not-the-" + tpw, "wrong-" + pw)
    if case == "pinned sha256":
        assert err.count("-> LoginRequest") == 3  # offer, CHAP_A, response: one attempt, no retry loop


def test_chap_algs_md5_needs_no_fallback(make_target):
    t = make_target({1: 1 << 20})
    url, *_ = _accounts(t, 20)
    r = run(*ISCSIFS, "ls", "-d", url)
    assert r.returncode == 0 and "refused our CHAP_A=7" in r.stderr.decode(), r.stderr
    r = run(*ISCSIFS, "ls", "-d", "-o", "chap_algs=md5", url)
    assert r.returncode == 0 and t.iqn in r.stdout.decode(), r.stderr
    assert "refused our CHAP_A=7" not in r.stderr.decode()


def test_secrets_from_libiscsi_environment_variables(make_target):
    t = make_target({1: 1 << 20})
    _, user, pw, tuser, tpw = _accounts(t, 30)
    env = dict(os.environ, LIBISCSI_CHAP_USERNAME=user, LIBISCSI_CHAP_PASSWORD=pw,
               LIBISCSI_CHAP_TARGET_USERNAME=tuser, LIBISCSI_CHAP_TARGET_PASSWORD=tpw)
    r = run(*ISCSIFS, "ls", t.url, env=env)
    assert r.returncode == 0 and t.iqn in r.stdout.decode(), r.stderr
    r = run(*ISCSIFS, "ls", t.tgt.url, env=env)  # a portal: discovery without CHAP, then mutual logins
    assert r.returncode == 0 and t.iqn in r.stdout.decode(), r.stderr
    # The user in the URL, the password from the environment (as libiscsi allows).
    env = dict(os.environ, LIBISCSI_CHAP_PASSWORD=pw, LIBISCSI_CHAP_TARGET_PASSWORD=tpw)
    r = run(*ISCSIFS, "ls", t.url.replace("iscsi://", f"iscsi://{user}@") + f"?target_user={tuser}", env=env)
    assert r.returncode == 0, r.stderr
    env["LIBISCSI_CHAP_TARGET_PASSWORD"] = "wrong-" + tpw
    r = run(*ISCSIFS, "ls", t.url.replace("iscsi://", f"iscsi://{user}@"), env=env)
    assert r.returncode == 4 and "target secret" in r.stderr.decode()
    _no_secret(r.stderr.decode(), pw, tpw)


def test_credentials_file_must_be_owner_only(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    _, user, pw, tuser, tpw = _accounts(t, 40)
    f = tmp_path / "creds"
    f.write_text(f"# CHAP for {t.iqn}\nusername = {user}\npassword = {pw}\n"
                 f"target_username={tuser}\ntarget_password = {tpw}\n")
    f.chmod(0o600)
    r = run(*ISCSIFS, "ls", "-o", f"credentials={f}", t.url)
    assert r.returncode == 0 and t.iqn in r.stdout.decode(), r.stderr
    f.chmod(0o640)
    r = run(*ISCSIFS, "ls", "-o", f"credentials={f}", t.url)
    err = r.stderr.decode()
    assert r.returncode == 2 and "can be read by others" in err and "chmod 600" in err, err
    f.chmod(0o600)
    os.chown(f, 65534, 65534)
    r = run(*ISCSIFS, "ls", "-o", f"credentials={f}", t.url)
    assert r.returncode == 2 and "belongs to uid 65534" in r.stderr.decode()
    os.chown(f, 0, 0)
    f.write_text(f"username = {user}\npasswd = {pw}\n")
    r = run(*ISCSIFS, "ls", "-o", f"credentials={f}", t.url)
    assert r.returncode == 2 and "unknown key 'passwd'" in r.stderr.decode()
    f.write_text(f"username {user} {pw}\n")
    r = run(*ISCSIFS, "ls", "-o", f"credentials={f}", t.url)
    assert r.returncode == 2 and "line 1 is not" in r.stderr.decode()
    _no_secret(r.stderr.decode(), pw)
    r = run(*ISCSIFS, "ls", "-o", f"credentials={tmp_path / 'missing'}", t.url)
    assert r.returncode == 2 and "cannot open credentials file" in r.stderr.decode()


@needs_fuse
def test_owner_group_and_umask_options_with_default_permissions(make_target):
    t = make_target({1: 1 << 20})
    base = Path(tempfile.mkdtemp(prefix="iscsifs-owner-"))
    os.chmod(base, 0o755)
    mnt = base / "mnt"
    mnt.mkdir()
    try:
        with mounted(t.url, mnt):
            st = os.stat(mnt / "1")
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (os.getuid(), os.getgid(), 0o644)
        with mounted(t.url, mnt, "-o", "allow_other,uid=65534,gid=65534,umask=027"):
            st = os.stat(mnt / "1")
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)
            assert stat.S_IMODE(os.stat(mnt).st_mode) == 0o750
            # The owner may write; another user is kept out by the kernel (default_permissions).
            w = run("runuser", "-u", "nobody", "--", "dd", "if=/dev/zero", f"of={mnt / '1'}", "bs=512", "count=1",
                    "seek=3", "conv=notrunc")
            assert w.returncode == 0, w.stderr
            other = run("setpriv", "--reuid=4321", "--regid=4321", "--clear-groups", "cat", str(mnt / "1"))
            assert other.returncode != 0 and "Permission denied" in other.stderr.decode()
        assert t.backing[1].read_bytes()[1536:2048] == bytes(512)
        for bad in ("uid=alice", "umask=999", "gid="):
            r = run(*ISCSIFS, "-o", bad, t.url, str(mnt))
            assert r.returncode == 2 and not is_mounted(mnt), r.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)

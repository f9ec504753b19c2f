"""Where admins run iscsifs: mount(8) and fstab through mount.fuse3, systemd units (verified with
systemd-analyze), sd_notify readiness and a pid file, `ls --json`, `stats`, and packaging."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from iscsifs import __version__

from support.targets import (
    ISCSIFS,
    ROOT,
    is_mounted,
    mounted,
    needs_fuse,
    run,
    unmount,
    wait_for,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "iscsifs"
HELPER_PATH = Path("/usr/local/bin/iscsifs")  # where mount.fuse3 finds it (mount(8) resets PATH)


@pytest.fixture
def iscsifs_on_path():
    """mount.fuse3 runs `iscsifs` from a fixed PATH; link ours there for the test if none is."""
    if not ROOT:
        pytest.skip("needs root")
    if HELPER_PATH.exists() or HELPER_PATH.is_symlink():
        if HELPER_PATH.resolve() != SCRIPT.resolve():
            pytest.skip(f"{HELPER_PATH} is another iscsifs")
        yield
        return
    HELPER_PATH.symlink_to(SCRIPT)
    try:
        yield
    finally:
        HELPER_PATH.unlink()


@needs_fuse
def test_mount_t_fuse_iscsifs_and_fstab_line(make_target, tmp_path, iscsifs_on_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = run("mount", "-t", "fuse.iscsifs", t.url, str(mnt), "-o", "ro,noatime")
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)  # live the moment mount(8) returns
        assert (mnt / "1").read_bytes() == t.backing[1].read_bytes()
        assert run("findmnt", "-n", "-o", "FSTYPE,OPTIONS", str(mnt)).stdout.decode().startswith("fuse.iscsifs ro")
        assert run("umount", str(mnt)).returncode == 0 and not is_mounted(mnt)
        fstab = tmp_path / "fstab"
        log_file = tmp_path / "fstab.log"
        fstab.write_text(f"# test\n{t.url}  {mnt}  fuse.iscsifs  _netdev,nofail,x-systemd.automount,allow_other,"
                         f"log_file={log_file}  0 0\n")
        r = run("mount", "-T", str(fstab), str(mnt))
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt) and (mnt / "1").stat().st_size == 1 << 20
        assert run("umount", str(mnt)).returncode == 0
        wait_for(lambda: "unmounted" in log_file.read_text(), 30)  # log_file= from an fstab line
        assert "mounted iscsi://" in log_file.read_text()
    finally:
        unmount(mnt)


@needs_fuse
def test_failed_login_makes_mount_fail(make_target, tmp_path, iscsifs_on_path):
    t = make_target({1: 1 << 20})
    t.require_chap("mntuser", "mnt-secret-12")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    bad = t.url.replace("iscsi://", "iscsi://mntuser%wrong-secret-1@")
    r = run("mount", "-t", "fuse.iscsifs", bad, str(mnt))
    err = r.stderr.decode()
    assert r.returncode != 0 and "authentication failed" in err and "wrong-secret-1" not in err, err
    assert not is_mounted(mnt)
    r = run("mount", "-t", "fuse.iscsifs", t.url, str(mnt), "-o", "bogus_option")
    assert r.returncode != 0 and "unknown mount option 'bogus_option'" in r.stderr.decode()


def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze")
    units = sorted(p for p in (REPO / "systemd").iterdir() if p.suffix in (".service", ".mount", ".automount"))
    assert {p.name for p in units} >= {"iscsifs@.service", "mnt-san.mount", "mnt-san.automount"}
    for unit in units:
        # The units name /usr/local/bin/iscsifs; verify checks that the program exists.
        text = unit.read_text().replace(str(HELPER_PATH), str(SCRIPT))
        (tmp_path / unit.name).write_text(text)
    names = [u.name.replace("@.", "@example.") for u in units]
    # Documentation= names man:iscsifs(8), which verify looks up: where pip install puts it.
    (tmp_path / "man" / "man8").mkdir(parents=True)
    shutil.copy(REPO / "man" / "iscsifs.8", tmp_path / "man" / "man8")
    env = dict(os.environ, MANPATH=f"{tmp_path / 'man'}:")
    r = subprocess.run(["systemd-analyze", "verify", *names], cwd=tmp_path, capture_output=True, timeout=60, env=env)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 0 and out.strip() == "", out  # warnings (unknown keys...) count as failures
    service = (REPO / "systemd" / "iscsifs@.service").read_text()
    assert "Type=notify" in service and "After=network-online.target" in service
    conf = dict(line.split("=", 1) for line in (REPO / "systemd" / "example.conf").read_text().splitlines()
                if line and not line.startswith("#"))
    assert set(conf) == {"URL", "MOUNTPOINT", "OPTIONS", "CREDENTIALS"}


def test_the_service_is_sandboxed(tmp_path):
    """systemd-analyze security rates the shipped service at most 4.0 (of 10), without a mount
    namespace (which would hide the mount from the host), and runs it as iscsifs, dropping what
    it keeps to mount once the mount is live."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze")
    text = (REPO / "systemd" / "iscsifs@.service").read_text()
    (tmp_path / "iscsifs@.service").write_text(text.replace(str(HELPER_PATH), str(SCRIPT)))
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", "iscsifs@.service"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert score is not None, r.stdout + r.stderr
    assert float(score.group(1)) <= 4.0, r.stdout
    assert f"rates this unit {score.group(1)}" in text  # the figure the unit and README give is the one measured
    settings = [line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")]
    namespaced = {"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
                  "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                  "ProtectProc", "ProcSubset", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths",
                  "RootDirectory", "DynamicUser", "PrivateUsers", "MountFlags", "TemporaryFileSystem"}
    assert not namespaced & set(settings), namespaced & set(settings)
    assert "-o setuid=iscsifs" in text and "User=iscsifs" in text and "NoNewPrivileges=yes" in text
    readme = (REPO / "README.md").read_text()
    assert f"| `iscsifs@.service` | {score.group(1)} " in readme


@needs_fuse
def test_sd_notify_readiness_pid_file_and_sigterm(make_target, tmp_path):
    """As iscsifs@.service runs it: -f, Type=notify, READY=1 only once the mount is live."""
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file = tmp_path / "iscsifs.pid"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
    proc = subprocess.Popen([*ISCSIFS, "-f", "--pid-file", str(pid_file), "-o", "credentials=", t.url, str(mnt)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        message = notify.recv(4096).decode()
        assert "READY=1" in message and f"MAINPID={proc.pid}" in message
        assert is_mounted(mnt) and (mnt / "1").stat().st_size == 1 << 20
        assert pid_file.read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in notify.recv(4096).decode()
        assert proc.wait(timeout=30) == 0
        assert not is_mounted(mnt) and not pid_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        unmount(mnt)
        notify.close()
    # A pid file naming a live process is refused before anything is mounted.
    pid_file.write_text(f"{os.getpid()}\n")
    r = run(*ISCSIFS, "--pid-file", str(pid_file), t.url, str(mnt))
    assert r.returncode == 2 and "running process" in r.stderr.decode() and not is_mounted(mnt)


def test_ls_json_and_cli_polish(make_target):
    t = make_target({1: 3 << 20}, block_size=4096)
    r = run(*ISCSIFS, "ls", "--json", t.url)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    disk = next(row for row in rows if row["lun"] == 1)
    assert disk["size"] == 3 << 20 and disk["block_size"] == 4096 and disk["type"] == "disk"
    assert disk["target"] == t.iqn and disk["wwn"].startswith("naa.") and disk["serial"]
    controller = next(row for row in rows if row["lun"] == 0)
    assert controller["size"] is None and controller["type"] == "controller"
    r = run(*ISCSIFS, "--version")
    assert r.returncode == 0 and r.stdout.decode().startswith("iscsifs ")
    r = run(*ISCSIFS, "--help")
    assert "examples:" in r.stdout.decode() and "exit codes:" in r.stdout.decode()
    # The options of an fstab line are accepted when iscsifs is run by hand too.
    r = run(*ISCSIFS, "ls", "-o", "_netdev,nofail,noauto,x-systemd.automount,defaults,users,noatime", t.url)
    assert r.returncode == 0, r.stderr


@needs_fuse
def test_stats_of_a_running_mount(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        (mnt / "1").read_bytes()
        with open(mnt / "1", "r+b") as f:
            f.write(b"s" * 8192)
        r = run(*ISCSIFS, "stats", "--json", str(mnt))
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        assert s["sessions"] == 1 and s["reconnects"] == 0
        assert s["bytes_read"] >= 1 << 20 and s["bytes_written"] >= 8192
        assert s["commands_by_kind"]["READ"] >= 1 and s["commands_by_kind"]["WRITE"] >= 1
        assert 0 < s["latency_us"]["p50"] <= s["latency_us"]["p99"] <= s["latency_us"]["max"]
        r = run(*ISCSIFS, "stats", str(mnt))
        assert r.returncode == 0 and "latency" in r.stdout.decode() and "READ" in r.stdout.decode()
    r = run(*ISCSIFS, "stats", str(tmp_path))
    assert r.returncode == 2 and "is not in an iscsifs mount" in r.stderr.decode()


@pytest.mark.timeout(300)
def test_pip_install_gives_a_working_command(tmp_path, make_target):
    """`pip install .` (here without network: dependencies come from the test venv)."""
    t = make_target({1: 1 << 20})
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(Path(sys.executable).parent.parent.glob("lib/python3*/site-packages"))
    (site / "zz_test_deps.pth").write_text(f"{deps}\n")
    r = subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps",
                        "--disable-pip-version-check", str(REPO)], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    r = run(str(venv / "bin" / "iscsifs"), "ls", t.url)
    assert r.returncode == 0 and t.iqn in r.stdout.decode(), r.stderr
    r = run(str(venv / "bin" / "python"), "-m", "iscsifs", "--version")
    assert r.returncode == 0 and r.stdout.decode() == f"iscsifs {__version__}\n", r.stdout
    # Pure Python, as the sources are: nothing compiled in what pip installed.
    assert not list(site.glob("iscsifs/**/*.so")) and not list(site.glob("*__mypyc*"))


def test_ls_shows_progress_only_on_a_terminal(private_tgt, tmp_path):
    import pty

    for n in range(3):
        iqn = f"iqn.2026-11.test.iscsifs:progress{n}"
        private_tgt.add_target(iqn)
        backing = tmp_path / f"p{n}.img"
        backing.write_bytes(bytes(1 << 20))
        private_tgt.add_lun(iqn, 1, backing)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([*ISCSIFS, "ls", private_tgt.url], stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    out, _ = proc.communicate(timeout=60)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    assert proc.returncode == 0 and out.decode().count(" disk ") == 3
    assert b"scanning target 3/3" in seen
    r = run(*ISCSIFS, "ls", private_tgt.url)  # not a terminal: no progress
    assert b"scanning" not in r.stderr


def test_log_lines_carry_journald_priorities_on_the_journal_stream():
    import logging

    from iscsifs.mount.logs import JournalFormatter

    f = JournalFormatter("iscsifs: %(message)s")
    rec = logging.LogRecord("iscsifs", logging.WARNING, __file__, 1, "target %s skipped", ("x",), None)
    assert f.format(rec) == "<4>iscsifs: target x skipped"
    rec.levelno = logging.ERROR
    assert f.format(rec).startswith("<3>")
    r = subprocess.run(["sh", "-c", f"JOURNAL_STREAM=$(stat -L -c %d:%i /dev/stderr) exec {' '.join(ISCSIFS)} "
                       "ls -d iscsi://127.0.0.1:1 2>&1 >/dev/null | head -1"], capture_output=True, timeout=60)
    assert r.stdout.startswith(b"<")

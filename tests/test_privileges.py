"""A daemon without privileges (-o setuid=USER): every process that serves FUSE or talks to a
target runs as USER with no capabilities and no_new_privs once the mount is live, found by the
TCP connection it holds to tgtd and checked in /proc/PID/status while I/O works, across a
target outage, with a session worker; one privileged process stays, only to unmount, so SIGTERM,
fusermount3 -u and kill -9 all leave no mount behind. In the background, as users run it, on a
machine without syslog: the daemon keeps writing to the default log file, root's, which it
opened before the drop; a drop that cannot happen fails the command at once, with one line."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from iscsifs.net.privileges import process_status as status

from support.targets import ISCSIFS, is_mounted, mounted, needs_fuse, pattern, run, unmount, wait_for
from support.tgt import TgtDaemon

pytestmark = needs_fuse

IQN = "iqn.2026-11.test.iscsifs:unprivileged"
NOBODY = pwd.getpwnam("nobody")
FAST = "nop_interval=1,nop_timeout=1,command_timeout=5"


@pytest.fixture
def target(tmp_path):
    """A private tgtd whose target wants CHAP, restartable on the same port."""
    os.chmod(tmp_path, 0o755)  # the daemon, as nobody, must reach the mount point's directory
    with TgtDaemon(tmp_path / "tgt") as tgt:
        tgt.backing = tmp_path / "lun1.img"
        tgt.backing.write_bytes(pattern(4 << 20, seed=5))
        _configure(tgt)
        secret = tmp_path / "chap.secret"
        secret.write_text("username = alice\npassword = secret-of-alice\n")
        os.chmod(secret, 0o600)  # root's alone: read before the drop
        tgt.secret = secret
        yield tgt


def _configure(tgt: TgtDaemon) -> None:
    tgt.targets.clear()
    tgt.next_tid = 1  # the same tid: tgt derives the LUN's serial and WWN from it
    tgt.add_target(IQN)
    tgt.add_lun(IQN, 1, tgt.backing)
    tgt.tgtadm("--op", "new", "--mode", "account", "--user", "alice", "--password", "secret-of-alice")
    tgt.tgtadm("--op", "bind", "--mode", "account", "--tid", "1", "--user", "alice")


def holders_of_connections_to(port: int) -> set[int]:
    """The processes with an established TCP connection to 127.0.0.1:``port`` (/proc/net/tcp)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            pids.add(int(pid))
    return pids


def assert_unprivileged(pid: int, uid: int = NOBODY.pw_uid, gid: int = NOBODY.pw_gid) -> None:
    s = status(pid)
    assert s["Uid"].split() == [str(uid)] * 4 and s["Gid"].split() == [str(gid)] * 4, s
    assert int(s["CapEff"], 16) == 0 and int(s["CapPrm"], 16) == 0 and int(s["CapAmb"], 16) == 0, s
    assert s["NoNewPrivs"] == "1", s


def monitors(mountpoint: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(f"iscsifs: unmount monitor of {mountpoint}".encode()):
            found.append(int(pid))
    return found


@contextmanager
def daemon(argv: list[str], mnt: Path):
    """The mount's process, started as ``argv``; afterwards never left running nor mounted."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def rw(path: Path, data: bytes, offset: int) -> bytes:
    with open(path, "r+b", buffering=0) as f:
        f.seek(offset)
        f.write(data)
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        f.seek(offset)
        return f.read(len(data))


@pytest.mark.parametrize("workers", [0, 1])
def test_the_processes_that_talk_to_the_target_run_without_privileges(target, tmp_path, workers):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    options = f"setuid=nobody,workers={workers},credentials={target.secret},allow_other,{FAST}"
    with mounted(f"{target.url}/{IQN}", mnt, "-o", options) as m:
        wait_for(lambda: "running as nobody" in m.stderr, 10)
        holders = holders_of_connections_to(target.port)
        assert holders, "no process holds a connection to the target"
        for pid in holders | {m.proc.pid}:
            assert_unprivileged(pid)
        if workers:
            assert m.proc.pid not in holders  # the worker holds it, and dropped too
        (monitor,) = monitors(mnt)
        assert status(monitor)["Uid"].split()[0] == "0" and monitor not in holders  # privileged, and offline
        data = os.urandom(256 << 10)
        assert rw(mnt / "1", data, 12345) == data
        # The target goes away and comes back: the relogin (CHAP, with the secret read as root
        # before the drop) happens as nobody.
        target.stop()
        target.start()
        _configure(target)
        again = os.urandom(64 << 10)
        assert rw(mnt / "1", again, 1 << 20) == again
        wait_for(lambda: "recovered the session" in m.stderr, 20)
        holders = holders_of_connections_to(target.port)
        assert holders
        for pid in holders | {m.proc.pid}:
            assert_unprivileged(pid)
    # mounted() unmounted it with fusermount3 -u as root: nothing left, the monitor gone too.
    assert not is_mounted(mnt)
    wait_for(lambda: not monitors(mnt), 10)
    content = target.backing.read_bytes()
    assert content[12345 : 12345 + len(data)] == data and content[1 << 20 : (1 << 20) + len(again)] == again


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL, "umount"], ids=["sigterm", "kill-9", "umount"])
def test_the_monitor_unmounts_whenever_the_daemon_ends(target, tmp_path, how):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = [*ISCSIFS, "-f", "-o", f"setuid=nobody,credentials={target.secret}", f"{target.url}/{IQN}", str(mnt)]
    with daemon(argv, mnt) as proc:
        wait_for(lambda: is_mounted(mnt) and monitors(mnt), 30)
        (monitor,) = monitors(mnt)
        wait_for(lambda: status(proc.pid)["Uid"].split()[0] == str(NOBODY.pw_uid), 10)
        if how == "umount":
            assert run("umount", str(mnt)).returncode == 0  # root unmounts: the daemon ends on its own
        else:
            proc.send_signal(how)
        proc.wait(timeout=30)
        wait_for(lambda: not is_mounted(mnt), 10)  # no dead mount ("transport endpoint is not connected")
        wait_for(lambda: not os.path.exists(f"/proc/{monitor}") or status(monitor)["State"].startswith("Z"), 10)
        assert os.listdir(mnt) == []


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_started_as_the_user_with_the_capabilities_to_mount(target, tmp_path):
    """As iscsifs@.service starts it: User= with CAP_SYS_ADMIN and CAP_DAC_OVERRIDE as ambient
    capabilities (setpriv plays systemd); -o setuid to the same user drops them once mounted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    os.chown(mnt, NOBODY.pw_uid, NOBODY.pw_gid)
    caps = "+sys_admin,+dac_override"
    argv = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}", *ISCSIFS, "-f", "-o",
            f"setuid=nobody,allow_other,credentials={target.secret}", f"{target.url}/{IQN}", str(mnt)]
    with daemon(argv, mnt) as proc:
        wait_for(lambda: (is_mounted(mnt) and monitors(mnt)) or proc.poll() is not None, 30)
        assert proc.poll() is None, proc.stderr.read()
        wait_for(lambda: int(status(proc.pid)["CapEff"], 16) == 0, 10)
        for pid in holders_of_connections_to(target.port) | {proc.pid}:
            assert_unprivileged(pid)
        (monitor,) = monitors(mnt)
        assert status(monitor)["Uid"].split()[0] == str(NOBODY.pw_uid) and int(status(monitor)["CapEff"], 16)
        data = os.urandom(4096)
        assert rw(mnt / "1", data, 8192) == data
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        wait_for(lambda: not is_mounted(mnt), 10)
    assert target.backing.read_bytes()[8192 : 8192 + 4096] == data


def test_bad_setuid_is_one_line(tmp_path):
    r = run(*ISCSIFS, "-o", "setuid=no-such-user-here", "iscsi://127.0.0.1/iqn.2026-11.x:y", str(tmp_path))
    err = r.stderr.decode()
    assert r.returncode == 2 and err.count("\n") == 1 and "no such user: 'no-such-user-here'" in err, err
    r = run(*ISCSIFS, "-o", "setuid=nobody")  # the demo
    err = r.stderr.decode()
    assert r.returncode == 2 and err.count("\n") == 1 and "-o setuid is for mounting a URL" in err, err
    assert not monitors(tmp_path)


DEFAULT_LOG = Path("/var/log/iscsifs.log")  # root's, where there is neither journal nor syslog


def lines_of(pid: int, since: int) -> list[str]:
    """The default log file's lines from process ``pid`` written after offset ``since``."""
    with open(DEFAULT_LOG, "rb") as f:
        f.seek(since)
        return [line for line in f.read().decode(errors="replace").splitlines() if f"iscsifs[{pid}]:" in line]


def open_for_writing(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open for appending (/proc/PID/fdinfo)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != str(path):
                continue
            flags = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        except OSError:
            continue
        if flags & os.O_WRONLY and flags & os.O_APPEND:
            return True
    return False


@pytest.mark.skipif(os.path.exists("/dev/log"), reason="needs a machine without syslog (/dev/log), where the "
                    "background logs to the default file")
@pytest.mark.parametrize(("host", "workers"), [("127.0.0.1", 0), ("localhost", 1)])
def test_in_the_background_it_runs_as_the_user_and_logs_to_the_default_file(target, tmp_path, host, workers):
    """The mount that used to say "mounted", drop its privileges, fail to open root's log file and
    end in silence, leaving a dead mount. (A host name: a lookup thread alive at the drop would
    keep root's privileges.)"""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file = tmp_path / "iscsifs.pid"
    since = DEFAULT_LOG.stat().st_size if DEFAULT_LOG.exists() else 0
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    argv = [*ISCSIFS, "--pid-file", str(pid_file), "-o", f"setuid=nobody,workers={workers},credentials={target.secret}",
            f"iscsi://{host}:{target.port}/{IQN}", str(mnt)]
    pid = None
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert f"the mount logs to {DEFAULT_LOG}" in r.stderr.decode()
        pid = int(pid_file.read_text())
        assert_unprivileged(pid)
        assert (mnt / "1").read_bytes() == target.backing.read_bytes()  # read as root, served by nobody
        if workers:
            holders = holders_of_connections_to(target.port)
            assert holders and pid not in holders
            for holder in holders:
                assert_unprivileged(holder)
        # Opened by root before the drop and still root's; nobody writes through the descriptor.
        assert DEFAULT_LOG.stat().st_uid == 0 and open_for_writing(pid, DEFAULT_LOG)
        wait_for(lambda: any("running as nobody" in line for line in lines_of(pid, since)), 10)
        assert any(f"INFO: mounted iscsi://{host}" in line for line in lines_of(pid, since))
    finally:
        unmount(mnt)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or status(pid)["State"].startswith("Z"), 30)
    # Written as nobody, after the drop, as the daemon ended:
    assert any(f"closed {mnt}; the unmount monitor unmounts it" in line for line in lines_of(pid, since))
    wait_for(lambda: not monitors(mnt), 10)
    assert not is_mounted(mnt) and not pid_file.exists()  # the monitor removed what root wrote


OTHER_USER = next((p for p in pwd.getpwall() if 0 < p.pw_uid != NOBODY.pw_uid), None)


@pytest.mark.parametrize("how", ["setuid=root", "without CAP_SETUID", "as another user"])
def test_a_drop_that_cannot_happen_fails_the_command_at_once(tmp_path, how):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = ["iscsi://127.0.0.1:1/iqn.2026-11.test.iscsifs:nowhere", str(mnt)]  # never reached
    if how == "setuid=root":
        argv = [*ISCSIFS, "-o", "setuid=root", *mount]
        why = "-o setuid: cannot drop privileges to root: uid 0 keeps them"
    elif how == "without CAP_SETUID":
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (util-linux)")
        # Root in a container that took CAP_SETUID and CAP_SETGID away.
        argv = ["setpriv", "--bounding-set=-setuid,-setgid", *ISCSIFS, "-o", "setuid=nobody", *mount]
        why = "-o setuid: cannot become nobody: started as root without CAP_SETUID and CAP_SETGID"
    else:
        if shutil.which("setpriv") is None or OTHER_USER is None:
            pytest.skip("needs setpriv (util-linux) and a user besides root and nobody")
        caps = "+sys_admin,+dac_override"
        argv = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
                f"--inh-caps={caps}", f"--ambient-caps={caps}", *ISCSIFS, "-o", f"setuid={OTHER_USER.pw_name}",
                *mount]
        why = f"setuid={OTHER_USER.pw_name} needs root (or to be started as {OTHER_USER.pw_name}"
    r = run(*argv)
    err = r.stderr.decode()
    assert r.returncode == 2 and r.stdout == b"" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"iscsifs: {why}"), err
    assert not is_mounted(mnt) and not monitors(mnt)


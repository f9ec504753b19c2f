"""The iscsifs command as a user meets it, each case through the real command: mount points
(busy, left dead by a killed daemon, not empty), connection errors that name their cause,
options before a subcommand, stats of any path in a mount, a log file that records a target
outage and is reopened on SIGHUP, and starting in the background as one transaction: a log file
or pid file that cannot be written fails the command with one line and leaves nothing mounted,
and a failure once the mount is live is logged and ends the daemon with a non-zero status."""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from support.targets import (
    ISCSIFS,
    is_mounted,
    mounted,
    needs_fuse,
    needs_tgt,
    pattern,
    run,
    unmount,
    wait_for,
)
from support.tgt import TgtDaemon, free_port


def _one_line(r: subprocess.CompletedProcess) -> str:
    return _single_line(r.stderr.decode())


def _single_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "[Errno" not in err, err
    return err


def _mounts_on(path) -> int:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return sum(1 for line in f if line.split()[1] == str(path))


# -- mount points ------------------------------------------------------------------------------------


@needs_fuse
def test_a_mount_point_that_is_already_a_mount_is_refused(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        r = run(*ISCSIFS, t.url, str(mnt))
        assert r.returncode == 6 and f"mount point {mnt} is already a mount point (fuse.iscsifs" in _one_line(r)
        assert _mounts_on(mnt) == 1  # nothing stacked on it
    other = tmp_path / "tmpfs"
    other.mkdir()
    assert run("mount", "-t", "tmpfs", "none", str(other)).returncode == 0
    try:
        r = run(*ISCSIFS, t.url, str(other))
        assert r.returncode == 6 and "is already a mount point (tmpfs" in _one_line(r)
    finally:
        run("umount", str(other))


@needs_fuse
def test_a_mount_left_dead_by_a_killed_daemon_is_cleared_and_mounted_over(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt) as first:
        first.proc.kill()  # kill -9: the kernel mount stays, with nobody behind it
        first.proc.wait(timeout=30)
        with pytest.raises(OSError) as e:
            os.stat(mnt)
        assert e.value.errno == errno.ENOTCONN
        r = run(*ISCSIFS, t.url, str(mnt))  # in the background: returns once the new mount is live
        try:
            assert r.returncode == 0, r.stderr
            assert f"cleared a dead iscsifs mount on {mnt}" in r.stderr.decode()
            assert (mnt / "1").read_bytes() == t.backing[1].read_bytes()
            assert _mounts_on(mnt) == 1
        finally:
            unmount(mnt)
    assert not is_mounted(mnt)


@needs_fuse
def test_a_directory_that_is_not_empty_is_mounted_over_with_a_warning(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "kept.txt").write_text("still here")
    with mounted(t.url, mnt) as m:
        assert sorted(os.listdir(mnt)) == ["1", "by-id"]
    assert f"mount point {mnt} is not empty: what it holds is hidden while mounted" in m.stderr
    assert (mnt / "kept.txt").read_text() == "still here"


# -- errors that name their cause --------------------------------------------------------------------------


def test_a_closed_port_is_named_as_refused():
    port = free_port()
    r = run(*ISCSIFS, "ls", f"iscsi://127.0.0.1:{port}")
    assert r.returncode == 3
    assert f"cannot connect to portal 127.0.0.1:{port}: connection refused" in _one_line(r)


@pytest.fixture
def not_iscsi():
    """A TCP server on loopback that answers anything as a web server would, then hangs up."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    server.close()


@pytest.mark.parametrize("how", ["ls", "mount"])
def test_a_peer_that_is_not_an_iscsi_target_is_named_as_such(not_iscsi, tmp_path, how):
    url = f"iscsi://127.0.0.1:{not_iscsi}"
    r = run(*ISCSIFS, "ls", url) if how == "ls" else run(*ISCSIFS, url, str(tmp_path))
    assert r.returncode == 3
    assert f"127.0.0.1:{not_iscsi} answered, but is not an iSCSI target" in _one_line(r)


@needs_tgt
def test_options_before_the_subcommand_count(make_target):
    t = make_target({1: 1 << 20})
    r = run(*ISCSIFS, "-d", "ls", t.url)
    assert r.returncode == 0, r.stderr
    assert t.iqn in r.stdout.decode() and "LoginRequest" in r.stderr.decode()  # -d took effect
    r = run(*ISCSIFS, "-o", "header_digest=none", "ls", "--json", t.url)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["target"] == t.iqn


# -- stats ---------------------------------------------------------------------------------------------


@needs_fuse
def test_stats_of_any_path_in_a_mount_in_units_a_person_reads(make_target, tmp_path):
    t = make_target({1: 4 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        assert (mnt / "1").read_bytes() == t.backing[1].read_bytes()
        r = run(*ISCSIFS, "stats", str(mnt / "1"))  # the LUN file, not the mount point
        out = r.stdout.decode()
        assert r.returncode == 0, r.stderr
        assert "MiB" in out and "MiB/s on average" in out and " ms" in out and "READ" in out
        assert f"paths of {t.iqn}" in out and "(active)" in out
        r = run(*ISCSIFS, "stats", "--json", str(mnt / "1"))
        raw = json.loads(r.stdout)
        assert raw["bytes_read"] >= 4 << 20 and isinstance(raw["latency_us"]["p50"], int)
    r = run(*ISCSIFS, "stats", str(tmp_path))
    assert r.returncode == 2 and "is not in an iscsifs mount" in _one_line(r)


# -- logs ------------------------------------------------------------------------------------------------


@needs_fuse
def test_a_log_file_records_a_target_outage_and_is_reopened_on_sighup(tmp_path):
    iqn = "iqn.2026-11.test.iscsifs:logs"
    backing = tmp_path / "lun.img"
    backing.write_bytes(pattern(1 << 20, seed=5))
    log_file, rotated, pid_file = tmp_path / "iscsifs.log", tmp_path / "iscsifs.log.1", tmp_path / "iscsifs.pid"
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def configure(tgt: TgtDaemon) -> None:
        tgt.targets.clear()
        tgt.next_tid = 1
        tgt.add_target(iqn)
        tgt.add_lun(iqn, 1, backing)

    with TgtDaemon(tmp_path / "tgt") as tgt:
        configure(tgt)
        r = run(*ISCSIFS, "-o", f"log_file={log_file},nop_interval=1,nop_timeout=1", "--pid-file", str(pid_file),
                f"{tgt.url}/{iqn}", str(mnt))  # in the background
        try:
            assert r.returncode == 0, r.stderr
            pid = int(pid_file.read_text())
            wait_for(lambda: "mounted" in log_file.read_text(), 10)
            tgt.stop()  # kill -9
            wait_for(lambda: "lost" in log_file.read_text(), 20)
            tgt.start()
            configure(tgt)
            wait_for(lambda: "recovered the session" in log_file.read_text(), 30)
            os.rename(log_file, rotated)  # what logrotate does, then it sends SIGHUP
            os.kill(pid, signal.SIGHUP)
            wait_for(lambda: log_file.exists() and "log file reopened" in log_file.read_text(), 10)
            assert is_mounted(mnt)  # SIGHUP does not unmount
            assert (mnt / "1").read_bytes()[:4096] == pattern(4096, seed=5)
        finally:
            unmount(mnt)
        wait_for(lambda: not pid_file.exists(), 30)
    old = rotated.read_text()
    assert "connection to" in old and "lost" in old and "recovered the session" in old
    assert "unmounted" in log_file.read_text()


def _background_mount(url: str, mnt, *, env: dict | None = None, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([*ISCSIFS, url, str(mnt)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=stderr, env={**os.environ, **(env or {})}, timeout=60)


@needs_fuse
def test_a_background_mount_under_systemd_keeps_logging_to_the_journal(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    journal = tmp_path / "journal"
    with open(journal, "wb") as err:
        st = os.fstat(err.fileno())
        r = _background_mount(t.url, mnt, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stderr=err)
    try:
        assert r.returncode == 0, journal.read_text()
    finally:
        unmount(mnt)
    wait_for(lambda: "unmounted" in journal.read_text(), 30)  # logged long after the command returned
    assert "<6>iscsifs: unmounted" in journal.read_text()


@needs_fuse
def test_a_background_mount_logs_to_syslog_when_there_is_one(make_target, tmp_path):
    if os.path.exists("/dev/log"):
        pytest.skip("this machine has a syslog socket of its own")
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind("/dev/log")  # a syslog daemon of our own for the test's duration
        try:
            r = _background_mount(t.url, mnt)
            assert r.returncode == 0 and b"no syslog" not in r.stderr, r.stderr
            unmount(mnt)
            syslog.settimeout(30)
            received = b""
            while b"unmounted" not in received:
                received += syslog.recv(4096)
            assert b"iscsifs[" in received
        finally:
            unmount(mnt)
            os.unlink("/dev/log")


@needs_fuse
def test_without_journal_or_syslog_a_background_mount_logs_to_a_file_it_names(make_target, tmp_path):
    if os.path.exists("/dev/log"):
        pytest.skip("this machine has syslog")
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    state = tmp_path / "state"
    # Root's default is /var/log/iscsifs.log; an unprivileged user's is under XDG_STATE_HOME, which
    # a root test cannot reach, so the root default is what is checked.
    default = "/var/log/iscsifs.log"
    before = os.path.getsize(default) if os.path.exists(default) else 0
    r = _background_mount(t.url, mnt, env={"XDG_STATE_HOME": str(state), "JOURNAL_STREAM": ""})
    try:
        assert r.returncode == 0, r.stderr
        assert f"no syslog on this machine (/dev/log): the mount logs to {default}" in _one_line(r)
    finally:
        unmount(mnt)
    wait_for(lambda: b"unmounted" in Path(default).read_bytes()[before:], 30)


# -- starting in the background is one transaction ----------------------------------------------------

# Runs the command given, prints its outcome as one JSON line, then, as the subreaper of what the
# command leaves running (the daemon; an unmount monitor), one JSON line [pid, exit status] as
# each of those ends: a daemon's exit status is otherwise nobody's to see.
_REAPER = """
import ctypes, json, os, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0):  # PR_SET_CHILD_SUBREAPER
    raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")
r = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True)
print(json.dumps([r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")]), flush=True)
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    print(json.dumps([pid, os.waitstatus_to_exitcode(status)]), flush=True)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


class Background:
    """``iscsifs ARGS`` as users run it (no -f), under a subreaper: the command's outcome, then
    how each process it left running ended."""

    def __init__(self, args: list[str], *, env: dict | None = None, code: str | None = None) -> None:
        command = [*ISCSIFS, *args] if code is None else [sys.executable, "-c", code, *args]
        self.proc = subprocess.Popen([sys.executable, "-c", _REAPER, *command], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, env={**os.environ, **(env or {})})
        self._buffer = b""

    def _line(self, deadline: float) -> str | None:
        assert self.proc.stdout is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "timed out"
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def outcome(self, timeout: float = 60) -> tuple[int, str, str]:
        """The command's exit status, stdout and stderr, once it has returned."""
        line = self._line(time.monotonic() + timeout)
        assert line is not None, "the reaper ended without the command's outcome"
        code, out, err = json.loads(line)
        return code, out, err

    def exits(self, timeout: float = 30) -> dict[int, int]:
        """Once every process the command left running has ended: pid -> exit status."""
        deadline = time.monotonic() + timeout
        ended = {}
        while (line := self._line(deadline)) is not None:
            pid, code = json.loads(line)
            ended[pid] = code
        self.proc.wait(timeout=10)
        return ended

    def close(self) -> None:
        """What is left of it when a test failed midway: killed, by pid, the daemon's own children
        (session workers) too."""
        if self.proc.poll() is None:
            left, pending = [], [self.proc.pid]
            while pending:
                children = _children(pending.pop())
                left += children
                pending += children
            for pid in left:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def background(args: list[str], mnt: Path, **kwargs):
    b = Background(args, **kwargs)
    try:
        yield b
    finally:
        unmount(mnt)
        b.close()


NOWHERE = "iscsi://127.0.0.1:1/iqn.2026-11.test.iscsifs:nowhere"  # never reached: the command fails before


@pytest.mark.parametrize("where", ["under a regular file", "a directory"])
def test_a_log_file_that_cannot_be_opened_fails_at_once_with_one_line(tmp_path, where):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "file").write_text("")
    log_file, why = ((tmp_path / "file" / "iscsifs.log", "not a directory") if where == "under a regular file"
                     else (tmp_path, "is a directory"))
    with background(["-o", f"log_file={log_file}", NOWHERE, str(mnt)], mnt) as b:
        code, out, err = b.outcome()
        assert code == 2 and out == "", err
        assert f"iscsifs: cannot open the log file {log_file}: {why}" in _single_line(err)
        assert b.exits() == {}  # nothing was left running
    assert not is_mounted(mnt)


@needs_fuse
def test_a_pid_file_that_cannot_be_written_undoes_the_mount_with_one_line(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run_dir, log_file = tmp_path / "run", tmp_path / "iscsifs.log"
    run_dir.mkdir()
    assert run("mount", "-t", "tmpfs", "-o", "size=4k", "none", str(run_dir)).returncode == 0
    try:
        (run_dir / "filler").write_bytes(b"x" * 4096)  # /run is full: an empty file still fits, a pid does not
        pid_file = run_dir / "iscsifs.pid"
        args = ["--pid-file", str(pid_file), "-o", f"log_file={log_file}", t.url, str(mnt)]
        with background(args, mnt) as b:
            code, out, err = b.outcome()
            assert code == 2 and out == "", err
            assert f"iscsifs: cannot write the pid file {pid_file}: no space left on device" in _single_line(err)
            assert not is_mounted(mnt)  # it was mounted, then undone, before the command returned
            assert b.exits() == {}  # the command waited for the daemon it had forked: nothing left running
        assert os.listdir(run_dir) == ["filler"]
    finally:
        run("umount", str(run_dir))
    logged = log_file.read_text()
    assert f"not mounted on {mnt}: cannot write the pid file {pid_file}" in logged
    assert "INFO: mounted" not in logged, logged


# The FUSE loop fails a moment after the mount is live.
_BROKEN_LOOP = """
import sys

import pyfuse3
import trio


async def main(*args, **kwargs):
    await trio.sleep(1)
    raise RuntimeError("the FUSE loop broke (as the test made it)")


pyfuse3.main = main
from iscsifs.cli.commands import main as iscsifs

raise SystemExit(iscsifs(sys.argv[1:]))
"""


@needs_fuse
def test_a_failure_once_the_mount_is_live_is_logged_and_the_daemon_exits_non_zero(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log_file = tmp_path / "iscsifs.log"
    with background(["-o", f"log_file={log_file}", t.url, str(mnt)], mnt, code=_BROKEN_LOOP) as b:
        code, out, err = b.outcome()
        assert code == 0 and out == "" and err == "", err  # live: the command has said so, and returned
        assert list(b.exits().values()) == [1]  # the daemon: never 0 in silence
    logged = log_file.read_text()
    assert "INFO: mounted" in logged
    assert f"ERROR: the mount on {mnt} failed: the FUSE loop broke (as the test made it) (exit status 1)" in logged
    assert "Traceback" not in logged
    assert not is_mounted(mnt)


@needs_fuse
def test_a_session_worker_that_cannot_start_fails_the_mount_with_one_line(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    # Only the worker's interpreter fails: its command line names its module.
    (site / "sitecustomize.py").write_text('import sys\nif "iscsifs.net.worker" in sys.orig_argv:\n'
                                           '    raise SystemExit(3)\n')
    pythonpath = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    with background(["-o", "workers=1", t.url, str(mnt)], mnt, env={"PYTHONPATH": pythonpath}) as b:
        code, out, err = b.outcome(timeout=15)  # a mount takes about a second here
        assert code != 0 and out == "" and "session worker" in _single_line(err), err
        assert not is_mounted(mnt)


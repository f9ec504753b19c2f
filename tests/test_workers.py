"""Multipath workers (-o workers=N) against a real tgtd: the data is exact, a worker killed with
SIGKILL under fio --verify=crc32c is started again and its commands are issued again without an
error, and no worker outlives its mount. The whole suite runs a second time with ISCSIFS_WORKERS=1
in CI (.ci/run), so every other behaviour is checked with workers too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import trio
from iscsifs.block.client import Client, ClientConfig
from iscsifs.cli.options import parse_mount_options
from iscsifs.net.workers import Workers
from iscsifs.url import parse_url

from support.faultproxy import FaultProxy
from support.targets import ISCSIFS, mounted, needs_fuse, run, wait_for

pytestmark = needs_fuse


def _workers(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "iscsifs.net.worker"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _nexuses(t) -> int:
    """The sessions tgt has on this target."""
    show = t.tgt.tgtadm("--op", "show", "--mode", "target")
    block = show.split(f": {t.iqn}\n", 1)[1].split("\nTarget ", 1)[0]
    return block.count("I_T nexus: ")


def _stats(mnt) -> dict:
    r = run(*ISCSIFS, "stats", "--json", str(mnt))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_two_workers_read_and_write_exactly(make_target, tmp_path):
    t = make_target({1: 8 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt, "-o", "workers=2") as m:
        assert len(_workers(m.proc.pid)) == 2
        lun = mnt / "1"
        assert lun.read_bytes() == t.backing[1].read_bytes()  # 1 MiB reads through the arena
        data = os.urandom(3 << 20)
        with open(lun, "r+b") as f:  # unaligned, large (arena) and small (inline) writes
            f.seek(4097)
            f.write(data)
            f.seek(100)
            f.write(b"small")
        expected = bytearray(t.backing[1].read_bytes())
        assert expected[4097 : 4097 + len(data)] == data and expected[100:105] == b"small"
        assert lun.read_bytes() == bytes(expected)
        stats = _stats(mnt)
        assert stats["workers"] == 2 and stats["worker_restarts"] == 0 and stats["sessions"] == 1
        assert stats["paths"][t.iqn][0]["state"] == "logged_in"
        assert "workers      2 processes, restarted 0 times" in run(*ISCSIFS, "stats", str(mnt)).stdout.decode()
        assert _nexuses(t) == 2  # a session of its own in each worker
    assert not _workers(m.proc.pid)


@pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio")
def test_a_killed_worker_is_restarted_under_fio_verify(make_target, tmp_path):
    # 64 MiB of 4 KiB writes, then as many verifying reads: seconds even on a fast machine (a CI
    # rehearsal saw fio done with 16 MiB before a first kill 0.7 s in), so the first kill comes
    # early and the later ones find fio still writing or verifying.
    t = make_target({1: 64 << 20}, fill=False)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt, "-o", "workers=1,recovery_timeout=30") as m:
        fio = subprocess.Popen(
            ["fio", "--name=verify", f"--filename={mnt / '1'}", "--rw=randwrite", "--bs=4k", "--size=64m",
             "--iodepth=16", "--ioengine=libaio", "--direct=1", "--verify=crc32c", "--verify_fatal=1",
             "--do_verify=1", "--output-format=terse"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        killed = 0
        wait_for(lambda: all(p["isid"] for p in _stats(mnt)["paths"][t.iqn]), 10)  # the worker's state has come
        isids = [p["isid"] for p in _stats(mnt)["paths"][t.iqn]]
        assert len(isids) == 1 and len(isids[0]) == 12
        try:
            for pause in (0.2, 0.7, 0.7):  # mid-write, and again while it reads back and verifies
                time.sleep(pause)
                if fio.poll() is not None:
                    break
                victims = _workers(m.proc.pid)
                assert len(victims) == 1
                os.kill(victims[0], signal.SIGKILL)
                killed += 1
                wait_for(lambda gone=victims: _workers(m.proc.pid) and _workers(m.proc.pid) != gone, 20)
            out, err = fio.communicate(timeout=240)
        finally:
            if fio.poll() is None:
                fio.kill()
        assert fio.returncode == 0, out.decode()[-2000:] + err.decode()[-2000:]
        assert killed >= 1, "fio ended before the first kill: the test proved nothing"
        stats = _stats(mnt)
        assert stats["worker_restarts"] == killed
        # Each new worker logged in again with the dead one's ISID (a session reinstatement, RFC
        # 7143 §6.3.5: the target ended the old nexus's tasks first), so tgt holds one session.
        assert [p["isid"] for p in stats["paths"][t.iqn]] == isids
        assert _nexuses(t) == 1
        assert m.stderr.count("ended (killed by signal 9); starting it again") == killed, m.stderr
    assert "EIO" not in m.stderr and "failed" not in m.stderr, m.stderr


def test_sigterm_unmounts_and_ends_every_worker(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt, "-o", "workers=2") as m:
        workers = _workers(m.proc.pid)
        assert len(workers) == 2
        with open(mnt / "1", "r+b") as f:
            f.write(b"x" * 4096)
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=30) == 0
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in workers), 10)
    assert t.backing[1].read_bytes()[:4096] == b"x" * 4096
    assert _nexuses(t) == 0  # logged out on the way


def test_workers_option_is_checked(tmp_path):
    r = run(*ISCSIFS, "-o", "workers=many", "iscsi://127.0.0.1/iqn.x", str(tmp_path))
    assert r.returncode == 2 and "workers=many is not a number from 0 to 64" in r.stderr.decode()
    r = run(*ISCSIFS, "iscsi://127.0.0.1/iqn.x", str(tmp_path), env={**os.environ, "ISCSIFS_WORKERS": "-1"})
    assert r.returncode == 2 and r.stderr.decode().strip().endswith("ISCSIFS_WORKERS=-1 is not a number from 0 to 64")


def test_workers_default_comes_from_the_environment_and_the_option_wins():
    assert parse_mount_options([], {}).mount.workers == 0
    assert parse_mount_options([], {"ISCSIFS_WORKERS": "3"}).mount.workers == 3
    assert parse_mount_options(["ro,workers=0"], {"ISCSIFS_WORKERS": "3"}).mount.workers == 0


def test_a_login_cancelled_midway_is_logged_out_once_it_completes(make_target):
    """The pool gives up on a login (unmount during the scan): the worker's session, which logs in
    later through a slow path, must not stay logged in."""
    t = make_target({1: 1 << 20})
    proxy = FaultProxy(("127.0.0.1", t.tgt.port))
    proxy.delay = 0.3  # per chunk the target sends: the login takes a second or more

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            workers = await Workers.start(nursery, 1)
            try:
                scope = trio.CancelScope()

                async def give_up_once_connected() -> None:
                    # Midway for sure: the worker has reached the target and its login has begun
                    # (a fixed time fell before the worker even connected on a busy CI machine).
                    while proxy.connections < 1:
                        await trio.sleep(0.01)
                    scope.cancel()

                nursery.start_soon(give_up_once_connected)
                with scope:
                    await Client(ClientConfig()).login_remote(workers, parse_url(f"iscsi://{proxy.portal}"), t.iqn)
                assert scope.cancelled_caught
                await trio.sleep(4)  # the login completes in the worker meanwhile, then logs out
                assert await trio.to_thread.run_sync(_nexuses, t) == 0  # while the worker still runs
            finally:
                await workers.close()
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        proxy.close()

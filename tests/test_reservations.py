"""Hosts that share a LUN: SCSI-3 persistent reservations against real tgt, two mounts with
different initiator names playing two hosts. Registration on every I_T nexus (paths, workers),
fencing that holds under load, a restart of tgtd, and an independent client (qemu-io, libiscsi)
that sees the reservations iscsifs takes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time

import pytest

from support.reservations import key, pr, pr_json, write
from support.targets import ISCSIFS, mounted, needs_fuse, pattern, qemu_io_has_iscsi, run, wait_for

pytestmark = needs_fuse

MIB = 1 << 20
HOST_A = "iqn.2026-11.test.iscsifs:host-a"
HOST_B = "iqn.2026-11.test.iscsifs:host-b"
KEY_A = "0xa1"
KEY_B = "0xb2"
WERO = "write-exclusive-registrants-only"


@pytest.fixture
def hosts(make_target, tmp_path):
    t = make_target({1: 4 * MIB})
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    return t, a, b


def test_two_hosts_register_reserve_write_release(hosts):
    t, a, b = hosts
    block = pattern(4096, seed=7)
    with mounted(t.url, a, "-o", f"initiator_name={HOST_A},reservation_key={KEY_A},reservation={WERO}"), \
            mounted(t.url, b, "-o", f"initiator_name={HOST_B}"):
        status = pr_json(a / "1")
        assert status["key"] == key(KEY_A) and status["registered"] and not status["fenced"]
        assert status["keys"] == [key(KEY_A)]
        assert status["reservation"] == {"key": key(KEY_A), "type": WERO, "ours": True}
        # ls --json reads them too (a login of its own, which registers nothing): with the key of -o
        # reservation_key, whether it is registered.
        r = run(*ISCSIFS, "ls", "--json", "-o", f"reservation_key={KEY_A}", t.url)
        assert r.returncode == 0, r.stderr
        assert [rec["reservations"] for rec in json.loads(r.stdout) if rec["lun"] == 1] == [{
            "generation": status["generation"], "keys": [key(KEY_A)], "key": key(KEY_A), "registered": True,
            "reservation": {"key": key(KEY_A), "type": WERO, "ours": True}}]
        # B, not registered, reads; its writes conflict.
        assert (b / "1").read_bytes()[:4096] == t.backing[1].read_bytes()[:4096]
        assert write(b / "1", block) == errno.EBUSY
        assert pr_json(b / "1")["reservation"]["ours"] is False
        # B registers, then writes.
        r = pr(b / "1", "--register", KEY_B)
        assert r.returncode == 0, r.stderr
        assert sorted(pr_json(b / "1")["keys"]) == sorted([key(KEY_A), key(KEY_B)])
        assert write(b / "1", block) is None
        assert t.backing[1].read_bytes()[:4096] == block
        # B cannot take what A holds; A releases; B reserves.
        r = pr(b / "1", "--reserve", "exclusive-access")
        assert r.returncode == 7 and "reservation conflict" in r.stderr.decode(), r.stderr
        r = pr(a / "1", "--release")
        assert r.returncode == 0, r.stderr
        assert pr_json(a / "1")["reservation"] is None
        r = pr(b / "1", "--reserve", "write-exclusive")
        assert r.returncode == 0, r.stderr
        assert pr_json(a / "1")["reservation"] == {"key": key(KEY_B), "type": "write-exclusive", "ours": False}
        assert write(a / "1", block) == errno.EBUSY  # registered, but WE admits the holder only
        assert "reserving write-exclusive" not in run(*ISCSIFS, "stats", str(a)).stdout.decode()
        stats = json.loads(run(*ISCSIFS, "stats", "--json", str(a)).stdout)
        assert stats["reservations"] == {f"{t.iqn}/1": {"key": key(KEY_A), "registered": True, "fenced": False,
                                                        "reservation": None}}
    # Unmounting unregistered both (A's key from the mount option, B's from iscsifs pr), and
    # released B's reservation: the LUN is as it was.
    with mounted(t.url, a):
        status = pr_json(a / "1")
        assert status["keys"] == [] and status["reservation"] is None and status["key"] is None


FAST = "nop_interval=1,nop_timeout=1,command_timeout=5"


@pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio")
def test_fencing_holds_under_load(hosts, tmp_path):
    """A writes all the time; B preempts A's key (fencing), then writes a pattern; A goes on
    trying for seconds. No write of A lands after the preempt: the pattern stays whole."""
    t, a, b = hosts
    options_a = f"initiator_name={HOST_A},reservation_key={KEY_A},reservation={WERO},{FAST}"
    with mounted(t.url, a, "-o", options_a) as ma, \
            mounted(t.url, b, "-o", f"initiator_name={HOST_B},reservation_key={KEY_B}"):
        fio = subprocess.Popen(["fio", "--name=a", f"--filename={a / '1'}", "--rw=randwrite", "--bs=4k",
                                "--size=4m", "--direct=1", "--ioengine=psync", "--time_based", "--runtime=8",
                                # fio ignores only EIO and EILSEQ unless told
                                "--continue_on_error=write", "--ignore_error=EBUSY,EIO:EBUSY,EIO",
                                "--output-format=json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        try:
            time.sleep(2)
            assert fio.poll() is None, fio.communicate()
            r = pr(b / "1", "--preempt", KEY_A)
            assert r.returncode == 0, r.stderr
            fenced_at = time.monotonic()
            data = pattern(MIB, seed=99)
            assert write(b / "1", data) is None  # B holds A's reservation now
            out, err = fio.communicate(timeout=60)
        finally:
            if fio.poll() is None:
                fio.kill()
        assert time.monotonic() - fenced_at > 4, err
        assert t.backing[1].read_bytes()[:MIB] == data
        job = json.loads(out[out.index(b"{"):])["jobs"][0]
        assert job["total_err"] > 0 and job["write"]["io_bytes"] > 0, job  # wrote before, failed after
        assert "fenced" in ma.stderr and "registering" not in ma.stderr.split("fenced")[1]
        status = pr_json(a / "1")
        assert status["fenced"] and not status["registered"] and status["keys"] == [key(KEY_B)]
        assert status["reservation"] == {"key": key(KEY_B), "type": WERO, "ours": False}
        stats = json.loads(run(*ISCSIFS, "stats", "--json", str(a)).stdout)
        assert stats["reservations"][f"{t.iqn}/1"]["fenced"] is True
        assert "FENCED" in run(*ISCSIFS, "stats", str(a)).stdout.decode()
        assert write(a / "1", b"late") == errno.EBUSY
        time.sleep(2)  # A's paths reconnecting or polling must not register it again
        assert pr_json(b / "1")["keys"] == [key(KEY_B)]
        assert t.backing[1].read_bytes()[:MIB] == data
        # A rejoins only when told to.
        r = pr(a / "1", "--register", KEY_A)
        assert r.returncode == 0, r.stderr
        assert write(a / "1", b"rejoined") is None
    assert t.backing[1].read_bytes()[:8] == b"rejoined"


@pytest.mark.skipif(not qemu_io_has_iscsi(), reason="needs qemu-io with iscsi:// (qemu-utils, qemu-block-extra)")
def test_an_independent_client_sees_the_reservation(hosts):
    """qemu-io (libiscsi, another initiator) cannot write while A holds write-exclusive, and can
    once A released it."""
    t, a, _b = hosts
    before = t.backing[1].read_bytes()[:4096]

    def qemu_write() -> str:
        r = run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4k", t.lun_url(1), timeout=60)
        return r.stdout.decode() + r.stderr.decode()

    with mounted(t.url, a, "-o", f"initiator_name={HOST_A},reservation_key={KEY_A},reservation=write-exclusive"):
        out = qemu_write()
        assert "wrote 4096/4096" not in out, out
        assert t.backing[1].read_bytes()[:4096] == before
        r = pr(a / "1", "--release")
        assert r.returncode == 0, r.stderr
        out = qemu_write()
        assert "wrote 4096/4096" in out, out
        assert t.backing[1].read_bytes()[:4096] == b"\x5a" * 4096


@pytest.mark.parametrize("workers,portals,nexuses", [(0, 2, 2), (1, 2, 2), (2, 1, 2)],
                         ids=["two-paths", "two-paths-one-worker", "two-workers"])
def test_the_key_is_on_every_i_t_nexus(hosts, tmp_path, workers, portals, nexuses):
    """Each path and each worker's session is an I_T nexus: the key is registered on each (READ
    KEYS lists it once per nexus), and a path whose connection was cut is registered again when
    it logs back in, before it serves."""
    from support.faultproxy import FaultProxy

    t, a, _b = hosts
    proxy = FaultProxy(("127.0.0.1", t.tgt.port))
    try:
        options = f"initiator_name={HOST_A},reservation_key={KEY_A},reservation={WERO},workers={workers},{FAST}"
        if portals == 2:
            options += f",portal={t.tgt.portal}"
        with mounted(f"iscsi://{proxy.portal}/{t.iqn}", a, "-o", options) as m:
            wait_for(lambda: all("logged_in" in p for p in
                                 os.getxattr(a / "1", "user.iscsi.paths").decode().splitlines()), 20)
            wait_for(lambda: pr_json(a / "1")["keys"] == [key(KEY_A)] * nexuses, 20)
            assert write(a / "1", b"before the cut") is None
            proxy.cut()
            wait_for(lambda: "recovered the session" in m.stderr, 30)
            # tgt ties a registration to its session, so the relogin made a new nexus and the old
            # one's registration stays behind (README: Shared LUNs): one more entry, all ours.
            wait_for(lambda: pr_json(a / "1")["keys"].count(key(KEY_A)) >= nexuses, 20)
            for i in range(8):  # every path and worker takes some: each must be registered
                assert write(a / "1", f"after the cut {i}".encode(), 4096 * i) is None
            assert pr_json(a / "1")["reservation"]["key"] == key(KEY_A)
        assert t.backing[1].read_bytes()[4096 * 7 : 4096 * 7 + 15] == b"after the cut 7"
    finally:
        proxy.close()


def test_registrations_come_back_after_tgtd_restarts(tmp_path):
    """tgtd killed and started again forgets every registration (it keeps none across restarts):
    that is no fencing, so the mount registers again, takes back its reservation, and its I/O
    goes on."""
    from support.tgt import TgtDaemon

    iqn = "iqn.2026-11.test.iscsifs:pr-restart"
    backing = tmp_path / "lun1.img"
    backing.write_bytes(pattern(4 * MIB, seed=3))
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def configure(tgt: TgtDaemon) -> None:
        tgt.targets.clear()
        tgt.next_tid = 1  # the same tid: tgt derives the LUN's serial and WWN from it
        tgt.add_target(iqn)
        tgt.add_lun(iqn, 1, backing)

    with TgtDaemon(tmp_path / "tgt") as tgt:
        configure(tgt)
        options = f"initiator_name={HOST_A},reservation_key={KEY_A},reservation={WERO},{FAST}"
        with mounted(f"{tgt.url}/{iqn}", mnt, "-o", options) as m:
            assert pr_json(mnt / "1")["reservation"]["ours"]
            tgt.stop()
            tgt.start()
            configure(tgt)
            assert write(mnt / "1", b"after the restart") is None  # waits for the relogin, registered
            wait_for(lambda: "lost every registration" in m.stderr, 20)
            status = pr_json(mnt / "1")
            assert status["keys"] == [key(KEY_A)] and status["registered"] and not status["fenced"]
            assert status["reservation"] == {"key": key(KEY_A), "type": WERO, "ours": True}
            assert "fenced" not in m.stderr
    assert backing.read_bytes()[:17] == b"after the restart"


def test_bad_input_is_one_line_and_changes_nothing(hosts, tmp_path):
    t, a, b = hosts
    lun = a / "1"
    with mounted(t.url, a, "-o", f"initiator_name={HOST_A},reservation_key={KEY_A}"):
        for args, words in [(("--register", "0"), "must be between 1 and"),
                            (("--register", "0x1" + "0" * 16), "must be between 1 and"),
                            (("--preempt", "ab"), "is not a number"),
                            (("--reserve", "shared"), "unknown reservation type 'shared'"),
                            (("--release", "--clear"), "not allowed with argument")]:
            r = pr(lun, *args)
            assert r.returncode == 2 and words in r.stderr.decode(), (args, r.stderr)
        r = pr(lun, "--preempt", KEY_B)
        assert r.returncode == 7, r.stderr
        expected = f"iscsifs: {lun}: key {key(KEY_B)} is not registered on the LUN; nothing was changed\n"
        assert r.stderr.decode() == expected
        r = pr(lun, "--preempt", KEY_A)
        assert r.returncode == 7 and "this mount's own key" in r.stderr.decode()
        r = pr(a, "--json")
        assert r.returncode == 2 and "is not a LUN file" in r.stderr.decode()
        r = pr(tmp_path, "--json")
        assert r.returncode == 2 and "not in an iscsifs mount" in r.stderr.decode()
        with mounted(t.url, b, "-o", f"initiator_name={HOST_B}"):
            r = pr(b / "1", "--reserve", WERO)
            assert r.returncode == 7 and "register first" in r.stderr.decode()
            r = pr(b / "1", "--unregister")
            assert r.returncode == 7 and "no key registered; nothing to unregister" in r.stderr.decode()
        assert pr_json(lun)["keys"] == [key(KEY_A)] and pr_json(lun)["reservation"] is None
    for option, words in [("reservation_key=0", "must be between 1 and"),
                          ("reservation=write-exclusive", "reservation= needs reservation_key="),
                          ("reservation_key=1,reservation=nope", "unknown reservation type")]:
        r = run(*ISCSIFS, "-o", option, t.url, str(a))
        assert r.returncode == 2 and words in r.stderr.decode() and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_target_without_persistent_reservations(hosts):
    """tgt played as a target that lacks PERSISTENT RESERVE IN and OUT (a proxy renames them to an
    operation code it does not know): one line, exit 7, nothing registered on the target."""
    from support.pduproxy import PduProxy

    t, a, b = hosts
    proxy = PduProxy(("127.0.0.1", t.tgt.port))
    proxy.rename = {0x5E: 0xC5, 0x5F: 0xC6}
    try:
        url = f"iscsi://{proxy.portal}/{t.iqn}"
        r = run(*ISCSIFS, "-f", "-o", f"reservation_key={KEY_A},header_digest=none,data_digest=none", url, str(a))
        err = r.stderr.decode()
        assert r.returncode == 7 and err.count("\n") == 1 and "does not support persistent reservations" in err, err
        with mounted(url, a, "-o", "header_digest=none,data_digest=none"):
            for args in [(), ("--register", KEY_A), ("--json",)]:
                r = pr(a / "1", *args)
                assert r.returncode == 7, r.stderr
                assert "the LUN does not support persistent reservations" in r.stderr.decode()
            assert write(a / "1", b"still writable") is None
        r = run(*ISCSIFS, "ls", "--json", "-o", "header_digest=none,data_digest=none", url)
        assert r.returncode == 0, r.stderr
        assert [rec["reservations"] for rec in json.loads(r.stdout)] == [None, None]  # LUN 0 is tgt's controller
        with mounted(t.url, b):  # straight to tgt: nothing was registered
            assert pr_json(b / "1")["keys"] == []
    finally:
        proxy.close()

"""Real mounts against a real tgtd, driven by real tools and Python file I/O."""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import random
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from support.targets import (
    ISCSIFS,
    is_mounted,
    mounted,
    needs_fuse,
    pattern,
    run,
    unmount,
    wait_for,
)

pytestmark = needs_fuse


def test_portal_mount_tree_sizes_and_content(private_tgt, tmp_path):
    a = "iqn.2026-11.example:disk1"
    b = "iqn.2026-11.example:disk2"
    private_tgt.add_target(a)
    private_tgt.add_target(b)
    files = {}
    for iqn, lun, size in ((a, 1, 3 << 20), (a, 2, 1 << 20), (b, 1, 2 << 20)):
        path = tmp_path / f"{iqn[-5:]}-{lun}.img"
        path.write_bytes(pattern(size, lun))
        private_tgt.add_lun(iqn, lun, path)
        files[(iqn, lun)] = path
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(private_tgt.url, mnt):
        assert sorted(os.listdir(mnt)) == sorted([a, b, "by-id"])
        # tgt's LUN 0 is a controller: only disks become files.
        assert sorted(os.listdir(mnt / a)) == ["1", "2"]
        assert os.listdir(mnt / b) == ["1"]
        for (iqn, lun), path in files.items():
            f = mnt / iqn / str(lun)
            st = os.stat(f)
            assert stat.S_ISREG(st.st_mode)
            assert st.st_size == path.stat().st_size
            out = run("stat", "-c", "%s", str(f))
            assert out.stdout.decode().strip() == str(path.stat().st_size)
            # cat | sha256sum equals the backing file's
            cat = subprocess.run(f"cat '{f}' | sha256sum", shell=True, capture_output=True, timeout=60)
            assert cat.stdout.split()[0].decode() == hashlib.sha256(path.read_bytes()).hexdigest()
            assert run("cmp", str(f), str(path)).returncode == 0


def test_dd_write_then_read_back_matches_backing_file(make_target, tmp_path):
    t = make_target({1: 8 << 20})
    image = tmp_path / "image"
    image.write_bytes(os.urandom(3 << 20))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        lun = mnt / "1"
        r = run("dd", f"if={image}", f"of={lun}", "bs=1M", "seek=2", "conv=notrunc,fsync")
        assert r.returncode == 0, r.stderr
        r = run("dd", f"if={lun}", "bs=1M", "skip=2", "count=3", "iflag=direct", f"of={tmp_path / 'back'}")
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "back").read_bytes() == image.read_bytes()
    backing = t.backing[1].read_bytes()
    assert backing[2 << 20 : 5 << 20] == image.read_bytes()
    assert backing[: 2 << 20] == pattern(8 << 20, seed=_seed(t))[: 2 << 20]


def _seed(t) -> int:
    n = int(t.iqn.rsplit(":t", 1)[1])
    return n * 100 + 1


def test_python_io_at_odd_offsets_and_eof(make_target, tmp_path):
    size = (1 << 20) + 512 * 3
    t = make_target({1: size})
    expected = bytearray(pattern(size, seed=_seed(t)))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    rng = random.Random(7)
    with mounted(t.url, mnt):
        path = mnt / "1"
        fd = os.open(path, os.O_RDWR)
        try:
            for _ in range(60):
                off = rng.randrange(0, size)
                n = rng.randrange(1, min(70000, size - off) + 1)
                data = os.urandom(n)
                assert os.pwrite(fd, data, off) == n
                expected[off : off + n] = data
                roff = rng.randrange(0, size)
                rn = rng.randrange(1, 100000)
                assert os.pread(fd, rn, roff) == bytes(expected[roff : roff + rn])
            # A read at EOF is short, past EOF empty.
            assert os.pread(fd, 4096, size - 100) == bytes(expected[-100:])
            assert os.pread(fd, 4096, size) == b""
            # A write past the end fails and never changes the size.
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x" * 1024, size - 10)
            assert e.value.errno == errno.ENOSPC
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x", size + 4096)
            assert e.value.errno == errno.ENOSPC
            assert os.fstat(fd).st_size == size
            os.fsync(fd)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        assert path.read_bytes() == bytes(expected)
    assert t.backing[1].read_bytes() == bytes(expected)


def test_o_direct_and_cached_opens_see_each_others_writes(make_target, tmp_path):
    """An O_DIRECT open (direct_io) next to an ordinary one on the same LUN: neither ever reads
    what the other has overwritten, and O_DIRECT takes any offset and size."""
    size = 4 << 20
    t = make_target({1: size})
    expected = bytearray(pattern(size, seed=_seed(t)))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        path = mnt / "1"
        cached = os.open(path, os.O_RDWR)
        direct = os.open(path, os.O_RDWR | os.O_DIRECT)
        try:
            assert os.pread(cached, 1 << 20, 0) == bytes(expected[: 1 << 20])  # now in the page cache
            block = mmap.mmap(-1, 65536)  # page aligned, as O_DIRECT wants elsewhere
            block[:] = os.urandom(65536)
            assert os.pwritev(direct, [block], 65536) == 65536
            expected[65536:131072] = block
            assert os.pread(cached, 1 << 20, 0) == bytes(expected[: 1 << 20])

            data = os.urandom(5000)
            assert os.pwrite(cached, data, 200_000) == 5000  # write-through: on the LUN now
            expected[200_000:205_000] = data
            assert os.preadv(direct, [block], 196_608) == 65536
            assert bytes(block) == bytes(expected[196_608:262_144])

            odd = os.urandom(777)
            assert os.pwrite(direct, odd, 1_000_003) == 777
            expected[1_000_003:1_000_780] = odd
            assert os.pread(direct, 3000, 999_000) == bytes(expected[999_000:1_002_000])
            assert os.pread(cached, 3000, 999_000) == bytes(expected[999_000:1_002_000])
            os.fsync(direct)
        finally:
            os.close(direct)
            os.close(cached)
    assert t.backing[1].read_bytes() == bytes(expected)


@pytest.mark.parametrize("options, kib", [((), "1024"), (("-o", "readahead=256"), "256")])
def test_readahead_of_the_mount(make_target, tmp_path, options, kib):
    """1 MiB of readahead by default (buffered sequential reads, cat and cp, are much faster than
    with the kernel's 128 KiB), or what readahead= says; found through a mount point with a space."""
    t = make_target({1: 4 << 20})
    mnt = tmp_path / "mount point"
    mnt.mkdir()
    with mounted(t.url, mnt, *options):
        dev = os.stat(mnt).st_dev
        bdi = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
        # Set just after the kernel's INIT is answered (the kernel sets it from that answer), by a
        # task that may run after the first requests: CI's second pass once read the kernel's 128.
        wait_for(lambda: bdi.read_text().strip() == kib, 10)
        assert (mnt / "1").read_bytes() == pattern(4 << 20, seed=_seed(t))


def _polls_after_reads(mnt: Path, expected: bytes) -> tuple[int, int, int, str]:
    """500 reads of 4 KiB, one at a time, each checked against ``expected`` (the LUN's first
    MiB); then the mount's polls, answered polls, answers read by their command's own task, and
    stats text."""
    buf = mmap.mmap(-1, 4096)  # O_DIRECT wants aligned memory
    fd = os.open(mnt / "1", os.O_RDONLY | os.O_DIRECT)
    try:
        for i in range(500):
            off = i * 37 % 256 * 4096
            assert os.preadv(fd, [buf], off) == 4096
            assert buf[:] == expected[off : off + 4096], off
    finally:
        os.close(fd)
    stats = json.loads(os.getxattr(mnt, "user.iscsifs.stats"))
    return (stats["polls"], stats["polls_answered"], stats["own_answers"],
            run(*ISCSIFS, "stats", str(mnt)).stdout.decode())


def test_the_loop_polls_for_answers_where_asked(make_target, tmp_path):
    """poll=US: while its sleeps are short, the loop polls the target's socket and /dev/fuse
    before it sleeps (net.turnend), and the mount's statistics count it; poll=0 never does, nor
    a mount with session workers (whose answers come on channels it does not poll). While it
    polls, a read alone in flight receives its own answer (net.connection), and gets the LUN's
    bytes that way as any other."""
    t = make_target({1: 1 << 20})
    expected = pattern(1 << 20, seed=_seed(t))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # 10 ms, the most: one request at a time sleeps far less than that even on a loaded machine.
    for option, polling in (("poll=10000,workers=0", True), ("poll=0,workers=0", False),
                            ("poll=10000,workers=1", False)):
        with mounted(t.url, mnt, "-o", option):
            polls, answered, own, shown = _polls_after_reads(mnt, expected)
            assert (polls > 0, answered > 0, own > 0) == (polling, polling, polling), (option, polls, answered, own)
            assert answered <= polls and own <= 500 + 10  # the reads, and the few commands of the mount's start
            assert ("sleeps polled for first" in shown) == polling, shown
            assert ("answers read by their command's own task" in shown) == polling, shown


def test_a_background_mount_as_nobody_polls_too(make_target, tmp_path):
    # As users run it: no -f, privileges dropped once the mount is live (polling was set up
    # before, as root).
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file = tmp_path / "iscsifs.pid"
    try:
        r = run(*ISCSIFS, "--pid-file", str(pid_file), "-o", "poll=10000,workers=0,setuid=nobody", t.url, str(mnt))
        assert r.returncode == 0, r.stderr
        assert os.stat(f"/proc/{int(pid_file.read_text())}").st_uid != 0  # running as nobody
        polls, answered, own, shown = _polls_after_reads(mnt, pattern(1 << 20, seed=_seed(t)))
        assert 0 < answered <= polls and own > 0, (polls, answered, own)
        assert "sleeps polled for first" in shown, shown
    finally:
        unmount(mnt)
    wait_for(lambda: not pid_file.exists(), 30)  # the daemon ended, and its pid file went


def test_concurrent_unaligned_writers_lose_nothing(make_target, tmp_path):
    """Many threads write disjoint, unaligned slices that share 512-byte blocks."""
    size = 1 << 20
    t = make_target({1: size}, fill=False)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # Slices of odd lengths laid end to end: neighbours always share a block.
    rng = random.Random(3)
    slices, off = [], 0
    while off < 256 * 1024:
        n = rng.randrange(1, 1500)
        slices.append((off, bytes([len(slices) % 251 + 1]) * n))
        off += n
    rng.shuffle(slices)
    errors: list[BaseException] = []
    with mounted(t.url, mnt):
        path = mnt / "1"

        def writer(part):
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    for o, data in part:
                        assert os.pwrite(fd, data, o) == len(data)
                finally:
                    os.close(fd)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(slices[i::8],)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        assert not errors
        content = path.read_bytes()
    expected = bytearray(size)
    for o, data in slices:
        expected[o : o + len(data)] = data
    assert content == bytes(expected)
    assert t.backing[1].read_bytes() == bytes(expected)


def test_lun_operations_that_cannot_be_done_fail_clearly(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        f = mnt / "1"
        for action in (lambda: os.unlink(f), lambda: os.mkdir(mnt / "x"),
                       lambda: os.rename(f, mnt / "2"), lambda: (mnt / "new").write_bytes(b"")):
            with pytest.raises(OSError) as e:
                action()
            assert e.value.errno == errno.EPERM
        with pytest.raises(OSError) as e:
            os.truncate(f, 2 << 20)  # a LUN cannot grow (tests/test_images.py: shrinking)
        assert e.value.errno == errno.EFBIG
        os.truncate(f, 1 << 20)  # to its own size: harmless, allowed
        assert os.stat(f).st_size == 1 << 20
        with pytest.raises(OSError) as e:
            os.listdir(mnt / "nope")
        assert e.value.errno == errno.ENOENT


def test_read_only_option(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt, "-o", "ro"):
        f = mnt / "1"
        assert os.stat(f).st_mode & 0o222 == 0
        assert f.read_bytes() == t.backing[1].read_bytes()
        with pytest.raises(OSError) as e:
            os.open(f, os.O_WRONLY)
        assert e.value.errno == errno.EROFS


def test_lun_url_on_directory_and_on_file(make_target, tmp_path):
    t = make_target({1: 1 << 20, 2: 2 << 20})
    d = tmp_path / "dir"
    d.mkdir()
    with mounted(t.lun_url(2), d):
        assert sorted(os.listdir(d)) == ["2", "by-id"]
        assert os.stat(d / "2").st_size == 2 << 20
    f = tmp_path / "disk.img"
    f.write_bytes(b"")
    with mounted(t.lun_url(2), f):
        assert os.stat(f).st_size == 2 << 20
        assert f.read_bytes() == t.backing[2].read_bytes()
        with open(f, "r+b") as fh:
            fh.seek(12345)
            fh.write(b"through a file mount point")
        assert t.backing[2].read_bytes()[12345 : 12345 + 26] == b"through a file mount point"
    assert f.stat().st_size == 0  # the mount point file itself is untouched


def test_background_mount_is_live_when_command_returns(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = run(*ISCSIFS, t.url, str(mnt), timeout=60)
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)  # no polling: live the moment the command returned
        assert sorted(os.listdir(mnt)) == ["1", "by-id"]
        assert (mnt / "1").read_bytes()[:4096] == t.backing[1].read_bytes()[:4096]
    finally:
        unmount(mnt)
    # The daemon logs out and exits after unmount: no session left on the target.
    for _ in range(100):
        if "Connection" not in t.tgt.tgtadm("--op", "show", "--mode", "conn", "--tid", str(t.tgt.targets[t.iqn])):
            break
        import time

        time.sleep(0.1)
    else:
        raise AssertionError("session still open on the target after unmount")


@pytest.mark.parametrize("make_url, code, words", [
    (lambda t: "http://127.0.0.1/x", 2, "must start with iscsi://"),
    (lambda t: "iscsi://127.0.0.1:notaport", 2, "port"),
    (lambda t: f"{t.tgt.url}/iqn.2026-11.test.iscsifs:missing", 5, "target not found"),
    (lambda t: f"{t.url}/9", 5, "LUN 9"),
    (lambda t: "iscsi://127.0.0.1:1", 3, "cannot connect"),
])
def test_bad_input_one_line_error_and_exit_code(make_target, tmp_path, make_url, code, words):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run(*ISCSIFS, make_url(t), str(mnt), timeout=60)
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not is_mounted(mnt)


def test_bad_mount_options_and_mountpoints(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    r = run(*ISCSIFS, "-o", "bogus", t.url, str(tmp_path))
    assert r.returncode == 2 and "unknown mount option 'bogus'" in r.stderr.decode()
    for bad in ("readahead=lots", "readahead=-1", "readahead=70000"):
        r = run(*ISCSIFS, "-o", bad, t.url, str(tmp_path))
        err = r.stderr.decode()
        assert r.returncode == 2 and "is not a number of KiB" in err and len(err.strip().splitlines()) == 1, err
    for bad in ("poll=lots", "poll=-1", "poll=10001"):
        r = run(*ISCSIFS, "-o", bad, t.url, str(tmp_path))
        err = r.stderr.decode()
        assert r.returncode == 2 and "is not a number of microseconds" in err, err
        assert len(err.strip().splitlines()) == 1, err
    r = run(*ISCSIFS, t.url, str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr.decode()
    f = tmp_path / "file"
    f.write_bytes(b"")
    r = run(*ISCSIFS, t.url, str(f))
    assert r.returncode == 6 and "only a LUN URL" in r.stderr.decode()
    assert f.read_bytes() == b""


def test_unmount_during_open_file_refused_then_clean(make_target, tmp_path):
    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt) as m:
        fd = os.open(mnt / "1", os.O_RDONLY)
        r = run("fusermount3", "-u", str(mnt))
        assert r.returncode != 0 and is_mounted(mnt)  # busy: a real unmount would lose the open file
        os.close(fd)
    assert m.proc.returncode == 0, m.stderr


def test_block_size_and_target_errors_surface_as_errno(make_target, tmp_path):
    t = make_target({1: 1 << 20, 2: 1 << 20}, block_size=4096, params={2: "readonly=1"})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        assert os.getxattr(mnt / "1", "user.iscsi.block_size") == b"4096"
        # st_blksize is the preferred I/O size: what cp and cat size their buffers by.
        assert run("stat", "-c", "%o", str(mnt / "1")).stdout.decode().strip() == str(1 << 20)
        with open(mnt / "1", "r+b", buffering=0) as f:
            f.seek(4090)
            f.write(b"0123456789ab")  # straddles two 4 KiB blocks
        assert t.backing[1].read_bytes()[4090:4102] == b"0123456789ab"
        # tgt's readonly LUN sets the MODE SENSE WP bit: no write permission shown, and even root
        # gets EROFS at open(2), never a silent success.
        assert stat.S_IMODE(os.stat(mnt / "2").st_mode) == 0o444
        assert stat.S_IMODE(os.stat(mnt / "1").st_mode) == 0o644
        with pytest.raises(OSError) as e:
            os.open(mnt / "2", os.O_WRONLY)
        assert e.value.errno == errno.EROFS
        with pytest.raises(OSError) as e:
            os.truncate(mnt / "2", 0)  # root passes the mode check; the LUN still refuses
        assert e.value.errno == errno.EROFS
        assert (mnt / "2").read_bytes() == t.backing[2].read_bytes()
    assert t.backing[2].read_bytes()[:4096] == pattern(1 << 20, seed=_seed(t) + 1)[:4096]


def test_initiator_name_option(make_target, tmp_path):
    name = "iqn.2026-11.test.iscsifs:allowed-host"
    t = make_target({1: 1 << 20}, bind="")
    t.tgt.tgtadm("--op", "bind", "--mode", "target", "--tid", t.tid, "--initiator-name", name)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # tgt refuses an initiator that is not in the target's ACL as "target not found" (0x0203).
    r = run(*ISCSIFS, t.url, str(mnt))
    assert r.returncode == 5, r.stderr
    with mounted(t.url, mnt, "-o", f"initiator_name={name}"):
        conns = t.tgt.tgtadm("--op", "show", "--mode", "conn", "--tid", t.tid)
        assert f"Initiator: {name}" in conns
    r = run(*ISCSIFS, "-o", "initiator_name=not an iqn", t.url, str(mnt))
    assert r.returncode == 2 and "not an iSCSI name" in r.stderr.decode()


def test_allow_other(make_target, tmp_path):
    import tempfile

    t = make_target({1: 1 << 20})
    # pytest's tmp_path is private to root; another user must be able to reach the mount point.
    base = Path(tempfile.mkdtemp(prefix="iscsifs-allow-other-"))
    os.chmod(base, 0o755)
    mnt = base / "mnt"
    mnt.mkdir()
    as_nobody = ["runuser", "-u", "nobody", "--", "stat", "-c", "%s"]
    try:
        with mounted(t.url, mnt):
            assert run(*as_nobody, str(mnt / "1")).returncode != 0  # FUSE keeps other users out by default
        with mounted(t.url, mnt, "-o", "allow_other"):
            r = run(*as_nobody, str(mnt / "1"))
            assert r.returncode == 0 and r.stdout.decode().strip() == str(1 << 20), r.stderr
            w = run("runuser", "-u", "nobody", "--", "dd", "if=/dev/zero", f"of={mnt / '1'}", "count=1",
                    "conv=notrunc")
            assert w.returncode != 0  # default_permissions: mode 0644 owned by root
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("stop", ["sigterm", "umount"])
def test_stopping_flushes_logs_out_and_exits(make_target, tmp_path, stop):
    import signal

    t = make_target({1: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt) as m:
        with open(mnt / "1", "r+b") as f:
            f.seek(1000)
            f.write(stop.encode())
        if stop == "sigterm":
            m.proc.send_signal(signal.SIGTERM)
        else:
            assert run("umount", str(mnt)).returncode == 0
        assert m.proc.wait(timeout=30) == 0, m.stderr
        assert not is_mounted(mnt)
    assert t.backing[1].read_bytes()[1000 : 1000 + len(stop)] == stop.encode()


def test_debug_logs_protocol_events_without_secrets(make_target):
    t = make_target({1: 1 << 20})
    r = run(*ISCSIFS, "ls", "-d", t.require_chap("dbguser", "dbgsecret123"))
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "LoginRequest" in err and "ScsiCommand" in err and "DataIn" in err
    assert "dbgsecret123" not in err and "dbgsecret123" not in r.stdout.decode()

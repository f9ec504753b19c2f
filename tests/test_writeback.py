"""-o cache=writeback, on tgt and istgt: the kernel gathers buffered writes, and what that must
never cost. close() returns once the data is on the target, fsync means SYNCHRONIZE CACHE after
every dirty page, a failed write-back surfaces at fsync and close, writes past the end never
reach the LUN, a resize drops the cached pages, kill -9 after sync loses nothing, and random
buffered, mmap, O_DIRECT and write-only I/O leaves the LUN equal to a model of it (in both modes). A tape drive's file
keeps its blocks. Also the default (cache=none): the preferred I/O size that lets cp write 1 MiB
at a time."""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from iscsifs.block.sync import ChangerLun, TapeLun

from support.istgt import IstgtDaemon
from support.tape_image import read_tape_image
from support.targets import ISCSIFS, mounted, needs_fuse, pattern, run, unmount, wait_for
from support.tgt import tape_library_daemon

pytestmark = needs_fuse

SIZE = 8 << 20
WB = ("-o", "cache=writeback")


@dataclass
class Lab:
    url: str  # a target's URL
    name: str  # the LUN's file, relative to the mount
    backing: Path  # what the target stores the LUN in


@contextlib.contextmanager
def _lab(kind: str, make_target, tmp_path: Path) -> Iterator[Lab]:
    if kind == "tgt":
        t = make_target({1: SIZE})
        yield Lab(t.url, "1", t.backing[1])
        return
    if not shutil.which("istgt"):
        pytest.skip("needs istgt (Debian package istgt)")
    with IstgtDaemon(tmp_path / "istgt", {"disk1": SIZE}) as d:
        d.backing("disk1").write_bytes(pattern(SIZE, seed=3))
        yield Lab(f"{d.url}/{d.iqn('disk1')}", "0", d.backing("disk1"))


@pytest.fixture(params=["tgt", "istgt"])
def lab(request, make_target, tmp_path) -> Iterator[Lab]:
    with _lab(request.param, make_target, tmp_path) as found:
        yield found


def _stats(mnt: Path) -> dict[str, int]:
    return json.loads(os.getxattr(mnt, "user.iscsifs.stats"))["commands_by_kind"]


def _writes(stats: dict[str, int]) -> int:
    return sum(n for kind, n in stats.items() if kind.startswith("WRITE"))


def test_close_returns_once_the_gathered_writes_are_on_the_target(lab, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    data = os.urandom(3 << 20)
    with mounted(lab.url, mnt, *WB):
        f = mnt / lab.name
        before = _writes(_stats(mnt))
        with open(f, "r+b", buffering=0) as out:
            out.seek(1000)  # pages written in part: the kernel reads them first
            for i in range(0, len(data), 4096):
                assert out.write(data[i : i + 4096]) == 4096
        # Closed, no fsync: the target has every byte already.
        assert lab.backing.read_bytes()[1000 : 1000 + len(data)] == data
        written = _writes(_stats(mnt)) - before
        # 768 write(2)s of 4 KiB went out as far fewer, larger WRITEs: the cache is on.
        assert 0 < written <= 768 // 8, written
        assert os.stat(f).st_size == SIZE


def test_fsync_sends_synchronize_cache_after_every_dirty_page(lab, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    data = os.urandom(1 << 20)
    with mounted(lab.url, mnt, *WB), open(mnt / lab.name, "r+b", buffering=0) as out:
        out.seek(SIZE - len(data))
        out.write(data)
        syncs = _stats(mnt).get("SYNCHRONIZE CACHE", 0)
        os.fsync(out.fileno())
        assert lab.backing.read_bytes()[SIZE - len(data) :] == data
        assert _stats(mnt).get("SYNCHRONIZE CACHE", 0) == syncs + 1


def test_a_write_past_the_end_is_refused_at_fsync_and_close_and_never_grows_the_lun(lab, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    original = lab.backing.read_bytes()
    with mounted(lab.url, mnt, *WB) as m:
        f = mnt / lab.name
        with open(f, "r+b", buffering=0) as out:
            # The kernel takes it into its cache: write(2) cannot know yet (README).
            assert os.pwrite(out.fileno(), b"y" * 8192, SIZE - 4096) == 8192
            with pytest.raises(OSError) as e:
                os.fsync(out.fileno())
            assert e.value.errno == errno.ENOSPC
            # The kernel keeps the size it grew to (README), the mount the LUN's.
            assert os.fstat(out.fileno()).st_size == SIZE + 4096
            assert os.getxattr(f, "user.iscsi.size") == str(SIZE).encode()
        # What lay on the LUN was written; nothing past it, and the LUN is as large as it was.
        assert lab.backing.read_bytes() == original[: SIZE - 4096] + b"y" * 4096
        assert lab.backing.stat().st_size == SIZE
        fd = os.open(f, os.O_WRONLY)
        try:
            os.pwrite(fd, b"z" * 4096, SIZE)
        finally:
            with pytest.raises(OSError) as e:
                os.close(fd)  # no fsync: close reports it
        assert e.value.errno == errno.ENOSPC
        assert lab.backing.stat().st_size == SIZE
    assert m.stderr.count("goes past the end of the LUN") == 2, m.stderr  # logged, once each


def test_a_target_that_refuses_the_write_back_fails_fsync_and_close(make_target, tmp_path):
    t = make_target({1: SIZE})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    original = t.backing[1].read_bytes()
    with mounted(t.url, mnt, *WB) as m:
        f = mnt / "1"
        with open(f, "r+b", buffering=0) as out:
            out.read(4096)  # the session is up: nothing to write yet
            t.tgt.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", t.tid, "--lun", "1",
                         "--params", "readonly=1")
            # write(2) puts the data in the kernel's cache, which cannot know yet (README).
            assert os.pwrite(out.fileno(), b"w" * 65536, 0) == 65536
            with pytest.raises(OSError) as e:
                os.fsync(out.fileno())
            assert e.value.errno == errno.EROFS  # the target's DATA PROTECT, as a write(2) would get it
            os.pwrite(out.fileno(), b"v" * 65536, 1 << 20)
            with pytest.raises(OSError) as e:
                out.close()
            assert e.value.errno == errno.EIO  # close reports any failed write-back as EIO
        assert t.backing[1].read_bytes() == original
    for offset in (0, 1 << 20):
        line = f"writing 65536 bytes at offset {offset} of LUN 1 of {t.iqn} failed"
        assert m.stderr.count(line) == 1, m.stderr


def test_a_background_mount_as_nobody_gathers_writes_and_logs_a_refused_write_back(make_target, tmp_path):
    # As users run it: no -f, privileges dropped, a log file (opened before the drop).
    t = make_target({1: SIZE})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file, log_file = tmp_path / "iscsifs.pid", tmp_path / "iscsifs.log"
    argv = [*ISCSIFS, "--pid-file", str(pid_file), "-o", f"cache=writeback,setuid=nobody,log_file={log_file}",
            t.url, str(mnt)]
    data = os.urandom(1 << 20)
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        pid = int(pid_file.read_text())
        assert os.stat(f"/proc/{pid}").st_uid != 0  # running as nobody
        before = _writes(_stats(mnt))
        with open(mnt / "1", "r+b", buffering=0) as out:
            for i in range(0, len(data), 4096):
                out.write(data[i : i + 4096])
        assert t.backing[1].read_bytes()[: len(data)] == data  # closed: on the target
        assert 0 < _writes(_stats(mnt)) - before <= 256 // 8  # 256 write(2)s, gathered
        t.tgt.tgtadm("--op", "update", "--mode", "logicalunit", "--tid", t.tid, "--lun", "1", "--params", "readonly=1")
        fd = os.open(mnt / "1", os.O_WRONLY)
        os.pwrite(fd, b"x" * 4096, 0)
        with pytest.raises(OSError) as e:
            os.close(fd)
        assert e.value.errno == errno.EIO
        wait_for(lambda: f"writing 4096 bytes at offset 0 of LUN 1 of {t.iqn} failed" in log_file.read_text())
    finally:
        unmount(mnt)
    wait_for(lambda: not pid_file.exists(), 30)  # the daemon ended, and its pid file went
    assert t.backing[1].read_bytes()[: len(data)] == data


def test_cp_onto_the_lun_under_the_writeback_cache(lab, tmp_path):
    # cp opens with O_TRUNC: the kernel sets the size to 0 and, under the writeback cache,
    # believes only itself from then on (README: "The page cache"). The LUN keeps what lies past
    # the copy, and a truncate to the LUN's size, whose answer the kernel takes, shows it again.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    image = tmp_path / "image"
    image.write_bytes(os.urandom(5000))
    original = lab.backing.read_bytes()
    with mounted(lab.url, mnt, *WB):
        f = mnt / lab.name
        assert run("cp", str(image), str(f)).returncode == 0
        assert lab.backing.read_bytes() == image.read_bytes() + original[5000:]
        assert os.stat(f).st_size == 5000
        assert f.read_bytes() == image.read_bytes()
        # iscsifs map takes the LUN's size from the mount, not from stat.
        r = run(*ISCSIFS, "map", "--json", str(f))
        assert r.returncode == 0, r.stderr
        assert sum(e["length"] for e in json.loads(r.stdout)["extents"]) == SIZE
        size = os.getxattr(f, "user.iscsi.size").decode()
        assert run("truncate", "-s", size, str(f)).returncode == 0
        assert os.stat(f).st_size == SIZE
        assert f.read_bytes() == image.read_bytes() + original[5000:]
    assert lab.backing.read_bytes() == image.read_bytes() + original[5000:]


@pytest.mark.parametrize("cache", ["none", "writeback"])
def test_a_resized_lun_drops_its_cached_pages(make_target, tmp_path, cache):
    t = make_target({1: SIZE, 2: 1 << 20})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lun2 = t.backing[2]
    with mounted(t.url, mnt, "-o", f"cache={cache}") as m:
        f = mnt / "2"
        with open(f, "rb") as held:  # open throughout: its open does not drop the pages then
            assert held.read() == lun2.read_bytes()  # now in the page cache
            # The same LUN number, a bigger device with other bytes.
            t.tgt.tgtadm("--op", "delete", "--mode", "logicalunit", "--tid", t.tid, "--lun", "2")
            lun2.write_bytes(pattern(2 << 20, seed=42))
            t.tgt.add_lun(t.iqn, 2, lun2)
            with open(mnt / "1", "rb", buffering=0) as other:
                other.read(512)  # brings the target's UNIT ATTENTION
            wait_for(lambda: f"is now {2 << 20} bytes" in m.stderr)
            held.seek(0)
            assert held.read(1 << 20) == pattern(1 << 20, seed=42)
        if cache == "none":  # under the writeback cache the kernel keeps the size it had
            wait_for(lambda: os.stat(f).st_size == 2 << 20)
            assert f.read_bytes() == pattern(2 << 20, seed=42)


def test_kill_9_after_sync_loses_nothing(make_target, tmp_path):
    t = make_target({1: SIZE})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    data = os.urandom(2 << 20)
    with mounted(t.url, mnt, *WB) as m:
        fd = os.open(mnt / "1", os.O_WRONLY)
        try:
            assert os.pwrite(fd, data, 4096) == len(data)
            os.sync()  # the file still open: no flush of close's has written it
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(timeout=30)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)  # the mount is gone
    assert t.backing[1].read_bytes()[4096 : 4096 + len(data)] == data


class Model:
    """The LUN as it must be, beside four ways into the file: buffered, O_DIRECT, mmap, and a
    write-only open (direct I/O without the writeback cache, like cp's), whose writes the other
    three must see."""

    def __init__(self, path: Path, initial: bytes) -> None:
        self.bytes = bytearray(initial)
        self.buffered = os.open(path, os.O_RDWR)
        self.direct = os.open(path, os.O_RDWR | os.O_DIRECT)
        self.write_only = os.open(path, os.O_WRONLY)
        self.map_fd = os.open(path, os.O_RDWR)
        self.map = mmap.mmap(self.map_fd, len(initial))
        self.aligned = mmap.mmap(-1, 1 << 20)  # O_DIRECT wants aligned memory

    def close(self) -> None:
        self.map.flush()
        self.map.close()
        self.aligned.close()
        for fd in (self.buffered, self.direct, self.write_only, self.map_fd):
            os.close(fd)

    def step(self, rng: random.Random) -> str:
        size = len(self.bytes)
        way = rng.choice(["buffered", "direct", "mmap", "write-only"])
        writing = way == "write-only" or rng.random() < 0.6
        if way == "direct":
            length = rng.randrange(1, 65) * 4096
            offset = rng.randrange(0, (size - length) // 4096 + 1) * 4096
        else:
            length = rng.randrange(1, 200_000)
            offset = rng.randrange(0, size - length + 1)
        what = f"{way} {'write' if writing else 'read'} of {length} at {offset}"
        if writing:
            data = rng.randbytes(length)
            self.bytes[offset : offset + length] = data
            if way == "buffered":
                assert os.pwrite(self.buffered, data, offset) == length, what
            elif way == "write-only":
                assert os.pwrite(self.write_only, data, offset) == length, what
            elif way == "direct":
                self.aligned[:length] = data
                assert os.pwritev(self.direct, [memoryview(self.aligned)[:length]], offset) == length, what
            else:
                self.map[offset : offset + length] = data
        else:
            if way == "buffered":
                got = os.pread(self.buffered, length, offset)
            elif way == "direct":
                n = os.preadv(self.direct, [memoryview(self.aligned)[:length]], offset)
                got = bytes(self.aligned[:n])
            else:
                got = self.map[offset : offset + length]
            assert got == self.bytes[offset : offset + length], what
        if rng.random() < 0.05:
            os.fsync(self.buffered)
        return what


@pytest.mark.parametrize(("cache", "seed"), [("writeback", 1), ("writeback", 2), ("none", 3)])
def test_random_buffered_mmap_direct_and_write_only_io_leaves_the_lun_equal_to_the_model(lab, tmp_path, cache,
                                                                                         seed):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    rng = random.Random(seed)
    with mounted(lab.url, mnt, "-o", f"cache={cache}"):
        model = Model(mnt / lab.name, lab.backing.read_bytes())
        try:
            for _ in range(400):
                model.step(rng)
        finally:
            model.close()
    assert lab.backing.read_bytes() == model.bytes


def test_lun_files_ask_for_large_io(make_target, tmp_path):
    # cp and cat (coreutils) take st_blksize as their buffer size: with the block size, cp wrote 128 KiB
    # at a time, each a round trip; with 1 MiB, its writes are as large as FUSE carries.
    t = make_target({1: SIZE})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        assert os.stat(mnt / "1").st_blksize == 1 << 20
        image = tmp_path / "image"
        image.write_bytes(os.urandom(4 << 20))
        before = _stats(mnt)
        r = run("cp", str(image), str(mnt / "1"))
        assert r.returncode == 0, r.stderr
        assert _writes(_stats(mnt)) - _writes(before) == 4  # four write(2)s of 1 MiB, each one WRITE
        assert t.backing[1].read_bytes()[: 4 << 20] == image.read_bytes()


@pytest.mark.skipif(shutil.which("tgtimg") is None or shutil.which("tar") is None,
                    reason="needs tgtimg (Debian package tgt) and tar")
def test_a_tape_drive_under_the_writeback_cache_still_writes_a_block_per_write(tmp_path):
    # A drive's file is direct_io: no page cache, whatever the mount's cache mode.
    record = 20 * 512
    with tape_library_daemon(tmp_path / "vtl", "iqn.2026-12.test.iscsifs:vtl-wb") as (tgt, lib):
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        changer_url = f"{tgt.url}/{lib.iqn}/{lib.changer_lun}"
        with ChangerLun(changer_url) as changer:
            changer.load(1, drive=0)
        drive = mnt / lib.iqn / str(lib.drive_luns[0])
        src = tmp_path / "src"
        src.mkdir()
        (src / "a").write_bytes(os.urandom(30000))
        with mounted(tgt.url, mnt, *WB):
            r = run("tar", "cf", str(drive), "-b", "20", "-C", str(src), "a")
            assert r.returncode == 0, r.stderr
            with TapeLun(f"{tgt.url}/{lib.iqn}/{lib.drive_luns[0]}") as tape:
                tape.rewind()
            r = run("tar", "xOf", str(drive), "-b", "20", "a")
            assert r.returncode == 0 and r.stdout == (src / "a").read_bytes(), r.stderr
            r = run(*ISCSIFS, "map", str(drive))  # a drive has no size nor blocks to map: one line, exit 2
            assert r.returncode == 2 and r.stderr.decode() == f"iscsifs: {drive} is not a disk LUN's file\n"
        with ChangerLun(changer_url) as changer:
            changer.unload(drive=0)
        files = read_tape_image(lib.tapes[lib.barcodes[0]]).files
        assert files[0] and all(len(block) == record for block in files[0])

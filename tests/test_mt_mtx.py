"""``iscsifs mt`` and ``iscsifs mtx`` on a real tgtd's virtual tape library through a FUSE mount:
mtx loads a tape, tar writes two archives to the drive's file, mt rewinds and spaces over
filemarks (on the mount's own drive, where the position is kept) so that tar reads each back,
eod appends a third (three files in the tape image), fsf/bsf/tell land where mt-st's would, a
load resets the drive's position to the new tape's beginning, the changer's file and ``mtx
status`` agree line by line, --json maps drives to their files, and bad input is one line, a
documented exit code, and changes nothing. The command line's parsing is tested without a target."""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil

import pytest
from iscsifs.block.sync import ChangerLun
from iscsifs.cli.commands import EXIT_TARGET, EXIT_USAGE
from iscsifs.cli.options import MT_VERBS as CLI_MT
from iscsifs.cli.options import MTX_VERBS as CLI_MTX
from iscsifs.cli.options import MtCommand, MtxCommand, UsageError, parse_command
from iscsifs.mount.fs import MT_VERBS, MT_XATTR, MTX_VERBS, MTX_XATTR

from support.tape_image import read_tape_image
from support.targets import HAVE_FUSE, ISCSIFS, mounted, needs_fuse, run
from support.tgt import tape_library_daemon

pytestmark = [pytest.mark.timeout(240)]
needs_library = pytest.mark.skipif(shutil.which("tgtimg") is None or shutil.which("tar") is None,
                                   reason="needs tgtimg (Debian package tgt) and tar")

IQN = "iqn.2026-11.test.iscsifs:vtl-mt"
DISK_LUN = 9


# -- the command line --------------------------------------------------------------------------------


def test_mt_and_mtx_parse():
    assert parse_command(["mt", "/m/1", "fsf", "2"]) == MtCommand("/m/1", "fsf", 2)
    assert parse_command(["mt", "/m/1", "status", "--json"]) == MtCommand("/m/1", "status", json=True)
    assert parse_command(["mtx", "/m/3", "load", "1", "0"]) == MtxCommand("/m/3", "load", (1, 0))
    assert parse_command(["mtx", "/m/3", "unload"]) == MtxCommand("/m/3", "unload")
    # As mt-st and mtx take them: -f (mt's -t too), $TAPE and $CHANGER, a verb's beginning,
    # mt-st's other names, counts in hexadecimal and with k.
    # A verb's beginning is the first verb it begins, in mt-st's order (rewind before rewoffl).
    assert parse_command(["mt", "-f", "/m/1", "rew"]) == MtCommand("/m/1", "rewind")
    assert parse_command(["mt", "-f", "/m/1", "r"]) == MtCommand("/m/1", "rewind")
    assert parse_command(["mt", "-t", "/m/1", "stat"]) == MtCommand("/m/1", "status")
    assert parse_command(["mt", "/m/1", "seod"]) == MtCommand("/m/1", "eod")
    assert parse_command(["mt", "/m/1", "rewoffl"]) == MtCommand("/m/1", "offline")
    assert parse_command(["mt", "/m/1", "fsf", "0x10"]) == MtCommand("/m/1", "fsf", 16)
    assert parse_command(["mt", "/m/1", "setblk", "1k"]) == MtCommand("/m/1", "setblk", 1024)
    assert parse_command(["mt", "/m/1", "erase", "1"]) == MtCommand("/m/1", "erase")
    assert parse_command(["mtx", "-f", "/m/3", "next", "1"]) == MtxCommand("/m/3", "next", (1,))
    old = {k: os.environ.pop(k, None) for k in ("TAPE", "CHANGER")}
    try:
        os.environ["TAPE"] = "/m/1"
        assert parse_command(["mt", "fsf"]) == MtCommand("/m/1", "fsf")
        assert parse_command(["mtx", "inventory"]) == MtxCommand("/m/1", "inventory")  # mtx falls back on $TAPE
        os.environ["CHANGER"] = "/m/3"
        assert parse_command(["mtx", "status"]) == MtxCommand("/m/3", "status")
        del os.environ["TAPE"], os.environ["CHANGER"]
        with pytest.raises(UsageError, match=r"set \$TAPE"):
            parse_command(["mt", "rewind"])
    finally:
        for k, v in old.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    for argv in (["mt", "/m/1", "rewind", "2"], ["mt", "/m/1", "setblk"], ["mtx", "/m/3", "load"],
                 ["mtx", "/m/3", "transfer", "1"], ["mtx", "/m/3", "load", "1", "--json"], ["mt", "/m/1", "zz"],
                 ["mt", "/m/1", "fsf", "-1"], ["mt", "/m/1", "fsf", "x"], ["mtx", "/m/3", "load", "one"],
                 ["mtx", "/m/3", "fly"]):
        with pytest.raises(UsageError):
            parse_command(argv)
    # The mount's verbs are the command line's, status and tell aside (read through getxattr).
    assert set(CLI_MT) - {"status", "tell"} == set(MT_VERBS)
    assert set(CLI_MTX) - {"status"} == set(MTX_VERBS)


# -- on tgtd's library -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A private tgtd with a library of 2 drives (LUNs 1, 2), a changer (LUN 3), 4 tapes, and a disk."""
    if not HAVE_FUSE:
        pytest.skip("needs FUSE")
    with tape_library_daemon(tmp_path_factory.mktemp("vtl-mt"), IQN, disk_lun=DISK_LUN) as pair:
        yield pair


def iscsifs(*args: str):
    return run(*ISCSIFS, *args, timeout=60)


def ok(*args: str) -> str:
    r = iscsifs(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def refused(code: int, *args: str) -> str:
    """The command fails with ``code`` and one line on stderr, no traceback."""
    r = iscsifs(*args)
    lines = r.stderr.decode().splitlines()
    assert r.returncode == code and len(lines) == 1 and lines[0].startswith("iscsifs: "), (r.returncode, lines)
    return lines[0]


def tell(drive) -> int:
    text = ok("mt", str(drive), "tell").strip()
    assert text.startswith("At block ") and text.endswith(".")
    return int(text[len("At block ") : -1])


@needs_fuse
@needs_library
def test_mt_and_mtx_through_the_mount(library, tmp_path):
    tgt, lib = library
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    contents = {"a": os.urandom(30000), "b": os.urandom(5000), "c": os.urandom(12000)}
    for name, data in contents.items():
        (src / name).write_bytes(data)
    with mounted(tgt.url, mnt):
        directory = mnt / lib.iqn
        drive0, drive1 = (directory / str(n) for n in lib.drive_luns)
        changer = directory / str(lib.changer_lun)
        disk = directory / str(DISK_LUN)
        try:
            assert ok("mtx", str(changer), "load", "1", "0") == \
                "Loading media from Storage Element 1 into drive 0...done\n"
            for name in ("a", "b"):
                r = run("tar", "cf", str(drive0), "-b", "20", "-C", str(src), name)
                assert r.returncode == 0, r.stderr

            # rewind: tar lists the first archive; rewind, fsf 1: tar restores the second.
            ok("mt", str(drive0), "rewind")
            r = run("tar", "tf", str(drive0), "-b", "20")
            assert r.returncode == 0 and r.stdout.decode().split() == ["a"], r.stderr
            ok("mt", str(drive0), "rewind")
            status = ok("mt", str(drive0), "status")
            assert "File number=0, block number=0, partition=0." in status and " BOT ONLINE" in status
            ok("mt", str(drive0), "fsf", "1")
            r = run("tar", "xf", str(drive0), "-b", "20", "-C", str(out))
            assert r.returncode == 0, r.stderr
            assert (out / "b").read_bytes() == contents["b"]

            # eod, then a third archive appends: three files on the tape.
            ok("mt", str(drive0), "eod")
            r = run("tar", "cf", str(drive0), "-b", "20", "-C", str(src), "c")
            assert r.returncode == 0, r.stderr
            files = read_tape_image(lib.tapes[lib.barcodes[0]]).files
            assert len(files) == 4 and files[3] == []
            # Each tape file holds its archive, in tar's 10 KiB records: the same archive made again
            # (same files, same times) to a pipe.
            for file, name in zip(files[:3], "abc", strict=True):
                archive = run("tar", "cf", "-", "-b", "20", "-C", str(src), name).stdout
                assert file == [archive[i : i + 10240] for i in range(0, len(archive), 10240)]

            # Where mt-st's fsf and bsf land: fsf N after the N-th filemark; bsf before it.
            ok("mt", str(drive0), "rewind")
            assert tell(drive0) == 0
            ok("mt", str(drive0), "fsf", "2")
            assert tell(drive0) == len(files[0]) + 1 + len(files[1]) + 1
            fields = json.loads(ok("mt", str(drive0), "status", "--json"))
            assert (fields["file_number"], fields["block_number"], fields["online"]) == (2, 0, True)
            ok("mt", str(drive0), "bsf", "1")
            assert tell(drive0) == len(files[0]) + 1 + len(files[1])
            ok("mt", str(drive0), "bsr", "1")  # a record back, within the second file
            assert tell(drive0) == len(files[0]) + 1 + len(files[1]) - 1
            ok("mt", str(drive0), "fsr", "1")
            assert tell(drive0) == len(files[0]) + 1 + len(files[1])
            # fsr onto a filemark: st's EIO (the drive's space stops at it), one line, exit 7.
            assert "input/output error" in refused(EXIT_TARGET, "mt", str(drive0), "fsr", "1")

            # The drive's file open: refused as st refuses a second opener.
            fd = os.open(drive1, os.O_RDONLY | os.O_NONBLOCK)
            try:
                assert "busy" in refused(EXIT_TARGET, "mt", str(drive1), "rewind")
            finally:
                os.close(fd)
            # tgt has no ERASE: one line, exit 7.
            assert "not supported" in refused(EXIT_TARGET, "mt", str(drive0), "erase")

            # Bad input, one line and a documented code, changing nothing.
            before = (directory / str(lib.changer_lun)).read_bytes()
            line = refused(EXIT_TARGET, "mtx", str(changer), "load", "2", "0")
            assert "drive 0 is full" in line
            assert "slot 3 is already full" in refused(EXIT_TARGET, "mtx", str(changer), "unload", "3", "0")
            assert "out of range" in refused(EXIT_TARGET, "mtx", str(changer), "load", "9", "1")
            assert "not a tape drive" in refused(EXIT_USAGE, "mt", str(disk), "rewind")
            assert "not a tape drive" in refused(EXIT_USAGE, "mt", str(changer), "status")
            assert "not a medium changer" in refused(EXIT_USAGE, "mtx", str(drive0), "status")
            assert "not a medium changer" in refused(EXIT_USAGE, "mtx", str(disk), "load", "1")
            assert changer.read_bytes() == before

            # transfer, unload; the same tape loaded again starts at its beginning.
            ok("mtx", str(changer), "transfer", "2", "1")
            assert ok("mtx", str(changer), "unload", "2", "0") == \
                "Unloading drive 0 into Storage Element 2...done\n"
            ok("mtx", str(changer), "load", "2", "0")
            assert tell(drive0) == 0
            assert "File number=0, block number=0" in ok("mt", str(drive0), "status")
            r = run("tar", "tf", str(drive0), "-b", "20")
            assert r.returncode == 0 and r.stdout.decode().split() == ["a"], r.stderr
            ok("mtx", str(changer), "unload", "2", "0")

            # Into the other drive: read from the tape's start there.
            ok("mtx", str(changer), "load", "2", "1")
            r = run("tar", "tf", str(drive1), "-b", "20")
            assert r.returncode == 0 and r.stdout.decode().split() == ["a"], r.stderr

            # An empty slot, below the command's own check too: ENOMEDIUM, nothing moved.
            before = changer.read_bytes()
            assert "slot 2 is empty" in refused(EXIT_TARGET, "mtx", str(changer), "load", "2", "0")
            with pytest.raises(OSError) as raised:
                os.setxattr(changer, MTX_XATTR.decode(), b"load 2 0")
            assert raised.value.errno == errno.ENOMEDIUM
            assert changer.read_bytes() == before

            # mtx status names the changer as it was given (here relative to the current directory),
            # the file as the mount reaches it; the rest is the same, line by line.
            relative = run(*ISCSIFS, "mtx", "-f", str(changer.name), "status", cwd=directory, timeout=60)
            assert relative.returncode == 0, relative.stderr
            assert relative.stdout.decode().splitlines()[0].startswith(f"  Storage Changer {changer.name}:2 Drives")
            text = changer.read_bytes().decode().splitlines()
            assert text[0].startswith(f"  Storage Changer {changer}:2 Drives")
            assert text == ok("mtx", str(changer), "status").splitlines()
            assert text[1:] == relative.stdout.decode().splitlines()[1:]
            status = json.loads(ok("mtx", str(changer), "status", "--json"))
            assert [d["file"] for d in status["drives"]] == [str(drive0), str(drive1)]
            assert [d["lun"] for d in status["drives"]] == list(lib.drive_luns)
            assert status["drives"][1]["barcode"] == lib.barcodes[0] and not status["drives"][0]["full"]
            assert [s["barcode"] for s in status["slots"]] == [lib.barcodes[1], None, lib.barcodes[2],
                                                                lib.barcodes[3]]
            assert status["import_export"] == [] and status["device"] == str(changer)

            # next and first print what mtx prints: the unload to the tape's slot, then the load.
            slots = [s["full"] for s in status["slots"]]  # slot 2 is empty: drive 1 holds its tape
            assert slots == [True, False, True, True]
            assert ok("mtx", str(changer), "next", "1").splitlines() == [
                "Unloading drive 1 into Storage Element 2...done",
                "Loading media from Storage Element 3 into drive 1...done"]
            assert ok("mtx", str(changer), "first", "1").splitlines() == [
                "Unloading drive 1 into Storage Element 3...done",
                "Loading media from Storage Element 1 into drive 1...done"]
            assert ok("mtx", str(changer), "first", "1") == "loading...done\n"
            ok("mtx", "-f", str(changer), "unload", "1", "1")
            ok("mtx", "-f", str(changer), "load", "2", "1")  # back as it was: the first tape in drive 1

            # The largest block: what one FUSE request carries, 256 pages (1 MiB) from a page-aligned
            # buffer as tar's and dd's are. One write(2) of 1 MiB is one block; a longer one comes as
            # several requests, each a block of its own; a read(2) of at most 1 MiB gets one block.
            ok("mt", str(drive1), "eod")
            page_aligned = mmap.mmap(-1, 2 << 20)
            page_aligned.write(os.urandom(2 << 20))
            data = memoryview(page_aligned)
            fd = os.open(drive1, os.O_WRONLY)
            try:
                assert os.write(fd, data[: 1 << 20]) == 1 << 20
                assert os.write(fd, data[: (1 << 20) + 4096]) == (1 << 20) + 4096
            finally:
                os.close(fd)
            last = read_tape_image(lib.tapes[lib.barcodes[0]]).files[-2]
            assert last == [data[: 1 << 20], data[: 1 << 20], data[1 << 20 : (1 << 20) + 4096]]
            ok("mt", str(drive1), "rewind")
            ok("mt", str(drive1), "fsf", "3")
            into = mmap.mmap(-1, 1 << 20)  # not more: the kernel would go on into the next block
            fd = os.open(drive1, os.O_RDONLY)
            try:
                assert [os.readv(fd, [into]) for _ in range(4)] == [1 << 20, 1 << 20, 4096, 0]
                assert into[:4096] == data[1 << 20 : (1 << 20) + 4096]
            finally:
                os.close(fd)
            data.release()
        finally:
            with ChangerLun(f"{tgt.url}/{lib.iqn}/{lib.changer_lun}") as library_changer:
                status = library_changer.status()
                for n, element in enumerate(status.drives):
                    if element.full:
                        library_changer.unload(drive=n)


@needs_fuse
@needs_library
def test_mt_positions_a_tape_on_a_read_only_mount(library, tmp_path):
    """Reading a tape back is a read-only job: mt-st opens the device read-only to position it, and
    so does ``iscsifs mt`` (the kernel refuses any setxattr on a read-only mount)."""
    tgt, lib = library
    with ChangerLun(f"{tgt.url}/{lib.iqn}/{lib.changer_lun}") as changer:
        changer.load(4, drive=0)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with mounted(tgt.url, mnt, "-o", "ro"):
            drive = mnt / lib.iqn / str(lib.drive_luns[0])
            ok("mt", str(drive), "eod")
            ok("mt", "-f", str(drive), "rewind")
            assert tell(drive) == 0
            assert "BOT ONLINE" in ok("mt", str(drive), "status")
            line = refused(EXIT_TARGET, "mt", str(drive), "weof")
            assert "read-only" in line
            with pytest.raises(OSError) as raised:  # what the verbs went through before: refused here
                os.setxattr(drive, MT_XATTR.decode(), b"rewind")
            assert raised.value.errno == errno.EROFS
            with pytest.raises(OSError) as raised:
                os.open(drive, os.O_WRONLY)
            assert raised.value.errno == errno.EROFS
    finally:
        with ChangerLun(f"{tgt.url}/{lib.iqn}/{lib.changer_lun}") as changer:
            changer.unload(drive=0)

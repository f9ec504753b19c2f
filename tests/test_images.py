"""Writing an image onto a LUN file as onto a disk: cp (of a sparse image too), dd without
conv=notrunc, qemu-img convert and qemu-img dd, each compared byte for byte, with the LUN past
the image left as it was; truncating never changes the LUN, growing it is a clear error."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from support.targets import mounted, needs_fuse, pattern, run

pytestmark = needs_fuse

LUN_SIZE = 8 << 20


def _image(path, sparse: bool) -> bytes:
    """3 MiB + 1000 bytes of data; a sparse one has holes in the middle and at its end."""
    size = (3 << 20) + 1000
    data = bytearray(pattern(size, seed=77))
    if sparse:
        data[1 << 20 : 2 << 20] = bytes(1 << 20)
        data[-1000:] = bytes(1000)
        with open(path, "wb") as f:
            f.write(data[: 1 << 20])
            f.seek(2 << 20)
            f.write(data[2 << 20 : -1000])
            f.truncate(size)
        assert os.stat(path).st_blocks * 512 < size  # really sparse: cp will seek over its holes
    else:
        path.write_bytes(data)
    return bytes(data)


TOOLS = {
    "cp": lambda img, lun: ["cp", str(img), str(lun)],
    "cp --sparse=always": lambda img, lun: ["cp", "--sparse=always", str(img), str(lun)],
    "dd": lambda img, lun: ["dd", f"if={img}", f"of={lun}", "bs=1M"],
    "qemu-img convert": lambda img, lun: ["qemu-img", "convert", "-f", "raw", "-O", "raw", str(img), str(lun)],
    "qemu-img dd": lambda img, lun: ["qemu-img", "dd", "-f", "raw", "-O", "raw", f"if={img}", f"of={lun}"],
}


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("tool", list(TOOLS))
def test_an_image_written_by_a_disk_tool_lands_byte_for_byte(make_target, tmp_path, tool, sparse):
    if tool.startswith("qemu-img") and shutil.which("qemu-img") is None:
        pytest.skip("needs qemu-img (Debian package qemu-utils)")
    t = make_target({1: LUN_SIZE})
    before = t.backing[1].read_bytes()
    img = tmp_path / "disk.img"
    data = _image(img, sparse)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        r = run(*TOOLS[tool](img, mnt / "1"))
        assert r.returncode == 0, r.stderr.decode()
        assert os.stat(mnt / "1").st_size == LUN_SIZE  # a disk keeps its size
        assert (mnt / "1").read_bytes()[: len(data)] == data  # through the mount, before any flush
    after = t.backing[1].read_bytes()
    assert after[: len(data)] == data  # on the target, holes as zeros
    # The rest of the LUN as it was, as on a disk; qemu-img writes whole 512-byte sectors, so
    # the zeros that pad its last sector are its own.
    rest = -(-len(data) // 512) * 512 if tool.startswith("qemu-img") else len(data)
    assert after[len(data) : rest] == bytes(rest - len(data)) and after[rest:] == before[rest:]


def test_truncating_never_changes_the_lun_and_growing_is_refused(make_target, tmp_path):
    t = make_target({1: LUN_SIZE})
    before = t.backing[1].read_bytes()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(t.url, mnt):
        for size in ("0", "1M", str(LUN_SIZE)):
            r = run("truncate", "-s", size, str(mnt / "1"))
            assert r.returncode == 0, r.stderr
            assert os.stat(mnt / "1").st_size == LUN_SIZE
        r = run("truncate", "-s", str(LUN_SIZE + 512), str(mnt / "1"))
        assert r.returncode != 0 and "File too large" in r.stderr.decode()
        with pytest.raises(OSError) as e:
            os.truncate(mnt / "1", LUN_SIZE * 2)
        assert e.value.errno == errno.EFBIG
        assert (mnt / "1").read_bytes() == before
        # O_TRUNC then a write at 1 MiB: the hole before it reads, and is written, as zeros
        with open(mnt / "1", "w+b", buffering=0) as f:
            f.seek(1 << 20)
            f.write(b"after a hole")
            assert os.pread(f.fileno(), 16, 4096) == bytes(16)
    after = t.backing[1].read_bytes()
    assert after[: 1 << 20] == bytes(1 << 20) and after[1 << 20 : (1 << 20) + 12] == b"after a hole"
    assert after[(1 << 20) + 12 :] == before[(1 << 20) + 12 :]

"""``iscsifs pr`` as the reservation tests drive it, and a write that reports its errno."""

from __future__ import annotations

import json
import os
import subprocess

from iscsifs.scsi.persistent import key_text

from support.targets import ISCSIFS, run


def pr(path, *args: str) -> subprocess.CompletedProcess:
    return run(*ISCSIFS, "pr", str(path), *args)


def pr_json(path) -> dict:
    r = pr(path, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def key(text: str) -> str:
    """A key as iscsifs shows it, from how a test gives it ("0xa1")."""
    return key_text(int(text, 16))


def write(path, data: bytes, offset: int = 0) -> int | None:
    """A synchronous pwrite: None if it and the close worked, else the first errno (a close after
    a failed write fails too: the flush that it runs is refused as the write was)."""
    fd = os.open(path, os.O_WRONLY | os.O_DSYNC)
    failed = None
    try:
        os.pwrite(fd, data, offset)
    except OSError as exc:
        failed = exc.errno
    try:
        os.close(fd)
    except OSError as exc:
        failed = failed or exc.errno
    return failed

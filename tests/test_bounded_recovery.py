"""No request waits forever, against real tgt: a PDU proxy (``support.pduproxy``) between the mount
and tgtd swallows every answer (Data-In, SCSI Response) to the READs or WRITEs of one block, as a
target that lost those tasks would. What must hold:

- a command with no answer in ``command_timeout`` is aborted (ABORT TASK); when the abort gets no
  answer, the LUN is reset (LOGICAL UNIT RESET); when that gets none either, the session is
  reinstated (a new login with the same ISID);
- a request is sent at most ``retries + 1`` times (``-o retries=N``, default 5), and one whose
  answers never come fails with EIO within command_timeout x (retries + 1) + recovery_timeout;
- meanwhile the other requests to the LUN keep working, and read and write the right bytes
  (writes beside a stuck read; reads beside a stuck write: the kernel lets no other write to the
  file start while one waits);
- once the answers come through again, the same block reads and writes as before, on the same
  mount.

Every request to the mount runs in a subprocess bounded in time: on a mount that hangs, the test
fails (and kills the daemon so that the request stuck in the kernel ends) instead of hanging CI.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.pduproxy import ABORT_TASK, LOGICAL_UNIT_RESET, PduProxy, Swallow
from support.targets import is_mounted, mounted, needs_fuse, pattern, wait_for
from support.tgt import TgtDaemon

# The thread method of pytest-timeout ends the whole run: this is far past every bound below.
pytestmark = [needs_fuse, pytest.mark.timeout(600)]

IQN = "iqn.2026-11.test.iscsifs:bounded"
SIZE = 8 << 20
BLOCK = 4096  # what dd moves: one page, one request
STUCK = 100  # the block whose answers are swallowed
OTHERS = (0, 1, STUCK - 1, STUCK + 1, 700, 1500, SIZE // BLOCK - 1)  # the blocks that must keep working
COMMAND_TIMEOUT = 3
RECOVERY_TIMEOUT = 10
DEFAULT_RETRIES = 5
SLACK = 32  # past the bound, for a loaded CI machine: the default case's limit is 28 + 32 = 60 s
HANG = 120  # a request still waiting after this long hangs
REQUEST = 60  # any other request to the mount


@pytest.fixture
def target(tmp_path):
    """A private tgtd with one 8 MiB LUN of a known pattern: its resets and reinstatements touch no
    other test."""
    with TgtDaemon(tmp_path / "tgt") as tgt:
        backing = tmp_path / "lun1.img"
        backing.write_bytes(pattern(SIZE, seed=73))
        tgt.add_target(IQN)
        tgt.add_lun(IQN, 1, backing)
        tgt.backing = backing
        yield tgt


@pytest.fixture
def proxy(target):
    p = PduProxy(("127.0.0.1", target.port))
    yield p
    p.swallow = None
    p.close()


@pytest.fixture
def processes():
    """Every request process a test starts. One still running at the end is killed; one that a
    hung mount keeps in the kernel is not waited for forever."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
    for p in started:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


# -- requests in subprocesses, each bounded --------------------------------------------------------


@dataclass
class Done:
    returncode: int | None  # None: still waiting when its time was up (it was killed)
    stdout: bytes
    stderr: str
    started: float
    ended: float

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Request:
    """A subprocess started now; ``finish`` waits for it at most ``timeout`` seconds, then kills it
    without waiting (a process blocked in a FUSE request that the daemon has taken cannot die
    before the daemon answers or goes)."""

    def __init__(self, processes: list[subprocess.Popen], args: list[str], data: bytes | None = None) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        processes.append(self.proc)
        if data is not None:  # at once, not at ``finish``: the request must be under way meanwhile
            assert self.proc.stdin is not None and len(data) <= 1 << 16  # fits in the pipe: never blocks
            self.proc.stdin.write(data)
            self.proc.stdin.close()
            self.proc.stdin = None  # so that communicate() does not flush it

    def finish(self, timeout: float) -> Done:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return Done(None, b"", "", self.started, time.monotonic())
        return Done(self.proc.returncode, out, err.decode(errors="replace"), self.started, time.monotonic())


def _read(processes, lun: Path, block: int) -> Request:
    return Request(processes, ["dd", f"if={lun}", "of=/dev/stdout", "iflag=direct", f"bs={BLOCK}", f"skip={block}",
                               "count=1", "status=none"])


def _write(processes, lun: Path, block: int, data: bytes) -> Request:
    return Request(processes, ["dd", f"of={lun}", "iflag=fullblock", "oflag=direct", "conv=notrunc", f"bs={BLOCK}",
                               f"seek={block}", "count=1", "status=none"], data)


def _backing(target, block: int) -> bytes:
    with open(target.backing, "rb") as f:
        f.seek(block * BLOCK)
        return f.read(BLOCK)


@dataclass
class Meanwhile:
    """I/O to the other blocks in a loop until stopped: reads checked against the backing file
    (``writes`` False), or writes, each checked in the backing file and read back through the
    mount. Every outcome is kept."""

    processes: list[subprocess.Popen]
    lun: Path
    target: TgtDaemon
    writes: bool
    done: list[tuple[int, Done, str]] = field(default_factory=list)  # (block, request, what went wrong)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        turn = 0
        while not self.stop.is_set():
            block = OTHERS[turn % len(OTHERS)]
            turn += 1
            if self.writes:
                data = os.urandom(BLOCK)
                wrote = _write(self.processes, self.lun, block, data).finish(REQUEST)
                if not wrote.ok:
                    self.done.append((block, wrote, f"write failed: {wrote.returncode} {wrote.stderr.strip()}"))
                    self.stop.wait(0.2)
                    continue
                expected, landed = data, _backing(self.target, block)
            else:
                expected, landed = _backing(self.target, block), None
            read = _read(self.processes, self.lun, block).finish(REQUEST)
            wrong = ""
            if not read.ok:
                wrong = f"read failed: {read.returncode} {read.stderr.strip()}"
            elif read.stdout != expected:
                wrong = "read other bytes than the backing file holds"
            elif landed is not None and landed != expected:
                wrong = "the write did not land in the backing file"
            self.done.append((block, read, wrong))
            self.stop.wait(0.2)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2 * REQUEST + 10)


# -- the scenario ---------------------------------------------------------------------------------


def _tail(m) -> str:
    return "\n--- iscsifs log (tail) ---\n" + m.stderr[-4000:]


def _stuck_request_fails_in_bound(target, proxy, processes, tmp_path, *, kind: str, retries: int | None = None,
                                  aborts: bool = False, resets: bool = False, digests: bool = False) -> None:
    """Swallow the answers to ``kind`` ("read" or "write") of block STUCK; the request fails with
    EIO within its bound while the other blocks keep working; then the block works again."""
    sends = (DEFAULT_RETRIES if retries is None else retries) + 1
    bound = COMMAND_TIMEOUT * sends + RECOVERY_TIMEOUT
    url = f"iscsi://{proxy.portal}/{IQN}"
    if digests:
        for key in ("HeaderDigest", "DataDigest"):
            target.tgtadm("--op", "update", "--mode", "target", "--tid", str(target.targets[IQN]), "-n", key,
                          "-v", "CRC32C")
        url += "?header_digest=crc32c&data_digest=crc32c"
    options = f"command_timeout={COMMAND_TIMEOUT},recovery_timeout={RECOVERY_TIMEOUT}"
    if retries is not None:
        options += f",retries={retries}"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before = _backing(target, STUCK)
    lost = os.urandom(BLOCK)  # what the write whose answers are swallowed tries to write
    with mounted(url, mnt, "-o", options) as m:
        try:
            _exercise(m, target, proxy, processes, kind=kind, sends=sends, bound=bound, before=before, lost=lost,
                      aborts=aborts, resets=resets)
        except BaseException:
            _release(m, processes)
            raise
    assert "Traceback" not in m.stderr, m.stderr[-4000:]


def _release(m, processes) -> None:
    """The test failed: if a request still waits on the mount, end the daemon, which ends every
    request of its FUSE connection, so that the unmount works and the failure shown is the test's."""
    deadline = time.monotonic() + 10
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    if any(p.poll() is None for p in processes) and m.proc.poll() is None:
        m.proc.kill()


def _exercise(m, target, proxy, processes, *, kind: str, sends: int, bound: float, before: bytes, lost: bytes,
              aborts: bool, resets: bool) -> None:
    lun = m.path / "1"
    block_size = int(os.getxattr(lun, "user.iscsi.block_size"))
    per_block = BLOCK // block_size
    logins = list(proxy.logins)
    matched = len(proxy.matched)
    proxy.swallow = Swallow(STUCK * per_block, per_block, reads=kind == "read", writes=kind == "write",
                            aborts=aborts, resets=resets)
    meanwhile = None
    try:
        stuck = _read(processes, lun, STUCK) if kind == "read" else _write(processes, lun, STUCK, lost)
        wait_for(lambda: len(proxy.matched) > matched or stuck.proc.poll() is not None, 20)
        # While a write waits, the kernel holds the file's inode lock: FUSE serializes O_DIRECT
        # writes to one file unless the server opens it with FOPEN_PARALLEL_DIRECT_WRITES, which
        # pyfuse3 cannot set. So other writes are tested beside a stuck read, reads beside a write.
        meanwhile = Meanwhile(processes, lun, target, writes=kind == "read")
        failed = stuck.finish(HANG)
    finally:
        if meanwhile is not None:
            meanwhile.finish()
        proxy.swallow = None
    sent = proxy.matched[matched:]
    functions = [t.function for t in proxy.task_management if t.at >= stuck.started]
    what = f"sent {len(sent)} times, task management functions sent: {functions}"
    assert failed.returncode is not None, \
        f"the {kind} of block {STUCK} whose answers never come was still waiting after {HANG} s (the bound is " \
        f"{bound} s); {what}" + _tail(m)

    # It failed, with EIO, in time.
    assert not failed.ok and "Input/output error" in failed.stderr, \
        f"the {kind} ended with {failed.returncode}: {failed.stderr!r}; {what}" + _tail(m)
    assert failed.elapsed < bound + SLACK, \
        f"EIO after {failed.elapsed:.1f} s; the bound is {bound} s (+{SLACK} s slack); {what}" + _tail(m)
    assert proxy.framing_errors == [], proxy.framing_errors
    assert proxy.swallowed > 0, "the proxy dropped no answer: the test proved nothing"

    # Meanwhile, the other blocks kept working, while the stuck request was still waiting.
    wrong = [(block, problem) for block, _, problem in meanwhile.done if problem]
    assert wrong == [], [*wrong[:5], _tail(m)]
    while_stuck = [d for _, d, _ in meanwhile.done if d.ended < failed.ended]
    assert len(while_stuck) >= 3, \
        f"only {len(while_stuck)} other requests completed while the stuck one waited " \
        f"({len(meanwhile.done)} in all)" + _tail(m)

    # The answers come through again: the same block reads and writes as before.
    if kind == "write":  # the write that failed landed whole or not at all
        assert _backing(target, STUCK) in (before, lost)
        before = _backing(target, STUCK)
    read = _read(processes, lun, STUCK).finish(REQUEST)
    assert read.ok, f"the read after the fault: {read.returncode} {read.stderr}" + _tail(m)
    assert read.stdout == before
    fresh = os.urandom(BLOCK)
    wrote = _write(processes, lun, STUCK, fresh).finish(REQUEST)
    assert wrote.ok, f"the write after the fault: {wrote.returncode} {wrote.stderr}" + _tail(m)
    assert _backing(target, STUCK) == fresh
    read = _read(processes, lun, STUCK).finish(REQUEST)
    assert read.ok and read.stdout == fresh, f"{read.returncode} {read.stderr}" + _tail(m)

    # The mount never ended.
    assert m.proc.poll() is None and is_mounted(m.path) and os.path.ismount(m.path)
    read = _read(processes, lun, OTHERS[-1]).finish(REQUEST)
    assert read.ok and read.stdout == _backing(target, OTHERS[-1])

    # How: sent at most retries + 1 times, aborted (ABORT TASK) when unanswered; the LUN reset when the
    # abort gets no answer; the session reinstated when the reset gets none either.
    assert 1 <= len(sent) <= sends, f"{what}; retries + 1 = {sends}" + _tail(m)
    assert any(t.function == ABORT_TASK and t.of_swallowed for t in proxy.task_management), \
        f"no ABORT TASK for the command; {what}" + _tail(m)
    if aborts:
        assert LOGICAL_UNIT_RESET in functions, f"the abort got no answer, yet no LOGICAL UNIT RESET; {what}" + _tail(m)
    if aborts and resets:
        sessions = {login.isid for login in logins if login.normal}
        again = [login for login in proxy.logins[len(logins):] if login.isid in sessions and login.tsih == 0]
        assert again, f"neither abort nor reset got an answer, yet no session reinstatement: logins " \
                      f"{proxy.logins}; {what}" + _tail(m)


# -- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("aborts", "resets"), [
    pytest.param(False, False, id="abort-answered"),
    pytest.param(True, False, id="abort-unanswered"),
    pytest.param(True, True, id="abort-and-reset-unanswered"),
])
def test_a_read_never_answered_fails_with_eio_within_the_bound(target, proxy, processes, tmp_path, aborts, resets):
    """The READs of one block get no answer, ever (tgt's answers to task management for them come
    through, or the ABORT TASK's answer is swallowed too, or the LOGICAL UNIT RESET's as well)."""
    _stuck_request_fails_in_bound(target, proxy, processes, tmp_path, kind="read", aborts=aborts, resets=resets)


def test_a_write_never_answered_fails_with_eio_within_the_bound(target, proxy, processes, tmp_path):
    """The WRITEs of one block get no answer; with CRC32C header and data digests (the proxy frames
    and checks them)."""
    _stuck_request_fails_in_bound(target, proxy, processes, tmp_path, kind="write", digests=True)


def test_with_retries_0_a_read_never_answered_is_sent_once(target, proxy, processes, tmp_path):
    """``-o retries=0``: sent once, EIO within command_timeout + recovery_timeout."""
    _stuck_request_fails_in_bound(target, proxy, processes, tmp_path, kind="read", retries=0)

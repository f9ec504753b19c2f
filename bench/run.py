"""iscsifs against the peer stack and the raw ceiling, side by side in one run, as ratios.

    sudo .venv/bin/python bench/run.py [--size-mib 256] [--runtime 5] [--json FILE]

One private tgtd serves one LUN backed by a file in /dev/shm. On that same LUN, in one run:
  * iscsifs: the file of a live mount, driven by fio (libaio, direct=1; and one buffered
    sequential read, as cat and cp do);
  * the peer stack: qemu-nbd (-f raw --cache=none, its iscsi:// driver) + nbdfuse, same fio jobs,
    in turn with iscsifs --pairs times (A B, then B A), so the ratio is taken pair by pair;
  * libiscsi's iscsi-perf (the raw C initiator, no file system) where it can run the job;
  * bench/nullfs.py: a pyfuse3 file system that does no I/O at all, the ceiling of any file
    system on trio + pyfuse3 on this machine (what FUSE dispatch and pyfuse3 alone cost); and
    the same with --wait, where each request waits once for another task to complete it, as any
    file system doing I/O must (the ceiling of one that waits once per request).
Then the time to mount a portal of 50 targets x 4 LUNs and `ls -lR` it; the same for 500 targets
of 1 LUN with idle_timeout, and how many sessions tgt still sees once it has passed; how long
after tgtd listens again (killed, down 30 s, restarted) a read that waited through the outage
completes; the MiB/s of writing zeros with dd, with detect_zeroes off and on, against the peer
stack; and the peak RSS of the iscsifs processes under load. iscsifs runs once per
``--workers`` value (-o workers=N), and every stack's processes are charged their CPU time per
request, so the table shows which process is the bottleneck. It also copies an image onto a LUN
and the LUN into a file as people do (dd, cp, cat), with -o cache=none and cache=writeback.
Every table is printed with the machine it was measured on
(bench/machine.py: the CPU model, the kernel and its cpuidle driver, the Python build) and the
one-wait ceiling of 4 KiB reads at QD32, the figure machines of one kind differ most in. Both
stacks run the 4 KiB jobs and the sequential read again through bench/delayproxy.c, which delays each direction by
--delay-us (250 µs: a SAN is not loopback, and pipelining only shows with a delay). Per 4 KiB
read at QD32, it counts trio task steps, task switches, loop turns and allocations of the FUSE
process (bench/steps.py, bench/malloccount.c) and the system calls of each stack's processes
(strace -c -f), and splits the FUSE process's CPU per 4 KiB read at QD32 into pyfuse3's with one
wait (bench/nullfs.py --wait), the iSCSI stack's alone (bench/stack.py) and what is left: how
the two share one trio loop. Prints Markdown tables with the ratios the performance issues ask for.

Before the first stack is measured, tgtd gets one 8 MiB READ from qemu-io (``bench.ab.warm_tgtd``:
its allocator then serves 1 MiB commands as a tgtd that has seen a larger one does) and four
times the copy size of memory is written once (``touch_memory``: a VM's first use of a page
costs more): either, left to chance, was paid by whichever stack came first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the tests' private tgtd

from bench.ab import warm_line, warm_tgtd  # noqa: E402
from bench.machine import this_machine  # noqa: E402

from support.tgt import TgtDaemon, free_port  # noqa: E402

ISCSIFS = [sys.executable, "-m", "iscsifs"]
IQN = "iqn.2026-11.bench.iscsifs:lun"


@dataclass(frozen=True)
class Job:
    name: str
    rw: str
    bs: str
    iodepth: int
    metric: str  # "bw" (MiB/s) or "iops"
    perf_args: tuple[str, ...] | None  # iscsi-perf arguments for the same job, if it has one
    vs_raw: float | None  # the targets: this many times iscsi-perf...
    vs_peer: float | None  # ...and this many times the peer stack
    direct: bool = True  # False: through the page cache, one read at a time, as cat and cp do

    @property
    def goals(self) -> str:
        return ", ".join(f">= {x:g}x {what}" for x, what in ((self.vs_raw, "raw"), (self.vs_peer, "peer")) if x)

    def needed(self, raw: float | None, peer: float | None) -> float | None:
        """The figure the goals ask for, in this job's unit."""
        wanted = [x * v for x, v in ((self.vs_raw, raw), (self.vs_peer, peer)) if x and v]
        return max(wanted) if wanted else None


JOBS = [
    Job("seq read 1M QD8", "read", "1M", 8, "bw", ("-m", "8", "-b", "2048"), 0.8, 2),
    Job("seq write 1M QD8", "write", "1M", 8, "bw", None, None, 2),
    Job("rand read 4K QD32", "randread", "4k", 32, "iops", ("-m", "32", "-b", "8", "-r"), 0.5, 2.5),
    Job("rand write 4K QD32", "randwrite", "4k", 32, "iops", None, None, 2),
    Job("rand read 4K QD1", "randread", "4k", 1, "iops", ("-m", "1", "-b", "8", "-r"), 0.7, None),
    Job("seq read 1M buffered (cat, cp)", "read", "1M", 1, "bw", None, None, None, direct=False),
]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def fio(path: Path, job: Job, runtime: float, watch: dict[str, int] | None = None) -> tuple[float, dict[str, float]]:
    """The job's figure, and the CPU time per request (µs) of each process in ``watch`` {name: pid}."""
    watch = watch or {}
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    out = subprocess.run(
        ["fio", "--name=bench", f"--filename={path}", f"--rw={job.rw}", f"--bs={job.bs}",
         f"--iodepth={job.iodepth}", f"--ioengine={'libaio' if job.direct else 'psync'}",
         f"--direct={int(job.direct)}", "--invalidate=1", "--time_based", "--ramp_time=1",
         f"--runtime={runtime}", "--output-format=json"],
        capture_output=True, check=True, timeout=runtime * 4 + 60).stdout
    result = json.loads(out)["jobs"][0]["write" if "write" in job.rw else "read"]
    # The CPU time covers the ramp too: per request over everything fio did in the job's time.
    requests = max(1.0, result["iops"] * (runtime + 1))
    cost = {name: (cpu_seconds(pid) - before[name]) / requests * 1e6 for name, pid in watch.items()}
    return (result["bw_bytes"] / (1 << 20) if job.metric == "bw" else result["iops"]), cost


def fio_jobs(results: dict[str, dict[str, float | None]], key: str, path: Path, runtime: float,
             watch: dict[str, int] | None = None, costs: dict[str, dict[str, dict[str, float]]] | None = None,
             jobs: tuple[str, ...] | None = None) -> None:
    """Every job (or those named in ``jobs``) on ``path``, into ``results[job][key]`` (and each
    watched process's CPU time per request into ``costs[job][key]``), with progress on stderr."""
    for job in JOBS:
        if jobs is not None and job.name not in jobs:
            continue
        results[job.name][key], cost = fio(path, job, runtime, watch)
        if costs is not None:
            costs[job.name][key] = cost
        spent = ", ".join(f"{name} {us:.0f} us" for name, us in cost.items())
        print(f"bench: {key:<9} {job.name}: {results[job.name][key]:.1f}  (CPU per request: {spent})", file=sys.stderr)


def iscsi_perf(url: str, job: Job, runtime: float) -> float | None:
    if job.perf_args is None or shutil.which("iscsi-perf") is None:
        return None
    proc = subprocess.Popen(["iscsi-perf", *job.perf_args, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(runtime + 1)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=30)[0].decode(errors="replace")
    found = re.findall(r"iops average (\d+) \((\d+) MB/s\)", out)
    if not found:
        return None
    iops, mbs = map(int, found[-1])
    return mbs * 1e6 / (1 << 20) if job.metric == "bw" else float(iops)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {timeout} s")
        time.sleep(0.05)


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def peak_rss_mib(*pids: int) -> float:
    """The peak RSS of these processes, added up."""
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
    return total


def build_c(name: str, work: Path, *flags: str) -> Path | None:
    """bench/NAME.c compiled into ``work`` (bench helpers in C, built with the compiler pyfuse3
    needs); None without a C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    out = work / name
    subprocess.run([cc, "-O2", "-Wall", *flags, "-o", str(out), str(REPO / "bench" / f"{name.split('.')[0]}.c")],
                   check=True, timeout=120)
    return out


@contextlib.contextmanager
def delay_proxy(binary: Path, target_port: int, delay_us: int) -> Iterator[int]:
    """bench/delayproxy.c in front of tgtd: every byte reaches the other side ``delay_us`` later,
    each direction. Yields the port to connect to."""
    port = free_port()
    proc = subprocess.Popen([str(binary), str(port), str(target_port), str(delay_us)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise SystemExit("bench: the delay proxy did not start")
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


# The jobs run again through the delay proxy: pipelining (the CmdSN window) as on a real network.
DELAY_JOBS = ("rand read 4K QD32", "rand write 4K QD32", "rand read 4K QD1", "seq read 1M QD8")
STEP_REQUESTS = 20000  # 4 KiB random reads at QD32 per count of steps, system calls and allocations


def counted_fio(path: Path) -> None:
    subprocess.run(["fio", "--name=steps", f"--filename={path}", "--rw=randread", "--bs=4k", "--iodepth=32",
                    "--ioengine=libaio", "--direct=1", f"--number_ios={STEP_REQUESTS}", "--norandommap",
                    "--output-format=json"], capture_output=True, check=True, timeout=600)


def syscalls_per_request(pids: list[int], path: Path, work: Path) -> float | None:
    """``strace -c -f`` on ``pids`` over STEP_REQUESTS 4 KiB reads at QD32: system calls per read
    (strace slows the processes; the count is what matters)."""
    if shutil.which("strace") is None:
        return None
    out = work / f"strace-{pids[0]}.txt"
    attach = [a for pid in pids for a in ("-p", str(pid))]
    strace = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), *attach], stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached to every thread
    counted_fio(path)
    strace.send_signal(signal.SIGINT)
    strace.wait(timeout=60)
    total = re.search(r"^[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?total$", out.read_text(), re.M)
    return int(total.group(1)) / STEP_REQUESTS if total else None


@contextlib.contextmanager
def peer_stack(work: Path, lun_url: str, procs: list[subprocess.Popen], mounts: list[Path],
               name: str) -> Iterator[tuple[Path, dict[str, int]]]:
    """qemu-nbd (libiscsi) on ``lun_url`` exported through nbdfuse: the file, and its two processes."""
    sock = work / f"nbd-{name}.sock"
    nbd = subprocess.Popen(["qemu-nbd", "-f", "raw", "--cache=none", "-k", str(sock), lun_url],
                           stderr=subprocess.DEVNULL)
    procs.append(nbd)
    wait_for(sock.exists, 30, "qemu-nbd's socket")
    peer = work / f"nbdfuse-{name}"
    peer.mkdir()
    nbdfuse = subprocess.Popen(["nbdfuse", str(peer), f"nbd+unix:///?socket={sock}"], stderr=subprocess.DEVNULL)
    procs.append(nbdfuse)
    mounts.append(peer)
    wait_for(lambda: is_mounted(peer), 30, "the nbdfuse mount")
    try:
        yield peer / "nbd", {"nbdfuse": nbdfuse.pid, "qemu-nbd": nbd.pid}
    finally:
        subprocess.run(["fusermount3", "-u", str(peer)], timeout=60)
        nbd.terminate()
        nbd.wait(timeout=30)


def steps_per_request(url: str, work: Path, malloccount: Path | None) -> dict[str, float | None]:
    """A mount run by bench/steps.py (a trio Instrument; every allocation counted where
    malloccount.so can be preloaded): per 4 KiB read at QD32, its trio task steps, task switches,
    loop turns, allocations, and system calls (strace -c)."""
    mnt = work / "steps"
    mnt.mkdir()
    snapshot = work / "steps.json"
    env = dict(os.environ)
    if malloccount is not None:
        env.update(LD_PRELOAD=str(malloccount), PYTHONMALLOC="malloc")
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "steps.py"), str(snapshot), "-f", url, str(mnt)],
                            env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: is_mounted(mnt), 30, "the counted iscsifs mount")

        def counts() -> dict[str, int | None]:
            snapshot.unlink(missing_ok=True)
            proc.send_signal(signal.SIGUSR2)
            wait_for(snapshot.exists, 10, "the step counts")
            time.sleep(0.1)
            return json.loads(snapshot.read_text())

        before = counts()
        counted_fio(mnt / "1")
        after = counts()
        per = {k: (after[k] - before[k]) / STEP_REQUESTS if after[k] is not None and before[k] is not None else None
               for k in before}
        per["syscalls"] = syscalls_per_request([proc.pid], mnt / "1", work)
        return per
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=60)
        proc.wait(timeout=30)


CPU_SPLIT_JOB = "rand read 4K QD32"  # the job whose FUSE process CPU per request is split into parts
SPLIT_PARTS = ("pyfuse3's dispatch with one wait (bench/nullfs.py --wait)",
               "the iSCSI stack alone, no FUSE (bench/stack.py)", "a mount's FUSE process")


def cpu_split(url: str, work: Path, opts: list[str], runtime: float, procs: list[subprocess.Popen],
              mounts: list[Path], rounds: int = 2) -> dict[str, list[float]]:
    """The FUSE process's CPU per 4 KiB random read at QD32 and its parts, measured back to back
    (``rounds`` times: the machine drifts within minutes, so parts taken apart do not add up):
    pyfuse3's dispatch with one wait, the iSCSI stack alone, a whole mount. Part -> µs per round."""
    job = next(j for j in JOBS if j.name == CPU_SPLIT_JOB)
    out: dict[str, list[float]] = {part: [] for part in SPLIT_PARTS}
    mnt, null = work / "split", work / "split-null"
    mnt.mkdir()
    null.mkdir()
    fs = subprocess.Popen([*ISCSIFS, "-f", *opts, url, str(mnt)], stderr=subprocess.DEVNULL)
    nullfs = subprocess.Popen([sys.executable, str(REPO / "bench" / "nullfs.py"), "--wait", str(null), str(256 << 20)],
                              stderr=subprocess.DEVNULL)
    procs += [fs, nullfs]
    mounts += [mnt, null]
    wait_for(lambda: is_mounted(mnt) and is_mounted(null), 30, "the iscsifs and nullfs mounts")
    for _ in range(rounds):
        out[SPLIT_PARTS[0]].append(fio(null / "null", job, runtime, {"p": nullfs.pid})[1]["p"])
        stack = stack_alone(url)
        if stack is not None:
            out[SPLIT_PARTS[1]].append(stack)
        out[SPLIT_PARTS[2]].append(fio(mnt / "1", job, runtime, {"p": fs.pid})[1]["p"])
        print("bench: CPU split: " + ", ".join(f"{v[-1]:.0f}" for v in out.values() if v) + " us", file=sys.stderr)
    for m in (mnt, null):
        subprocess.run(["fusermount3", "-u", str(m)], timeout=60)
    return out


def stack_alone(url: str) -> float | None:
    """CPU µs per 4 KiB random read at QD32 of the iSCSI stack without FUSE (bench/stack.py's
    measurement, in a process of its own) on ``url``'s target; None if it failed (said on stderr)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "stack.py"), "--qd", "32", "--requests",
                          str(STEP_REQUESTS), "--child", str(REPO), url], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        last = out.stderr.strip().splitlines()[-1:] or ["no output"]
        print(f"bench: the stack alone failed: {last[0]}", file=sys.stderr)
        return None
    return float(json.loads(out.stdout.splitlines()[-1])["cpu_us"])


@contextlib.contextmanager
def portal(work: Path, name: str, targets: int, luns: int) -> Iterator[tuple[TgtDaemon, Path]]:
    """A private tgtd with ``targets`` targets of ``luns`` 1 MiB LUNs each (in /dev/shm), and an
    empty mount point; whatever is mounted there is unmounted afterwards."""
    shm = Path(tempfile.mkdtemp(prefix=f"iscsifs-bench-{name}-", dir="/dev/shm"))
    mnt = work / name
    mnt.mkdir()
    try:
        with TgtDaemon(work / f"tgt-{name}") as tgt:
            for t in range(targets):
                iqn = f"iqn.2026-11.bench.iscsifs:{name}{t:03d}"
                tgt.add_target(iqn)
                for lun in range(1, luns + 1):
                    backing = shm / f"t{t}-{lun}.img"
                    with open(backing, "wb") as f:
                        f.truncate(1 << 20)
                    tgt.add_lun(iqn, lun, backing)
            yield tgt, mnt
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], timeout=60)
        shutil.rmtree(shm, ignore_errors=True)


def mount_and_list(url: str, mnt: Path, files: int, *options: str) -> tuple[float, float]:
    """Seconds to mount (the command returns when live) and to ``ls -lR``, which must see ``files``."""
    started = time.monotonic()
    subprocess.run([*ISCSIFS, *options, url, str(mnt)], check=True, timeout=600)
    mounted = time.monotonic() - started
    started = time.monotonic()
    listing = subprocess.run(["ls", "-lR", str(mnt)], check=True, capture_output=True, timeout=300).stdout
    listed = time.monotonic() - started
    seen = sum(1 for line in listing.decode().splitlines() if line.startswith("-"))
    assert seen == files, f"ls -lR saw {seen} files, not {files}"
    return mounted, listed


def portal_mount_time(work: Path, targets: int = 50, luns: int = 4) -> tuple[float, float]:
    """Seconds to mount a portal of targets x luns, and to ls -lR it."""
    with portal(work, "portal", targets, luns) as (tgt, mnt):
        times = mount_and_list(tgt.url, mnt, targets * luns)
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=60)
        return times


def dd_zeros(path: Path, mib: int) -> float:
    """MiB/s of writing ``mib`` MiB of zeros with dd (1 MiB blocks, O_DIRECT), as a wipe or the zero
    areas of a restore do."""
    started = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "oflag=direct", "conv=notrunc"],
                   check=True, capture_output=True, timeout=600)
    return mib / (time.monotonic() - started)


COPY_ROWS = ("dd bs=1M oflag=direct", "cp, then sync", "cat to a file")


def copies(path: Path, image: Path, out: Path) -> dict[str, float]:
    """MiB/s of the ways people copy an image onto a LUN and a LUN into a file: dd with 1 MiB
    direct writes (the rate of large writes), cp and then sync (buffered writes of what cp
    chooses from st_blksize, one at a time), and cat of the LUN into a file in /dev/shm (caches
    dropped first: the reads go to the target)."""
    mib = image.stat().st_size >> 20
    rates: dict[str, float] = {}

    def timed(name: str, command: str) -> None:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3")
        started = time.monotonic()
        subprocess.run(["sh", "-c", command], check=True, capture_output=True, timeout=900)
        rates[name] = mib / (time.monotonic() - started)
        print(f"bench: {path}: {name}: {rates[name]:.0f} MiB/s", file=sys.stderr)

    timed(COPY_ROWS[0], f"dd if={image} of={path} bs=1M oflag=direct conv=notrunc status=none")
    timed(COPY_ROWS[1], f"cp {image} {path} && sync")
    timed(COPY_ROWS[2], f"cat {path} > {out}")
    out.unlink()
    return rates


def touch_memory(shm: Path, mib: int) -> float | None:
    """Write ``mib`` MiB into a file in /dev/shm and delete it; returns the MiB/s. On a VM whose
    memory the host backs only once the guest first uses it (this project's VMs), a page the
    guest touches for the first time since boot costs a fault in the host as well: 6 GiB into
    /dev/shm went at 654 MiB/s the first time and 1,760-1,795 after. The copies use about 2 GiB
    of page cache and /dev/shm; left to chance, the first stack measured paid for it (bench/README.md,
    "A target's allocator, and a VM's first touch")."""
    path = shm / "touch.tmp"
    started = time.monotonic()
    try:
        with open(path, "wb") as f:
            block = bytes(1 << 20)
            for _ in range(mib):
                f.write(block)
    except OSError as exc:  # /dev/shm too small, say: measured without it, and said so
        print(f"bench: memory not touched first: {exc}", file=sys.stderr)
        return None
    finally:
        path.unlink(missing_ok=True)
    return mib / (time.monotonic() - started)


def copy_section(work: Path, shm: Path, tgt: TgtDaemon, opts: list[str], have_peer: bool, procs: list[subprocess.Popen],
                 mounts: list[Path], mib: int, passes: int) -> dict[str, dict[str, list[float]]]:
    """``copies`` on a LUN (2) of exactly ``mib`` MiB: iscsifs with -o cache=none and
    cache=writeback, and the peer stack, ``passes`` times, the order reversed every other pass
    (none, writeback, peer; then peer, writeback, none). Stack -> row -> MiB/s, one per pass."""
    image = shm / "image.img"
    with open(image, "wb") as f:
        f.write(os.urandom(1 << 20) * mib)
    lun = shm / "copy.img"
    with open(lun, "wb") as f:
        f.write(os.urandom(1 << 20) * mib)
    tgt.add_lun(IQN, 2, lun)
    stacks = [f"iscsifs cache={cache}" for cache in ("none", "writeback")] + (["peer"] if have_peer else [])
    out: dict[str, dict[str, list[float]]] = {stack: {row: [] for row in COPY_ROWS} for stack in stacks}

    def one(stack: str, n: int) -> dict[str, float]:
        if stack == "peer":
            with peer_stack(work, f"{tgt.url}/{IQN}/2", procs, mounts, f"copy{n}") as (path, _watch):
                return copies(path, image, shm / "out.img")
        mnt = work / f"copy-{stack.rpartition('=')[2]}-{n}"
        mnt.mkdir()
        fs = subprocess.Popen([*ISCSIFS, "-f", "-o", stack.replace("iscsifs ", ""), *opts, f"{tgt.url}/{IQN}",
                               str(mnt)], stderr=subprocess.DEVNULL)
        procs.append(fs)
        mounts.append(mnt)
        wait_for(lambda: is_mounted(mnt), 30, "the iscsifs mount")
        try:
            return copies(mnt / "2", image, shm / "out.img")
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], timeout=60)

    # The order alternates: on VM 3, `cat` on cache=none did 285 MiB/s measured first and 480
    # measured last in the same run (bench/README.md, "Copies in alternated order").
    for n in range(passes):
        for stack in (stacks if n % 2 == 0 else stacks[::-1]):
            for row, rate in one(stack, n).items():
                out[stack][row].append(rate)
    image.unlink()
    return out


def print_copies(copied: dict[str, dict[str, list[float]]], mib: int) -> None:
    """The copy rows (the median of the passes), with each iscsifs mode against its own dd and
    against the peer's same row, pass by pass in brackets."""
    def rate(stack: str, row: str) -> str:
        v = copied.get(stack, {}).get(row)
        return f"{statistics.median(v):.0f}" if v else "-"

    def of(a: list[float] | None, b: list[float] | None) -> str:
        if not a or not b:
            return "-"
        pairs = [x / y for x, y in zip(a, b, strict=True)]
        return f"{statistics.median(pairs):.2f}x ({', '.join(f'{p:.2f}' for p in pairs)})"

    peer = copied.get("peer", {})
    passes = max((len(v) for rows in copied.values() for v in rows.values()), default=0)
    print(f"Each row is the median of {passes} passes, the order reversed every other pass; ratios are "
          "the median of the passes' ratios, each pass's in brackets.\n")
    print(f"| job ({mib} MiB) | unit | " + " | ".join(copied) + " | " +
          " | ".join(f"{k} vs peer" for k in copied if k != "peer") + " | cp vs own dd |")
    print("| --- | --- | " + " | ".join("---:" for _ in copied) + " | " +
          " | ".join("---:" for k in copied if k != "peer") + " | --- |")
    for row in COPY_ROWS:
        own = ", ".join(f"{k}: {of(v.get(row), v.get(COPY_ROWS[0]))}" for k, v in copied.items()) \
            if row == COPY_ROWS[1] else ""
        print(f"| {row} | MiB/s | " + " | ".join(rate(k, row) for k in copied) + " | " +
              " | ".join(of(v.get(row), peer.get(row)) for k, v in copied.items() if k != "peer") + f" | {own} |")


def tgt_sessions(tgt: TgtDaemon) -> int:
    """The I_T nexuses (sessions) tgt has, over all its targets."""
    return tgt.tgtadm("--op", "show", "--mode", "target").count("I_T nexus: ")


def portal_500(work: Path, targets: int = 500, idle_timeout: float = 5.0) -> tuple[float, float, int, int]:
    """A 500-target portal (1 LUN each) mounted with idle_timeout: seconds to mount and to ls -lR,
    the sessions tgt sees right after, and once idle_timeout has passed."""
    with portal(work, "p500-", targets, 1) as (tgt, mnt):
        mounted, listed = mount_and_list(tgt.url, mnt, targets, "-o", f"idle_timeout={idle_timeout:g}")
        after_ls = tgt_sessions(tgt)
        time.sleep(idle_timeout * 1.5 + 1)
        idle = tgt_sessions(tgt)
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=60)
        return mounted, listed, after_ls, idle


def recovery_time(work: Path, outage: float = 30.0) -> float:
    """tgtd killed (kill -9) under a mount, down ``outage`` seconds, then restarted: seconds from
    the moment it listens again (configured, as an admin's restart would be) to the completion of
    a read that was issued during the outage."""
    mnt = work / "recovery"
    mnt.mkdir()
    backing = work / "recovery.img"
    with open(backing, "wb") as f:
        f.truncate(8 << 20)
    iqn = "iqn.2026-11.bench.iscsifs:recovery"

    def configure(tgt: TgtDaemon) -> None:
        tgt.targets.clear()
        tgt.next_tid = 1  # the same tid: tgt derives the LUN's serial and WWN from it
        tgt.add_target(iqn)
        tgt.add_lun(iqn, 1, backing)

    tgt = TgtDaemon(work / "tgt-recovery").start()
    try:
        configure(tgt)
        subprocess.run([*ISCSIFS, "-o", "recovery_timeout=300", f"{tgt.url}/{iqn}", str(mnt)], check=True,
                       timeout=60)
        tgt.stop()
        reader = subprocess.Popen(["dd", f"if={mnt / '1'}", "of=/dev/null", "bs=4k", "count=1", "iflag=direct"],
                                  stderr=subprocess.DEVNULL)
        time.sleep(outage)
        tgt.start()
        configure(tgt)
        listening = time.monotonic()
        assert reader.wait(timeout=120) == 0, "the read that waited through the outage failed"
        return time.monotonic() - listening
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], timeout=60)
        tgt.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256, help="LUN size (a file in /dev/shm)")
    ap.add_argument("--outage", type=float, default=30.0, help="seconds tgtd stays down in the recovery row")
    ap.add_argument("--runtime", type=float, default=5, help="seconds per fio job")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--iscsifs-options", default="", help="extra -o options for the iscsifs mount")
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1],
                    help="the -o workers=N values to measure, comma-separated (default 0,1; 0 is the main column)")
    ap.add_argument("--delay-us", type=int, default=250,
                    help="the delay each way of the proxied rows, both stacks (default 250 µs; 0 skips them)")
    ap.add_argument("--pairs", type=int, default=2,
                    help="iscsifs and the peer stack in turn, this many times each (default 2: A B, then B A); "
                         "each column is the median of its runs, and the ratio is given pair by pair; the copies "
                         "run this many passes, the order reversed every other one")
    ap.add_argument("--copy-mib", type=int, default=512, help="the image dd, cp and cat copy (default 512 MiB)")
    ap.add_argument("--copies-only", action="store_true", help="only the dd, cp and cat rows (a minute)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (tgtd, FUSE mounts)")
    for tool in ("tgtd", "fio", "fusermount3"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is missing (bash .ci/setup --test installs what the bench needs)")
    have_peer = shutil.which("qemu-nbd") is not None and shutil.which("nbdfuse") is not None

    work = Path(tempfile.mkdtemp(prefix="iscsifs-bench-"))
    shm = Path(tempfile.mkdtemp(prefix="iscsifs-bench-", dir="/dev/shm"))
    backing = shm / "lun.img"
    with open(backing, "wb") as f:
        f.write(os.urandom(1 << 20) * args.size_mib)  # real data: a sparse file would flatter reads
    results: dict[str, dict[str, float | None]] = {job.name: {} for job in JOBS}
    procs: list[subprocess.Popen] = []
    mounts: list[Path] = []
    rss: dict[str, float] = {}
    costs: dict[str, dict[str, dict[str, float]]] = {job.name: {} for job in JOBS}
    zeros: dict[str, float] = {}
    delayed: dict[str, dict[str, float | None]] = {job.name: {} for job in JOBS}
    steps: dict[str, dict[str, float | None]] = {}
    split: dict[str, list[float]] = {}  # the FUSE process's CPU per 4 KiB read, by part (cpu_split)
    zero_mib = min(256, args.size_mib)
    rounds: dict[str, list[dict[str, float | None]]] = {}
    machine = this_machine()
    copied: dict[str, dict[str, list[float]]] = {}
    warmed = False
    touched: float | None = None
    try:
        with TgtDaemon(work / "tgt") as tgt:
            tgt.add_target(IQN)
            tgt.add_lun(IQN, 1, backing)
            lun_url = f"{tgt.url}/{IQN}/1"
            # Before any stack is measured: tgtd's allocator in its lasting state for both, and
            # the memory the copies use touched once, so neither is charged for it.
            warmed = warm_tgtd(lun_url)
            touched = touch_memory(shm, 4 * args.copy_mib)
            if touched is not None:
                print(f"bench: {4 * args.copy_mib} MiB of memory touched first, at {touched:.0f} MiB/s",
                      file=sys.stderr)

            opts = ["-o", args.iscsifs_options] if args.iscsifs_options else []
            copied = copy_section(work, shm, tgt, opts, have_peer, procs, mounts, args.copy_mib, args.pairs)
            if args.copies_only:
                print(f"\nCopies, {os.uname().nodename}, tgtd LUN in /dev/shm, {warm_line(warmed)}:\n")
                print(f"Machine: {machine.line()}\n")
                print_copies(copied, args.copy_mib)
                if args.json:  # the same keys as a whole run's, for the rows it measured
                    args.json.write_text(json.dumps({"machine": machine.to_json(), "copies_mib_s": copied,
                                                     "tgtd_warmed": warmed, "memory_touched_mib_s": touched},
                                                    indent=2))
                return 0
            assert tgt.proc is not None
            # The main column (workers=0) and the peer stack in turn, --pairs times (A B B A: on a
            # shared VM the machine's speed drifts by a fifth within minutes, so only ratios taken
            # side by side hold), then the other workers= values. Each run's figures go to
            # rounds[key], one dict per run.
            runs: list[tuple[str, int, dict[str, str]]] = [("iscsifs", 0, {})] * args.pairs
            runs += [(f"workers={w}", w, {}) for w in args.workers if w]

            def peer_run(n: int) -> None:
                assert tgt.proc is not None
                with peer_stack(work, lun_url, procs, mounts, f"pair{n}") as (path, peer_watch):
                    one = {job.name: {} for job in JOBS}
                    fio_jobs(one, "peer", path, args.runtime, {**peer_watch, "tgtd": tgt.proc.pid}, costs)
                    rounds.setdefault("peer", []).append({name: r["peer"] for name, r in one.items()})

            for n, (key, workers, env) in enumerate(runs):
                # Which stack goes first alternates (A B, B A): on VM 2 the side measured second
                # read 0.89x the first at 4 KiB QD32, whichever it was (bench/README.md).
                peer_first = key == "iscsifs" and have_peer and n % 2 == 1
                if peer_first:
                    peer_run(n)
                mnt = work / f"{key.replace(' ', '-')}-{n}"
                mnt.mkdir()
                fs = subprocess.Popen([*ISCSIFS, "-f", "-o", f"workers={workers}", *opts, f"{tgt.url}/{IQN}", str(mnt)],
                                      stderr=subprocess.DEVNULL, env=dict(os.environ, **env))
                procs.append(fs)
                mounts.append(mnt)
                wait_for(lambda mnt=mnt: is_mounted(mnt), 30, "the iscsifs mount")
                worker_pids = children(fs.pid)
                watch = {"FUSE process": fs.pid, **{f"worker {i + 1}": p for i, p in enumerate(worker_pids)},
                         "tgtd": tgt.proc.pid}
                one: dict[str, dict[str, float | None]] = {job.name: {} for job in JOBS}
                fio_jobs(one, key, mnt / "1", args.runtime, watch, costs)  # costs: the last run's
                rounds.setdefault(key, []).append({name: r[key] for name, r in one.items()})
                rss[key] = max(rss.get(key, 0.0), peak_rss_mib(fs.pid, *worker_pids))
                subprocess.run(["fusermount3", "-u", str(mnt)], timeout=60)
                if key == "iscsifs" and have_peer and not peer_first:
                    peer_run(n)
            for key, runs_of_key in rounds.items():
                for job in JOBS:
                    values = [r[job.name] for r in runs_of_key if r[job.name] is not None]
                    results[job.name][key] = statistics.median(values) if values else None  # type: ignore[type-var]

            steps["iscsifs"] = steps_per_request(f"{tgt.url}/{IQN}", work, build_c("malloccount.so", work, "-shared",
                                                                                  "-fPIC"))
            print(f"bench: steps per 4 KiB read: {steps['iscsifs']}", file=sys.stderr)

            proxy = build_c("delayproxy", work, "-pthread") if args.delay_us else None
            tgt_port = int(tgt.url.rsplit(":", 1)[1])
            if proxy is not None:
                with delay_proxy(proxy, tgt_port, args.delay_us) as port:
                    mnt = work / "delayed"
                    mnt.mkdir()
                    fs = subprocess.Popen([*ISCSIFS, "-f", *opts, f"iscsi://127.0.0.1:{port}/{IQN}", str(mnt)],
                                          stderr=subprocess.DEVNULL)
                    procs.append(fs)
                    mounts.append(mnt)
                    wait_for(lambda: is_mounted(mnt), 30, "the iscsifs mount through the delay proxy")
                    fio_jobs(delayed, "iscsifs", mnt / "1", args.runtime, {"FUSE process": fs.pid}, jobs=DELAY_JOBS)
                    subprocess.run(["fusermount3", "-u", str(mnt)], timeout=60)
                    if have_peer:
                        with peer_stack(work, f"iscsi://127.0.0.1:{port}/{IQN}/1", procs, mounts, "delayed") as (
                                path, watch):
                            fio_jobs(delayed, "peer", path, args.runtime, watch, jobs=DELAY_JOBS)

            split = cpu_split(f"{tgt.url}/{IQN}", work, opts, args.runtime, procs, mounts)

            for key, extra in (("ceiling", []), ("ceiling1w", ["--wait"])):
                null = work / key
                null.mkdir()
                nullfs = subprocess.Popen([sys.executable, str(REPO / "bench" / "nullfs.py"), *extra, str(null),
                                           str(args.size_mib << 20)], stderr=subprocess.DEVNULL)
                procs.append(nullfs)
                mounts.append(null)
                wait_for(lambda null=null: is_mounted(null), 30, "the nullfs mount")
                fio_jobs(results, key, null / "null", args.runtime, {"FUSE process": nullfs.pid}, costs)
                nullfs.terminate()
                nullfs.wait(timeout=30)

            if have_peer:
                with peer_stack(work, lun_url, procs, mounts, "direct") as (path, watch):
                    zeros["peer"] = dd_zeros(path, zero_mib)
                    steps["peer"] = {"syscalls": syscalls_per_request(list(watch.values()), path, work)}

            for mode in ("off", "on"):  # after every fio job: this overwrites the LUN's data with zeros
                zmnt = work / f"zeros-{mode}"
                zmnt.mkdir()
                z = subprocess.Popen([*ISCSIFS, "-f", "-o", f"detect_zeroes={mode}", *opts, f"{tgt.url}/{IQN}",
                                      str(zmnt)], stderr=subprocess.DEVNULL)
                procs.append(z)
                mounts.append(zmnt)
                wait_for(lambda zmnt=zmnt: is_mounted(zmnt), 30, "the iscsifs mount")
                zeros[mode] = dd_zeros(zmnt / "1", zero_mib)
                print(f"bench: zeros detect_zeroes={mode}: {zeros[mode]:.0f} MiB/s", file=sys.stderr)
                subprocess.run(["fusermount3", "-u", str(zmnt)], timeout=60)

            for job in JOBS:
                results[job.name]["raw"] = iscsi_perf(lun_url, job, args.runtime)
                if results[job.name]["raw"] is not None:
                    print(f"bench: raw       {job.name}: {results[job.name]['raw']:.1f}", file=sys.stderr)
        mounted, listed = portal_mount_time(work)
        p500 = portal_500(work)
        print(f"bench: 500 targets: mount {p500[0]:.2f} s, ls -lR {p500[1]:.2f} s, sessions {p500[2]} -> {p500[3]}",
              file=sys.stderr)
        recovered = recovery_time(work, args.outage)
        print(f"bench: recovery after a {args.outage:g} s outage: {recovered:.2f} s", file=sys.stderr)
    finally:
        for m in mounts:
            if is_mounted(m):
                subprocess.run(["fusermount3", "-uz", str(m)], timeout=60)
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    def num(v: float | None) -> str:
        return f"{v:.0f}" if v is not None else "-"

    ceiling = results["rand read 4K QD32"].get("ceiling1w")

    def on_this_machine() -> None:
        """The line every table is printed under: a figure without its machine says nothing."""
        print(f"Machine: {machine.line()}; one-wait ceiling, 4K randread QD32: "
              f"{num(ceiling)} IOPS\n")

    print(f"\n{os.uname().nodename}, LUN of {args.size_mib} MiB in /dev/shm, {warm_line(warmed)}, "
          f"fio libaio direct=1 (buffered: psync), {args.runtime:g} s per job\n")
    on_this_machine()

    def above(needed: float | None, r: dict[str, float | None]) -> str:
        for key, what in (("ceiling", "above both ceilings"), ("ceiling1w", "above the one-wait ceiling")):
            if needed and r.get(key) and needed > r[key]:  # type: ignore[operator]
                return f" ({what})"
        return ""

    print("| job | unit | iscsifs | qemu-nbd+nbdfuse | iscsi-perf (raw) | pyfuse3 ceiling | ceiling, one wait "
          "| vs peer | vs raw | vs one-wait ceiling | goal | goal needs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for job in JOBS:
        r = results[job.name]
        unit = "MiB/s" if job.metric == "bw" else "IOPS"
        needed = job.needed(r.get("raw"), r.get("peer"))
        print(f"| {job.name} | {unit} | {num(r.get('iscsifs'))} | {num(r.get('peer'))} | {num(r.get('raw'))} | "
              f"{num(r.get('ceiling'))} | {num(r.get('ceiling1w'))} | {ratio(r.get('iscsifs'), r.get('peer'))} | "
              f"{ratio(r.get('iscsifs'), r.get('raw'))} | {ratio(r.get('iscsifs'), r.get('ceiling1w'))} | "
              f"{job.goals} | {num(needed)}{above(needed, r)} |")
    for mode in ("off", "on"):
        print(f"| write {zero_mib} MiB of zeros (dd 1M direct), detect_zeroes={mode} | MiB/s | "
              f"{num(zeros.get(mode))} | "
              f"{num(zeros.get('peer'))} | | | | {ratio(zeros.get(mode), zeros.get('peer'))} | | | | |")
    for key, mib in rss.items():
        print(f"| {key} peak RSS under load, all its processes | MiB | {mib:.0f} | | | | | | | | < 200 | |")
    print(f"| portal 50 targets x 4 LUNs: mount | s | {mounted:.2f} | | | | | | | | | |")
    print(f"| portal 50 targets x 4 LUNs: ls -lR | s | {listed:.2f} | | | | | | | | mount + ls < 3 | |")
    print(f"| portal 500 targets, idle_timeout=5: mount | s | {p500[0]:.2f} | | | | | | | | | |")
    print(f"| portal 500 targets, idle_timeout=5: ls -lR | s | {p500[1]:.2f} | | | | | | | | | |")
    print(f"| portal 500 targets: sessions after ls -lR, after idle_timeout | sessions | {p500[2]} -> {p500[3]} "
          f"| | | | | | | | 0 once idle | |")
    print(f"| read resumed after tgtd listens again ({args.outage:g} s outage) | s | {recovered:.2f} "
          f"| | | | | | | | < 3 | |")
    if "peer" in rounds:
        print("\niscsifs (A) and the peer stack (B) in turn, A B then B A, same run:\n")
        on_this_machine()
        print("| job | iscsifs, median | peer, median | iscsifs / peer, median of pairs | pairs |")
        print("| --- | ---: | ---: | ---: | --- |")
        for job in JOBS:
            pairs = [a[job.name] / b[job.name] for a, b in zip(rounds["iscsifs"], rounds["peer"], strict=True)
                     if a[job.name] and b[job.name]]  # type: ignore[operator]
            r = results[job.name]
            print(f"| {job.name} | {num(r.get('iscsifs'))} | {num(r.get('peer'))} | "
                  f"{f'{statistics.median(pairs):.2f}x' if pairs else '-'} | {', '.join(f'{p:.2f}' for p in pairs)} |")
    print("\nCopying an image onto a LUN and a LUN into a file, as people do (same run):\n")
    on_this_machine()
    print_copies(copied, args.copy_mib)
    others = [f"workers={w}" for w in args.workers if w]
    if others:
        print("\nWith the sessions in worker processes (-o workers=N), same run:\n")
        on_this_machine()
        print("| job | iscsifs (workers=0) | " + " | ".join(others) + " | qemu-nbd+nbdfuse | "
              + " | ".join(f"{k} vs peer" for k in others) + " |")
        columns = " | ".join("---:" for _ in others)
        print(f"| --- | ---: | {columns} | ---: | {columns} |")
        for job in JOBS:
            r = results[job.name]
            print(f"| {job.name} | {num(r.get('iscsifs'))} | " + " | ".join(num(r.get(k)) for k in others)
                  + f" | {num(r.get('peer'))} | " + " | ".join(ratio(r.get(k), r.get("peer")) for k in others) + " |")
    if any(delayed[name] for name in DELAY_JOBS):
        print(f"\nThrough a proxy that delays each direction by {args.delay_us} µs (bench/delayproxy.c), same run:\n")
        on_this_machine()
        print("| job | iscsifs | qemu-nbd+nbdfuse | vs peer | goal |")
        print("| --- | ---: | ---: | ---: | --- |")
        for name in DELAY_JOBS:
            r = delayed[name]
            print(f"| {name} | {num(r.get('iscsifs'))} | {num(r.get('peer'))} | "
                  f"{ratio(r.get('iscsifs'), r.get('peer'))} | >= 1x peer |")
    if steps:
        print(f"\nPer 4 KiB random read at QD32 ({STEP_REQUESTS} reads; bench/steps.py, strace -c -f):\n")
        on_this_machine()
        print("| stack | trio task steps | task switches | loop turns | allocations | system calls |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")

        def one(v: float | None) -> str:
            return f"{v:.2f}" if v is not None else "-"

        for key, per in steps.items():
            print(f"| {key} | {one(per.get('steps'))} | {one(per.get('switches'))} | {one(per.get('turns'))} | "
                  f"{one(per.get('allocations'))} | {one(per.get('syscalls'))} |")
    if split and all(split.values()):
        print(f"\nThe FUSE process's CPU per {CPU_SPLIT_JOB} request, split: its parts measured back to back, "
              f"{len(split[SPLIT_PARTS[2]])} times (bench/stack.py):\n")
        on_this_machine()
        print("| part | µs, median | runs |")
        print("| --- | ---: | --- |")
        med = {part: statistics.median(v) for part, v in split.items()}
        for part, v in split.items():
            print(f"| {part} | {med[part]:.0f} | {', '.join(f'{x:.0f}' for x in v)} |")
        left = med[SPLIT_PARTS[2]] - med[SPLIT_PARTS[0]] - med[SPLIT_PARTS[1]]
        print(f"| left: how the two share one trio loop | {left:.0f} | |")
    print("\nCPU time per request, µs, of each process (over the job, ramp included; of the last run of each):\n")
    on_this_machine()
    print("| job | stack | by process |")
    print("| --- | --- | --- |")
    for job in JOBS:
        for key, cost in costs[job.name].items():
            spent = ", ".join(f"{name} {us:.0f}" for name, us in cost.items())
            print(f"| {job.name} | {key} | {spent}, total {sum(cost.values()):.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine.to_json(), "rounds": rounds,
                                         "jobs": results, "cpu_us_per_request": costs, "rss_mib": rss,
                                         "portal_mount_s": mounted,
                                         "portal_ls_s": listed, "portal500": p500, "recovery_s": recovered,
                                         "zeros_mib_s": zeros, "delayed": delayed, "steps": steps,
                                         "cpu_split_us": split,
                                         "copies_mib_s": copied, "tgtd_warmed": warmed,
                                         "memory_touched_mib_s": touched},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the FUSE process's time goes on this machine: one tgtd LUN, a mount (and one per
``--compare`` set of mount options, in turn: A B A B), fio 4 KiB random reads at QD32 and QD1 on
each, and during each job ``perf stat`` of the FUSE process (hardware counters where the machine
has them; a VM may offer software events only) with its CPU time, then ``py-spy record --native``
of it (every native frame: the interpreter, pyfuse3's Cython, libc).

    sudo .venv/bin/python bench/profile.py [--py-spy PATH] [--runtime 8] [--rounds 2] [--compare OPTS]

It prints, per mount and job: IOPS, the FUSE process's CPU per request, perf's counts per
request, and the share of py-spy's samples by where the innermost frame is (the interpreter,
iscsifs, trio, pyfuse3, system calls, other), then the top frames.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' private tgtd and mount helpers
sys.path.insert(0, str(REPO))

from bench.ab import mount, random_lun  # noqa: E402
from bench.machine import this_machine  # noqa: E402

IQN = "iqn.2026-11.bench.iscsifs:profile"
JOBS = (("randread", 32), ("randread", 1))
# Where a sample's innermost frame is, by the first pattern its text matches.
PLACES = (
    ("system call", re.compile(r"^(__)?(epoll_wait|epoll_ctl|writev|readv|read|write|recv\w*|send\w*|"
                               r"syscall|__GI___\w+|do_syscall\w*|__libc_\w+|futex\w*)\b")),
    ("pyfuse3", re.compile(r"pyfuse3|_pyfuse3|__pyx_")),
    ("trio", re.compile(r"[/(]trio/")),
    ("iscsifs", re.compile(r"[/(]iscsifs/")),
    ("interpreter", re.compile(r"_?Py\w+|libpython|ceval|\(python3")),
)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """The process's user and system CPU time so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def place(frame: str) -> str:
    for name, pattern in PLACES:
        if pattern.search(frame):
            return name
    return "other"


def innermost_frames(raw: str) -> collections.Counter[str]:
    """py-spy's raw (collapsed) output: ``frame;frame;...;frame COUNT`` per line, outermost first."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[stack.rsplit(";", 1)[-1].strip()] += int(count)
    return counts


def perf_stat(pid: int, seconds: float) -> subprocess.Popen[str] | None:
    """perf stat of ``pid`` for ``seconds``, started: every event the machine counts (a VM may
    count software events only)."""
    if shutil.which("perf") is None:
        return None
    events = "task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions,cache-misses"
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "--", "sleep", str(seconds)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def perf_counts(out: str) -> dict[str, float]:
    counts = {}
    for line in out.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "", 1).isdigit():
            counts[fields[2]] = float(fields[0])
    return counts


def profile_job(mnt: Path, pid: int, rw: str, qd: int, runtime: float, py_spy: str | None,
                out: Path) -> dict[str, object]:
    fio = subprocess.Popen(["fio", "--name=profile", f"--filename={mnt / '1'}", f"--rw={rw}", "--bs=4k",
                            f"--iodepth={qd}", "--ioengine=libaio", "--direct=1", f"--runtime={runtime}",
                            "--time_based", "--output-format=json"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # past fio's start
    # First half: the CPU per request and perf's counts, undisturbed; second half: py-spy, which
    # stops the process at each sample to read its native stack.
    half = (runtime - 2) / 2
    started, cpu0 = time.monotonic(), cpu_seconds(pid)
    perf = perf_stat(pid, half)
    time.sleep(half)
    (user1, system1), elapsed = cpu_seconds(pid), time.monotonic() - started
    user, system = user1 - cpu0[0], system1 - cpu0[1]
    counters = perf_counts(perf.communicate(timeout=60)[1]) if perf is not None else {}
    if py_spy:
        subprocess.run([py_spy, "record", "--native", "--rate", "100", "--format", "raw", "-d", str(int(half)),
                        "-p", str(pid), "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=half + 60)
    result = json.loads(fio.communicate(timeout=runtime + 60)[0])["jobs"][0]["read"]
    iops = float(result["iops"])
    frames = innermost_frames(out.read_text()) if py_spy and out.exists() else collections.Counter()
    requests = max(1.0, iops * elapsed)
    return {"iops": iops, "cpu_us": (user + system) / requests * 1e6, "user_us": user / requests * 1e6,
            "system_us": system / requests * 1e6, "frames": frames, "counters": counters, "window": elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy's path (pip install py-spy)")
    ap.add_argument("--runtime", type=float, default=8, help="seconds per fio job")
    ap.add_argument("--rounds", type=int, default=2, help="A B rounds")
    ap.add_argument("--compare", action="append", default=[], metavar="OPTS",
                    help="also a mount with these -o options, in turn with the default one (repeatable)")
    ap.add_argument("--top", type=int, default=12, help="innermost frames listed per mount and job")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("profile: run as root (tgtd, FUSE mounts)")
    work = Path(tempfile.mkdtemp(prefix="iscsifs-profile-"))
    runs: dict[tuple[str, str, int], list[dict[str, object]]] = collections.defaultdict(list)
    try:
        with random_lun(work, IQN) as url:
            for n in range(args.rounds):
                for n_mount, options in enumerate(["", *args.compare]):
                    build = f"-o {options}" if options else "default"
                    mnt = work / f"mnt-{n_mount}"
                    mnt.mkdir(exist_ok=True)
                    with mount(url, mnt, {}, options=options) as proc:
                        for rw, qd in JOBS:
                            r = profile_job(mnt, proc.pid, rw, qd, args.runtime, args.py_spy,
                                            work / f"{n_mount}-{rw}-{qd}-{n}.txt")
                            runs[(build, rw, qd)].append(r)
                            print(f"profile: round {n + 1} {build} {rw} QD{qd}: {r['iops']:.0f} IOPS, "
                                  f"{r['cpu_us']:.0f} us CPU per request", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"Machine: {this_machine().line()}\n")
    print("| mount | job | IOPS, median | FUSE process CPU per request, µs | of which user, system | "
          + " | ".join(name for name, _ in PLACES) + " | other |")
    print("| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in PLACES) + " | ---: |")
    for (build, rw, qd), rs in runs.items():
        frames: collections.Counter[str] = sum((r["frames"] for r in rs), collections.Counter())  # type: ignore[misc]
        by_place: collections.Counter[str] = collections.Counter()
        for frame, count in frames.items():
            by_place[place(frame)] += count
        total = sum(by_place.values()) or 1
        shares = " | ".join(f"{100 * by_place[name] / total:.0f} %" for name, _ in PLACES)
        print(f"| {build} | {rw} QD{qd} | {statistics.median(float(r['iops']) for r in rs):.0f} | "  # type: ignore[arg-type]
              f"{statistics.median(float(r['cpu_us']) for r in rs):.0f} | "  # type: ignore[arg-type]
              f"{statistics.median(float(r['user_us']) for r in rs):.0f}, "  # type: ignore[arg-type]
              f"{statistics.median(float(r['system_us']) for r in rs):.0f} | {shares} | "  # type: ignore[arg-type]
              f"{100 * by_place['other'] / total:.0f} % |")
    for (build, rw, qd), rs in runs.items():
        frames = sum((r["frames"] for r in rs), collections.Counter())  # type: ignore[misc]
        total = sum(frames.values())
        print(f"\n{build}, {rw} QD{qd}:")
        if total:  # py-spy ran
            print(f"\nInnermost frames ({total} samples):\n")
            print("| share | where | frame |")
            print("| ---: | --- | --- |")
            for frame, count in frames.most_common(args.top):
                print(f"| {100 * count / total:.1f} % | {place(frame)} | `{frame[:110]}` |")
        counters = [r["counters"] for r in rs if r["counters"]]
        if counters:  # per request: the job's IOPS over perf's window
            per = float(rs[0]["iops"]) * float(rs[0]["window"])  # type: ignore[arg-type]
            print("\nperf stat, per request: " + ", ".join(
                f"{k} {v / per:.3g}" for k, v in counters[0].items()))  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    sys.exit(main())

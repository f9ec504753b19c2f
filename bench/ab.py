"""Two versions of iscsifs, A and B, in turn on one tgtd LUN: the same fio jobs on a mount of
each, A B B A A B ..., and the ratio B/A pair by pair. Pairs taken a minute apart hold where whole
runs of ``bench/run.py`` minutes apart do not: on a shared VM the machine's own speed drifts
by a fifth between runs (its pyfuse3 and iscsi-perf ceilings move with it).

    sudo .venv/bin/python bench/ab.py --a /tmp/before --b . [--rounds 4] [--runtime 4]
                                      [--a-options OPTS] [--b-options OPTS]

Each of --a and --b is a checkout (``git worktree add /tmp/before COMMIT``); its ``iscsifs`` is
what its mount runs, with the side's mount options if given (``--a . --b . --b-options
workers=1``: what an option gives), and with the side's interpreter if given (``--a . --b .
--b-python /tmp/other-venv/bin/python``: what another build of Python gives, from a venv of it
with iscsifs's dependencies installed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' private tgtd and mount helpers
sys.path.insert(0, str(REPO))

from bench.machine import this_machine  # noqa: E402

from support.targets import is_mounted, unmount  # noqa: E402
from support.tgt import TgtDaemon  # noqa: E402

IQN = "iqn.2026-11.bench.iscsifs:ab"
JOBS = (("randread", "4k", 32), ("randwrite", "4k", 32), ("randread", "4k", 1), ("read", "1m", 8))


def fio(path: Path, rw: str, bs: str, iodepth: int, runtime: float) -> float:
    """IOPS for 4 KiB jobs, MiB/s for the others."""
    out = subprocess.run(["fio", "--name=ab", f"--filename={path}", f"--rw={rw}", f"--bs={bs}", f"--iodepth={iodepth}",
                          "--ioengine=libaio", "--direct=1", f"--runtime={runtime}", "--time_based", "--size=256m",
                          "--output-format=json"], capture_output=True, text=True, timeout=runtime + 60, check=True)
    job = json.loads(out.stdout)["jobs"][0]
    stats = job["read"] if "read" in rw else job["write"]
    return float(stats["iops"] if bs == "4k" else stats["bw"] / 1024)


WARM_READ = 8 << 20  # bytes: larger than any command either stack sends (1 MiB)


def warm_tgtd(lun_url: str) -> bool:
    """One 8 MiB READ from another client (qemu-io, libiscsi) on a LUN of a fresh tgtd, so that
    every stack measured finds tgtd's allocator in one state, the one it stays in from the
    first command larger than 1 MiB any initiator sends it. tgtd takes each command's buffer
    from glibc (posix_memalign), which maps a buffer of 1 MiB afresh for every command (mmap, a
    page fault per page, munmap) until it has freed a larger one. Neither stack sends more than
    1 MiB, so before this READ both paid that on every 1 MiB transfer: on one mount, 1 MiB
    direct writes did 288-373 MiB/s before it and 538-587 after (bench/README.md, "A target's
    allocator, and a VM's first touch"). True once the READ was done."""
    if shutil.which("qemu-io") is None:
        return False
    try:
        done = subprocess.run(["qemu-io", "-f", "raw", "-c", f"read 0 {WARM_READ}", lun_url],
                              capture_output=True, text=True, timeout=60)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0 and f"read {WARM_READ}/{WARM_READ} bytes" in done.stdout


def warm_line(warmed: bool) -> str:
    """What ``warm_tgtd`` did, as the benchmarks print it."""
    return ("tgtd warmed by one 8 MiB READ from qemu-io" if warmed
            else "tgtd NOT warmed (no qemu-io with iscsi://, or its READ failed): 1 MiB transfers pay its fresh "
                 "allocator")


@contextlib.contextmanager
def random_lun(work: Path, iqn: str, size_mib: int = 256) -> Iterator[str]:
    """A private tgtd with one LUN (1) of random data in /dev/shm; yields the target's URL."""
    shm = Path(tempfile.mkdtemp(prefix="iscsifs-bench-", dir="/dev/shm"))
    try:
        backing = shm / "lun.img"
        with open(backing, "wb") as f:
            f.write(os.urandom(1 << 20) * size_mib)  # real data: a sparse file would flatter reads
        with TgtDaemon(work / "tgt") as tgt:
            tgt.add_target(iqn)
            tgt.add_lun(iqn, 1, backing)
            if not warm_tgtd(f"{tgt.url}/{iqn}/1"):
                print(f"bench: {warm_line(False)}", file=sys.stderr)
            yield f"{tgt.url}/{iqn}"
    finally:
        shutil.rmtree(shm, ignore_errors=True)


@contextlib.contextmanager
def mount(url: str, mnt: Path, env: dict[str, str], cwd: Path | None = None,
          options: str = "", python: str = sys.executable) -> Iterator[subprocess.Popen[bytes]]:
    """``iscsifs -f [-o OPTIONS] URL MNT`` with ``env`` added, run by ``python``, live until the
    block ends; then unmounted."""
    proc = subprocess.Popen([python, "-m", "iscsifs", "-f", *(["-o", options] if options else []), url,
                             str(mnt)], cwd=cwd,
                            env=dict(os.environ, **env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: the mount of {url} on {mnt} did not come up")
            time.sleep(0.05)
        yield proc
    finally:
        unmount(mnt)
        proc.wait(timeout=30)


def measure(checkout: Path, url: str, mnt: Path, runtime: float, options: str,
            jobs: tuple[tuple[str, str, int], ...], python: str) -> dict[tuple[str, str, int], float]:
    with mount(url, mnt, {"PYTHONPATH": str(checkout)}, cwd=checkout, options=options, python=python):
        return {job: fio(mnt / "1", *job, runtime) for job in jobs}


def interpreter(python: str) -> str:
    """``python``'s build, as the machine line gives this process's."""
    out = subprocess.run([python, str(REPO / "bench" / "machine.py"), "--python"], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True, help="checkout A (the one compared against)")
    ap.add_argument("--b", type=Path, required=True, help="checkout B")
    ap.add_argument("--a-options", default="", help="A's mount options (-o)")
    ap.add_argument("--b-options", default="", help="B's mount options (-o)")
    ap.add_argument("--a-python", default=sys.executable, help="the interpreter A's mount runs (default: this one)")
    ap.add_argument("--b-python", default=sys.executable, help="the interpreter B's mount runs")
    ap.add_argument("--jobs", help="only these jobs, as rw:bs:qd,... "
                    "(default: randread:4k:32,randwrite:4k:32,randread:4k:1,read:1m:8)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--runtime", type=float, default=4, help="seconds per fio job")
    args = ap.parse_args()
    jobs = JOBS if not args.jobs else tuple((rw, bs, int(qd)) for rw, bs, qd in
                                            (j.split(":") for j in args.jobs.split(",")))
    if os.geteuid() != 0:
        raise SystemExit("ab: run as root (tgtd, FUSE mounts)")
    # Asked before measuring: an interpreter that cannot run is an error now, not after the runs.
    builds = {"A": interpreter(args.a_python), "B": interpreter(args.b_python)}
    work = Path(tempfile.mkdtemp(prefix="iscsifs-ab-"))
    sides = {"A": args.a.resolve(), "B": args.b.resolve()}  # the same checkout twice is fine
    results: dict[str, dict[tuple[str, str, int], list[float]]] = {s: {j: [] for j in jobs} for s in sides}
    try:
        with random_lun(work, IQN) as url:
            for n in range(args.rounds):
                # A B, then B A, and so on: on VM 2 the side measured second read 0.89x the first at
                # 4 KiB QD32 whichever it was (bench/README.md), so a fixed order biases every pair.
                for side, checkout in sorted(sides.items(), reverse=bool(n % 2)):
                    mnt = work / f"mnt-{side}"
                    mnt.mkdir(exist_ok=True)
                    options = args.a_options if side == "A" else args.b_options
                    python = args.a_python if side == "A" else args.b_python
                    for job, value in measure(checkout, url, mnt, args.runtime, options, jobs, python).items():
                        results[side][job].append(value)
                    print(f"ab: round {n + 1} {side} done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {this_machine().line()}; A -o {args.a_options or '(none)'}, "
          f"B -o {args.b_options or '(none)'}")
    if (args.a_python, args.b_python) != (sys.executable, sys.executable):
        print(f"A runs {builds['A']}; B runs {builds['B']}")
    print()
    print(f"| job | A ({args.a}) | B ({args.b}) | B/A, median of pairs | pairs |")
    print("| --- | ---: | ---: | ---: | --- |")
    for rw, bs, qd in jobs:
        a, b = results["A"][(rw, bs, qd)], results["B"][(rw, bs, qd)]
        pairs = [y / x for x, y in zip(a, b, strict=True)]
        unit = "IOPS" if bs == "4k" else "MiB/s"
        print(f"| {rw} {bs} QD{qd} ({unit}) | {statistics.median(a):.0f} | {statistics.median(b):.0f} | "
              f"{statistics.median(pairs):.3f} | {', '.join(f'{p:.2f}' for p in pairs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

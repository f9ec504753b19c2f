"""What the iSCSI stack costs without FUSE: 4 KiB random reads through ``Lun.read_into`` (the
path a FUSE read takes below ``IscsiFs.read``), or writes through ``Lun.write`` with ``--rw
write``, on one tgtd LUN, from ``--qd`` tasks at once in one trio loop, and the CPU time that
process spends per command (user and system: our Python, trio, and the socket's system calls,
with the loopback receive a send runs for tgtd).

    sudo .venv/bin/python bench/stack.py [--a CHECKOUT] [--b CHECKOUT] [--rw read|write] [--qd 32]
                                         [--requests 20000] [--rounds 3]

With ``--b``, checkouts A and B in turn (A B A B), each in a process of its own that imports its
own ``iscsifs``, and the ratio of their CPU per command pair by pair. CPU time per command
moves less between runs than IOPS on a shared VM, so a change to the command path shows here
when a whole mount's figures (``bench/ab.py``) drown it. Beside ``bench/nullfs.py --wait``
(what pyfuse3 costs a request that waits once) and a mount's CPU per read, it splits a mount's
request into FUSE's part, the stack's part and the rest: how the two interleave in one trio
loop (``bench/run.py`` prints that split).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IQN = "iqn.2026-12.bench.iscsifs:stack"


def child(checkout: Path, url: str, rw: str, qd: int, requests: int) -> None:
    """In the child: read (or write) on the first disk LUN of ``url``'s target, then print
    {"cpu_us": ..., "iops": ...} as one JSON line (``bench/run.py`` runs it too)."""
    sys.path.insert(0, str(checkout))
    import trio
    from iscsifs.block.client import Client
    from iscsifs.block.stats import Stats
    from iscsifs.url import parse_url

    async def run() -> dict[str, float]:
        parsed = parse_url(url)
        async with trio.open_nursery() as nursery:
            target = parsed.target or IQN
            session, luns = await Client.for_url(parsed).open_target(nursery, parsed, target, stats=Stats())
            lun = luns[0][1]
            blocks = lun.size // 4096
            left = requests

            async def reader(seed: int) -> None:
                nonlocal left
                buf = bytearray(4096)
                data = os.urandom(4096)
                rnd = random.Random(seed)
                while left > 0:
                    left -= 1
                    if rw == "write":
                        await lun.write(rnd.randrange(blocks) * 4096, data)
                    else:
                        await lun.read_into(rnd.randrange(blocks) * 4096, 4096, buf)

            for warm in (True, False):  # the first pass warms tgtd's and the interpreter's caches
                left = requests // 4 if warm else requests
                done = left
                cpu, wall = time.process_time(), time.perf_counter()
                async with trio.open_nursery() as readers:
                    for n in range(qd):
                        readers.start_soon(reader, n)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            await session.logout()
            nursery.cancel_scope.cancel()
        return {"cpu_us": cpu / done * 1e6, "iops": done / wall}

    print(json.dumps(trio.run(run)), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, default=REPO, help="checkout A (default: this one)")
    ap.add_argument("--b", type=Path, help="checkout B, in turn with A")
    ap.add_argument("--rw", choices=("read", "write"), default="read", help="4 KiB random reads or writes")
    ap.add_argument("--qd", type=int, default=32, help="commands in flight")
    ap.add_argument("--requests", type=int, default=20000, help="commands per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("CHECKOUT", "URL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.rw, args.qd, args.requests)
        return 0
    if os.geteuid() != 0:
        raise SystemExit("stack: run as root (tgtd)")
    sys.path.insert(0, str(REPO / "tests"))  # the tests' private tgtd
    sys.path.insert(0, str(REPO))
    from bench.ab import random_lun
    from bench.machine import this_machine

    sides = {"A": args.a.resolve(), **({"B": args.b.resolve()} if args.b else {})}
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    work = Path(tempfile.mkdtemp(prefix="iscsifs-stack-"))
    try:
        with random_lun(work, IQN, size_mib=64) as url:
            for n in range(args.rounds):
                for side, checkout in sides.items():
                    out = subprocess.run([sys.executable, __file__, "--rw", args.rw, "--qd", str(args.qd), "--requests",
                                          str(args.requests), "--child", str(checkout), url],
                                         capture_output=True, text=True, timeout=600, cwd=checkout)
                    if out.returncode != 0:
                        last = out.stderr.strip().splitlines()[-1:] or ["no output"]
                        raise SystemExit(f"stack: {side} failed: {last[0]}")
                    results[side].append(json.loads(out.stdout.splitlines()[-1]))
                    print(f"stack: round {n + 1} {side}: {results[side][-1]['cpu_us']:.1f} µs CPU per command",
                          file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {this_machine().line()}; 4 KiB random {args.rw}s at QD{args.qd}, "
          f"{args.requests} per measurement\n")
    print(f"| checkout | CPU per {args.rw}, µs, median | runs | IOPS, median |")
    print("| --- | ---: | --- | ---: |")
    for side, checkout in sides.items():
        cpu = [r["cpu_us"] for r in results[side]]
        print(f"| {side} ({checkout}) | {statistics.median(cpu):.1f} | {', '.join(f'{c:.1f}' for c in cpu)} | "
              f"{statistics.median(r['iops'] for r in results[side]):.0f} |")
    if "B" in results:
        pairs = [b["cpu_us"] / a["cpu_us"] for a, b in zip(results["A"], results["B"], strict=True)]
        print(f"\nB/A CPU per {args.rw}, median of pairs: {statistics.median(pairs):.3f} "
              f"(pairs {', '.join(f'{p:.2f}' for p in pairs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

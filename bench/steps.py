"""An iscsifs mount (its command line, in the foreground) that counts what its requests cost in
steps, for bench/run.py: trio task steps, task switches (a step of another task than the last)
and turns of trio's loop (one wait for I/O each), through a trio Instrument; and, where
bench/malloccount.so is preloaded with PYTHONMALLOC=malloc, every allocation the process makes.

    python bench/steps.py SNAPSHOT_FILE iscsifs-arguments...

Each SIGUSR2 writes the counts so far to SNAPSHOT_FILE (JSON); the bench takes one before and
one after a fio job of a known number of requests. The instrument slows the mount down: its
counts are for this, never its speed.
"""

from __future__ import annotations

import ctypes
import json
import signal
import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's iscsifs, as bench/run.py's


class Counter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0
        self.switches = 0
        self.turns = 0
        self._last: trio.lowlevel.Task | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if task is not self._last:
            self.switches += 1
            self._last = task

    def after_io_wait(self, timeout: float) -> None:
        self.turns += 1


def main() -> int:
    snapshot = Path(sys.argv[1])
    counter = Counter()
    allocations = getattr(ctypes.CDLL(None), "iscsifs_bench_allocations", None)
    if allocations is not None:
        allocations.restype = ctypes.c_ulonglong

    def write_snapshot(signum: int, frame: object) -> None:
        counts = {"steps": counter.steps, "switches": counter.switches, "turns": counter.turns,
                  "allocations": allocations() if allocations is not None else None}
        snapshot.write_text(json.dumps(counts))

    signal.signal(signal.SIGUSR2, write_snapshot)
    run = trio.run

    def counted_run(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = [*kwargs.get("instruments", ()), counter]
        return run(*args, **kwargs)

    trio.run = counted_run  # the mount's own trio.run (iscsifs.cli.commands) is this one
    from iscsifs.cli import main as iscsifs_main

    return iscsifs_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())

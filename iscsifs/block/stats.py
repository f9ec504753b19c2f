"""Per-mount statistics, readable while it runs: ``iscsifs stats MOUNTPOINT`` reads them from the
``user.iscsifs.stats`` extended attribute of the mount's root (JSON).

One process serves one mount, so one ``Stats`` per process (``STATS``). Latencies go into a
log2 histogram of microseconds: constant memory, percentiles to within a factor of two.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BUCKETS = 32  # 1 µs .. ~36 min


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    commands: dict[str, int] = field(default_factory=dict)  # by SCSI command name
    errors: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    max_latency_us: int = 0
    sessions: Callable[[], int] = lambda: 0  # set by the mount: how many sessions are logged in
    reconnects: Callable[[], int] = lambda: 0  # set by the mount: logins beyond each path's first
    workers: Callable[[], tuple[int, int]] = lambda: (0, 0)  # set by the mount: session workers, their restarts
    # set by the mount: each target's paths, {target: [{"portal", "state", "active"}]}
    paths: Callable[[], dict[str, list[dict[str, object]]]] = lambda: {}
    # set by the mount: "target/LUN" -> {"key", "registered", "fenced", "reservation"} (persistent reservations)
    reservations: Callable[[], dict[str, dict[str, object]]] = lambda: {}

    def record(self, name: str, seconds: float, *, read: int = 0, written: int = 0, ok: bool = True) -> None:
        self.commands[name] = self.commands.get(name, 0) + 1
        self.bytes_read += read
        self.bytes_written += written
        if not ok:
            self.errors += 1
        us = max(1, int(seconds * 1e6))
        self.histogram[min(BUCKETS - 1, us.bit_length() - 1)] += 1
        self.max_latency_us = max(self.max_latency_us, us)

    def percentile_us(self, p: float) -> int:
        """The upper bound of the bucket holding the p-th percentile (0 with no samples)."""
        total = sum(self.histogram)
        if not total:
            return 0
        rank = p / 100 * total
        seen = 0
        for i, n in enumerate(self.histogram):
            seen += n
            if seen >= rank and n:
                return min(self.max_latency_us, (1 << (i + 1)) - 1)
        return self.max_latency_us

    def snapshot(self) -> dict[str, object]:
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "sessions": self.sessions(),
            "paths": self.paths(),
            "reservations": self.reservations(),
            "reconnects": self.reconnects(),
            "workers": self.workers()[0],
            "worker_restarts": self.workers()[1],
            "commands": sum(self.commands.values()),
            "commands_by_kind": dict(sorted(self.commands.items())),
            "errors": self.errors,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "latency_us": {"p50": self.percentile_us(50), "p90": self.percentile_us(90),
                           "p99": self.percentile_us(99), "max": self.max_latency_us},
        }

    def to_json(self) -> bytes:
        return json.dumps(self.snapshot(), sort_keys=True).encode()


STATS = Stats()

"""Per-mount statistics, readable while it runs: ``iscsifs stats MOUNTPOINT`` reads them from the
``user.iscsifs.stats`` extended attribute of the mount's root (JSON); ``prometheus_text`` writes
the same as the Prometheus text exposition format (``iscsifs stats --prometheus``, and the file
``-o metrics_file=`` keeps for node_exporter's textfile collector).

A mount makes its ``Stats`` and hands it to what sends its commands (each ``Lun``, the scans:
``block.command.command`` takes it); outside a mount there is none unless the caller makes one,
so no two users share counts. Latencies go into log2 histograms of microseconds: constant
memory, percentiles to within a factor of two, and exact Prometheus buckets at powers of two.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

BUCKETS = 32  # 1 µs .. ~36 min


@dataclass(slots=True)
class OpStats:
    """One SCSI operation on one LUN of one target."""

    commands: int = 0
    errors: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0  # the sum of latencies (a Prometheus histogram's _sum)
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def to_json(self) -> dict[str, object]:
        return {"commands": self.commands, "errors": self.errors, "bytes_read": self.bytes_read,
                "bytes_written": self.bytes_written, "seconds": self.seconds, "histogram": self.histogram}


class Gauges(Protocol):
    """What a mount runs now, beside the counts: asked for each snapshot, never per command."""

    def sessions(self) -> int:
        """Targets logged in."""
        ...

    def reconnects_by_target(self) -> dict[str, int]:
        """Logins beyond each path's first, by target."""
        ...

    def paths(self) -> dict[str, list[dict[str, object]]]:
        """Each target's paths: ``{target: [{"portal", "state", "active", "isid"}]}``."""
        ...

    def reservations(self) -> dict[str, dict[str, object]]:
        """``"target/LUN"`` -> ``{"key", "registered", "fenced", "reservation"}``, where a key is set."""
        ...

    def workers(self) -> int:
        """Session worker processes (0: the sessions run in the FUSE process)."""
        ...

    def worker_restarts(self) -> int:
        """Session workers started again after they ended."""
        ...

    def loop_polls(self) -> tuple[int, int]:
        """Sleeps of the loop polled for first (net.turnend), and of them those a ready answer or
        request ended."""
        ...

    def own_answers(self) -> int:
        """Answers a command read in its own task, its connection's reader having lent it the
        socket while the loop polls (net.connection)."""
        ...


class NoGauges:
    """The gauges of a ``Stats`` that no mount reports to (a library user's, a test's)."""

    def sessions(self) -> int:
        return 0

    def reconnects_by_target(self) -> dict[str, int]:
        return {}

    def paths(self) -> dict[str, list[dict[str, object]]]:
        return {}

    def reservations(self) -> dict[str, dict[str, object]]:
        return {}

    def workers(self) -> int:
        return 0

    def worker_restarts(self) -> int:
        return 0

    def loop_polls(self) -> tuple[int, int]:
        return 0, 0

    def own_answers(self) -> int:
        return 0


class Stats:
    """One mount's statistics: counts recorded per command, ``gauges`` read when asked."""

    def __init__(self, gauges: Gauges | None = None) -> None:
        self.gauges: Gauges = gauges if gauges is not None else NoGauges()
        self.started = time.time()
        self.max_latency_us = 0
        # Everything is counted once, by (target, LUN, command name): the mount's totals are sums of
        # these, made when asked, so each command pays for one dict lookup.
        self.by_op: dict[tuple[str, int, str], OpStats] = {}

    def record(self, name: str, seconds: float, *, read: int = 0, written: int = 0, ok: bool = True,
               target: str = "", lun: int = 0) -> None:
        key = (target, lun, name)
        op = self.by_op.get(key)
        if op is None:
            op = self.by_op[key] = OpStats()
        op.commands += 1
        op.bytes_read += read
        op.bytes_written += written
        op.seconds += seconds
        us = max(1, int(seconds * 1e6))
        op.histogram[min(BUCKETS - 1, us.bit_length() - 1)] += 1
        if us > self.max_latency_us:
            self.max_latency_us = us
        if not ok:
            op.errors += 1

    @property
    def commands(self) -> dict[str, int]:
        """By SCSI command name."""
        out: dict[str, int] = {}
        for (_target, _lun, name), op in self.by_op.items():
            out[name] = out.get(name, 0) + op.commands
        return out

    @property
    def errors(self) -> int:
        return sum(op.errors for op in self.by_op.values())

    @property
    def bytes_read(self) -> int:
        return sum(op.bytes_read for op in self.by_op.values())

    @property
    def bytes_written(self) -> int:
        return sum(op.bytes_written for op in self.by_op.values())

    @property
    def histogram(self) -> list[int]:
        return [sum(counts) for counts in zip(*(op.histogram for op in self.by_op.values()), strict=True)] \
            if self.by_op else [0] * BUCKETS

    def percentile_us(self, p: float) -> int:
        """The upper bound of the bucket holding the p-th percentile (0 with no samples)."""
        histogram = self.histogram
        total = sum(histogram)
        if not total:
            return 0
        rank = p / 100 * total
        seen = 0
        for i, n in enumerate(histogram):
            seen += n
            if seen >= rank and n:
                return min(self.max_latency_us, (1 << (i + 1)) - 1)
        return self.max_latency_us

    def snapshot(self) -> dict[str, object]:
        commands = self.commands
        gauges = self.gauges
        reconnects = gauges.reconnects_by_target()
        polls, answered = gauges.loop_polls()
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "started": self.started,
            "sessions": gauges.sessions(),
            "paths": gauges.paths(),
            "reservations": gauges.reservations(),
            "reconnects": sum(reconnects.values()),
            "reconnects_by_target": reconnects,
            "workers": gauges.workers(),
            "worker_restarts": gauges.worker_restarts(),
            "polls": polls,
            "polls_answered": answered,
            "own_answers": gauges.own_answers(),
            "commands": sum(commands.values()),
            "commands_by_kind": dict(sorted(commands.items())),
            "errors": self.errors,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "latency_us": {"p50": self.percentile_us(50), "p90": self.percentile_us(90),
                           "p99": self.percentile_us(99), "max": self.max_latency_us},
            "by_lun": [{"target": t, "lun": lun, "op": name, **op.to_json()}
                       for (t, lun, name), op in sorted(self.by_op.items())],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.snapshot(), sort_keys=True).encode()



# -- Prometheus text exposition format (version 0.0.4) ---------------------------------------------

# The histogram's buckets: every fourth power of two of microseconds, 16 µs to ~17 s. Each is
# the exact edge of a log2 bucket, so its count is exact.
PROMETHEUS_BUCKET_EDGES = tuple(range(4, 25, 2))  # le = 2**k µs


def _label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def prometheus_text(snapshot: dict[str, Any]) -> str:  # Any: the JSON of Stats.snapshot
    """``snapshot`` as Prometheus metrics: counters end in ``_total``, bytes and seconds are in
    base units, latency is a histogram; labels name the target, the LUN, the operation, the
    portal."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterator[tuple[str, str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{suffix}{labels} {_number(value)}" for suffix, labels, value in samples)

    ops = snapshot.get("by_lun", [])
    family("iscsifs_commands_total", "counter", "SCSI commands sent, by target, LUN and operation.",
           (("", _labels(target=o["target"], lun=o["lun"], op=o["op"]), o["commands"]) for o in ops))
    family("iscsifs_command_errors_total", "counter",
           "Commands that did not complete with GOOD status (retried ones such as UNIT ATTENTION included).",
           (("", _labels(target=o["target"], lun=o["lun"], op=o["op"]), o["errors"]) for o in ops))

    def bytes_samples() -> Iterator[tuple[str, str, float]]:
        totals: dict[tuple[str, int], list[int]] = {}
        for o in ops:
            t = totals.setdefault((o["target"], o["lun"]), [0, 0])
            t[0] += o["bytes_read"]
            t[1] += o["bytes_written"]
        for (target, lun), (read, written) in sorted(totals.items()):
            yield "", _labels(target=target, lun=lun, direction="read"), read
            yield "", _labels(target=target, lun=lun, direction="write"), written

    family("iscsifs_bytes_total", "counter", "Bytes read from and written to LUNs.", bytes_samples())

    def histogram_samples() -> Iterator[tuple[str, str, float]]:
        for o in ops:
            labels = {"target": o["target"], "lun": o["lun"], "op": o["op"]}
            counts = o["histogram"]
            for k in PROMETHEUS_BUCKET_EDGES:  # log2 buckets 0 .. k-1 hold what took under 2**k µs
                yield "_bucket", _labels(**labels, le=_number((1 << k) / 1e6)), sum(counts[:k])
            yield "_bucket", _labels(**labels, le="+Inf"), o["commands"]
            yield "_sum", _labels(**labels), float(o["seconds"])
            yield "_count", _labels(**labels), o["commands"]

    family("iscsifs_command_duration_seconds", "histogram", "How long commands took, from sending to the answer.",
           histogram_samples())
    family("iscsifs_path_up", "gauge", "1 while a path (an iSCSI session through a portal) is logged in.",
           (("", _labels(target=target, portal=p["portal"]), 1 if p["state"] == "logged_in" else 0)
            for target, paths in sorted(snapshot.get("paths", {}).items()) for p in paths))
    family("iscsifs_reconnects_total", "counter", "Logins beyond each path's first, by target.",
           (("", _labels(target=target), n) for target, n in sorted(snapshot.get("reconnects_by_target", {}).items())))
    family("iscsifs_sessions", "gauge", "Targets logged in now.", iter([("", "", snapshot.get("sessions", 0))]))
    family("iscsifs_worker_restarts_total", "counter", "Session worker processes started again after they ended.",
           iter([("", "", snapshot.get("worker_restarts", 0))]))
    family("iscsifs_loop_polls_total", "counter", "Sleeps of the mount's loop it polled for first (-o poll).",
           iter([("", "", snapshot.get("polls", 0))]))
    family("iscsifs_loop_polls_answered_total", "counter",
           "Of the polled sleeps, those an answer or a request ended before the poll's time was up.",
           iter([("", "", snapshot.get("polls_answered", 0))]))
    family("iscsifs_own_answers_total", "counter",
           "Answers a command read in its own task, on a socket lent it while the loop polls.",
           iter([("", "", snapshot.get("own_answers", 0))]))

    def reservation_samples(field_name: str) -> Iterator[tuple[str, str, float]]:
        for name, pr in sorted(snapshot.get("reservations", {}).items()):
            target, _, lun = name.rpartition("/")
            yield "", _labels(target=target, lun=lun), 1 if pr[field_name] else 0

    family("iscsifs_registered", "gauge", "1 while this mount's reservation key is registered on the LUN.",
           reservation_samples("registered"))
    family("iscsifs_fenced", "gauge", "1 once another host removed this mount's reservation key (fenced).",
           reservation_samples("fenced"))
    family("iscsifs_start_time_seconds", "gauge", "When the mount started, in seconds since the epoch.",
           iter([("", "", float(snapshot.get("started", 0.0)))]))
    return "\n".join(out) + "\n"

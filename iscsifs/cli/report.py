"""What ``iscsifs ls`` and ``iscsifs stats`` print: tables and units a person reads, or JSON."""

from __future__ import annotations

from typing import Any

from iscsifs.block.client import LunInfo
from iscsifs.scsi.response import device_type_word


def lun_record(info: LunInfo, paths: list[str] | None = None) -> dict[str, object]:
    """One LUN for ``ls --json``: sizes in bytes, null where a LUN is not a disk; ``paths``: every
    portal its target is known at (the URL's, ``-o portal=``, SendTargets), ``portal`` the one used."""
    return {
        "target": info.target, "lun": info.lun, "type": device_type_word(info.inquiry.device_type),
        "size": info.capacity.size if info.capacity else None,
        "block_size": info.capacity.block_size if info.capacity else None,
        "vendor": info.inquiry.vendor, "product": info.inquiry.product, "revision": info.inquiry.revision,
        "serial": info.identity.serial or None, "wwn": info.identity.wwn or None,
        "write_protected": info.identity.write_protected, "portal": info.portal,
        "paths": paths if paths is not None else [info.portal],
        "provisioning": ("thin" if info.identity.provisioning.thin else "full") if info.capacity else None,
        # The keys, the reservation, and whether -o reservation_key's key is registered ("key").
        "reservations": _reservations(info),
    }


def _reservations(info: LunInfo) -> dict[str, object] | None:
    if info.reservations is None:
        return None
    record = info.reservations.to_json()
    del record["fenced"]  # a mount's state: ls has none
    return record


def ls_table(rows: list[LunInfo]) -> str:
    header = ("TARGET", "LUN", "TYPE", "SIZE", "VENDOR", "PRODUCT")
    table = [header] + [(i.target, str(i.lun), device_type_word(i.inquiry.device_type),
                         str(i.capacity.size) if i.capacity else "-", i.inquiry.vendor, i.inquiry.product)
                        for i in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    def line(row: tuple[str, ...]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.rjust(w) if i in (1, 3) else c.ljust(w) for i, (c, w) in enumerate(cells)).rstrip()

    return "\n".join(line(r) for r in table)


def merge_extents(extents: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Adjacent extents of one state as one."""
    merged: list[tuple[int, int, str]] = []
    for offset, length, state in extents:
        if merged and merged[-1][2] == state and merged[-1][0] + merged[-1][1] == offset:
            merged[-1] = (merged[-1][0], merged[-1][1] + length, state)
        else:
            merged.append((offset, length, state))
    return merged


def map_text(extents: list[tuple[int, int, str]], size: int) -> str:
    """``iscsifs map``: one line per extent, then how much of the LUN is allocated."""
    lines = [f"{'OFFSET':>14}  {'LENGTH':>14}  STATE"]
    lines += [f"{o:>14}  {n:>14}  {s}" for o, n, s in extents]
    allocated = sum(n for _, n, s in extents if s != "deallocated")
    lines.append(f"allocated {human_bytes(allocated)} of {human_bytes(size)} ({100 * allocated / max(size, 1):.1f}%)")
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB": binary units, as ls -h and df -h print them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def stats_text(stats: dict[str, Any]) -> str:  # Any: the JSON of Stats.snapshot
    """``iscsifs stats`` for a person: sizes in KiB/MiB/GiB, rates averaged over the uptime, ms."""
    up = max(float(stats["uptime_s"]), 1e-9)
    lat = stats["latency_us"]
    lines = [
        f"uptime       {stats['uptime_s']:.0f} s",
        f"sessions     {stats['sessions']} logged in, {stats['reconnects']} reconnects",
        *([f"workers      {stats['workers']} processes, restarted {stats['worker_restarts']} times"]
          if stats.get("workers") else []),
        *([f"polling      {stats['polls']} sleeps polled for first, {stats['polls_answered']} of them ended by"
           f" an answer or a request; {stats.get('own_answers', 0)} answers read by their command's own task"]
          if stats.get("polls") else []),
        f"commands     {stats['commands']} ({stats['errors']} not GOOD, retried ones such as UNIT ATTENTION included)",
        f"read         {human_bytes(stats['bytes_read'])} ({human_bytes(stats['bytes_read'] / up)}/s on average)",
        f"written      {human_bytes(stats['bytes_written'])} ({human_bytes(stats['bytes_written'] / up)}/s on average)",
        f"latency      p50 {ms(lat['p50'])}, p90 {ms(lat['p90'])}, p99 {ms(lat['p99'])}, max {ms(lat['max'])}",
    ]
    lines += [f"  {name:<24} {count}" for name, count in stats["commands_by_kind"].items()]
    for target, paths in stats.get("paths", {}).items():
        lines.append(f"paths of {target}")
        lines += [f"  {p['portal']:<24} {p['state']}{'  (active)' if p['active'] else ''}" for p in paths]
    for lun, pr in stats.get("reservations", {}).items():
        state = "FENCED (another host removed its key)" if pr["fenced"] else "registered"
        held = f", reserving {pr['reservation']}" if pr.get("reservation") else ""
        lines.append(f"reservation  {lun}: key {pr['key']} {state}{held}")
    return "\n".join(lines)


def pr_text(path: str, status: dict[str, Any]) -> str:  # Any: the JSON of block.reservation.PrStatus
    """``iscsifs pr PATH`` for a person: the keys (ours marked), the reservation, our state."""
    ours = status["key"]

    def marked(key: str) -> str:
        return f"{key} (this mount)" if key == ours else key

    keys = status["keys"]
    lines = [f"{path}: PRgeneration {status['generation']}",
             f"  registered keys  {', '.join(marked(k) for k in keys) if keys else 'none'}"]
    r = status["reservation"]
    if r is None:
        lines.append("  reservation      none")
    else:
        holder = "every registrant" if r["key"] == "0x" + "0" * 16 else marked(r["key"])
        lines.append(f"  reservation      {r['type']}, held by {holder}")
    if ours is None:
        lines.append("  this mount       no key (-o reservation_key=KEY, or iscsifs pr --register KEY)")
    elif status["fenced"]:
        lines.append(f"  this mount       key {ours}: FENCED, another host removed it; writes fail with EBUSY")
    else:
        lines.append(f"  this mount       key {ours}, {'registered' if status['registered'] else 'not registered'}"
                     f"{', holds the reservation' if r is not None and r['ours'] else ''}")
    return "\n".join(lines)

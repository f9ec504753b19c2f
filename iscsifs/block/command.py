"""The SCSI command policy (SAM-5 §5.14, SPC-4): which statuses are retried, how and for how
long. Every command of a LUN goes through ``command``; how a LUN is found and identified is
``iscsifs.block.identity``."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from iscsifs.block.stats import Stats
from iscsifs.net.api import DataOut, Executor, Into
from iscsifs.proto.connection import ScsiResult
from iscsifs.proto.errors import IscsiError
from iscsifs.proto.policy import DEFAULT_POLICY
from iscsifs.scsi.sense import (
    ScsiError,
    Sense,
    SenseKey,
    Status,
    is_unit_attention,
    parse_sense,
    status_text,
)

log = logging.getLogger("iscsifs.block")


UNIT_ATTENTION_RETRIES = 8  # every target reports at least one (29/00) after login
# SAM-5 statuses and sense that say "not now", not "no": retried with backoff, within a time bound,
# without using up the UNIT ATTENTION retries.
BUSY_STATUSES = (Status.BUSY, Status.TASK_SET_FULL)
# Plain ints on every command's path: an IntEnum member costs an attribute lookup each time.
_GOOD = int(Status.GOOD)
_COMPLETED = frozenset({int(Status.GOOD), int(Status.CONDITION_MET)})


def _transient(status: int, sense: Sense | None) -> bool:
    if status in BUSY_STATUSES:
        return True
    if status != Status.CHECK_CONDITION or sense is None:
        return False
    if sense.key == SenseKey.ABORTED_COMMAND:
        return True
    # NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY (04/01) or in transition (04/0A).
    return sense.key == SenseKey.NOT_READY and sense.asc_ascq in ((0x04, 0x01), (0x04, 0x0A))


async def command(session: Executor, lun: int, cdb_bytes: bytes, *, name: str,
                  data_out: DataOut | None = None, expected_in: int = 0,
                  into: Into | None = None, stats: Stats | None = None,
                  again: Callable[[], Executor] | None = None) -> ScsiResult:
    """Run a SCSI command; return on GOOD. UNIT ATTENTION is retried (and reported), BUSY, TASK SET
    FULL, ABORTED COMMAND and NOT READY (becoming ready) are retried with backoff, everything
    else (RESERVATION CONFLICT included: someone else holds the LUN) raises ScsiError at once.
    Each attempt is counted in ``stats``, the caller's (its mount's), if it keeps any. A retry
    goes to ``again()``, if given (a LUN whose file went has no executor to retry on)."""
    attentions = 0
    backoff = 0.005
    first_refusal: float | None = None
    while True:
        started = trio.current_time()
        try:
            result = await session.execute(lun, cdb_bytes, data_out=data_out, expected_in=expected_in, into=into)
        except IscsiError:
            if stats is not None:
                stats.record(name, trio.current_time() - started, ok=False, target=session.target_name, lun=lun)
            raise
        if stats is not None:
            stats.record(name, trio.current_time() - started, read=len(result.data),
                         written=len(data_out) if data_out is not None and result.status == _GOOD else 0,
                         ok=result.status in _COMPLETED and result.response == 0, target=session.target_name,
                         lun=lun)
        if result.response != 0:
            raise ScsiError(Status.TASK_ABORTED, None,
                            f"{name} (iSCSI response 0x{result.response:02x}, target failure)")
        if result.status in _COMPLETED:
            return result
        sense = parse_sense(result.sense)
        if is_unit_attention(result.status, sense) and attentions < UNIT_ATTENTION_RETRIES:
            # A UNIT ATTENTION reports an event (reset, parameters changed) and fails this
            # command only; the same command is valid again (SAM-5 §5.14).
            attentions += 1
            # The executor has told whoever follows the target (``net.api``).
            log.debug("LUN %d: %s reported unit attention %s; retrying", lun, name, sense)
            if again is not None:
                session = again()
            continue
        if result.status == Status.CHECK_CONDITION and sense is not None and sense.key == SenseKey.RECOVERED_ERROR:
            return result
        now = trio.current_time()
        first_refusal = now if first_refusal is None else first_refusal
        if _transient(result.status, sense) and now - first_refusal < DEFAULT_POLICY.busy_retry_time:
            log.debug("LUN %d: %s answered %s; retrying in %.3f s", lun, name,
                      status_text(result.status) if sense is None else sense, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
            if again is not None:
                session = again()
            continue
        raise ScsiError(result.status, sense, f"{name} on LUN {lun}")

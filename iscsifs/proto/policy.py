"""Every timeout, interval and retry count of the iSCSI layers, in one place: the keepalive,
commands and their retries, recovery and logins (each a mount option), and the bounds of the
rare exchanges that are not. It lives with the sans-I/O session core (``proto.session``), which
makes every decision from these numbers; ``net`` only sleeps until the times the core names."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """Timeouts and intervals in seconds, and the retry budget. The first six are mount options;
    their defaults are open-iscsi's (noop_out 5/5, replacement_timeout 120) and, for ``retries``,
    the Linux SCSI disk driver's (SD_MAX_RETRIES 5)."""

    nop_interval: float = 5.0
    nop_timeout: float = 5.0
    command_timeout: float = 30.0
    recovery_timeout: float = 120.0
    login_timeout: float = 15.0
    retries: int = 5  # a command is sent at most retries + 1 times
    max_backoff: float = 30.0  # the longest wait between logins a busy target refuses
    probe_interval: float = 1.0  # between connection attempts to a portal that is down
    max_time2wait: float = 60.0  # a target's Time2Wait is obeyed up to this (§6.3.5 caps it at 3600)
    rescan_timeout: float = 60.0  # for all the commands of one scan of a target's LUNs
    logout_timeout: float = 5.0  # for a Logout Response; then the connection is just closed
    error_logout_timeout: float = 2.0  # the same, on the way out of an error, which must not wait long
    renegotiation_timeout: float = 30.0  # each Text Request of a renegotiation the target asked for
    renegotiation_rounds: int = 4  # exchanges before a target that keeps asking is given up on
    busy_retry_time: float = 60.0  # of BUSY / NOT READY (becoming ready) / ABORTED COMMAND, then the error
    worker_restart_delay: float = 5.0  # between attempts to start a session worker again, at most
    worker_exit_timeout: float = 5.0  # a worker whose channel is closed has to exit, then it is killed

    @property
    def command_bound(self) -> float:
        """How long one command may take from its first send to its answer or its EIO, whatever
        happens: every send's deadline, and a recovery of the path in between."""
        return self.command_timeout * (self.retries + 1) + self.recovery_timeout


DEFAULT_POLICY = RecoveryPolicy()


class PathPolicy(enum.Enum):
    """Which of a target's healthy paths a command goes to (``net.multipath``)."""

    FAILOVER = "failover"  # the first in the configured order; the others are standby
    ROUND_ROBIN = "round-robin"  # each in turn

"""How long the network layer waits for what, in one place: the keepalive, commands, recovery and
logins (each a mount option), and the bounds of the rare exchanges that are not."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """Timeouts and intervals, in seconds. The first five are mount options; their defaults are
    open-iscsi's (noop_out 5/5, replacement_timeout 120)."""

    nop_interval: float = 5.0
    nop_timeout: float = 5.0
    command_timeout: float = 30.0
    recovery_timeout: float = 120.0
    login_timeout: float = 15.0
    max_backoff: float = 30.0  # the longest wait between logins a busy target refuses
    probe_interval: float = 1.0  # between connection attempts to a portal that is down
    rescan_timeout: float = 60.0  # for all the commands of one scan of a target's LUNs
    logout_timeout: float = 5.0  # for a Logout Response; then the connection is just closed
    error_logout_timeout: float = 2.0  # the same, on the way out of an error, which must not wait long


DEFAULT_POLICY = RecoveryPolicy()


class PathPolicy(enum.Enum):
    """Which of a target's healthy paths a command goes to (``net.multipath``)."""

    FAILOVER = "failover"  # the first in the configured order; the others are standby
    ROUND_ROBIN = "round-robin"  # each in turn

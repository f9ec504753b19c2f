"""How long the network layer waits for what, in one place: the keepalive, commands, recovery and
logins (each a mount option), and the bounds of the rare exchanges that are not."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """Timeouts, in seconds. The defaults are open-iscsi's (noop_out 5/5, replacement_timeout 120)."""

    nop_interval: float = 5.0
    nop_timeout: float = 5.0
    command_timeout: float = 30.0
    recovery_timeout: float = 120.0
    login_timeout: float = 15.0
    max_backoff: float = 30.0


class PathPolicy(enum.Enum):
    """Which of a target's healthy paths a command goes to (``net.multipath``)."""

    FAILOVER = "failover"  # the first in the configured order; the others are standby
    ROUND_ROBIN = "round-robin"  # each in turn

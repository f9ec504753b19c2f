"""The project's one error tree: everything a target, the network or a deadline can cause is an
``IscsiError``, and says whose fault it is (after h11's Local/RemoteProtocolError). Each carries
the ``errno`` a file user sees when it fails their I/O; ``iscsifs.mount.fs`` is the one place that
turns it into a FUSE error, and the command line maps the same tree to exit codes.

Nothing outside the tree may escape a layer: parse errors of SCSI data (``ScsiParseError``)
belong to it, and deadlines become ``TimedOut`` where they are set.
"""

from __future__ import annotations

import enum
import errno as _errno


class IscsiError(Exception):
    """Base class of every error iscsifs raises on purpose. ``errno`` is what a file user sees
    when it fails their I/O (``iscsifs.mount.fs`` maps it); a subclass or instance sets its own."""

    errno: int = _errno.EIO


class LocalProtocolError(IscsiError):
    """We were asked to do something the protocol does not allow."""


class RemoteProtocolError(IscsiError):
    """The target sent something the protocol does not allow; the connection is unusable."""


class DigestError(RemoteProtocolError):
    """A header or data digest did not match (RFC 7143 §7.8): drop the connection."""


class NegotiationError(IscsiError):
    """The target would not agree to a setting we require (e.g. a forced digest)."""


class ConnectionLost(IscsiError):
    """The TCP connection to the target closed or broke."""


class Delivery(enum.Enum):
    """What became of one attempt at a command that did not complete (``iscsifs.proto.session``).
    Only an attempt that may have reached the target uses the command's budget of retries."""

    NEVER_SENT = "never sent"  # free to send again (httpcore's ConnectionNotAvailable)
    CONNECTION_DIED = "sent, then its connection died"
    ABORTED = "aborted after its deadline"
    RESET = "ended by a LOGICAL UNIT RESET"
    EXPIRED = "its time ran out"


class Undelivered(ConnectionLost):
    """One attempt at a command ended without an answer; ``delivery`` says how. The layer above
    decides from it (``iscsifs.proto.session.Attempts``) whether to issue the command again."""

    def __init__(self, delivery: Delivery, reason: str) -> None:
        self.delivery = delivery
        super().__init__(reason)


class CommandFailed(IscsiError):
    """A command used up its retries or its time without an answer (EIO): what was tried is in
    the message."""


class TimedOut(IscsiError):
    """A deadline passed: the target or the network did not answer in time (a command, a
    rescan, an identity check, a discovery)."""


# RFC 7143 §11.13.5: Status-Class / Status-Detail of a Login Response.
LOGIN_STATUS_TEXT: dict[tuple[int, int], str] = {
    (0x01, 0x01): "target moved temporarily",
    (0x01, 0x02): "target moved permanently",
    (0x02, 0x00): "initiator error",
    (0x02, 0x01): "authentication failed",
    (0x02, 0x02): "authorization failed (initiator not allowed to log in)",
    (0x02, 0x03): "target not found",
    (0x02, 0x04): "target removed",
    (0x02, 0x05): "unsupported iSCSI version",
    (0x02, 0x06): "too many connections",
    (0x02, 0x07): "missing parameter",
    (0x02, 0x08): "cannot include connection in session",
    (0x02, 0x09): "session type not supported",
    (0x02, 0x0A): "session does not exist",
    (0x02, 0x0B): "invalid request during login",
    (0x03, 0x00): "target error",
    (0x03, 0x01): "service unavailable",
    (0x03, 0x02): "out of resources",
}


class LoginError(IscsiError):
    """The target refused the login with a Status-Class/Status-Detail (RFC 7143 §11.13.5)."""

    def __init__(self, status_class: int, status_detail: int, target: str = "", *,
                 chap_algorithm: int | None = None) -> None:
        self.status_class = status_class
        self.status_detail = status_detail
        self.target = target
        self.chap_algorithm = chap_algorithm  # the CHAP_A in use when the target refused us
        text = LOGIN_STATUS_TEXT.get((status_class, status_detail), "login rejected")
        if self.is_chap_refusal:
            text = "authentication failed: the target refused our CHAP response (wrong user or secret?)"
        where = f" for {target}" if target else ""
        super().__init__(f"login{where} failed: {text} (status 0x{status_class:02x}{status_detail:02x})")

    @property
    def is_chap_refusal(self) -> bool:
        """The target refused our CHAP response. tgt says 0x0200 (initiator error) when the
        response has the wrong length for its algorithm, 0x0201 when it is wrong."""
        return self.chap_algorithm is not None and self.status_class == 0x02 and self.status_detail in (0x00, 0x01)

    @property
    def is_authentication(self) -> bool:
        return self.is_chap_refusal or (self.status_class == 0x02 and self.status_detail in (0x01, 0x02))

    @property
    def is_not_found(self) -> bool:
        return self.status_class == 0x02 and self.status_detail in (0x03, 0x04)


class AuthenticationError(IscsiError):
    """CHAP could not be completed: missing credentials or a bad answer from the target."""


class LoginRedirect(IscsiError):
    """The target sent us elsewhere (Status-Class 1, RFC 7143 §11.13.5)."""

    def __init__(self, target_address: str, permanent: bool) -> None:
        self.target_address = target_address
        self.permanent = permanent
        super().__init__(f"target moved {'permanently' if permanent else 'temporarily'} to {target_address}")


# RFC 7143 §11.17.1: Reject reasons.
REJECT_REASON_TEXT: dict[int, str] = {
    0x02: "data (payload) digest error",
    0x03: "SNACK reject",
    0x04: "protocol error",
    0x05: "command not supported",
    0x06: "immediate command rejected: too many immediate commands",
    0x07: "task in progress",
    0x08: "invalid data ack",
    0x09: "invalid PDU field",
    0x0A: "long operation reject: out of resources",
    0x0C: "waiting for logout",
}


class RejectedError(IscsiError):
    """The target answered one of our PDUs with a Reject PDU."""

    def __init__(self, reason: int) -> None:
        self.reason = reason
        text = REJECT_REASON_TEXT.get(reason, "unknown reason")
        super().__init__(f"target rejected the PDU: {text} (0x{reason:02x})")

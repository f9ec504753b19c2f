"""Small trio helpers. Errors out of trio nurseries: a nursery wraps what its body raises in an
ExceptionGroup, and callers want the error itself (LoginError, ConnectError...): the one place
groups are unwrapped. Deadlines that fail as the project's ``TimedOut``, never as trio's
``TooSlowError`` (``fail_after``). And when a write may wait for other tasks' (``others_runnable``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

from iscsifs.proto.errors import TimedOut


def first_error(exc: BaseException) -> BaseException:
    """The error inside nested groups of one; of a larger group, its first."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@contextmanager
def single_error() -> Iterator[None]:
    """Re-raise a group of one (nested or not) as the error it holds; larger groups as they are."""
    try:
        yield
    except BaseExceptionGroup as group:
        exc: BaseException = group
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if exc is group:
            raise
        raise exc from group


@contextmanager
def fail_after(seconds: float, what: str) -> Iterator[None]:
    """``trio.fail_after``, failing with ``TimedOut("WHAT took longer than N s")``: trio's own
    error never leaves ``net`` (the caller still owns the timeout, as trio's design asks)."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise TimedOut(f"{what} took longer than {seconds:g} s") from None


def others_runnable() -> bool:
    """Other tasks run before this process next waits: a write can wait for theirs, so one
    system call carries them all (the peer then wakes once for the lot). With none, write now: at
    queue depth 1 a deferred write would only add a task switch to every round trip."""
    return trio.lowlevel.current_statistics().tasks_runnable > 0

"""Errors out of trio nurseries: a nursery wraps what its body raises in an ExceptionGroup, and
callers want the error itself (LoginError, ConnectError...). The one place groups are unwrapped."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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

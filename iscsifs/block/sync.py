"""A plain synchronous API over the async one (libiscsi has both).

    from iscsifs.block.sync import LunFile, discover
    print(discover("iscsi://127.0.0.1"))
    with LunFile("iscsi://127.0.0.1/iqn.2026-11.example:disk1/1") as lun:
        header = lun.read(0, 512)
        lun.write(4096, b"data")
        lun.flush()

Each object runs its own trio event loop in a background thread; calls block until done.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar, TypeVarTuple, Unpack

import trio

from iscsifs.block.client import (
    Client,
    ConnectOptions,
    DiscoveredTarget,
    LunInfo,
    NotFoundError,
)
from iscsifs.block.lun import Lun
from iscsifs.url import IscsiUrl, UrlError, parse_url

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")


class _LoopThread:
    """A trio loop in a daemon thread, with a nursery for session reader tasks."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="iscsifs-sync", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, afn: Callable[[Unpack[_Args]], Awaitable[_T]], *args: *_Args) -> _T:
        return trio.from_thread.run(afn, *args, trio_token=self.token)

    def stop(self) -> None:
        if self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
            self._thread.join(timeout=30)


def _client(url_text: str, initiator_name: str | None) -> tuple[IscsiUrl, Client]:
    url = parse_url(url_text)
    return url, Client.for_url(url, ConnectOptions(initiator_name=initiator_name))


def discover(url: str, *, initiator_name: str | None = None) -> list[DiscoveredTarget]:
    """SendTargets=All on a portal."""
    u, client = _client(url, initiator_name)
    return trio.run(client.discover, u)


def list_luns(url: str, *, initiator_name: str | None = None) -> list[LunInfo]:
    """Every LUN (with INQUIRY data and, for disks, capacity) of the target named in ``url``."""
    u, client = _client(url, initiator_name)
    if u.target is None:
        raise UrlError("list_luns needs a target URL (iscsi://host/iqn)")
    return trio.run(client.scan_target, u, u.target)


class LunFile:
    """One disk LUN, addressed in bytes, from a LUN URL (iscsi://host/iqn/lun)."""

    def __init__(self, url: str, *, initiator_name: str | None = None, read_only: bool = False) -> None:
        u, client = _client(url, initiator_name)
        if u.target is None or u.lun is None:
            raise UrlError("LunFile needs a LUN URL (iscsi://host/iqn/lun)")
        self._loop = _LoopThread()
        try:
            self._session, luns = self._loop.run(partial(client.open_target, read_only=read_only),
                                                 self._loop.nursery, u, u.target)
            match = [lun for info, lun in luns if info.lun == u.lun]
            if not match:
                raise NotFoundError(f"LUN {u.lun} of {u.target} does not exist or is not a disk")
            self._lun: Lun = match[0]
        except BaseException:
            self._loop.stop()
            raise
        self.closed = False

    @property
    def size(self) -> int:
        return self._lun.size

    @property
    def block_size(self) -> int:
        return self._lun.block_size

    def read(self, offset: int, size: int) -> bytes:
        return self._loop.run(self._lun.read, offset, size)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        if self._lun.read_only:
            raise PermissionError("LUN opened read-only")
        return self._loop.run(self._lun.write, offset, data)

    def flush(self) -> None:
        self._loop.run(self._lun.flush)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._lun.dirty:
                self.flush()
            self._loop.run(self._session.logout)
        finally:
            self._loop.stop()

    def __enter__(self) -> LunFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

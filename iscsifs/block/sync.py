"""A plain synchronous API over the async one (libiscsi has both).

    from iscsifs.block.sync import ChangerLun, LunFile, TapeLun, discover
    print(discover("iscsi://127.0.0.1"))
    with LunFile("iscsi://127.0.0.1/iqn.2026-11.example:disk1/1") as lun:
        header = lun.read(0, 512)
        lun.write(4096, b"data")
        lun.flush()
    with ChangerLun("iscsi://127.0.0.1/iqn.2026-11.example:vtl/3") as changer:
        changer.load(1, drive=0)  # mtx's numbering: slots from 1, drives from 0
    with TapeLun("iscsi://127.0.0.1/iqn.2026-11.example:vtl/1") as tape:
        tape.write_block(b"one block")  # closing writes the filemark, as st does
    with LunFile("iscsi://127.0.0.1/iqn.2026-11.example:disk1/1") as lun:  # any SCSI command, as sg_raw
        result = lun.raw(bytes.fromhex("28000000000000000100"), expected_in=512)  # READ(10) of LBA 0
        print(result.status, bytes(result.data[:16]))

Each object runs its own trio event loop in a background thread; calls block until done.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Self, TypeVar, TypeVarTuple, Unpack

import trio

from iscsifs.block.changer import Changer
from iscsifs.block.client import (
    Client,
    ConnectOptions,
    DiscoveredTarget,
    LunInfo,
    NotFoundError,
)
from iscsifs.block.identity import device_identity, inquiry
from iscsifs.block.lun import Lun
from iscsifs.block.tape import TapeDrive, TapeStatus
from iscsifs.net.multipath import Multipath
from iscsifs.proto.connection import ScsiResult
from iscsifs.scsi.response import DeviceType
from iscsifs.scsi.smc import LibraryStatus
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


def raw(loop: _LoopThread, session: Multipath, lun: int, cdb: bytes, data_out: bytes | None,
        expected_in: int) -> ScsiResult:
    """One command, its answer as it came: a CHECK CONDITION is a result (its ``sense``), not an
    error; only a command that could not be delivered raises (iscsifs.proto.errors)."""
    return loop.run(partial(session.execute, lun, cdb, data_out=data_out or None, expected_in=expected_in))


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

    def raw(self, cdb: bytes, *, data_out: bytes | None = None, expected_in: int = 0) -> ScsiResult:
        """Any SCSI command on this LUN's session, as sg_raw sends it: the status, the sense and the
        data, whatever the status (see ``raw``). Bypasses what ``read`` caches and ``write`` orders."""
        return raw(self._loop, self._session, self._lun.lun, cdb, data_out, expected_in)

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


class _Device:
    """A LUN that is not a disk (``device_type``), logged in to from a LUN URL; after any later
    login (another path, a reconnect) it must still be this device."""

    device_type: DeviceType
    what: str

    def __init__(self, url: str, *, initiator_name: str | None = None) -> None:
        u, client = _client(url, initiator_name)
        if u.target is None or u.lun is None:
            raise UrlError(f"{type(self).__name__} needs a LUN URL (iscsi://host/iqn/lun)")
        self.lun = u.lun
        self._loop = _LoopThread()
        try:
            self._session: Multipath = self._loop.run(client.login, self._loop.nursery, u, u.target)
            try:
                info = self._loop.run(inquiry, self._session, u.lun)
                if not info.connected or info.device_type != self.device_type:
                    raise NotFoundError(f"LUN {u.lun} of {u.target} does not exist or is not {self.what}")
                identity = self._loop.run(device_identity, self._session, u.lun)
            except BaseException:
                self._loop.run(self._session.logout)
                raise
            self._session.expect_identity(u.lun, identity.serial, identity.wwn)
            self._session.start_paths()
        except BaseException:
            self._loop.stop()
            raise
        self.closed = False

    def _before_logout(self) -> None:
        """What closing does before it logs out."""

    def raw(self, cdb: bytes, *, data_out: bytes | None = None, expected_in: int = 0) -> ScsiResult:
        """Any SCSI command on this LUN's session, as sg_raw sends it (see ``raw``). A tape drive's
        position is tracked by ``TapeLun``: a raw command that moves the tape makes it wrong."""
        return raw(self._loop, self._session, self.lun, cdb, data_out, expected_in)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._before_logout()
        finally:
            try:
                self._loop.run(self._session.logout)
            finally:
                self._loop.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChangerLun(_Device):
    """A medium changer LUN with mtx's verbs (``iscsifs.block.changer``): drives from 0, slots
    from 1."""

    device_type = DeviceType.MEDIUM_CHANGER
    what = "a medium changer"

    def __init__(self, url: str, *, initiator_name: str | None = None) -> None:
        super().__init__(url, initiator_name=initiator_name)
        self.changer = Changer(self._session, self.lun)

    def status(self) -> LibraryStatus:
        return self._loop.run(self.changer.status)

    def drive_serials(self) -> dict[int, str]:
        return self._loop.run(self.changer.drive_serials)

    def load(self, slot: int, drive: int = 0) -> None:
        self._loop.run(self.changer.load, slot, drive)

    def unload(self, slot: int | None = None, drive: int = 0) -> None:
        self._loop.run(self.changer.unload, slot, drive)

    def transfer(self, slot_from: int, slot_to: int) -> None:
        self._loop.run(self.changer.transfer, slot_from, slot_to)

    def exchange(self, slot_a: int, slot_b: int) -> None:
        self._loop.run(self.changer.exchange, slot_a, slot_b)

    def inventory(self) -> None:
        self._loop.run(self.changer.inventory)

    def first(self, drive: int = 0) -> None:
        self._loop.run(self.changer.first, drive)

    def last(self, drive: int = 0) -> None:
        self._loop.run(self.changer.last, drive)

    def next(self, drive: int = 0) -> None:
        self._loop.run(self.changer.next, drive)


class TapeLun(_Device):
    """A tape drive LUN as Linux's /dev/nst0 behaves (``iscsifs.block.tape``): one block per
    read or write, non-rewinding; closing after a write writes a filemark."""

    device_type = DeviceType.SEQUENTIAL_ACCESS
    what = "a tape drive"

    def __init__(self, url: str, *, initiator_name: str | None = None) -> None:
        super().__init__(url, initiator_name=initiator_name)
        self.drive = TapeDrive(self._session, self.lun)

    def read_block(self, max_length: int) -> bytes:
        return self._loop.run(self.drive.read_block, max_length)

    def write_block(self, data: bytes | bytearray | memoryview) -> bool:
        """True when the block crossed the early warning (end of medium is near)."""
        return self._loop.run(self.drive.write_block, data)

    def write_filemarks(self, count: int = 1) -> None:
        self._loop.run(self.drive.write_filemarks, count)

    def rewind(self) -> None:
        self._loop.run(self.drive.rewind)

    def fsf(self, count: int = 1) -> None:
        self._loop.run(self.drive.fsf, count)

    def bsf(self, count: int = 1) -> None:
        self._loop.run(self.drive.bsf, count)

    def fsr(self, count: int = 1) -> None:
        self._loop.run(self.drive.fsr, count)

    def bsr(self, count: int = 1) -> None:
        self._loop.run(self.drive.bsr, count)

    def eod(self) -> None:
        self._loop.run(self.drive.eod)

    def tell(self) -> int:
        return self.drive.tell()

    def offline(self) -> None:
        self._loop.run(self.drive.offline)

    def load(self) -> None:
        self._loop.run(self.drive.load)

    def status(self) -> TapeStatus:
        return self._loop.run(self.drive.status)

    def _before_logout(self) -> None:
        self._loop.run(self.drive.close_after_write)

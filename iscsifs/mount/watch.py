"""Keeping the tree true to the target while mounted (SAM-5 §5.14 unit attentions).

A target reports changes as UNIT ATTENTION on the next command to each LUN (or as an iSCSI
SCSI Async Event): 2A/09 CAPACITY DATA HAS CHANGED makes us read the capacity again, so `stat`
shows the new size; 3F/0E REPORTED LUNS DATA HAS CHANGED makes us rescan the target, so the
directory gains and loses files. Both run in the background: the command that saw the unit
attention is simply retried.

An idle mount sends no command that could receive those unit attentions, so each target is also
polled with REPORT LUNS every ``poll_interval`` (the keepalive's period): a changed list (or the
unit attention that the poll itself receives) rescans it. A LUN added then shows in the tree
within two periods, with no I/O from anyone; one removed goes within about two and the rescans.

A LUN that a rescan does not find is removed only once it has been missing for ``missing_grace``
(a period): tgt, restarted, takes logins as soon as its target exists and adds the LUNs after, so
a rescan in between would otherwise take the LUN's file, and its open handles, away for good.
A LUN whose serial number or WWN changed is another device: its file goes at once, and the new
device gets a file of its own; so does one that the session refuses as another device since a
relogin. A file that goes takes with it what the session expected of its LUN (``forget_lun``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pyfuse3
import trio

from iscsifs.block.client import LunInfo, LunScan, open_lun, report_luns, scan
from iscsifs.block.identity import read_capacity
from iscsifs.block.lun import DetectZeroes, Lun
from iscsifs.block.reservation import Reservations
from iscsifs.block.stats import Stats
from iscsifs.mount.tree import ROOT_INODE, Tree
from iscsifs.net.api import MountedTarget, Target
from iscsifs.net.nursery import fail_after
from iscsifs.proto.errors import IscsiError
from iscsifs.proto.policy import DEFAULT_POLICY
from iscsifs.scsi.persistent import PrType
from iscsifs.scsi.response import Capacity
from iscsifs.scsi.sense import Sense

log = logging.getLogger("iscsifs")

CAPACITY_DATA_HAS_CHANGED = (0x2A, 0x09)
REPORTED_LUNS_DATA_HAS_CHANGED = (0x3F, 0x0E)


class TargetWatch:
    """One target's LUN files under ``directory`` (or the one LUN mounted at the root)."""

    def __init__(self, nursery: trio.Nursery, tree: Tree, target: MountedTarget, directory: int, *, read_only: bool,
                 only_lun: int | None = None, detect_zeroes: DetectZeroes = DetectZeroes.OFF,
                 rescan_timeout: float = DEFAULT_POLICY.rescan_timeout, reservation_key: int | None = None,
                 reservation: PrType | None = None, stats: Stats | None = None,
                 missing_grace: float = DEFAULT_POLICY.nop_interval) -> None:
        self.rescan_timeout = rescan_timeout
        self.missing_grace = missing_grace
        self._missing: dict[int, float] = {}  # a shown LUN a rescan did not find -> when first missed
        self._confirming = False  # a rescan is due when the first of those has been missing long enough
        self.stats = stats  # the mount's: the polls, rescans and the LUNs that appear count there
        self.reservation_key = reservation_key  # a LUN that appears is registered too
        self.reservation = reservation
        self.detect_zeroes = detect_zeroes
        self.nursery = nursery
        self.tree = tree
        self.target = target
        self.directory = directory
        self.read_only = read_only
        self.only_lun = only_lun  # a LUN URL: follow its capacity, never add or remove files
        self._rescanning = False
        self._again = False
        self._incomplete = False  # the last rescan failed or skipped a LUN: the next poll tries again
        target.on_unit_attention = self.on_unit_attention
        target.on_fenced = self.on_fenced

    def poll(self, interval: float, logged_in: Callable[[], Target | None] | None = None,
             known: LunScan | None = None) -> None:
        """Poll the target's LUN list every ``interval`` seconds while its session lives, on the
        session ``logged_in()`` gives: a pooled session that is logged out for idleness is not
        logged in again for a poll (it is rescanned when it is next logged in). ``known``: the
        LUNs the scan saw, so that a change before the first poll counts too."""
        previous = None
        if known is not None:
            previous = {info.lun for info in known.luns} | known.skipped
            self._incomplete = bool(known.skipped)  # a LUN the scan skipped is tried again
        self.nursery.start_soon(self._poll, interval, logged_in or (lambda: self.target), previous)

    async def _poll(self, interval: float, logged_in: Callable[[], Target | None],
                    previous: set[int] | None) -> None:
        reconnects = self.target.reconnects
        while self.target.alive:
            await trio.sleep(interval)
            session = logged_in()
            if session is None:
                previous = None
                reconnects = self.target.reconnects  # a session opened again counts from 0 (and is rescanned)
                continue
            # Logged in again since the last poll: the unit attentions of what changed meanwhile
            # went to the old nexus, and the login may have fenced a LUN as another device.
            relogged_in, reconnects = self.target.reconnects != reconnects, self.target.reconnects
            if relogged_in:
                log.info("target %s was logged in again: rescanning it", self.target.target_name)
                if self.only_lun is None:
                    self.rescan_soon()
                else:
                    self.nursery.start_soon(self._refresh_capacity, self.only_lun)
            try:
                with fail_after(self.rescan_timeout, "REPORT LUNS"):
                    reported = set(await report_luns(session, self.stats))
            except IscsiError as exc:
                # The target's answer failed this poll (a malformed one included): the tree stays.
                log.debug("polling the LUNs of %s: %s", self.target.target_name, exc)
                continue
            except Exception:
                log.exception("polling the LUNs of %s failed", self.target.target_name)
                continue
            if self.only_lun is None and not relogged_in:  # (then rescanning already)
                if previous is not None and reported != previous:
                    log.info("target %s reports other LUNs than before: rescanning", self.target.target_name)
                    self.rescan_soon()
                elif self._incomplete:
                    self.rescan_soon()
            previous = reported

    def on_unit_attention(self, lun: int, sense: Sense) -> None:
        if sense.asc_ascq == CAPACITY_DATA_HAS_CHANGED:
            log.info("target %s reports that LUN %d changed capacity", self.target.target_name, lun)
            self.nursery.start_soon(self._refresh_capacity, lun)
        elif sense.asc_ascq == REPORTED_LUNS_DATA_HAS_CHANGED and self.only_lun is None:
            log.info("target %s reports that its LUNs changed: rescanning", self.target.target_name)
            self.rescan_soon()

    def on_fenced(self, lun: int) -> None:
        """Another host removed our registration on ``lun``: its writes fail at once from now on."""
        inode = self._luns().get(lun)
        node = self.tree.nodes.get(inode) if inode is not None else None
        if node is not None and node.lun is not None and not node.lun.pr.fenced:
            node.lun.pr.fenced = True
            log.error("LUN %d of %s: another host removed this mount's reservation key (fenced): its writes fail "
                      "with EBUSY until it registers again (iscsifs pr --register KEY)", lun, self.target.target_name)

    def _luns(self) -> dict[int, int]:
        return self.tree.lun_inodes(self.directory)

    # -- capacity ----------------------------------------------------------------------------------

    async def _refresh_capacity(self, lun: int) -> None:
        inode = self._luns().get(lun)
        if inode is None:
            return
        try:
            with fail_after(self.rescan_timeout, "READ CAPACITY"):
                capacity = await read_capacity(self.target, lun, self.stats)
        except IscsiError as exc:
            log.warning("reading the new capacity of LUN %d of %s failed: %s", lun, self.target.target_name, exc)
            return
        except Exception:
            log.exception("reading the new capacity of LUN %d of %s failed", lun, self.target.target_name)
            return
        node = self.tree.nodes.get(inode)
        if node is not None and node.lun is not None:
            await self._set_capacity(inode, node.lun, capacity)

    async def _set_capacity(self, inode: int, lun: Lun, capacity: Capacity) -> None:
        if capacity == lun.capacity:
            return
        log.info("LUN %d of %s is now %d bytes (was %d)", lun.lun, self.target.target_name, capacity.size, lun.size)
        lun.set_capacity(capacity)
        # Its cached pages were of the old device. (Under the writeback cache the kernel keeps the
        # old size: it takes none from getattr, and nothing else can tell it.)
        await _invalidate_inode(inode, attr_only=False)

    # -- LUNs added and removed ----------------------------------------------------------------------

    def rescan_soon(self) -> None:
        """Coalesce: one rescan at a time, and one more if asked again while it ran."""
        if self._rescanning:
            self._again = True
            return
        self._rescanning = True
        self.nursery.start_soon(self._rescan_loop)

    async def _rescan_loop(self) -> None:
        try:
            while True:
                self._again = False
                self._incomplete = True  # until a rescan has seen every LUN it was told of
                try:
                    with fail_after(self.rescan_timeout, "the rescan"):
                        await self.rescan()
                except IscsiError as exc:
                    # The last good view stays: no file goes because an answer was garbled.
                    log.warning("rescanning %s failed: %s; keeping the LUNs shown", self.target.target_name, exc)
                except Exception:
                    log.exception("rescanning %s failed; keeping the LUNs shown", self.target.target_name)
                if not self._again:
                    return
        finally:
            self._rescanning = False

    async def rescan(self) -> None:
        result = await scan(self.target, self.stats)
        self._incomplete = bool(result.skipped)
        found = {info.lun: info for info in result.luns if info.is_disk}
        shown = self._luns()
        for number, inode in list(shown.items()):
            node = self.tree.nodes[inode]
            info = found.get(number)
            if number in result.changed and self.only_lun is None and inode != ROOT_INODE:
                # The multipath found another device under this number at a relogin and refuses
                # its I/O: the file goes (which lifts that refusal), and the next pass shows the
                # new device as it would any LUN that appeared.
                self._missing.pop(number, None)
                log.info("LUN %d of %s has been another device since a relogin: its file goes, the new "
                         "device's is shown", number, self.target.target_name)
                self._remove(inode)
                self._again = True
                continue
            if info is None and number in result.skipped:
                self._missing.pop(number, None)  # reported, so not missing
                continue  # reported, but its answers were unusable: it stays as it was
            if info is None:
                if inode == ROOT_INODE:
                    continue  # the mounted LUN itself: its I/O will fail, the mount stays
                if not self._missing_long_enough(number):
                    continue
                log.info("LUN %d of %s is gone", number, self.target.target_name)
                self._remove(inode)
            elif self.only_lun is None and inode != ROOT_INODE and _changed(node.info, info):
                # Deleted and another device added under its number between two rescans (or while
                # it was missing): its handles must not reach the new device. The new file follows.
                self._missing.pop(number, None)
                log.info("LUN %d of %s is another device now (serial %r -> %r): its file goes, the new "
                         "device's is shown", number, self.target.target_name, _serial_wwn(node.info)[0],
                         info.identity.serial)
                self._remove(inode)
                del shown[number]
            else:
                if self._missing.pop(number, None) is not None:
                    log.info("LUN %d of %s is reported again", number, self.target.target_name)
                if node.lun is not None and info.capacity is not None:
                    await self._set_capacity(inode, node.lun, info.capacity)
        if self.only_lun is not None:
            return
        for number, info in sorted(found.items()):
            if number not in shown:
                lun = open_lun(self.target, info, self.read_only, self.detect_zeroes, self.stats)
                if self.reservation_key is not None:
                    try:
                        await Reservations(self.target, number, lun.pr).join(self.reservation_key, self.reservation)
                    except IscsiError as exc:
                        # Not shown unregistered: its writes would not take part in the reservations.
                        log.error("LUN %d of %s appeared, but registering its key failed: %s; not shown", number,
                                  self.target.target_name, exc)
                        self._incomplete = True  # the next poll tries again
                        continue
                self.tree.add_lun(self.directory, str(number), info, lun, self.target)
                log.info("LUN %d of %s appeared (%d bytes)", number, self.target.target_name, lun.size)
        await _invalidate_inode(self.directory)
        if self.tree.by_id is not None:
            await _invalidate_inode(self.tree.by_id)

    def _remove(self, inode: int) -> None:
        """A LUN file goes (its open handles get ENXIO, and so do its commands still waiting in
        the session), and the kernel forgets its entries."""
        node = self.tree.nodes[inode]
        if node.lun is not None:
            node.lun.removed()  # first: nothing of its I/O goes out once the session forgets it
            self.target.forget_lun(node.lun.lun)
        for parent, name in self.tree.remove(inode):
            _invalidate_entry(parent, name)

    def _missing_long_enough(self, lun: int) -> bool:
        """True once ``lun`` has been missing from rescans for ``missing_grace``; until then a
        rescan is due when it will have been."""
        now = trio.current_time()
        since = self._missing.setdefault(lun, now)
        if now - since >= self.missing_grace:
            del self._missing[lun]
            return True
        if since == now:
            log.info("LUN %d of %s is no longer reported: its file is removed if it is still missing in %g s",
                     lun, self.target.target_name, self.missing_grace)
        if not self._confirming:
            self._confirming = True
            self.nursery.start_soon(self._rescan_after, since + self.missing_grace - now)
        return False

    async def _rescan_after(self, delay: float) -> None:
        try:
            await trio.sleep(delay)
        finally:
            self._confirming = False
        self.rescan_soon()


def _serial_wwn(info: LunInfo | None) -> tuple[str, str]:
    return (info.identity.serial, info.identity.wwn) if info is not None else ("", "")


def _changed(shown: LunInfo | None, found: LunInfo) -> bool:
    """Another device, as far as both say what they are: a LUN that gives neither a serial
    number nor a WWN cannot be told apart (as ``expect_identity`` has it)."""
    before, now = _serial_wwn(shown), _serial_wwn(found)
    return any(before) and any(now) and before != now


def _invalidate_entry(parent: int, name: bytes) -> None:
    try:
        pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)
    except Exception as exc:  # noqa: BLE001 - not mounted (tests) or the kernel forgot it: both harmless
        log.debug("invalidating %r: %s", name, exc)


async def _invalidate_inode(inode: int, attr_only: bool = True) -> None:
    # May block in the kernel while it writes back pages: never on the trio thread.
    try:
        await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, attr_only)
    except Exception as exc:  # noqa: BLE001 - not mounted (tests) or the kernel forgot it: both harmless
        log.debug("invalidating inode %d: %s", inode, exc)

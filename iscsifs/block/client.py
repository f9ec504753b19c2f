"""The async client API: discover a portal, log in to targets, find their disk LUNs.

    async with trio.open_nursery() as nursery:
        client = Client(ClientConfig(initiator_name=...))
        targets = await client.discover(url)
        session, luns = await client.open_target(nursery, url, targets[0].name)
        for info, lun in luns:
            ...
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import trio

from iscsifs.block.command import command
from iscsifs.block.identity import Identity, device_identity, identify, identity_of, inquiry, read_capacity
from iscsifs.block.lun import DetectZeroes, Lun
from iscsifs.block.reservation import LunPr, PrStatus, PrUnsupported, Reservations
from iscsifs.block.stats import Stats
from iscsifs.net.api import Executor, Target
from iscsifs.net.connection import Connection
from iscsifs.net.dial import Connect, tcp_connect
from iscsifs.net.multipath import LunChanged, Multipath
from iscsifs.net.nursery import fail_after, single_error
from iscsifs.net.remote import RemoteMultipath
from iscsifs.net.workers import Workers
from iscsifs.proto.address import Portal, parse_target_address
from iscsifs.proto.chap import ChapCredentials
from iscsifs.proto.errors import IscsiError, RemoteProtocolError
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import PathPolicy, RecoveryPolicy
from iscsifs.proto.text import Offer
from iscsifs.scsi import cdb
from iscsifs.scsi.response import (
    Capacity,
    DeviceType,
    ScsiParseError,
    StandardInquiry,
    parse_report_luns,
)
from iscsifs.scsi.sense import ScsiError
from iscsifs.url import IscsiUrl, chap_credentials

log = logging.getLogger("iscsifs.block.client")

INITIATOR_NAME_FILE = "/etc/iscsi/initiatorname.iscsi"


class NotFoundError(IscsiError):
    """The named target or LUN does not exist on the portal."""


def default_initiator_name() -> str:
    """open-iscsi's name if this machine has one, else a stable name derived from the machine."""
    try:
        with open(INITIATOR_NAME_FILE, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"^\s*InitiatorName\s*=\s*(\S+)", line)
                if m:
                    return m.group(1)
    except OSError:
        pass
    try:
        with open("/etc/machine-id", encoding="ascii") as f:
            seed = f.read().strip()
    except OSError:
        seed = socket.gethostname()
    return "iqn.2026-11.org.iscsifs:" + hashlib.sha256(seed.encode()).hexdigest()[:12]


DIGEST_OFFERS: dict[str, tuple[str, ...]] = {
    "none": ("None",),
    "crc32c": ("CRC32C",),
    "crc32c-none": ("CRC32C", "None"),
    "none-crc32c": ("None", "CRC32C"),
}


@dataclass(frozen=True, slots=True)
class ClientConfig:
    initiator_name: str = field(default_factory=default_initiator_name)
    credentials: ChapCredentials | None = None
    offer: Offer = Offer()
    chap_algorithms: tuple[int, ...] | None = None  # None: DEFAULT_ALGORITHMS with the tgt fallback
    recovery: RecoveryPolicy = RecoveryPolicy()
    portals: tuple[Portal, ...] = ()  # more paths to every target (-o portal=)
    path_policy: PathPolicy = PathPolicy.FAILOVER
    connect: Connect = tcp_connect  # how a TCP connection to a portal is made (tests: to a fake target)


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """What the command line (-o) adds to a URL. Each wins over the URL's own setting."""

    initiator_name: str | None = None
    credentials_file: str | None = None
    chap_algorithms: tuple[int, ...] | None = None
    header_digest: str | None = None  # a key of DIGEST_OFFERS
    data_digest: str | None = None
    recovery: RecoveryPolicy = RecoveryPolicy()
    portals: tuple[Portal, ...] = ()
    path_policy: PathPolicy = PathPolicy.FAILOVER


@dataclass(frozen=True, slots=True)
class DiscoveredTarget:
    name: str
    addresses: tuple[tuple[Portal, int], ...]  # (portal, target portal group tag)


@dataclass(frozen=True, slots=True)
class LunInfo:
    target: str
    lun: int
    inquiry: StandardInquiry
    capacity: Capacity | None  # None for LUNs that are not disks
    identity: Identity = Identity()
    portal: str = ""  # the active path's, when scanned
    reservations: PrStatus | None = None  # persistent reservations, where asked (ls) and the LUN has them

    @property
    def is_disk(self) -> bool:
        return self.capacity is not None


def parse_send_targets(pairs: list[tuple[str, str]], default_port: int) -> list[DiscoveredTarget]:
    """SendTargets answer (RFC 7143 §13.3, Appendix C): TargetName followed by its TargetAddresses."""
    targets: list[DiscoveredTarget] = []
    name: str | None = None
    addresses: list[tuple[Portal, int]] = []
    for key, value in pairs:
        if key == "TargetName":
            if name is not None:
                targets.append(DiscoveredTarget(name, tuple(addresses)))
            name, addresses = value, []
        elif key == "TargetAddress":
            if name is None:
                raise RemoteProtocolError("TargetAddress before any TargetName in SendTargets answer")
            addresses.append(parse_target_address(value, default_port))
    if name is not None:
        targets.append(DiscoveredTarget(name, tuple(addresses)))
    return targets


class Client:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._addresses: dict[str, list[Portal]] = {}  # TargetAddresses from the last discovery

    @classmethod
    def for_url(cls, url: IscsiUrl, options: ConnectOptions = ConnectOptions(),
                environ: Mapping[str, str] | None = None) -> Client:
        """A client for ``url``: CHAP credentials from the URL, the credentials file or the
        environment (see ``iscsifs.url.chap_credentials``), digests from the options or the URL."""
        credentials = chap_credentials(url, options.credentials_file, environ)
        offer = Offer()
        header = options.header_digest or url.header_digest
        data = options.data_digest or url.data_digest
        if header:
            offer = replace(offer, header_digest=DIGEST_OFFERS[header])
        if data:
            offer = replace(offer, data_digest=DIGEST_OFFERS[data])
        return cls(ClientConfig(initiator_name=options.initiator_name or default_initiator_name(),
                                credentials=credentials, offer=offer, chap_algorithms=options.chap_algorithms,
                                recovery=options.recovery,
                                portals=options.portals, path_policy=options.path_policy))

    def _login_config(self, target: str | None) -> LoginConfig:
        config = LoginConfig(initiator_name=self.config.initiator_name, target_name=target, offer=self.config.offer,
                             credentials=self.config.credentials)
        algs = self.config.chap_algorithms
        # Pinned algorithms (chap_algs=) are offered as they are: no fallback for tgt.
        return replace(config, chap_algorithms=algs, chap_fallback=False) if algs else config

    async def discover(self, url: IscsiUrl) -> list[DiscoveredTarget]:
        """A Discovery session with SendTargets=All, then logout."""
        with single_error():
            async with trio.open_nursery() as nursery:
                login_timeout = self.config.recovery.login_timeout
                connection = await Connection.open_within(nursery, url.portal, self._login_config(None),
                                                          self.config.connect, login_timeout)
                try:
                    with fail_after(login_timeout, f"SendTargets on portal {url.portal}"):
                        pairs = await connection.text_request([("SendTargets", "All")])
                finally:
                    with trio.move_on_after(self.config.recovery.error_logout_timeout):
                        await connection.logout()
                nursery.cancel_scope.cancel()
        targets = parse_send_targets(pairs, url.port)
        self._addresses.update((t.name, [portal for portal, _tpgt in t.addresses]) for t in targets)
        return targets

    def portals(self, url: IscsiUrl, target: str) -> list[Portal]:
        """Every portal ``target`` is known at, in order of preference: the one the user named
        (known to be reachable from here), those added with ``-o portal=``, then its
        TargetAddresses from discovery (which may be on other networks: those just stay down)."""
        return list(dict.fromkeys([url.portal, *self.config.portals, *self._addresses.get(target, ())]))

    async def login(self, nursery: trio.Nursery, url: IscsiUrl, target: str,
                    identities: dict[int, tuple[str, str]] | None = None) -> Multipath:
        """A session over every portal of the target, reconnecting by itself (``iscsifs.net``).
        Without ``identities`` the paths beyond the first wait for ``start_paths``."""
        return await Multipath.open(nursery, self.portals(url, target), self._login_config(target),
                                    self.config.recovery, path_policy=self.config.path_policy,
                                    connect=self.config.connect, identify=identity_of, identities=identities)

    async def login_remote(self, workers: Workers, url: IscsiUrl, target: str,
                           identities: dict[int, tuple[str, str]] | None = None) -> RemoteMultipath:
        """``login``, in each session worker (``net.remote``). The workers make their own TCP
        connections: a test's ``connect`` stays in this process, so they need a real portal."""
        return await workers.open(self.portals(url, target), self._login_config(target), self.config.recovery,
                                  path_policy=self.config.path_policy, identify=identity_of, identities=identities)

    async def open_target(self, nursery: trio.Nursery, url: IscsiUrl, target: str, *, read_only: bool = False,
                          stats: Stats | None = None) -> tuple[Multipath, list[tuple[LunInfo, Lun]]]:
        """Log in, find the disk LUNs, register their identity, then bring up the other paths
        (which are checked against it). ``stats``: where the LUNs' commands are counted, if anywhere."""
        session = await self.login(nursery, url, target)
        try:
            luns = await open_luns(session, read_only, stats)
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(self.config.recovery.error_logout_timeout):
                await session.logout()
            raise
        session.start_paths()
        return session, luns

    async def scan_target(self, url: IscsiUrl, target: str, *, reservations: bool = False,
                          key: int | None = None) -> list[LunInfo]:
        """Log in, list every LUN of ``target``, log out. ``reservations``: with each disk's
        persistent reservations (``key``: whether it is registered), read only."""
        with single_error():
            async with trio.open_nursery() as nursery:
                session = await self.login(nursery, url, target)
                try:
                    with fail_after(self.config.recovery.rescan_timeout, f"scanning the LUNs of {target}"):
                        infos = await scan_luns(session)
                        if reservations:
                            infos = [replace(i, reservations=await _reservations(session, i.lun, key))
                                     if i.is_disk else i for i in infos]
                        return infos
                finally:
                    with trio.move_on_after(self.config.recovery.error_logout_timeout):
                        await session.logout()
                    nursery.cancel_scope.cancel()


async def _reservations(session: Target, lun: int, key: int | None) -> PrStatus | None:
    try:
        return await Reservations(session, lun, LunPr(key=key)).status()
    except PrUnsupported:
        return None


async def report_luns(session: Executor, stats: Stats | None = None) -> list[int]:
    """REPORT LUNS (SPC-4 §6.33) through LUN 0, asking again if the list did not fit."""
    alloc = 4096
    while True:
        result = await command(session, 0, cdb.report_luns(alloc), name="REPORT LUNS", expected_in=alloc,
                               stats=stats)
        luns, list_length = parse_report_luns(result.data)
        if list_length + 8 <= alloc or alloc >= 1 << 20:
            return sorted(set(luns))
        alloc = min(list_length + 8, 1 << 20)


@dataclass(frozen=True, slots=True)
class LunScan:
    """What a scan of a target found: every LUN that answered (disks and others), and the LUNs it
    reported whose answers failed or could not be decoded (a rescan keeps showing those); of
    those, the ones the multipath refuses as another device since a relogin (``changed``)."""

    luns: list[LunInfo]
    skipped: frozenset[int] = frozenset()
    changed: frozenset[int] = frozenset()


async def scan(session: Target, stats: Stats | None = None) -> LunScan:
    """Every LUN of the target with its INQUIRY data, and capacity and identity for disks. A LUN
    whose answers fail or are malformed, or that is fenced as another device, is skipped with a
    log line (and the fenced ones said so); the others are still shown.
    Errors of the session itself (lost, timed out) end the scan."""
    infos: list[LunInfo] = []
    skipped: set[int] = set()
    changed: set[int] = set()
    for lun in await report_luns(session, stats):
        try:
            info = await _scan_lun(session, lun, stats)
        except (ScsiError, ScsiParseError, LunChanged) as exc:
            # LunChanged: the multipath refuses every command to a LUN that came back from a
            # relogin as another device (until its file goes: ``forget_lun``); the rest of the
            # target is still scanned.
            log.warning("LUN %d of %s skipped: %s", lun, session.target_name, exc)
            skipped.add(lun)
            if isinstance(exc, LunChanged):
                changed.add(lun)
            continue
        if info is not None:
            infos.append(info)
    return LunScan(infos, frozenset(skipped), frozenset(changed))


# Not disks, but named by their serial elsewhere: a changer lists its drives by it.
_IDENTIFIED = frozenset({DeviceType.SEQUENTIAL_ACCESS, DeviceType.MEDIUM_CHANGER})


async def _scan_lun(session: Target, lun: int, stats: Stats | None) -> LunInfo | None:
    inq = await inquiry(session, lun, stats)
    if not inq.connected:
        return None
    capacity = None
    identity = Identity()
    if inq.is_disk:
        # TEST UNIT READY first: it takes the UNIT ATTENTION of a fresh login and tells us the
        # unit can do I/O before we show it as a file.
        await command(session, lun, cdb.test_unit_ready(), name="TEST UNIT READY", stats=stats)
        capacity = await read_capacity(session, lun, stats)
        identity = await identify(session, lun, stats)
    elif inq.device_type in _IDENTIFIED:
        identity = await device_identity(session, lun, stats)
    return LunInfo(session.target_name, lun, inq, capacity, identity, str(session.portal))


async def scan_luns(session: Target, stats: Stats | None = None) -> list[LunInfo]:
    """``scan``'s LUNs."""
    return (await scan(session, stats)).luns


def open_lun(session: Target, info: LunInfo, read_only: bool = False,
             detect_zeroes: DetectZeroes = DetectZeroes.OFF, stats: Stats | None = None) -> Lun:
    assert info.capacity is not None
    # After any later login (a reconnect, another path), the LUN must still be this device.
    session.expect_identity(info.lun, info.identity.serial, info.identity.wwn)
    return Lun(session, info.lun, info.capacity, read_only=read_only or info.identity.write_protected,
               limits=info.identity.limits,
               provisioning=info.identity.provisioning, detect_zeroes=detect_zeroes, stats=stats)


async def open_luns(session: Target, read_only: bool = False, stats: Stats | None = None) -> list[tuple[LunInfo, Lun]]:
    return [(info, open_lun(session, info, read_only, stats=stats)) for info in await scan_luns(session, stats)
            if info.is_disk]

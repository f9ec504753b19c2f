"""The FUSE filesystem: one directory per target, one regular file per disk LUN, tape drive and
medium changer (the last two as st's /dev/nst0 and mtx's status: ``iscsifs.mount.tape``).

This is the only module that speaks FUSE and the only place FUSEError is raised: every error
from below is turned into an errno here (``_failure``), so a file user sees what a local disk
would give. Below it, everything a target, the network or a deadline can cause is an
``IscsiError`` carrying its errno; anything else is a bug of ours, which fails that one request
with EIO and a logged traceback but never the mount. No handler blocks: all I/O is awaited on trio.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import json
import logging
import os
import re
import stat
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import pyfuse3
import trio

from iscsifs.block.buffers import BufferPool
from iscsifs.block.changer import Changer, match_drive_luns, mtx_view, serial_of
from iscsifs.block.lun import Lun
from iscsifs.block.reservation import Reservations
from iscsifs.block.stats import Stats
from iscsifs.block.tape import TapeDrive
from iscsifs.mount.tape import ChangerFile, TapeFile
from iscsifs.mount.tree import Node, Tree
from iscsifs.net.api import MountedTarget, PathInfo
from iscsifs.net.arena import ArenaBuffers
from iscsifs.proto.errors import IscsiError
from iscsifs.scsi.persistent import PrType, parse_key, parse_pr_type
from iscsifs.scsi.smc import ElementDescriptor, ElementType, LibraryStatus

log = logging.getLogger("iscsifs.mount.fs")

ATTR_TIMEOUT = 1.0
# A LUN file's st_blksize, the size cp and cat (coreutils) read and write in: the largest
# FUSE request (max_write, agreed at INIT). With the block size (512) cp wrote 128 KiB at a
# time, each a round trip: 194 MiB/s where dd bs=1M oflag=direct did 396-598; with 1 MiB,
# 354-490 MiB/s (bench/README.md, VM 2).
PREFERRED_IO_SIZE = 1 << 20
XATTR_PREFIX = b"user.iscsi."
STATS_XATTR = b"user.iscsifs.stats"  # on the root: this mount's statistics, JSON (iscsifs stats)
# How `iscsifs discard` and `iscsifs map` reach a running mount: through the LUN file itself, so
# the file's permissions apply (the kernel asks write access for a user.* setxattr, read access
# for getxattr). Setting DISCARD_XATTR to "OFFSET LENGTH" deallocates that range; reading
# MAP_XATTR_PREFIX + "OFFSET" gives one GET LBA STATUS worth of extents from OFFSET, as JSON.
DISCARD_XATTR = b"user.iscsifs.discard"
MAP_XATTR_PREFIX = b"user.iscsifs.map."
# Persistent reservations (``iscsifs pr``): reading PR_XATTR gives the LUN's keys, reservation and
# this mount's part in them, as JSON (read access); setting PR_ACTION_XATTR to "register KEY",
# "unregister", "reserve TYPE", "release", "clear" or "preempt KEY [TYPE]" does it (write access).
PR_XATTR = b"user.iscsi.pr"
PR_ACTION_XATTR = b"user.iscsifs.pr"
# A SCSI command of the caller's own, on the mount's session (so on its I_T nexus, with its
# reservations): ``iscsifs raw``, and ``iscsifs inq`` / ``iscsifs opcodes`` through a LUN file.
# - RAW_XATTR: setting it runs the command in the request (framing below) and keeps its result
#   for the caller's pid (the FUSE request's); reading it gives that pid its last result. Only for
#   root or a holder of CAP_SYS_RAWIO (as SG_IO is), whoever calls setxattr: checked here, from
#   /proc/PID/status, and EPERM for anyone else. The kernel asks write access to the file too.
# - QUERY_XATTR_PREFIX + the CDB in hex: reading it runs that CDB and gives the result at once.
#   Only INQUIRY and REPORT SUPPORTED OPERATION CODES, which change nothing: read access is enough.
# Framing, big-endian. Request: RAW_REQUEST (version 1, CDB length, data-in length wanted, the
#   timeout in milliseconds, 0 for the mount's own), the CDB, then the data-out (its length is
#   what remains). Result: RAW_RESULT (version 1, SCSI status, iSCSI response, sense length,
#   residual count), the sense, then the data-in received.
# An xattr value holds at most 64 KiB: the data either way is at most RAW_MAX_DATA bytes.
RAW_XATTR = b"user.iscsifs.raw"
QUERY_XATTR_PREFIX = b"user.iscsifs.query."
RAW_REQUEST = struct.Struct(">BxHII")
RAW_RESULT = struct.Struct(">BBBxHI")
RAW_VERSION = 1
RAW_MAX_DATA = 65536 - 1024
RAW_RESULTS_KEPT = 64  # callers whose last result is kept; the oldest goes first
CAP_SYS_RAWIO = 17
# What kind of file this is, "disk", "tape" or "changer" (not listed): ``iscsifs mt`` and
# ``iscsifs mtx`` tell a wrong file from a refusal by it.
KIND_XATTR = b"user.iscsifs.kind"
# ``iscsifs mt``, mt-st's verbs on a drive's file, run on the mount's own TapeDrive (the position
# is tracked there; a second one would not know it). Stateless, so nothing is kept per caller:
# - reading MT_DO_PREFIX + "VERB[.COUNT]" runs a verb that moves the tape or changes the mode
#   (MT_READ_VERBS): read access, as mt-st opens the device read-only for them, and so on a
#   read-only mount too, where the kernel refuses every setxattr (EROFS);
# - setting MT_XATTR to "VERB [COUNT]" runs any verb (MT_VERBS); the verbs that write (weof,
#   erase) only so, as the kernel asks write access to the file for a user.* setxattr;
# - reading MT_STATUS_XATTR gives ``mt status``'s fields as JSON, with mt-st's text under "text";
#   reading MT_TELL_XATTR gives ``mt tell``'s block number.
# st lets mt reach an open tape only through the opener's own descriptor; a second opener gets
# EBUSY. Here the verb comes from another process, so while the file is open it is refused so.
MT_XATTR = b"user.iscsifs.mt"
MT_STATUS_XATTR = b"user.iscsifs.mt.status"
MT_TELL_XATTR = b"user.iscsifs.mt.tell"
MT_VERBS = ("rewind", "fsf", "bsf", "fsr", "bsr", "eod", "weof", "setblk", "offline", "eject", "load", "erase")
MT_DO_PREFIX = b"user.iscsifs.mt.do."
MT_READ_VERBS = tuple(v for v in MT_VERBS if v not in ("weof", "erase"))
# ``iscsifs mtx``, mtx's verbs on a changer's file: setting MTX_XATTR to "VERB ARGS" (MTX_VERBS,
# mtx's numbering) moves media, as root only in practice: the changer's file is read-only (0444)
# and the kernel asks write access for a user.* setxattr. Reading MTX_STATUS_XATTR gives the
# library as JSON: slots, import/export elements, drives with their barcodes and each drive's
# file in the mount. A drive a verb loads or unloads is told (its position restarts at the new
# tape's beginning), and refused with EBUSY while its file is open.
MTX_XATTR = b"user.iscsifs.mtx"
MTX_STATUS_XATTR = b"user.iscsifs.mtx.status"
MTX_VERBS = ("load", "unload", "transfer", "exchange", "inventory", "first", "last", "next")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR
# File handles of the changers' opens, each with the status text it read; below it, a handle is
# the inode (disks and tapes), which never comes near.
TEXT_FH_BASE = 1 << 48
# FUSE's RELEASE is asynchronous: close(2) returns before it is answered, so the next open of a
# tape closed just before may come first. It waits this long for that release before EBUSY.
TAPE_RELEASE_GRACE = 1.0


def format_paths(paths: list[PathInfo]) -> str:
    """``user.iscsi.paths``: one line per path, "PORTAL STATE", with " active" on those in use."""
    return "\n".join(f"{p.portal} {p.state}{' active' if p.active else ''}" for p in paths)


@dataclass(frozen=True, slots=True)
class RawRequest:
    cdb: bytes
    expected_in: int
    timeout_ms: int = 0  # 0: the mount's command timeouts alone
    data_out: bytes = b""


@dataclass(frozen=True, slots=True)
class RawResult:
    status: int
    response: int = 0
    sense: bytes = b""
    residual: int = 0
    data: bytes = b""


def pack_raw_request(request: RawRequest) -> bytes:
    return (RAW_REQUEST.pack(RAW_VERSION, len(request.cdb), request.expected_in, request.timeout_ms)
            + request.cdb + request.data_out)


def unpack_raw_request(value: bytes) -> RawRequest:
    """ValueError for anything that is not a request of ours."""
    if len(value) < RAW_REQUEST.size:
        raise ValueError("short request")
    version, cdb_length, expected_in, timeout_ms = RAW_REQUEST.unpack_from(value)
    cdb = value[RAW_REQUEST.size : RAW_REQUEST.size + cdb_length]
    data_out = value[RAW_REQUEST.size + cdb_length :]
    if version != RAW_VERSION or not 6 <= cdb_length == len(cdb) or expected_in > RAW_MAX_DATA \
            or len(data_out) > RAW_MAX_DATA:
        raise ValueError("malformed request")
    return RawRequest(cdb, expected_in, timeout_ms, data_out)


def pack_raw_result(result: RawResult) -> bytes:
    return (RAW_RESULT.pack(RAW_VERSION, result.status, result.response, len(result.sense), result.residual)
            + result.sense + result.data)


def unpack_raw_result(value: bytes) -> RawResult:
    if len(value) < RAW_RESULT.size:
        raise ValueError("short result")
    version, status, response, sense_length, residual = RAW_RESULT.unpack_from(value)
    sense = value[RAW_RESULT.size : RAW_RESULT.size + sense_length]
    if version != RAW_VERSION or len(sense) != sense_length:
        raise ValueError("malformed result")
    return RawResult(status, response, sense, residual, value[RAW_RESULT.size + sense_length :])


def may_raw_io(status: str) -> bool:
    """Whether the process whose /proc/PID/status this is may send any SCSI command, as SG_IO
    asks: effective uid 0, or CAP_SYS_RAWIO among its effective capabilities."""
    fields = {key: value for key, _, value in (line.partition(":") for line in status.splitlines())}
    uids = fields.get("Uid", "").split()
    try:
        caps = int(fields.get("CapEff", "0").strip() or "0", 16)
    except ValueError:
        caps = 0
    return (len(uids) > 1 and uids[1] == "0") or bool(caps >> CAP_SYS_RAWIO & 1)


def _may_raw_io(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return may_raw_io(f.read())
    except OSError:
        return False  # gone, or not ours to see: no


def query_cdb(name: bytes) -> bytes | None:
    """The CDB a QUERY_XATTR_PREFIX name asks for, if it is one that may be run on read access."""
    try:
        cdb = bytes.fromhex(name.decode("ascii"))
    except ValueError:
        return None
    # INQUIRY; MAINTENANCE IN with REPORT SUPPORTED OPERATION CODES.
    if (len(cdb) == 6 and cdb[0] == 0x12) or (len(cdb) == 12 and cdb[0] == 0xA3 and cdb[1] & 0x1F == 0x0C):
        return cdb
    return None


def query_expected_in(cdb: bytes) -> int:
    """The ALLOCATION LENGTH of a query CDB (SPC-4 §6.6.1, §6.35.1), within RAW_MAX_DATA."""
    length = int.from_bytes(cdb[3:5], "big") if cdb[0] == 0x12 else int.from_bytes(cdb[6:10], "big")
    return min(length, RAW_MAX_DATA)


def _failure(op: str, lun: Lun | TapeDrive | Changer, exc: Exception) -> pyfuse3.FUSEError:
    """The errno of a failed request, and its log line. An ``IscsiError`` (whatever a target, the
    network or a deadline caused) carries what a local disk would give; anything else is a bug
    of ours: EIO and a traceback in the log, and the mount goes on serving."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    if isinstance(exc, IscsiError):
        if exc.errno != errno.ENOSPC:  # past the end: what dd to the end of a disk gets, no news
            log.warning("%s on %s/%d failed: %s", op, lun.session.target_name, lun.lun, exc)
        return pyfuse3.FUSEError(exc.errno)
    log.error("%s on %s/%d failed: internal error", op, lun.session.target_name, lun.lun, exc_info=exc)
    return pyfuse3.FUSEError(errno.EIO)


def _kind(node: Node) -> str:
    """KIND_XATTR: what a file is; "" for a directory or a link."""
    if node.lun is not None:
        return "disk"
    if node.tape is not None:
        return "tape"
    if node.changer is not None:
        return "changer"
    return ""


class CacheMode(enum.Enum):
    """What the kernel's page cache does with buffered writes (``-o cache=``)."""

    NONE = "none"  # write-through: a write(2) returns once the target has the data
    # The kernel's writeback cache: write(2) returns once the data is in the page cache, and the
    # kernel sends it later, gathered into large requests, several at a time. fsync and close
    # write it out and report what failed. The kernel then keeps each file's size itself and
    # takes none from us but a truncate's: a write past the end, an O_TRUNC open (cp) and a
    # resize leave it showing a size the LUN does not have (README: "The page cache").
    WRITEBACK = "writeback"


# The first Linux whose FUSE drops the cached pages of the range a write through a direct_io
# open covers ("fuse: invalidate page cache pages before direct write", 6.6). Before it, pages
# another open of the file had cached stayed as they were, so a reader would see old data.
DIRECT_WRITE_DROPS_PAGES_SINCE = (6, 6)


def direct_writes_drop_cached_pages(release: str) -> bool:
    """Whether the kernel of this ``uname -r`` keeps cached pages coherent with direct_io writes."""
    found = re.match(r"(\d+)\.(\d+)", release)
    if found is None:
        return False  # not a version we can read: keep the page cache, coherent on every kernel
    return (int(found[1]), int(found[2])) >= DIRECT_WRITE_DROPS_PAGES_SINCE


class IscsiFs(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False  # pyfuse3 asks the kernel for it at INIT when True

    def __init__(self, tree: Tree, *, read_only: bool = False, uid: int | None = None, gid: int | None = None,
                 umask: int = 0o022, buffers: BufferPool | ArenaBuffers | None = None,
                 stats: Stats | None = None, mountpoint: str = "", writeback: bool = False) -> None:
        super().__init__()
        self.enable_writeback_cache = writeback
        # Without the writeback cache, write-only opens go straight to the LUN (``open``), where
        # the kernel keeps other opens' cached pages coherent with such writes.
        self.write_only_direct = not writeback and direct_writes_drop_cached_pages(os.uname().release)
        self.tree = tree
        self.nodes = tree.nodes  # the same dict: looked up on every request
        self.read_only = read_only
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.umask = umask
        # With session workers, buffers in the arena they receive into.
        self._buffers: BufferPool | ArenaBuffers = buffers or BufferPool()
        # inode -> (its LUN, its target, open files): what release() gives back, even once the LUN is gone
        self._held: dict[int, tuple[Lun, MountedTarget, int]] = {}
        self.after_init: Callable[[], None] | None = None  # called once the kernel's INIT is answered
        # The mount's statistics, shown on the root (STATS_XATTR); its LUNs count into the same object.
        self.stats = stats if stats is not None else Stats()
        # RAW_XATTR: each caller's (pid's) last result, at most RAW_RESULTS_KEPT of them.
        self._raw_results: OrderedDict[int, bytes] = OrderedDict()
        self.mountpoint = mountpoint  # where the mount is: a changer's status names its file by it
        # A changer file's opens: handle -> the status text read at open.
        self._texts: dict[int, bytes] = {}
        self._next_text_fh = TEXT_FH_BASE

    def init(self) -> None:
        # pyfuse3 calls this while it answers INIT, and the kernel sets the mount's readahead from
        # that answer; so what must come later (mount.py: our readahead) is started from here as
        # a task, which runs after this step has sent the answer.
        if self.after_init is not None:
            self.after_init()

    # -- attributes --------------------------------------------------------------------------------

    def _node(self, inode: int) -> Node:
        node = self.nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENXIO if inode in self.tree.gone else errno.ENOENT)
        return node

    def _writable(self, node: Node) -> bool:
        return not self.read_only and node.lun is not None and not node.lun.read_only

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        a.generation = 0
        a.entry_timeout = ATTR_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT
        if node.lun is not None:
            a.st_mode = stat.S_IFREG | ((0o666 if self._writable(node) else 0o444) & ~self.umask)
            a.st_nlink = 1
            a.st_size = node.lun.size
            a.st_blksize = max(PREFERRED_IO_SIZE, node.lun.block_size)
            a.st_blocks = (node.lun.size + 511) // 512
        elif node.tape is not None or node.changer is not None:
            # A tape or a changer has no size: 0, and reads are never cut at it (direct_io).
            writable = node.tape is not None and not self.read_only
            a.st_mode = stat.S_IFREG | ((0o666 if writable else 0o444) & ~self.umask)
            a.st_nlink = 1
            a.st_size = 0
            a.st_blksize = 4096
            a.st_blocks = 0
        elif node.link:
            a.st_mode = stat.S_IFLNK | 0o777
            a.st_nlink = 1
            a.st_size = len(node.link)
            a.st_blksize = 4096
            a.st_blocks = 0
        else:
            a.st_mode = stat.S_IFDIR | (0o777 & ~self.umask)
            a.st_nlink = 2 + sum(1 for c in node.children.values() if self.nodes[c].is_dir)
            a.st_size = 0
            a.st_blksize = 4096
            a.st_blocks = 0
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = node.mtime_ns
        return a

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        return self._attr(self._node(inode))

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return self._attr(parent)
        if name == b"..":
            return self._attr(self._node(parent.parent))
        child = parent.children.get(name)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self.nodes[child])

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if fields.update_size and (node.tape is not None or node.changer is not None):
            # O_TRUNC (tar cf, a shell's >) on a tape, as on st's device: nothing to do.
            if attr.st_size != 0:
                raise pyfuse3.FUSEError(errno.EINVAL)
            return self._attr(node)
        if fields.update_size:
            # A LUN keeps the size the target gives it; truncating sets where the file being
            # written on it ends (iscsifs.block.lun: cp and qemu-img convert rely on it), growing fails.
            if node.lun is None:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if attr.st_size != node.lun.size and not self._writable(node):
                raise pyfuse3.FUSEError(errno.EROFS)  # root passes the mode check: a WP LUN must not
            try:
                node.lun.truncate(attr.st_size)
            except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
                raise _failure("truncate", node.lun, exc) from None
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        return self._attr(node)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        total = sum(lun.size for lun in self.tree.luns())
        s.f_bsize = s.f_frsize = 512
        s.f_blocks = total // 512
        s.f_bfree = s.f_bavail = 0
        s.f_files = len(self.nodes)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    # -- extended attributes: who a LUN is ----------------------------------------------------------

    def _xattrs(self, node: Node) -> dict[bytes, bytes]:
        target = node.target
        # The active path now, and every path with its state: they change as paths fail and return.
        paths = {"portal": str(target.portal), "paths": format_paths(target.paths())} if target is not None else {}
        if node.lun is not None and node.info is not None:
            info, lun = node.info, node.lun
            values = {"vendor": info.inquiry.vendor, "product": info.inquiry.product,
                      "revision": info.inquiry.revision, "serial": info.identity.serial, "wwn": info.identity.wwn,
                      "block_size": str(lun.block_size), "size": str(lun.size), "target": info.target, **paths,
                      "lun": str(info.lun),
                      "provisioning": "thin" if info.identity.provisioning.thin else "full"}
        elif node.info is not None:  # a tape drive or a changer
            info = node.info
            values = {"vendor": info.inquiry.vendor, "product": info.inquiry.product,
                      "revision": info.inquiry.revision, "serial": info.identity.serial, "wwn": info.identity.wwn,
                      "target": info.target, **paths, "lun": str(info.lun)}
        else:
            values = {"target": target.target_name if target is not None else "", **paths}
        attrs = {XATTR_PREFIX + k.encode(): v.encode() for k, v in values.items() if v}
        if node.inode == pyfuse3.ROOT_INODE:
            attrs[STATS_XATTR] = self.stats.to_json()
        return attrs

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext | None) -> bytes:
        node = self._node(inode)
        if name.startswith(MAP_XATTR_PREFIX) and node.lun is not None:
            return await self._map(node.lun, name[len(MAP_XATTR_PREFIX) :])
        if name == PR_XATTR and node.lun is not None and node.target is not None:
            try:
                status = await Reservations(node.target, node.lun.lun, node.lun.pr).status()
            except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
                raise _failure("reading reservations", node.lun, exc) from None
            return json.dumps(status.to_json(), separators=(",", ":")).encode()
        if name.startswith(QUERY_XATTR_PREFIX) and node.lun is not None:
            cdb = query_cdb(name[len(QUERY_XATTR_PREFIX) :])
            if cdb is None:
                raise pyfuse3.FUSEError(errno.EINVAL)
            return pack_raw_result(await self._raw(node.lun, RawRequest(cdb, query_expected_in(cdb))))
        if name == KIND_XATTR:
            kind = _kind(node)
            if not kind:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
            return kind.encode()
        if name in (MT_STATUS_XATTR, MT_TELL_XATTR) and node.tape is not None:
            return await self._mt_query(node.tape, tell=name == MT_TELL_XATTR)
        if name.startswith(MT_DO_PREFIX) and node.tape is not None:
            verb = name[len(MT_DO_PREFIX) :].replace(b".", b" ", 1)
            if verb.split(b" ", 1)[0].decode("ascii", "replace") not in MT_READ_VERBS:
                raise pyfuse3.FUSEError(errno.EINVAL)  # weof and erase write: setxattr MT_XATTR
            await self._mt_verb(node.tape, verb)
            return b""
        if name == MTX_STATUS_XATTR and node.changer is not None:
            return await self._mtx_status(node, node.changer)
        if name == RAW_XATTR and node.lun is not None:
            pid = ctx.pid if ctx is not None else 0
            if not await trio.to_thread.run_sync(_may_raw_io, pid):
                raise pyfuse3.FUSEError(errno.EPERM)
            kept = self._raw_results.get(pid)
            if kept is None:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
            return kept
        value = self._xattrs(node).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    async def _map(self, lun: Lun, offset: bytes) -> bytes:
        if not offset.isdigit() or int(offset) >= lun.size:
            raise pyfuse3.FUSEError(errno.EINVAL)
        try:
            extents, following = await lun.lba_status(int(offset))
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure("map", lun, exc) from None
        return json.dumps({"size": lun.size, "next": following, "extents": extents}, separators=(",", ":")).encode()

    async def _raw(self, lun: Lun, request: RawRequest) -> RawResult:
        """One command as the caller sent it: no retries (a UNIT ATTENTION is the caller's to
        see), within the mount's command timeouts and, if the request has one, its own."""
        timeout = request.timeout_ms / 1000 if request.timeout_ms else float("inf")
        try:
            with trio.move_on_after(timeout) as scope:
                result = await lun.session.execute(lun.lun, request.cdb, data_out=request.data_out or None,
                                                   expected_in=request.expected_in)
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure(f"SCSI command 0x{request.cdb[0]:02x}", lun, exc) from None
        if scope.cancelled_caught:
            raise pyfuse3.FUSEError(errno.ETIMEDOUT)
        return RawResult(result.status, result.response, bytes(result.sense), result.residual, bytes(result.data))

    async def _reservation_action(self, reservations: Reservations, lun: Lun, value: bytes) -> None:
        words = value.decode("ascii", "replace").split()
        action, args = (words[0], words[1:]) if words else ("", [])
        try:
            key = parse_key(args[0]) if action in ("register", "preempt") and args else None
            pr_type: PrType | None = None
            if action == "reserve" and len(args) == 1:
                pr_type = parse_pr_type(args[0])
            elif action == "preempt" and len(args) == 2:
                pr_type = parse_pr_type(args[1])
        except ValueError:
            raise pyfuse3.FUSEError(errno.EINVAL) from None
        try:
            if action == "register" and key is not None and len(args) == 1:
                await reservations.join(key, lun.pr.reservation if lun.pr.key == key else None)
            elif action == "unregister" and not args:
                await reservations.leave()
            elif action == "reserve" and pr_type is not None:
                await reservations.reserve(pr_type)
            elif action == "release" and not args:
                await reservations.release()
            elif action == "clear" and not args:
                await reservations.clear()
            elif action == "preempt" and key is not None and len(args) in (1, 2):
                await reservations.preempt(key, pr_type)
            else:
                raise pyfuse3.FUSEError(errno.EINVAL)
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure(f"persistent reservation {action}", lun, exc) from None

    # -- mt and mtx: the verbs of mt-st and mtx, through the files (MT_XATTR, MTX_XATTR) -----------

    async def _take_tape(self, tape: TapeFile) -> None:
        """Hold the drive as an opener does for the length of a verb: EBUSY while its file is open
        (st refuses a second opener so), and an open meanwhile waits, then gets EBUSY."""
        if tape.open:
            with trio.move_on_after(TAPE_RELEASE_GRACE):
                await tape.released.wait()
            if tape.open:
                raise pyfuse3.FUSEError(errno.EBUSY)
        tape.open = True
        tape.released = trio.Event()

    def _give_tape(self, tape: TapeFile) -> None:
        tape.open = False
        tape.released.set()

    async def _mt_query(self, tape: TapeFile, *, tell: bool) -> bytes:
        await self._take_tape(tape)
        try:
            async with tape.lock:
                if tell:
                    return str(tape.drive.tell()).encode()
                status = await tape.drive.status()
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure("mt tell" if tell else "mt status", tape.drive, exc) from None
        finally:
            self._give_tape(tape)
        fields = dataclasses.asdict(status)
        fields["general_status"] = status.general_status
        fields["text"] = status.text()
        return json.dumps(fields, separators=(",", ":")).encode()

    async def _mt_verb(self, tape: TapeFile, value: bytes) -> None:
        words = value.decode("ascii", "replace").split()
        if not 1 <= len(words) <= 2 or words[0] not in MT_VERBS or (len(words) == 2 and not words[1].isdigit()):
            raise pyfuse3.FUSEError(errno.EINVAL)
        verb, count = words[0], int(words[1]) if len(words) == 2 else 1
        if verb in ("weof", "erase") and self.read_only:
            raise pyfuse3.FUSEError(errno.EROFS)
        await self._take_tape(tape)
        drive = tape.drive
        try:
            async with tape.lock:
                if verb == "rewind":
                    await drive.rewind()
                elif verb == "fsf":
                    await drive.fsf(count)
                elif verb == "bsf":
                    await drive.bsf(count)
                elif verb == "fsr":
                    await drive.fsr(count)
                elif verb == "bsr":
                    await drive.bsr(count)
                elif verb == "eod":
                    await drive.eod()
                elif verb == "weof":
                    await drive.weof(count)
                elif verb == "setblk":
                    await drive.setblk(count)
                elif verb in ("offline", "eject"):
                    await drive.offline()
                elif verb == "load":
                    await drive.load()
                else:
                    await drive.erase()
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure(f"mt {verb}", drive, exc) from None
        finally:
            self._give_tape(tape)

    def _drive_files(self, node: Node, status: LibraryStatus) -> dict[int, Node]:
        """mtx's drive number -> the file of that drive in the changer's target: the drives'
        identifiers matched to the drive LUNs' serials (``match_drive_luns``)."""
        view = mtx_view(status)
        serials = {n: serial_of(d.identifier) for n, d in enumerate(view.drives) if d.identifier is not None}
        tapes = {n.info.lun: n for n in self.nodes.values()
                 if n.tape is not None and n.info is not None and n.target is node.target}
        matched = match_drive_luns(serials, [n.info for n in tapes.values() if n.info is not None])
        return {drive: tapes[lun] for drive, lun in matched.items()}

    def _file_path(self, inode: int) -> str:
        return os.path.join(self.mountpoint, os.fsdecode(self.tree.path(inode)))

    async def _mtx_status(self, node: Node, changer: ChangerFile) -> bytes:
        try:
            status = await changer.changer.status()
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure("reading the changer's status", changer.changer, exc) from None
        view = mtx_view(status)
        files = self._drive_files(node, status)

        def element(number_name: str, number: int, e: ElementDescriptor) -> dict[str, object]:
            tag = e.primary_volume_tag
            return {number_name: number, "full": e.full, "barcode": tag.identifier if tag and tag.identifier else None}

        drives = []
        for n, d in enumerate(view.drives):
            file = files.get(n)
            drives.append({**element("drive", n, d), "source_slot": view.source_slot(n) if d.full else None,
                           "lun": file.info.lun if file is not None and file.info is not None else None,
                           "file": self._file_path(file.inode) if file is not None else None})
        storage = [element("slot", n, e) for n, e in enumerate(view.storage, 1)]
        kinds = [e.element_type == ElementType.IMPORT_EXPORT for e in view.storage]
        return json.dumps({"device": self._file_path(node.inode), "drives": drives,
                           "slots": [e for e, ie in zip(storage, kinds, strict=True) if not ie],
                           "import_export": [e for e, ie in zip(storage, kinds, strict=True) if ie]},
                          separators=(",", ":")).encode()

    async def _mtx_verb(self, node: Node, changer_file: ChangerFile, value: bytes) -> None:
        words = value.decode("ascii", "replace").split()
        verb, args = (words[0], words[1:]) if words else ("", [])
        arity = {"load": (1, 2), "unload": (0, 2), "transfer": (2, 2), "exchange": (2, 2), "inventory": (0, 0),
                 "first": (0, 1), "last": (0, 1), "next": (0, 1)}.get(verb)
        if arity is None or not arity[0] <= len(args) <= arity[1] or not all(a.isdigit() for a in args):
            raise pyfuse3.FUSEError(errno.EINVAL)
        numbers = [int(a) for a in args]
        changer = changer_file.changer
        # The drive the verb loads or unloads, if any: held (EBUSY while its file is open), then told.
        drive_number: int | None = None
        if verb in ("load", "unload"):
            drive_number = numbers[1] if len(numbers) == 2 else 0
        elif verb in ("first", "last", "next"):
            drive_number = numbers[0] if numbers else 0
        tape: TapeFile | None = None
        if drive_number is not None:
            try:
                status = await changer.status()
            except Exception as exc_status:  # noqa: BLE001 - the one boundary: see _failure
                raise _failure("reading the changer's status", changer, exc_status) from None
            file = self._drive_files(node, status).get(drive_number)
            tape = file.tape if file is not None else None
        if tape is not None:
            await self._take_tape(tape)
        try:
            if verb == "load":
                await changer.load(numbers[0], numbers[1] if len(numbers) == 2 else 0)
            elif verb == "unload":
                await changer.unload(numbers[0] if numbers else None, numbers[1] if len(numbers) == 2 else 0)
            elif verb == "transfer":
                await changer.transfer(numbers[0], numbers[1])
            elif verb == "exchange":
                await changer.exchange(numbers[0], numbers[1])
            elif verb == "inventory":
                await changer.inventory()
            elif verb == "first":
                await changer.first(numbers[0] if numbers else 0)
            elif verb == "last":
                await changer.last(numbers[0] if numbers else 0)
            else:
                await changer.next(numbers[0] if numbers else 0)
        except Exception as exc_move:  # noqa: BLE001 - the one boundary: see _failure
            if tape is not None:
                self._give_tape(tape)
            raise _failure(f"mtx {verb}", changer, exc_move) from None
        if tape is not None:
            await self._after_move(tape, unloaded=verb == "unload")

    async def _after_move(self, tape: TapeFile, *, unloaded: bool) -> None:
        """Tell the drive what the changer did: an unloaded drive has no tape (its TEST UNIT READY
        says so), a loaded one a tape at its beginning, maybe another one (``TapeDrive.load``:
        rewinds, forgets the old tape's layout). tgt raises no UNIT ATTENTION after a move that
        would tell it. The move is done whatever this gives: a failure is only logged."""
        try:
            async with tape.lock:
                if unloaded:
                    await tape.drive.status()
                else:
                    await tape.drive.load()
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            _failure("telling the drive of the move", tape.drive, exc)
        finally:
            self._give_tape(tape)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext | None) -> list[bytes]:
        return list(self._xattrs(self._node(inode)))

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext | None) -> None:
        node = self._node(inode)
        if name == DISCARD_XATTR and node.lun is not None:
            fields = value.split()
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                raise pyfuse3.FUSEError(errno.EINVAL)
            if not self._writable(node):
                raise pyfuse3.FUSEError(errno.EROFS)
            try:
                await node.lun.discard(int(fields[0]), int(fields[1]))
            except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
                raise _failure("discard", node.lun, exc) from None
            return
        if name == PR_ACTION_XATTR and node.lun is not None and node.target is not None:
            await self._reservation_action(Reservations(node.target, node.lun.lun, node.lun.pr), node.lun, value)
            return
        if name == MT_XATTR and node.tape is not None:
            await self._mt_verb(node.tape, value)
            return
        if name == MTX_XATTR and node.changer is not None:
            await self._mtx_verb(node, node.changer, value)
            return
        if name == RAW_XATTR and node.lun is not None:
            pid = ctx.pid if ctx is not None else 0
            if not await trio.to_thread.run_sync(_may_raw_io, pid):
                raise pyfuse3.FUSEError(errno.EPERM)
            try:
                request = unpack_raw_request(value)
            except ValueError:
                raise pyfuse3.FUSEError(errno.EINVAL) from None
            self._raw_results.pop(pid, None)
            answer = pack_raw_result(await self._raw(node.lun, request))
            self._raw_results[pid] = answer
            while len(self._raw_results) > RAW_RESULTS_KEPT:
                self._raw_results.popitem(last=False)
            return
        # The identity comes from the device; nothing else can be stored on a LUN.
        raise pyfuse3.FUSEError(errno.EPERM if name in self._xattrs(node) else errno.ENOTSUP)

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise pyfuse3.FUSEError(errno.EPERM if name in self._xattrs(self._node(inode)) else pyfuse3.ENOATTR)

    # -- directories -------------------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if not self._node(inode).is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext | None) -> bytes:
        node = self._node(inode)
        if not node.link:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.link

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        node = self._node(fh)
        entries = sorted(node.children.items())
        for index in range(start_id, len(entries)):
            name, inode = entries[index]
            if not pyfuse3.readdir_reply(token, name, self._attr(self.nodes[inode]), index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        pass

    # -- files -------------------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext | None) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.tape is not None:
            return await self._open_tape(node, node.tape, flags)
        if node.changer is not None:
            return await self._open_changer(node, node.changer, flags)
        if node.lun is None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & _WRITE_FLAGS and not self._writable(node):
            raise pyfuse3.FUSEError(errno.EROFS)
        if flags & os.O_TRUNC:
            # The LUN stays as it is, as a disk does; the file written on it starts empty, so
            # what the writer skips (cp's holes) reads and is written as zeros (iscsifs.block.lun).
            node.lun.truncate(0)
        # keep_cache=False: another initiator may have written since the last open.
        # direct_io for an O_DIRECT open, which bypasses the page cache either way: the kernel then
        # sends its writes straight on, without first asking getxattr("security.capability") under
        # the inode lock once per write (file_remove_privs), which serialised a queue of writes
        # behind one FUSE round trip each. From Linux 6.6 it also drops other opens' cached pages
        # of the range it writes (older kernels leave them stale). Without the writeback cache,
        # a write-only open (cp's, a shell's >, dd's) too: its writes go through as they come
        # either way, and it reads nothing it could cache; through the page cache each write also
        # cost a copy into it and that getxattr (cp of 256 MiB: 408-437 -> 522-546 MiB/s,
        # bench/README.md "VM 3, fifth visit"). Only where the kernel drops the cached pages a
        # direct_io write covers (``direct_writes_drop_cached_pages``).
        target = node.target
        assert target is not None  # every LUN file has one (Tree.add_lun)
        target.hold()  # an open file keeps its target logged in (net.pool)
        self._held[inode] = (node.lun, target, self._held[inode][2] + 1 if inode in self._held else 1)
        write_only = flags & os.O_ACCMODE == os.O_WRONLY and self.write_only_direct
        return pyfuse3.FileInfo(fh=inode, keep_cache=False, direct_io=bool(flags & os.O_DIRECT) or write_only)

    async def _open_tape(self, node: Node, tape: TapeFile, flags: int) -> pyfuse3.FileInfo:
        """As st opens /dev/nst0: one opener at a time (EBUSY); without O_NONBLOCK, a drive with no
        tape fails (ENOMEDIUM), and so does opening a write-protected tape for writing (EROFS)."""
        writing = bool(flags & _WRITE_FLAGS)
        if writing and self.read_only:
            raise pyfuse3.FUSEError(errno.EROFS)
        if tape.open:
            with trio.move_on_after(TAPE_RELEASE_GRACE):
                await tape.released.wait()
            if tape.open:
                raise pyfuse3.FUSEError(errno.EBUSY)
        tape.open = True  # taken before any await: a second open meanwhile is refused
        tape.released = trio.Event()
        opened = False
        try:
            if not flags & os.O_NONBLOCK:
                try:
                    async with tape.lock:
                        status = await tape.drive.status()
                except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
                    raise _failure("open", tape.drive, exc) from None
                if status.door_open:
                    raise pyfuse3.FUSEError(errno.ENOMEDIUM)
                if writing and status.write_protected:
                    raise pyfuse3.FUSEError(errno.EROFS)
            opened = True
        finally:
            if not opened:
                tape.open = False
                tape.released.set()
        target = node.target
        assert target is not None  # every device file has one (Tree.add_device)
        target.hold()  # an open file keeps its target logged in (net.pool)
        # direct_io: every read(2) and write(2) comes as it was made (one block each), neither
        # cached nor merged. The largest block is what one FUSE write request carries (max_write,
        # which libfuse and the kernel agree at INIT): a longer write(2) comes as several requests,
        # each written as a block. A tape cannot seek.
        return pyfuse3.FileInfo(fh=node.inode, keep_cache=False, direct_io=True, nonseekable=True)

    async def _open_changer(self, node: Node, changer: ChangerFile, flags: int) -> pyfuse3.FileInfo:
        """The library's status, read now, as ``mtx -f FILE status`` prints it for the file's path."""
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        device = os.path.join(self.mountpoint, os.fsdecode(self.tree.path(node.inode)))
        try:
            text = await changer.status_text(device)
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure("reading the changer's status", changer.changer, exc) from None
        fh = self._next_text_fh
        self._next_text_fh += 1
        self._texts[fh] = text
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=True)

    # pyfuse3 replies with any buffer (fuse_read_async takes the buffer protocol); its stub says bytes.
    async def read(self, fh: int, off: int, size: int) -> memoryview:  # type: ignore[override]
        if fh >= TEXT_FH_BASE:
            return memoryview(self._texts[fh])[off : off + size]
        node = self._node(fh)
        lun = node.lun
        if lun is None:
            if node.tape is not None:
                return await self._read_tape(node.tape, size)
            raise pyfuse3.FUSEError(errno.EISDIR)
        buf = self._buffers.take(lun.read_span(off, size))
        try:
            return await lun.read_into(off, size, buf)
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure("read", lun, exc) from None
        finally:
            # Back in the pool before pyfuse3 has copied our answer out of it, which is safe:
            # pyfuse3 replies in the same step our coroutine returns in (fuse_read_async), before
            # any other task can take the buffer; and no late Data-In reaches it (Multipath.execute;
            # with session workers, a command into the arena cannot be cancelled before its answer).
            self._buffers.give(buf)

    async def _read_tape(self, tape: TapeFile, size: int) -> memoryview:
        """One block, of its real length; b"" at a filemark (then past it) and at the end of data.
        The offset means nothing on a tape."""
        try:
            async with tape.lock:
                block = await tape.drive.read_block(size)
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure("read", tape.drive, exc) from None
        return memoryview(block)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self._node(fh)
        if node.tape is not None:
            return await self._write_tape(node, node.tape, buf)
        lun = self._lun(fh)
        if not self._writable(node):
            raise pyfuse3.FUSEError(errno.EROFS)
        try:
            if self.enable_writeback_cache and off < lun.size < off + len(buf):
                # The kernel took a write(2) past the end into its cache and writes back whole
                # pages: what lies on the LUN is written, then the request is refused as a whole
                # (lun.write checks the range before it sends anything); fsync and close report it.
                await lun.write(off, memoryview(buf)[: lun.size - off])
            n = await lun.write(off, buf)
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            if self.enable_writeback_cache and isinstance(exc, IscsiError):
                # Maybe pages written back long after their write(2) returned: the writer learns
                # it from fsync or close, and the log says what was lost, once per request.
                log.error("writing %d bytes at offset %d of LUN %d of %s failed: %s", len(buf), off, lun.lun,
                          lun.session.target_name, exc)
                raise pyfuse3.FUSEError(exc.errno) from None
            raise _failure("write", lun, exc) from None
        node.mtime_ns = time.time_ns()
        return n

    async def _write_tape(self, node: Node, tape: TapeFile, buf: bytes) -> int:
        """One block (WRITE(6)); past the early warning st's dance: ENOSPC every other write."""
        if self.read_only:
            raise pyfuse3.FUSEError(errno.EROFS)
        try:
            async with tape.lock:
                await tape.drive.write_block(buf)
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure("write", tape.drive, exc) from None
        node.mtime_ns = time.time_ns()
        return len(buf)

    async def flush(self, fh: int) -> None:
        # close(2): make what this file wrote durable, and report it if that fails.
        if fh >= TEXT_FH_BASE:
            return
        node = self._node(fh)
        if node.tape is not None:
            await self._end_tape_file(node.tape)
            return
        await self._sync(fh)

    async def _end_tape_file(self, tape: TapeFile) -> None:
        """A file written ends with a filemark, as st writes one on close. Here at close(2) (FLUSH),
        which the kernel waits for, rather than at the release of the last descriptor, which it
        does not wait for: so a filemark is on the tape when close returns (a script's next move,
        an unload, comes after it), and its failure is close's. st waits for the last descriptor:
        a descriptor shared by two processes (a shell's ``{ a; b; } > FILE``) ends a tape file at
        each process's close here."""
        try:
            async with tape.lock:
                await tape.drive.close_after_write()
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure("writing a filemark", tape.drive, exc) from None

    async def fsync(self, fh: int, datasync: bool) -> None:
        if fh >= TEXT_FH_BASE or self._node(fh).tape is not None:
            return  # a tape's blocks are written when write(2) returns
        await self._sync(fh)

    async def release(self, fh: int) -> None:
        if fh >= TEXT_FH_BASE:
            self._texts.pop(fh, None)
            return
        node = self.nodes.get(fh)
        if node is not None and node.tape is not None:
            await self._release_tape(node, node.tape)
            return
        lun, target, count = self._held.pop(fh)
        target.release()
        if count > 1:
            self._held[fh] = (lun, target, count - 1)
        else:
            lun.closed()

    async def _release_tape(self, node: Node, tape: TapeFile) -> None:
        # The filemark was written at close (flush) unless that failed; release cannot report.
        try:
            async with tape.lock:
                await tape.drive.close_after_write()
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            _failure("writing a filemark", tape.drive, exc)
        finally:
            tape.open = False
            tape.released.set()
            if node.target is not None:
                node.target.release()

    async def _sync(self, fh: int) -> None:
        lun = self._lun(fh)
        if not lun.dirty:
            return
        try:
            await lun.flush()
        except Exception as exc:  # noqa: BLE001 - the one boundary: see _failure
            raise _failure("flush", lun, exc) from None

    def _lun(self, fh: int) -> Lun:
        node = self._node(fh)
        if node.lun is None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return node.lun

    # -- what a LUN tree cannot do -----------------------------------------------------------------

    async def create(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def mknod(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def mkdir(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def unlink(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rmdir(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rename(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def symlink(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def link(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EPERM)

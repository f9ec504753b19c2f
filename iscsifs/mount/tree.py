"""The inode tree a mount shows: the root; one directory per target (or, for a target URL, the
LUN files at the root; or the root itself as the one LUN mounted on a regular file); one file
per disk LUN, tape drive and medium changer; and ``by-id/`` links (disks only). No FUSE here:
``fs.py`` serves the tree and ``watch.py`` keeps it true to the target."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from iscsifs.block.client import LunInfo
from iscsifs.block.lun import Lun
from iscsifs.mount.tape import ChangerFile, TapeFile
from iscsifs.net.api import MountedTarget

ROOT_INODE = 1  # FUSE's (pyfuse3.ROOT_INODE)
BY_ID = "by-id"


# The lengths SPC-4 §7.8.6 gives these designators, in hex digits: NAA 8 or 16 bytes (NAA 2, 3,
# 5 or 6), EUI-64 based 8, 12 or 16 bytes. A target may send any length: only these get a link.
_DESIGNATOR_DIGITS = {"naa": (16, 32), "eui": (16, 24, 32)}


def by_id_name(wwn: str) -> str | None:
    """udev's /dev/disk/by-id name for a LUN's designator: ``wwn-0x<hex>`` for NAA and EUI-64. The
    others (SCSI name strings, T10 vendor ids) hold colons or spaces, and get no link."""
    kind, _, digits = wwn.partition(".")
    if len(digits) in _DESIGNATOR_DIGITS.get(kind, ()) and all(c in "0123456789abcdef" for c in digits):
        return f"wwn-0x{digits}"
    return None


def usable_name(name: str) -> bool:
    """Whether ``name`` (a target's, as the target sends it) can name a directory entry."""
    raw = os.fsencode(name)
    return b"/" not in raw and b"\0" not in raw and raw not in (b"", b".", b"..") and len(raw) <= 255


@dataclass(slots=True, eq=False)
class Node:
    inode: int
    name: bytes
    parent: int
    lun: Lun | None = None
    info: LunInfo | None = None
    target: MountedTarget | None = None  # for a target's directory and each of its LUN files
    children: dict[bytes, int] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)
    link: bytes = b""  # for a symbolic link (by-id/): where it points
    tape: TapeFile | None = None  # a tape drive's file
    changer: ChangerFile | None = None  # a medium changer's file

    @property
    def is_dir(self) -> bool:
        return self.lun is None and not self.link and self.tape is None and self.changer is None


class Tree:
    def __init__(self) -> None:
        root = Node(ROOT_INODE, b"", ROOT_INODE)
        self.nodes: dict[int, Node] = {root.inode: root}
        self._next_inode = ROOT_INODE + 1
        self.gone: set[int] = set()  # inodes of removed LUNs: their handles get ENXIO, not ENOENT
        self.by_id: int | None = None  # the by-id/ directory, once a LUN has a name for it
        self._links: dict[int, int] = {}  # LUN file inode -> its by-id link's inode

    def __repr__(self) -> str:
        return f"<Tree {len(self.nodes)} nodes, {len(self.luns())} LUNs>"

    @property
    def root(self) -> Node:
        return self.nodes[ROOT_INODE]

    def add_dir(self, parent: int, name: str, target: MountedTarget | None = None) -> int:
        inode = self._add(parent, name)
        self.nodes[inode].target = target
        return inode

    def set_root_lun(self, info: LunInfo, lun: Lun, target: MountedTarget) -> None:
        """A LUN mounted on a regular file: the root itself is the LUN."""
        self.root.info, self.root.lun, self.root.target = info, lun, target

    def add_lun(self, parent: int, name: str, info: LunInfo, lun: Lun, target: MountedTarget) -> int:
        inode = self._add(parent, name, info, lun)
        self.nodes[inode].target = target
        link = by_id_name(info.identity.wwn)
        if link is not None:
            self._link(link, inode)
        return inode

    def add_device(self, parent: int, name: str, info: LunInfo, target: MountedTarget, *,
                   tape: TapeFile | None = None, changer: ChangerFile | None = None) -> int:
        """A tape drive's or a medium changer's file (one of ``tape``, ``changer``)."""
        inode = self._add(parent, name, info)
        node = self.nodes[inode]
        node.target, node.tape, node.changer = target, tape, changer
        return inode

    def path(self, inode: int) -> bytes:
        """The node's path from the mount's root (b"" for the root)."""
        parts = []
        while inode != ROOT_INODE:
            parts.append(self.nodes[inode].name)
            inode = self.nodes[inode].parent
        return b"/".join(reversed(parts))

    def _link(self, name: str, lun_inode: int) -> None:
        """by-id/NAME -> the LUN file, relative (so it holds wherever the mount is)."""
        if self.by_id is None:
            self.by_id = self.add_dir(ROOT_INODE, BY_ID)
        if os.fsencode(name) in self.nodes[self.by_id].children:
            return  # the same device seen twice (through another target): the first keeps the name
        link = self._add(self.by_id, name)
        self.nodes[link].link = b"../" + self.path(lun_inode)
        self._links[lun_inode] = link

    def remove(self, inode: int) -> list[tuple[int, bytes]]:
        """A LUN the target no longer has: gone from the tree, with its by-id link; open handles
        get ENXIO. Returns the (directory, name) entries that went, for the kernel to forget."""
        gone = [inode, *([self._links.pop(inode)] if inode in self._links else [])]
        entries = []
        for number in gone:
            node = self.nodes.pop(number)
            self.nodes[node.parent].children.pop(node.name, None)
            self.nodes[node.parent].mtime_ns = time.time_ns()
            entries.append((node.parent, node.name))
        self.gone.add(inode)
        return entries

    def lun_inodes(self, parent: int) -> dict[int, int]:
        """{LUN number: inode} of the LUN files directly under ``parent`` (or the root LUN)."""
        node = self.nodes[parent]
        if parent == ROOT_INODE and node.lun is not None:
            return {node.lun.lun: ROOT_INODE}
        found: dict[int, int] = {}
        for inode in node.children.values():
            lun = self.nodes[inode].lun
            if lun is not None:
                found[lun.lun] = inode
        return found

    def _add(self, parent: int, name: str, info: LunInfo | None = None, lun: Lun | None = None) -> int:
        if not usable_name(name):
            raise ValueError(f"cannot use {name!r} as a file name")
        raw = os.fsencode(name)
        node = Node(self._next_inode, raw, parent, lun, info)
        self._next_inode += 1
        self.nodes[node.inode] = node
        self.nodes[parent].children[raw] = node.inode
        self.nodes[parent].mtime_ns = node.mtime_ns
        return node.inode

    def luns(self) -> list[Lun]:
        return [n.lun for n in self.nodes.values() if n.lun is not None]

    def files(self) -> list[tuple[Lun, MountedTarget]]:
        """Every LUN shown, with the target it is reached through."""
        return [(n.lun, n.target) for n in self.nodes.values() if n.lun is not None and n.target is not None]

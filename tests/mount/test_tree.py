"""The inode tree: directories per target, LUN files, by-id links, removal (ENXIO afterwards, not
ENOENT), names a target may send that cannot be file names."""

from __future__ import annotations

import pytest
from iscsifs.block.client import LunInfo
from iscsifs.block.identity import Identity
from iscsifs.block.lun import Lun
from iscsifs.mount.tree import BY_ID, ROOT_INODE, Tree, by_id_name, usable_name
from iscsifs.scsi.response import Capacity, StandardInquiry


class _Target:
    """Enough of a MountedTarget for the tree, which only keeps it."""

    target_name = "iqn.2026-11.test:t"


def _lun(number: int, wwn: str = "") -> tuple[LunInfo, Lun]:
    capacity = Capacity(8, 512)
    info = LunInfo("iqn.2026-11.test:t", number, StandardInquiry(0, 0, False, 6, "V", "P", "1"), capacity,
                   Identity(serial=f"s{number}", wwn=wwn))
    return info, Lun(None, number, capacity)  # type: ignore[arg-type]  # the tree never runs a command


def test_directories_files_and_by_id_links():
    tree, target = Tree(), _Target()
    directory = tree.add_dir(ROOT_INODE, "iqn.2026-11.test:t", target)  # type: ignore[arg-type]
    one = tree.add_lun(directory, "1", *_lun(1, "naa.60000000000000000e00000000010001"), target)  # type: ignore[arg-type]
    two = tree.add_lun(directory, "2", *_lun(2, "t10.IET VIRTUAL-DISK"), target)  # type: ignore[arg-type]
    assert tree.lun_inodes(directory) == {1: one, 2: two}
    assert set(tree.root.children) == {b"iqn.2026-11.test:t", BY_ID.encode()}
    (link,) = tree.nodes[tree.by_id].children.items() if tree.by_id else ()
    assert link[0] == b"wwn-0x60000000000000000e00000000010001"  # no link for a T10 vendor id
    assert tree.nodes[link[1]].link == b"../iqn.2026-11.test:t/1"
    assert tree.nodes[directory].is_dir and not tree.nodes[one].is_dir and not tree.nodes[link[1]].is_dir
    assert [lun.lun for lun in tree.luns()] == [1, 2] and len(tree.files()) == 2


def test_a_removed_lun_takes_its_link_and_is_remembered_as_gone():
    tree, target = Tree(), _Target()
    one = tree.add_lun(ROOT_INODE, "1", *_lun(1, "eui.0011223344556677"), target)  # type: ignore[arg-type]
    link_dir = tree.by_id
    assert link_dir is not None and tree.nodes[link_dir].children
    entries = tree.remove(one)
    assert sorted(entries) == sorted([(ROOT_INODE, b"1"), (link_dir, b"wwn-0x0011223344556677")])
    assert one not in tree.nodes and one in tree.gone and not tree.nodes[link_dir].children
    assert tree.lun_inodes(ROOT_INODE) == {}


def test_the_root_itself_can_be_the_one_lun():
    tree, target = Tree(), _Target()
    info, lun = _lun(7)
    tree.set_root_lun(info, lun, target)  # type: ignore[arg-type]
    assert tree.lun_inodes(ROOT_INODE) == {7: ROOT_INODE}


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "nul\0", "x" * 256])
def test_names_that_cannot_be_file_names_are_refused(name):
    assert not usable_name(name)
    with pytest.raises(ValueError):
        Tree().add_dir(ROOT_INODE, name)


def test_by_id_names_follow_udev():
    assert by_id_name("naa.6001405fa4e4c0de") == "wwn-0x6001405fa4e4c0de"
    assert by_id_name("naa.60000000000000000e00000000010001") == "wwn-0x60000000000000000e00000000010001"
    assert by_id_name("eui.0011223344556677") == "wwn-0x0011223344556677"
    assert by_id_name("naa.XYZ") is None and by_id_name("") is None
    # A designator of a length SPC-4 does not give (a target's garbled page): no link, rather than a
    # name longer than a file name may be (the hostile-target soak found it).
    assert by_id_name("naa." + "ab" * 200) is None and by_id_name("naa.600140512345") is None

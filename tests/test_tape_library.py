"""A virtual tape library on a real tgtd, built as tgt's doc/README.vtl builds one
(``TgtDaemon.add_tape_library``): two tape drives, a medium changer and four tapes made by
``tgtimg``. The library comes up; libiscsi's ``iscsi-inq`` and ``iscsi-ls`` see the drives as
sequential-access devices (peripheral device type 1) and the changer as a medium changer (8);
``iscsifs ls --json`` lists them with those types, as it lists disks; and each tape image is
what tgtimg makes: a BOT header, the medium auxiliary memory, and an EOD header at 1152."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess

import pytest
from iscsifs.block.client import NotFoundError
from iscsifs.block.sync import ChangerLun, TapeLun
from iscsifs.proto.pdu import crc32c
from iscsifs.scsi.response import DeviceType
from iscsifs.scsi.smc import mtx_status_text

from support.tape_image import read_tape_image
from support.targets import ISCSIFS, needs_tgt, run
from support.tgt import TapeLibrary, TgtDaemon

pytestmark = [
    needs_tgt,
    pytest.mark.skipif(shutil.which("tgtimg") is None, reason="needs tgtimg (Debian package tgt)"),
    pytest.mark.timeout(120),
]

IQN = "iqn.2026-11.test.iscsifs:vtl"
TAPE_SIZE_MB = 64

# libiscsi's names for the peripheral device types it prints (scsi-lowlevel.h).
LIBISCSI_DEVICE_TYPES = {
    "DIRECT_ACCESS": DeviceType.DIRECT_ACCESS,
    "SEQUENTIAL_ACCESS": DeviceType.SEQUENTIAL_ACCESS,
    "MEDIA_CHANGER": DeviceType.MEDIUM_CHANGER,
    "STORAGE_ARRAY_CONTROLLER": DeviceType.STORAGE_ARRAY_CONTROLLER,
}

# tgt's tape image (usr/bs_ssc.h, usr/libssc.c): big-endian 48-byte block headers, the first
# (BOT) at 0, then the medium auxiliary memory (MAM, 1104 bytes), then the first real block
# header at 1152; a blank tape ends there with an EOD header, so tgtimg's file is 1200 bytes.
BLOCK_HEADER = struct.Struct(">4sIIIQQQQ")  # csum, ondisk_sz, blk_sz, blk_type, blk_num, prev, curr, next
assert BLOCK_HEADER.size == 48
MAM_OFFSET = 48
FIRST_BLOCK = 1152
BLANK_TAPE_SIZE = FIRST_BLOCK + BLOCK_HEADER.size
BLK_BOT = 0x10
BLK_EOD = 0x20
TGT_TAPE_VERSION = 2
MEDIUM_TYPE_DATA = 1


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A private tgtd with the library on target ``IQN``; tgtd is stopped whatever happens."""
    workdir = tmp_path_factory.mktemp("vtl")
    with TgtDaemon(workdir / "tgt") as tgt:
        lib = tgt.add_tape_library(IQN, workdir / "media", drives=2, tapes=4, tape_size_mb=TAPE_SIZE_MB)
        yield tgt, lib


def lun_url(tgt: TgtDaemon, lib: TapeLibrary, lun: int) -> str:
    return f"{tgt.url}/{lib.iqn}/{lun}"


def show_luns(tgt: TgtDaemon, iqn: str) -> dict[int, dict[str, str]]:
    """``tgtadm --op show --mode target``'s LUN information for target ``iqn``: {lun: {key: value}}."""
    out = tgt.tgtadm("--op", "show", "--mode", "target")
    section = re.search(rf"^Target \d+: {re.escape(iqn)}\n(.*?)(?=^Target \d+:|\Z)", out, re.M | re.S)
    assert section, out
    luns: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in section.group(1).splitlines():
        key, _, value = line.strip().partition(":")
        if key == "LUN" and value.strip().isdigit():
            current = luns[int(value)] = {}
        elif current is not None and value:
            current[key] = value.strip()
        elif key in ("Account information", "ACL information"):
            current = None
    return luns


def test_library_comes_up(library):
    tgt, lib = library
    assert lib.drive_luns == (1, 2) and lib.changer_lun == 3 and lib.luns == [1, 2, 3]
    assert lib.barcodes == ["00000001", "00000002", "00000003", "00000004"]
    assert lib.drive_addresses == (1, 2) and lib.picker_address == 3 and lib.slots == (4, 5, 6, 7)
    assert lib.slot_barcodes == {4: "00000001", 5: "00000002", 6: "00000003", 7: "00000004"}
    assert all(path.name == barcode and path.parent == lib.media_home for barcode, path in lib.tapes.items())
    assert tgt.proc is not None and tgt.proc.poll() is None
    luns = show_luns(tgt, lib.iqn)
    assert sorted(luns) == [0, 1, 2, 3]
    for lun, barcode in zip(lib.drive_luns, lib.barcodes, strict=False):
        # A drive is created on a tape image and taken offline: no medium loaded until the changer moves one in.
        assert luns[lun]["Type"] == "tape" and luns[lun]["Online"] == "No", luns[lun]
        assert luns[lun]["Backing store type"] == "ssc"
        assert luns[lun]["Backing store path"] == str(lib.tapes[barcode])
    changer = luns[lib.changer_lun]
    assert changer["Type"] == "changer" and changer["Online"] == "Yes", changer
    assert changer["Backing store type"] == "smc" and changer["Backing store path"] == str(lib.changer_backing)
    # Bound to every initiator, last, as README.vtl does.
    assert re.search(r"^\s*ACL information:\n\s+ALL$", tgt.tgtadm("--op", "show", "--mode", "target"), re.M)


def inquiry(url: str) -> dict[str, str]:
    """``iscsi-inq URL`` (standard INQUIRY) as {field: value}; fields repeat only for version descriptors."""
    r = run("iscsi-inq", url, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    fields: dict[str, str] = {}
    for line in r.stdout.decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key, value)
    return fields


@pytest.mark.skipif(shutil.which("iscsi-inq") is None, reason="needs iscsi-inq (Debian package libiscsi-bin)")
def test_inquiry_device_types(library):
    tgt, lib = library
    for lun in lib.drive_luns:
        fields = inquiry(lun_url(tgt, lib, lun))
        assert fields["Peripheral Qualifier"] == "CONNECTED"
        assert LIBISCSI_DEVICE_TYPES[fields["Peripheral Device Type"]] == 1 == DeviceType.SEQUENTIAL_ACCESS
        assert fields["Removable"] == "1"
        assert fields["Vendor"].rstrip() == "IET" and fields["Product"].rstrip() == "VIRTUAL-TAPE"
    fields = inquiry(lun_url(tgt, lib, lib.changer_lun))
    assert fields["Peripheral Qualifier"] == "CONNECTED"
    assert LIBISCSI_DEVICE_TYPES[fields["Peripheral Device Type"]] == 8 == DeviceType.MEDIUM_CHANGER
    assert fields["Removable"] == "1"
    assert fields["Vendor"].rstrip() == "IET" and fields["Product"].rstrip() == "VIRTUAL-CHANGER"


def iscsi_ls_types(url: str) -> dict[int, str]:
    """``iscsi-ls -s URL``: {lun: libiscsi's type name} (a drive without a tape adds "(No media loaded)")."""
    r = run("iscsi-ls", "-s", url, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^Lun:(\d+)\s+Type:(\S+)", r.stdout.decode(), re.M)}


def test_iscsifs_ls_lists_drives_and_changer(library):
    tgt, lib = library
    url = f"{tgt.url}/{lib.iqn}"
    r = run(*ISCSIFS, "ls", "--json", url)
    assert r.returncode == 0, r.stderr
    rows = {row["lun"]: row for row in json.loads(r.stdout)}
    assert sorted(rows) == [0, *lib.luns]
    # ls lists LUNs that are not disks as it lists disks, with their type and no size.
    expected = {0: ("controller", "Controller"), **{lun: ("tape", "VIRTUAL-TAPE") for lun in lib.drive_luns},
                lib.changer_lun: ("changer", "VIRTUAL-CHANGER")}
    for lun, (word, product) in expected.items():
        row = rows[lun]
        assert (row["type"], row["product"], row["vendor"]) == (word, product, "IET"), row
        assert row["target"] == lib.iqn and row["portal"] == tgt.portal
        assert row["size"] is None and row["block_size"] is None and row["provisioning"] is None, row
        assert row["reservations"] is None, row
    # Drives and the changer are named by their serial (a changer's READ ELEMENT STATUS names its
    # drives so): the one tgt shows for each LUN.
    shown = tgt.tgtadm("--op", "show", "--mode", "target")
    for lun in lib.luns:
        serial = shown.split(f"        LUN: {lun}\n", 1)[1].split("SCSI SN: ", 1)[1].split("\n", 1)[0].strip()
        assert rows[lun]["serial"] == serial, (lun, rows[lun])
    # The table says the same.
    r = run(*ISCSIFS, "ls", url)
    assert r.returncode == 0, r.stderr
    table = {int(line.split()[1]): line.split()[2:4] for line in r.stdout.decode().splitlines()[1:]}
    assert table == {lun: [word, "-"] for lun, (word, _) in expected.items()}
    # libiscsi agrees on every type.
    if shutil.which("iscsi-ls") is not None:
        types = iscsi_ls_types(tgt.url)
        assert {lun: LIBISCSI_DEVICE_TYPES[name] for lun, name in types.items()} == {
            0: DeviceType.STORAGE_ARRAY_CONTROLLER, 1: DeviceType.SEQUENTIAL_ACCESS,
            2: DeviceType.SEQUENTIAL_ACCESS, 3: DeviceType.MEDIUM_CHANGER}


def block_header(image: bytes, offset: int) -> tuple[int, int, int, int, int, int, int]:
    """The block header at ``offset``, its checksum checked: (ondisk_sz, blk_sz, blk_type, blk_num,
    prev, curr, next). tgt stores the CRC-32C of bytes 4..47 in host order (little-endian here)."""
    raw = image[offset:offset + BLOCK_HEADER.size]
    csum, *fields = BLOCK_HEADER.unpack(raw)
    assert int.from_bytes(csum, "little") == crc32c(raw[4:]), f"bad header checksum at {offset}"
    ondisk_sz, blk_sz, blk_type, blk_num, prev, curr, nxt = fields
    return ondisk_sz, blk_sz, blk_type, blk_num, prev, curr, nxt


def test_tape_images(library):
    tgt, lib = library
    assert len(lib.tapes) == 4 and lib.tape_size_mb == TAPE_SIZE_MB
    assert tgt.proc is not None and tgt.proc.poll() is None  # the drives hold their tapes open
    for barcode, path in lib.tapes.items():
        assert path.is_file(), path
        # tgtimg writes the headers only (the capacity is not allocated), and tgtd opening the
        # drives' tapes leaves them as they were.
        assert path.stat().st_size == BLANK_TAPE_SIZE, (path, path.stat().st_size)
        image = path.read_bytes()
        # Beginning of tape at 0: blk_sz is the capacity in MB, and it points at the first block.
        assert block_header(image, 0) == (0, TAPE_SIZE_MB, BLK_BOT, 0, 0, 0, FIRST_BLOCK)
        # The MAM: format version, remaining and maximum capacity, medium type, barcode.
        mam = image[MAM_OFFSET:FIRST_BLOCK]
        assert struct.unpack_from(">I", mam, 0)[0] == TGT_TAPE_VERSION
        assert struct.unpack_from(">QQ", mam, 8) == (TAPE_SIZE_MB << 20, TAPE_SIZE_MB << 20)
        assert mam[336] == MEDIUM_TYPE_DATA
        assert mam[568:600].rstrip(b" \0") == barcode.encode()
        # The first real block header at 1152: a blank tape's end of data, number 1, after BOT.
        assert block_header(image, FIRST_BLOCK) == (0, 0, BLK_EOD, 1, 0, FIRST_BLOCK, FIRST_BLOCK)
        # tgtimg reads it back the same way.
        r = subprocess.run(["tgtimg", "--op", "show", "--device-type", "tape", "--file", str(path)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert re.search(rf"^Media\s*: {barcode}\s*$", r.stdout, re.M), r.stdout
        assert f"Beginning of Tape(16): Capacity {TAPE_SIZE_MB} MB" in r.stdout, r.stdout
        assert re.search(rf"End of Data\(32\): Blk No\. 1, prev 0, curr {FIRST_BLOCK},\s+next {FIRST_BLOCK}",
                         r.stdout), r.stdout


def test_the_synchronous_api_loads_writes_reads_and_unloads(library):
    """``block.sync``: ChangerLun and TapeLun as a script uses them, each with its own login."""
    tgt, lib = library
    base = f"{tgt.url}/{lib.iqn}"
    with ChangerLun(f"{base}/{lib.changer_lun}") as changer:
        changer.load(4, drive=1)  # the last tape, into the second drive: no other test uses them
        assert "Data Transfer Element 1:Full (Storage Element 4 Loaded):VolumeTag = 00000004" in \
            mtx_status_text(changer.status())
    with TapeLun(f"{base}/{lib.drive_luns[1]}") as tape:
        assert tape.write_block(b"first block") is False
        tape.write_block(b"second, longer block" * 100)
    # Closing after the writes wrote the filemark, as st does: the image holds one file.
    assert read_tape_image(lib.tapes["00000004"]).files == [[b"first block", b"second, longer block" * 100], []]
    with TapeLun(f"{base}/{lib.drive_luns[1]}") as tape:
        tape.rewind()
        assert tape.read_block(4096) == b"first block"
        assert tape.read_block(4096) == b"second, longer block" * 100
        assert tape.read_block(4096) == b""  # the filemark
        assert tape.read_block(4096) == b""  # end of data
        assert tape.status().text().startswith("SCSI 2 tape drive:\nFile number=1, block number=0")
        # Any command, as sg_raw: INQUIRY says sequential-access (peripheral device type 1).
        inquiry = tape.raw(bytes.fromhex("12 00 00 00 24 00"), expected_in=36)
        assert inquiry.status == 0 and inquiry.data[0] & 0x1F == 1
    with ChangerLun(f"{base}/{lib.changer_lun}") as changer:
        assert changer.raw(bytes.fromhex("12 00 00 00 24 00"), expected_in=36).data[0] & 0x1F == 8
        changer.unload(drive=1)
        assert "Data Transfer Element 1:Empty" in mtx_status_text(changer.status())
    with pytest.raises(NotFoundError, match="is not a tape drive"):
        TapeLun(f"{base}/{lib.changer_lun}")

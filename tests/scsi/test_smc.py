"""Medium changers (SMC-3): raw CDB bytes from the standard's tables, the element address
assignment page, READ ELEMENT STATUS answers laid out as tgt 1.0.85 lays them out (8 bytes
short) and as the standard does, and the text ``mtx status`` prints for a README.vtl library."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsifs.proto.errors import LocalProtocolError
from iscsifs.scsi import smc
from iscsifs.scsi.response import Designator, ScsiParseError
from iscsifs.scsi.smc import ElementRange, ElementType, library_status, mtx_status_text

MT, ST, IE, DT = ElementType.MEDIUM_TRANSPORT, ElementType.STORAGE, ElementType.IMPORT_EXPORT, ElementType.DATA_TRANSFER


@pytest.mark.parametrize("built, hexcdb", [
    # opcode, VOLTAG|type, starting address (2), number of elements (2), CURDATA|DVCID,
    # allocation length (3), reserved, control
    (smc.read_element_status(ST, 4, 4, 0x1000), "b8" "12" "0004" "0004" "00" "001000" "00" "00"),
    (smc.read_element_status(DT, 1, 2, 0x10000, dvcid=True), "b8" "14" "0001" "0002" "01" "010000" "00" "00"),
    (smc.read_element_status(MT, 3, 1, 0xFF, voltag=False), "b8" "01" "0003" "0001" "00" "0000ff" "00" "00"),
    (smc.read_element_status(IE), "b8" "13" "0000" "ffff" "00" "00ffff" "00" "00"),
    # opcode, reserved, transport (2), source (2), destination (2), 2 reserved, INVERT, control
    (smc.move_medium(3, 4, 1), "a5" "00" "0003" "0004" "0001" "0000" "00" "00"),
    (smc.move_medium(0, 0x1234, 0xFFFF, invert=True), "a5" "00" "0000" "1234" "ffff" "0000" "01" "00"),
    # opcode, reserved, transport, source, first destination, second destination, INV1|INV2, control
    (smc.exchange_medium(3, 4, 5, 4), "a6" "00" "0003" "0004" "0005" "0004" "00" "00"),
    (smc.exchange_medium(3, 4, 5, 6, invert_first=True, invert_second=True),
     "a6" "00" "0003" "0004" "0005" "0006" "03" "00"),
    (smc.initialize_element_status(), "07" "0000000000"),
    (smc.mode_sense_element_address_assignment(), "1a" "08" "1d" "00" "88" "00"),  # mtx's, byte for byte
])
def test_cdb_bytes(built, hexcdb):
    assert built.hex() == hexcdb


@pytest.mark.parametrize("build", [
    lambda: smc.read_element_status(0),  # all types: garbled on tgt
    lambda: smc.read_element_status(5),
    lambda: smc.read_element_status(ST, 0x10000),
    lambda: smc.read_element_status(ST, allocation_length=1 << 24),
    lambda: smc.move_medium(0, -1, 1),
    lambda: smc.exchange_medium(0, 1, 2, 0x10000),
])
def test_out_of_range_fields_are_refused(build):
    with pytest.raises(LocalProtocolError):
        build()


# tgt's page 0x1D for the README.vtl layout (picker 3, storage 4..7, no import/export, drives 1..2)
TGT_PAGE_1D = bytes.fromhex("1d12" "0003" "0001" "0004" "0004" "0000" "0000" "0001" "0002" "0000")


@pytest.mark.parametrize("data, ten", [
    (bytes([3 + len(TGT_PAGE_1D), 0, 0, 0]) + TGT_PAGE_1D, False),  # DBD: what mtx asks for
    (bytes([11 + len(TGT_PAGE_1D), 0, 0, 8]) + bytes(8) + TGT_PAGE_1D, False),  # tgt with DBD clear
    (bytes([0, 6 + len(TGT_PAGE_1D), 0, 0, 0, 0, 0, 0]) + TGT_PAGE_1D, True),
])
def test_element_address_assignment(data, ten):
    page = smc.parse_element_address_assignment(data, ten)
    assert (page.medium_transport, page.storage, page.import_export, page.data_transfer) == \
        (ElementRange(3, 1), ElementRange(4, 4), ElementRange(0, 0), ElementRange(1, 2))
    assert list(page.range_of(ST).addresses) == [4, 5, 6, 7] and list(page.range_of(IE).addresses) == []


@pytest.mark.parametrize("data", [
    b"\x17\x00\x00",
    bytes(4) + TGT_PAGE_1D[:17],  # cut short
    bytes(4) + b"\x1c" + TGT_PAGE_1D[1:],  # another page
    bytes([0, 0, 0, 8]) + TGT_PAGE_1D,  # a block descriptor that is not there
])
def test_element_address_assignment_refused(data):
    with pytest.raises(ScsiParseError):
        smc.parse_element_address_assignment(data)


# -- READ ELEMENT STATUS as tgt 1.0.85 answers it (usr/smc.c, the notes' section 1.8) ---------


def tgt_descriptor(address: int, full: bool, *, source: int = 0, tag: str | None = None, voltag: bool = True,
                   dvcid: bool = False, drive: bool = False, serial: bytes = b"beaf11", asc: int = 0,
                   ascq: int = 0) -> bytes:
    d = bytearray(12)
    d[0:2] = address.to_bytes(2, "big")
    d[2] = 0x01 if full else 0
    d[4], d[5] = asc, ascq
    if source:
        d[9] = 0x80
        d[10:12] = source.to_bytes(2, "big")
    if voltag:
        d += f"{tag or '':<32}".encode() + bytes(4)
    # the identifier's 4-byte header is always there; with DVCID tgt adds 34 bytes for every element,
    # and fills them (and the header: code set ASCII, its device type as the identifier type) for drives
    ident = bytearray(38 if dvcid else 4)
    if dvcid and drive:
        ident[0:4] = bytes([0x02, 0x01, 0, 34])
        ident[4:38] = b"IET     " + b"VIRTUAL-TAPE    " + serial[:10].ljust(10, b"\0")
    return bytes(d + ident)


def tgt_answer(element_type: int, descriptors: list[bytes], *, voltag: bool = True, whole: bool = False) -> bytes:
    """tgt's answer, first element address wrong and 8 bytes short (it leaves the page header out
    of the length it sends); with ``whole``, as the standard would have it, all there."""
    length = len(descriptors[0])
    body = b"".join(descriptors)
    header = bytes([0, 7]) + len(descriptors).to_bytes(2, "big") + b"\0" + (8 + len(body)).to_bytes(3, "big")
    page = bytes([element_type, 0x80 if voltag else 0]) + length.to_bytes(2, "big") + b"\0" \
        + len(body).to_bytes(3, "big")
    return header + page + body if whole else (header + page + body)[: 8 + len(body)]


def readme_vtl(loaded: bool = True) -> list[bytes]:
    """README.vtl with 8 tapes: drives 1 and 2, picker 3, slots 4..11 with barcodes 00000001..8;
    with ``loaded``, `mtx load 1 0` was run (slot 4's tape is in drive 1)."""
    slots = [tgt_descriptor(a, not (loaded and a == 4), tag=None if loaded and a == 4 else f"{a - 3:08d}")
             for a in range(4, 12)]
    drives = [tgt_descriptor(1, loaded, source=4 if loaded else 0, tag="00000001" if loaded else None),
              tgt_descriptor(2, False)]
    return [tgt_answer(ST, slots), tgt_answer(DT, drives), tgt_answer(MT, [tgt_descriptor(3, False)])]


def test_tgt_storage_answer_with_its_last_descriptor_cut_short():
    answer = smc.parse_read_element_status(readme_vtl()[0])
    assert len(readme_vtl()[0]) == 8 + 8 * 52  # the page header's 8 bytes are missing at the end
    assert answer.number_of_elements == 8 and answer.received == 7 and not answer.complete
    (page,) = answer.pages
    assert (page.element_type, page.pvoltag, page.avoltag, page.descriptor_length) == (ST, True, False, 52)
    slots = answer.descriptors
    assert [s.address for s in slots] == list(range(4, 12))
    assert [s.full for s in slots] == [False] + [True] * 7
    assert [s.volume_tag for s in slots] == [None] + [f"{n:08d}" for n in range(2, 9)]
    assert [s.truncated for s in slots] == [False] * 7 + [True]
    last = slots[-1].primary_volume_tag
    assert last is not None and last.raw == b"00000008" + b" " * 24 + bytes(4)  # only padding was lost


def test_tgt_drive_answer_with_device_identifiers():
    drives = [tgt_descriptor(1, True, source=4, tag="00000001", dvcid=True, drive=True),
              tgt_descriptor(2, False, dvcid=True, drive=True, serial=b"beaf12")]
    answer = smc.parse_read_element_status(tgt_answer(DT, drives))
    assert answer.pages[0].descriptor_length == 86
    one, two = answer.descriptors
    assert (one.address, one.full, one.svalid, one.source, one.volume_tag) == (1, True, True, 4, "00000001")
    assert one.identifier == Designator(2, 0, 1, b"IET     VIRTUAL-TAPE    beaf11\0\0\0\0")
    assert one.identifier.text() == "t10.IET VIRTUAL-TAPE beaf11"
    assert (two.full, two.source, two.volume_tag, two.truncated) == (False, None, None, True)
    assert two.identifier is not None and two.identifier.value == b"IET     VIRTUAL-TAPE    be"  # cut short
    # without VOLTAG the identifier comes straight after the fixed 12 bytes (50-byte descriptors)
    bare = [tgt_descriptor(1, True, source=5, voltag=False, dvcid=True, drive=True), tgt_descriptor(
        2, False, voltag=False, dvcid=True, drive=True)]
    one, _ = smc.parse_read_element_status(tgt_answer(DT, bare, voltag=False)).descriptors
    assert one.primary_volume_tag is None and one.source == 5 and one.identifier is not None
    assert one.identifier.value.startswith(b"IET     VIRTUAL-TAPE    beaf11")


def test_tgt_without_voltag_loses_the_last_source_address():
    """16-byte descriptors, 8 bytes short: the last drive's SVALID and source are gone."""
    drives = [tgt_descriptor(1, True, source=4, voltag=False), tgt_descriptor(2, True, source=5, voltag=False)]
    one, two = smc.parse_read_element_status(tgt_answer(DT, drives, voltag=False)).descriptors
    assert (one.source, one.truncated) == (4, False)
    assert (two.address, two.full, two.source, two.truncated) == (2, True, None, True)


def test_standard_answer_with_several_pages_and_flags():
    """Element type 0 as SMC-3 lays it out (not as tgt does): each page after the previous."""
    def page(element_type: int, bits: int, descriptors: list[bytes]) -> bytes:
        body = b"".join(descriptors)
        return bytes([element_type, bits]) + len(descriptors[0]).to_bytes(2, "big") + b"\0" \
            + len(body).to_bytes(3, "big") + body

    ie = bytes([0, 0x10, 0x02 | 0x08 | 0x01 | 0x20 | 0x10, 0, 0, 0, 0, 0, 0, 0x40, 0, 0])
    tags = b"TAPE01".ljust(32) + b"\0\0\0\x07" + b"ALT9".ljust(32) + b"\0\0\0\0"
    pages = page(IE, 0xC0, [ie + tags]) + page(MT, 0, [bytes([0, 1, 0x04, 0, 0x3B, 0x0D, 0, 0, 0, 0, 0, 0])])
    data = bytes([0, 1, 0, 2, 0]) + len(pages).to_bytes(3, "big") + pages
    answer = smc.parse_read_element_status(data)
    assert answer.complete and [p.element_type for p in answer.pages] == [IE, MT]
    port, arm = answer.descriptors
    assert (port.address, port.full, port.import_export, port.access, port.exception, port.invert) == \
        (16, True, True, True, False, True)
    assert port.primary_volume_tag == smc.VolumeTag("TAPE01", 7, tags[:36])
    assert port.alternate_volume_tag is not None and port.alternate_volume_tag.identifier == "ALT9"
    assert (arm.exception, arm.asc, arm.ascq, arm.full) == (True, 0x3B, 0x0D, False)


@pytest.mark.parametrize("data", [
    bytes(7),
    bytes([0, 1, 0, 1, 0, 0, 0, 20]) + bytes([9, 0x80, 0, 12, 0, 0, 0, 12]) + bytes(12),  # element type 9
    bytes([0, 1, 0, 1, 0, 0, 0, 20]) + bytes([2, 0x80, 0, 3, 0, 0, 0, 12]) + bytes(12),  # 3-byte descriptors
    bytes([0, 1, 0, 1, 0, 0, 0, 20]) + bytes([2, 0x80, 0, 12, 0, 0, 0, 13]) + bytes(12),  # not whole ones
])
def test_malformed_element_status_is_refused(data):
    with pytest.raises(ScsiParseError):
        smc.parse_read_element_status(data)


def test_empty_answers():
    assert smc.parse_read_element_status(bytes(8)).pages == ()
    answer = smc.parse_read_element_status(bytes([0, 4, 0, 1, 0, 0, 0, 8]) + bytes([2, 0x80, 0, 52, 0, 0, 0, 52]))
    assert answer.number_of_elements == 1 and answer.received == 0 and not answer.complete


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_only_raise_scsi_parse_error(data):
    try:
        answer = smc.parse_read_element_status(data)
    except ScsiParseError:
        pass
    else:
        mtx_status_text(library_status([answer]))  # whatever parsed can be shown
    try:
        smc.parse_element_address_assignment(data)
    except ScsiParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ElementType), st.lists(st.tuples(st.integers(0, 0xFFFF), st.booleans(),
                                                        st.integers(0, 0xFFFF), st.text("0123456789AZ", max_size=32)),
                                              min_size=1, max_size=20), st.booleans())
def test_descriptors_round_trip(element_type, elements, voltag):
    descriptors = [tgt_descriptor(a, full, source=src, tag=tag, voltag=voltag) for a, full, src, tag in elements]
    answer = smc.parse_read_element_status(tgt_answer(element_type, descriptors, voltag=voltag))
    assert answer.number_of_elements == len(elements) and answer.received == len(elements) - 1
    for e, (address, full, source, tag) in zip(answer.descriptors, elements, strict=True):
        assert (e.element_type, e.address, e.full) == (element_type, address, full)
        if not e.truncated or voltag:
            assert e.source == (source or None)
        assert e.volume_tag == ((tag or None) if voltag else None)


# -- mtx status ----------------------------------------------------------------------------------


def status_of(answers: list[bytes]) -> smc.LibraryStatus:
    return library_status(smc.parse_read_element_status(a) for a in answers)


def test_library_status_of_readme_vtl():
    lib = status_of(readme_vtl())
    assert [d.address for d in lib.drives] == [1, 2] and [t.address for t in lib.transports] == [3]
    assert [s.address for s in lib.slots] == list(range(4, 12)) and lib.import_export == ()
    assert not lib.complete  # tgt: every answer is 8 bytes short
    drive = lib.drives[0]
    assert (drive.full, drive.volume_tag, drive.source, lib.source_slot(drive)) == (True, "00000001", 4, 1)
    assert lib.source_slot(lib.drives[1]) is None and lib.slot_number(11) == 8 and lib.slot_number(1) is None


def printf(fmt: str, *args: object) -> str:
    """C's printf, for mtx's format strings copied as they are."""
    return fmt % args


def test_mtx_status_for_readme_vtl():
    """mtx.c Status(): its format strings filled in by hand. tgt's tags are 32 characters padded
    with spaces, and mtx prints them as they are; an empty slot's tag is all spaces."""
    spaces = " " * 24
    expected = [
        printf("  Storage Changer %s:%d Drives, %d Slots ( %d Import/Export )", "/dev/sg3", 2, 8, 0),
        printf("Data Transfer Element %d:", 0) + printf("Full (Storage Element %d Loaded)", 1)
        + printf(":VolumeTag = %s", "00000001" + spaces),
        printf("Data Transfer Element %d:", 1) + "Empty",
        printf("      Storage Element %d%s:%s", 1, "", "Empty") + printf(":VolumeTag=%s", " " * 32),
    ] + [printf("      Storage Element %d%s:%s", n, "", "Full ") + printf(":VolumeTag=%s", f"{n:08d}" + spaces)
         for n in range(2, 9)]
    assert mtx_status_text(status_of(readme_vtl()), "/dev/sg3").split("\n") == [*expected, ""]
    # the text of the notes (section 2), line by line
    text = mtx_status_text(status_of(readme_vtl()), "/dev/sgN").splitlines()
    assert text[:5] == [
        "  Storage Changer /dev/sgN:2 Drives, 8 Slots ( 0 Import/Export )",
        "Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = 00000001" + spaces,
        "Data Transfer Element 1:Empty",
        "      Storage Element 1:Empty:VolumeTag=" + " " * 32,
        "      Storage Element 2:Full :VolumeTag=00000002" + spaces,
    ]
    unloaded = mtx_status_text(status_of(readme_vtl(loaded=False))).splitlines()
    assert unloaded[0] == "  Storage Changer /dev/changer:2 Drives, 8 Slots ( 0 Import/Export )"
    assert unloaded[1:3] == ["Data Transfer Element 0:Empty", "Data Transfer Element 1:Empty"]
    assert unloaded[3] == "      Storage Element 1:Full :VolumeTag=00000001" + spaces


def test_mtx_status_without_barcodes_and_with_import_export():
    """``mtx nobarcode``: no tags. Import/export elements follow the slots, numbered on. A drive
    whose source slot is full (or unknown) is given the first empty slot, as mtx does."""
    slots = [tgt_descriptor(a, full, voltag=False) for a, full in ((10, True), (11, False), (12, False))]
    ports = [tgt_descriptor(20, False, voltag=False), tgt_descriptor(21, True, voltag=False)]
    drives = [tgt_descriptor(1, True, source=10, voltag=False), tgt_descriptor(2, True, voltag=False),
              tgt_descriptor(3, True, source=12, voltag=False)]
    whole = [tgt_answer(t, e, voltag=False, whole=True) for t, e in ((ST, slots), (IE, ports), (DT, drives))]
    assert mtx_status_text(status_of(whole), "/dev/sg9").splitlines() == [
        "  Storage Changer /dev/sg9:3 Drives, 5 Slots ( 2 Import/Export )",
        "Data Transfer Element 0:Full (Storage Element 2 Loaded)",  # slot 10 is full: first empty, 11
        "Data Transfer Element 1:Full (Storage Element 3 Loaded)",  # no source: the next empty one
        "Data Transfer Element 2:Full (Storage Element 3 Loaded)",  # slot 12 is empty: its source
        "      Storage Element 1:Full ",
        "      Storage Element 2:Empty",
        "      Storage Element 3:Empty",
        "      Storage Element 4 IMPORT/EXPORT:Empty",
        "      Storage Element 5 IMPORT/EXPORT:Full ",
    ]
    # no empty slot left for a drive without a source: Unknown
    full = [tgt_answer(ST, [tgt_descriptor(10, True, voltag=False)], voltag=False, whole=True),
            tgt_answer(DT, [tgt_descriptor(1, True, voltag=False)], voltag=False, whole=True)]
    assert mtx_status_text(status_of(full)).splitlines()[1] == \
        "Data Transfer Element 0:Full (Unknown Storage Element Loaded)"


def test_mtx_tags_stop_where_mtx_stops():
    """copy_barcode: a byte below 32 or above 127 ends the tag; the alternate tag follows."""
    tag = b"AB\x01CD".ljust(32) + bytes(4)
    descriptor = bytes([0, 4, 1]) + bytes(9) + tag + b"ALT".ljust(32, b"\xff") + bytes(4)
    body = bytes([2, 0xC0, 0, len(descriptor), 0, 0, 0, len(descriptor)]) + descriptor
    data = bytes([0, 4, 0, 1, 0]) + len(body).to_bytes(3, "big") + body
    drive = tgt_answer(DT, [tgt_descriptor(1, False)], whole=True)
    text = mtx_status_text(library_status([smc.parse_read_element_status(data), smc.parse_read_element_status(drive)]))
    assert text.splitlines()[2] == "      Storage Element 1:Full :VolumeTag=AB:AlternateVolumeTag=ALT"

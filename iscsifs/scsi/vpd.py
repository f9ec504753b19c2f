"""The sans-I/O half of ``iscsifs inq`` and ``iscsifs opcodes``: standard INQUIRY data (SPC-4
§6.6.2), the VPD pages a disk or tape names itself and its limits with (SPC-4 §7.8, SBC-3 §6.6),
and REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35), each decoded into a frozen dataclass that
``dataclasses.asdict`` turns into JSON, and rendered line for line as sg3_utils 1.46 prints it
(``sg_inq``, ``sg_vpd``, ``sg_opcodes``), so that what an admin knows from those tools reads the same.

The field names are the standards'. ``iscsifs.scsi.response`` keeps the short forms the mount
needs (vendor, WWN, limits); these parsers build on it where it reaches.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from iscsifs.scsi.raw import hex_lines
from iscsifs.scsi.response import (
    BlockLimits,
    Designator,
    DeviceType,
    Provisioning,
    ScsiParseError,
    Vpd,
    parse_inquiry,
    parse_unit_serial_number,
    vpd_body,
)

BLOCK_DEVICE_CHARACTERISTICS = 0xB1  # SBC-3 §6.6.2; response.Vpd does not name it


# -- standard INQUIRY ------------------------------------------------------------------------------

# sg3_utils' words for each peripheral device type (SPC-4 Table 49).
_DEVICE_TYPE_TEXT: dict[int, str] = {
    0x00: "disk", 0x01: "tape", 0x02: "printer", 0x03: "processor", 0x04: "write once optical disk",
    0x05: "cd/dvd", 0x06: "scanner", 0x07: "optical memory device", 0x08: "medium changer",
    0x09: "communications", 0x0A: "graphics [0xa]", 0x0B: "graphics [0xb]", 0x0C: "storage array controller",
    0x0D: "enclosure services device", 0x0E: "simplified direct access device",
    0x0F: "optical card reader/writer device", 0x10: "bridge controller commands", 0x11: "object based storage",
    0x12: "automation/driver interface", 0x13: "security manager device", 0x14: "host managed zoned block",
    0x1E: "well known logical unit", 0x1F: "unknown or no device type",
}

# The VERSION field (SPC-4 §6.6.2); sg_inq reads its low three bits, old ISO/ECMA codes included.
_VERSION_TEXT = ("no conformance claimed", "SCSI-1", "SCSI-2", "SPC", "SPC-2", "SPC-3", "SPC-4", "SPC-5")

_QUALIFIER_TEXT = {0: "", 1: " [PQ indicates LU temporarily unavailable]",
                   3: " [PQ indicates LU not accessible via this port]"}


def device_type_text(code: int) -> str:
    return _DEVICE_TYPE_TEXT.get(code, f"0x{code:x}")


def _field(data: bytes, start: int, end: int) -> str | None:
    """An identification field as far as it arrived (None: not at all); trailing spaces are
    kept, as sg_inq prints them, and a NUL ends it, as in C."""
    if len(data) <= start:
        return None
    return data[start:end].split(b"\0", 1)[0].decode("latin-1")  # byte for byte, as sg_inq prints them


@dataclass(frozen=True, slots=True)
class StandardInquiryData:
    """Standard INQUIRY data (SPC-4 §6.6.2) with every field sg_inq shows. ``fetched`` is how many
    bytes arrived; fields past it are zero (flags) or None (identification)."""

    peripheral_qualifier: int
    peripheral_device_type: int
    rmb: bool
    lu_cong: bool
    hot_pluggable: int
    version: int
    aerc: bool  # obsolete, shown in brackets
    trmtsk: bool  # obsolete
    normaca: bool
    hisup: bool
    response_data_format: int
    additional_length: int
    sccs: bool
    acc: bool
    tpgs: int
    third_party_copy: bool
    protect: bool
    bque: bool  # obsolete
    encserv: bool
    vs_6: bool  # the vendor-specific bit of byte 6
    multip: bool
    mchngr: bool  # obsolete
    ackreqq: bool  # obsolete
    addr16: bool
    reladr: bool  # obsolete
    wbus16: bool
    sync: bool
    linked: bool  # obsolete
    trandis: bool  # obsolete
    cmdque: bool
    t10_vendor_identification: str | None
    product_identification: str | None
    product_revision_level: str | None
    clocking: int | None  # SPI-5 byte 56, when it arrived
    qas: bool
    ius: bool
    version_descriptors: tuple[int, ...]
    fetched: int

    @property
    def length(self) -> int:
        """What the target says the whole answer is (ADDITIONAL LENGTH + 5)."""
        return self.additional_length + 5


def parse_standard_inquiry(data: bytes | bytearray | memoryview) -> StandardInquiryData:
    d = bytes(data)
    basic = parse_inquiry(d)  # refuses what is too short to have a device type and version
    z = d[:96].ljust(8, b"\0")
    b1, b3, b5, b6, b7 = z[1], z[3], z[5], z[6], z[7]
    spi = d[56] if len(d) > 56 else None
    descriptors = tuple(int.from_bytes(d[i : i + 2], "big") for i in range(58, min(len(d), 74) - 1, 2))
    return StandardInquiryData(
        peripheral_qualifier=basic.peripheral_qualifier, peripheral_device_type=basic.device_type,
        rmb=basic.removable, lu_cong=bool(b1 & 0x40), hot_pluggable=(b1 >> 4) & 0x03, version=basic.version,
        aerc=bool(b3 & 0x80), trmtsk=bool(b3 & 0x40), normaca=bool(b3 & 0x20), hisup=bool(b3 & 0x10),
        response_data_format=b3 & 0x0F, additional_length=d[4],
        sccs=bool(b5 & 0x80), acc=bool(b5 & 0x40), tpgs=(b5 >> 4) & 0x03, third_party_copy=bool(b5 & 0x08),
        protect=bool(b5 & 0x01),
        bque=bool(b6 & 0x80), encserv=bool(b6 & 0x40), vs_6=bool(b6 & 0x20), multip=bool(b6 & 0x10),
        mchngr=bool(b6 & 0x08), ackreqq=bool(b6 & 0x04), addr16=bool(b6 & 0x01),
        reladr=bool(b7 & 0x80), wbus16=bool(b7 & 0x20), sync=bool(b7 & 0x10), linked=bool(b7 & 0x08),
        trandis=bool(b7 & 0x04), cmdque=bool(b7 & 0x02),
        t10_vendor_identification=_field(d, 8, 16), product_identification=_field(d, 16, 32),
        product_revision_level=_field(d, 32, 36),
        clocking=None if spi is None else (spi >> 2) & 0x03, qas=bool(spi and spi & 0x02),
        ius=bool(spi and spi & 0x01), version_descriptors=tuple(v for v in descriptors if v), fetched=len(d),
    )


def render_standard_inquiry(inq: StandardInquiryData) -> list[str]:
    """``sg_inq`` without options."""

    def n(flag: bool) -> int:
        return int(flag)

    pq = inq.peripheral_qualifier
    qualifier = _QUALIFIER_TEXT.get(pq, f" [reserved or vendor specific qualifier [{pq}]]")
    multip = f"MultiP={n(inq.multip)}" + (f" (VS={n(inq.vs_6)})" if inq.multip else "")
    lines = [
        "standard INQUIRY:" + qualifier,
        f"  PQual={inq.peripheral_qualifier}  PDT={inq.peripheral_device_type}  RMB={n(inq.rmb)}  "
        f"LU_CONG={n(inq.lu_cong)}  hot_pluggable={inq.hot_pluggable}  version=0x{inq.version:02x}  "
        f"[{_VERSION_TEXT[inq.version & 0x07]}]",
        f"  [AERC={n(inq.aerc)}]  [TrmTsk={n(inq.trmtsk)}]  NormACA={n(inq.normaca)}  HiSUP={n(inq.hisup)}  "
        f"Resp_data_format={inq.response_data_format}",
        f"  SCCS={n(inq.sccs)}  ACC={n(inq.acc)}  TPGS={inq.tpgs}  3PC={n(inq.third_party_copy)}  "
        f"Protect={n(inq.protect)}  [BQue={n(inq.bque)}]",
        f"  EncServ={n(inq.encserv)}  {multip}  [MChngr={n(inq.mchngr)}]  [ACKREQQ={n(inq.ackreqq)}]  "
        f"Addr16={n(inq.addr16)}",
        f"  [RelAdr={n(inq.reladr)}]  WBus16={n(inq.wbus16)}  Sync={n(inq.sync)}  [Linked={n(inq.linked)}]  "
        f"[TranDis={n(inq.trandis)}]  CmdQue={n(inq.cmdque)}",
    ]
    if inq.clocking is not None:
        lines.append(f"  [SPI: Clocking=0x{inq.clocking:x}  QAS={n(inq.qas)}  IUS={n(inq.ius)}]")
    kind = f"   Peripheral device type: {device_type_text(inq.peripheral_device_type)}"
    length = f"    length={inq.length} (0x{inq.length:x})"
    if inq.fetched < inq.length:
        length += f", but only fetched {inq.fetched} bytes"
    if inq.length < 36 and inq.version & 0x07 >= 2:
        lines += [length, f"  [for SCSI>=2, len>=36 is expected]{kind}"]
    else:
        lines.append(length + kind)
    if inq.fetched <= 8:
        return [*lines, f" Inquiry response length={inq.fetched}, no vendor, product or revision data"]
    vendor = inq.t10_vendor_identification
    # sg_inq turns tabs into spaces in the vendor field alone.
    for label, value in (("Vendor identification", vendor and vendor.replace("\t", " ")),
                         ("Product identification", inq.product_identification),
                         ("Product revision level", inq.product_revision_level)):
        lines.append(f" {label}: {'<none>' if value is None else value}")
    return lines


# -- VPD page 0x00: supported pages ----------------------------------------------------------------

# sg_vpd's names and abbreviations of the pages SPC-4 §7.8, SBC-3 §6.6 and SSC-4 define.
_VPD_PAGE_TEXT: dict[int, str] = {
    0x00: "Supported VPD pages [sv]", 0x80: "Unit serial number [sn]", 0x83: "Device identification [di]",
    0x84: "Software interface identification [sii]", 0x85: "Management network addresses [mna]",
    0x86: "Extended inquiry data [ei]", 0x87: "Mode page policy [mpp]", 0x88: "SCSI ports [sp]",
    0x89: "ATA information (SAT) [ai]", 0x8A: "Power condition [pc]", 0x8B: "Device constituents [dc]",
    0x8F: "Third party copy [tpc]",
    0xB0: "Block limits (SBC) [bl]", 0xB1: "Block device characteristics (SBC) [bdc]",
    0xB2: "Logical block provisioning (SBC) [lbpv]",
}
_SSC_VPD_PAGE_TEXT: dict[int, str] = {
    0xB0: "Sequential access device capabilities (SSC) [sad]",
    0xB1: "Manufacturer assigned serial number (SSC) [mas]", 0xB2: "TapeAlert supported flags (SSC) [tas]",
}


@dataclass(frozen=True, slots=True)
class SupportedVpdPages:
    peripheral_qualifier: int
    peripheral_device_type: int
    pages: tuple[int, ...]  # in the target's order, as sg_vpd lists them


def _vpd(data: bytes | bytearray | memoryview, page: int) -> tuple[int, int, bytes]:
    """(peripheral qualifier, device type, page body as far as it arrived)."""
    body = vpd_body(data, page)  # refuses an answer that is not this page
    return data[0] >> 5, data[0] & 0x1F, body


def parse_supported_vpd_pages(data: bytes | bytearray | memoryview) -> SupportedVpdPages:
    pq, pdt, body = _vpd(data, Vpd.SUPPORTED_PAGES)
    return SupportedVpdPages(pq, pdt, tuple(body))


def vpd_page_text(page: int, device_type: int) -> str:
    if device_type == DeviceType.SEQUENTIAL_ACCESS and page in _SSC_VPD_PAGE_TEXT:
        return _SSC_VPD_PAGE_TEXT[page]
    return _VPD_PAGE_TEXT.get(page, f"0x{page:02x}")


def render_supported_vpd_pages(page: SupportedVpdPages) -> list[str]:
    return ["Supported VPD pages VPD page:",
            *(f"  {vpd_page_text(p, page.peripheral_device_type)}" for p in page.pages)]


# -- VPD page 0x80: unit serial number -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnitSerialNumber:
    peripheral_qualifier: int
    peripheral_device_type: int
    product_serial_number: str  # without the padding
    as_sent: str  # with it (tgt right-aligns the serial in 36 characters)


def parse_unit_serial_number_page(data: bytes | bytearray | memoryview) -> UnitSerialNumber:
    pq, pdt, body = _vpd(data, Vpd.UNIT_SERIAL_NUMBER)
    as_sent = body.split(b"\0", 1)[0].decode("ascii", "replace")
    return UnitSerialNumber(pq, pdt, parse_unit_serial_number(data), as_sent)


def render_unit_serial_number(page: UnitSerialNumber) -> list[str]:
    return ["Unit serial number VPD page:", f"  Unit serial number: {page.as_sent}"]


# -- VPD page 0x83: device identification ----------------------------------------------------------

_CODE_SET_TEXT = {1: "Binary", 2: "ASCII", 3: "UTF-8"}
_ASSOCIATION_TEXT = ("Addressed logical unit:", "Target port:", "Target device that contains addressed lu:")
_DESIGNATOR_TYPE_TEXT = (
    "vendor specific [0x0]", "T10 vendor identification", "EUI-64 based", "NAA", "Relative target port",
    "Target port group", "Logical unit group", "MD5 logical unit identifier", "SCSI name string",
    "Protocol specific port identifier", "UUID identifier",
)
# SPC-4 §7.6.1 protocol identifiers, in sg3_utils' words; 0xc..0xe as sg3_utils misprints them.
PROTOCOL_TEXT: dict[int, str] = {
    0x0: "Fibre Channel Protocol for SCSI (FCP-5)", 0x1: "SCSI Parallel Interface (SPI-5)",
    0x2: "Serial Storage Architecture SCSI-3 Protocol (SSA-S3P)", 0x3: "Serial Bus Protocol for IEEE 1394 (SBP-3)",
    0x4: "SCSI RDMA Protocol (SRP)", 0x5: "Internet SCSI (iSCSI)", 0x6: "Serial Attached SCSI Protocol (SPL-4)",
    0x7: "Automation/Drive Interface Transport (ADT-2)", 0x8: "AT Attachment Interface (ACS-2)",
    0x9: "USB Attached SCSI (UAS-2)", 0xA: "SCSI over PCI Express (SOP)", 0xB: "PCIe", 0xC: "Oxc", 0xD: "Oxd",
    0xE: "Oxe", 0xF: "No specific protocol",
}


@dataclass(frozen=True, slots=True)
class IdentificationDescriptor:
    """One designation descriptor of VPD page 0x83 (SPC-4 §7.8.6.1), all fields."""

    protocol_identifier: int
    code_set: int  # 1 binary, 2 ASCII, 3 UTF-8
    piv: bool  # PROTOCOL IDENTIFIER is valid (for a target port or device)
    association: int  # 0 the logical unit, 1 the target port, 2 the target device
    designator_type: int  # 1 T10 vendor, 2 EUI-64, 3 NAA, 4 relative port, 5 port group, 6 LU group, ...
    designator: str  # the bytes, in hex

    @property
    def value(self) -> bytes:
        return bytes.fromhex(self.designator)

    def as_designator(self) -> Designator:
        """The short form ``iscsifs.scsi.response`` names the LUN's WWN from."""
        return Designator(self.code_set, self.association, self.designator_type, self.value)


@dataclass(frozen=True, slots=True)
class DeviceIdentification:
    peripheral_qualifier: int
    peripheral_device_type: int
    descriptors: tuple[IdentificationDescriptor, ...]


def parse_device_identification_page(data: bytes | bytearray | memoryview) -> DeviceIdentification:
    pq, pdt, body = _vpd(data, Vpd.DEVICE_IDENTIFICATION)
    out: list[IdentificationDescriptor] = []
    at = 0
    while at + 4 <= len(body):
        value = body[at + 4 : at + 4 + body[at + 3]]
        if len(value) < body[at + 3]:
            break  # cut short by the allocation length, as response.parse_device_identification does
        out.append(IdentificationDescriptor(body[at] >> 4, body[at] & 0x0F, bool(body[at + 1] & 0x80),
                                            (body[at + 1] >> 4) & 0x03, body[at + 1] & 0x0F, value.hex()))
        at += 4 + len(value)
    return DeviceIdentification(pq, pdt, tuple(out))


def _c_text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


_WRONG_PORT = "      << expected binary code_set, target port association, length 4 >>"


def designator_lines(d: IdentificationDescriptor) -> list[str]:
    """The lines sg_vpd prints under one "designator type:" line."""
    v, t, cs = d.value, d.designator_type, d.code_set
    if t == 0:
        # sg_vpd prints it as text when it starts printable, whatever the rest is.
        if cs in (1, 2) and (not v or 0x20 <= v[0] < 0x7F):
            return ["      vendor specific: " + v.split(b"\0", 1)[0].decode("latin-1")]
        return ["      vendor specific:", *hex_lines(v, ascii_column=True)]
    if t == 1:
        lines = [f"      vendor id: {_c_text(v[:8])}"]
        if len(v) > 8:
            rest = _c_text(v[8:]) if cs in (2, 3) else f"0x{v[8:].hex()}"
            lines.append(f"      vendor specific: {rest}")
        return lines
    if t == 2:
        if len(v) in (8, 12, 16):
            return [f"      0x{v.hex()}"]
        return [f"      << expect 8, 12 and 16 byte EUI, got {len(v)} >>", *hex_lines(v, ascii_column=False)]
    if t == 3:
        if cs != 1:
            return [f"      << unexpected code set {cs} for NAA >>", *hex_lines(v, ascii_column=False)]
        naa = v[0] >> 4 if v else 0
        if naa not in (2, 3, 5, 6):
            return [f"      << unexpected NAA [0x{naa:x}] >>", *hex_lines(v, ascii_column=False)]
        if len(v) != (16 if naa == 6 else 8):  # SPC-4 §7.8.6.6: NAA 6 is the 16-byte registered extended
            return [f"      << unexpected NAA {naa} identifier length: 0x{len(v):x} >>",
                    *hex_lines(v, ascii_column=False)]
        return [f"      0x{v.hex()}"]
    if t in (4, 5):
        if cs != 1 or d.association != 1 or len(v) != 4:
            return [_WRONG_PORT, *hex_lines(v, ascii_column=False)]
        what = "Relative target port" if t == 4 else "Target port group"
        return [f"      {what}: 0x{int.from_bytes(v[2:4], 'big'):x}"]
    if t == 6:
        if cs != 1 or d.association != 0 or len(v) != 4:
            return ["      << expected binary code_set, logical unit association, length 4 >>",
                    *hex_lines(v, ascii_column=False)]
        return [f"      Logical unit group: 0x{int.from_bytes(v[2:4], 'big'):x}"]
    if t == 7:
        if cs != 1 or d.association != 0:
            return ["      << expected binary code_set, logical unit association >>", *hex_lines(v, ascii_column=False)]
        return ["      MD5 logical unit identifier:", *hex_lines(v, ascii_column=False)]
    if t == 8:
        if cs not in (2, 3):
            return ["      << expected UTF-8 code_set >>", *hex_lines(v, ascii_column=True)]
        return ["      SCSI name string:", f"      {_c_text(v)}"]
    if t == 10 and cs != 1:
        return ["      << expected binary code_set >>", *hex_lines(v, ascii_column=True)]
    if t == 10 and len(v) == 18 and v[0] >> 4 == 1:
        u = v[2:18].hex()
        return [f"      Locally assigned UUID: {u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"]
    if t == 10:
        return ["      << expected locally assigned UUID, 16 bytes long >>", *hex_lines(v, ascii_column=True)]
    # Type 9 (protocol specific port identifier) and the reserved types: the bytes as they came.
    return [f"      reserved designator=0x{t:x}", *hex_lines(v, ascii_column=False)]


def render_device_identification(page: DeviceIdentification) -> list[str]:
    """sg_vpd groups the descriptors by association; it leaves out association 3 (reserved)."""
    lines = ["Device Identification VPD page:"]
    for association, heading in enumerate(_ASSOCIATION_TEXT):
        group = [d for d in page.descriptors if d.association == association]
        if group:
            lines.append(f"  {heading}")
        for d in group:
            kind = (_DESIGNATOR_TYPE_TEXT[d.designator_type] if d.designator_type < len(_DESIGNATOR_TYPE_TEXT)
                    else f"Reserved [0x{d.designator_type:x}]")
            code_set = _CODE_SET_TEXT.get(d.code_set, f"Reserved [0x{d.code_set:x}]")
            lines.append(f"    designator type: {kind},  code set: {code_set}")
            if d.piv and association in (1, 2):
                lines.append(f"     transport: {PROTOCOL_TEXT[d.protocol_identifier]}")
            lines += designator_lines(d)
    return lines


# -- VPD page 0xB0: block limits -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockLimitsPage:
    """Block limits (SBC-3 §6.6.3; the atomic fields are SBC-4's). A field the page is too short
    to hold is None: sg_vpd then does not print it. Lengths are in logical blocks."""

    peripheral_qualifier: int
    peripheral_device_type: int
    page_length: int
    wsnz: bool
    maximum_compare_and_write_length: int
    optimal_transfer_length_granularity: int
    maximum_transfer_length: int
    optimal_transfer_length: int
    maximum_prefetch_length: int | None
    maximum_unmap_lba_count: int | None
    maximum_unmap_block_descriptor_count: int | None
    optimal_unmap_granularity: int | None
    ugavalid: bool | None
    unmap_granularity_alignment: int | None
    maximum_write_same_length: int | None
    maximum_atomic_transfer_length: int | None
    atomic_alignment: int | None
    atomic_transfer_length_granularity: int | None
    maximum_atomic_transfer_length_with_atomic_boundary: int | None
    maximum_atomic_boundary_size: int | None

    def as_block_limits(self) -> BlockLimits:
        """The subset the mount sizes its commands by (``iscsifs.scsi.response``)."""
        return BlockLimits(self.maximum_transfer_length, self.optimal_transfer_length,
                           self.maximum_unmap_lba_count or 0, self.maximum_unmap_block_descriptor_count or 0,
                           self.optimal_unmap_granularity or 0, self.maximum_write_same_length or 0)


_BLOCK_LIMITS = struct.Struct(">xBHIIIIIIIQIIIII")  # from byte 4: WSNZ is read apart


def parse_block_limits_page(data: bytes | bytearray | memoryview) -> BlockLimitsPage:
    pq, pdt, body = _vpd(data, Vpd.BLOCK_LIMITS)
    length = len(body)
    if length < 12:
        raise ScsiParseError(f"Block limits VPD page length too short={length + 4}")
    (mcawl, otlg, mtl, otl, prefetch, unmap_lbas, unmap_descriptors, granularity, alignment, write_same,
     atomic, atomic_alignment, atomic_granularity, atomic_boundary, boundary_size) = _BLOCK_LIMITS.unpack(
        body[:60].ljust(60, b"\0"))

    def upto(minimum: int, value: int) -> int | None:
        # sg_vpd shows the fields in groups, each once the page length reaches it.
        return value if length >= minimum else None

    return BlockLimitsPage(
        pq, pdt, length, wsnz=bool(body[0] & 0x01), maximum_compare_and_write_length=mcawl,
        optimal_transfer_length_granularity=otlg, maximum_transfer_length=mtl, optimal_transfer_length=otl,
        maximum_prefetch_length=upto(0x10, prefetch), maximum_unmap_lba_count=upto(0x18, unmap_lbas),
        maximum_unmap_block_descriptor_count=upto(0x18, unmap_descriptors),
        optimal_unmap_granularity=upto(0x20, granularity),
        ugavalid=bool(alignment >> 31) if length >= 0x20 else None,
        unmap_granularity_alignment=upto(0x20, alignment & 0x7FFFFFFF),
        maximum_write_same_length=upto(0x28, write_same),
        maximum_atomic_transfer_length=upto(0x2C, atomic), atomic_alignment=upto(0x2C, atomic_alignment),
        atomic_transfer_length_granularity=upto(0x2C, atomic_granularity),
        maximum_atomic_transfer_length_with_atomic_boundary=upto(0x38, atomic_boundary),
        maximum_atomic_boundary_size=upto(0x38, boundary_size),
    )


def _blocks(value: int, zero: str) -> str:
    return f"0 blocks [{zero}]" if value == 0 else f"{value} blocks"


def _unmap_count(value: int) -> str:
    if value == 0:
        return "0 [Unmap command not implemented]"
    return "-1 [unbounded]" if value == 0xFFFFFFFF else str(value)


def render_block_limits(page: BlockLimitsPage) -> list[str]:
    p = page
    mcawl = p.maximum_compare_and_write_length
    lines = [
        "Block limits VPD page (SBC):",
        f"  Write same non-zero (WSNZ): {int(p.wsnz)}",
        "  Maximum compare and write length: " + _blocks(mcawl, "Command not implemented"),
        "  Optimal transfer length granularity: " + _blocks(p.optimal_transfer_length_granularity, "not reported"),
        "  Maximum transfer length: " + _blocks(p.maximum_transfer_length, "not reported"),
        "  Optimal transfer length: " + _blocks(p.optimal_transfer_length, "not reported"),
    ]
    if p.maximum_prefetch_length is not None:
        lines.append("  Maximum prefetch transfer length: " + _blocks(p.maximum_prefetch_length, "ignored"))
    if p.maximum_unmap_lba_count is not None and p.maximum_unmap_block_descriptor_count is not None:
        lines += [f"  Maximum unmap LBA count: {_unmap_count(p.maximum_unmap_lba_count)}",
                  f"  Maximum unmap block descriptor count: {_unmap_count(p.maximum_unmap_block_descriptor_count)}"]
    if p.optimal_unmap_granularity is not None and p.unmap_granularity_alignment is not None:
        alignment = f"{p.unmap_granularity_alignment}" + ("" if p.ugavalid else " [invalid]")
        lines += ["  Optimal unmap granularity: " + _blocks(p.optimal_unmap_granularity, "not reported"),
                  f"  Unmap granularity alignment valid: {'true' if p.ugavalid else 'false'}",
                  f"  Unmap granularity alignment: {alignment}"]
    if p.maximum_write_same_length is not None:
        mwsl = p.maximum_write_same_length
        lines.append("  Maximum write same length: " + ("0 blocks [not reported]" if mwsl == 0
                                                         else f"0x{mwsl:x} blocks"))
    if (p.maximum_atomic_transfer_length is not None and p.atomic_alignment is not None
            and p.atomic_transfer_length_granularity is not None):
        aa, atlg = p.atomic_alignment, p.atomic_transfer_length_granularity
        lines += [
            "  Maximum atomic transfer length: " + _blocks(p.maximum_atomic_transfer_length, "not reported"),
            "  Atomic alignment: " + ("0 [unaligned atomic writes permitted]" if aa == 0 else str(aa)),
            # sg_vpd 1.46 leaves this bracket open.
            "  Atomic transfer length granularity: " + ("0 [no granularity requirement" if atlg == 0 else str(atlg)),
        ]
    if (p.maximum_atomic_transfer_length_with_atomic_boundary is not None
            and p.maximum_atomic_boundary_size is not None):
        lines += [
            "  Maximum atomic transfer length with atomic boundary: "
            + _blocks(p.maximum_atomic_transfer_length_with_atomic_boundary, "not reported"),
            "  Maximum atomic boundary size: "
            + _blocks(p.maximum_atomic_boundary_size, "can only write atomic 1 block"),
        ]
    return lines


# -- VPD page 0xB1: block device characteristics --------------------------------------------------

_PRODUCT_TYPE_TEXT = ("Not specified", "CFast", "CompactFlash", "MemoryStick", "MultiMediaCard",
                      "Secure Digital Card (SD)", "XQD", "Universal Flash Storage Card (UFS)")
_FORM_FACTOR_TEXT = ("", "5.25 inch", "3.5 inch", "2.5 inch", "1.8 inch", "less then 1.8 inch")  # sic


@dataclass(frozen=True, slots=True)
class BlockDeviceCharacteristics:
    """Block device characteristics (SBC-3 §6.6.2; the later fields are SBC-4's)."""

    peripheral_qualifier: int
    peripheral_device_type: int
    medium_rotation_rate: int  # 0 not reported, 1 non-rotating (solid state), else rpm
    product_type: int
    wabereq: int
    wacereq: int
    nominal_form_factor: int
    zoned: int
    rbwz: bool
    bocs: bool
    fuab: bool
    vbuls: bool
    depopulation_time: int  # seconds

    @property
    def non_rotating(self) -> bool:
        return self.medium_rotation_rate == 1


def parse_block_device_characteristics(data: bytes | bytearray | memoryview) -> BlockDeviceCharacteristics:
    pq, pdt, body = _vpd(data, BLOCK_DEVICE_CHARACTERISTICS)
    if len(body) < 0x3C:  # SBC-3 fixes the page at 64 bytes, and sg_vpd refuses less
        raise ScsiParseError(f"Block device characteristics VPD page length too short={len(body) + 4}")
    b3, b4 = body[3], body[4]
    return BlockDeviceCharacteristics(
        pq, pdt, int.from_bytes(body[0:2], "big"), body[2], b3 >> 6, (b3 >> 4) & 0x03, b3 & 0x0F, (b4 >> 4) & 0x03,
        bool(b4 & 0x08), bool(b4 & 0x04), bool(b4 & 0x02), bool(b4 & 0x01), int.from_bytes(body[8:12], "big"))


def render_block_device_characteristics(page: BlockDeviceCharacteristics) -> list[str]:
    p = page
    rate = p.medium_rotation_rate
    if rate == 0:
        rotation = "  Medium rotation rate is not reported"
    elif rate == 1:
        rotation = "  Non-rotating medium (e.g. solid state)"
    elif 0x401 <= rate <= 0xFFFE:
        rotation = f"  Nominal rotation rate: {rate} rpm"
    else:
        rotation = f"  Reserved [0x{rate:x}]"
    if p.product_type < len(_PRODUCT_TYPE_TEXT):
        product = _PRODUCT_TYPE_TEXT[p.product_type]
    else:
        product = f"{'Vendor specific' if p.product_type >= 0xF0 else 'Reserved'} [0x{p.product_type:x}]"
    if p.nominal_form_factor == 0:
        form = "  Nominal form factor not reported"
    elif p.nominal_form_factor < len(_FORM_FACTOR_TEXT):
        form = f"  Nominal form factor: {_FORM_FACTOR_TEXT[p.nominal_form_factor]}"
    else:
        form = "  Nominal form factor: reserved"
    zoned = {1: "  [host-aware]", 2: "  [host-managed]"}.get(p.zoned, "")
    return ["Block device characteristics VPD page (SBC):", rotation, f"  Product type: {product}",
            f"  WABEREQ={p.wabereq}", f"  WACEREQ={p.wacereq}", form, f"  ZONED={p.zoned}{zoned}",
            f"  RBWZ={int(p.rbwz)}", f"  BOCS={int(p.bocs)}", f"  FUAB={int(p.fuab)}", f"  VBULS={int(p.vbuls)}",
            f"  DEPOPULATION_TIME={p.depopulation_time} (seconds)"]


# -- VPD page 0xB2: logical block provisioning -----------------------------------------------------

_PROVISIONING_TYPE_TEXT = ("not known or fully provisioned", "resource provisioned", "thin provisioned")


@dataclass(frozen=True, slots=True)
class LogicalBlockProvisioning:
    """Logical block provisioning (SBC-3 §6.6.4; LBPRZ three bits wide as in SBC-4)."""

    peripheral_qualifier: int
    peripheral_device_type: int
    threshold_exponent: int
    lbpu: bool  # UNMAP
    lbpws: bool  # WRITE SAME(16) with UNMAP
    lbpws10: bool  # WRITE SAME(10) with UNMAP
    lbprz: int  # what an unmapped block reads as: nonzero means zeros
    anc_sup: bool
    dp: bool  # a provisioning group descriptor follows (not decoded)
    minimum_percentage: int
    provisioning_type: int  # 0 full, 1 resource, 2 thin
    threshold_percentage: int

    def as_provisioning(self) -> Provisioning:
        """The subset the mount decides UNMAP and WRITE SAME by (``iscsifs.scsi.response``)."""
        return Provisioning(self.lbpu, self.lbpws, bool(self.lbprz), self.provisioning_type == 2)


def parse_logical_block_provisioning_page(data: bytes | bytearray | memoryview) -> LogicalBlockProvisioning:
    pq, pdt, body = _vpd(data, Vpd.LOGICAL_BLOCK_PROVISIONING)
    # A short page reads as zeros past its end, as sg_vpd and response.py read it.
    b = body[:4].ljust(4, b"\0")
    return LogicalBlockProvisioning(pq, pdt, b[0], bool(b[1] & 0x80), bool(b[1] & 0x40), bool(b[1] & 0x20),
                                    (b[1] >> 2) & 0x07, bool(b[1] & 0x02), bool(b[1] & 0x01), b[2] >> 3,
                                    b[2] & 0x07, b[3])


def render_logical_block_provisioning(page: LogicalBlockProvisioning) -> list[str]:
    p = page
    te, mp, tp, pt = p.threshold_exponent, p.minimum_percentage, p.threshold_percentage, p.provisioning_type
    kind = _PROVISIONING_TYPE_TEXT[pt] if pt < len(_PROVISIONING_TYPE_TEXT) else f"reserved [0x{pt:x}]"
    return [
        "Logical block provisioning VPD page (SBC):",
        f"  Unmap command supported (LBPU): {int(p.lbpu)}",
        f"  Write same (16) with unmap bit supported (LBPWS): {int(p.lbpws)}",
        f"  Write same (10) with unmap bit supported (LBPWS10): {int(p.lbpws10)}",
        f"  Logical block provisioning read zeros (LBPRZ): {p.lbprz}",
        f"  Anchored LBAs supported (ANC_SUP): {int(p.anc_sup)}",
        "  Threshold exponent: " + ("0 [threshold sets not supported]" if te == 0 else str(te)),
        f"  Descriptor present (DP): {int(p.dp)}",
        "  Minimum percentage: " + ("0 [not reported]" if mp == 0 else str(mp)),
        f"  Provisioning type: {pt} ({kind})",
        "  Threshold percentage: " + ("0 [percentages not supported]" if tp == 0 else str(tp)),
    ]


# -- VPD pages 0xB0 and 0xB1 of a tape (SSC-4) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequentialAccessCapabilities:
    peripheral_qualifier: int
    peripheral_device_type: int
    worm: bool  # write once, read many


def parse_sequential_access_capabilities(data: bytes | bytearray | memoryview) -> SequentialAccessCapabilities:
    pq, pdt, body = _vpd(data, 0xB0)
    return SequentialAccessCapabilities(pq, pdt, bool(body[:1] and body[0] & 0x01))


def render_sequential_access_capabilities(page: SequentialAccessCapabilities) -> list[str]:
    return ["Sequential-access device capabilities VPD page (SSC):", f"  WORM={int(page.worm)}"]


@dataclass(frozen=True, slots=True)
class ManufacturerAssignedSerialNumber:
    peripheral_qualifier: int
    peripheral_device_type: int
    manufacturer_assigned_serial_number: str


def parse_manufacturer_assigned_serial_number(
        data: bytes | bytearray | memoryview) -> ManufacturerAssignedSerialNumber:
    pq, pdt, body = _vpd(data, 0xB1)
    return ManufacturerAssignedSerialNumber(pq, pdt, body.split(b"\0", 1)[0].decode("latin-1"))


def render_manufacturer_assigned_serial_number(page: ManufacturerAssignedSerialNumber) -> list[str]:
    return ["Manufactured-assigned serial number VPD page (SSC):",  # sic, as sg_vpd 1.46
            f"  Manufacturer-assigned serial number: {page.manufacturer_assigned_serial_number}"]


# -- any VPD page, as sg_vpd picks its decoder -------------------------------------------------------

VpdPage = (SupportedVpdPages | UnitSerialNumber | DeviceIdentification | BlockLimitsPage
           | BlockDeviceCharacteristics | LogicalBlockProvisioning | SequentialAccessCapabilities
           | ManufacturerAssignedSerialNumber)


def parse_vpd_page(data: bytes | bytearray | memoryview) -> VpdPage:
    """The page in ``data``, decoded as sg_vpd decodes it: 0xB0 and 0xB1 are SSC's pages for a
    tape and (as sg_vpd has it) a changer, SBC's for anything else."""
    if len(data) < 4:
        raise ScsiParseError(f"VPD page of {len(data)} bytes")
    page, pdt = data[1], data[0] & 0x1F
    ssc = pdt in (DeviceType.SEQUENTIAL_ACCESS, DeviceType.MEDIUM_CHANGER)
    if page == Vpd.SUPPORTED_PAGES:
        return parse_supported_vpd_pages(data)
    if page == Vpd.UNIT_SERIAL_NUMBER:
        return parse_unit_serial_number_page(data)
    if page == Vpd.DEVICE_IDENTIFICATION:
        return parse_device_identification_page(data)
    if page == 0xB0:
        return parse_sequential_access_capabilities(data) if ssc else parse_block_limits_page(data)
    if page == 0xB1:
        return parse_manufacturer_assigned_serial_number(data) if ssc else parse_block_device_characteristics(data)
    if page == 0xB2 and not ssc:  # a tape's 0xB2 is TapeAlert supported flags: not decoded here
        return parse_logical_block_provisioning_page(data)
    raise ScsiParseError(f"VPD page 0x{page:02x} of device type 0x{pdt:x} is not decoded")


def render_vpd_page(page: VpdPage) -> list[str]:
    if isinstance(page, SupportedVpdPages):
        return render_supported_vpd_pages(page)
    if isinstance(page, UnitSerialNumber):
        return render_unit_serial_number(page)
    if isinstance(page, DeviceIdentification):
        return render_device_identification(page)
    if isinstance(page, BlockLimitsPage):
        return render_block_limits(page)
    if isinstance(page, BlockDeviceCharacteristics):
        return render_block_device_characteristics(page)
    if isinstance(page, LogicalBlockProvisioning):
        return render_logical_block_provisioning(page)
    if isinstance(page, SequentialAccessCapabilities):
        return render_sequential_access_capabilities(page)
    return render_manufacturer_assigned_serial_number(page)


# -- REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35) ------------------------------------------------

MAINTENANCE_IN = 0xA3
SA_REPORT_SUPPORTED_OPERATION_CODES = 0x0C


def report_supported_operation_codes(allocation_length: int = 8192, *, rctd: bool = False) -> bytes:
    """REPORTING OPTIONS 0: every command the LU supports, with their timeouts when ``rctd``."""
    return struct.pack(">BBBBHIxB", MAINTENANCE_IN, SA_REPORT_SUPPORTED_OPERATION_CODES, 0x80 if rctd else 0,
                       0, 0, min(allocation_length, 0xFFFFFFFF), 0)


@dataclass(frozen=True, slots=True)
class CommandTimeouts:
    """Command timeouts descriptor (SPC-4 §6.35.4), in seconds; 0 means not given."""

    command_specific: int
    nominal_command_processing_timeout: int
    recommended_command_timeout: int


@dataclass(frozen=True, slots=True)
class CommandDescriptor:
    """One command descriptor of the all-commands format (SPC-4 §6.35.2)."""

    operation_code: int
    service_action: int
    servactv: bool  # SERVICE ACTION is valid
    ctdp: bool  # a command timeouts descriptor follows
    cdlp: int  # command duration limit page (SPC-5)
    mlu: int  # multiple logical units (SPC-5)
    rwcdlp: bool  # (SPC-5)
    cdb_length: int
    timeouts: CommandTimeouts | None


@dataclass(frozen=True, slots=True)
class SupportedOperationCodes:
    commands: tuple[CommandDescriptor, ...]
    command_data_length: int  # what the target has: more than arrived means ask again with more room


def parse_supported_operation_codes(data: bytes | bytearray | memoryview) -> SupportedOperationCodes:
    d = bytes(data)
    if len(d) < 4:
        raise ScsiParseError(f"REPORT SUPPORTED OPERATION CODES data of {len(d)} bytes")
    length = int.from_bytes(d[:4], "big")
    end = min(len(d), 4 + length)
    out: list[CommandDescriptor] = []
    at = 4
    while at + 8 <= end:
        flags = d[at + 5]
        size = 20 if flags & 0x02 else 8
        if at + size > end:
            break  # the allocation length cut it: what arrived whole, and the length to re-ask with
        timeouts = None
        if flags & 0x02:
            if int.from_bytes(d[at + 8 : at + 10], "big") != 0x0A:
                raise ScsiParseError(f"command timeouts descriptor of opcode 0x{d[at]:02x} has a bad length")
            command_specific, nominal, recommended = struct.unpack_from(">xBII", d, at + 10)
            timeouts = CommandTimeouts(command_specific, nominal, recommended)
        out.append(CommandDescriptor(d[at], int.from_bytes(d[at + 2 : at + 4], "big"), bool(flags & 0x01),
                                     bool(flags & 0x02), (flags >> 2) & 0x03, (flags >> 4) & 0x03,
                                     bool(flags & 0x40), int.from_bytes(d[at + 6 : at + 8], "big"), timeouts))
        at += size
    return SupportedOperationCodes(tuple(out), length)


# Command names as sg3_utils prints them: SPC-4, SBC-3, SSC-3 and SMC-3 (the opcodes tgt answers
# for disks, tapes and changers, and their common neighbours). Keyed by (opcode, service action);
# service action None is the opcode's own name.
_COMMAND_NAME: dict[tuple[int, int | None], str] = {
    (0x00, None): "Test Unit Ready", (0x01, None): "Rezero Unit", (0x03, None): "Request Sense",
    (0x04, None): "Format Unit", (0x05, None): "Read Block Limits", (0x07, None): "Reassign Blocks",
    (0x08, None): "Read(6)", (0x0A, None): "Write(6)", (0x0B, None): "Seek(6)",
    (0x10, None): "Write filemarks(6)", (0x11, None): "Space(6)", (0x12, None): "Inquiry",
    (0x15, None): "Mode select(6)", (0x16, None): "Reserve(6)", (0x17, None): "Release(6)",
    (0x19, None): "Erase(6)", (0x1A, None): "Mode sense(6)", (0x1B, None): "Start stop unit",
    (0x1C, None): "Receive diagnostic results", (0x1D, None): "Send diagnostic",
    (0x1E, None): "Prevent allow medium removal",
    (0x25, None): "Read capacity(10)", (0x28, None): "Read(10)", (0x2A, None): "Write(10)",
    (0x2B, None): "Seek(10)", (0x2E, None): "Write and verify(10)", (0x2F, None): "Verify(10)",
    (0x34, None): "Pre-fetch(10)", (0x35, None): "Synchronize cache(10)", (0x37, None): "Read defect data(10)",
    (0x3B, None): "Write buffer", (0x3C, None): "Read buffer(10)", (0x3E, None): "Read long(10)",
    (0x3F, None): "Write long(10)", (0x41, None): "Write same(10)",
    (0x42, None): "Unmap", (0x4C, None): "Log select", (0x4D, None): "Log sense",
    (0x55, None): "Mode select(10)", (0x56, None): "Reserve(10)", (0x57, None): "Release(10)",
    (0x5A, None): "Mode sense(10)", (0x5E, None): "Persistent reserve in", (0x5F, None): "Persistent reserve out",
    (0x7F, None): "Variable length", (0x83, None): "Third party copy out", (0x84, None): "Third party copy in",
    (0x88, None): "Read(16)", (0x89, None): "Compare and write", (0x8A, None): "Write(16)",
    (0x8C, None): "Read attribute", (0x8D, None): "Write attribute", (0x8E, None): "Write and verify(16)",
    (0x8F, None): "Verify(16)", (0x90, None): "Pre-fetch(16)", (0x91, None): "Synchronize cache(16)",
    (0x92, None): "Lock unlock cache(16)", (0x93, None): "Write same(16)", (0x9E, None): "Service action in(16)",
    (0x9F, None): "Service action out(16)", (0xA0, None): "Report luns", (0xA2, None): "Security protocol in",
    (0xA3, None): "Maintenance in", (0xA4, None): "Maintenance out", (0xA5, None): "Move medium",
    (0xA8, None): "Read(12)", (0xAA, None): "Write(12)", (0xAB, None): "Service action in(12)",
    (0xAE, None): "Write and verify(12)", (0xAF, None): "Verify(12)", (0xB5, None): "Security protocol out",
    (0xB7, None): "Read defect data(12)", (0xB8, None): "Read element status",
    (0x5E, 0x00): "Persistent reserve in, read keys", (0x5E, 0x01): "Persistent reserve in, read reservation",
    (0x5E, 0x02): "Persistent reserve in, report capabilities",
    (0x5E, 0x03): "Persistent reserve in, read full status",
    (0x5F, 0x00): "Persistent reserve out, register", (0x5F, 0x01): "Persistent reserve out, reserve",
    (0x5F, 0x02): "Persistent reserve out, release", (0x5F, 0x03): "Persistent reserve out, clear",
    (0x5F, 0x04): "Persistent reserve out, preempt", (0x5F, 0x05): "Persistent reserve out, preempt and abort",
    (0x5F, 0x06): "Persistent reserve out, register and ignore existing key",
    (0x5F, 0x07): "Persistent reserve out, register and move",
    (0x5F, 0x08): "Persistent reserve out, replace lost reservation",
    (0x9E, 0x10): "Read capacity(16)", (0x9E, 0x12): "Get LBA status(16)", (0x9E, 0x13): "Report referrals",
    (0xA3, 0x05): "Report identifying information", (0xA3, 0x0A): "Report target port groups",
    (0xA3, 0x0C): "Report supported operation codes",
    (0xA3, 0x0D): "Report supported task management functions", (0xA3, 0x0E): "Report priority",
    (0xA3, 0x0F): "Report timestamp", (0xA3, 0x1F): "Maintenance in vendor specific",
    (0xA4, 0x0F): "Set timestamp", (0xA4, 0x1F): "Maintenance out vendor specific",
}
# Where a tape (SSC-3) or a changer (SMC-3) gives an opcode its own meaning.
_DEVICE_COMMAND_NAME: dict[int, dict[int, str]] = {
    DeviceType.SEQUENTIAL_ACCESS: {
        0x01: "Rewind", 0x04: "Format medium", 0x0B: "Set capacity", 0x1B: "Load unload", 0x2B: "Locate(10)",
        0x34: "Read position", 0x91: "Space(16)", 0x92: "Locate(16)", 0x93: "Erase(16)",
    },
    DeviceType.MEDIUM_CHANGER: {
        0x07: "Initialize element status", 0x16: "Reserve element(6)", 0x17: "Release element(6)",
        0x2B: "Position to element", 0x37: "Initialize element status with range", 0x56: "Reserve element(10)",
        0x57: "Release element(10)", 0xB5: "Request volume element address",
    },
}


# Service actions of a tape's own (SSC-3 §7.7: READ POSITION's forms).
_DEVICE_SERVICE_ACTION_NAME: dict[int, dict[tuple[int, int], str]] = {
    DeviceType.SEQUENTIAL_ACCESS: {
        (0x34, 0x00): "Read position, short form - block id",
        (0x34, 0x01): "Read position, short form - vendor specific",
        (0x34, 0x06): "Read position, long form", (0x34, 0x08): "Read position, extended form",
    },
}
# The opcodes SPC-4 and SBC-3 give service actions to; sg3_utils ignores the field of the others.
_HAS_SERVICE_ACTIONS = frozenset({0x3B, 0x3C, 0x48, 0x5E, 0x5F, 0x7F, 0x83, 0x84, 0x8C, 0x9E, 0x9F, 0xA3, 0xA4, 0xAB})


def command_name(operation_code: int, service_action: int | None = None, device_type: int = 0) -> str:
    """The name sg_opcodes gives a command (``service_action`` None: the opcode has none)."""
    device_actions = _DEVICE_SERVICE_ACTION_NAME.get(device_type, {})
    if service_action is not None:
        key = (operation_code, service_action)
        named = device_actions.get(key) or _COMMAND_NAME.get(key)
        if named is not None:
            return named
    name = (_DEVICE_COMMAND_NAME.get(device_type, {}).get(operation_code)
            or _COMMAND_NAME.get((operation_code, None)))
    if name is None:
        if 0x60 <= operation_code <= 0x7E:
            return f"Reserved [0x{operation_code:x}]"
        if operation_code >= 0xC0:
            return f"Vendor specific [0x{operation_code:x}]"
        return f"Opcode=0x{operation_code:x}"
    if service_action is None or not (operation_code in _HAS_SERVICE_ACTIONS
                                      or any(op == operation_code for op, _ in device_actions)):
        return name
    return f"{name} service action=0x{service_action:x}"


def render_operation_codes(codes: SupportedOperationCodes, device_type: int = 0, *, rctd: bool = False) -> list[str]:
    """sg_opcodes' table (after its INQUIRY lines, which ``render_opcodes_inquiry`` gives)."""
    if rctd:
        lines = ["", "Opcode  Service    CDB   Nominal  Recommended  Name",
                 "(hex)   action(h)  size  timeout  timeout(sec)     ", "-" * 63]
    else:
        lines = ["", "Opcode  Service    CDB  RWCDLP,  Name", "(hex)   action(h)  size   CDLP       ", "-" * 47]
    for c in sorted(codes.commands, key=lambda c: (c.operation_code, c.service_action if c.servactv else 0)):
        name = command_name(c.operation_code, c.service_action if c.servactv else None, device_type)
        sa = f"{c.service_action:4x}" if c.servactv else "    "
        row = f" {c.operation_code:02x}     {sa}       {c.cdb_length:3d}"
        if not rctd:
            # sg_opcodes prints CDLP first and RWCDLP second, under a heading that says otherwise.
            lines.append(f"{row}    {c.cdlp},{int(c.rwcdlp)}    {name}")
        elif c.timeouts is None:
            lines.append(f"{row}                         {name}")
        else:
            nominal, recommended = (c.timeouts.nominal_command_processing_timeout,
                                    c.timeouts.recommended_command_timeout)
            lines.append(row + (f"  {nominal:8d}" if nominal else "         -")
                         + (f"   {recommended:8d}" if recommended else "          -") + f"    {name}")
    return lines


def render_opcodes_inquiry(inq: StandardInquiryData) -> list[str]:
    """The two lines sg_opcodes starts with."""
    vendor, product, revision = (inq.t10_vendor_identification or "", inq.product_identification or "",
                                 inq.product_revision_level or "")
    return [f"  {vendor:.8}  {product:.16}  {revision:.4}",
            f"  Peripheral device type: {device_type_text(inq.peripheral_device_type)}"]

"""INQUIRY, VPD pages and REPORT SUPPORTED OPERATION CODES: decoded, and rendered line for line
as sg_inq, sg_vpd and sg_opcodes (sg3_utils 1.46) print the same bytes.

The tgt vectors are the answers of tgt 1.0.85's virtual tape and their sg_inq / sg_vpd output as
captured in the research notes; the disk pages (0xB0, 0xB1, 0xB2, a full 0x83) were built from
SBC-3 and SPC-4 and run through ``sg_vpd --inhex`` 1.46, whose output is copied here verbatim.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iscsifs.scsi import vpd
from iscsifs.scsi.response import (
    ScsiParseError,
    parse_block_limits,
    parse_device_identification,
    parse_logical_block_provisioning,
    world_wide_name,
)


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text)


def lines(text: str) -> list[str]:
    return text.split("\n")[1:-1]  # the literal starts and ends with a newline


# tgt 1.0.85, a tape LUN (README.vtl): 66 bytes, version descriptors SSC, iSCSI, SPC-3.
TGT_TAPE_INQUIRY = (bytes([0x01, 0x80, 0x05, 0x12, 61, 0x00, 0x00, 0x02]) + b"IET     " + b"VIRTUAL-TAPE    " + b"0001"
                    + bytes(22) + hexbytes("0200" "0960" "0300") + bytes(2))
TGT_TAPE_SG_INQ = lines("""
standard INQUIRY:
  PQual=0  PDT=1  RMB=1  LU_CONG=0  hot_pluggable=0  version=0x05  [SPC-3]
  [AERC=0]  [TrmTsk=0]  NormACA=0  HiSUP=1  Resp_data_format=2
  SCCS=0  ACC=0  TPGS=0  3PC=0  Protect=0  [BQue=0]
  EncServ=0  MultiP=0  [MChngr=0]  [ACKREQQ=0]  Addr16=0
  [RelAdr=0]  WBus16=0  Sync=0  [Linked=0]  [TranDis=0]  CmdQue=1
  [SPI: Clocking=0x0  QAS=0  IUS=0]
    length=66 (0x42)   Peripheral device type: tape
 Vendor identification: IET     
 Product identification: VIRTUAL-TAPE    
 Product revision level: 0001
""")  # noqa: W291 - sg_inq keeps the fields' trailing spaces


def test_tgt_tape_standard_inquiry():
    inq = vpd.parse_standard_inquiry(TGT_TAPE_INQUIRY)
    assert vpd.render_standard_inquiry(inq) == TGT_TAPE_SG_INQ
    assert (inq.peripheral_device_type, inq.rmb, inq.version, inq.hisup, inq.cmdque) == (1, True, 5, True, True)
    assert inq.version_descriptors == (0x0200, 0x0960, 0x0300)
    assert (inq.t10_vendor_identification, inq.product_identification) == ("IET     ", "VIRTUAL-TAPE    ")


@pytest.mark.parametrize("data, expected", [
    # A changer: PDT 8, and a qualifier that says the LU is not there just now.
    (bytes([0x28, 0, 6, 0x12, 61, 0, 0, 2]) + b"IET     VIRTUAL-DISK    0001" + bytes(30), """
standard INQUIRY: [PQ indicates LU temporarily unavailable]
  PQual=1  PDT=8  RMB=0  LU_CONG=0  hot_pluggable=0  version=0x06  [SPC-4]
  [AERC=0]  [TrmTsk=0]  NormACA=0  HiSUP=1  Resp_data_format=2
  SCCS=0  ACC=0  TPGS=0  3PC=0  Protect=0  [BQue=0]
  EncServ=0  MultiP=0  [MChngr=0]  [ACKREQQ=0]  Addr16=0
  [RelAdr=0]  WBus16=0  Sync=0  [Linked=0]  [TranDis=0]  CmdQue=1
  [SPI: Clocking=0x0  QAS=0  IUS=0]
    length=66 (0x42)   Peripheral device type: medium changer
 Vendor identification: IET     
 Product identification: VIRTUAL-DISK    
 Product revision level: 0001
"""),  # noqa: W291
    # Every flag set; no SPI byte (36 bytes), and an allocation length that cut the answer.
    (bytes([0x00, 0x7F, 0x05, 0xFF, 61, 0xFF, 0xFF, 0xFF]) + b"IET     VIRTUAL-DISK    0001", """
standard INQUIRY:
  PQual=0  PDT=0  RMB=0  LU_CONG=1  hot_pluggable=3  version=0x05  [SPC-3]
  [AERC=1]  [TrmTsk=1]  NormACA=1  HiSUP=1  Resp_data_format=15
  SCCS=1  ACC=1  TPGS=3  3PC=1  Protect=1  [BQue=1]
  EncServ=1  MultiP=1 (VS=1)  [MChngr=1]  [ACKREQQ=1]  Addr16=1
  [RelAdr=1]  WBus16=1  Sync=1  [Linked=1]  [TranDis=1]  CmdQue=1
    length=66 (0x42), but only fetched 36 bytes   Peripheral device type: disk
 Vendor identification: IET     
 Product identification: VIRTUAL-DISK    
 Product revision level: 0001
"""),  # noqa: W291
    (bytes([0, 0, 5, 0x12, 61, 0, 0, 2]) + b"IET     VIRT", """
standard INQUIRY:
  PQual=0  PDT=0  RMB=0  LU_CONG=0  hot_pluggable=0  version=0x05  [SPC-3]
  [AERC=0]  [TrmTsk=0]  NormACA=0  HiSUP=1  Resp_data_format=2
  SCCS=0  ACC=0  TPGS=0  3PC=0  Protect=0  [BQue=0]
  EncServ=0  MultiP=0  [MChngr=0]  [ACKREQQ=0]  Addr16=0
  [RelAdr=0]  WBus16=0  Sync=0  [Linked=0]  [TranDis=0]  CmdQue=1
    length=66 (0x42), but only fetched 20 bytes   Peripheral device type: disk
 Vendor identification: IET     
 Product identification: VIRT
 Product revision level: <none>
"""),  # noqa: W291
    (bytes([0, 0, 5, 0x12, 61, 0, 0, 2]), """
standard INQUIRY:
  PQual=0  PDT=0  RMB=0  LU_CONG=0  hot_pluggable=0  version=0x05  [SPC-3]
  [AERC=0]  [TrmTsk=0]  NormACA=0  HiSUP=1  Resp_data_format=2
  SCCS=0  ACC=0  TPGS=0  3PC=0  Protect=0  [BQue=0]
  EncServ=0  MultiP=0  [MChngr=0]  [ACKREQQ=0]  Addr16=0
  [RelAdr=0]  WBus16=0  Sync=0  [Linked=0]  [TranDis=0]  CmdQue=1
    length=66 (0x42), but only fetched 8 bytes   Peripheral device type: disk
 Inquiry response length=8, no vendor, product or revision data
"""),
    # An ADDITIONAL LENGTH too small for SCSI-2 (sg_inq still shows all it got).
    (bytes([0, 0, 3, 0x12, 10, 0, 0, 2]) + b"IET     VIRTUAL-DISK    0001" + bytes(30), """
standard INQUIRY:
  PQual=0  PDT=0  RMB=0  LU_CONG=0  hot_pluggable=0  version=0x03  [SPC]
  [AERC=0]  [TrmTsk=0]  NormACA=0  HiSUP=1  Resp_data_format=2
  SCCS=0  ACC=0  TPGS=0  3PC=0  Protect=0  [BQue=0]
  EncServ=0  MultiP=0  [MChngr=0]  [ACKREQQ=0]  Addr16=0
  [RelAdr=0]  WBus16=0  Sync=0  [Linked=0]  [TranDis=0]  CmdQue=1
  [SPI: Clocking=0x0  QAS=0  IUS=0]
    length=15 (0xf)
  [for SCSI>=2, len>=36 is expected]   Peripheral device type: disk
 Vendor identification: IET     
 Product identification: VIRTUAL-DISK    
 Product revision level: 0001
"""),  # noqa: W291
])
def test_standard_inquiry_as_sg_inq(data, expected):
    assert vpd.render_standard_inquiry(vpd.parse_standard_inquiry(data)) == lines(expected)


@pytest.mark.parametrize("version, text", [(0, "no conformance claimed"), (4, "SPC-2"), (7, "SPC-5"),
                                           (0x0D, "SPC-3"), (0x85, "SPC-3"), (0x88, "no conformance claimed")])
def test_inquiry_version_words(version, text):
    inq = vpd.parse_standard_inquiry(bytes([0, 0, version, 2, 31, 0, 0, 0]) + bytes(28))
    assert vpd.render_standard_inquiry(inq)[1].endswith(f"version=0x{version:02x}  [{text}]")


# -- VPD pages ------------------------------------------------------------------------------------

TGT_TAPE_PAGES = [
    (vpd.parse_supported_vpd_pages, vpd.render_supported_vpd_pages, hexbytes("01000006" "00" "80" "83" "b0" "b1" "b2"),
     """
Supported VPD pages VPD page:
  Supported VPD pages [sv]
  Unit serial number [sn]
  Device identification [di]
  Sequential access device capabilities (SSC) [sad]
  Manufacturer assigned serial number (SSC) [mas]
  TapeAlert supported flags (SSC) [tas]
"""),
    (vpd.parse_unit_serial_number_page, vpd.render_unit_serial_number,
     hexbytes("01800024") + b" " * 30 + b"beaf11", """
Unit serial number VPD page:
  Unit serial number:                               beaf11
"""),
    (vpd.parse_device_identification_page, vpd.render_device_identification,
     hexbytes("01830034" "02010010") + b"IET     00010001" + hexbytes("01030008" "3000000100000001"
                                                                      "01030010" "60000000000000000e00000000010001"),
     """
Device Identification VPD page:
  Addressed logical unit:
    designator type: T10 vendor identification,  code set: ASCII
      vendor id: IET     
      vendor specific: 00010001
    designator type: NAA,  code set: Binary
      0x3000000100000001
    designator type: NAA,  code set: Binary
      0x60000000000000000e00000000010001
"""),  # noqa: W291
]

DISK_PAGES = [
    # A disk's list: the SBC names of 0xB0..0xB2, and an unnamed vendor page.
    (vpd.parse_supported_vpd_pages, vpd.render_supported_vpd_pages, hexbytes("00000007" "00" "80" "83" "b0" "b1" "b2"
                                                                             "c0"), """
Supported VPD pages VPD page:
  Supported VPD pages [sv]
  Unit serial number [sn]
  Device identification [di]
  Block limits (SBC) [bl]
  Block device characteristics (SBC) [bdc]
  Logical block provisioning (SBC) [lbpv]
  0xc0
"""),
    # Every designator kind, a port's and the target device's among them, and the ones sg_vpd
    # cannot decode (a binary SCSI name string, an NAA of type 1).
    (vpd.parse_device_identification_page, vpd.render_device_identification, hexbytes(
        "008300e0010200080011223344556677010300085000c5001234567861940004000000016195000400000002010600040000"
        "000353a8002069716e2e323032362d31312e6578616d706c653a6469736b312c742c307831000328001c69716e2e32303236"
        "2d31312e6578616d706c653a6469736b3100000001080008001122334455667701000004deadbeef02000004616263640102"
        "000c0011223344556677aabbccdd0102001000112233445566778899aabbccddeeff0103001060014055aabbccddeeff0011"
        "22334455010300082000001122334455010300081000001122334455"), """
Device Identification VPD page:
  Addressed logical unit:
    designator type: EUI-64 based,  code set: Binary
      0x0011223344556677
    designator type: NAA,  code set: Binary
      0x5000c50012345678
    designator type: Logical unit group,  code set: Binary
      Logical unit group: 0x3
    designator type: SCSI name string,  code set: Binary
      << expected UTF-8 code_set >>
00 11 22 33 44 55 66 77                             .."3DUfw        
    designator type: vendor specific [0x0],  code set: Binary
      vendor specific:
de ad be ef                                         ....            
    designator type: vendor specific [0x0],  code set: ASCII
      vendor specific: abcd
    designator type: EUI-64 based,  code set: Binary
      0x0011223344556677aabbccdd
    designator type: EUI-64 based,  code set: Binary
      0x00112233445566778899aabbccddeeff
    designator type: NAA,  code set: Binary
      0x60014055aabbccddeeff001122334455
    designator type: NAA,  code set: Binary
      0x2000001122334455
    designator type: NAA,  code set: Binary
      << unexpected NAA [0x1] >>
10 00 00 11 22 33 44 55
  Target port:
    designator type: Relative target port,  code set: Binary
     transport: Serial Attached SCSI Protocol (SPL-4)
      Relative target port: 0x1
    designator type: Target port group,  code set: Binary
     transport: Serial Attached SCSI Protocol (SPL-4)
      Target port group: 0x2
  Target device that contains addressed lu:
    designator type: SCSI name string,  code set: UTF-8
     transport: Internet SCSI (iSCSI)
      SCSI name string:
      iqn.2026-11.example:disk1,t,0x1
    designator type: SCSI name string,  code set: UTF-8
      SCSI name string:
      iqn.2026-11.example:disk1
"""),  # noqa: W291
    (vpd.parse_block_limits_page, vpd.render_block_limits, hexbytes(
        "00b0003c" "01800008" "0000ffff" "00000400" "00000000" "ffffffff" "00000010" "00000001" "80000003"
        "0000000000004000" "00000064" "00000007" "80000002" "00000000" "00000000"), """
Block limits VPD page (SBC):
  Write same non-zero (WSNZ): 1
  Maximum compare and write length: 128 blocks
  Optimal transfer length granularity: 8 blocks
  Maximum transfer length: 65535 blocks
  Optimal transfer length: 1024 blocks
  Maximum prefetch transfer length: 0 blocks [ignored]
  Maximum unmap LBA count: -1 [unbounded]
  Maximum unmap block descriptor count: 16
  Optimal unmap granularity: 1 blocks
  Unmap granularity alignment valid: true
  Unmap granularity alignment: 3
  Maximum write same length: 0x4000 blocks
  Maximum atomic transfer length: 100 blocks
  Atomic alignment: 7
  Atomic transfer length granularity: 2147483650
  Maximum atomic transfer length with atomic boundary: 0 blocks [not reported]
  Maximum atomic boundary size: 0 blocks [can only write atomic 1 block]
"""),
    # Mostly zeros, COMPARE AND WRITE 128 as tgt reports it (iscsi-inq): every "not reported" wording.
    (vpd.parse_block_limits_page, vpd.render_block_limits, hexbytes("00b0003c" "00800001") + bytes(56), """
Block limits VPD page (SBC):
  Write same non-zero (WSNZ): 0
  Maximum compare and write length: 128 blocks
  Optimal transfer length granularity: 1 blocks
  Maximum transfer length: 0 blocks [not reported]
  Optimal transfer length: 0 blocks [not reported]
  Maximum prefetch transfer length: 0 blocks [ignored]
  Maximum unmap LBA count: 0 [Unmap command not implemented]
  Maximum unmap block descriptor count: 0 [Unmap command not implemented]
  Optimal unmap granularity: 0 blocks [not reported]
  Unmap granularity alignment valid: false
  Unmap granularity alignment: 0 [invalid]
  Maximum write same length: 0 blocks [not reported]
  Maximum atomic transfer length: 0 blocks [not reported]
  Atomic alignment: 0 [unaligned atomic writes permitted]
  Atomic transfer length granularity: 0 [no granularity requirement
  Maximum atomic transfer length with atomic boundary: 0 blocks [not reported]
  Maximum atomic boundary size: 0 blocks [can only write atomic 1 block]
"""),
    # An SBC-2 era page of 16 bytes: sg_vpd shows only what it holds.
    (vpd.parse_block_limits_page, vpd.render_block_limits, hexbytes("00b00010") + bytes(16), """
Block limits VPD page (SBC):
  Write same non-zero (WSNZ): 0
  Maximum compare and write length: 0 blocks [Command not implemented]
  Optimal transfer length granularity: 0 blocks [not reported]
  Maximum transfer length: 0 blocks [not reported]
  Optimal transfer length: 0 blocks [not reported]
  Maximum prefetch transfer length: 0 blocks [ignored]
"""),
    (vpd.parse_block_device_characteristics, vpd.render_block_device_characteristics,
     hexbytes("00b1003c" "1c20" "00" "02" "33") + bytes(55), """
Block device characteristics VPD page (SBC):
  Nominal rotation rate: 7200 rpm
  Product type: Not specified
  WABEREQ=0
  WACEREQ=0
  Nominal form factor: 3.5 inch
  ZONED=3
  RBWZ=0
  BOCS=0
  FUAB=1
  VBULS=1
  DEPOPULATION_TIME=0 (seconds)
"""),
    (vpd.parse_block_device_characteristics, vpd.render_block_device_characteristics,
     hexbytes("00b1003c" "0001" "00" "13" "92" "01") + bytes(54), """
Block device characteristics VPD page (SBC):
  Non-rotating medium (e.g. solid state)
  Product type: Not specified
  WABEREQ=0
  WACEREQ=1
  Nominal form factor: 2.5 inch
  ZONED=1  [host-aware]
  RBWZ=0
  BOCS=0
  FUAB=1
  VBULS=0
  DEPOPULATION_TIME=0 (seconds)
"""),
    (vpd.parse_logical_block_provisioning_page, vpd.render_logical_block_provisioning, hexbytes("00b20004" "00e70200"),
     """
Logical block provisioning VPD page (SBC):
  Unmap command supported (LBPU): 1
  Write same (16) with unmap bit supported (LBPWS): 1
  Write same (10) with unmap bit supported (LBPWS10): 1
  Logical block provisioning read zeros (LBPRZ): 1
  Anchored LBAs supported (ANC_SUP): 1
  Threshold exponent: 0 [threshold sets not supported]
  Descriptor present (DP): 1
  Minimum percentage: 0 [not reported]
  Provisioning type: 2 (thin provisioned)
  Threshold percentage: 0 [percentages not supported]
"""),
    (vpd.parse_logical_block_provisioning_page, vpd.render_logical_block_provisioning, hexbytes("00b20004" "0c840100"),
     """
Logical block provisioning VPD page (SBC):
  Unmap command supported (LBPU): 1
  Write same (16) with unmap bit supported (LBPWS): 0
  Write same (10) with unmap bit supported (LBPWS10): 0
  Logical block provisioning read zeros (LBPRZ): 1
  Anchored LBAs supported (ANC_SUP): 0
  Threshold exponent: 12
  Descriptor present (DP): 0
  Minimum percentage: 0 [not reported]
  Provisioning type: 1 (resource provisioned)
  Threshold percentage: 0 [percentages not supported]
"""),
]


@pytest.mark.parametrize("parse, render, data, expected", TGT_TAPE_PAGES + DISK_PAGES)
def test_vpd_pages_as_sg_vpd(parse, render, data, expected):
    page = parse(data)
    assert render(page) == lines(expected)
    json.dumps(dataclasses.asdict(page))  # the JSON form is plain data


@pytest.mark.parametrize("data, expected", [
    (TGT_TAPE_PAGES[0][2], TGT_TAPE_PAGES[0][3]),
    (TGT_TAPE_PAGES[2][2], TGT_TAPE_PAGES[2][3]),
    # tgt's tape answers 0xB0 and 0xB1 with its SBC pages; sg_vpd reads them as SSC's.
    (hexbytes("01b0003c" "00800001") + bytes(56), """
Sequential-access device capabilities VPD page (SSC):
  WORM=0
"""),
    (hexbytes("01b1003c") + bytes(60), """
Manufactured-assigned serial number VPD page (SSC):
  Manufacturer-assigned serial number: 
"""),  # noqa: W291
    (hexbytes("08b00004" "01000000"), """
Sequential-access device capabilities VPD page (SSC):
  WORM=1
"""),
    (hexbytes("01b10008") + b"ABCD    ", """
Manufactured-assigned serial number VPD page (SSC):
  Manufacturer-assigned serial number: ABCD    
"""),  # noqa: W291
    (DISK_PAGES[2][2], DISK_PAGES[2][3]),
    (DISK_PAGES[5][2], DISK_PAGES[5][3]),
    (DISK_PAGES[7][2], DISK_PAGES[7][3]),
])
def test_any_vpd_page_as_sg_vpd(data, expected):
    page = vpd.parse_vpd_page(data)
    assert vpd.render_vpd_page(page) == lines(expected)
    json.dumps(dataclasses.asdict(page))


def test_vpd_pages_not_decoded():
    for data in (hexbytes("01b20004" "00000000"), hexbytes("00c00000"), b"\0\x83\0"):
        with pytest.raises(ScsiParseError):
            vpd.parse_vpd_page(data)


def test_block_device_characteristics_words():
    def rendered(**at: int) -> list[str]:
        body = bytearray(0x3C)
        for offset, value in at.items():
            body[int(offset[1:])] = value
        return vpd.render_block_device_characteristics(vpd.parse_block_device_characteristics(
            hexbytes("00b1003c") + bytes(body)))

    assert rendered()[1] == "  Medium rotation rate is not reported"
    assert rendered(b0=0x04, b1=0x00)[1] == "  Reserved [0x400]"
    assert rendered(b2=7)[2] == "  Product type: Universal Flash Storage Card (UFS)"
    assert rendered(b2=0x80)[2] == "  Product type: Reserved [0x80]"
    assert rendered(b2=0xF0)[2] == "  Product type: Vendor specific [0xf0]"
    assert rendered(b3=0xC5)[3:6] == ["  WABEREQ=3", "  WACEREQ=0", "  Nominal form factor: less then 1.8 inch"]
    assert rendered(b3=0x06)[5] == "  Nominal form factor: reserved"
    assert rendered(b4=0x2C)[6:9] == ["  ZONED=2  [host-managed]", "  RBWZ=1", "  BOCS=1"]
    assert rendered(b10=1, b11=2)[-1] == "  DEPOPULATION_TIME=258 (seconds)"


@pytest.mark.parametrize("parse, data, message", [
    (vpd.parse_block_limits_page, hexbytes("00b00008") + bytes(8), "Block limits VPD page length too short=12"),
    (vpd.parse_block_device_characteristics, hexbytes("00b10008") + bytes(8),
     "Block device characteristics VPD page length too short=12"),
    (vpd.parse_unit_serial_number_page, hexbytes("00830000"), "VPD page 0x80 answer is not that page"),
    (vpd.parse_standard_inquiry, bytes(4), "INQUIRY data of 4 bytes"),
])
def test_malformed_pages_are_refused(parse, data, message):
    with pytest.raises(ScsiParseError, match=message):
        parse(data)


def test_the_short_forms_agree_with_response_py():
    """The full decoders and iscsifs.scsi.response's short ones read the same bytes the same way."""
    limits = DISK_PAGES[2][2]
    assert vpd.parse_block_limits_page(limits).as_block_limits() == parse_block_limits(limits)
    for data in (hexbytes("00b20004" "00e70200"), hexbytes("00b20004" "0c840100"), hexbytes("00b20002" "0080")):
        page = vpd.parse_logical_block_provisioning_page(data)
        assert page.as_provisioning() == parse_logical_block_provisioning(data)
    identification = TGT_TAPE_PAGES[2][2]
    page = vpd.parse_device_identification_page(identification)
    assert [d.as_designator() for d in page.descriptors] == parse_device_identification(identification)
    assert world_wide_name([d.as_designator() for d in page.descriptors]) == "naa.60000000000000000e00000000010001"
    serial = vpd.parse_unit_serial_number_page(TGT_TAPE_PAGES[1][2])
    assert serial.product_serial_number == "beaf11" and serial.as_sent == " " * 30 + "beaf11"


# -- REPORT SUPPORTED OPERATION CODES ----------------------------------------------------------------


@pytest.mark.parametrize("built, hexcdb", [
    # opcode, service action, RCTD|reporting options, requested opcode, requested SA (2), allocation length (4),
    # reserved, control
    (vpd.report_supported_operation_codes(8192), "a3" "0c" "00" "00" "0000" "00002000" "00" "00"),
    (vpd.report_supported_operation_codes(512, rctd=True), "a3" "0c" "80" "00" "0000" "00000200" "00" "00"),
])
def test_report_supported_operation_codes_cdb(built, hexcdb):
    assert built.hex() == hexcdb


def descriptor(opcode: int, cdb_length: int, sa: int | None = None, timeouts: tuple[int, int] | None = None,
               flags: int = 0) -> bytes:
    flags |= (0x01 if sa is not None else 0) | (0x02 if timeouts else 0)
    out = bytes([opcode, 0]) + (sa or 0).to_bytes(2, "big") + bytes([0, flags]) + cdb_length.to_bytes(2, "big")
    if timeouts:
        out += bytes([0, 10, 0, 0]) + timeouts[0].to_bytes(4, "big") + timeouts[1].to_bytes(4, "big")
    return out


def all_commands(*descriptors: bytes) -> bytes:
    body = b"".join(descriptors)
    return len(body).to_bytes(4, "big") + body


# What tgt's tape LU lists (usr/ssc.c), in its own order (not sorted).
TGT_TAPE_RSOC = all_commands(
    descriptor(0xA3, 12, sa=0x0C), descriptor(0x00, 6), descriptor(0x01, 6), descriptor(0x03, 6),
    descriptor(0x05, 6), descriptor(0x08, 6), descriptor(0x0A, 6), descriptor(0x0B, 6), descriptor(0x10, 6),
    descriptor(0x11, 6), descriptor(0x12, 6), descriptor(0x15, 6), descriptor(0x1A, 6), descriptor(0x1B, 6),
    descriptor(0x1D, 6), descriptor(0x1E, 6), descriptor(0x34, 10), descriptor(0x5A, 10), descriptor(0xA0, 12))
TGT_TAPE_SG_OPCODES = lines("""

Opcode  Service    CDB  RWCDLP,  Name
(hex)   action(h)  size   CDLP       
-----------------------------------------------
 00                  6    0,0    Test Unit Ready
 01                  6    0,0    Rewind
 03                  6    0,0    Request Sense
 05                  6    0,0    Read Block Limits
 08                  6    0,0    Read(6)
 0a                  6    0,0    Write(6)
 0b                  6    0,0    Set capacity
 10                  6    0,0    Write filemarks(6)
 11                  6    0,0    Space(6)
 12                  6    0,0    Inquiry
 15                  6    0,0    Mode select(6)
 1a                  6    0,0    Mode sense(6)
 1b                  6    0,0    Load unload
 1d                  6    0,0    Send diagnostic
 1e                  6    0,0    Prevent allow medium removal
 34                 10    0,0    Read position
 5a                 10    0,0    Mode sense(10)
 a0                 12    0,0    Report luns
 a3        c        12    0,0    Report supported operation codes
""")  # noqa: W291


def test_tgt_tape_operation_codes_as_sg_opcodes():
    codes = vpd.parse_supported_operation_codes(TGT_TAPE_RSOC)
    assert len(codes.commands) == 19 and codes.command_data_length == 19 * 8
    assert vpd.render_operation_codes(codes, device_type=1) == TGT_TAPE_SG_OPCODES
    inq = vpd.parse_standard_inquiry(TGT_TAPE_INQUIRY)
    assert vpd.render_opcodes_inquiry(inq) == ["  IET       VIRTUAL-TAPE      0001", "  Peripheral device type: tape"]
    json.dumps(dataclasses.asdict(codes))


def test_operation_codes_with_timeouts_and_duration_limits():
    data = all_commands(descriptor(0x28, 10, timeouts=(30, 60)), descriptor(0x9E, 16, sa=0x10, timeouts=(0, 5)),
                        descriptor(0x2A, 10, flags=0x40 | 0x08))
    codes = vpd.parse_supported_operation_codes(data)
    read, capacity, write = codes.commands
    assert read.timeouts == vpd.CommandTimeouts(0, 30, 60) and capacity.service_action == 0x10 and capacity.servactv
    assert (write.rwcdlp, write.cdlp, write.timeouts) == (True, 2, None)
    assert vpd.render_operation_codes(codes, rctd=True) == lines("""

Opcode  Service    CDB   Nominal  Recommended  Name
(hex)   action(h)  size  timeout  timeout(sec)     
---------------------------------------------------------------
 28                 10        30         60    Read(10)
 2a                 10                         Write(10)
 9e       10        16         -          5    Read capacity(16)
""")  # noqa: W291
    # sg_opcodes prints CDLP, then RWCDLP (its heading names them the other way round).
    assert vpd.render_operation_codes(codes)[-2] == " 2a                 10    2,1    Write(10)"


def test_operation_codes_cut_short_and_malformed():
    data = all_commands(descriptor(0x00, 6), descriptor(0x28, 10, timeouts=(1, 2)))
    cut = vpd.parse_supported_operation_codes(data[:20])  # the second descriptor did not fit
    assert [c.operation_code for c in cut.commands] == [0x00] and cut.command_data_length == 28
    bad = bytearray(data)
    bad[4 + 8 + 9] = 8  # a command timeouts descriptor must say 10
    with pytest.raises(ScsiParseError):
        vpd.parse_supported_operation_codes(bytes(bad))
    with pytest.raises(ScsiParseError):
        vpd.parse_supported_operation_codes(b"\0\0\0")


@pytest.mark.parametrize("opcode, sa, pdt, name", [
    (0x37, 0x10, 8, "Initialize element status with range"),  # tgt's changer sets SERVACTV here
    (0x07, None, 8, "Initialize element status"), (0xA5, None, 8, "Move medium"),
    (0xB8, None, 8, "Read element status"),
    (0x2B, None, 0, "Seek(10)"), (0x2B, None, 1, "Locate(10)"), (0x2B, None, 8, "Position to element"),
    (0x34, 0x06, 1, "Read position, long form"), (0x34, 0x02, 1, "Read position service action=0x2"),
    (0x9E, 0x10, 0, "Read capacity(16)"), (0x9E, 0x1F, 0, "Service action in(16) service action=0x1f"),
    (0x5F, 0x06, 0, "Persistent reserve out, register and ignore existing key"),
    (0x12, 0x05, 0, "Inquiry"),  # no service actions: the field is ignored
    (0x60, None, 0, "Reserved [0x60]"), (0xC0, None, 0, "Vendor specific [0xc0]"), (0x09, None, 0, "Opcode=0x9"),
])
def test_command_names(opcode, sa, pdt, name):
    assert vpd.command_name(opcode, sa, pdt) == name


# -- arbitrary bytes: only ScsiParseError, and whatever parses renders ------------------------------

PAGE_PARSERS = [
    (vpd.parse_supported_vpd_pages, vpd.render_supported_vpd_pages, 0x00),
    (vpd.parse_unit_serial_number_page, vpd.render_unit_serial_number, 0x80),
    (vpd.parse_device_identification_page, vpd.render_device_identification, 0x83),
    (vpd.parse_block_limits_page, vpd.render_block_limits, 0xB0),
    (vpd.parse_block_device_characteristics, vpd.render_block_device_characteristics, 0xB1),
    (vpd.parse_logical_block_provisioning_page, vpd.render_logical_block_provisioning, 0xB2),
]


def check_parse_and_render(parse, render, data: bytes) -> None:
    try:
        decoded = parse(data)
    except ScsiParseError:
        return
    assert all(isinstance(line, str) for line in render(decoded))
    json.dumps(dataclasses.asdict(decoded))


@pytest.mark.parametrize("parse, render, page", PAGE_PARSERS)
@given(body=st.binary(max_size=300), pdt=st.integers(0, 255), stated=st.integers(0, 0xFFFF) | st.none())
def test_vpd_parsers_on_arbitrary_pages(parse, render, page, body, pdt, stated):
    length = len(body) if stated is None else stated
    check_parse_and_render(parse, render, bytes([pdt, page]) + length.to_bytes(2, "big") + body)
    check_parse_and_render(parse, render, body)


@given(st.binary(max_size=300))
def test_inquiry_parser_on_arbitrary_bytes(data):
    check_parse_and_render(vpd.parse_standard_inquiry, vpd.render_standard_inquiry, data)


@given(st.sampled_from([0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2, 0xC0]), st.integers(0, 255), st.binary(max_size=100))
def test_any_vpd_page_on_arbitrary_bytes(page, pdt, body):
    check_parse_and_render(vpd.parse_vpd_page, vpd.render_vpd_page,
                           bytes([pdt, page]) + len(body).to_bytes(2, "big") + body)


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 0xFFFF),
                          st.binary(min_size=12, max_size=12)), max_size=8), st.integers(0, 300), st.booleans(),
       st.integers(0, 0x1F))
def test_operation_codes_parser_on_arbitrary_descriptors(entries, cut, rctd, pdt):
    body = b"".join(bytes([op, 0]) + sa.to_bytes(2, "big") + bytes([0, flags]) + size.to_bytes(2, "big")
                    + (tail if flags & 0x02 else b"") for op, sa, flags, size, tail in entries)
    data = (len(body).to_bytes(4, "big") + body)[:cut]
    try:
        codes = vpd.parse_supported_operation_codes(data)
    except ScsiParseError:
        return
    assert all(isinstance(line, str) for line in vpd.render_operation_codes(codes, pdt, rctd=rctd))

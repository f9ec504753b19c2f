"""One wire vector for every PDU kind, written by hand from RFC 7143's figures (§11.3-11.19), one
4-byte row of the figure per string, never produced by the codec: a field swapped the same way
in both directions of the codec fails here. Each is encoded, and decoded back, whole."""

from __future__ import annotations

import pytest
from iscsifs.proto import pdu as P
from iscsifs.proto.reader import PduReader

ISID = bytes.fromhex("400001370000")
LUN1 = 1 << 48  # LUN 1, single-level peripheral addressing (SAM-5 §4.7)
LUN2 = 2 << 48
SENSE = bytes.fromhex("700005000000000a000000002400000000 00".replace(" ", ""))  # ILLEGAL REQUEST 24/00


def rows(*words: str, data: str = "") -> bytes:
    """The figure's rows, top to bottom (byte 0 of each row first), then the data segment."""
    assert len(words) == 12 and all(len(w) == 8 for w in words), words
    return bytes.fromhex("".join(words) + data)


ZERO = "00000000"
NOP_OUT_BHS = rows("40800000", "00000004", "00010203", "04050607", "11223344", "ffffffff", "00000005", "00000009",
                   ZERO, ZERO, ZERO, ZERO)  # the NOP-Out's below, as a Reject carries it back

VECTORS: list[tuple[P.Pdu, bytes]] = [
    # §11.18 NOP-Out: I=1 opcode 0x00, F=1; LUN; ITT; TTT; CmdSN; ExpStatSN; reserved; "ping".
    (P.NopOut(lun=0x0001020304050607, initiator_task_tag=0x11223344, target_transfer_tag=0xFFFFFFFF, cmd_sn=5,
              exp_stat_sn=9, immediate=True, data=b"ping"),
     NOP_OUT_BHS + b"ping"),
    # §11.3 SCSI Command: opcode 0x01; F R . . . ATTR(001); LUN; ITT; EDTL; CmdSN; ExpStatSN; CDB (READ(10)).
    (P.ScsiCommand(lun=LUN1, initiator_task_tag=0x0A0B0C0D, expected_data_transfer_length=4096, cmd_sn=0x100,
                   exp_stat_sn=0x200, cdb=bytes.fromhex("28000000001000000800") + bytes(6), read=True, final=True,
                   attr=1),
     rows("01c10000", ZERO, "00010000", ZERO, "0a0b0c0d", "00001000", "00000100", "00000200",
          "28000000", "00100000", "08000000", ZERO)),
    # §11.5 Task Management Function Request: I=1 opcode 0x02; 1 + function (ABORT TASK); LUN; ITT; RTT;
    # CmdSN; ExpStatSN; RefCmdSN; ExpDataSN; reserved.
    (P.TaskMgmtRequest(function=P.TmfFunction.ABORT_TASK, lun=LUN2, initiator_task_tag=0x21,
                       referenced_task_tag=0x0A0B0C0D, cmd_sn=7, exp_stat_sn=8, ref_cmd_sn=6, exp_data_sn=0x33),
     rows("42810000", ZERO, "00020000", ZERO, "00000021", "0a0b0c0d", "00000007", "00000008",
          "00000006", "00000033", ZERO, ZERO)),
    # §11.12 Login Request: I=1 opcode 0x03; T C . . CSG NSG (T, CSG=1, NSG=3); Version-max; Version-min;
    # ISID; TSIH; ITT; CID; reserved; CmdSN; ExpStatSN; reserved; "a=b\0".
    (P.LoginRequest(isid=ISID, tsih=0x1234, initiator_task_tag=0x01020304, cid=5, cmd_sn=1, exp_stat_sn=0x0A,
                    csg=1, nsg=3, transit=True, data=b"a=b\0"),
     rows("43870000", "00000004", "40000137", "00001234", "01020304", "00050000", "00000001", "0000000a",
          ZERO, ZERO, ZERO, ZERO, data="613d6200")),
    # §11.10 Text Request: opcode 0x04; F; LUN; ITT; TTT; CmdSN; ExpStatSN; reserved; "SendTargets=All\0".
    (P.TextRequest(initiator_task_tag=0x31, target_transfer_tag=0xFFFFFFFF, cmd_sn=3, exp_stat_sn=4,
                   data=b"SendTargets=All\0"),
     rows("04800000", "00000010", ZERO, ZERO, "00000031", "ffffffff", "00000003", "00000004",
          ZERO, ZERO, ZERO, ZERO, data="53656e6454617267" "6574733d416c6c00")),
    # §11.7 SCSI Data-Out: opcode 0x05; F; LUN; ITT; TTT; reserved; ExpStatSN; reserved; DataSN;
    # Buffer Offset; reserved; "xyz" and one byte of padding.
    (P.DataOut(lun=LUN1, initiator_task_tag=0x41, target_transfer_tag=0x900, exp_stat_sn=0x55, data_sn=2,
               buffer_offset=0x2000, final=True, data=b"xyz"),
     rows("05800000", "00000003", "00010000", ZERO, "00000041", "00000900", ZERO, "00000055",
          ZERO, "00000002", "00002000", ZERO, data="78797a00")),
    # §11.14 Logout Request: I=1 opcode 0x06; 1 + reason code (close the session); reserved; ITT; CID;
    # CmdSN; ExpStatSN; reserved.
    (P.LogoutRequest(initiator_task_tag=0x51, cmd_sn=0x61, exp_stat_sn=0x71, reason=P.LogoutReason.CLOSE_SESSION,
                     cid=3),
     rows("46800000", ZERO, ZERO, ZERO, "00000051", "00030000", "00000061", "00000071",
          ZERO, ZERO, ZERO, ZERO)),
    # §11.19 NOP-In: opcode 0x20; F; LUN; ITT; TTT; StatSN; ExpCmdSN; MaxCmdSN; reserved.
    (P.NopIn(lun=0, initiator_task_tag=0x11223344, target_transfer_tag=0xFFFFFFFF, stat_sn=0x101,
             exp_cmd_sn=0x102, max_cmd_sn=0x103),
     rows("20800000", ZERO, ZERO, ZERO, "11223344", "ffffffff", "00000101", "00000102",
          "00000103", ZERO, ZERO, ZERO)),
    # §11.4 SCSI Response: opcode 0x21; 1 . . o u O U . (U); Response; Status (CHECK CONDITION);
    # reserved; ITT; SNACK Tag; StatSN; ExpCmdSN; MaxCmdSN; ExpDataSN; Bidirectional Read Residual
    # Count; Residual Count; SenseLength and sense data.
    (P.ScsiResponse(initiator_task_tag=0x0A0B0C0D, response=0, status=2, stat_sn=0x201, exp_cmd_sn=0x202,
                    max_cmd_sn=0x203, residual_count=0x300, underflow=True, exp_data_sn=1, snack_tag=0x5A,
                    data=len(SENSE).to_bytes(2, "big") + SENSE),
     rows("21820002", "00000014", ZERO, ZERO, "0a0b0c0d", "0000005a", "00000201", "00000202",
          "00000203", "00000001", ZERO, "00000300", data="0012" + SENSE.hex())),
    # §11.6 Task Management Function Response: opcode 0x22; 1; Response (task does not exist);
    # reserved; ITT; reserved; StatSN; ExpCmdSN; MaxCmdSN; reserved.
    (P.TaskMgmtResponse(initiator_task_tag=0x21, response=P.TmfResponse.TASK_DOES_NOT_EXIST, stat_sn=0x11,
                        exp_cmd_sn=0x12, max_cmd_sn=0x13),
     rows("22800100", ZERO, ZERO, ZERO, "00000021", ZERO, "00000011", "00000012",
          "00000013", ZERO, ZERO, ZERO)),
    # §11.13 Login Response: opcode 0x23; T C . . CSG NSG (T, CSG=0, NSG=1); Version-max; Version-active;
    # ISID; TSIH; ITT; reserved; StatSN; ExpCmdSN; MaxCmdSN; Status-Class, Status-Detail (02/01:
    # authentication failed); reserved.
    (P.LoginResponse(isid=ISID, tsih=7, initiator_task_tag=0x01020304, stat_sn=0x64, exp_cmd_sn=1,
                     max_cmd_sn=0x11, status_class=2, status_detail=1, csg=0, nsg=1, transit=True),
     rows("23810000", ZERO, "40000137", "00000007", "01020304", ZERO, "00000064", "00000001",
          "00000011", "02010000", ZERO, ZERO)),
    # §11.11 Text Response: opcode 0x24; F C (C: more follows); LUN; ITT; TTT; StatSN; ExpCmdSN;
    # MaxCmdSN; reserved; "K=V" and a byte of padding.
    (P.TextResponse(initiator_task_tag=0x31, target_transfer_tag=0x77, stat_sn=0x65, exp_cmd_sn=4,
                    max_cmd_sn=0x14, final=False, cont=True, data=b"K=V"),
     rows("24400000", "00000003", ZERO, ZERO, "00000031", "00000077", "00000065", "00000004",
          "00000014", ZERO, ZERO, ZERO, data="4b3d5600")),
    # §11.7 SCSI Data-In: opcode 0x25; F A . . . O U S (F, U, S); reserved; Status; LUN; ITT; TTT;
    # StatSN; ExpCmdSN; MaxCmdSN; DataSN; Buffer Offset; Residual Count; "data".
    (P.DataIn(lun=LUN1, initiator_task_tag=0x41, target_transfer_tag=0xFFFFFFFF, stat_sn=0x66, exp_cmd_sn=5,
              max_cmd_sn=0x15, data_sn=3, buffer_offset=0x3000, final=True, has_status=True, status=0,
              residual_count=0x10, underflow=True, data=b"data"),
     rows("25830000", "00000004", "00010000", ZERO, "00000041", "ffffffff", "00000066", "00000005",
          "00000015", "00000003", "00003000", "00000010", data="64617461")),
    # §11.15 Logout Response: opcode 0x26; 1; Response; reserved; ITT; reserved; StatSN; ExpCmdSN;
    # MaxCmdSN; reserved; Time2Wait; Time2Retain; reserved.
    (P.LogoutResponse(initiator_task_tag=0x51, response=0, stat_sn=0x67, exp_cmd_sn=6, max_cmd_sn=0x16,
                      time2wait=2, time2retain=20),
     rows("26800000", ZERO, ZERO, ZERO, "00000051", ZERO, "00000067", "00000006",
          "00000016", ZERO, "00020014", ZERO)),
    # §11.8 Ready To Transfer: opcode 0x31; 1; LUN; ITT; TTT; StatSN; ExpCmdSN; MaxCmdSN; R2TSN;
    # Buffer Offset; Desired Data Transfer Length.
    (P.R2T(lun=LUN1, initiator_task_tag=0x42, target_transfer_tag=0x901, stat_sn=0x68, exp_cmd_sn=7,
           max_cmd_sn=0x17, r2t_sn=1, buffer_offset=0x4000, desired_data_transfer_length=0x10000),
     rows("31800000", ZERO, "00010000", ZERO, "00000042", "00000901", "00000068", "00000007",
          "00000017", "00000001", "00004000", "00010000")),
    # §11.9 Asynchronous Message: opcode 0x32; 1; LUN; 0xffffffff; reserved; StatSN; ExpCmdSN;
    # MaxCmdSN; AsyncEvent (logout requested), AsyncVCode, Parameter1; Parameter2, Parameter3; reserved.
    (P.AsyncMessage(lun=LUN2, stat_sn=0x69, exp_cmd_sn=8, max_cmd_sn=0x18,
                    async_event=P.AsyncEvent.LOGOUT_REQUESTED, parameter1=0x0102, parameter2=0x0304, parameter3=10),
     rows("32800000", ZERO, "00020000", ZERO, "ffffffff", ZERO, "00000069", "00000008",
          "00000018", "01000102", "0304000a", ZERO)),
    # §11.17 Reject: opcode 0x3f; 1; Reason (invalid PDU field); reserved; 0xffffffff; reserved;
    # StatSN; ExpCmdSN; MaxCmdSN; DataSN/R2TSN; reserved; the rejected PDU's header (the NOP-Out above).
    (P.Reject(reason=0x09, stat_sn=0x6A, exp_cmd_sn=9, max_cmd_sn=0x19, data_sn=4, data=NOP_OUT_BHS),
     rows("3f800900", "00000030", ZERO, ZERO, "ffffffff", ZERO, "0000006a", "00000009",
          "00000019", "00000004", ZERO, ZERO, data=NOP_OUT_BHS.hex())),
]


def test_every_pdu_kind_has_a_vector():
    assert {type(p) for p, _ in VECTORS} == set(P.REGISTRY.values())


@pytest.mark.parametrize("pdu, wire", VECTORS, ids=[type(p).__name__ for p, _ in VECTORS])
def test_encodes_to_the_rfc_figure(pdu, wire):
    assert P.pdu_bytes(pdu) == wire


@pytest.mark.parametrize("pdu, wire", VECTORS, ids=[type(p).__name__ for p, _ in VECTORS])
def test_decodes_from_the_rfc_figure(pdu, wire):
    reader = PduReader(accept=P.INITIATOR_OPCODES | P.TARGET_OPCODES)
    reader.feed(wire)
    assert reader.next_pdu() == pdu
    assert reader.next_pdu() is None


def test_nsg_is_sent_only_with_the_transit_bit():
    # §11.12.3: NSG is reserved (zero) unless T is set; a request that stays in its stage says so.
    staying = P.LoginRequest(isid=ISID, tsih=0, initiator_task_tag=1, cid=0, cmd_sn=1, exp_stat_sn=0, csg=1, nsg=3,
                             transit=False, cont=True)
    assert P.pdu_bytes(staying)[:4] == bytes.fromhex("43440000")


def test_a_reject_names_the_pdu_it_rejects():
    reject = next(p for p, _ in VECTORS if isinstance(p, P.Reject))
    assert reject.rejected_header == P.NopOut(0x0001020304050607, 0x11223344, 0xFFFFFFFF, 5, 9, True)

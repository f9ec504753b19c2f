"""Full-feature phase in the sans-I/O ConnectionCore: the CmdSN window, write plans, Data-In, NOP-In, Reject,
and what a target may not answer; ``net.connection`` over a fake target is tests/net/test_connection.py."""

from __future__ import annotations

import pytest
from iscsifs.proto import pdu as P
from iscsifs.proto.connection import (
    ConnectionCore,
    ResponseReceived,
    ScsiTask,
    SendPdus,
    TaskDone,
    sn_le,
    sn_lt,
)
from iscsifs.proto.errors import (
    RejectedError,
    RemoteProtocolError,
)
from iscsifs.proto.text import OperationalParams


def core(**params) -> ConnectionCore:
    return ConnectionCore(OperationalParams(**params), cmd_sn=10, exp_cmd_sn=10, max_cmd_sn=20, exp_stat_sn=5)


def test_serial_number_arithmetic_wraps():
    assert sn_lt(0xFFFFFFFF, 0) and not sn_lt(0, 0xFFFFFFFF)
    assert sn_le(5, 5) and sn_lt(5, 6)


def test_window_closes_and_never_moves_back():
    c = core()
    c.max_cmd_sn = 10
    assert c.window_open
    c.issue(ScsiTask(0, b"\0" * 6))
    assert not c.window_open
    c._update_window(11, 9)  # MaxCmdSN < ExpCmdSN - 1: ignored
    assert c.max_cmd_sn == 10
    c._update_window(11, 12)
    assert c.window_open and c.exp_cmd_sn == 11
    c._update_window(10, 11)  # older values: never backwards
    assert (c.exp_cmd_sn, c.max_cmd_sn) == (11, 12)


def test_write_plan_immediate_and_unsolicited_within_first_burst():
    c = core(max_recv_data_segment_length=8192, first_burst_length=20000, immediate_data=True, initial_r2t=False)
    data = bytes(range(256)) * 200  # 51200 bytes
    pdus = c.issue(ScsiTask(0, b"\x2a" + bytes(9), data_out=memoryview(data)))
    (cmd, burst) = pdus
    outs = burst.pdus()
    assert isinstance(cmd, P.ScsiCommand) and not cmd.final and cmd.write
    assert len(cmd.data) == 8192 and cmd.expected_data_transfer_length == len(data)
    assert [(o.buffer_offset, len(o.data), o.data_sn, o.final) for o in outs] == [
        (8192, 8192, 0, False), (16384, 3616, 1, True)]
    assert all(o.target_transfer_tag == P.RESERVED_TAG for o in outs)
    # The rest comes by R2T, each burst in MaxRecvDataSegmentLength pieces with DataSN from 0.
    r2t = P.R2T(0, cmd.initiator_task_tag, 0x55, 0, 10, 20, 0, 20000, 20000)
    (ev,) = c.receive(r2t)
    assert isinstance(ev, SendPdus)
    (burst,) = ev.pdus
    got = [(o.buffer_offset, len(o.data), o.data_sn, o.final, o.target_transfer_tag) for o in burst.pdus()]
    assert got == [(20000, 8192, 0, False, 0x55), (28192, 8192, 1, False, 0x55), (36384, 3616, 2, True, 0x55)]
    assert b"".join(bytes(o.data) for o in burst.pdus()) == data[20000:40000]
    for hd, dd in ((False, False), (True, True), (True, False)):  # one loop encodes what encode_pdu would
        assert b"".join(P.encode_burst(burst, hd, dd)) == b"".join(P.pdu_bytes(o, hd, dd) for o in burst.pdus())


def test_write_plan_initial_r2t_no_immediate():
    c = core(immediate_data=False, initial_r2t=True)
    pdus = c.issue(ScsiTask(0, bytes(10), data_out=memoryview(bytes(4096))))
    assert len(pdus) == 1 and pdus[0].final and pdus[0].data == b""


def test_bad_r2ts_are_protocol_errors():
    c = core(max_burst_length=8192)
    (cmd, *_) = c.issue(ScsiTask(0, bytes(10), data_out=memoryview(bytes(65536))))
    itt = cmd.initiator_task_tag
    for bad in (P.R2T(0, itt, 1, 0, 10, 20, 1, 0, 4096),  # R2TSN out of order
                P.R2T(0, itt, 1, 0, 10, 20, 0, 0, 16384),  # beyond MaxBurstLength
                P.R2T(0, itt, 1, 0, 10, 20, 0, 65000, 4096),  # beyond the transfer
                P.R2T(0, 999, 1, 0, 10, 20, 0, 0, 4096)):  # unknown task
        with pytest.raises(RemoteProtocolError):
            c.receive(bad)


def test_data_in_reassembly_with_status_in_last_pdu():
    c = core()
    task = ScsiTask(0, bytes(10), expected_in=10000)
    (cmd,) = c.issue(task)
    itt = cmd.initiator_task_tag
    assert c.receive(P.DataIn(0, itt, P.RESERVED_TAG, 0, 11, 21, 0, 0, data=b"a" * 6000)) == []
    (done,) = c.receive(P.DataIn(0, itt, P.RESERVED_TAG, 5, 11, 21, 1, 6000, final=True, has_status=True,
                                 status=0, data=b"b" * 4000))
    assert isinstance(done, TaskDone) and done.task is task
    assert bytes(task.result.data) == b"a" * 6000 + b"b" * 4000
    assert c.exp_stat_sn == 6 and c.exp_cmd_sn == 11 and c.max_cmd_sn == 21


def test_data_in_underflow_then_separate_response_with_sense():
    c = core()
    task = ScsiTask(0, bytes(10), expected_in=4096)
    (cmd,) = c.issue(task)
    itt = cmd.initiator_task_tag
    c.receive(P.DataIn(0, itt, P.RESERVED_TAG, 0, 11, 21, 0, 0, final=True, data=b"x" * 1000))
    sense = bytes([0x70, 0, 0x01]) + bytes(15)
    (_done,) = c.receive(P.ScsiResponse(itt, 0, 2, 5, 11, 21, residual_count=3096, underflow=True,
                                       data=len(sense).to_bytes(2, "big") + sense))
    assert bytes(task.result.data) == b"x" * 1000 and task.result.sense == sense and task.result.status == 2


@pytest.mark.parametrize("bad", [
    lambda itt: P.DataIn(0, itt, 0, 0, 0, 0, 1, 0, data=b"x"),  # DataSN gap
    lambda itt: P.DataIn(0, itt, 0, 0, 0, 0, 0, 4000, data=b"x" * 200),  # beyond EDTL
    lambda itt: P.DataIn(0, itt, 0, 0, 0, 0, 0, 8, data=b"x"),  # out of order offset
    lambda itt: P.DataIn(0, itt + 1, 0, 0, 0, 0, 0, 0, data=b"x"),  # unknown ITT
    lambda itt: P.ScsiResponse(itt, 0, 0, 0, 0, 0, data=b"\x00\x10"),  # SenseLength beyond segment
])
def test_bad_data_in(bad):
    c = core()
    (cmd,) = c.issue(ScsiTask(0, bytes(10), expected_in=4096))
    with pytest.raises(RemoteProtocolError):
        c.receive(bad(cmd.initiator_task_tag))


def test_target_nop_in_is_answered_without_advancing_cmd_sn():
    c = core()
    (ev,) = c.receive(P.NopIn(lun=3 << 48, initiator_task_tag=P.RESERVED_TAG, target_transfer_tag=0x1234,
                              stat_sn=5, exp_cmd_sn=10, max_cmd_sn=30))
    (nop,) = ev.pdus
    assert isinstance(nop, P.NopOut) and nop.immediate
    assert (nop.initiator_task_tag, nop.target_transfer_tag, nop.cmd_sn) == (P.RESERVED_TAG, 0x1234, 10)
    assert nop.lun == 3 << 48
    assert c.cmd_sn == 10 and c.max_cmd_sn == 30 and c.exp_stat_sn == 5  # unsolicited StatSN not advanced


def test_reject_fails_the_rejected_command():
    c = core()
    task = ScsiTask(0, bytes(10), expected_in=512)
    (cmd,) = c.issue(task)
    (done,) = c.receive(P.Reject(reason=0x09, stat_sn=5, exp_cmd_sn=11, max_cmd_sn=21, data=P.pdu_bytes(cmd)[:48]))
    assert isinstance(done, TaskDone) and isinstance(task.error, RejectedError)
    assert "invalid PDU field" in str(task.error)


def test_responses_for_requests_never_sent_are_protocol_errors():
    c = core()
    for bad in (P.TextResponse(7, P.RESERVED_TAG, 5, 10, 20), P.LogoutResponse(7, 0, 5, 10, 20),
                P.NopIn(0, 7, P.RESERVED_TAG, 5, 10, 20), P.LoginResponse(b"\0" * 6, 1, 0, 0, 0, 0, 0, 0, 1, 3, True)):
        with pytest.raises(RemoteProtocolError):
            c.receive(bad)
    req = c.text_request(b"SendTargets=All\0", P.RESERVED_TAG)
    assert not req.immediate and c.cmd_sn == 11
    (ev,) = c.receive(P.TextResponse(req.initiator_task_tag, P.RESERVED_TAG, 5, 11, 20))
    assert isinstance(ev, ResponseReceived)

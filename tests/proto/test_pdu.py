"""PDU codec: vectors fed whole, byte by byte and with trailing bytes; hypothesis round trips."""

from __future__ import annotations

import dataclasses
import os

import crcmod.predefined
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsifs.proto import pdu as P
from iscsifs.proto.errors import DigestError, RemoteProtocolError
from iscsifs.proto.reader import PduReader, Placement

_crc32c_ref = crcmod.predefined.mkCrcFun("crc-32c")

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
u64 = st.integers(0, (1 << 64) - 1)
small = st.binary(max_size=300)

STRATEGIES = {
    P.NopOut: st.builds(P.NopOut, lun=u64, initiator_task_tag=u32, target_transfer_tag=u32, cmd_sn=u32,
                        exp_stat_sn=u32, immediate=st.booleans(), data=small),
    P.ScsiCommand: st.builds(P.ScsiCommand, lun=u64, initiator_task_tag=u32, expected_data_transfer_length=u32,
                             cmd_sn=u32, exp_stat_sn=u32, cdb=st.binary(min_size=16, max_size=16),
                             read=st.booleans(), write=st.booleans(), final=st.booleans(), attr=st.integers(0, 7),
                             immediate=st.booleans(), ahs=st.binary(max_size=32).map(lambda b: b[: len(b) // 4 * 4]),
                             data=small),
    P.TaskMgmtRequest: st.builds(P.TaskMgmtRequest, function=st.integers(1, 8), lun=u64, initiator_task_tag=u32,
                                 referenced_task_tag=u32, cmd_sn=u32, exp_stat_sn=u32, ref_cmd_sn=u32,
                                 exp_data_sn=u32),
    P.LoginRequest: st.builds(P.LoginRequest, isid=st.binary(min_size=6, max_size=6), tsih=u16,
                              initiator_task_tag=u32, cid=u16, cmd_sn=u32, exp_stat_sn=u32, csg=st.sampled_from([0, 1]),
                              nsg=st.sampled_from([1, 3]), transit=st.just(True), cont=st.booleans(), data=small),
    P.TextRequest: st.builds(P.TextRequest, initiator_task_tag=u32, target_transfer_tag=u32, cmd_sn=u32,
                             exp_stat_sn=u32, final=st.booleans(), cont=st.booleans(), lun=u64, data=small),
    P.DataOut: st.builds(P.DataOut, lun=u64, initiator_task_tag=u32, target_transfer_tag=u32, exp_stat_sn=u32,
                         data_sn=u32, buffer_offset=u32, final=st.booleans(), data=small),
    P.LogoutRequest: st.builds(P.LogoutRequest, initiator_task_tag=u32, cmd_sn=u32, exp_stat_sn=u32,
                               reason=st.integers(0, 2), cid=u16),
    P.NopIn: st.builds(P.NopIn, lun=u64, initiator_task_tag=u32, target_transfer_tag=u32, stat_sn=u32,
                       exp_cmd_sn=u32, max_cmd_sn=u32, data=small),
    P.ScsiResponse: st.builds(P.ScsiResponse, initiator_task_tag=u32, response=st.integers(0, 255),
                              status=st.integers(0, 255), stat_sn=u32, exp_cmd_sn=u32, max_cmd_sn=u32,
                              residual_count=u32, underflow=st.booleans(), overflow=st.booleans(),
                              bidi_underflow=st.booleans(), bidi_overflow=st.booleans(), exp_data_sn=u32,
                              bidi_residual_count=u32, snack_tag=u32, data=small),
    P.TaskMgmtResponse: st.builds(P.TaskMgmtResponse, initiator_task_tag=u32, response=st.integers(0, 255),
                                  stat_sn=u32, exp_cmd_sn=u32, max_cmd_sn=u32),
    P.LoginResponse: st.builds(P.LoginResponse, isid=st.binary(min_size=6, max_size=6), tsih=u16,
                               initiator_task_tag=u32, stat_sn=u32, exp_cmd_sn=u32, max_cmd_sn=u32,
                               status_class=st.integers(0, 3), status_detail=st.integers(0, 255),
                               csg=st.sampled_from([0, 1]), nsg=st.sampled_from([1, 3]), transit=st.just(True),
                               cont=st.booleans(), version_max=st.integers(0, 255),
                               version_active=st.integers(0, 255), data=small),
    P.TextResponse: st.builds(P.TextResponse, initiator_task_tag=u32, target_transfer_tag=u32, stat_sn=u32,
                              exp_cmd_sn=u32, max_cmd_sn=u32, final=st.booleans(), cont=st.booleans(), lun=u64,
                              data=small),
    P.DataIn: st.builds(P.DataIn, lun=u64, initiator_task_tag=u32, target_transfer_tag=u32, stat_sn=u32,
                        exp_cmd_sn=u32, max_cmd_sn=u32, data_sn=u32, buffer_offset=u32, final=st.booleans(),
                        has_status=st.booleans(), status=st.integers(0, 255), residual_count=u32,
                        underflow=st.booleans(), overflow=st.booleans(), acknowledge=st.booleans(), data=small),
    P.LogoutResponse: st.builds(P.LogoutResponse, initiator_task_tag=u32, response=st.integers(0, 255),
                                stat_sn=u32, exp_cmd_sn=u32, max_cmd_sn=u32, time2wait=u16, time2retain=u16),
    P.R2T: st.builds(P.R2T, lun=u64, initiator_task_tag=u32, target_transfer_tag=u32, stat_sn=u32, exp_cmd_sn=u32,
                     max_cmd_sn=u32, r2t_sn=u32, buffer_offset=u32, desired_data_transfer_length=u32),
    P.AsyncMessage: st.builds(P.AsyncMessage, lun=u64, stat_sn=u32, exp_cmd_sn=u32, max_cmd_sn=u32,
                              async_event=st.integers(0, 255), async_vcode=st.integers(0, 255), parameter1=u16,
                              parameter2=u16, parameter3=u16, data=small),
    P.Reject: st.builds(P.Reject, reason=st.integers(0, 255), stat_sn=u32, exp_cmd_sn=u32, max_cmd_sn=u32,
                        data_sn=u32, data=small),
}


def test_every_registered_pdu_has_a_strategy():
    assert set(STRATEGIES) == set(P.REGISTRY.values())


def _norm(p):
    return dataclasses.replace(p, data=bytes(p.data))


def _reader(accept, hd=False, dd=False):
    return PduReader(max_recv_data_segment_length=1 << 16, header_digest=hd, data_digest=dd, accept=accept)


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data(), hd=st.booleans(), dd=st.booleans())
def test_round_trip_whole_bytewise_and_trailing(cls, data, hd, dd):
    pdu = data.draw(STRATEGIES[cls])
    accept = P.INITIATOR_OPCODES | P.TARGET_OPCODES
    wire = P.pdu_bytes(pdu, hd, dd)
    assert len(wire) % 4 == 0
    # whole
    r = _reader(accept, hd, dd)
    r.feed(wire)
    assert _norm(r.next_pdu()) == _norm(pdu)
    assert r.next_pdu() is None
    # one byte at a time
    r = _reader(accept, hd, dd)
    got = None
    for i in range(len(wire)):
        assert got is None
        r.feed(wire[i : i + 1])
        got = r.next_pdu()
    assert _norm(got) == _norm(pdu)
    # followed by trailing bytes of the next PDU
    r = _reader(accept, hd, dd)
    r.feed(wire + wire[:30])
    assert _norm(r.next_pdu()) == _norm(pdu)
    assert r.next_pdu() is None and r.buffered == 30


SCSI_READ_VECTOR = bytes.fromhex(
    "01c1000000000000" "0001000000000000" "00000007" "00001000" "0000002a" "00000011"
    "28000000080000000800000000000000")


def test_scsi_command_vector():
    p = P.ScsiCommand(lun=1 << 48, initiator_task_tag=7, expected_data_transfer_length=4096, cmd_sn=42,
                      exp_stat_sn=17, cdb=bytes.fromhex("28000000080000000800"), read=True, attr=1)
    assert P.pdu_bytes(p) == SCSI_READ_VECTOR


def test_login_request_vector():
    p = P.LoginRequest(isid=bytes.fromhex("800000000001"), tsih=0, initiator_task_tag=0, cid=0, cmd_sn=1,
                       exp_stat_sn=0, csg=0, nsg=1, transit=True, data=b"AuthMethod=None\0")
    wire = P.pdu_bytes(p)
    assert wire[:8] == bytes.fromhex("4381000000000010")  # I|0x03, T|CSG0|NSG1, DSL 16
    assert wire[8:14] == bytes.fromhex("800000000001")
    assert wire[48:] == b"AuthMethod=None\0"


def test_crc32c_matches_crcmod_reference():
    for data in (b"", b"123456789", bytes(48), bytes(range(256)) * 17):
        assert P.crc32c(data) == _crc32c_ref(data)
    assert P.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_header_digest_is_checked_and_little_endian():
    p = P.NopIn(lun=0, initiator_task_tag=1, target_transfer_tag=P.RESERVED_TAG, stat_sn=1, exp_cmd_sn=2,
                max_cmd_sn=3)
    wire = bytearray(P.pdu_bytes(p, header_digest=True))
    assert wire[48:52] == _crc32c_ref(bytes(wire[:48])).to_bytes(4, "little")
    wire[10] ^= 1
    r = PduReader(header_digest=True)
    r.feed(wire)
    with pytest.raises(DigestError):
        r.next_pdu()


def test_data_digest_is_checked():
    p = P.DataIn(lun=0, initiator_task_tag=1, target_transfer_tag=P.RESERVED_TAG, stat_sn=0, exp_cmd_sn=0,
                 max_cmd_sn=0, data_sn=0, buffer_offset=0, data=b"abcde")
    wire = bytearray(P.pdu_bytes(p, data_digest=True))
    assert len(wire) == 48 + 8 + 4
    wire[49] ^= 0x80
    r = PduReader(data_digest=True)
    r.feed(wire)
    with pytest.raises(DigestError):
        r.next_pdu()


def test_data_segment_longer_than_declared_is_refused_before_it_arrives():
    p = P.DataIn(lun=0, initiator_task_tag=1, target_transfer_tag=P.RESERVED_TAG, stat_sn=0, exp_cmd_sn=0,
                 max_cmd_sn=0, data_sn=0, buffer_offset=0, data=bytes(8193))
    r = PduReader(max_recv_data_segment_length=8192)
    r.feed(P.pdu_bytes(p)[:48])  # only the header: the length alone is enough to refuse
    with pytest.raises(RemoteProtocolError, match="MaxRecvDataSegmentLength"):
        r.next_pdu()


def test_initiator_opcode_from_target_is_refused():
    r = PduReader()
    r.feed(P.pdu_bytes(P.NopOut()))
    with pytest.raises(RemoteProtocolError, match="opcode 0x00"):
        r.next_pdu()


def test_unknown_opcode_is_refused():
    r = PduReader()
    r.feed(bytes([0x1F]) + bytes(47))
    with pytest.raises(RemoteProtocolError):
        r.next_pdu()


def test_reject_carries_the_rejected_header():
    cmd = P.ScsiCommand(lun=0, initiator_task_tag=99, expected_data_transfer_length=0, cmd_sn=5, exp_stat_sn=1,
                        cdb=bytes(16))
    rej = P.Reject(reason=0x04, stat_sn=1, exp_cmd_sn=6, max_cmd_sn=7, data=P.pdu_bytes(cmd)[:48])
    r = PduReader()
    r.feed(P.pdu_bytes(rej))
    got = r.next_pdu()
    assert got.rejected_header.initiator_task_tag == 99


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans(), st.booleans())
def test_fuzz_reader_only_raises_protocol_errors(blob, hd, dd):
    r = PduReader(header_digest=hd, data_digest=dd)
    r.feed(blob)
    try:
        while r.next_pdu() is not None:
            pass
    except RemoteProtocolError:
        pass


def _drive(reader, wire, chunk):
    """What Session._read_loop does, over ``wire`` received ``chunk`` bytes at a time: the
    PDUs parsed whole, and the data of each Placement received straight into its own buffer."""
    items, cursor = [], 0
    while True:
        item = reader.next()
        if item is None:
            if cursor >= len(wire):
                return items
            reader.feed(wire[cursor : cursor + chunk])
            cursor += chunk
        elif isinstance(item, Placement):
            dest = memoryview(bytearray(item.length))
            got = reader.start_placing(dest)
            rest = item.length - got
            dest[got:] = wire[cursor : cursor + rest]  # recv_into the command's buffer
            reader.placing(dest[got:])
            cursor += rest
            reader.placed(item.length)
            while not reader.trailer_done():  # the digest is checked before the data is used
                reader.feed(wire[cursor : cursor + chunk])
                cursor += chunk
            items.append(dataclasses.replace(item.header, data=bytes(dest)))
        else:
            items.append(item)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=4), chunk=st.integers(1, 5000),
       hd=st.booleans(), dd=st.booleans())
def test_placed_data_in_arrives_intact_between_whole_pdus(sizes, chunk, hd, dd):
    pdus = []
    for i, n in enumerate(sizes):
        pdus.append(P.DataIn(lun=0, initiator_task_tag=1, target_transfer_tag=P.RESERVED_TAG, stat_sn=0,
                             exp_cmd_sn=0, max_cmd_sn=0, data_sn=i, buffer_offset=0, data=os.urandom(n)))
        pdus.append(P.NopIn(lun=0, initiator_task_tag=P.RESERVED_TAG, target_transfer_tag=P.RESERVED_TAG,
                            stat_sn=i, exp_cmd_sn=0, max_cmd_sn=0, data=b"x" * (i % 5)))
    wire = b"".join(P.pdu_bytes(p, hd, dd) for p in pdus)
    reader = PduReader(header_digest=hd, data_digest=dd, place_min=100)
    assert [_norm(p) for p in _drive(reader, wire, chunk)] == [_norm(p) for p in pdus]
    assert reader.buffered == 0


def test_placed_data_digest_is_checked():
    p = P.DataIn(lun=0, initiator_task_tag=1, target_transfer_tag=P.RESERVED_TAG, stat_sn=0, exp_cmd_sn=0,
                 max_cmd_sn=0, data_sn=0, buffer_offset=0, data=bytes(range(250)) * 4)
    wire = bytearray(P.pdu_bytes(p, data_digest=True))
    wire[600] ^= 0x10
    with pytest.raises(DigestError):
        _drive(PduReader(data_digest=True, place_min=100), bytes(wire), 64)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 5000), data=st.data(), hd=st.booleans(), dd=st.booleans())
def test_a_burst_encodes_as_its_data_out_pdus_would(size, data, hd, dd):
    payload = memoryview(os.urandom(size))
    offset = data.draw(st.integers(0, size - 1))
    length = data.draw(st.integers(1, size - offset))
    burst = P.DataOutBurst(lun=1 << 48, initiator_task_tag=7, target_transfer_tag=9, exp_stat_sn=3, data=payload,
                           offset=offset, length=length, segment=data.draw(st.integers(1, 2000)))
    pdus = burst.pdus()
    assert b"".join(bytes(p.data) for p in pdus) == bytes(payload[offset : offset + length])
    assert [p.data_sn for p in pdus] == list(range(len(pdus))) and [p.final for p in pdus][-1]
    assert not any(p.final for p in pdus[:-1])
    assert b"".join(P.encode_burst(burst, hd, dd)) == b"".join(P.pdu_bytes(p, hd, dd) for p in pdus)


@given(STRATEGIES[P.DataIn], st.binary(max_size=64), st.binary(max_size=8))
def test_data_in_with_data_is_replace_of_the_data_only(header, data, ahs):
    header = dataclasses.replace(header, ahs=ahs)
    assert header.with_data(data) == dataclasses.replace(header, data=data)

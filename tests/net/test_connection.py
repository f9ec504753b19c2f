"""One connection against the fake target: a renegotiation the target asks for (RFC 7143 §11.9;
the other Asynchronous Messages are the session's, tests/net/test_async_messages.py), a digest
error, a login redirection."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from iscsifs.net.connection import Connection
from iscsifs.proto import pdu as P
from iscsifs.proto.address import Portal
from iscsifs.proto.errors import Undelivered
from iscsifs.proto.login import LoginConfig
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.proto.text import Offer, encode_text, parse_text

from support.fake_target import FakeTarget, logged_in, stream_pair

CONFIG = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt")
READ_8 = bytes.fromhex("28000000000000000800")  # READ(10) LBA 0, 8 blocks


async def test_negotiation_request_is_answered_with_a_text_request():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, CONFIG, max_cmd_sn_delta=4, mrdsl=8192)
            # What the session does on this message (its core's table: RENEGOTIATE).
            session.on_async = lambda connection, event: nursery.start_soon(connection.renegotiate, RecoveryPolicy())
            await target.send(P.AsyncMessage(lun=0, async_event=P.AsyncEvent.NEGOTIATION_REQUESTED, parameter3=5,
                                             **target.sn()))
            req = await target.recv()
            assert isinstance(req, P.TextRequest) and req.data == b""
            target.exp_cmd_sn = req.cmd_sn + 1
            # The target declares a smaller MaxRecvDataSegmentLength and offers a key we must answer.
            await target.send(P.TextResponse(req.initiator_task_tag, P.RESERVED_TAG, data=encode_text(
                [("MaxRecvDataSegmentLength", "1024"), ("X-com.example.Unknown", "1"), ("NewKey", "1")]),
                **target.sn()))
            answer = await target.recv()
            assert isinstance(answer, P.TextRequest) and parse_text(answer.data) == [("NewKey", "NotUnderstood")]
            target.exp_cmd_sn = answer.cmd_sn + 1
            await target.send(P.TextResponse(answer.initiator_task_tag, P.RESERVED_TAG, **target.sn()))
            while session.params.max_recv_data_segment_length != 1024:
                await trio.sleep(0.01)
            nursery.start_soon(target.serve)
            data = bytes(range(256)) * 16
            res = await session.execute(0, bytes.fromhex("2a00000000000000080000"), data_out=data)
            assert res.status == 0 and bytes(target.disk[:4096]) == data
            outs = [p for p in target.log if isinstance(p, P.DataOut)]
            assert outs and max(len(p.data) for p in outs) <= 1024
            cmds = [p for p in target.log if isinstance(p, P.ScsiCommand)]
            assert len(cmds[-1].data) <= 1024  # immediate data too
            nursery.cancel_scope.cancel()


# -- digests and redirection -------------------------------------------------------------------------


async def test_a_flipped_bit_under_data_digest_drops_the_connection_never_returns_data():
    config = LoginConfig(initiator_name="iqn.2026-11.test:init", target_name="iqn.2026-11.test:tgt",
                         offer=Offer(header_digest=("CRC32C",), data_digest=("CRC32C",)))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target, session = await logged_in(nursery, config, max_cmd_sn_delta=4, digests=True)
            assert session.params.header_digest and session.params.data_digest
            target.disk[:4096] = b"D" * 4096
            nursery.start_soon(target.serve)
            assert bytes((await session.execute(0, READ_8, expected_in=4096)).data) == b"D" * 4096
            target.corrupt = lambda wire: wire[:100] + bytes([wire[100] ^ 0x01]) + wire[101:]  # in the data
            with pytest.raises(Undelivered, match="data digest mismatch"):
                await session.execute(0, READ_8, expected_in=4096)
            assert not session.alive
            nursery.cancel_scope.cancel()


async def test_login_redirection_is_followed():
    moved, there = stream_pair(), stream_pair()
    streams = {"first.example": moved[0], "second.example": there[0]}
    seen = []

    async def connect(portal):
        seen.append(portal)
        return streams[portal.host]

    async def redirect(server):
        req = FakeTarget(server)
        first = await req.recv()
        await req.send(P.LoginResponse(isid=first.isid, tsih=0, initiator_task_tag=first.initiator_task_tag,
                                       status_class=1, status_detail=1, csg=0, nsg=0, transit=False,
                                       data=encode_text([("TargetAddress", "second.example:3262,1")]), **req.sn()))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(redirect, moved[1])
            nursery.start_soon(FakeTarget(there[1]).login)
            connection = await Connection.open(nursery, Portal("first.example", 3260), CONFIG, connect)
            assert connection.alive and connection.portal == Portal("second.example", 3262)
            nursery.cancel_scope.cancel()
    assert [p.host for p in seen] == ["first.example", "second.example"]

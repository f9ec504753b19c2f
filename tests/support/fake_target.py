"""An in-memory fake target for ``iscsifs.net``: the real codec on one end of a socket pair.

Real targets (tgtd, istgt) are tested elsewhere; this one produces the states they will not:
malformed PDUs, odd negotiation answers, hostile CHAP.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from iscsifs.net.connection import Connection
from iscsifs.proto import chap
from iscsifs.proto import pdu as P
from iscsifs.proto.address import Portal
from iscsifs.proto.reader import PduReader
from iscsifs.proto.text import encode_text, parse_text
from iscsifs.scsi.response import encode_lun


class FakeTarget:
    """Just enough of a target to log in and serve scripted behaviour; sans-I/O codec over a stream."""

    def __init__(self, stream, *, max_cmd_sn_delta: int = 0, mrdsl: int = 4096, digests: bool = False):
        self.stream = stream
        self._send_lock = trio.Lock()
        self.reader = PduReader(max_recv_data_segment_length=1 << 20, accept=P.INITIATOR_OPCODES)
        self.stat_sn = 100
        self.exp_cmd_sn = 0
        self.delta = max_cmd_sn_delta
        self.mrdsl = mrdsl
        self.disk = bytearray(1 << 16)
        self.log: list[P.Pdu] = []
        self.want_digests = digests  # answer HeaderDigest/DataDigest=CRC32C at login
        self.digests = False  # in force (from full feature phase on)
        # SCSI behaviour for serve()/scsi(): what a disk LUN says about itself.
        self.luns = [0]
        self.write_protected = False
        self.serial = b"FAKE0001"  # VPD 0x80
        self.lun_serials: dict[int, bytes] = {}  # LUNs whose VPD 0x80 differs from ``serial``
        # No device at the LUN, as a restarted tgt before its LUNs are added back: INQUIRY says
        # so (qualifier 3), the VPD pages are another LUN's (tgt answers with LUN 0's), and the
        # other commands but REPORT LUNS fail with LOGICAL UNIT NOT SUPPORTED.
        self.absent = False
        self.max_transfer_blocks = 0  # VPD 0xB0; 0 = no limit
        self.pending_sense: list[bytes] = []  # answer the next commands with CHECK CONDITION + this
        self.pending_status: list[int] = []  # ...or with this status (BUSY, TASK SET FULL...)
        self.swallow = 0  # leave this many commands unanswered
        self.swallowed: list[P.ScsiCommand] = []
        self.task_management: list[P.TaskMgmtRequest] = []
        self.answer_task_management = True
        self.backlog: list[P.Pdu] = []  # what came while a write's Data-Out was awaited, next for recv()

    async def recv(self) -> P.Pdu:
        if self.backlog:
            return self.backlog.pop(0)
        return await self._recv_wire()

    async def _recv_wire(self) -> P.Pdu:
        while True:
            pdu = self.reader.next_pdu()
            if pdu is not None:
                self.log.append(pdu)
                return pdu
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.reader.feed(data)

    async def send(self, pdu: P.Pdu) -> None:
        await self.send_raw(self.corrupt(P.pdu_bytes(pdu, self.digests, self.digests)))

    async def send_raw(self, wire: bytes) -> None:
        """Bytes as they are; one sender at a time (a socket stream refuses two)."""
        async with self._send_lock:
            await self.stream.send_all(wire)

    def corrupt(self, wire: bytes) -> bytes:
        """Hook for tests: what actually goes on the wire."""
        return wire

    def sn(self, advance: bool = True) -> dict:
        s = dict(stat_sn=self.stat_sn, exp_cmd_sn=self.exp_cmd_sn, max_cmd_sn=self.exp_cmd_sn + self.delta)
        if advance:
            self.stat_sn += 1
        return s

    async def login(self) -> None:
        while True:
            req = await self.recv()
            self.exp_cmd_sn = req.cmd_sn
            done = req.transit and req.nsg == P.Stage.FULL_FEATURE
            keys = [("MaxRecvDataSegmentLength", str(self.mrdsl)), ("InitialR2T", "Yes")] if req.csg == 1 else []
            if req.csg == 1 and self.want_digests:
                keys += [("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")]
            await self.send(P.LoginResponse(isid=req.isid, tsih=7 if done else 0,
                                            initiator_task_tag=req.initiator_task_tag, status_class=0,
                                            status_detail=0, csg=req.csg, nsg=req.nsg, transit=req.transit,
                                            data=encode_text(keys), **self.sn()))
            if done:
                if self.want_digests:
                    self.digests = True
                    self.reader.header_digest = self.reader.data_digest = True
                return

    async def serve(self) -> None:
        """Answer SCSI commands (see scsi()) and NOP-Outs until the initiator goes away."""
        try:
            while True:
                req = await self.recv()
                if isinstance(req, P.ScsiCommand):
                    await self.scsi(req)
                elif isinstance(req, P.TaskMgmtRequest):
                    self.task_management.append(req)
                    if self.answer_task_management:
                        await self.send(P.TaskMgmtResponse(req.initiator_task_tag, 0, **self.sn()))
                elif isinstance(req, P.NopOut) and req.initiator_task_tag != P.RESERVED_TAG:
                    self.exp_cmd_sn = req.cmd_sn + (0 if req.immediate else 1)
                    await self.send(P.NopIn(0, req.initiator_task_tag, P.RESERVED_TAG, **self.sn()))
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def respond(self, req: P.ScsiCommand, data: bytes) -> None:
        """GOOD status with ``data`` (cut to the allocation length) in one Data-In."""
        self.exp_cmd_sn = req.cmd_sn + 1
        data = data[: req.expected_data_transfer_length]
        if not data:
            await self.send(P.ScsiResponse(req.initiator_task_tag, 0, 0, **self.sn()))
            return
        await self.send(P.DataIn(0, req.initiator_task_tag, P.RESERVED_TAG, data_sn=0, buffer_offset=0, final=True,
                                 has_status=True, data=data, **self.sn()))

    async def check_condition(self, req: P.ScsiCommand, sense: bytes) -> None:
        self.exp_cmd_sn = req.cmd_sn + 1
        await self.send(P.ScsiResponse(req.initiator_task_tag, 0, 0x02, data=len(sense).to_bytes(2, "big") + sense,
                                       **self.sn()))

    async def scsi(self, req: P.ScsiCommand) -> None:
        """A small disk: INQUIRY (+VPD 0x00/0x80/0x83/0xB0), REPORT LUNS, TUR, READ CAPACITY(16),
        MODE SENSE(6), READ(10), WRITE(10); 512-byte blocks over ``disk``."""
        if self.pending_status:
            self.exp_cmd_sn = req.cmd_sn + 1
            await self.send(P.ScsiResponse(req.initiator_task_tag, 0, self.pending_status.pop(0), **self.sn()))
            return
        if self.pending_sense:
            await self.check_condition(req, self.pending_sense.pop(0))
            return
        if self.swallow:  # never answer this command (a hung target)
            self.swallow -= 1
            self.exp_cmd_sn = req.cmd_sn + 1
            self.swallowed.append(req)
            return
        c = req.cdb
        op = c[0]
        if self.absent and op == 0x12 and not c[1] & 1:
            inquiry = bytes([0x7F, 0, 5, 2, 31, 0, 0, 0]) + b"FAKE    " + b"controller".ljust(16) + b"0001"
            await self.respond(req, inquiry)  # qualifier 3, type 0x1F: no device at this LUN
            return
        if self.absent and op not in (0x12, 0xA0):  # tgt answers REPORT LUNS whatever LUN it is sent to
            await self.check_condition(req, sense_bytes(0x05, 0x25, 0x00))
            return
        if op == 0x12 and c[1] & 1:
            page = c[2]
            serial = b"CONTROLR" if self.absent else self.lun_serials.get(req.lun >> 48, self.serial)
            body = {0x00: bytes([0x00, 0x80, 0x83, 0xB0]), 0x80: serial,
                    0x83: bytes([0x01, 0x03, 0x00, 0x08]) + bytes.fromhex("6001405fa4e4c0de"),
                    0xB0: bytes(4) + self.max_transfer_blocks.to_bytes(4, "big") + bytes(52)}.get(page)
            if body is None:
                await self.check_condition(req, sense_bytes(0x05, 0x24, 0x00))
            else:
                await self.respond(req, bytes([0, page]) + len(body).to_bytes(2, "big") + body)
        elif op == 0x12:
            await self.respond(req, bytes([0, 0, 5, 2, 31, 0, 0, 0]) + b"FAKE    " + b"fake disk".ljust(16) + b"0001")
        elif op == 0xA0:
            body = b"".join(encode_lun(n).to_bytes(8, "big") for n in self.luns)
            await self.respond(req, (len(body)).to_bytes(4, "big") + bytes(4) + body)
        elif op == 0x00:
            await self.respond(req, b"")
        elif op == 0x9E:
            last_lba = len(self.disk) // 512 - 1
            await self.respond(req, last_lba.to_bytes(8, "big") + (512).to_bytes(4, "big") + bytes(20))
        elif op == 0x1A:
            await self.respond(req, bytes([3, 0, 0x80 if self.write_protected else 0, 0]))
        elif op in (0x28, 0x2A):
            await self.serve_scsi(req)
        else:
            await self.check_condition(req, sense_bytes(0x05, 0x20, 0x00))

    async def serve_scsi(self, req: P.ScsiCommand) -> None:
        self.exp_cmd_sn = req.cmd_sn + 1
        op = req.cdb[0]
        if op == 0x28:  # READ(10), 512-byte blocks, status in the last Data-In
            lba, n = int.from_bytes(req.cdb[2:6], "big"), int.from_bytes(req.cdb[7:9], "big")
            data = bytes(self.disk[lba * 512 : (lba + n) * 512])
            for i, off in enumerate(range(0, len(data), self.mrdsl)):
                last = off + self.mrdsl >= len(data)
                await self.send(P.DataIn(0, req.initiator_task_tag, P.RESERVED_TAG, data_sn=i, buffer_offset=off,
                                         final=last, has_status=last, data=data[off : off + self.mrdsl],
                                         **self.sn(advance=last)))
        elif op == 0x2A:  # WRITE(10)
            lba = int.from_bytes(req.cdb[2:6], "big")
            buf = await self.data_out(req)
            self.disk[lba * 512 : lba * 512 + len(buf)] = buf
            await self.send(P.ScsiResponse(req.initiator_task_tag, 0, 0, **self.sn()))

    async def data_out(self, req: P.ScsiCommand) -> bytearray:
        """A write command's data: what came with it, then the rest by R2T bursts of 3000 bytes."""
        buf = bytearray(req.data)
        r2t_sn = 0
        while len(buf) < req.expected_data_transfer_length:
            want = min(3000, req.expected_data_transfer_length - len(buf))
            await self.send(P.R2T(0, req.initiator_task_tag, 0x900 + r2t_sn, r2t_sn=r2t_sn,
                                  buffer_offset=len(buf), desired_data_transfer_length=want,
                                  **self.sn(advance=False)))
            r2t_sn += 1
            got = 0
            while True:
                d = await self._recv_wire()
                if not (isinstance(d, P.DataOut) and d.initiator_task_tag == req.initiator_task_tag):
                    self.backlog.append(d)  # another command meanwhile: served after this one
                    continue
                assert d.buffer_offset == len(buf), (d, len(buf))
                buf += d.data
                got += len(d.data)
                if d.final:
                    break
            assert got == want
        return buf

    async def check_condition_with_data(self, req: P.ScsiCommand, data: bytes, sense: bytes) -> None:
        """Data-In without status, then CHECK CONDITION with ``sense`` (a tape's short block)."""
        self.exp_cmd_sn = req.cmd_sn + 1
        data = data[: req.expected_data_transfer_length]
        if data:
            await self.send(P.DataIn(0, req.initiator_task_tag, P.RESERVED_TAG, data_sn=0, buffer_offset=0,
                                     final=True, data=data, **self.sn(advance=False)))
        residual = req.expected_data_transfer_length - len(data)
        await self.send(P.ScsiResponse(req.initiator_task_tag, 0, 0x02, data=len(sense).to_bytes(2, "big") + sense,
                                       residual_count=residual, underflow=residual > 0, exp_data_sn=1 if data else 0,
                                       **self.sn()))


def sense_bytes(key: int, asc: int, ascq: int) -> bytes:
    """Fixed-format sense data (SPC-4 §4.5.3)."""
    return bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0])


def stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two connected in-process sockets: the initiator's end and the fake target's."""
    a, b = socket.socketpair()
    return (trio.SocketStream(trio.socket.from_stdlib_socket(a)),
            trio.SocketStream(trio.socket.from_stdlib_socket(b)))


async def login_and_serve(target: FakeTarget) -> None:
    try:
        await target.login()
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    await target.serve()


class FakePortals:
    """A ``net.dial.Connect``: every connection, to any portal, reaches a new FakeTarget
    that ``serve`` runs (log in, then answer commands). ``down`` portals refuse connections."""

    def __init__(self, nursery: trio.Nursery, serve: Callable[[FakeTarget], Awaitable[None]] = login_and_serve,
                 **target_kw) -> None:
        self.nursery = nursery
        self.serve = serve
        self.target_kw = target_kw
        self.targets: list[tuple[Portal, FakeTarget]] = []
        self.down: set[Portal] = set()
        self.setup: Callable[[Portal, FakeTarget], None] = lambda portal, target: None

    async def __call__(self, portal: Portal) -> trio.SocketStream:
        from iscsifs.net.dial import ConnectError

        if portal in self.down:
            raise ConnectError(f"cannot connect to portal {portal}: Connection refused")
        client, server = stream_pair()
        target = FakeTarget(server, **self.target_kw)
        self.setup(portal, target)
        self.targets.append((portal, target))
        self.nursery.start_soon(self.serve, target)
        return client

    def at(self, portal: Portal) -> list[FakeTarget]:
        return [t for p, t in self.targets if p == portal]


async def open_over(nursery, client_stream, config) -> Connection:
    """A Connection logged in over ``client_stream``."""

    async def connect(portal: Portal) -> trio.SocketStream:
        return client_stream

    return await Connection.open(nursery, Portal("fake", 3260), config, connect)


async def logged_in(nursery, config, **target_kw) -> tuple[FakeTarget, Connection]:
    """A fake target on one end of a socket pair, and a Connection logged in to it."""
    client, server = stream_pair()
    target = FakeTarget(server, **target_kw)
    nursery.start_soon(target.login)
    return target, await open_over(nursery, client, config)


@dataclass
class ChapScript:
    """How the fake target runs CHAP: honestly by default, or in one of the ways a hostile or
    broken target would."""

    user: str = "alice"
    secret: bytes = b"alice-secret-1"
    target_user: str = "target"
    target_secret: bytes = b"target-secret-1"
    algorithm: int = 5
    challenge: bytes = field(default_factory=lambda: os.urandom(16))
    chap_c: str | None = None  # sent instead of the encoded challenge (oversized, malformed)
    answer_secret: bytes | None = None  # the secret our CHAP_R to the initiator uses (None: target_secret)
    chap_r: str | None = None  # sent instead of the computed response
    answer_mutual: bool = True  # answer the initiator's challenge at all
    stop_after_response: bool = False  # hang after the initiator's response (to steal its challenge)
    seen: dict[str, str] = field(default_factory=dict)  # the initiator's CHAP_N/R/I/C


async def chap_login(target: FakeTarget, script: ChapScript, stopped: trio.Event | None = None) -> None:
    """The security stage with CHAP, then FakeTarget.login for the operational stage. An initiator
    that hangs up (as it must when it refuses us) ends it quietly."""
    try:
        await _chap_login(target, script, stopped)
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _chap_login(target: FakeTarget, script: ChapScript, stopped: trio.Event | None) -> None:

    async def answer(req: P.LoginRequest, keys, *, transit=False, status=(0, 0)) -> None:
        await target.send(P.LoginResponse(isid=req.isid, tsih=0, initiator_task_tag=req.initiator_task_tag,
                                          status_class=status[0], status_detail=status[1], csg=req.csg,
                                          nsg=req.nsg if transit else 0, transit=transit, data=encode_text(keys),
                                          **target.sn()))

    req = await target.recv()
    target.exp_cmd_sn = req.cmd_sn
    assert "CHAP" in dict(parse_text(req.data))["AuthMethod"].split(",")
    await answer(req, [("AuthMethod", "CHAP")])
    req = await target.recv()
    offered = dict(parse_text(req.data))["CHAP_A"].split(",")
    assert str(script.algorithm) in offered
    await answer(req, [("CHAP_A", str(script.algorithm)), ("CHAP_I", "17"),
                       ("CHAP_C", script.chap_c or "0x" + script.challenge.hex())])
    req = await target.recv()
    script.seen.update(parse_text(req.data))
    if stopped is not None:
        stopped.set()
    if script.stop_after_response:
        await trio.sleep_forever()
    want = chap.chap_response(script.algorithm, 17, script.secret, script.challenge)
    if script.seen.get("CHAP_R") != "0x" + want.hex():
        await answer(req, [], status=(2, 1))
        return
    keys = []
    if "CHAP_C" in script.seen and script.answer_mutual:
        ours = chap.decode_binary(script.seen["CHAP_C"], "CHAP_C")
        response = chap.chap_response(script.algorithm, int(script.seen["CHAP_I"]),
                                      script.answer_secret or script.target_secret, ours)
        keys = [("CHAP_N", script.target_user), ("CHAP_R", script.chap_r or "0x" + response.hex())]
    await answer(req, keys, transit=True)
    await target.login()

"""A TCP proxy that reads the iSCSI PDUs going by and tampers with the target's answers to chosen
SCSI commands. Threads and plain sockets, like ``faultproxy``, so tests driving a real mount in a
subprocess can steer it while it runs:

- ``cut[opcode] = n`` cuts the data of each Data-In answering a command of that operation code to
  n bytes, as a target with a firmware bug would send it;
- ``rename[opcode] = other`` sends commands of that opcode to the target as ``other``, so that a
  target which lacks a command (answers ILLEGAL REQUEST, invalid operation code) can be played by
  one that has it;
- ``swallow = Swallow(lba, blocks, reads=..., writes=...)`` drops every answer (Data-In and SCSI
  Response) to the READs and/or WRITEs whose blocks overlap that range, as a target that lost
  those tasks would (and, if asked, the answers to ABORT TASK for them and to LOGICAL UNIT RESET);
  ``swallow = None`` lets answers through again. What the initiator did meanwhile is recorded:
  ``matched`` (each send of such a command), ``task_management`` (every task management request),
  ``logins`` (every connection's login), ``swallowed`` (PDUs dropped).

Each PDU is framed whole: BHS, AHS, header digest, data segment, padding, data digest. The proxy
follows each connection's login to learn whether CRC32C header and data digests were negotiated
(they apply from the first PDU after the last Login Response), checks every digest it frames
(``framing_errors`` names any that does not match: the framing would be wrong) and computes
the digests again for a PDU it changes, so every fault above works with digests on or off.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import crc32c

from support.faultproxy import TcpProxy

BHS = 48
DIGEST = 4

# Operation codes (RFC 7143 §11.1): the initiator's, then the target's.
SCSI_COMMAND = 0x01
TASK_MANAGEMENT = 0x02
LOGIN_REQUEST = 0x03
SCSI_RESPONSE = 0x21
TASK_MANAGEMENT_RESPONSE = 0x22
LOGIN_RESPONSE = 0x23
DATA_IN = 0x25

# Task management functions (§11.5.1).
ABORT_TASK = 1
LOGICAL_UNIT_RESET = 5

FULL_FEATURE_PHASE = 3

READS = frozenset({0x08, 0x28, 0xA8, 0x88})  # READ (6), (10), (12), (16)
WRITES = frozenset({0x0A, 0x2A, 0xAA, 0x8A})  # WRITE (6), (10), (12), (16)


def blocks_of(cdb: bytes) -> tuple[int, int] | None:
    """(first LBA, number of blocks) of a READ or WRITE (6), (10), (12) or (16) CDB; None for any
    other command."""
    op = cdb[0]
    if op in (0x08, 0x0A):
        return int.from_bytes(cdb[1:4], "big") & 0x1FFFFF, cdb[4] or 256  # 0 blocks means 256 in (6)
    if op in (0x28, 0x2A):
        return int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[7:9], "big")
    if op in (0xA8, 0xAA):
        return int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[6:10], "big")
    if op in (0x88, 0x8A):
        return int.from_bytes(cdb[2:10], "big"), int.from_bytes(cdb[10:14], "big")
    return None


def _digest(data: bytes | bytearray | memoryview) -> bytes:
    return crc32c.crc32c(data).to_bytes(4, "little")  # least significant byte first on the wire


def _pdu_length(header: bytes | bytearray, header_digest: bool = False, data_digest: bool = False) -> int:
    """The whole PDU's length from its BHS: AHS, digests that are in use and padding included."""
    ahs = header[4] * 4
    data = int.from_bytes(header[5:8], "big")
    length = BHS + ahs + data + (-data % 4)
    if header_digest:
        length += DIGEST
    if data_digest and data:
        length += DIGEST
    return length


@dataclass(frozen=True)
class Swallow:
    """Which answers to drop: those to READs (``reads``) and/or WRITEs (``writes``) that touch any
    of the ``blocks`` logical blocks from ``lba``; with ``aborts``, also the answers to ABORT TASK
    for those commands; with ``resets``, the answers to every LOGICAL UNIT RESET."""

    lba: int
    blocks: int = 1
    reads: bool = True
    writes: bool = False
    aborts: bool = False
    resets: bool = False

    def covers(self, cdb: bytes) -> bool:
        if not ((self.reads and cdb[0] in READS) or (self.writes and cdb[0] in WRITES)):
            return False
        extent = blocks_of(cdb)
        if extent is None:
            return False
        first, count = extent
        return first < self.lba + self.blocks and self.lba < first + count


@dataclass(frozen=True)
class Command:
    """One send of a command whose answers are swallowed."""

    connection: int
    itt: bytes
    opcode: int
    lba: int
    blocks: int
    at: float  # time.monotonic()


@dataclass(frozen=True)
class TaskManagement:
    """A task management request the initiator sent."""

    connection: int
    function: int  # ABORT_TASK, LOGICAL_UNIT_RESET, ...
    lun: bytes
    referenced_task: bytes
    of_swallowed: bool  # ABORT TASK of a command whose answers were being swallowed
    at: float


@dataclass(frozen=True)
class Login:
    """The first Login Request of a connection."""

    connection: int
    isid: bytes
    tsih: int  # 0: a new session, or a reinstatement of the session with this ISID
    normal: bool  # not a discovery session
    at: float


class _Link:
    """What the proxy knows of one connection."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.header_digest = False
        self.data_digest = False
        self.negotiated: dict[str, str] = {}
        self.text = {True: bytearray(), False: bytearray()}  # login text not yet parsed, per direction
        self.logged = False
        self.spoil: dict[bytes, int] = {}  # initiator task tag -> operation code whose Data-In is cut
        self.swallow: set[bytes] = set()  # initiator task tags whose answers are dropped


class PduProxy(TcpProxy):
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.cut: dict[int, int] = {}  # operation code -> bytes of answer data left
        self.spoiled: dict[int, int] = {}  # operation code -> answers spoiled so far
        self.rename: dict[int, int] = {}  # operation code -> the one the target gets instead
        self.swallow: Swallow | None = None
        self.swallowed = 0  # PDUs dropped because of ``swallow``
        self.matched: list[Command] = []
        self.task_management: list[TaskManagement] = []
        self.logins: list[Login] = []
        self.connections = 0
        self.framing_errors: list[str] = []
        self._sockets: list[socket.socket] = []
        super().__init__(upstream)

    def _connected(self, client: socket.socket, server: socket.socket) -> None:
        server.settimeout(None)
        with self._lock:
            self._sockets += [client, server]
            self.connections += 1
            link = _Link(self.connections)
        threading.Thread(target=self._pump, args=(client, server, link, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, link, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, link: _Link, outbound: bool) -> None:
        buffer = bytearray()
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                buffer += data
                out = []
                start = 0
                while len(buffer) - start >= BHS:
                    # The digests in force are read per PDU: the last Login Response switches them on.
                    n = _pdu_length(buffer[start : start + BHS], link.header_digest, link.data_digest)
                    if len(buffer) - start < n:
                        break
                    pdu = bytes(buffer[start : start + n])
                    start += n
                    forwarded = self._outbound(pdu, link) if outbound else self._inbound(pdu, link)
                    if forwarded is not None:
                        out.append(forwarded)
                del buffer[:start]
                if out:
                    sink.sendall(b"".join(out))
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # -- framing -----------------------------------------------------------------------------------

    def _split(self, pdu: bytes, link: _Link) -> tuple[bytes, bytes]:
        """(BHS and AHS, data segment without padding) of a framed PDU, its digests checked."""
        header_end = BHS + pdu[4] * 4
        data_start = header_end + (DIGEST if link.header_digest else 0)
        length = int.from_bytes(pdu[5:8], "big")
        padded_end = data_start + length + (-length % 4)
        if link.header_digest and pdu[header_end:data_start] != _digest(pdu[:header_end]):
            self._framing_error(link, pdu, "header digest")
        if link.data_digest and length and pdu[padded_end : padded_end + DIGEST] != _digest(pdu[data_start:padded_end]):
            self._framing_error(link, pdu, "data digest")
        return pdu[:header_end], pdu[data_start : data_start + length]

    def _join(self, header: bytes, data: bytes, link: _Link) -> bytes:
        """A PDU from its BHS and AHS (the data segment length set here) and data, with the digests
        in use computed again."""
        header = header[:5] + len(data).to_bytes(3, "big") + header[8:]
        padded = data + bytes(-len(data) % 4)
        out = header
        if link.header_digest:
            out += _digest(header)
        out += padded
        if link.data_digest and data:
            out += _digest(padded)
        return out

    def _framing_error(self, link: _Link, pdu: bytes, what: str) -> None:
        with self._lock:
            self.framing_errors.append(f"connection {link.number}: {what} of a PDU of opcode {pdu[0] & 0x3F:#04x} "
                                       "does not match")

    def _login_text(self, pdu: bytes, link: _Link, outbound: bool) -> None:
        """Follow the negotiation of the digests: the last value of each key that is not a list
        (an offer) is what was agreed. Keys can straddle PDUs (the C bit)."""
        _, data = self._split(pdu, link)
        text = link.text[outbound]
        text += data
        if pdu[1] & 0x40:  # continued in the next PDU
            return
        for pair in bytes(text).split(b"\0"):
            key, _, value = pair.decode("utf-8", "replace").partition("=")
            if key in ("HeaderDigest", "DataDigest", "SessionType") and "," not in value:
                link.negotiated[key] = value
        text.clear()

    # -- the initiator's PDUs ------------------------------------------------------------------------

    def _outbound(self, pdu: bytes, link: _Link) -> bytes:
        op = pdu[0] & 0x3F
        if op == LOGIN_REQUEST:
            self._login_text(pdu, link, outbound=True)
            if not link.logged:
                link.logged = True
                with self._lock:
                    self.logins.append(Login(link.number, pdu[8:14], int.from_bytes(pdu[14:16], "big"),
                                             link.negotiated.get("SessionType", "Normal") != "Discovery",
                                             time.monotonic()))
            return pdu
        if op == TASK_MANAGEMENT:
            self._task_management(pdu, link)
            return pdu
        if op != SCSI_COMMAND:
            return pdu
        itt, cdb = pdu[16:20], pdu[32:48]
        if cdb[0] in self.cut:
            link.spoil[itt] = cdb[0]
        else:
            link.spoil.pop(itt, None)  # a tag is used again once its task ended
        swallow = self.swallow
        if swallow is not None and swallow.covers(cdb):
            link.swallow.add(itt)
            first, count = blocks_of(cdb) or (0, 0)
            with self._lock:
                self.matched.append(Command(link.number, itt, cdb[0], first, count, time.monotonic()))
        else:
            link.swallow.discard(itt)
        if cdb[0] in self.rename:
            header, data = self._split(pdu, link)
            header = header[:32] + bytes([self.rename[cdb[0]]]) + header[33:]
            pdu = self._join(header, data, link)
        return pdu

    def _task_management(self, pdu: bytes, link: _Link) -> None:
        function, itt, referenced = pdu[1] & 0x7F, pdu[16:20], pdu[20:24]
        of_swallowed = function == ABORT_TASK and referenced in link.swallow
        with self._lock:
            self.task_management.append(TaskManagement(link.number, function, pdu[8:16], referenced, of_swallowed,
                                                       time.monotonic()))
        swallow = self.swallow
        if swallow is not None and ((of_swallowed and swallow.aborts)
                                    or (function == LOGICAL_UNIT_RESET and swallow.resets)):
            link.swallow.add(itt)
        else:
            link.swallow.discard(itt)

    # -- the target's PDUs -------------------------------------------------------------------------

    def _inbound(self, pdu: bytes, link: _Link) -> bytes | None:
        op = pdu[0] & 0x3F
        if op == LOGIN_RESPONSE:
            self._login_text(pdu, link, outbound=False)
            final = pdu[1] & 0x80 and pdu[1] & 0x03 == FULL_FEATURE_PHASE and pdu[36] == 0
            if final:  # digests apply from the next PDU on, both ways
                link.header_digest = link.negotiated.get("HeaderDigest") == "CRC32C"
                link.data_digest = link.negotiated.get("DataDigest") == "CRC32C"
            return pdu
        if op in (DATA_IN, SCSI_RESPONSE, TASK_MANAGEMENT_RESPONSE) and self.swallow is not None \
                and pdu[16:20] in link.swallow:
            with self._lock:
                self.swallowed += 1
            return None
        if op != DATA_IN:
            return pdu
        opcode = link.spoil.get(pdu[16:20])
        if opcode is None or opcode not in self.cut:
            return pdu
        keep = self.cut[opcode]
        header, data = self._split(pdu, link)
        with self._lock:
            self.spoiled[opcode] = self.spoiled.get(opcode, 0) + 1
        return self._join(header, data[:keep], link)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

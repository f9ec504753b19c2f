"""A TCP proxy that reads the iSCSI PDUs going by and spoils the target's answers to chosen SCSI
commands: the data of each Data-In answering a command with a chosen operation code is cut to a
few bytes, as a target with a firmware bug would send it. Digests must be off (the mount is run
with ``header_digest=none,data_digest=none``): a spoiled PDU keeps a well-formed header.

Threads and plain sockets, like ``faultproxy``, so tests driving a real mount in a subprocess can
steer it: ``cut[opcode] = n`` cuts the answers to commands of that opcode to n bytes;
``rename[opcode] = other`` sends commands of that opcode to the target as ``other``, so that a
target which lacks a command (answers ILLEGAL REQUEST, invalid operation code) can be played by
one that has it.
"""

from __future__ import annotations

import socket
import threading

from support.faultproxy import TcpProxy

BHS = 48
SCSI_COMMAND = 0x01
DATA_IN = 0x25


def _pdu_length(header: bytes) -> int:
    ahs = header[4] * 4
    data = int.from_bytes(header[5:8], "big")
    return BHS + ahs + data + (-data % 4)


class PduProxy(TcpProxy):
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.cut: dict[int, int] = {}  # operation code -> bytes of answer data left
        self.spoiled: dict[int, int] = {}  # operation code -> answers spoiled so far
        self.rename: dict[int, int] = {}  # operation code -> the one the target gets instead
        self._sockets: list[socket.socket] = []
        super().__init__(upstream)

    def _connected(self, client: socket.socket, server: socket.socket) -> None:
        server.settimeout(None)
        with self._lock:
            self._sockets += [client, server]
        pending: dict[bytes, int] = {}  # initiator task tag -> operation code to spoil
        threading.Thread(target=self._pump, args=(client, server, pending, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, pending, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pending: dict[bytes, int], outbound: bool) -> None:
        buffer = b""
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                buffer += data
                out = []
                while len(buffer) >= BHS and len(buffer) >= _pdu_length(buffer):
                    n = _pdu_length(buffer)
                    pdu, buffer = buffer[:n], buffer[n:]
                    out.append(self._outbound(pdu, pending) if outbound else self._inbound(pdu, pending))
                sink.sendall(b"".join(out))
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _outbound(self, pdu: bytes, pending: dict[bytes, int]) -> bytes:
        if pdu[0] & 0x3F == SCSI_COMMAND and pdu[32] in self.cut:
            pending[pdu[16:20]] = pdu[32]
        if pdu[0] & 0x3F == SCSI_COMMAND and pdu[32] in self.rename:
            pdu = pdu[:32] + bytes([self.rename[pdu[32]]]) + pdu[33:]
        return pdu

    def _inbound(self, pdu: bytes, pending: dict[bytes, int]) -> bytes:
        if pdu[0] & 0x3F != DATA_IN:
            return pdu
        opcode = pending.get(pdu[16:20])
        if opcode is None or opcode not in self.cut:
            return pdu
        keep = self.cut[opcode]
        data = pdu[BHS : BHS + int.from_bytes(pdu[5:8], "big")][:keep]
        with self._lock:
            self.spoiled[opcode] = self.spoiled.get(opcode, 0) + 1
        header = pdu[:5] + len(data).to_bytes(3, "big") + pdu[8:BHS]
        return header + data + bytes(-len(data) % 4)

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

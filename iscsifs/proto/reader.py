"""Incremental PDU stream reader (RFC 7143 §11.2): frames bytes as they arrive into PDUs of
``iscsifs.proto.pdu``, checks digests, and hands large Data-In segments out to be received
straight into their command's buffer. Sans I/O: bytes in, PDUs out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iscsifs.proto.errors import DigestError, RemoteProtocolError
from iscsifs.proto.pdu import (
    BHS_LENGTH,
    LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH,
    REGISTRY,
    TARGET_OPCODES,
    DataIn,
    Opcode,
    Pdu,
    crc32c,
    digest_bytes,
    pad_length,
)

_DATA_IN = int(Opcode.SCSI_DATA_IN)  # a plain int: compared for every PDU


@dataclass(frozen=True, slots=True)
class Placement:
    """A Data-In to receive straight into its command's buffer: its header (data left empty) and
    the length of its data segment. See ``PduReader.next``."""

    header: DataIn
    length: int


@dataclass(slots=True)
class PduReader:
    """Incremental PDU stream parser: ``feed`` bytes (or receive into ``receive_buffer`` and call
    ``received``), then ``next_pdu()`` until it returns None.

    Every length is checked before any allocation: the data segment against the
    MaxRecvDataSegmentLength we declared, AHS against its 8-bit word count.

    ``next()`` also hands out large Data-In segments as a ``Placement`` instead of a PDU: the
    I/O layer copies their data from this buffer, and receives what is not here yet, straight
    into the command's read buffer (``start_placing``, then ``placed``). A read's bytes are then
    copied once on their way from the socket, not three times.
    """

    max_recv_data_segment_length: int = LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH
    header_digest: bool = False
    data_digest: bool = False
    accept: frozenset[int] = TARGET_OPCODES
    place_min: int = 32768  # smaller segments are parsed whole: placing them saves less than it costs
    _buf: bytearray = field(default_factory=lambda: bytearray(1 << 16))
    _pos: int = 0  # next unparsed byte
    _end: int = 0  # end of the received bytes
    _trailer: int = 0  # bytes of padding and data digest that follow a placed data segment
    _trailer_digest: int | None = None  # CRC32C of the segment being placed, then the digest due after it
    segments_placed: int = 0  # Data-In segments received straight into their command's buffer

    def _room(self, need: int) -> None:
        """At least ``need`` free bytes after ``_end``: move the unparsed bytes to the front, or grow."""
        if len(self._buf) - self._end >= need:
            return
        unparsed = self._end - self._pos
        if unparsed + need <= len(self._buf) and self._pos:
            self._buf[:unparsed] = self._buf[self._pos : self._end]  # same size: allowed with views exported
        else:
            grown = bytearray(max(2 * len(self._buf), unparsed + need))
            grown[:unparsed] = self._buf[self._pos : self._end]
            self._buf = grown
        self._pos, self._end = 0, unparsed

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._room(len(data))
        self._buf[self._end : self._end + len(data)] = data
        self._end += len(data)

    def receive_buffer(self, size: int) -> memoryview:
        """``size`` bytes of free space to receive into; then call ``received(n)``."""
        self._room(size)
        return memoryview(self._buf)[self._end : self._end + size]

    def received(self, n: int) -> None:
        self._end += n

    @property
    def buffered(self) -> int:
        return self._end - self._pos

    def _framing(self) -> tuple[int, int, int, type[Pdu], int, int, int] | None:
        """The next PDU's checked framing, once its BHS is buffered:
        (opcode, header end, data start, class, data length, data end, PDU end)."""
        if self._trailer and not self._skip_trailer():
            return None
        buf, pos = self._buf, self._pos
        if self._end - pos < BHS_LENGTH:
            return None
        opcode = buf[pos] & 0x3F
        ahs_len = buf[pos + 4] * 4
        dsl = int.from_bytes(buf[pos + 5 : pos + 8], "big")
        cls = REGISTRY.get(opcode)
        if cls is None or opcode not in self.accept:
            raise RemoteProtocolError(f"unexpected PDU opcode 0x{opcode:02x}")
        if dsl > self.max_recv_data_segment_length:
            raise RemoteProtocolError(
                f"data segment of {dsl} bytes exceeds MaxRecvDataSegmentLength {self.max_recv_data_segment_length}")
        header_end = pos + BHS_LENGTH + ahs_len
        data_start = header_end + (4 if self.header_digest else 0)
        data_end = data_start + dsl
        total_end = data_end + pad_length(dsl) + (4 if self.data_digest and dsl else 0)
        return opcode, header_end, data_start, cls, dsl, data_end, total_end

    def _check_header_digest(self, view: memoryview, opcode: int, header_end: int, data_start: int) -> None:
        if self.header_digest:
            expected = crc32c(view[self._pos : header_end])
            if bytes(view[header_end:data_start]) != digest_bytes(expected):
                raise DigestError(f"header digest mismatch on PDU opcode 0x{opcode:02x}")

    def next(self) -> Pdu | Placement | None:
        """The next PDU, or a ``Placement`` for a Data-In of ``place_min`` bytes or more as soon
        as its header is here; None until enough is buffered."""
        framing = self._framing()
        if framing is None:
            return None
        opcode, header_end, data_start, _cls, dsl, _data_end, _total_end = framing
        if opcode != _DATA_IN or dsl < self.place_min:
            return self._whole(framing)
        if self._end < data_start:
            return None
        view = memoryview(self._buf)
        try:
            self._check_header_digest(view, opcode, header_end, data_start)
            header = DataIn.unpack_bhs(bytes(view[self._pos : self._pos + BHS_LENGTH]),
                                       bytes(view[self._pos + BHS_LENGTH : header_end]), b"")
        finally:
            view.release()
        return Placement(header, dsl)

    def next_pdu(self) -> Pdu | None:
        """The next whole PDU (data segment included); None until it is all buffered."""
        framing = self._framing()
        return None if framing is None else self._whole(framing)

    def _whole(self, framing: tuple[int, int, int, type[Pdu], int, int, int]) -> Pdu | None:
        """``next_pdu`` with its ``_framing`` already read (``next`` read it twice per PDU)."""
        opcode, header_end, data_start, cls, dsl, data_end, total_end = framing
        if self._end < total_end:
            return None
        pos = self._pos
        view = memoryview(self._buf)
        try:
            self._check_header_digest(view, opcode, header_end, data_start)
            if self.data_digest and dsl:
                padded_end = data_end + pad_length(dsl)
                expected = crc32c(view[data_start:padded_end])
                if bytes(view[padded_end:total_end]) != digest_bytes(expected):
                    raise DigestError(f"data digest mismatch on PDU opcode 0x{opcode:02x}")
            bhs = bytes(view[pos : pos + BHS_LENGTH])
            ahs = bytes(view[pos + BHS_LENGTH : header_end])
            data = bytes(view[data_start:data_end])
        finally:
            view.release()
        self._pos = total_end
        return cls.unpack_bhs(bhs, ahs, data)

    # -- placing a Data-In segment where it belongs -------------------------------------------------

    def start_placing(self, dest: memoryview) -> int:
        """Consume the header of the ``Placement`` that ``next`` returned and copy the part of its
        data segment already buffered into ``dest`` (as long as the segment); returns how many
        bytes that was. The caller receives the rest straight into a buffer of its own, shows
        each piece to ``placing``, then calls ``placed``."""
        framing = self._framing()
        assert framing is not None and framing[0] == Opcode.SCSI_DATA_IN and framing[4] == len(dest)
        data_start = framing[2]
        have = min(self._end - data_start, len(dest))
        dest[:have] = memoryview(self._buf)[data_start : data_start + have]
        self._pos = data_start + have
        self._trailer_digest = None
        self.placing(dest[:have])
        return have

    def placing(self, piece: memoryview) -> None:
        """The next bytes of the segment being placed, as received: the data digest runs over
        them here, so it holds whatever becomes of the buffer they were received into."""
        if self.data_digest:
            self._trailer_digest = crc32c(piece, self._trailer_digest or 0)

    def placed(self, length: int) -> None:
        """All ``length`` bytes of the segment have been received: its padding and data digest
        are the next bytes. Nothing may use them until ``trailer_done()`` says True."""
        pad = pad_length(length)
        self.segments_placed += 1
        self._trailer = pad + (4 if self.data_digest else 0)
        self._trailer_digest = crc32c(b"\0" * pad, self._trailer_digest or 0) if self.data_digest else None

    def trailer_done(self) -> bool:
        """Consume a placed segment's padding and check its digest (DigestError); False until
        they are buffered."""
        return not self._trailer or self._skip_trailer()

    def _skip_trailer(self) -> bool:
        if self._end - self._pos < self._trailer:
            return False
        end = self._pos + self._trailer
        if self._trailer_digest is not None and bytes(self._buf[end - 4 : end]) != digest_bytes(self._trailer_digest):
            raise DigestError(f"data digest mismatch on PDU opcode 0x{Opcode.SCSI_DATA_IN:02x}")
        self._pos = end
        self._trailer = 0
        self._trailer_digest = None
        return True

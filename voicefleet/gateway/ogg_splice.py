"""One Ogg/Opus stream each way for a conversation whose pod changes under it.

Every pod's session starts an Ogg/Opus stream of its own (RFC 7845): a page with OpusHead,
a page with OpusTags, then audio pages numbered from 2, granule positions from 0. A client
must hear one stream, so toward the client the new pod's header pages are dropped and its
pages are renumbered to follow on (serial, page sequence, granule position, CRC). Toward the
new pod, the client's own header pages are sent first, as if its stream had just begun, and
its later pages renumbered to follow them.

Only headers are rewritten: Opus packets pass as they are (a decoder takes a packet from a
fresh encoder after another encoder's packets as it takes any packet).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OGG_CAPTURE = b"OggS"
HEADER_BYTES = 27
FLAG_CONTINUED = 0x01
FLAG_FIRST = 0x02  # beginning of stream
FLAG_LAST = 0x04  # end of stream
NO_GRANULE = -1  # a page on which no packet ends
OPUS_HEADERS = (b"OpusHead", b"OpusTags")
_HEADER = struct.Struct("<4sBBqIIIB")


class OggError(ValueError):
    """Bytes that are not whole Ogg pages."""


def _crc_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        value = index << 24
        for _ in range(8):
            value = (value << 1) ^ 0x04C11DB7 if value & 0x80000000 else value << 1
        table.append(value & 0xFFFFFFFF)
    return tuple(table)


_CRC = _crc_table()


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, no reflection, zero start, RFC 3533)."""
    value = 0
    for byte in data:
        value = ((value << 8) & 0xFFFFFFFF) ^ _CRC[((value >> 24) & 0xFF) ^ byte]
    return value


@dataclass
class Page:
    flags: int
    granule: int
    serial: int
    sequence: int
    lacing: bytes
    body: bytes

    @property
    def is_opus_header(self) -> bool:
        return not self.flags & FLAG_CONTINUED and self.body.startswith(OPUS_HEADERS)

    def encode(self) -> bytes:
        head = _HEADER.pack(
            OGG_CAPTURE,
            0,
            self.flags,
            self.granule,
            self.serial,
            self.sequence,
            0,
            len(self.lacing),
        )
        raw = head + self.lacing + self.body
        return raw[:22] + struct.pack("<I", ogg_crc(raw)) + raw[26:]


def parse_pages(data: bytes) -> list[Page]:
    """Whole pages only: a message that ends inside a page is an error (the runtime and
    Kyutai's clients send whole pages in each message)."""
    pages = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER_BYTES:
            raise OggError(f"{len(data) - offset} bytes left: not a whole Ogg page header")
        capture, version, flags, granule, serial, sequence, _crc, count = _HEADER.unpack_from(
            data, offset
        )
        if capture != OGG_CAPTURE or version != 0:
            raise OggError(f"no Ogg page at byte {offset}")
        lacing = data[offset + HEADER_BYTES : offset + HEADER_BYTES + count]
        start = offset + HEADER_BYTES + count
        end = start + sum(lacing)
        if len(lacing) < count or end > len(data):
            raise OggError(f"the Ogg page at byte {offset} is cut short")
        pages.append(Page(flags, granule, serial, sequence, bytes(lacing), data[start:end]))
        offset = end
    return pages


class TowardClient:
    """The stream a client hears. The first pod's pages go through with their own numbers;
    after :meth:`switch`, the next pod's header pages are dropped and its pages continue the
    numbering (granule positions advance by what the new pod's advance)."""

    def __init__(self) -> None:
        self.serial: int | None = None
        self.sequence = 0
        self.granule = 0
        self._source_granule = 0
        self._first_stream = True

    def switch(self) -> None:
        """The pages that follow come from a new stream (another pod's session)."""
        self._first_stream = False
        self._source_granule = 0

    def rewrite(self, data: bytes) -> bytes:
        out = []
        for page in parse_pages(data):
            if page.is_opus_header and not self._first_stream:
                continue
            if self.serial is None:
                self.serial = page.serial
            if page.granule != NO_GRANULE:
                self.granule += page.granule - self._source_granule
                self._source_granule = page.granule
                page.granule = self.granule
            if not self._first_stream:
                page.flags &= ~FLAG_FIRST
            page.serial = self.serial
            page.sequence = self.sequence
            self.sequence += 1
            out.append(page.encode())
        return b"".join(out)


class TowardPod:
    """The stream a pod hears from a client. The client's header pages are kept; a new pod
    (after :meth:`switch`) gets them first, then the client's pages renumbered to follow."""

    def __init__(self) -> None:
        self.headers: list[Page] = []
        self._sequence = 0
        self._replay = False

    def switch(self) -> None:
        self._replay = True

    def rewrite(self, data: bytes) -> bytes:
        pages = parse_pages(data)
        out = []
        if self._replay:
            self._replay = False
            self._sequence = 0
            pages = [*self.headers, *(p for p in pages if not p.is_opus_header)]
        for page in pages:
            keep = page.is_opus_header and len(self.headers) < len(OPUS_HEADERS)
            if keep and page not in self.headers:
                self.headers.append(Page(**vars(page)))
            page.sequence = self._sequence
            self._sequence += 1
            out.append(page.encode())
        return b"".join(out)

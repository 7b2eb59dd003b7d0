"""How much audio an Ogg/Opus message holds, read from its page and packet headers without
decoding it (RFC 3533 pages, RFC 7845 Ogg/Opus, RFC 6716 section 3.1 TOC bytes).

A few dozen bytes of Opus can stand for seconds of audio, so bytes alone cannot bound the
work a message makes for a codec worker; its duration can, and it costs a walk over headers.
"""

from __future__ import annotations

OGG_CAPTURE = b"OggS"
PAGE_HEADER_BYTES = 27
CONTINUED_PACKET = 0x01  # header_type flag: the page starts inside a packet
OPUS_HEADERS = (b"OpusHead", b"OpusTags")
# Frame duration in seconds by TOC configuration (RFC 6716, table 2): SILK 10/20/40/60 ms,
# Hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
_FRAME_SECONDS = (0.01, 0.02, 0.04, 0.06) * 3 + (0.01, 0.02) * 2 + (0.0025, 0.005, 0.01, 0.02) * 4


def packet_seconds(packet: bytes) -> float:
    """Audio in one Opus packet (0 for the stream's header packets and empty packets)."""
    if not packet or packet.startswith(OPUS_HEADERS):
        return 0.0
    toc = packet[0]
    frame = _FRAME_SECONDS[toc >> 3]
    code = toc & 0x03
    if code == 0:
        return frame
    if code in (1, 2):
        return 2 * frame
    # Code 3: the frame count is in the next byte's low six bits.
    return (packet[1] & 0x3F) * frame if len(packet) > 1 else 0.0


def ogg_opus_seconds(data: bytes) -> float | None:
    """Seconds of audio in ``data`` if it is whole Ogg pages, else None (a page split over
    messages; the caller then falls back to a bound from the size)."""
    seconds = 0.0
    offset = 0
    while offset < len(data):
        header_end = offset + PAGE_HEADER_BYTES
        if data[offset : offset + 4] != OGG_CAPTURE or header_end > len(data):
            return None
        segments = data[offset + 26]
        lacing = data[header_end : header_end + segments]
        start = header_end + segments
        end = start + sum(lacing)
        if len(lacing) < segments or end > len(data):
            return None
        # A page that starts inside a packet: that packet was counted where it began.
        skip = bool(data[offset + 5] & CONTINUED_PACKET)
        size = 0
        for value in lacing:
            size += value
            if value < 255:
                if not skip:
                    seconds += packet_seconds(data[start : start + size])
                skip = False
                start += size
                size = 0
        if size and not skip:
            seconds += packet_seconds(data[start : start + size])  # continues on the next page
        offset = end
    return seconds

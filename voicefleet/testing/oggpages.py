"""Ogg pages written by hand (RFC 3533), for Opus streams no encoder would produce: pages
packed with as many packets as the reader takes, packets split over pages."""

from __future__ import annotations

import struct

import numpy as np
import sphn

SAMPLE_RATE = 24_000
GRANULE_RATE = 48_000  # Ogg/Opus granule positions count 48 kHz samples, whatever the rate


def _crc_table() -> list[int]:
    table = []
    for index in range(256):
        value = index << 24
        for _ in range(8):
            value = (value << 1) ^ 0x04C11DB7 if value & 0x80000000 else value << 1
        table.append(value & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def ogg_crc(data: bytes) -> int:
    value = 0
    for byte in data:
        value = ((value << 8) & 0xFFFFFFFF) ^ _CRC[((value >> 24) & 0xFF) ^ byte]
    return value


def page(
    serial: int, sequence: int, granule: int, segments: list[bytes], *, continued: bool = False
) -> bytes:
    """One page holding ``segments`` as packets; the last may be cut (lacing of 255s)."""
    lacing = b""
    for segment in segments:
        lacing += b"\xff" * (len(segment) // 255) + bytes([len(segment) % 255])
    flags = 0x01 if continued else 0x00
    head = b"OggS" + bytes([0, flags]) + struct.pack("<qII", granule, serial, sequence)
    head += b"\0\0\0\0" + bytes([len(lacing)]) + lacing
    body = b"".join(segments)
    crc = ogg_crc(head + body)
    return head[:22] + struct.pack("<I", crc) + head[26:] + body


def split_pages(data: bytes) -> list[bytes]:
    pages = []
    offset = 0
    while offset < len(data):
        segments = data[offset + 26]
        size = 27 + segments + sum(data[offset + 27 : offset + 27 + segments])
        pages.append(data[offset : offset + size])
        offset += size
    return pages


def packets(one_page: bytes) -> list[bytes]:
    segments = one_page[26]
    lacing = one_page[27 : 27 + segments]
    body = one_page[27 + segments :]
    found, start, size = [], 0, 0
    for value in lacing:
        size += value
        if value < 255:
            found.append(body[start : start + size])
            start += size
            size = 0
    return found


class SilentStream:
    """A real Ogg/Opus stream of silence from sphn, and the state to append pages to it."""

    def __init__(self, frames: int = 25) -> None:
        writer = sphn.OpusStreamWriter(SAMPLE_RATE)
        self.start = b"".join(
            writer.append_pcm(np.zeros(1920, dtype=np.float32)) for _ in range(frames)
        )
        pages = split_pages(self.start)
        audio = [p for pg in pages for p in packets(pg) if not p.startswith(b"Opus")]
        self.packet = audio[-1]  # one ordinary packet of silence
        self.serial, self.sequence = struct.unpack("<II", pages[-1][14:22])
        (self.granule,) = struct.unpack("<q", pages[-1][6:14])

    def pages_of(self, packets_per_page: int, count: int, seconds_per_packet: float) -> bytes:
        """``count`` more pages, each with ``packets_per_page`` copies of the packet."""
        out = b""
        for _ in range(count):
            self.sequence += 1
            self.granule += round(packets_per_page * seconds_per_packet * GRANULE_RATE)
            out += page(self.serial, self.sequence, self.granule, [self.packet] * packets_per_page)
        return out

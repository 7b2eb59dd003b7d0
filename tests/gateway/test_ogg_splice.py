"""Ogg/Opus streams spliced across pods, checked with real streams from sphn (the library
the runtime and ``moshi.client`` use) and its decoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import sphn

from voicefleet.gateway.ogg_splice import (
    FLAG_FIRST,
    NO_GRANULE,
    OggError,
    TowardClient,
    TowardPod,
    ogg_crc,
    parse_pages,
)

RATE = 24_000
FRAME = 1920


def _messages(frames: int, hz: float, start: int = 0) -> list[bytes]:
    """One Ogg/Opus message per 80 ms frame, as a pod or a client sends them."""
    writer = sphn.OpusStreamWriter(RATE)
    out = []
    for index in range(start, start + frames):
        t = (np.arange(FRAME) + index * FRAME) / RATE
        out.append(writer.append_pcm((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)))
    return [m for m in out if m]


def _decoded(data: bytes) -> np.ndarray[Any, Any]:
    reader = sphn.OpusStreamReader(RATE)
    return np.asarray(reader.append_bytes(data))


def check_one_stream(data: bytes) -> None:
    """One Ogg stream: one serial, one beginning, one pair of Opus headers, pages in order
    with granules that never go back, every CRC right."""
    pages = parse_pages(data)
    assert [p.sequence for p in pages] == list(range(len(pages)))
    assert len({p.serial for p in pages}) == 1
    assert [bool(p.flags & FLAG_FIRST) for p in pages].count(True) == 1
    assert sum(p.is_opus_header for p in pages) == 2
    granules = [p.granule for p in pages if p.granule != NO_GRANULE]
    assert granules == sorted(granules)
    for page in pages:
        raw = page.encode()
        assert ogg_crc(raw[:22] + b"\0\0\0\0" + raw[26:]) == int.from_bytes(raw[22:26], "little")


def test_a_client_hears_one_stream_across_two_pods() -> None:
    first, second = _messages(20, 220.0), _messages(20, 330.0)
    toward = TowardClient()
    heard = b"".join(toward.rewrite(m) for m in first)
    assert heard == b"".join(first)  # the first pod's stream goes through unchanged
    toward.switch()
    heard += b"".join(toward.rewrite(m) for m in second)
    check_one_stream(heard)
    last_of_first = parse_pages(b"".join(first))[-1].granule
    second_pages = [p for p in parse_pages(heard) if p.granule > last_of_first]
    assert second_pages, "the second pod's granules continue after the first's"
    # Every packet of both pods reaches the decoder: as much audio as the two apart.
    alone = len(_decoded(b"".join(first))) + len(_decoded(b"".join(second)))
    assert len(_decoded(heard)) == alone


def test_a_new_pod_hears_the_clients_stream_from_its_headers() -> None:
    said = _messages(30, 200.0)
    toward = TowardPod()
    old = b"".join(toward.rewrite(m) for m in said[:10])
    assert old == b"".join(said[:10])
    toward.switch()
    new = b"".join(toward.rewrite(m) for m in said[10:])
    check_one_stream(new)
    # The new pod decodes every packet it was sent after the switch.
    expected = len(_decoded(b"".join(said))) - len(_decoded(b"".join(said[:10])))
    assert len(_decoded(new)) == expected


def test_bytes_that_are_not_whole_pages_are_refused() -> None:
    message = _messages(3, 220.0)[0]
    with pytest.raises(OggError, match="cut short"):
        parse_pages(message[:-1])
    with pytest.raises(OggError, match="no Ogg page"):
        parse_pages(b"x" * 40)
    with pytest.raises(OggError, match="not a whole"):
        parse_pages(message + b"OggS")

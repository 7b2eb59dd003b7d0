"""The runtime's pure parts: query-string clamping, resampling lengths, drain deadlines, the
contract models' wire form, the token bucket, the lag probe, reading Opus durations and
regrouping caller audio into backend frames."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import sphn
from hypothesis import given
from hypothesis import strategies as st

from voicefleet.api.runtime import DrainNotice, DrainRequest
from voicefleet.runtime.backends.base import FrameFormat
from voicefleet.runtime.budget import TokenBucket
from voicefleet.runtime.drain import API, SIGNAL, DrainState
from voicefleet.runtime.framing import FrameAssembler
from voicefleet.runtime.lag import LagProbe
from voicefleet.runtime.oggopus import ogg_opus_seconds, packet_seconds
from voicefleet.runtime.protocol import parse_sampling
from voicefleet.runtime.resample import StreamResampler
from voicefleet.testing.oggpages import SilentStream, page, split_pages

pytestmark = pytest.mark.runtime


def test_sampling_is_clamped_and_garbage_ignored() -> None:
    sampling = parse_sampling(
        {"text_temperature": "9", "audio_temperature": "nan", "text_topk": "-4", "audio_topk": "x"}
    )
    assert sampling.text_temperature == 1.5
    assert sampling.audio_temperature is None
    assert sampling.text_topk == 1
    assert sampling.audio_topk is None


@given(st.dictionaries(st.sampled_from(["text_temperature", "text_topk"]), st.text(max_size=8)))
def test_sampling_never_leaves_its_range(query: dict[str, str]) -> None:
    sampling = parse_sampling(query)
    if sampling.text_temperature is not None:
        assert 0.1 <= sampling.text_temperature <= 1.5
    if sampling.text_topk is not None:
        assert 1 <= sampling.text_topk <= 500


@pytest.mark.parametrize(
    ("src", "dst"),
    [(16_000, 24_000), (8_000, 24_000), (24_000, 16_000), (24_000, 8_000), (24_000, 24_000)],
)
def test_resampler_maps_80ms_to_80ms(src: int, dst: int) -> None:
    resampler = StreamResampler(src, dst)
    chunk = np.sin(np.arange(src * 8 // 100, dtype=np.float32) / 7).astype(np.float32)
    for _ in range(3):
        out = resampler.process(chunk)
        assert out.shape == (dst * 8 // 100,)
        assert out.dtype == np.float32
        assert np.abs(out).max() <= 1.0


def _exits_when_empty(state: DrainState) -> bool:
    # A call, so mypy does not carry the narrowing of one assert past state.start().
    return state.exit_when_empty


def test_drain_deadline_only_tightens() -> None:
    state = DrainState()
    assert state.start(60, "scale-in", API)
    assert not _exits_when_empty(state)
    assert not state.start(120, "later", API), "a later, longer deadline changes nothing"
    assert state.remaining() > 55
    assert state.start(5, "spot", API)
    assert state.remaining() <= 5
    assert state.start(30, "sigterm", SIGNAL)
    assert _exits_when_empty(state)
    assert state.remaining() <= 5
    assert state.deadline <= time.monotonic() + 5


def test_contract_wire_form() -> None:
    request = DrainRequest.model_validate({"deadlineSeconds": 100, "reason": "spot"})
    assert request.deadline_seconds == 100
    notice = DrainNotice(deadline_seconds=3, reconnect=None)
    assert notice.wire() == {"type": "drain", "deadlineSeconds": 3, "reconnect": None, "reason": ""}
    with pytest.raises(ValueError):
        DrainRequest.model_validate({"deadlineSeconds": -1})


def test_token_bucket_refills_at_its_rate_and_tallies_what_it_refuses() -> None:
    bucket = TokenBucket(2.0, rate=1.0, now=0.0)
    assert bucket.take(1.5, now=0.0)
    assert not bucket.take(1.0, now=0.0), "0.5 left"
    assert bucket.take(1.0, now=0.5), "refilled by 0.5"
    assert bucket.take(2.0, now=100.0), "refills no further than its capacity"
    assert not bucket.take(2.5, now=100.0)
    assert bucket.refused == 3.5


@given(st.lists(st.tuples(st.floats(0, 0.2), st.floats(0, 0.5)), max_size=200))
def test_token_bucket_never_gives_more_than_its_rate_plus_capacity(
    steps: list[tuple[float, float]],
) -> None:
    bucket = TokenBucket(2.0, rate=1.0, now=0.0)
    now = taken = 0.0
    for wait, amount in steps:
        now += wait
        if bucket.take(amount, now):
            taken += amount
    assert taken <= 2.0 + now + 1e-9


def test_lag_probe_measures_the_round_trip_of_its_own_pings() -> None:
    probe = LagProbe(interval=1.0)
    assert probe.due(10.0) is None, "not started"
    probe.start(10.0)
    assert probe.due(10.5) is None
    payload = probe.due(11.0)
    assert payload is not None
    assert probe.due(11.5) is None, "one ping in flight at a time"
    assert probe.behind(11.5) == 0.5
    assert probe.answered(b"someone else's", 11.6) is None
    assert probe.answered(payload, 11.7) == pytest.approx(0.7)
    assert probe.behind(11.8) == 0.0
    assert probe.due(12.0) is None
    assert probe.due(12.7) is not None


def test_opus_duration_is_read_from_headers_as_the_decoder_finds_it() -> None:
    stream = SilentStream(frames=25)
    reader = sphn.OpusStreamReader(24_000)
    for message in split_pages(stream.start):
        decoded = reader.append_bytes(message).size / 24_000
        announced = ogg_opus_seconds(message)
        assert announced is not None
        # The first audio page also carries the decoder's pre-skip; otherwise they agree.
        assert decoded <= announced + 1e-9
        assert announced - decoded < 0.01
    assert ogg_opus_seconds(stream.start) == pytest.approx(2.0, abs=0.05)
    assert ogg_opus_seconds(stream.start[:-3]) is None, "a cut page"
    assert ogg_opus_seconds(b"not ogg at all") is None


def test_opus_duration_counts_a_packet_split_over_pages_once() -> None:
    stream = SilentStream()
    packet = stream.packet
    seconds = packet_seconds(packet)
    assert seconds > 0
    # A 255-byte head ends the first page mid-packet; the second page continues it.
    padded = packet + bytes(600)
    first = page(stream.serial, 1, 0, [padded[:255]])
    second = page(stream.serial, 2, 0, [padded[255:], packet], continued=True)
    assert ogg_opus_seconds(first + second) == pytest.approx(2 * seconds)
    assert packet_seconds(b"OpusHead....") == 0.0


@given(st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=12))
def test_first_audio_goes_to_the_engine_as_it_arrives(sizes: list[int]) -> None:
    """Moshi's 80 ms pages into Hertz-dev's 125 ms frames: the first audio is padded at the
    front to whole frames and goes at once; then every whole frame as it completes, in order,
    with nothing lost (a frame's worth of a known ramp, resampling left out: 16 kHz in)."""
    hertz = FrameFormat(16_000, 2000)
    frames = FrameAssembler(16_000, hertz)
    ramp = np.arange(sum(sizes), dtype=np.float32) + 1.0
    out: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    sent = 0
    for size in sizes:
        done = frames.push(ramp[sent : sent + size])
        if sent == 0 and size:
            assert done, "the first audio waited for a whole frame"
        sent += size
        out += done
    heard = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
    assert heard.size % hertz.samples == 0
    spoken = heard[heard != 0]  # the front padding is silence; the ramp never is
    assert np.array_equal(spoken, ramp[: spoken.size]), "audio lost or reordered"
    assert ramp.size - spoken.size < hertz.samples, "more than part of a frame held back"

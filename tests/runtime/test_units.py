"""The runtime's pure parts: query-string clamping, resampling lengths, drain deadlines and
the contract models' wire form."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicefleet.api.runtime import DrainNotice, DrainRequest
from voicefleet.runtime.drain import API, SIGNAL, DrainState
from voicefleet.runtime.protocol import parse_sampling
from voicefleet.runtime.resample import StreamResampler

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

"""Per-slot isolation behind the backend contract, for both bundled architectures (Moshi's
``tiny`` and ``hertz-tiny``): a conversation joining, restarting or sitting frozen in one slot
never changes what another slot hears, and a frozen slot's conversation does not advance.

Two runs of the same backend with the same weights, the same input and the same random
seed: in the second, slot 1 is reset mid-way (a new caller) and slot 2 is frozen for a few
frames. Slot 0 must produce the same audio, and hold the same streaming state (every cache
and codec row of its own), frame for frame, in both runs. Batch shapes never change, so every
random draw is the same in both runs and any difference in slot 0 can only come from state
leaking across slots. (Tiny Moshi's random weights speak the same noise whatever its state,
so its audio alone would prove nothing: the state comparison is what can fail there.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from voicefleet.runtime.backends import get_loader
from voicefleet.runtime.backends.base import Backend, Pcm, Sampling
from voicefleet.runtime.backends.hertz.backend import HertzBackend
from voicefleet.runtime.backends.hertz.slots import state_tensors
from voicefleet.runtime.backends.moshi_step import MoshiBackend
from voicefleet.runtime.config import RuntimeConfig

pytestmark = pytest.mark.runtime

SLOTS = 3
TICKS = 10
RESET_AT = 3  # slot 1 gets a new conversation before this tick
FROZEN = range(4, 7)  # ticks slot 2 sits out
SEED = 5


def _backend(name: str) -> Backend:
    config = RuntimeConfig(backend=name, max_sessions=SLOTS, max_session_seconds=10)
    backend = get_loader(name)(config, torch.device("cpu"))
    with torch.no_grad():
        backend.start(SLOTS)
    return backend


def _tensors(value: Any, depth: int = 0) -> list[Tensor]:
    """Every tensor inside one of moshi's streaming states (dataclasses, caches, lists)."""
    if isinstance(value, Tensor):
        return [value]
    if depth > 4 or value is None or isinstance(value, str | int | float | bool):
        return []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [getattr(value, f.name) for f in dataclasses.fields(value)]
    elif isinstance(value, list | tuple):
        items = list(value)
    elif hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):
        items = list(vars(value).values())
    else:
        return []
    return [t for item in items for t in _tensors(item, depth + 1)]


def _slot_state(backend: Backend, slot: int) -> list[Tensor]:
    """Copies of every per-slot row of the backend's streaming state that belongs to ``slot``."""
    if isinstance(backend, HertzBackend):
        assert backend.slots is not None
        tensors = state_tensors(backend.slots)
    else:
        assert isinstance(backend, MoshiBackend)
        modules = [*backend.mimi.modules(), *backend._lm_gen.modules()]
        tensors = [t for m in modules for t in _tensors(getattr(m, "_streaming_state", None))]
    rows = []
    for tensor in tensors:
        if tensor.dim() and tensor.shape[0] == SLOTS:
            rows.append(tensor[slot].clone())
        elif tensor.dim() and tensor.shape[0] == 2 * SLOTS:  # Hertz's two encoders, stacked
            rows += [tensor[slot].clone(), tensor[SLOTS + slot].clone()]
    assert len(rows) > 3, "the backend's per-slot state was not found"
    return rows


def _run(name: str, disturb: bool) -> tuple[list[Pcm], list[list[Tensor]]]:
    backend = _backend(name)
    rng = np.random.default_rng(SEED)
    frames = [
        (0.1 * rng.standard_normal((SLOTS, backend.frame.samples))).astype(np.float32)
        for _ in range(TICKS)
    ]
    torch.manual_seed(SEED)
    out: list[Pcm] = []
    states: list[list[Tensor]] = []
    with torch.no_grad():
        backend.reset(list(range(SLOTS)), [Sampling()] * SLOTS)
        backend.freeze(np.ones(SLOTS, dtype=bool))
        for tick, frame in enumerate(frames):
            if disturb and tick == RESET_AT:
                backend.reset([1], [Sampling(audio_temperature=0.3)])
            if disturb and tick in (FROZEN[0], FROZEN[-1] + 1):
                backend.freeze(np.array([True, True, tick != FROZEN[0]]))
            step = backend.step(frame)
            pcm = np.where(step.audible[:, None], step.pcm, np.nan)
            out.append(pcm.copy())
            states.append(_slot_state(backend, 0))
    return out, states


@pytest.mark.parametrize("name", ["tiny", "hertz-tiny"])
def test_resetting_or_freezing_a_slot_never_changes_another(name: str) -> None:
    calm, calm_state = _run(name, disturb=False)
    disturbed, disturbed_state = _run(name, disturb=True)
    heard = [tick for tick in range(TICKS) if not np.isnan(calm[tick][0]).any()]
    assert len(heard) >= TICKS - 4, "slot 0 must be audible for most of the run"
    for tick in range(TICKS):
        np.testing.assert_array_equal(
            disturbed[tick][0], calm[tick][0], err_msg=f"{name}: slot 0 changed at tick {tick}"
        )
        for index, (seen, expected) in enumerate(
            zip(disturbed_state[tick], calm_state[tick], strict=True)
        ):
            assert torch.equal(seen, expected), f"{name}: slot 0's state {index}, tick {tick}"
    # Slot 0's state moved during the run (the comparison above compared something).
    assert any(not torch.equal(a, b) for a, b in zip(calm_state[0], calm_state[-1], strict=True))


def test_a_hertz_join_copies_the_prompt_state_and_runs_no_prefill() -> None:
    """The prompt is run through the model once, at start; a joining slot gets a copy of that
    state (its cache rows, position and first latent), and the transformers' full-sequence
    forward is never called again, so a join never costs the other slots a prefill."""
    backend = _backend("hertz-tiny")
    assert isinstance(backend, HertzBackend)
    assert backend.slots is not None and backend.prompt is not None
    calls = {"full": 0}
    for module in (backend.model.backbone, backend.model.resynthesizer):
        forward = module.full

        def counted(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
            calls["full"] += 1
            return _forward(*args, **kwargs)

        module.full = counted  # type: ignore[method-assign]
    prompt, slots = backend.prompt, backend.slots
    done = prompt.frames - 1
    with torch.no_grad():
        backend.freeze(np.ones(SLOTS, dtype=bool))
        for _ in range(3):
            backend.step(np.zeros((SLOTS, backend.frame.samples), dtype=np.float32))
        backend.reset([1], [Sampling()])
    assert calls["full"] == 0
    assert int(slots.position[1]) == done and int(slots.position[0]) == done + 3
    assert torch.equal(slots.latents[1], prompt.latent)
    for cache, (k, v) in zip(slots.backbone, prompt.backbone, strict=True):
        assert torch.equal(cache.k[1, :, :done], k) and torch.equal(cache.v[1, :, :done], v)

"""Moving a Hertz-dev conversation between slots (of this process or another pod's).

The state holds the conversation's latent history: for every frame since the prompt, the
two-channel latent the transformers were fed and the token sampled there (``Slots`` records
both inside its step), plus the slot's small rows: its next input latent, temperatures, the
decoder's "fresh" flag and the rows of both codec encoders and the decoder. The backbone's
and resynthesizer's KV caches (704 KiB a frame at full size) are not sent: the receiving slot
starts from the pod's own prompt state (the prompt is part of the model identity) and replays
the history through both transformers, a chunk of frames at a time at batch 1, into its own
cache rows (``Attention.chunk``), as the prompt's prefill does.

bfloat16 tensors travel as their int16 bit patterns (numpy has no bfloat16).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from voicefleet.runtime.backends.fingerprint import weights_fingerprint
from voicefleet.runtime.backends.hertz.models import HertzModel
from voicefleet.runtime.backends.hertz.prompt import PromptState
from voicefleet.runtime.backends.hertz.slots import Slots
from voicefleet.runtime.backends.hertz.transformer import KV
from voicefleet.runtime.backends.slot_state import (
    Array,
    Scalar,
    SlotState,
    SlotStateError,
    require_arrays,
    require_same_model,
)

KIND = "hertz"
LATENTS = "history/latents"
TOKENS = "history/tokens"


def model_identity(
    model: HertzModel, prompt: np.ndarray[Any, Any], variant: str
) -> dict[str, Scalar]:
    architecture = json.dumps(dataclasses.asdict(model.config), sort_keys=True, default=str)
    return {
        "architecture": architecture,
        "variant": variant,
        "weights": weights_fingerprint(model),
        "prompt": hashlib.sha256(np.ascontiguousarray(prompt).tobytes()).hexdigest()[:32],
    }


def _host(tensor: Tensor) -> Array:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    return tensor.numpy().copy()


def _device(array: Array, like: Tensor) -> Tensor:
    value = torch.from_numpy(array.copy()).to(like.device)
    return value.view(like.dtype) if like.dtype == torch.bfloat16 else value.to(like.dtype)


def _batch_tensors(slots: Slots) -> dict[str, tuple[Tensor, int]]:
    """The slots' small per-slot tensors by name, with the rows one slot has in each (an
    encoder holds a user row and a model row per slot: ``slot`` and ``slot + capacity``)."""
    tensors = {
        "latent": (slots.latents, 1),
        "temperatures": (slots.temperatures, 1),
        "fresh": (slots.fresh, 1),
    }
    for index, tensor in enumerate(slots.encoders.tensors):
        tensors[f"encoder/{index}"] = (tensor, 2)
    for index, tensor in enumerate(slots.decoder.tensors):
        tensors[f"decoder/{index}"] = (tensor, 1)
    return tensors


def _rows(slots: Slots, slot: int) -> dict[str, Tensor]:
    """The slot's rows of :func:`_batch_tensors` (copies for the encoders' row pairs)."""
    pair = [slot, slot + slots.capacity]
    return {
        name: tensor[pair] if count == 2 else tensor[slot : slot + 1]
        for name, (tensor, count) in _batch_tensors(slots).items()
    }


def _numpy_dtype(dtype: torch.dtype) -> np.dtype[Any]:
    """How a tensor of ``dtype`` travels (bfloat16 as int16 bits); no device work, so the
    check of a state may run on the event loop."""
    host = torch.int16 if dtype == torch.bfloat16 else dtype
    sample: Array = torch.empty(0, dtype=host).numpy()
    return sample.dtype


def export_state(
    slots: Slots, prompt: PromptState, slot: int, model: dict[str, Scalar]
) -> SlotState:
    start = prompt.frames - 1
    position = int(slots.position[slot])
    arrays = {name: _host(row) for name, row in _rows(slots, slot).items()}
    arrays[LATENTS] = _host(slots.fed_latents[slot, start:position])
    arrays[TOKENS] = _host(slots.fed_tokens[slot, start:position]).astype(np.int32)
    meta: dict[str, Scalar] = {"steps": position - start, "position": position}
    return SlotState(kind=KIND, model=model, meta=meta, arrays=arrays)


def check_state(
    slots: Slots, prompt: PromptState, state: SlotState, model: dict[str, Scalar]
) -> int:
    require_same_model(model, state, KIND)
    steps = state.meta.get("steps")
    start = prompt.frames - 1
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise SlotStateError(f"slot state has no valid step count (steps={steps!r})")
    if start + steps > slots.rows - 2:
        raise SlotStateError(
            f"the conversation is {steps} frames long, more than this pod's context of "
            f"{slots.rows - 2 - start} frames: move it to a pool with a longer "
            "--max-session-seconds"
        )
    if state.meta.get("position") != start + steps:
        raise SlotStateError(
            f"slot state inconsistent: position {state.meta.get('position')!r} for {steps} "
            f"frames after a {prompt.frames}-frame prompt"
        )
    expected = {
        name: ((count, *tensor.shape[1:]), _numpy_dtype(tensor.dtype))
        for name, (tensor, count) in _batch_tensors(slots).items()
    }
    latents = slots.fed_latents
    expected[LATENTS] = ((steps, latents.shape[2]), _numpy_dtype(latents.dtype))
    expected[TOKENS] = ((steps,), np.dtype(np.int32))
    require_arrays(expected, state)
    tokens = state.arrays[TOKENS]
    vocab = slots.model.config.vocab
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab):
        raise SlotStateError("slot state history holds tokens outside this model's vocabulary")
    return steps


def load_state(slots: Slots, prompt: PromptState, slot: int, state: SlotState) -> None:
    """Write a checked state into ``slot`` (already reset to the prompt, and frozen)."""
    pair = torch.tensor([slot, slot + slots.capacity], device=slots.position.device)
    for name, row in _rows(slots, slot).items():
        value = _device(state.arrays[name], row)
        if name.startswith("encoder/"):
            slots.encoders.tensors[int(name.split("/")[1])][pair] = value
        else:
            row.copy_(value)
    start = prompt.frames - 1
    steps = int(state.meta["steps"])
    slots.fed_latents[slot, start : start + steps] = _device(
        state.arrays[LATENTS], slots.fed_latents
    )
    slots.fed_tokens[slot, start : start + steps] = torch.from_numpy(
        state.arrays[TOKENS].astype(np.int64)
    ).to(slots.fed_tokens.device)
    slots.position[slot] = start + steps


@dataclass
class Replay:
    """A slot's latent history going through the backbone and the resynthesizer, in chunks,
    into the slot's own cache rows."""

    slots: Slots
    slot: int
    start: int  # the first row to replay (the prompt's end)
    end: int
    done: int = 0

    @property
    def left(self) -> int:
        return self.end - self.start - self.done

    def step(self, max_steps: int) -> int:
        count = min(max_steps, self.left)
        if count <= 0:
            return self.left
        slots, one = self.slots, slice(self.slot, self.slot + 1)
        first = self.start + self.done
        latents = slots.fed_latents[one, first : first + count]
        codes = slots.model.quantizer.from_tokens(
            slots.fed_tokens[self.slot, first : first + count]
        )
        backbone = [KV(cache.k[one], cache.v[one]) for cache in slots.backbone]
        resynthesizer = [KV(cache.k[one], cache.v[one]) for cache in slots.resynthesizer]
        with torch.no_grad():
            slots.model.backbone.chunk(latents, first, slots.ropes[0], backbone)
            slots.model.resynthesizer.chunk(
                latents, codes[None].to(latents.dtype), first, slots.ropes[1], resynthesizer
            )
        self.done += count
        return self.left

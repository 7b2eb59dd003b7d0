"""Hertz-dev's voice prompt: read once at load, run through the model once, and kept as the
state every new conversation starts from, so a join costs a copy, never a prefill.

Hertz-dev is a base model: who speaks, and how, comes from the audio it continues. The
reference server starts every session from a two-channel 16 kHz prompt, channel 0 the user's
side and channel 1 the model's (a mono file is used for both), cut to whole frames
(inference_server.py:61-85). Without a prompt a conversation starts from a second of
silence on both sides. The state kept (hertz-facts.md 5.1, 7.6):

- both encoders' streaming state after the whole prompt, and the prompt's last latent frame,
  which a new slot's first step consumes (at position ``frames - 1``);
- the backbone's and the resynthesizer's keys and values for positions ``[0, frames - 1)``,
  the resynthesizer teacher-forced with the quantised next latent, as the reference's
  prefill does; the last position is computed by the slot's first step, with its own
  sampled token;
- no decoder state: the reference's decoder starts cold at the first generated latent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sphn
import torch
from huggingface_hub import hf_hub_download
from torch import Tensor

from voicefleet.runtime.backends.base import BackendLoadError, Pcm
from voicefleet.runtime.backends.hertz.codec import Stream, sample
from voicefleet.runtime.backends.hertz.config import FRAME_SAMPLES, SAMPLE_RATE
from voicefleet.runtime.backends.hertz.models import HertzModel
from voicefleet.runtime.backends.hertz.transformer import Rope

# The longest prompt kept: its last 10 s (the reference's own is 8.6 s). Every slot's cache
# holds it, and the planner counts it in each session's memory.
MAX_PROMPT_FRAMES = 80
SILENT_PROMPT_FRAMES = 8


def read_prompt(source: str | None) -> Pcm:
    """(2, samples) float32 at 16 kHz, whole frames, at most MAX_PROMPT_FRAMES of them."""
    if source is None:
        return np.zeros((2, SILENT_PROMPT_FRAMES * FRAME_SAMPLES), dtype=np.float32)
    path = _local(source)
    try:
        audio, _rate = sphn.read(str(path), sample_rate=SAMPLE_RATE)
    except Exception as exc:  # sphn raises plain exceptions for unreadable files
        raise BackendLoadError(f"--prompt {source}: cannot read it as audio ({exc})") from exc
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1 or audio.shape[0] == 1:
        audio = np.repeat(audio.reshape(1, -1), 2, axis=0)
    if audio.shape[0] != 2:
        raise BackendLoadError(
            f"--prompt {source} has {audio.shape[0]} channels; give a mono file or a stereo "
            "one (left: the caller's side, right: the model's)"
        )
    frames = min(MAX_PROMPT_FRAMES, audio.shape[1] // FRAME_SAMPLES)
    if frames == 0:
        raise BackendLoadError(f"--prompt {source} is shorter than one frame (125 ms)")
    return audio[:, audio.shape[1] - frames * FRAME_SAMPLES :].copy()


def _local(source: str) -> Path:
    if source.startswith("hf://"):
        owner, repo, filename = ([*source.removeprefix("hf://").split("/", 2), "", ""])[:3]
        try:
            return Path(hf_hub_download(f"{owner}/{repo}", filename))
        except Exception as exc:
            raise BackendLoadError(
                f"could not fetch --prompt {source} ({type(exc).__name__}: {exc}); without "
                "network access, put the file in a volume and pass its path"
            ) from exc
    path = Path(source.removeprefix("file://"))
    if not path.is_file():
        raise BackendLoadError(f"--prompt {source}: no such file")
    return path


@dataclass
class PromptState:
    frames: int
    latent: Tensor  # (2 * latent,): the input of a new slot's first step
    backbone: list[tuple[Tensor, Tensor]]  # per layer (heads, frames - 1, head_dim)
    resynthesizer: list[tuple[Tensor, Tensor]]  # trunk layers, then the model branch's
    encoder: list[Tensor]  # per stateful layer (2, channels, width): user row, model row


def prefill(
    model: HertzModel, audio: Pcm, ropes: tuple[Rope, Rope], dtype: torch.dtype
) -> PromptState:
    """Run the prompt through the model once (a batch of one conversation)."""
    device = ropes[0].cos.device
    pcm = torch.from_numpy(audio).to(device)
    frames = pcm.shape[1] // FRAME_SAMPLES
    stream, both = Stream(), torch.ones(2, dtype=torch.bool, device=device)
    chunks = []
    for t in range(frames):
        chunk = pcm[:, t * FRAME_SAMPLES : (t + 1) * FRAME_SAMPLES]
        chunks.append(sample(*model.codec.encode(chunk, stream.begin(both))))
    per_channel = torch.cat(chunks, dim=1)  # (2, frames, latent)
    latents = torch.cat((per_channel[0], per_channel[1]), dim=-1)[None].to(dtype)
    backbone: list[tuple[Tensor, Tensor]] = []
    resynthesizer: list[tuple[Tensor, Tensor]] = []
    if frames > 1:
        model.backbone.full(latents[:, :-1], ropes[0], backbone)
        half = model.config.latent
        following = latents[:, 1:]
        codes = (
            model.quantizer.from_latents(following[..., :half]),
            model.quantizer.from_latents(following[..., half:]),
        )
        model.resynthesizer.full(latents[:, :-1], codes, ropes[1], resynthesizer)
        # ``full`` appends the user branch's layers last; slots never run that branch.
        resynthesizer = resynthesizer[: model.config.resynthesizer.layers]
    return PromptState(
        frames=frames,
        latent=latents[0, -1],
        backbone=[(k[0], v[0]) for k, v in backbone],
        resynthesizer=[(k[0], v[0]) for k, v in resynthesizer],
        encoder=list(stream.tensors),
    )

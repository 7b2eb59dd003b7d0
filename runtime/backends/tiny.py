"""The ``tiny`` backend: Moshi's architecture (Mimi codec, temporal transformer, depformer,
17 streams with delays) at toy sizes and random weights, so the whole server runs in real
time on two CPU cores for tests and demos.

Full-size Mimi alone takes about 80 ms per frame on one CPU core, so the codec is shrunk
too: fewer SEANet filters, a 64-dim latent and one transformer layer. The frame size
(1920 samples at 24 kHz) and the codebook layout (8 user + 8 model streams) stay as in Moshi.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from moshi.models import loaders

from voicefleet.runtime.backends import kv_fp8
from voicefleet.runtime.backends.moshi_step import MOSHI_FRAME, MoshiBackend

if TYPE_CHECKING:
    from voicefleet.runtime.config import RuntimeConfig

TINY_CARD = 256
TINY_TEXT_CARD = 64
MIMI_DIM = 64


def tiny_configs(context_steps: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Mimi config, LM kwargs) of the tiny model, derived from moshi's full-size ones."""
    seanet = dict(loaders._seanet_kwargs, dimension=MIMI_DIM, n_filters=4)
    quantizer = dict(
        loaders._quantizer_kwargs,
        dimension=32,
        n_q=8,
        bins=TINY_CARD,
        input_dimension=MIMI_DIM,
        output_dimension=MIMI_DIM,
    )
    transformer = dict(
        loaders._transformer_kwargs,
        d_model=MIMI_DIM,
        num_heads=2,
        num_layers=1,
        dim_feedforward=128,
        input_dimension=MIMI_DIM,
        output_dimensions=[MIMI_DIM],
        context=50,
    )
    mimi_config = dict(
        loaders._mimi_config, seanet=seanet, quantizer=quantizer, transformer=transformer
    )
    lm_kwargs = dict(
        loaders._lm_kwargs,
        dim=64,
        num_heads=4,
        num_layers=2,
        hidden_scale=2,
        text_card=TINY_TEXT_CARD,
        card=TINY_CARD,
        context=context_steps,
        depformer_dim=32,
        depformer_dim_feedforward=64,
        depformer_num_heads=2,
        depformer_num_layers=1,
    )
    return mimi_config, lm_kwargs


def tiny_text_piece(token: int) -> str | None:
    """A made-up word per text token, so the text path (0x02) carries something readable.
    Tokens 0 and 3 are Moshi's padding tokens and show nothing, as with the real model."""
    if token in (0, 3):
        return None
    return f" w{token}"


def load_tiny(config: RuntimeConfig, device: torch.device) -> MoshiBackend:
    # Same weights in every process: tests and demos behave the same run after run.
    torch.manual_seed(config.seed)
    context_steps = MOSHI_FRAME.context_steps(config.max_session_seconds)
    mimi_config, lm_kwargs = tiny_configs(context_steps)
    mimi = loaders.get_mimi(None, mimi_config, device=device, num_codebooks=8)
    lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs, device=device, dtype=torch.float32)
    kv_fp8.use_kv_cache_dtype(lm, config.kv_cache_dtype)
    return MoshiBackend(
        mimi,
        lm,
        text_piece=tiny_text_piece,
        name="random",
        variant="fp32",
        device=device,
        context_steps=context_steps,
        top_k=50,
        greedy=config.greedy,
    )

"""Hertz-dev's dimensions: the published full size and a tiny one for CPU tests.

Full size from the reference repository (Standard-Intelligence/hertz-dev @076c275;
hertz-facts.md sections 1-4): codec ``make_tokenizer`` (tokenizer.py:542-566), backbone
``get_hertz_dev_config`` (model.py:426-443), resynthesizer (model.py:403-424), FSQ quantizer
(model.py:383-401).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from voicefleet import constants


@dataclass(frozen=True)
class CodecConfig:
    """The causal VAE codec: 16 kHz mono in, 32-dim latents at 8 Hz, and back."""

    channels: int = 16  # encode_channels
    decode_multiplier: int = 4
    ratios: tuple[int, ...] = (4, 8, 16, 16, 16, 16)
    strides: tuple[int, ...] = (2, 2, 4, 5, 5, 5)  # product: one frame of samples
    kernel: int = 7
    dilations: tuple[int, ...] = (1, 3, 9)
    latent: int = 32
    # Input is divided by it before encoding, output multiplied after decoding.
    scale: float = 0.05

    @property
    def encoder_channels(self) -> list[int]:
        """Channels before stage 1 and after each stage (16, 64, 128, 256, 256, 256, 256)."""
        return [self.channels * r for r in (1, *self.ratios)]

    @property
    def decoder_channels(self) -> list[int]:
        """Channels after the input projection and after each stage (1024 ... 64)."""
        base = self.channels * self.decode_multiplier
        return [base * r for r in reversed((1, *self.ratios))]

    @property
    def hop(self) -> int:
        return math.prod(self.strides)


@dataclass(frozen=True)
class TransformerConfig:
    dim: int
    layers: int
    heads: int
    eps: float = 1e-5
    theta: float = 10_000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def ff_dim(self) -> int:
        """The reference's default (transformer.py:157): 11008 at 4096."""
        return 256 * math.ceil(int(8 * self.dim / 3) / 256)


@dataclass(frozen=True)
class QuantizerConfig:
    """Finite scalar quantisation of a 32-dim latent through a 2048-wide projection."""

    levels: tuple[int, ...] = (8, 8, 8, 8, 8)
    dim: int = 2048
    hidden: int = 8192

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)


@dataclass(frozen=True)
class HertzConfig:
    codec: CodecConfig = field(default_factory=CodecConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    backbone: TransformerConfig = field(default_factory=lambda: TransformerConfig(4096, 32, 32))
    resynthesizer: TransformerConfig = field(default_factory=lambda: TransformerConfig(4096, 8, 16))
    mixtures: int = 8
    # Positions the backbone was trained for (its RoPE table, transformer.py:37-40): the
    # prompt and the whole conversation must fit.
    max_positions: int = 2048

    @property
    def latent(self) -> int:
        return self.codec.latent

    @property
    def vocab(self) -> int:
        return self.quantizer.codebook_size

    @property
    def split(self) -> int:
        """Resynthesizer layers before the two branches (``layers // 2``, model.py:84)."""
        return self.resynthesizer.layers // 2


FULL = HertzConfig()
TINY = HertzConfig(
    codec=CodecConfig(channels=1, decode_multiplier=2, latent=8),
    quantizer=QuantizerConfig(levels=(4, 4, 4), dim=32, hidden=64),
    backbone=TransformerConfig(64, 2, 4),
    resynthesizer=TransformerConfig(64, 4, 2),
    mixtures=2,
)
SAMPLE_RATE = constants.HERTZ_SAMPLE_RATE
FRAME_SAMPLES = constants.HERTZ_FRAME_SAMPLES
# The reference server's temperatures (inference_server.py:52): token, mixture choice,
# Gaussian spread.
DEFAULT_TEMPERATURES = (0.8, 0.4, 0.1)

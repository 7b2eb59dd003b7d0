"""Hertz-dev's backbone, resynthesizer and FSQ quantizer (hertz-facts.md sections 3-4).

Parameter names match the published checkpoints (``inference_scion_54000``,
``inference_care_50000``, ``inference_volcano_3``), so converted weights load with
``load_state_dict`` as they are.

Each model has ``full`` (a whole sequence from position 0: the prompt's prefill, and the
reference the streaming tests compare with) and ``step`` (one frame per slot, each slot at its
own position). In the server path only the model channel is computed: the user-channel head
of the backbone and the user branch of the resynthesizer influence nothing that is returned
(hertz-facts.md 7.9), and skipping them saves a third of the resynthesizer's cache. ``full``
computes both branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from voicefleet.runtime.backends.hertz.codec import Codec
from voicefleet.runtime.backends.hertz.config import HertzConfig, QuantizerConfig
from voicefleet.runtime.backends.hertz.transformer import (
    KV,
    Block,
    FeedForward,
    Norm,
    Rope,
    StepAt,
    run_chunk,
    run_full,
    run_step,
)


class _Head(nn.Module):
    def __init__(self, dim: int, vocab: int, eps: float) -> None:
        super().__init__()
        self.norm = Norm(dim, eps)
        self.output = nn.Linear(dim, vocab, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.output(self.norm(x)))


class Backbone(nn.Module):
    """Two-channel latents in, one token distribution per channel out."""

    def __init__(self, config: HertzConfig) -> None:
        super().__init__()
        c = config.backbone
        self.latent = config.latent
        self.input = nn.Linear(config.latent, c.dim)
        self.input2 = nn.Linear(config.latent, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.output = _Head(c.dim, config.vocab, c.eps)
        self.output2 = _Head(c.dim, config.vocab, c.eps)

    def _embed(self, latents: Tensor) -> Tensor:
        user, model = latents[..., : self.latent], latents[..., self.latent :]
        return cast(Tensor, self.input(user) + self.input2(model))

    def full(
        self, latents: Tensor, rope: Rope, kv: list[tuple[Tensor, Tensor]] | None = None
    ) -> tuple[Tensor, Tensor]:
        """(user logits, model logits), each (batch, frames, vocab)."""
        x = run_full(list(self.layers), self._embed(latents), rope, kv)  # type: ignore[arg-type]
        return cast(Tensor, self.output(x)), cast(Tensor, self.output2(x))

    def chunk(self, latents: Tensor, start: int, rope: Rope, caches: list[KV]) -> None:
        """Frames from ``start`` of one slot (1, T, 2 * latent) into its cache rows."""
        run_chunk(list(self.layers), self._embed(latents), start, rope, caches)  # type: ignore[arg-type]

    def step(self, latents: Tensor, at: StepAt, caches: list[KV]) -> Tensor:
        """The model channel's logits (slots, vocab) for the next frame."""
        x = run_step(list(self.layers), self._embed(latents), at, caches)  # type: ignore[arg-type]
        return cast(Tensor, self.output2(x))


class _Compressor(nn.Module):
    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__()
        self.project_in = nn.Linear(config.dim, len(config.levels))
        self.project_out = nn.Linear(len(config.levels), config.dim)


class Quantizer(nn.Module):
    """Finite scalar quantisation (ioblocks.py:134-333): a latent or a token index to the
    code vector the resynthesizer adds to its model-channel branch."""

    levels: Tensor
    basis: Tensor

    def __init__(self, config: HertzConfig) -> None:
        super().__init__()
        q = config.quantizer
        self.input = nn.Linear(config.latent, q.dim)
        self.ffnn = FeedForward(q.dim, q.hidden)
        self.compressor = _Compressor(q)
        levels = torch.tensor(q.levels, dtype=torch.long)
        basis = torch.cumprod(torch.cat((torch.ones(1, dtype=torch.long), levels[:-1])), 0)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def from_tokens(self, tokens: Tensor) -> Tensor:
        """Token indices (any shape) to code vectors (..., dim)."""
        half = self.levels // 2
        digits = (tokens[..., None] // self.basis) % self.levels
        codes = (digits - half).to(self.compressor.project_out.weight.dtype) / half
        return cast(Tensor, self.compressor.project_out(codes))

    def from_latents(self, latents: Tensor) -> Tensor:
        """Latents (..., latent) to the code vectors of their quantised values."""
        z = self.compressor.project_in(self.ffnn(self.input(latents))).float()
        levels = self.levels.float()
        half_l = (levels - 1) * (1 + 1e-3) / 2
        offset = (self.levels % 2 == 0).float() / 2
        bounded = torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset
        codes = torch.round(bounded) / (self.levels // 2)
        return cast(
            Tensor, self.compressor.project_out(codes.to(self.compressor.project_out.weight.dtype))
        )


class _LatentIO(nn.Module):
    def __init__(self, config: HertzConfig, heads: bool) -> None:
        super().__init__()
        dim = config.resynthesizer.dim
        self.input_projection = nn.Linear(config.latent, dim)
        if heads:
            mix = config.mixtures
            self.fc_loc = nn.Linear(dim, mix * config.latent)
            self.fc_scale = nn.Linear(dim, mix * config.latent)
            self.fc_weight = nn.Linear(dim, mix)


@dataclass
class Mixture:
    """A Gaussian mixture per slot (and frame) over the next latent."""

    locs: Tensor  # (..., components, latent)
    scales: Tensor
    logits: Tensor  # (..., components)


class Resynthesizer(nn.Module):
    """Latents and the next frame's token in, the next frame's latent distribution out."""

    def __init__(self, config: HertzConfig) -> None:
        super().__init__()
        c = config.resynthesizer
        self.latent = config.latent
        self.mixtures = config.mixtures
        self.split = config.split
        self.io = _LatentIO(config, heads=True)
        self.io2 = _LatentIO(config, heads=False)
        self.plex_projection = nn.Linear(config.quantizer.dim, c.dim)
        self.plex_projection2 = nn.Linear(config.quantizer.dim, c.dim)
        self.out_norm = Norm(c.dim, c.eps)
        self.stack = _Stack(config)

    def _embed(self, latents: Tensor) -> Tensor:
        user, model = latents[..., : self.latent], latents[..., self.latent :]
        return cast(Tensor, self.io.input_projection(user) + self.io2.input_projection(model))

    def _mixture(self, h: Tensor) -> Mixture:
        h = self.out_norm(h)
        shape = (*h.shape[:-1], self.mixtures, self.latent)
        scale = self.io.fc_scale(h).float()
        squareplus = (scale + torch.sqrt(scale * scale + 4)) / 2
        return Mixture(
            locs=self.io.fc_loc(h).float().view(shape),
            scales=squareplus.clamp(min=1e-6).view(shape),
            logits=self.io.fc_weight(h).float(),
        )

    def full(
        self,
        latents: Tensor,
        next_codes: tuple[Tensor, Tensor],
        rope: Rope,
        kv: list[tuple[Tensor, Tensor]] | None = None,
    ) -> tuple[Mixture, Mixture]:
        """(user, model) mixtures for every frame. ``next_codes`` are the code vectors of
        each channel's next frame (teacher forcing; the sampled tokens' at the last frame).
        ``kv`` gets the trunk's layers, then the model branch's, then the user branch's."""
        trunk, branch = self.stack.trunk_and_branch()
        x = run_full(trunk, self._embed(latents), rope, kv)
        model = run_full(branch, x + self.plex_projection2(next_codes[1]), rope, kv)
        user = run_full(branch, x + self.plex_projection(next_codes[0]), rope, kv)
        return self._mixture(user), self._mixture(model)

    def chunk(
        self, latents: Tensor, model_codes: Tensor, start: int, rope: Rope, caches: list[KV]
    ) -> None:
        """Frames from ``start`` of one slot into its cache rows (the model branch only, as
        in ``step``); ``model_codes`` are the codes of the tokens sampled at those frames."""
        trunk, branch = self.stack.trunk_and_branch()
        x = run_chunk(trunk, self._embed(latents), start, rope, caches[: self.split])
        x = x + self.plex_projection2(model_codes)
        run_chunk(branch, x, start, rope, caches[self.split :])

    def step(self, latents: Tensor, model_code: Tensor, at: StepAt, caches: list[KV]) -> Mixture:
        """The model channel's next-latent mixture (slots, ...); ``caches``: the trunk's
        layers, then the model branch's."""
        trunk, branch = self.stack.trunk_and_branch()
        x = run_step(trunk, self._embed(latents), at, caches[: self.split])
        x = run_step(branch, x + self.plex_projection2(model_code), at, caches[self.split :])
        return self._mixture(x)


class _Stack(nn.Module):
    def __init__(self, config: HertzConfig) -> None:
        super().__init__()
        self.split = config.split
        self.layers = nn.ModuleList(
            Block(config.resynthesizer) for _ in range(config.resynthesizer.layers)
        )

    def trunk_and_branch(self) -> tuple[list[Block], list[Block]]:
        """The shared layers, and those run once per channel with the same weights."""
        blocks: list[Block] = list(self.layers)  # type: ignore[arg-type]
        return blocks[: self.split], blocks[self.split :]


def sample_token(logits: Tensor, temperature: Tensor) -> Tensor:
    """One token per row of ``logits`` (slots, vocab) at the row's temperature: Gumbel-max,
    the same distribution as softmax + multinomial without a host sync."""
    uniform = torch.rand(logits.shape, device=logits.device).clamp(1e-20, 1.0)
    gumbel = -torch.log(-torch.log(uniform))
    return torch.argmax(logits.float() / temperature[:, None] + gumbel, dim=-1)


def sample_latent(mixture: Mixture, categorical: Tensor, gaussian: Tensor) -> Tensor:
    """One latent per slot (ioblocks.py:67-83): every component drawn with its spread scaled
    by ``gaussian``, one component picked from ``softmax(logits / categorical)``."""
    noise = torch.randn(mixture.locs.shape, device=mixture.locs.device)
    draws = mixture.locs + mixture.scales * gaussian[:, None, None] * noise
    uniform = torch.rand(mixture.logits.shape, device=mixture.logits.device).clamp(1e-20, 1.0)
    pick = torch.argmax(mixture.logits / categorical[:, None] - torch.log(-torch.log(uniform)), -1)
    index = pick[:, None, None].expand(-1, 1, draws.shape[-1])
    return torch.gather(draws, 1, index)[:, 0]


class HertzModel(nn.Module):
    """The four published parts, by the names ``weights.PARTS`` uses."""

    def __init__(self, config: HertzConfig) -> None:
        super().__init__()
        self.config = config
        self.codec = Codec(config.codec)
        self.quantizer = Quantizer(config)
        self.resynthesizer = Resynthesizer(config)
        self.backbone = Backbone(config)

    def parts(self) -> dict[str, nn.Module]:
        return {
            "codec": self.codec,
            "quantizer": self.quantizer,
            "resynthesizer": self.resynthesizer,
            "backbone": self.backbone,
        }

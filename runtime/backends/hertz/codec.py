"""Hertz-dev's audio codec (a causal VAE, hertz-facts.md section 2) as a stateful streaming
codec: 2000 new samples in, one latent out; one latent in, 2000 samples out, per slot.

The reference recomputes a 6 s window every step (49 frames per channel, ~57x the
transformers' compute). Every layer here is causal, so each keeps the last inputs it needs
from the previous chunk instead (zeros at a slot's start): a causal convolution its
``(kernel - 1) * dilation`` last samples, a transposed convolution its last frame (at a slot's
start its first frame, as the reference's replication pad). Chunks are whole frames on the
slot's own grid, so the strided layers and pools keep their phase and need nothing else.

Why not moshi's streaming convolutions: their transposed convolution starts from zeros where
this codec replicates the first frame, and their padding modes differ; the per-slot state is
a few tensors, kept here with the same reset and freeze semantics.

Weight names follow the published checkpoint with weight norm folded (``<layer>.weight``);
``weights.py`` folds it when converting.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as fn

from voicefleet.runtime.backends.hertz.config import CodecConfig


class Stream:
    """The streaming state of one codec half for a batch of slots: one tensor per stateful
    layer, in the order a forward pass visits them. ``active`` slots advance; the others keep
    their state (freeze). ``fresh`` marks slots whose decoder starts with this chunk."""

    def __init__(self) -> None:
        self.tensors: list[Tensor] = []
        self.active: Tensor | None = None
        self.fresh: Tensor | None = None
        self._next = 0

    def begin(self, active: Tensor, fresh: Tensor | None = None) -> Stream:
        self.active, self.fresh, self._next = active, fresh, 0
        return self

    def _state(self, like: Tensor, width: int) -> Tensor:
        if self._next == len(self.tensors):  # the first pass allocates
            self.tensors.append(like.new_zeros((*like.shape[:-1], width)))
        state = self.tensors[self._next]
        self._next += 1
        return state

    def _keep(self, state: Tensor, new: Tensor) -> None:
        assert self.active is not None
        state.copy_(torch.where(self.active[:, None, None], new, state))

    def extend(self, x: Tensor, width: int) -> Tensor:
        """``x`` with the ``width`` samples before it; remembers its last ``width``."""
        state = self._state(x, width)
        joined = torch.cat((state, x), dim=-1)
        self._keep(state, joined[..., -width:])
        return joined

    def previous_frame(self, x: Tensor) -> Tensor:
        """The frame before ``x``'s first (its own first for a fresh slot)."""
        state = self._state(x, 1)
        first = x[..., :1]
        previous = (
            first if self.fresh is None else torch.where(self.fresh[:, None, None], first, state)
        )
        self._keep(state, x[..., -1:])
        return previous

    def zero(self, slots: Tensor) -> None:
        for state in self.tensors:
            state[slots] = 0


class CausalConv(nn.Module):
    def __init__(
        self, cin: int, cout: int, kernel: int, *, stride: int = 1, dilation: int = 1, bias: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation, bias=bias)
        self.pad = (kernel - 1) * dilation

    def forward(self, x: Tensor, stream: Stream | None) -> Tensor:
        x = fn.pad(x, (self.pad, 0)) if stream is None else stream.extend(x, self.pad)
        return cast(Tensor, self.conv(x))


class ResUnit(nn.Module):
    """``x + conv2(elu(conv1(elu(x))))``: a dilated causal k7 conv, then 1x1; no biases."""

    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = CausalConv(channels, channels, kernel, dilation=dilation, bias=False)
        self.conv2 = nn.Conv1d(channels, channels, 1, bias=False)

    def forward(self, x: Tensor, stream: Stream | None) -> Tensor:
        y = self.conv1(fn.elu(x), stream)
        return x + cast(Tensor, self.conv2(fn.elu(y)))


class _Pool(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor, _stream: Stream | None) -> Tensor:
        return fn.avg_pool1d(x, self.stride, self.stride)


class _Upsample(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor, _stream: Stream | None) -> Tensor:
        return x.repeat_interleave(self.stride, dim=-1)


class _Identity(nn.Module):
    def forward(self, x: Tensor, _stream: Stream | None) -> Tensor:
        return x


class CausalDeconv(nn.Module):
    """Kernel ``2s``, stride ``s``: ``out[t*s + r] = W_r x[t] + W_{s+r} x[t-1] + b``."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride)
        self.stride = stride

    def forward(self, x: Tensor, stream: Stream | None) -> Tensor:
        previous = x[..., :1] if stream is None else stream.previous_frame(x)
        out = cast(Tensor, self.deconv(torch.cat((previous, x), dim=-1)))
        return out[..., self.stride : -self.stride]


class _Stage(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.res_block = nn.ModuleList(blocks)

    def forward(self, x: Tensor, stream: Stream | None) -> Tensor:
        for block in self.res_block:
            x = block(x, stream)
        return x


class Encoder(nn.Module):
    def __init__(self, c: CodecConfig) -> None:
        super().__init__()
        chans = c.encoder_channels
        # The data convolutions at both ends sit in res_stack directly.
        stages: list[nn.Module] = [CausalConv(1, chans[0], c.kernel, bias=False)]
        for i, stride in enumerate(c.strides):
            cin, cout = chans[i], chans[i + 1]
            blocks: list[nn.Module] = [ResUnit(cin, c.kernel, d) for d in c.dilations]
            if cin != cout:
                blocks.append(CausalConv(cin, cout, 2 * stride, stride=stride, bias=True))
            else:
                blocks += [_Pool(stride), _Identity()]
            stages.append(_Stage(blocks))
        self.res_stack = nn.ModuleList(stages)

    def forward(self, x: Tensor, stream: Stream | None) -> Tensor:
        for stage in self.res_stack:
            x = stage(x, stream)
        return x


class Decoder(nn.Module):
    def __init__(self, c: CodecConfig) -> None:
        super().__init__()
        chans = c.decoder_channels
        self.multiplier_proj = nn.Conv1d(c.encoder_channels[-1], chans[0], 1)
        stages: list[nn.Module] = []
        for i, stride in enumerate(reversed(c.strides)):
            cin, cout = chans[i], chans[i + 1]
            units: list[nn.Module] = [ResUnit(cout, c.kernel, d) for d in c.dilations]
            if cin == cout:
                stages.append(_Stage([_Upsample(stride), _Identity(), *units]))
            else:
                stages.append(_Stage([CausalDeconv(cin, cout, stride), *units]))
        stages.append(CausalConv(chans[-1], 1, c.kernel, bias=False))
        self.res_stack = nn.ModuleList(stages)

    def forward(self, x: Tensor, stream: Stream | None) -> Tensor:
        x = cast(Tensor, self.multiplier_proj(x))
        for stage in self.res_stack:
            x = stage(x, stream)
        return x


class _Compressor(nn.Module):
    def __init__(self, c: CodecConfig) -> None:
        super().__init__()
        self.proj_in = nn.Linear(c.encoder_channels[-1], 2 * c.latent)
        self.proj_out = nn.Linear(c.latent, c.encoder_channels[-1])


class Codec(nn.Module):
    """``encode``: (batch, samples) -> mean and log-variance (batch, frames, latent);
    ``decode``: (batch, frames, latent) -> (batch, samples). With a ``Stream`` each call is
    the next chunk of the slots' audio; without, a whole sequence from its start."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.compressor = _Compressor(config)

    def encode(self, audio: Tensor, stream: Stream | None = None) -> tuple[Tensor, Tensor]:
        dtype = self.compressor.proj_in.weight.dtype
        h = self.encoder((audio / self.config.scale).to(dtype)[:, None, :], stream)
        mean, log_var = self.compressor.proj_in(h.transpose(1, 2)).chunk(2, dim=-1)
        return mean, log_var

    def decode(self, latents: Tensor, stream: Stream | None = None) -> Tensor:
        h = self.compressor.proj_out(latents.to(self.compressor.proj_out.weight.dtype))
        return cast(Tensor, self.decoder(h.transpose(1, 2), stream))[:, 0] * self.config.scale


def sample(mean: Tensor, log_var: Tensor) -> Tensor:
    """The encoder's latent: the reference samples it (tokenizer.py:441-444), not the mean."""
    return mean + torch.randn(mean.shape, device=mean.device) * torch.exp(log_var.float() / 2)

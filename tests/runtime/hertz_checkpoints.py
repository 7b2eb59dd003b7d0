"""Random Hertz-dev checkpoints in the published format: one pickled ``{name: tensor}`` file per
part, under the published file names, the codec's convolutions and Gaussian-head linears
weight-normed (``parametrizations.weight.original0/1``) and its dead ``pad_buffer``s present,
as the reference's modules write them (hertz-facts.md section 1)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from voicefleet.runtime.backends.hertz.models import HertzModel
from voicefleet.runtime.backends.hertz.weights import PARTS

WEIGHT_NORM = ".parametrizations.weight.original"


def weight_normed(codec: nn.Module) -> set[str]:
    """The codec's layers whose weight the reference keeps as (g, v)."""
    names = set()
    for name, module in codec.named_modules():
        conv = isinstance(module, nn.Conv1d | nn.ConvTranspose1d)
        head = isinstance(module, nn.Linear) and name.startswith("compressor.")
        if conv or head:
            names.add(name)
    return names


def published_codec(codec: nn.Module) -> dict[str, Tensor]:
    raw: dict[str, Tensor] = {}
    normed = weight_normed(codec)
    for name, tensor in codec.state_dict().items():
        layer = name.removesuffix(".weight")
        if name.endswith(".weight") and layer in normed:
            norm = tensor.flatten(1).norm(dim=1).view(-1, *([1] * (tensor.dim() - 1)))
            # Any (g, v) with g * v / |v| == w: v scaled by 3 shows the norm is divided out.
            raw[f"{layer}{WEIGHT_NORM}0"] = norm.clone()
            raw[f"{layer}{WEIGHT_NORM}1"] = tensor * 3.0
        else:
            raw[name] = tensor.clone()
        if layer.endswith(".deconv"):
            raw[layer.removesuffix(".deconv") + ".pad_buffer"] = torch.zeros(1, tensor.shape[0], 1)
    return raw


def write_published(model: HertzModel, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for part, module in model.parts().items():
        state = published_codec(module) if part == "codec" else dict(module.state_dict())
        torch.save(state, directory / PARTS[part][0])

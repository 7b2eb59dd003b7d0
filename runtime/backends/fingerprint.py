"""A short fingerprint of a model's weights, for the identity a moved conversation's state
carries: every parameter's name, shape and dtype, and its first few values. Two checkpoints,
two random seeds or two variants differ in it; computing it reads a few values per tensor."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

# Values taken from every parameter: enough to tell weights apart, cheap for a 7 B model.
VALUES_PER_PARAMETER = 8


def weights_fingerprint(*models: nn.Module) -> str:
    digest = hashlib.sha256()
    samples = []
    for model in models:
        for name, param in model.named_parameters():
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
            samples.append(param.detach().flatten()[:VALUES_PER_PARAMETER].float())
    if samples:
        digest.update(torch.cat(samples).cpu().numpy().tobytes())
    return digest.hexdigest()[:32]

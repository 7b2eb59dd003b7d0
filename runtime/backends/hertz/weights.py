"""Hertz-dev's weights: the published pickled checkpoints converted once to safetensors, and
the checked load of those at serving time (which never unpickles anything).

The published files (Hugging Face ``si-pbc/hertz-dev``; hertz-facts.md section 1) are flat
``{name: tensor}`` pickles, one per part. Conversion folds the codec's weight norm
(``w = g * v / ||v||``, the norm over every dimension but the first; stored either as
``parametrizations.weight.original0/1`` or as legacy ``weight_g/weight_v``), drops buffers
that only dead code reads (``pad_buffer``), and writes bf16 safetensors under the names of
this package's modules, which are the published names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from voicefleet.runtime.backends.base import BackendLoadError

log = logging.getLogger(__name__)

# part -> (published checkpoint, converted file)
PARTS: dict[str, tuple[str, str]] = {
    "codec": ("inference_apatosaurus_95000.pt", "codec.safetensors"),
    "quantizer": ("inference_volcano_3.pt", "quantizer.safetensors"),
    "resynthesizer": ("inference_care_50000.pt", "resynthesizer.safetensors"),
    "backbone": ("inference_scion_54000.pt", "backbone.safetensors"),
}
_WEIGHT_NORM = {
    ".parametrizations.weight.original0": "g",
    ".parametrizations.weight.original1": "v",
    ".weight_g": "g",
    ".weight_v": "v",
}
# Buffers of the reference's modules that no computation reads (hertz-facts.md 1.2).
_IGNORED_SUFFIXES = (".pad_buffer", "._device_tracker")
SHOW = 5  # problems listed in one error


def fold_weight_norm(raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Published names to plain ``<layer>.weight`` ones, weight norm folded in float32."""
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for name, tensor in raw.items():
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        for suffix, role in _WEIGHT_NORM.items():
            if name.endswith(suffix):
                pairs.setdefault(name.removesuffix(suffix), {})[role] = tensor
                break
        else:
            out[name] = tensor
    for layer, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise BackendLoadError(f"{layer}: weight norm needs both g and v; found {sorted(pair)}")
        v = pair["v"].float()
        norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
        out[f"{layer}.weight"] = pair["g"].float() * v / norm
    return out


def check(part: str, tensors: Mapping[str, Tensor], module: nn.Module, origin: str) -> None:
    """Refuse, naming what differs, when ``tensors`` do not fit ``module`` exactly."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    problems = [
        f"missing {name} {list(shape)}" for name, shape in expected.items() if name not in tensors
    ]
    problems += [f"unexpected {name}" for name in tensors if name not in expected]
    problems += [
        f"{name} has shape {list(tensors[name].shape)}, expected {list(shape)}"
        for name, shape in expected.items()
        if name in tensors and tuple(tensors[name].shape) != shape
    ]
    if problems:
        more = f" (and {len(problems) - SHOW} more)" if len(problems) > SHOW else ""
        raise BackendLoadError(
            f"{origin} does not hold Hertz-dev's {part} as published: "
            + "; ".join(problems[:SHOW])
            + more
            + ". Convert the published checkpoints (si-pbc/hertz-dev) with "
            "`voicefleet runtime convert-hertz`, or pass --weights random"
        )


def load_part(directory: Path, part: str, module: nn.Module, device: torch.device) -> None:
    """Load one converted part into ``module`` (built on ``device``), checked first."""
    path = directory / PARTS[part][1]
    if not path.is_file():
        published = directory / PARTS[part][0]
        hint = (
            f"{published.name} is there but not converted: run `voicefleet runtime "
            f"convert-hertz {directory}` once"
            if published.is_file()
            else "convert the published checkpoints with `voicefleet runtime convert-hertz`"
        )
        raise BackendLoadError(f"{path} is missing; {hint}")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise BackendLoadError(f"{path} is not a readable safetensors file ({exc})") from exc
    check(part, tensors, module, str(path))
    module.load_state_dict(tensors, strict=True)


def convert(sources: Mapping[str, Path], out: Path, modules: Mapping[str, nn.Module]) -> list[Path]:
    """Each published checkpoint to its checked safetensors file in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for part, source in sources.items():
        # weights_only: the published files are plain {name: tensor} maps; anything that
        # needs more than tensors to unpickle is refused rather than run.
        raw = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(raw, Mapping):
            raise BackendLoadError(
                f"{source} holds a {type(raw).__name__}, not a name -> tensor map"
            )
        folded = fold_weight_norm(raw)
        check(part, folded, modules[part], str(source))
        target = out / PARTS[part][1]
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in folded.items()}, str(target))
        log.info("%s -> %s (%d tensors)", source, target, len(folded))
        written.append(target)
    return written


def published_sources(directory: Path, parts: Iterable[str] = PARTS) -> dict[str, Path]:
    missing = [PARTS[p][0] for p in parts if not (directory / PARTS[p][0]).is_file()]
    if missing:
        raise BackendLoadError(f"{directory} lacks {', '.join(missing)}")
    return {part: directory / PARTS[part][0] for part in parts}

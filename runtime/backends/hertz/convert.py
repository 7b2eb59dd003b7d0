"""``voicefleet runtime convert-hertz SOURCE``: the one place that unpickles Hertz-dev's
published checkpoints (with ``torch.load(weights_only=True)``: tensors only), run once, e.g. by
the pool's pre-pull Job, never by a serving runtime."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download

from voicefleet.runtime.backends.base import BackendLoadError
from voicefleet.runtime.backends.hertz.config import FULL, TINY
from voicefleet.runtime.backends.hertz.load import converted_dir
from voicefleet.runtime.backends.hertz.models import HertzModel
from voicefleet.runtime.backends.hertz.weights import PARTS, convert, published_sources

EXIT_OK = 0
EXIT_FAILED = 2


def _download(source: str) -> Path:
    repo = source.removeprefix("hf://").strip("/")
    paths = [Path(hf_hub_download(repo, published)) for published, _ in PARTS.values()]
    return paths[0].parent


def convert_command(source: str, out: Path | None, *, tiny: bool = False) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if source.startswith("hf://"):
            directory = _download(source)
            target = out or converted_dir(source)
        else:
            directory = Path(source.removeprefix("file://"))
            target = out or directory
        # Shapes only: the modules are built on the meta device, no memory for weights.
        with torch.device("meta"):
            model = HertzModel(TINY if tiny else FULL)
        written = convert(published_sources(directory), target, model.parts())
    except (BackendLoadError, OSError, RuntimeError) as exc:
        print(f"voicefleet runtime convert-hertz: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for path in written:
        print(path)
    return EXIT_OK

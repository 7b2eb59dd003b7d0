"""What every backend hands the engine, and the one error type a failed load raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from voicefleet.runtime.config import RuntimeConfig


class BackendLoadError(Exception):
    """The model could not be loaded; the message says what to change."""


@dataclass
class LoadedModel:
    """One Mimi codec and one LM of the Moshi architecture, ready to be put in streaming mode.

    ``text_piece`` maps a text token to what a client is shown (None for padding tokens);
    ``mimi`` and ``lm`` are moshi's ``MimiModel`` and ``LMModel``.
    """

    mimi: Any
    lm: Any
    text_piece: Callable[[int], str | None]
    name: str
    variant: str
    device: torch.device
    # Sampling defaults of the model (moshi's: temp 0.8, temp_text 0.7, top_k 250, 25).
    temp: float = 0.8
    temp_text: float = 0.7
    top_k: int = 250
    top_k_text: int = 25


Loader = Callable[["RuntimeConfig", "torch.device"], LoadedModel]


def no_text(_token: int) -> str | None:
    """The text table of a model without a tokenizer: nothing to show."""
    return None

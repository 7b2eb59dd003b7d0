"""The contract between the engine and a model backend, and the one error a failed load raises.

The engine, the protocols, drain and metrics know a backend only through :class:`Backend`:
its audio frame (sample rate and samples per step), one batched step over a fixed number of
slots, per-slot reset (a new conversation starts in that slot) and per-slot freeze (a slot
that is not active keeps its state and does not advance). Nothing else about a model leaks
out: Moshi's 24 kHz / 1920-sample frames and Hertz-dev's 16 kHz / 2000-sample frames step
under the same clock, admission and drain.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from voicefleet.runtime.backends.slot_state import SlotState, SlotStateError

if TYPE_CHECKING:
    import torch

    from voicefleet.runtime.config import RuntimeConfig
Pcm = np.ndarray[Any, np.dtype[np.float32]]


class BackendLoadError(Exception):
    """The model could not be loaded; the message says what to change."""


@dataclass(frozen=True)
class FrameFormat:
    """A backend's audio: mono float PCM at ``sample_rate``, ``samples`` per step."""

    sample_rate: int
    samples: int

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def ms(self) -> float:
        return 1000.0 * self.seconds

    def steps(self, seconds: float) -> int:
        """Frames in ``seconds`` of audio, rounded up (at least one)."""
        return max(1, math.ceil(seconds / self.seconds - 1e-9))

    def context_steps(self, max_session_seconds: float) -> int:
        """KV-cache length per session: the whole conversation fits, never more."""
        return self.steps(max_session_seconds)

    def samples_at(self, rate: int) -> int:
        """Samples of one frame at another rate; the rates the runtime offers divide evenly."""
        samples = self.samples * rate / self.sample_rate
        if not samples.is_integer():
            raise ValueError(f"a {self.ms:g} ms frame is not a whole number of samples at {rate}")
        return int(samples)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings a session asked for, already clamped by the protocol.

    Each backend uses the ones it has per slot and reports back what it did with the others
    (:meth:`Backend.sampling_in_force`): Moshi samples text per slot (``text_temperature``);
    Hertz-dev samples its token (``audio_temperature``) and its latent mixture
    (``categorical_temperature``, ``gaussian_temperature``) per slot.
    """

    text_temperature: float | None = None
    audio_temperature: float | None = None
    text_topk: int | None = None
    audio_topk: int | None = None
    categorical_temperature: float | None = None
    gaussian_temperature: float | None = None

    def wire(self) -> dict[str, float]:
        values = {
            "textTemperature": self.text_temperature,
            "audioTemperature": self.audio_temperature,
            "textTopk": self.text_topk,
            "audioTopk": self.audio_topk,
            "categoricalTemperature": self.categorical_temperature,
            "gaussianTemperature": self.gaussian_temperature,
        }
        return {key: float(value) for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class StepOutput:
    """One step of every slot: ``pcm[slot]`` is audible only where ``audible[slot]`` (a model
    may hold back audio for its first steps); ``text[slot]`` is a piece to show, or None."""

    pcm: Pcm
    audible: np.ndarray[Any, np.dtype[np.bool_]]
    text: list[str | None]


class Backend(ABC):
    """A model that steps ``capacity`` slots together. :meth:`start`, :meth:`reset`,
    :meth:`freeze` and :meth:`step` run on the engine thread only."""

    name: str
    variant: str
    device: torch.device
    frame: FrameFormat
    context_steps: int
    # Steps a new conversation makes before its first audible frame, whose output does not
    # depend on what the caller says (Moshi: 1, the acoustic codebooks' delay; its first LM
    # step reads only the initial tokens). The engine primes a claimed slot past them
    # (:meth:`prime`) while its caller is still connecting.
    silent_first_steps: int = 0

    @abstractmethod
    def start(self, capacity: int) -> None:
        """Allocate every slot's streaming state and warm up (compile, capture graphs); all
        slots end reset and frozen."""

    @abstractmethod
    def reset(self, slots: Sequence[int], sampling: Sequence[Sampling]) -> None:
        """Start a new conversation in each of ``slots`` (with its sampling); others untouched."""

    @abstractmethod
    def freeze(self, active: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        """From the next step on, only ``active`` slots advance; the others keep their state."""

    @abstractmethod
    def step(self, frames: Pcm) -> StepOutput:
        """One frame of input per slot, ``(capacity, frame.samples)``; one frame out per slot."""

    def prime(self, slots: Sequence[int], sampling: Sequence[Sampling]) -> bool:
        """Put a new conversation (with its ``sampling``) past its silent first steps into
        each of the frozen ``slots``, between steps; they then start without a reset. False:
        not done (the default), they start with a reset at their first frame."""
        return False

    def sampling_in_force(self, asked: Sampling) -> Sampling:
        """What a session asking for ``asked`` gets (reported back to its client)."""
        return asked

    # --- moving a conversation (engine thread only, between steps) ------------------------
    # A backend that cannot move conversations keeps these defaults, which refuse.

    def export_slot(self, slot: int) -> SlotState:
        """The conversation in ``slot`` (active or frozen), on the host, ready to continue
        in another slot of this model: ``import_begin`` there, then ``import_step``."""
        raise SlotStateError(f"the {type(self).__name__} backend cannot move conversations")

    def check_import(self, state: SlotState) -> int:
        """Refuse (:class:`SlotStateError`) a state this backend cannot continue; else the
        steps of model work its import will replay. Changes nothing; safe from any thread."""
        raise SlotStateError(f"the {type(self).__name__} backend cannot move conversations")

    def import_begin(self, slot: int, state: SlotState) -> int:
        """Check ``state`` (as :meth:`check_import`; a refusal leaves ``slot`` and every
        other slot untouched), then load it into ``slot``, which ends frozen; the steps left
        to replay with :meth:`import_step` before the slot may be made active."""
        raise SlotStateError(f"the {type(self).__name__} backend cannot move conversations")

    def import_step(self, slot: int, max_steps: int) -> int:
        """Replay up to ``max_steps`` of ``slot``'s import, bounded work between two frames
        so the other slots stay on time; the steps still left (0: ready to step)."""
        raise SlotStateError(f"no import under way in slot {slot}")


Loader = Callable[["RuntimeConfig", "torch.device"], Backend]


def no_text(_token: int) -> str | None:
    """The text table of a model without a tokenizer: nothing to show."""
    return None


def clamp(value: float | None, default: float, bounds: tuple[float, float]) -> float:
    """``value`` within ``bounds``, or ``default`` when the session asked for nothing."""
    if value is None:
        return default
    return min(max(value, bounds[0]), bounds[1])

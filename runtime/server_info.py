"""The server-info layout of Kyutai's Rust server, carried by every 0x04 notice on /api/chat.

Kyutai's web client checks each 0x04 message against that layout (a zod object: these fields
are required, others pass through) and logs a schema error for any message without them; its
info panel then stays empty. So every notice we send there (the session notice, drain and
session-limit notices) carries the layout beside its own camelCase fields, which the layout's
snake_case names never collide with.

The values are what this session gets: the sampling in force, else the model's defaults
(moshi's: text 0.7 / top-k 25, audio 0.8 / top-k 250). The runtime applies no padding
multiplier or repetition penalty, so those report their neutral values.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voicefleet import __version__
from voicefleet.runtime.backends.base import Sampling

if TYPE_CHECKING:
    from voicefleet.runtime.config import RuntimeConfig

TEXT_TEMPERATURE = 0.7
TEXT_TOPK = 25
AUDIO_TEMPERATURE = 0.8
AUDIO_TOPK = 250
NO_PAD_MULT = 0.0
NO_REPETITION_PENALTY = 1.0
NO_REPETITION_CONTEXT = 0
BUILD_FIELDS = (
    "build_timestamp",
    "build_date",
    "git_branch",
    "git_timestamp",
    "git_date",
    "git_hash",
    "git_describe",
    "rustc_host_triple",
    "rustc_version",
    "cargo_target_triple",
)


@dataclass(frozen=True)
class ServerIdentity:
    """What the layout says of the server: the model it serves and the pod it runs in."""

    model: str
    instance: str

    @classmethod
    def of(cls, config: RuntimeConfig) -> ServerIdentity:
        # In a pod the host name is the pod's name: what `kubectl get pods` shows.
        return cls(model=config.weights or config.backend, instance=socket.gethostname())


def server_info(identity: ServerIdentity, sampling: Sampling) -> dict[str, Any]:
    def pick(asked: float | None, default: float) -> float:
        return default if asked is None else asked

    build = dict.fromkeys(BUILD_FIELDS, "")
    build["git_describe"] = f"voicefleet {__version__}"
    return {
        "text_temperature": pick(sampling.text_temperature, TEXT_TEMPERATURE),
        "text_topk": pick(sampling.text_topk, TEXT_TOPK),
        "audio_temperature": pick(sampling.audio_temperature, AUDIO_TEMPERATURE),
        "audio_topk": pick(sampling.audio_topk, AUDIO_TOPK),
        "pad_mult": NO_PAD_MULT,
        "repetition_penalty_context": NO_REPETITION_CONTEXT,
        "repetition_penalty": NO_REPETITION_PENALTY,
        "lm_model_file": identity.model,
        "instance_name": identity.instance,
        "build_info": build,
    }

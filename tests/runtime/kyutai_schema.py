"""The check Kyutai's web client makes of every 0x04 message (its `ServersInfoSchema`, a zod
object, in the client's server-info hook), written out from its field list: these fields with
these types are required, anything else passes. A message that fails it is logged as a schema
error and the client's info panel stays empty."""

from __future__ import annotations

from typing import Any

NUMBERS = (
    "text_temperature",
    "text_topk",
    "audio_temperature",
    "audio_topk",
    "pad_mult",
    "repetition_penalty_context",
    "repetition_penalty",
)
STRINGS = ("lm_model_file", "instance_name")
BUILD_STRINGS = (
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def problems(message: dict[str, Any]) -> list[str]:
    """What the web client's schema would report of ``message`` (empty: accepted)."""
    found = [f"{name}: expected number" for name in NUMBERS if not _is_number(message.get(name))]
    found += [
        f"{name}: expected string" for name in STRINGS if not isinstance(message.get(name), str)
    ]
    build = message.get("build_info")
    if not isinstance(build, dict):
        return [*found, "build_info: expected object"]
    found += [
        f"build_info.{name}: expected string"
        for name in BUILD_STRINGS
        if not isinstance(build.get(name), str)
    ]
    return found

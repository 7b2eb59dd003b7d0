"""Every attack of issue 10 on a live runtime, as a hostile caller would make it, each with how
the server must contain it. Used by the fast tests (test_hostile.py) and by the full table of
bench/hostile_clients.py, which runs them all with a conversation streaming beside them.

An attack returns an :class:`Outcome`: whether it was contained (the offending connection
closed or refused, with the reason the server counted, its slot free again), how, and how
long that took from the start of the offence.
"""

from __future__ import annotations

from voicefleet.testing.attacks.admission import (
    bad_query_strings,
    capacity,
    drain_abuse,
    http_smuggling,
    raw_post,
    short_sessions,
    upgrade_resets,
)
from voicefleet.testing.attacks.common import (
    Attack,
    Outcome,
    active,
    chat,
    eventually,
    open_caller,
    stream_opus,
)
from voicefleet.testing.attacks.connections import (
    half_open,
    never_reader,
    never_reads,
    silent_session,
    slowloris,
)
from voicefleet.testing.attacks.lifecycle import (
    codec_worker_killed,
    no_attack,
    sigterm_with_never_reader,
)
from voicefleet.testing.attacks.messages import (
    burst_then_close,
    deflate_bomb,
    malformed_opus,
    opus_bomb,
    opus_flood,
    oversized_message,
    pcm_flood,
    protocol_abuse,
)

__all__ = [
    "ATTACKS",
    "Attack",
    "Outcome",
    "active",
    "bad_query_strings",
    "burst_then_close",
    "capacity",
    "chat",
    "codec_worker_killed",
    "deflate_bomb",
    "drain_abuse",
    "eventually",
    "half_open",
    "http_smuggling",
    "malformed_opus",
    "never_reader",
    "never_reads",
    "no_attack",
    "open_caller",
    "opus_bomb",
    "opus_flood",
    "oversized_message",
    "pcm_flood",
    "protocol_abuse",
    "raw_post",
    "short_sessions",
    "sigterm_with_never_reader",
    "silent_session",
    "slowloris",
    "stream_opus",
    "upgrade_resets",
]


# name, attack: in the order the table runs them.
ATTACKS: list[tuple[str, Attack]] = [
    ("none (baseline)", no_attack),
    ("protocol abuse", protocol_abuse),
    ("malformed Opus", malformed_opus),
    ("oversized message", oversized_message),
    ("deflate bomb", deflate_bomb),
    ("Opus bomb", opus_bomb),
    ("burst then close (3)", burst_then_close),
    ("PCM flood (4)", pcm_flood),
    ("Opus flood", opus_flood),
    ("never reads (2)", never_reads),
    ("half-open", half_open),
    ("silent, answers pings (7)", silent_session),
    ("slowloris (7)", slowloris),
    ("upgrade resets (6)", upgrade_resets),
    ("capacity", capacity),
    ("drain abuse (5)", drain_abuse),
    ("bad query strings", bad_query_strings),
    ("HTTP smuggling", http_smuggling),
    ("500 short sessions", short_sessions),
]

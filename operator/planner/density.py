"""How many conversations one GPU pod holds: the memory, compute and policy limits.

All sessions of a pod share one copy of the weights and step together, one audio frame per
step. So memory grows by one session's state per session, and the step time grows linearly
with the batch: a fixed part (kernel launches, codec, reading the weights once) plus a part per
session (reading its KV cache, its share of the depformer and codec). models.yaml documents the
calibration on an H100.

The seed article's *replicated* model (one model copy per session, 3-4 Moshi sessions on an
H100) is kept beside it for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from voicefleet.catalog import ModelProfile, ModelVariant
from voicefleet.constants import LimitedBy

GIB = 1024**3


@dataclass(frozen=True)
class Gpu:
    """The GPU a plan is for, resolved from the catalog or the spec's overrides."""

    product: str
    short_name: str
    memory_gib: float
    overhead_gib: float
    bandwidth_gbps: float | None
    """None for an unknown product without a bandwidth override: compute is not estimated."""
    in_catalog: bool


@dataclass(frozen=True)
class Density:
    """Sessions per pod and what bounds it."""

    sessions_per_pod: int
    limited_by: str
    memory_limit: int
    compute_limit: int | None
    per_session_gib: float
    frame_ms_at_capacity: float | None


def session_steps(profile: ModelProfile, max_session_seconds: int) -> int:
    """Frames one conversation of the given cap lasts: the context each slot is sized for."""
    return math.ceil(max_session_seconds * profile.frame_hz)


def per_session_gib(variant: ModelVariant, steps: int) -> float:
    """GPU memory of one session's streaming state (KV cache plus codec state)."""
    return variant.state_fixed_gib + steps * variant.state_bytes_per_step / GIB


def memory_limit(gpu: Gpu, variant: ModelVariant, session_gib: float) -> int:
    """Sessions whose state fits beside one copy of the weights and the runtime's replay
    rows (0 if the weights don't fit)."""
    free = gpu.memory_gib - gpu.overhead_gib - variant.workspace_gib - variant.weights_gib
    return max(0, math.floor(free / session_gib) - variant.replay_rows)


def replicated_memory_limit(gpu: Gpu, variant: ModelVariant, session_gib: float) -> int:
    """The seed article's formula: floor((VRAM - 2 GiB) / (weights + state per session))."""
    free = gpu.memory_gib - gpu.overhead_gib
    return max(0, math.floor(free / (variant.weights_gib + session_gib)))


@dataclass(frozen=True)
class FrameModel:
    """Predicted step time of a batch: ``p50(B) = fixed_ms + B * per_session_ms``."""

    fixed_ms: float
    per_session_ms: float
    p95_over_p50: float

    def p95_ms(self, batch: int) -> float:
        return (self.fixed_ms + batch * self.per_session_ms) * self.p95_over_p50

    def max_batch(self, budget_ms: float) -> int:
        """The largest batch whose predicted p95 stays within the budget."""
        room = budget_ms / self.p95_over_p50 - self.fixed_ms
        return max(0, math.floor(room / self.per_session_ms))


def frame_model(gpu: Gpu, variant: ModelVariant, session_gib: float) -> FrameModel | None:
    """The frame-time model of this model on this GPU; None when bandwidth is unknown."""
    if gpu.bandwidth_gbps is None:
        return None
    compute = variant.compute
    bytes_per_ms = gpu.bandwidth_gbps * 1e9 * compute.bandwidth_efficiency / 1000
    return FrameModel(
        fixed_ms=compute.launch_ms + variant.weights_gib * GIB / bytes_per_ms,
        per_session_ms=compute.per_session_ms + session_gib * GIB / bytes_per_ms,
        p95_over_p50=compute.p95_over_p50,
    )


def batched(
    gpu: Gpu,
    profile: ModelProfile,
    variant: ModelVariant,
    max_session_seconds: int,
    policy_cap: int | None,
) -> Density:
    """Sessions per pod when every session of a pod shares one model and one batch."""
    session_gib = per_session_gib(variant, session_steps(profile, max_session_seconds))
    by_memory = memory_limit(gpu, variant, session_gib)
    model = frame_model(gpu, variant, session_gib)
    by_compute = model.max_batch(profile.frame_ms) if model else None
    # Ties go to the physical limits first: they explain more than "policy" does.
    candidates = [(by_memory, LimitedBy.MEMORY)]
    if by_compute is not None:
        candidates.append((by_compute, LimitedBy.COMPUTE))
    if policy_cap is not None:
        candidates.append((policy_cap, LimitedBy.POLICY))
    sessions, limited_by = min(candidates, key=lambda c: c[0])
    return Density(
        sessions_per_pod=sessions,
        limited_by=limited_by,
        memory_limit=by_memory,
        compute_limit=by_compute,
        per_session_gib=session_gib,
        frame_ms_at_capacity=model.p95_ms(sessions) if model and sessions else None,
    )


def replicated(
    gpu: Gpu,
    profile: ModelProfile,
    variant: ModelVariant,
    max_session_seconds: int,
) -> Density:
    """Sessions per GPU when each session loads its own model copy and steps alone.

    Memory: the seed article's formula. Compute: the copies take turns on the GPU, each
    needing one single-session step per frame.
    """
    session_gib = per_session_gib(variant, session_steps(profile, max_session_seconds))
    by_memory = replicated_memory_limit(gpu, variant, session_gib)
    model = frame_model(gpu, variant, session_gib)
    by_compute = math.floor(profile.frame_ms / model.p95_ms(1)) if model else None
    if by_compute is not None and by_compute < by_memory:
        sessions, limited_by = by_compute, LimitedBy.COMPUTE
    else:
        sessions, limited_by = by_memory, LimitedBy.MEMORY
    return Density(
        sessions_per_pod=sessions,
        limited_by=limited_by,
        memory_limit=by_memory,
        compute_limit=by_compute,
        per_session_gib=variant.weights_gib + session_gib,
        frame_ms_at_capacity=model.p95_ms(1) * sessions if model and sessions else None,
    )

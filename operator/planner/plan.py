"""The capacity plan of one pool: spec in, ``status.plan`` out. Pure; no I/O.

Order of the decisions, each bounded by the one before:

1. Resolve the GPU (catalog or the spec's overrides) and the model variant.
2. Sessions per pod = min(memory, compute, policy) (``density``).
3. Pods for ``target x (1 + headroom)``, split on-demand/spot, then spot surplus so losing
   one spot node still covers the target (``replicas``).
4. Cost per hour and per session-hour from the price table.

An impossible plan raises :class:`PlanError` with a message that says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from voicefleet import catalog, constants
from voicefleet.api.model_spec import ModelSpec
from voicefleet.api.pool import GPU_AUTO, GpuSpec, VoiceAgentPoolSpec
from voicefleet.api.status import PlanStatus
from voicefleet.catalog import Catalog, ModelProfile, ModelVariant, PriceTable
from voicefleet.operator.planner import density, replicas
from voicefleet.operator.planner.density import Density, Gpu


class PlanError(ValueError):
    """A spec that cannot be planned. ``field`` is the spec path to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"spec.{field}: {message}")
        self.field = field
        self.message = message


def resolve_gpu(spec: GpuSpec, tables: Catalog) -> Gpu:
    """The GPU to plan for: the catalog entry, with the spec's overrides laid over it."""
    if spec.product == GPU_AUTO:
        raise PlanError(
            "gpu.product",
            "auto is resolved by the operator from the nodes' nvidia.com/gpu.product labels; "
            f"to plan offline name a product, e.g. {GpuSpec().product}",
        )
    known = tables.find_gpu(spec.product)
    if known is None and spec.memory_mib is None:
        names = ", ".join(sorted(tables.gpus))
        raise PlanError(
            "gpu.product",
            f"{spec.product} is not in the GPU catalog ({names}); set gpu.memoryMiB and "
            "gpu.memoryBandwidthGBps for it, or use a catalog product",
        )
    memory_mib = spec.memory_mib or (known.memory_mib if known else 0)
    bandwidth = spec.memory_bandwidth_gbps or (known.bandwidth_gbps if known else None)
    return Gpu(
        product=known.product if known else spec.product,
        short_name=known.short_name if known else spec.product,
        memory_gib=memory_mib / 1024,
        overhead_gib=known.overhead_gib if known else 2.0,
        bandwidth_gbps=float(bandwidth) if bandwidth is not None else None,
        in_catalog=known is not None,
    )


def resolve_model(
    spec: ModelSpec, models: Mapping[str, ModelProfile]
) -> tuple[ModelProfile, ModelVariant]:
    """The model and its variant as the spec runs it: with the KV cache dtype it asks for
    (the state per step, and so memory and frame time, follow it)."""
    profile = models[spec.name]
    variant = profile.variants[spec.variant or profile.default_variant]
    return profile, variant.with_kv_cache(spec.kv_cache_dtype)


def _check_fits(gpu: Gpu, profile: ModelProfile, variant: ModelVariant, found: Density) -> None:
    what = f"{profile.name}/{variant.name}"
    if found.memory_limit == 0:
        need = (
            variant.weights_gib + variant.workspace_gib + gpu.overhead_gib + found.per_session_gib
        )
        raise PlanError(
            "gpu.product",
            f"{what} needs {need:.1f} GiB for one session (weights {variant.weights_gib:.1f}, "
            f"workspace {variant.workspace_gib:.1f}, overhead {gpu.overhead_gib:.1f}, session "
            f"{found.per_session_gib:.2f}) but {gpu.short_name} has {gpu.memory_gib:.1f} GiB: "
            "choose a GPU with more memory, an int8 variant, or a shorter "
            "sessions.maxSessionSeconds",
        )
    if found.compute_limit == 0:
        raise PlanError(
            "gpu.product",
            f"{gpu.short_name} cannot step {what} in real time: one session's step is "
            f"predicted above the {profile.frame_ms:.0f} ms frame; choose a GPU with more "
            "memory bandwidth",
        )


def _prices(spec: VoiceAgentPoolSpec, gpu: Gpu, table: PriceTable) -> tuple[float | None, ...]:
    listed = table.gpus.get(gpu.product, catalog.GpuPrice())
    pricing = spec.capacity.pricing
    on_demand = pricing.on_demand_per_gpu_hour
    spot = pricing.spot_per_gpu_hour
    return (
        on_demand if on_demand is not None else listed.on_demand_per_hour,
        spot if spot is not None else listed.spot_per_hour,
    )


CPU: Final = Gpu(
    product="cpu",
    short_name="CPU",
    memory_gib=0.0,
    overhead_gib=0.0,
    bandwidth_gbps=None,
    in_catalog=True,
)


def _on_cpu(variant: ModelVariant, policy_cap: int | None) -> Density:
    """A CPU model: its catalog's sessions per pod, or fewer by policy; no GPU memory."""
    slots = variant.cpu_sessions or 1
    by_policy = policy_cap is not None and policy_cap < slots
    return Density(
        sessions_per_pod=policy_cap if by_policy and policy_cap is not None else slots,
        limited_by=constants.LimitedBy.POLICY if by_policy else constants.LimitedBy.COMPUTE,
        memory_limit=slots,
        compute_limit=slots,
        per_session_gib=0.0,
        frame_ms_at_capacity=None,
    )


def plan(
    spec: VoiceAgentPoolSpec,
    tables: Catalog,
    prices: PriceTable | None = None,
    model: constants.DensityModel = constants.DensityModel.BATCHED,
) -> PlanStatus:
    """The plan for ``spec`` from the GPU, model and price ``tables``; ``prices`` (the
    pool's own table) replaces ``tables.prices``. ``model`` picks the density model."""
    profile, variant = resolve_model(spec.model, tables.models)
    gpu = CPU if profile.on_cpu else resolve_gpu(spec.gpu, tables)
    sessions = spec.sessions
    if profile.on_cpu:
        found = _on_cpu(variant, sessions.max_per_pod)
    elif model == constants.DensityModel.REPLICATED:
        found = density.replicated(gpu, profile, variant, sessions.max_session_seconds)
    else:
        found = density.batched(
            gpu, profile, variant, sessions.max_session_seconds, sessions.max_per_pod
        )
    if not profile.on_cpu:
        _check_fits(gpu, profile, variant, found)

    per_pod = found.sessions_per_pod
    capacity = spec.capacity
    pods = replicas.split(
        replicas.needed_pods(sessions.target, sessions.headroom_percent, per_pod),
        capacity.strategy,
        capacity.on_demand_base,
        capacity.spot_percentage,
    )
    pods = replicas.with_spot_surplus(pods, sessions.target, per_pod, spec.gpu.gpus_per_node)
    if pods.total > sessions.max_replicas:
        raise PlanError(
            "sessions.maxReplicas",
            f"a target of {sessions.target} sessions needs {pods.total} pods of {per_pod} "
            f"sessions (with {sessions.headroom_percent}% headroom and spot surplus) but "
            f"maxReplicas is {sessions.max_replicas}: raise sessions.maxReplicas or lower "
            "sessions.target",
        )

    # GPU-hour prices say nothing about a CPU pod: its cost is left out (null).
    on_demand_price, spot_price = (
        (None, None) if profile.on_cpu else _prices(spec, gpu, prices or tables.prices)
    )
    cost: float | None = 0.0
    for count, price in ((pods.on_demand, on_demand_price), (pods.spot, spot_price)):
        if count and price is None:
            cost = None
        elif cost is not None and count:
            cost += count * (price or 0.0)

    return PlanStatus(
        density=model,
        gpu=gpu.short_name,
        sessions_per_pod=per_pod,
        limited_by=found.limited_by,
        memory_limit=found.memory_limit,
        compute_limit=found.compute_limit,
        replicas=pods.total,
        on_demand_replicas=pods.on_demand,
        spot_replicas=pods.spot,
        session_capacity=pods.total * per_pod,
        cost_per_hour=round(cost, 4) if cost is not None else None,
        cost_per_session_hour=round(cost / sessions.target, 4)
        if cost is not None and sessions.target
        else None,
        per_session_gib=round(found.per_session_gib, 3),
        weights_gib=variant.weights_gib,
        frame_ms_at_capacity=round(found.frame_ms_at_capacity, 1)
        if found.frame_ms_at_capacity is not None
        else None,
        frame_budget_ms=profile.frame_ms,
        kv_cache_dtype=spec.model.kv_cache_dtype,
        estimate=not variant.measured or gpu.product != variant.compute.calibrated_on,
    )

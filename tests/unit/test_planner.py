"""The planner against the numbers measured on an H100 80GB (REFERENCE.md)."""

from __future__ import annotations

import pytest

from voicefleet import catalog, constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.catalog import GpuPrice, PriceTable
from voicefleet.operator.planner import PlanError, plan


def spec(**sections: dict[str, object]) -> VoiceAgentPoolSpec:
    return VoiceAgentPoolSpec.model_validate(sections)


def test_h100_240s_sessions_hold_40_per_pod_limited_by_memory() -> None:
    # Measured: 40 sessions at 3000-step context peak at 74.1 GiB; 48 run out of memory.
    result = plan(spec(sessions={"target": 200, "maxSessionSeconds": 240}), catalog.builtin())
    assert 39 <= result.sessions_per_pod <= 41
    assert result.limited_by == "memory"
    assert result.per_session_gib == pytest.approx(1.49, abs=0.01)
    assert result.weights_gib == pytest.approx(14.69)
    assert not result.estimate


def test_h100_120s_sessions_hold_about_80_per_pod() -> None:
    # Measured: 80 sessions at 1500-step context fit (74.8 GiB); 96 run out of memory.
    result = plan(spec(sessions={"target": 200, "maxSessionSeconds": 120}), catalog.builtin())
    assert 78 <= result.sessions_per_pod <= 82
    assert result.per_session_gib == pytest.approx(0.75, abs=0.01)


def test_predicted_frame_time_matches_measurement_at_40_sessions() -> None:
    # Measured p50 45.8 ms, p95 47.0 ms at 40 sessions; the planner predicts p95 with the
    # worst measured p95/p50 ratio, so it must be at or above the measured p95 and real-time.
    result = plan(spec(sessions={"target": 40, "maxSessionSeconds": 240}), catalog.builtin())
    assert result.frame_ms_at_capacity is not None
    assert 47.0 <= result.frame_ms_at_capacity < 80.0


def test_replicated_model_gives_the_seed_articles_3_to_4_sessions() -> None:
    result = plan(
        spec(sessions={"target": 200, "maxSessionSeconds": 240}),
        catalog.builtin(),
        model=constants.DensityModel.REPLICATED,
    )
    assert 3 <= result.sessions_per_pod <= 4
    assert result.density == "replicated"


def test_design_example_splits_2_on_demand_and_4_spot() -> None:
    result = plan(
        spec(
            sessions={"target": 200, "headroomPercent": 15},
            capacity={"strategy": "spot-first", "onDemandBase": 1, "spotPercentage": 80},
        ),
        catalog.builtin(),
    )
    # 200 x 1.15 = 230 sessions -> 6 pods of 40; base 1, 80% of the other 5 on spot.
    assert (result.replicas, result.on_demand_replicas, result.spot_replicas) == (6, 2, 4)
    assert result.session_capacity == 240
    assert result.cost_per_hour == pytest.approx(2 * 2.90 + 4 * 0.80)
    assert result.cost_per_session_hour == pytest.approx(9.0 / 200)


def test_spot_surplus_covers_the_loss_of_the_fullest_spot_node() -> None:
    # 8 GPUs per node: a spot node can hold all 5 spot pods. Without surplus, losing it
    # would leave 1 pod (40 sessions) for a 200 target.
    result = plan(
        spec(
            sessions={"target": 200, "headroomPercent": 0},
            capacity={"strategy": "spot-only"},
            gpu={"gpusPerNode": 8},
        ),
        catalog.builtin(),
    )
    lost = min(result.spot_replicas, 8)
    assert (result.replicas - lost) * result.sessions_per_pod >= 200
    assert result.spot_replicas == result.replicas


def test_policy_cap_limits_sessions_per_pod() -> None:
    result = plan(spec(sessions={"target": 100, "maxPerPod": 10}), catalog.builtin())
    assert (result.sessions_per_pod, result.limited_by) == (10, "policy")
    assert result.replicas == 12  # 115 sessions / 10


def test_slow_gpu_is_limited_by_compute_and_marked_estimate() -> None:
    # 120 s conversations: an L40S's memory holds twice what its bandwidth can step.
    result = plan(
        spec(gpu={"product": "NVIDIA-L40S"}, sessions={"target": 100, "maxSessionSeconds": 120}),
        catalog.builtin(),
    )
    assert result.limited_by == "compute"
    assert result.compute_limit is not None and result.compute_limit < result.memory_limit
    assert result.estimate


def test_gke_accelerator_alias_resolves_to_the_same_card() -> None:
    assert plan(spec(gpu={"product": "nvidia-h100-80gb"}), catalog.builtin()).gpu == "H100-80GB"


def test_unknown_gpu_without_memory_override_says_what_to_set() -> None:
    with pytest.raises(PlanError, match=r"gpu.memoryMiB") as err:
        plan(spec(gpu={"product": "NVIDIA-B200"}), catalog.builtin())
    assert err.value.field == "gpu.product"


def test_unknown_gpu_with_memory_override_is_planned_by_memory_only() -> None:
    result = plan(spec(gpu={"product": "NVIDIA-B200", "memoryMiB": 183_359}), catalog.builtin())
    assert result.compute_limit is None
    assert result.limited_by == "memory"
    assert result.cost_per_hour is None  # no price for an unknown card
    assert result.estimate


def test_model_larger_than_gpu_is_an_error_naming_the_fix() -> None:
    with pytest.raises(PlanError, match="int8 variant"):
        plan(spec(gpu={"product": "small-gpu", "memoryMiB": 16_384}), catalog.builtin())


def test_gpu_too_slow_for_real_time_is_an_error_naming_the_fix() -> None:
    # L4: the weights fit, but reading them once per frame at 300 GB/s leaves no real time.
    with pytest.raises(PlanError, match="more memory bandwidth"):
        plan(spec(gpu={"product": "NVIDIA-L4"}), catalog.builtin())


def test_target_above_max_replicas_is_an_error_naming_both_fields() -> None:
    with pytest.raises(PlanError, match=r"raise sessions.maxReplicas or lower sessions.target"):
        plan(spec(sessions={"target": 5000, "maxReplicas": 10}), catalog.builtin())


def test_gpu_auto_cannot_be_planned_offline() -> None:
    with pytest.raises(PlanError, match="resolved by the operator"):
        plan(spec(gpu={"product": "auto"}), catalog.builtin())


def test_spec_prices_win_over_the_table() -> None:
    table = PriceTable(gpus={"NVIDIA-H100-80GB-HBM3": GpuPrice(on_demand_per_hour=1.0)})
    result = plan(
        spec(sessions={"target": 40, "headroomPercent": 0}, capacity={"pricing": {}}),
        catalog.builtin(),
        table,
    )
    assert result.cost_per_hour == pytest.approx(1.0)
    result = plan(
        spec(
            sessions={"target": 40, "headroomPercent": 0},
            capacity={"pricing": {"onDemandPerGpuHour": 5.0}},
        ),
        catalog.builtin(),
        table,
    )
    assert result.cost_per_hour == pytest.approx(5.0)


def test_int8_fits_more_sessions_than_bf16() -> None:
    bf16 = plan(spec(model={"variant": "moshiko-bf16"}), catalog.builtin())
    int8 = plan(spec(model={"variant": "moshiko-int8"}), catalog.builtin())
    assert int8.memory_limit > bf16.memory_limit
    assert int8.estimate


def test_zero_target_runs_only_the_on_demand_base() -> None:
    result = plan(
        spec(sessions={"target": 0}, capacity={"strategy": "spot-first", "onDemandBase": 1}),
        catalog.builtin(),
    )
    assert (result.replicas, result.on_demand_replicas, result.spot_replicas) == (1, 1, 0)
    assert result.cost_per_session_hour is None


def test_an_fp8_kv_cache_halves_the_state_and_doubles_the_h100_density() -> None:
    # Measured on an H100 80GB through the server (bench/results/kv_fp8_h100.json): 72
    # conversations of 240 s with the fp8 cache, step p95 49.3 ms, 0 late frames; bf16 40.
    sessions: dict[str, object] = {"target": 200, "maxSessionSeconds": 240}
    bf16 = plan(spec(sessions=sessions), catalog.builtin())
    fp8 = plan(spec(model={"kvCacheDtype": "fp8"}, sessions=sessions), catalog.builtin())
    assert fp8.kv_cache_dtype == "fp8"
    assert bf16.kv_cache_dtype == "bf16"
    # 264 KiB a step instead of 512 (a float32 scale per 128-value head vector).
    kv_share = (fp8.per_session_gib - 0.025) / (bf16.per_session_gib - 0.025)
    assert kv_share == pytest.approx(132 / 256, abs=0.002)
    assert fp8.sessions_per_pod == 72
    assert fp8.limited_by == "memory"
    assert fp8.sessions_per_pod >= 1.8 * bf16.sessions_per_pod
    # The frame-time model reads half the bytes per session: a full fp8 pod is still
    # predicted real time, at or above the measured p95 (49.3 ms at 72).
    assert fp8.frame_ms_at_capacity is not None
    assert 49.3 <= fp8.frame_ms_at_capacity <= 70.0
    assert fp8.compute_limit is not None and bf16.compute_limit is not None
    assert fp8.compute_limit > 1.5 * bf16.compute_limit
    assert not fp8.estimate
    assert fp8.replicas < bf16.replicas


def test_an_fp8_kv_cache_applies_to_every_moshi_variant() -> None:
    sessions: dict[str, object] = {"target": 200, "maxSessionSeconds": 240}
    int8 = plan(spec(model={"variant": "moshiko-int8"}, sessions=sessions), catalog.builtin())
    int8_fp8 = plan(
        spec(model={"variant": "moshiko-int8", "kvCacheDtype": "fp8"}, sessions=sessions),
        catalog.builtin(),
    )
    assert int8_fp8.sessions_per_pod > int8.sessions_per_pod
    assert int8_fp8.estimate  # the int8 weights were never measured


def test_the_runtimes_replay_row_takes_one_sessions_memory() -> None:
    """Moshi pods keep one conversation's state more than their slots (the row a moved-in
    conversation is rebuilt on): the memory limit leaves it out."""
    builtin = catalog.builtin()
    moshi = builtin.models["moshi"]
    assert moshi.variants[moshi.default_variant].replay_rows == 1
    without_row = moshi.model_copy(
        update={
            "variants": {
                name: variant.model_copy(update={"replay_rows": 0})
                for name, variant in moshi.variants.items()
            }
        }
    )
    other = catalog.Catalog(
        gpus=builtin.gpus, models={**builtin.models, "moshi": without_row}, prices=builtin.prices
    )
    pool = spec(sessions={"target": 200, "maxSessionSeconds": 240})
    assert plan(pool, builtin).memory_limit == plan(pool, other).memory_limit - 1

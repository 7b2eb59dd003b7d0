"""Invariants of the planner over many random specs (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from voicefleet import catalog
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator.planner import PlanError, plan

specs = st.fixed_dictionaries(
    {
        "sessions": st.fixed_dictionaries(
            {
                "target": st.integers(0, 5000),
                "maxSessionSeconds": st.integers(10, 240),
                "headroomPercent": st.integers(0, 100),
                "maxReplicas": st.just(10_000),
            }
        ),
        "capacity": st.fixed_dictionaries(
            {
                "strategy": st.sampled_from(["on-demand", "spot-first", "spot-only"]),
                "spotPercentage": st.integers(0, 100),
            }
        ),
        "gpu": st.fixed_dictionaries(
            {
                "product": st.sampled_from(
                    ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H200", "NVIDIA-A100-SXM4-80GB"]
                ),
                "gpusPerNode": st.integers(1, 8),
            }
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(specs)
def test_capacity_covers_target_and_the_split_adds_up(raw: dict[str, dict[str, object]]) -> None:
    spec = VoiceAgentPoolSpec.model_validate(raw)
    result = plan(spec, catalog.builtin())
    target = spec.sessions.target
    assert result.session_capacity >= target * (100 + spec.sessions.headroom_percent) // 100
    assert result.spot_replicas + result.on_demand_replicas == result.replicas
    assert result.session_capacity == result.replicas * result.sessions_per_pod
    # Losing the fullest spot node never drops below the target.
    lost = min(result.spot_replicas, spec.gpu.gpus_per_node)
    assert (result.replicas - lost) * result.sessions_per_pod >= target
    if spec.capacity.strategy == "on-demand":
        assert result.spot_replicas == 0
    if spec.capacity.strategy == "spot-only":
        assert result.on_demand_replicas == 0


@settings(max_examples=200, deadline=None)
@given(
    st.integers(30_000, 400_000),
    st.integers(1_000, 100_000),
    st.integers(10, 240),
)
def test_more_gpu_memory_never_gives_fewer_sessions_per_pod(
    memory_mib: int, extra_mib: int, seconds: int
) -> None:
    def per_pod(mib: int) -> int:
        spec = VoiceAgentPoolSpec.model_validate(
            {
                "gpu": {"product": "test-gpu", "memoryMiB": mib, "memoryBandwidthGBps": 3350},
                "sessions": {"maxSessionSeconds": seconds},
            }
        )
        try:
            return plan(spec, catalog.builtin()).sessions_per_pod
        except PlanError:
            return 0

    assert per_pod(memory_mib + extra_mib) >= per_pod(memory_mib)


@settings(max_examples=100, deadline=None)
@given(st.integers(10, 239), st.integers(1, 100))
def test_shorter_sessions_never_give_fewer_sessions_per_pod(seconds: int, shorter: int) -> None:
    def per_pod(s: int) -> int:
        return plan(
            VoiceAgentPoolSpec.model_validate({"sessions": {"maxSessionSeconds": s}}),
            catalog.builtin(),
        ).sessions_per_pod

    assert per_pod(max(1, seconds - shorter)) >= per_pod(seconds)

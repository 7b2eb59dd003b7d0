"""Session-aware scaling decisions: scale-out, fewest-sessions-first scale-in, drains,
surge rollouts that never drop below the target, interruptions and spot fallback."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from voicefleet import constants
from voicefleet.operator import scaling
from voicefleet.operator.scaling import Desired, Inputs, PodView, decide
from voicefleet.rfc3339 import parse_time

OD = constants.CapacityType.ON_DEMAND
SPOT = constants.CapacityType.SPOT
NOW = 1_000_000.0


def pod(name: str, kind: str = OD, h: str = "h1", **kw: Any) -> PodView:
    base: dict[str, Any] = {
        "phase": "Running",
        "ip": "127.0.1.2",
        "ready": True,
        "node": "node-a",
        "created": NOW - 100,
        "sessions_active": 0,
    }
    base.update(kw)
    return PodView(name=name, capacity_type=kind, spec_hash=h, **base)


def inputs(pods: list[PodView], od: int = 0, spot: int = 0, **kw: Any) -> Inputs:
    desired = Desired({OD: od, SPOT: spot}, {OD: "h1", SPOT: "h1"})
    return Inputs(pods=pods, desired=desired, now=NOW, drain_seconds=60, **kw)


def test_scale_out_creates_every_missing_pod_at_once() -> None:
    actions = decide(inputs([pod("p0")], od=2, spot=3))
    assert Counter(actions.create) == {OD: 1, SPOT: 3}
    assert not actions.drain and not actions.delete


def test_steady_state_does_nothing() -> None:
    assert decide(inputs([pod("p0"), pod("p1", SPOT)], od=1, spot=1)).empty


def test_scale_in_drains_the_pods_with_fewest_sessions() -> None:
    pods = [
        pod("busy", sessions_active=30),
        pod("idle", sessions_active=0),
        pod("few", sessions_active=2),
    ]
    actions = decide(inputs(pods, od=1))
    assert sorted(d.pod.name for d in actions.drain) == ["few", "idle"]
    assert all(d.deadline_seconds == 60 for d in actions.drain)
    assert not actions.delete


def test_unknown_session_counts_are_drained_last() -> None:
    pods = [pod("silent", sessions_active=None), pod("known", sessions_active=5)]
    assert [d.pod.name for d in decide(inputs(pods, od=1)).drain] == ["known"]


def test_a_draining_pod_is_deleted_when_empty_or_past_its_deadline_only() -> None:
    empty = pod(
        "empty", draining=True, sessions_active=0, drain_deadline=NOW + 50, runtime_draining=True
    )
    busy = pod("busy", draining=True, sessions_active=3, drain_deadline=NOW + 50)
    late = pod("late", draining=True, sessions_active=3, drain_deadline=NOW - 1)
    silent = pod("silent", draining=True, sessions_active=None, drain_deadline=NOW + 50)
    keep = [pod(f"k{i}") for i in range(4)]
    actions = decide(inputs([empty, busy, late, silent, *keep], od=4))
    assert sorted(d.pod.name for d in actions.delete) == ["empty", "late"]
    assert not actions.create
    # Empty, but its runtime has not heard of the drain: told again, not deleted yet.
    unheard = replace(empty, name="unheard", runtime_draining=False)
    actions = decide(inputs([unheard, *keep], od=4, reports_fresh=True))
    assert not actions.delete
    assert [d.pod.name for d in actions.redrain] == ["unheard"]


def test_pending_pods_beyond_the_target_are_deleted_not_drained() -> None:
    pending = pod("pending", phase="Pending", ip=None, ready=False, created=NOW)
    actions = decide(inputs([pod("p0"), pending], od=1))
    assert [d.pod.name for d in actions.delete] == ["pending"]
    assert not actions.drain


def test_rollout_surges_then_drains_old_pods_only_as_new_ones_serve() -> None:
    old = [pod(f"old{i}", h="h0", sessions_active=i) for i in range(4)]
    first = decide(inputs(old, od=4))
    assert first.create == [OD]  # surge of 25% of 4 = 1, nothing drained yet
    assert not first.drain

    new_starting = pod("new0", ready=False, phase="Pending", ip=None)
    assert decide(inputs([*old, new_starting], od=4)).empty  # wait for it

    new_ready = pod("new0")
    second = decide(inputs([*old, new_ready], od=4))
    assert [d.pod.name for d in second.drain] == ["old0"]  # emptiest old pod


@given(
    st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 40)), max_size=12),
    st.integers(0, 10),
)
def test_never_drains_below_the_target(spec: list[tuple[bool, bool, int]], want: int) -> None:
    pods = [
        pod(f"p{i}", h="h1" if current else "h0", ready=ready, sessions_active=active)
        for i, (current, ready, active) in enumerate(spec)
    ]
    actions = decide(inputs(pods, od=want))
    retired = {d.pod.name for d in actions.drain} | {d.pod.name for d in actions.delete}
    serving_before = sum(1 for p in pods if p.serving)
    serving_after = sum(1 for p in pods if p.serving and p.name not in retired)
    assert serving_after >= min(want, serving_before)
    current = sum(1 for p in pods if p.spec_hash == "h1" and p.name not in retired)
    assert current + len(actions.create) >= want or len(pods) + len(actions.create) >= want


def test_interrupted_node_drains_its_pods_and_replaces_them_in_the_same_pass() -> None:
    pods = [pod("a0", SPOT, node="spot-1"), pod("a1", SPOT, node="spot-2")]
    actions = decide(inputs(pods, spot=2, interrupted={"spot-1": "taint karpenter.sh/disrupted"}))
    assert [(d.pod.name, d.reason) for d in actions.drain] == [
        ("a0", "taint karpenter.sh/disrupted")
    ]
    assert actions.create == [SPOT]


def test_pods_on_a_deleted_node_are_deleted_and_replaced() -> None:
    pods = [pod("a0", SPOT, node="gone"), pod("a1", SPOT, node="spot-2")]
    actions = decide(inputs(pods, spot=2, gone_nodes=frozenset({"gone"})))
    assert [d.pod.name for d in actions.delete] == ["a0"]
    assert actions.create == [SPOT]


def test_stuck_spot_pods_get_on_demand_stand_ins_and_back_to_spot() -> None:
    stuck = pod(
        "s0",
        SPOT,
        phase="Pending",
        ip=None,
        ready=False,
        node=None,
        unschedulable_since=NOW - 200,
        sessions_active=None,
    )
    actions = decide(inputs([pod("o0"), stuck], od=1, spot=1, spot_fallback_seconds=120))
    assert actions.spot_fallback == 1
    assert actions.create == [OD]
    assert not actions.delete  # the spot pod keeps waiting for capacity

    young = pod(
        "s0",
        SPOT,
        phase="Pending",
        ip=None,
        ready=False,
        node=None,
        unschedulable_since=NOW - 10,
        sessions_active=None,
    )
    assert decide(inputs([pod("o0"), young], od=1, spot=1, spot_fallback_seconds=120)).empty

    # Spot capacity came back: the stand-in is surplus and drains.
    back = decide(inputs([pod("o0"), pod("o1", sessions_active=3), pod("s0", SPOT)], od=1, spot=1))
    assert [d.pod.name for d in back.drain] == ["o0"]


def test_a_stand_in_stays_until_the_spot_pod_it_stands_in_for_serves() -> None:
    """Scheduled is not serving: weights take minutes to load. Going back to spot must not
    drop the pool's serving pods below the plan (issue 9, item 6)."""
    loading = pod("s0", SPOT, ready=False, sessions_active=None)  # scheduled, running, loading
    standing = [pod("o0"), pod("o1", sessions_active=3)]
    assert not decide(inputs([*standing, loading], od=1, spot=1)).drain
    served = decide(inputs([*standing, pod("s0", SPOT)], od=1, spot=1))
    assert [d.pod.name for d in served.drain] == ["o0"]


@given(
    st.lists(st.tuples(st.sampled_from([OD, SPOT]), st.booleans(), st.integers(0, 9)), max_size=10),
    st.integers(0, 4),
    st.integers(0, 4),
)
def test_the_pool_never_loses_serving_pods_below_the_plans_total(
    spec: list[tuple[str, bool, int]], od: int, spot: int
) -> None:
    pods = [
        pod(f"p{i}", kind, ready=ready, sessions_active=active)
        for i, (kind, ready, active) in enumerate(spec)
    ]
    actions = decide(inputs(pods, od=od, spot=spot))
    retired = {d.pod.name for d in actions.drain} | {d.pod.name for d in actions.delete}
    serving_before = sum(1 for p in pods if p.serving)
    serving_after = sum(1 for p in pods if p.serving and p.name not in retired)
    assert serving_after >= min(od + spot, serving_before)


def test_a_pending_pod_kept_off_a_node_that_recovered_is_remade() -> None:
    """Its required node affinity can never change (issue 9, item 5)."""
    stuck = pod(
        "s1",
        SPOT,
        phase="Pending",
        ip=None,
        ready=False,
        node=None,
        sessions_active=None,
        avoid_nodes=frozenset({"spot-1", "spot-2"}),
    )
    still = decide(
        inputs([pod("s0", SPOT), stuck], spot=2, interrupted={"spot-1": "x", "spot-2": "y"})
    )
    assert still.empty
    recovered = decide(inputs([pod("s0", SPOT), stuck], spot=2, interrupted={"spot-1": "x"}))
    assert [(d.pod.name, d.reason) for d in recovered.delete] == [("s1", scaling.REASON_PLACEMENT)]
    assert recovered.create == [SPOT]
    # Scheduled after all (the node it runs on is none it avoids): left alone.
    placed = replace(stuck, node="spot-3", phase="Running", ip="127.0.0.9")
    assert not decide(inputs([pod("s0", SPOT), placed], spot=2)).delete


def test_a_drain_the_runtime_has_not_acknowledged_is_repeated_on_polled_passes() -> None:
    """Level-triggered drains (issue 9, item 10): the mark is in place, the call was lost."""
    unheard = pod(
        "d0", draining=True, sessions_active=3, drain_deadline=NOW + 40.2, drain_reason="scale-in"
    )
    heard = replace(unheard, name="d1", runtime_draining=True)
    silent = replace(unheard, name="d2", sessions_active=None)
    keep = [pod("k0")]
    polled = decide(inputs([unheard, heard, silent, *keep], od=1, reports_fresh=True))
    assert [(d.pod.name, d.reason, d.deadline_seconds) for d in polled.redrain] == [
        ("d0", "scale-in", 41),
        ("d2", "scale-in", 41),
    ]
    # Without a fresh poll the reports may predate the call: no repeat.
    assert not decide(inputs([unheard, *keep], od=1)).redrain


def test_failed_pods_are_deleted_and_replaced() -> None:
    actions = decide(inputs([pod("f", phase="Failed", ready=False)], od=1))
    assert [d.pod.name for d in actions.delete] == ["f"]
    assert actions.create == [OD]


def test_from_body_reads_annotations_and_conditions() -> None:
    body = {
        "metadata": {
            "name": "x-0",
            "labels": {constants.LABEL_CAPACITY_TYPE: SPOT},
            "annotations": {
                constants.ANNOTATION_SPEC_HASH: "abc",
                constants.ANNOTATION_DRAINING: "true",
                constants.ANNOTATION_DRAIN_DEADLINE: "2026-11-25T22:00:00Z",
            },
            "creationTimestamp": "2026-11-25T21:00:00Z",
        },
        "spec": {"nodeName": "n1"},
        "status": {
            "phase": "Running",
            "podIP": "127.0.3.4",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    view = PodView.from_body(body)
    assert (view.capacity_type, view.spec_hash, view.node, view.ready) == (SPOT, "abc", "n1", True)
    assert view.draining and view.drain_deadline == parse_time("2026-11-25T22:00:00Z")


def test_free_ordinals_fill_gaps() -> None:
    assert scaling.free_ordinals({0, 2}, 3) == [1, 3, 4]

"""The chaos scenario of many pools: 50 small pools created at once beside the big one,
then deleted at once, each deletion timed."""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter

from e2e.chaos.context import Run
from e2e.chaos.report import Row
from e2e.chaos.settings import BURST_NODES, BURST_PREFIX, POOL, burst_spec, steady
from e2e.observe import PodSeen
from voicefleet import catalog
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator.planner import plan
from voicefleet.testing import polling


def pool_burst(run: Run) -> Row:
    count = run.settings.pools
    names = [f"{BURST_PREFIX}-{i:02d}" for i in range(count)]
    want = plan(VoiceAgentPoolSpec.model_validate(burst_spec()), catalog.builtin()).replicas
    added = run.changes.add_nodes(BURST_NODES)
    window = run.monitor.open(POOL, run.per_pod, steady(run.target))
    failures: list[str] = []
    try:
        created = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: run.changes.apply(n, burst_spec()), names))

        def running() -> bool:
            return all(sum(1 for p in run.monitor.pool_pods(n) if p.serving) == want for n in names)

        polling.wait_for(running, 180, f"{count} pools' pods to run")
        up = time.monotonic() - created
        pools = {
            str(b["metadata"]["name"]): str(b["metadata"]["uid"])
            for b in run.monitor.pools.copy().values()
            if str(b["metadata"]["name"]) in names
        }
        asked: dict[str, float] = {}

        def delete(name: str) -> None:
            asked[name] = time.monotonic()
            run.changes.delete_pool(name)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(delete, names))
        polling.wait_for(
            lambda: all(run.view.deleted(uid) is not None for uid in pools.values()),
            120,
            f"{count} pools and their pods to go",
        )
        took = {n: (run.view.deleted(uid) or 0.0) - asked[n] for n, uid in pools.items()}
        pool_gone = max(run.monitor.pool_gone[uid] - asked[n] for n, uid in pools.items())
        polling.wait_for(
            lambda: not any(p.pool in names for p in run.monitor.pods.copy().values()),
            120,
            "the pools' pods to be gone",
        )
    finally:
        run.changes.remove_nodes(added)
    slowest = max(took.values())
    limit = run.settings.delete_limit_seconds
    if slowest > limit:
        late = sorted(n for n, s in took.items() if s > limit)
        failures.append(f"deletions over {limit:.0f} s: {late}")
    seen = run.monitor.names.copy()
    made = Counter(p.pool for p in seen.values() if p.pool in names)
    extra = sorted(n for n in names if made[n] != want)
    if extra:
        failures.append(
            f"pools with other than {want} pods ever: "
            + "; ".join(f"{n}: {_pods_ever(seen, run, n, asked.get(n))}" for n in extra)
        )
    row = run.row(
        "50 pools created and deleted",
        f"{count} pools created at once (all pods running after {up:.0f} s), then deleted "
        f"at once; the {run.target}-session pool beside them untouched",
        window,
        failures,
    )
    row.pods_max += sum(made.values())
    row.pods_expected += want * count
    row.deletion_max_seconds = slowest
    row.notes.append(
        f"pods max/expected: the big pool's plus every pod the {count} pools ever had; "
        f"deletion: delete call -> pool gone (<= {pool_gone:.1f} s) and its pods "
        "terminating or gone"
    )
    return row


def _pods_ever(seen: dict[str, PodSeen], run: Run, pool: str, delete_asked: float | None) -> str:
    """Each pod the pool ever had, with when the watch first saw it against the pool's
    delete call: which side of the deletion a pod too many came from."""
    pods = sorted(
        ((run.monitor.first_seen.get(uid, 0.0), p) for uid, p in seen.items()),
        key=lambda item: item[0],
    )
    out = []
    for first, pod in pods:
        if pod.pool != pool:
            continue
        when = (
            "" if delete_asked is None else f", seen {first - delete_asked:+.1f} s from its delete"
        )
        out.append(f"{pod.name} (uid {pod.uid[:8]}, owner {pod.owner[:8]}{when})")
    return ", ".join(out)

"""Operator benchmark in the sandbox: reconcile latency and interruption reaction time with
many pools over many fake GPU nodes, and the operator's memory. Its pod watch is
``bench/scale_watch.py``, its numbers and table ``bench/scale_report.py``.

What it does, in order:

1. starts a sandbox of its own (etcd, kube-apiserver, controller manager, scheduler, kwok)
   and adds ``--nodes`` fake 8-GPU H100 nodes (half on-demand, half spot), each
   with a pod CIDR in 127.0.0.0/8;
2. runs ``voicefleet operator run`` as its own ServiceAccount (the generated RBAC);
3. creates ``--pools`` spot-first pools in a burst and measures, per pool, the time from
   the create call to all its planned pods existing (seen on a pod watch); then, with all
   of those running, applies ``--single`` more pools one at a time and measures the same;
4. taints ``--interruptions`` nodes one after another with ``karpenter.sh/disrupted`` and
   measures the time from the taint to every pool pod there being marked draining and to
   every affected pool having its replacements created; the operator's own histogram
   (signal seen -> drain calls made and replacements created) is reported beside it;
5. reads the operator's resident memory (current and peak).

Nothing answers on the fake pods' IPs, so each drain call fails fast (connection refused)
as it would against a pod whose process died; the operator records it and moves on.

Usage, from the repository root (it runs the operator with voicefleet.testing's harness):
``python -m bench.operator_scale [--pools 100] [--nodes 1000]
[--interruptions 30] [--out results.json]``. Prints one table.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import platform
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from bench.scale_report import cores, histogram_mean, memory_kib, print_table
from bench.scale_watch import PodWatch, timed
from voicefleet import catalog, constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator.planner import plan
from voicefleet.sandbox import manager, nodes
from voicefleet.sandbox.state import Sandbox
from voicefleet.testing import polling
from voicefleet.testing.kube_admin import apply_manifest, install_rbac, service_account_kubeconfig
from voicefleet.testing.operators import Operator
from voicefleet.testing.polling import wait_for

ROOT = Path(__file__).resolve().parents[1]
SIGNAL_TAINT = "karpenter.sh/disrupted"
POOL_SPEC: dict[str, Any] = {
    "sessions": {"target": 100},
    "capacity": {"strategy": "spot-first", "onDemandBase": 1, "spotPercentage": 75},
}


def bench_nodes(count: int, taken: str) -> list[dict[str, Any]]:
    """``count`` 8-GPU nodes, pod CIDRs in 127.0.0.0/8 away from the sandbox's own /16."""
    taken_octet = int(str(ipaddress.ip_network(taken).network_address).split(".")[1])
    octets = [o for o in range(200, 255) if o != taken_octet]
    out = []
    for i in range(count):
        kind = constants.CapacityType.ON_DEMAND if i % 2 == 0 else constants.CapacityType.SPOT
        group = nodes.NodeGroup(count=1, capacity_type=kind)
        cidr = f"127.{octets[i // 250]}.{i % 250}.0/24"
        fake = nodes.FakeNode(f"bench-{kind}-{i}", group, cidr)
        out.append(nodes.node_manifest(fake))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--interruptions", type=int, default=30)
    parser.add_argument("--single", type=int, default=20, help="pools applied one at a time")
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vf-operator-bench-"))
    started = time.monotonic()
    sandbox = manager.up(work / "sandbox", log=lambda line: print(f"[sandbox] {line}", flush=True))
    try:
        results = run(args, sandbox, work)
    finally:
        manager.down(work / "sandbox", log=lambda _line: None)
    results["wallSeconds"] = round(time.monotonic() - started, 1)
    print_table(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


def run(args: argparse.Namespace, sandbox: Sandbox, work: Path) -> dict[str, Any]:
    api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    core = client.CoreV1Api(api)
    print(f"[bench] creating {args.nodes} nodes", flush=True)
    admin = sandbox.client()
    for manifest in bench_nodes(args.nodes, sandbox.pod_network):
        admin.request("POST", "/api/v1/nodes", manifest)
    wait_for(
        lambda: (
            sum(
                1
                for n in core.list_node().items
                if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            )
            >= args.nodes
        ),
        timeout=600,
        what="the nodes to be Ready",
    )
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                apply_manifest(api, document)
    extensions = client.ApiextensionsV1Api(api)
    wait_for(
        lambda: all(
            any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
            for crd in extensions.list_custom_resource_definition().items
        ),
        timeout=60,
        what="CRDs",
    )
    install_rbac(api)
    kubeconfig = service_account_kubeconfig(sandbox.kubeconfig, api, work / "operator.kubeconfig")
    operator = Operator(kubeconfig, work)
    operator.start("--poll-interval", str(args.poll_interval), "--log-format", "json")

    pods = PodWatch()
    watcher = threading.Thread(target=pods.run, args=(core,), daemon=True)
    watcher.start()
    try:
        return measure(args, api, core, operator, pods)
    finally:
        pods.stop.set()
        operator.stop()


def measure(
    args: argparse.Namespace,
    api: client.ApiClient,
    core: client.CoreV1Api,
    operator: Operator,
    pods: PodWatch,
) -> dict[str, Any]:
    assert operator.process is not None
    pid = operator.process.pid
    replicas = plan(VoiceAgentPoolSpec.model_validate(POOL_SPEC), catalog.builtin()).replicas
    namespaces = [f"bench-{i}" for i in range(args.namespaces)]
    for ns in namespaces:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    objects = client.CustomObjectsApi(api)
    pools = [(namespaces[i % len(namespaces)], f"pool-{i}") for i in range(args.pools)]
    created: dict[tuple[str, str], float] = {}
    done: dict[tuple[str, str], float] = {}

    def all_created() -> bool:
        now = time.monotonic()
        live: dict[tuple[str, str], int] = {}
        for (ns, _name), seen in pods.snapshot().items():
            if not seen.draining and not seen.deleting:
                live[(ns, seen.pool)] = live.get((ns, seen.pool), 0) + 1
        for key in created:
            if key not in done and live.get(key, 0) >= replicas:
                done[key] = now
        return len(done) == len(pools)

    print(f"[bench] creating {args.pools} pools of {replicas} pods", flush=True)
    checker_stop = threading.Event()

    def check() -> None:
        polling.poll(lambda: checker_stop.is_set() or all_created(), math.inf, 0.02)

    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    for ns, name in pools:
        created[(ns, name)] = time.monotonic()
        objects.create_namespaced_custom_object(
            constants.GROUP, constants.VERSION, ns, constants.PLURAL, pool_body(ns, name)
        )
    checker.join(timeout=300)
    checker_stop.set()
    reconcile = [done[k] - created[k] for k in created if k in done]

    # Let scheduling and kwok settle before the interruptions.
    try:
        wait_for(
            lambda: all(p.node for p in pods.snapshot().values()), timeout=120, what="scheduling"
        )
    except Exception:
        pending = [k for k, p in pods.snapshot().items() if not p.node]
        print(f"[bench] {len(pending)} pods not scheduled: {pending[:10]}", flush=True)
        for ns, name in pending[:3]:
            pod = core.read_namespaced_pod(name, ns)
            print(f"[bench] {name}: {pod.status.conditions}", flush=True)
        raise
    time.sleep(args.poll_interval)

    single = apply_one_by_one(args, objects, pods, replicas)
    drained_after, replaced_after = interrupt(args, core, pods, replicas)
    metrics_text = operator.metrics()
    own_mean, own_count = histogram_mean(
        metrics_text, f"{constants.OPERATOR_METRIC_PREFIX}interruption_reaction_seconds"
    )
    reconcile_mean, _ = histogram_mean(
        metrics_text.replace('{trigger="create"}', ""),
        f"{constants.OPERATOR_METRIC_PREFIX}reconcile_duration_seconds",
    )
    api_mean, api_count = histogram_mean(
        metrics_text.replace('{verb="GET"}', ""),
        f"{constants.OPERATOR_METRIC_PREFIX}api_request_duration_seconds",
    )
    memory = memory_kib(pid)
    return {
        "machine": f"{platform.node()} {platform.machine()}, {cores()} cores, 2-core polyglot",
        "pools": args.pools,
        "nodes": len(core.list_node().items),
        "podsPerPool": replicas,
        "pollIntervalSeconds": args.poll_interval,
        "reconcileSeconds": reconcile,
        "singleReconcileSeconds": single,
        "drainMarkedSeconds": drained_after,
        "replacedSeconds": replaced_after,
        "operatorReactionMeanSeconds": own_mean,
        "operatorReactionCount": own_count,
        "operatorCreateReconcileMeanSeconds": reconcile_mean,
        "operatorApiGetMeanSeconds": api_mean,
        "operatorApiGets": api_count,
        "operatorRssMiB": round(memory.get("VmRSS", 0) / 1024, 1),
        "operatorPeakRssMiB": round(memory.get("VmHWM", 0) / 1024, 1),
    }


def pool_body(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": POOL_SPEC,
    }


def pool_complete(pods: PodWatch, namespace: str, name: str, replicas: int) -> bool:
    return pods.live(namespace, name) >= replicas


def apply_one_by_one(
    args: argparse.Namespace, objects: client.CustomObjectsApi, pods: PodWatch, replicas: int
) -> list[float]:
    """With every other pool running: one more pool at a time, create -> all pods exist."""
    print(f"[bench] {args.single} pools one at a time", flush=True)
    out = []
    for i in range(args.single):
        name = f"single-{i}"
        started = time.monotonic()
        objects.create_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            "bench-0",
            constants.PLURAL,
            pool_body("bench-0", name),
        )
        timed(partial(pool_complete, pods, "bench-0", name, replicas), 60)
        out.append(time.monotonic() - started)
        time.sleep(0.3)
    return out


def interrupt(
    args: argparse.Namespace, core: client.CoreV1Api, pods: PodWatch, replicas: int
) -> tuple[list[float], list[float]]:
    """Taint nodes one at a time; seconds until marked draining and until replaced."""
    print(f"[bench] {args.interruptions} interruptions", flush=True)
    drained_after: list[float] = []
    replaced_after: list[float] = []
    tainted: set[str] = set()
    for _ in range(args.interruptions):
        by_node: dict[str, list[tuple[str, str]]] = {}
        for key, seen in pods.snapshot().items():
            if seen.node and not seen.draining and not seen.deleting:
                by_node.setdefault(seen.node, []).append(key)
        candidates = [n for n in sorted(by_node) if n not in tainted]
        if not candidates:
            break
        node = candidates[0]
        victims = by_node[node]
        affected = {(ns, pods.snapshot()[(ns, name)].pool) for ns, name in victims}
        tainted.add(node)
        t0 = time.monotonic()
        core.patch_node(node, {"spec": {"taints": [{"key": SIGNAL_TAINT, "effect": "NoSchedule"}]}})

        def marked(victims: list[tuple[str, str]] = victims) -> bool:
            snap = pods.snapshot()
            return all(k not in snap or snap[k].draining or snap[k].deleting for k in victims)

        def replaced(affected: set[tuple[str, str]] = affected) -> bool:
            return all(pods.live(ns, pool) >= replicas for ns, pool in affected)

        timed(marked, 30)
        drained_after.append(time.monotonic() - t0)
        timed(replaced, 30)
        replaced_after.append(time.monotonic() - t0)
        # Pacing, not a wait: one interruption at a time, so the next one's reaction is
        # not measured while the operator still settles the last.
        time.sleep(0.5)

    return drained_after, replaced_after


if __name__ == "__main__":
    main()

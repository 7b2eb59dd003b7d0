"""The demo: voicefleet end to end on this machine, no GPU, no cloud, no cluster needed.

1. plan a 200-conversation Moshi pool (batched beside one-model-per-session serving);
2. start the sandbox (a real kube-apiserver with fake GPU nodes, built from Go modules);
3. helm install the chart and run the operator as the chart's ServiceAccount;
4. apply the pool and show ``kubectl get vap,pods -o wide``;
5. an interruption drill on two spot nodes, with real runtimes and live conversations;
6. when the images are built (scripts/build-images.sh) and this is a Debian machine with
   containerd: the same on real pods, on the sandbox's real node (the operator from its
   image, a tiny pool without a GPU, a conversation through the pool's Service, the node
   interrupted);
7. tear everything down.

Run it with ``scripts/demo.sh`` (which sets up the environment first) or
``python -m e2e.demo``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client, config

from e2e import drill, fleet, realpods
from voicefleet import constants, image_store
from voicefleet.sandbox import binaries, manager, node_host, node_images
from voicefleet.testing import kube_admin, polling

POOL_FILE = fleet.REPO / "examples" / "support-en.yaml"
NAMESPACE = "voice"
POOL = "support-en"
DRILL_NODES = 2


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    started = time.monotonic()
    step(f"voicefleet plan -f {POOL_FILE.relative_to(fleet.REPO)} --compare")
    subprocess.run(
        [sys.executable, "-m", "voicefleet", "plan", "-f", str(POOL_FILE), "--compare"],
        check=True,
    )

    step("sandbox binaries (built from Go modules on first use, ~12 min on 2 cores)")
    tools = binaries.resolve([*binaries.CONTROL_PLANE, "kubectl", "helm"], log=print)

    with tempfile.TemporaryDirectory(prefix="voicefleet-demo-") as scratch:
        work = Path(scratch)
        step("sandbox up: etcd, kube-apiserver, controller-manager, scheduler, kwok")
        running = manager.up(work / "sandbox", fleet.E2E_NODES, log=print, tie_to_caller=True)
        try:
            _on_cluster(running.kubeconfig, str(tools["kubectl"]), str(tools["helm"]), work)
        finally:
            step("tear down")
            manager.down(work / "sandbox", log=print)
        _on_real_node(work, str(tools["kubectl"]), str(tools["helm"]))
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    return 0


def _on_cluster(kubeconfig: Path, kubectl: str, helm: str, work: Path) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    cluster = fleet.Cluster(kubeconfig, kubectl, helm, api)

    step("helm install voicefleet charts/voicefleet -n voicefleet-system")
    print(fleet.install_chart(cluster).split("NOTES:")[0].strip())

    step("the operator's replicas, as the chart's ServiceAccount (kwok runs no containers)")
    runtimes = fleet.Runtimes(work)
    callers = fleet.Callers()
    with fleet.operators_running(cluster, work) as replicas:
        leader = replicas.leader()
        print(
            f"{len(replicas.operators)} replicas with the chart's arguments; {leader.name} leads "
            f"(metrics on http://127.0.0.1:{leader.metrics_port}/metrics), the others stand by"
        )

        step(f"kubectl apply -f {POOL_FILE.relative_to(fleet.REPO)}")
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
        )
        print(cluster.kubectl_run("apply", "-f", str(POOL_FILE)).strip())
        waited = time.monotonic()
        fleet.wait_ready(cluster, NAMESPACE, POOL)
        print(f"{POOL} Ready after {time.monotonic() - waited:.1f} s")

        step("kubectl get vap,pods -o wide")
        print(cluster.kubectl_run("get", "vap,pods", "-o", "wide", f"-n={NAMESPACE}").rstrip())

        step(f"interruption drill: {DRILL_NODES} spot nodes, one cloud signal each")
        try:
            steps = _drill(cluster, runtimes, callers)
        finally:
            runtimes.stop()
            callers.close()
        print(drill.drill_table(steps))
        print("\nafter the drill:")
        print(cluster.kubectl_run("get", "vap", f"-n={NAMESPACE}").rstrip())


def _drill(
    cluster: fleet.Cluster, runtimes: fleet.Runtimes, callers: fleet.Callers
) -> list[drill.DrillStep]:
    token = kube_admin.pool_token(cluster.api, NAMESPACE, POOL)
    spot = [
        p
        for p in fleet.serving_pods(cluster, NAMESPACE, POOL)
        if p.metadata.labels[constants.LABEL_CAPACITY_TYPE] == constants.CapacityType.SPOT
    ]
    steps = []
    nodes = sorted({p.spec.node_name for p in spot})[:DRILL_NODES]
    for node, signal in zip(nodes, drill.DRILL_SIGNALS, strict=False):
        on_node = [p for p in spot if p.spec.node_name == node]
        print(f"{node}: starting a tiny runtime and a live conversation on {len(on_node)} pod(s)")
        for pod in on_node:
            runtimes.start(pod, token)
        runtimes.wait_serving()
        for pod in on_node:
            callers.call(pod.status.pod_ip)
        # An empty pod is deleted at once, not drained: signal once the operator saw them.
        live = len(on_node)
        polling.wait_for(
            lambda live=live: (  # type: ignore[misc]
                kube_admin.get_pool(cluster.api, NAMESPACE, POOL)["status"]["sessions"]["active"]
                >= live
            ),
            30,
            "the operator to see the live conversations",
        )
        print(f"{node}: {signal[0]}")
        steps.append(
            drill.interrupt_node(
                cluster, NAMESPACE, POOL, node=node, signal=signal, callers=callers
            )
        )
        runtimes.stop()
    return steps


def _on_real_node(work: Path, kubectl: str, helm: str) -> None:
    built = {
        oci.name for oci, _tag, _digest in node_images.layout_images(image_store.default_out())
    }
    missing = node_host.missing_tools()
    if missing or not {"operator", "runtime"} <= built:
        step("real pods: skipped")
        print(
            f"needs {', '.join(missing) or 'the images'}: scripts/setup-host.sh, then "
            "scripts/build-images.sh --base debian"
        )
        return
    step("sandbox up --real-node: a kubelet with containerd and runc, in a network namespace")
    state = work / "real"
    running = manager.up(state, (), log=print, tie_to_caller=True, real_node=True)
    callers = fleet.Callers(netns_name=running.real_node_netns)
    try:
        api = config.new_client_from_config(config_file=str(running.kubeconfig))
        cluster = fleet.Cluster(running.kubeconfig, kubectl, helm, api)
        step("helm install: the operator runs from its image, in a restricted namespace")
        pod = realpods.install_operator(cluster)
        print(f"{pod.metadata.name} leads, on {pod.spec.node_name}")
        step("a tiny pool (the toy model on the CPU, no GPU), real runtime pods")
        realpods.apply_pool(cluster)
        print(cluster.kubectl_run("get", "vap,pods", "-o", "wide", f"-n={realpods.APPS}").rstrip())
        service = client.CoreV1Api(api).read_namespaced_service(realpods.POOL, realpods.APPS)
        callers.call(service.spec.cluster_ip)
        print(f"a live conversation through Service {realpods.POOL} ({service.spec.cluster_ip})")
        step("the real node gets Karpenter's disrupted taint")
        drill = realpods.interrupt(cluster, running, callers)
        print(
            f"drain notice on the live conversation after {drill.notice_seconds * 1000:.0f} ms, "
            f"a replacement serving after {drill.replaced_seconds:.1f} s"
        )
        for name, ended in sorted(drill.ended.items()):
            print(f"{name}: preStop ran, exit code {ended.exit_code}, before its grace period")
    finally:
        callers.close()
        step("tear down the real node")
        manager.down(state, log=print)


if __name__ == "__main__":
    sys.exit(main())

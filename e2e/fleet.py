"""A whole voicefleet installation on a real control plane, step by step, for the end-to-end
suite and the demo: install the chart, run the operator as the chart's ServiceAccount, apply
pools, stand real runtime processes in for the GPU pods, hold live conversations on them
(the interruption drill that uses them is ``e2e/drill.py``).

No pytest here: ``e2e/test_fleet.py`` asserts on what these steps return, ``e2e/demo.py``
prints it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from kubernetes import client

from voicefleet import constants
from voicefleet.constants import CapacityType
from voicefleet.sandbox import netns
from voicefleet.sandbox.nodes import NodeGroup
from voicefleet.testing import kube_admin
from voicefleet.testing.kube_admin import service_account_kubeconfig
from voicefleet.testing.operators import Replicas, chart_replicas
from voicefleet.testing.polling import wait_for

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "voicefleet"
# Release "voicefleet" makes the chart's names the operator's defaults
# (ServiceAccount and ClusterRole "voicefleet-operator").
RELEASE = "voicefleet"
OPERATOR_NAMESPACE = "voicefleet-system"
Log = Callable[[str], None]

# The cluster the suite and the demo run on: on-demand nodes of 8 GPUs and spot nodes of one
# GPU each, as many small spot instances are, so the examples' `gpu.gpusPerNode: 1` describes
# it and the planner's spot surplus holds exactly. The drill's pool has 4 spot pods, the
# scaled example up to 5, and every interrupted pod needs a replacement: 16 spot nodes.
E2E_NODES = (
    NodeGroup(count=2, capacity_type=CapacityType.ON_DEMAND, gpus=8),
    NodeGroup(count=16, capacity_type=CapacityType.SPOT, gpus=1),
    NodeGroup(count=1, capacity_type=CapacityType.ON_DEMAND, gpus=0, cpu=16, memory_gib=64),
)


class FleetError(RuntimeError):
    """A step of the installation failed; the message says which and shows its output."""


def run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise FleetError(f"{' '.join(argv[:3])} ... failed:\n{done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class Cluster:
    """How to reach the cluster: admin kubeconfig, kubectl and helm binaries."""

    kubeconfig: Path
    kubectl: str
    helm: str
    api: client.ApiClient

    def kubectl_run(self, *args: str, stdin: str | None = None) -> str:
        return run([self.kubectl, f"--kubeconfig={self.kubeconfig}", *args], stdin=stdin)

    def helm_run(self, *args: str) -> str:
        return run([self.helm, f"--kubeconfig={self.kubeconfig}", *args], timeout=300)


def install_chart(cluster: Cluster, values: Sequence[str] = ()) -> str:
    """``helm install`` the chart (CRDs, RBAC, operator Deployment); returns NOTES.txt.
    ``values``: ``--set`` settings (``key=value``)."""
    return cluster.helm_run(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        f"--namespace={OPERATOR_NAMESPACE}",
        "--create-namespace",
        "--wait=false",
        *(f"--set={v}" for v in values),
    )


def uninstall_chart(cluster: Cluster) -> str:
    return cluster.helm_run("uninstall", RELEASE, f"--namespace={OPERATOR_NAMESPACE}")


def start_operators(
    cluster: Cluster, workdir: Path, *, release: str = RELEASE, namespace: str = OPERATOR_NAMESPACE
) -> Replicas:
    """The installed chart's operator replicas, as local processes: as many as its Deployment
    asks for, each started with the Deployment's own arguments (as the kubelet would start
    it in a pod of that name) and authenticated as the chart's ServiceAccount. Returns once
    one of them leads.

    The chart's Deployment runs on a fake node (kwok runs no containers), so its replicas run
    here, with exactly the chart's arguments and RBAC and nothing more.
    """
    apps = client.AppsV1Api(cluster.api)
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    (deployment,) = apps.list_namespaced_deployment(namespace, label_selector=selector).items
    kubeconfig = service_account_kubeconfig(
        cluster.kubeconfig,
        cluster.api,
        workdir / f"{release}-operator.kubeconfig",
        account=deployment.spec.template.spec.service_account_name,
        namespace=namespace,
    )
    replicas = chart_replicas(kubeconfig, workdir, deployment)
    try:
        replicas.start()
        replicas.leader()
    except BaseException:
        replicas.stop()
        raise
    return replicas


# --- pools --------------------------------------------------------------------------------


def serving_pods(cluster: Cluster, namespace: str, pool: str) -> list[client.V1Pod]:
    """Ready pods that take new conversations (not draining)."""
    pods = kube_admin.pool_pods(cluster.api, namespace, pool)
    return [p for p in pods if kube_admin.is_ready(p) and not kube_admin.draining(p)]


def wait_ready(cluster: Cluster, namespace: str, pool: str, timeout: float = 90) -> None:
    """``kubectl wait --for=condition=Ready``, as a user would."""
    cluster.kubectl_run(
        "wait",
        f"--namespace={namespace}",
        "--for=condition=Ready",
        f"--timeout={int(timeout)}s",
        f"{constants.SINGULAR}/{pool}",
    )


# --- real runtimes standing in for GPU pods -------------------------------------------------


@dataclass
class Runtimes:
    """``voicefleet runtime serve --backend tiny`` processes bound to pods' IPs."""

    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self, pod: client.V1Pod, token: str, slots: int = 2, session_seconds: int = 240
    ) -> None:
        """A tiny-model runtime on the pod's IP.

        Few slots and one thread: every slot steps every 80 ms on the CPU, and the control
        plane shares these two cores; the pod's plan, not this stand-in, sets its capacity.
        """
        ip = pod.status.pod_ip
        if not ip or not ip.startswith("127."):
            raise FleetError(f"pod {pod.metadata.name} has no loopback IP ({ip}): not a sandbox?")
        log = (self.log_dir / f"runtime-{pod.metadata.name}.log").open("wb")
        argv = [
            sys.executable, "-m", "voicefleet", "runtime", "serve", "--backend", "tiny",
            "--host", ip, "--port", str(constants.RUNTIME_PORT), "--max-sessions", str(slots),
            "--codec-workers", "0", "--max-session-seconds", str(session_seconds),
        ]  # fmt: skip
        env = {**os.environ, constants.ENV_POOL_TOKEN: token, "OMP_NUM_THREADS": "1"}
        self.processes[ip] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_serving(self, timeout: float = 120, only: Sequence[str] = ()) -> None:
        """Until each runtime (``only`` those at these IPs) is ready: loaded, a slot free."""
        for ip, process in self.processes.items():
            if only and ip not in only:
                continue

            def up(ip: str = ip, process: subprocess.Popen[bytes] = process) -> bool:
                if process.poll() is not None:
                    raise FleetError(f"the runtime on {ip} exited ({process.returncode})")
                return _http_ok(f"http://{ip}:{constants.RUNTIME_PORT}{constants.PATH_READYZ}")

            wait_for(up, timeout, f"the runtime on {ip}")

    def stop(self) -> None:
        """Stops every runtime (they drain on SIGTERM and exit once empty)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


def _http_ok(url: str) -> bool:
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Callers:
    """Live PCM conversations, one per runtime, that note when a drain notice reaches them.

    They run on an event loop in a thread of their own, so the drill's polling never delays
    a notice and a notice never delays the polling.
    """

    def __init__(self, netns_name: str | None = None) -> None:
        """``netns_name``: the real node's network namespace, where pod and Service
        addresses live; the loop's thread enters it, so every socket it opens is there."""
        self.notices: dict[str, float] = {}  # pod IP -> time.monotonic() of the notice
        self.connected: set[str] = set()
        self.open: collections.Counter[str] = collections.Counter()  # live calls per address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(netns_name,), daemon=True)
        self._thread.start()
        self._calls: list[concurrent.futures.Future[None]] = []

    def _run(self, netns_name: str | None) -> None:
        if netns_name is not None:
            netns.enter(netns_name)
        self._loop.run_forever()

    def call(self, ip: str) -> None:
        before = self.open[ip]
        future = asyncio.run_coroutine_threadsafe(self._converse(ip), self._loop)
        self._calls.append(future)
        wait_for(lambda: self.open[ip] > before, 30, f"a conversation on {ip}")

    async def _converse(self, ip: str) -> None:
        url = f"ws://{ip}:{constants.RUNTIME_PORT}{constants.PATH_PCM}?rate=16000"
        silence = bytes(2 * 1280)  # 80 ms of 16 kHz PCM16
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            self.connected.add(ip)
            self.open[ip] += 1
            sender = asyncio.create_task(self._speak(ws, silence))
            try:
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    if json.loads(message.data).get("type") == "drain":
                        self.notices[ip] = time.monotonic()
                        # A real caller reconnects elsewhere; this one hangs up, which lets
                        # the operator delete the emptied pod before the drain deadline.
                        break
            finally:
                self.open[ip] -= 1
                sender.cancel()

    @staticmethod
    async def _speak(ws: aiohttp.ClientWebSocketResponse, frame: bytes) -> None:
        while not ws.closed:
            await ws.send_bytes(frame)
            # Pacing, not a wait: one 80 ms frame per 80 ms, as a live caller speaks.
            await asyncio.sleep(0.08)

    def close(self) -> None:
        for call in self._calls:
            call.cancel()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


@contextmanager
def operators_running(cluster: Cluster, workdir: Path) -> Iterator[Replicas]:
    replicas = start_operators(cluster, workdir)
    try:
        yield replicas
    finally:
        replicas.stop()

"""Running the operator as a real process under its own ServiceAccount, for the tests and
the benchmark (``bench/operator_scale.py``): no pytest here, so both can use it."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, dynamic

from tests.polling import poll
from voicefleet import constants
from voicefleet.operator import rbac
from voicefleet.rfc3339 import format_time
from voicefleet.sandbox import binaries
from voicefleet.sandbox.nodes import KWOK_NODE_ANNOTATION, KWOK_NODE_VALUE

CHART = Path(__file__).resolve().parents[2] / "charts" / "voicefleet"
OPERATOR_NAMESPACE = "voicefleet-system"
FIELD_MANAGER = "voicefleet-tests"
# Fast enough for tests: drains progress and spot fallback within seconds.
POLL_SECONDS = 1.0
SPOT_FALLBACK_SECONDS = 4.0
# Short, so a NotReady node is judged within a test; blips in the tests stay well below it.
NOT_READY_GRACE_SECONDS = 4.0


class HarnessError(RuntimeError):
    """The operator did not start or exited."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """``predicate()``'s first truthy result; HarnessError after ``timeout`` seconds."""
    result = poll(predicate, timeout, 0.1)
    if not result:
        raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")
    return result


def get_pool(kube_api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    objects = client.CustomObjectsApi(kube_api)
    result: dict[str, Any] = objects.get_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, constants.PLURAL, name
    )
    return result


def pool_pods(
    kube_api: client.ApiClient, namespace: str, pool: str, *, live: bool = True
) -> list[client.V1Pod]:
    """The pool's pods, by name; ``live`` leaves out those being deleted."""
    core = client.CoreV1Api(kube_api)
    items = core.list_namespaced_pod(
        namespace, label_selector=f"{constants.LABEL_POOL}={pool}"
    ).items
    if live:
        items = [p for p in items if p.metadata.deletion_timestamp is None]
    return sorted(items, key=lambda p: p.metadata.name)


def is_ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def draining(pod: client.V1Pod) -> bool:
    return constants.ANNOTATION_DRAINING in (pod.metadata.annotations or {})


def set_node_ready(core: client.CoreV1Api, node: str, ready: bool) -> None:
    """The node's Ready condition, as a kubelet (or the node lifecycle controller) posts
    it; the controller then adds or removes its not-ready taints by itself. A NotReady node
    is taken out of kwok's hands first (kwok would post Ready again within a second, as a
    live kubelet would), and handed back once Ready."""
    if not ready:
        core.patch_node(node, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: None}}})
    status = "True" if ready else "False"
    condition = {
        "type": "Ready",
        "status": status,
        "reason": "KubeletReady" if ready else "TestNotReady",
        "lastTransitionTime": format_time(),
        "lastHeartbeatTime": format_time(),
    }
    core.patch_node_status(node, {"status": {"conditions": [condition]}})
    if ready:
        core.patch_node(
            node, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE}}}
        )


def pool_token(kube_api: client.ApiClient, namespace: str, pool: str) -> str:
    """The pool's token, read as admin (the operator itself never reads it back)."""
    secret = client.CoreV1Api(kube_api).read_namespaced_secret(f"{pool}-token", namespace)
    return base64.b64decode(secret.data[constants.POOL_TOKEN_KEY]).decode()


def install_rbac(kube_api: client.ApiClient) -> None:
    """The operator's namespace, ServiceAccount, RBAC and Lease, as admin."""
    core = client.CoreV1Api(kube_api)
    try:
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE))
        )
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    for manifest in rbac.manifests(OPERATOR_NAMESPACE):
        apply_manifest(kube_api, manifest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def apply_manifest(kube_api: client.ApiClient, body: dict[str, Any]) -> Any:
    api = dynamic.DynamicClient(kube_api)
    resource = api.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    meta = body["metadata"]
    return resource.server_side_apply(
        body=body,
        name=meta["name"],
        namespace=meta.get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
    )


def service_account_kubeconfig(
    admin_kubeconfig: Path,
    kube_api: client.ApiClient,
    path: Path,
    *,
    account: str = rbac.SERVICE_ACCOUNT,
    namespace: str = OPERATOR_NAMESPACE,
) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount (a bound token)."""
    core = client.CoreV1Api(kube_api)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=24 * 3600)
    )
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": cluster_entry}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "sandbox", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def default_args() -> list[str]:
    """``operator run`` as the operator tests run it: every namespace, short intervals."""
    return [
        "operator",
        "run",
        "--all-namespaces",
        "--operator-namespace",
        OPERATOR_NAMESPACE,
        "--poll-interval",
        str(POLL_SECONDS),
        "--spot-fallback-seconds",
        str(SPOT_FALLBACK_SECONDS),
        "--not-ready-timeout",
        "20",
        "--not-ready-grace-seconds",
        str(NOT_READY_GRACE_SECONDS),
    ]


def chart_deployment(values: Sequence[str] = (), namespace: str = OPERATOR_NAMESPACE) -> Any:
    """The operator Deployment as ``helm template`` renders it (release ``voicefleet``, so
    its names are the defaults of ``voicefleet operator rbac``)."""
    helm = binaries.cached("helm")
    if helm is None:
        raise HarnessError("no helm: run e2e/build-sandbox.sh")
    done = subprocess.run(
        [str(helm), "template", "voicefleet", str(CHART), f"--namespace={namespace}", *values],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise HarnessError(f"helm template failed:\n{done.stderr}")
    return next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment")


def container_args(deployment: Any, pod_name: str) -> list[str]:
    """The operator container's arguments as the kubelet would start them in a pod named
    ``pod_name``: ``$(VAR)`` expanded from the container's environment (the pod's name and
    namespace from the downward API). ``deployment``: a dict, or the API's object."""
    if not isinstance(deployment, dict):
        deployment = client.ApiClient().sanitize_for_serialization(deployment)
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    fields = {"metadata.name": pod_name, "metadata.namespace": deployment["metadata"]["namespace"]}
    env = {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container.get("env") or []
    }
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]


@dataclass
class Operator:
    """A ``voicefleet operator run`` process. ``args`` are its arguments from ``operator``
    on (the tests' own by default, or a chart's: see :func:`container_args`); the harness
    only moves its ports to free loopback ones and names its log."""

    kubeconfig: Path
    log_dir: Path
    extra: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=default_args)
    # Its leader election identity, the same across restarts (as a pod's name is), so a
    # restarted process takes back its own lease at once; a chart's args bring their own.
    name: str = field(default_factory=lambda: f"operator-{uuid.uuid4().hex[:6]}")
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0
    runs: int = 0
    logs: list[Path] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)

    def start(self, *extra: str) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        self.runs += 1
        log = self.log_dir / f"{self.name}-{self.runs}.log"
        self.logs.append(log)
        identity = (
            []
            if any("--leader-elect-identity" in a for a in self.args)
            else [f"--leader-elect-identity={self.name}"]
        )
        argv = [
            sys.executable,
            "-m",
            "voicefleet",
            *self.args,
            *identity,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--health-host",
            "127.0.0.1",
            "--health-port",
            str(self.health_port),
            *self.extra,
            *extra,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for(self.healthy, timeout=60, what="the operator's liveness endpoint")

    def healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise HarnessError(f"the operator exited:\n{self.log_tail()}")
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.exit_codes.append(self.process.returncode)
        self.process = None

    def leading(self) -> bool:
        """Whether it holds the lease (its ``voicefleet_operator_leader`` gauge)."""
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            gauge = self.metric(f"{constants.OPERATOR_METRIC_PREFIX}leader")
        except OSError:
            return False
        return gauge.get("") == 1.0

    def reconciles(self) -> float:
        """Reconciles it ran, every trigger together."""
        name = f"{constants.OPERATOR_METRIC_PREFIX}reconcile_duration_seconds_count"
        return sum(self.metric(name).values())

    def restart(self) -> None:
        self.stop()
        self.start()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str) -> dict[str, float]:
        """Samples of one metric: labels text -> value."""
        out: dict[str, float] = {}
        for line in self.metrics().splitlines():
            m = re.match(rf"^{re.escape(name)}(\{{.*\}})?\s+(\S+)$", line)
            if m:
                out[m.group(1) or ""] = float(m.group(2))
        return out

    def passes(self, trigger: str = "timer") -> float:
        """Reconcile passes the operator finished, of one trigger (its own histogram)."""
        samples = self.metric(f"{constants.OPERATOR_METRIC_PREFIX}reconcile_duration_seconds_count")
        return sum(v for k, v in samples.items() if f'trigger="{trigger}"' in k)

    def wait_passes(self, count: int, trigger: str = "timer", timeout: float = 60) -> None:
        """Until ``count`` more passes of ``trigger`` per pool have finished: what a test
        waits for before it asserts that nothing happened (a slow operator makes it wait,
        not pass). Every pool ticks at the same interval, so count times the pools."""
        pools = sum(self.metric(f"{constants.OPERATOR_METRIC_PREFIX}pools").values())
        target = self.passes(trigger) + count * max(1.0, pools)
        wait_for(lambda: self.passes(trigger) >= target, timeout, f"{count} {trigger} passes")

    def writes(self, namespace: str) -> float:
        """Write calls the operator made into ``namespace`` (its own counter)."""
        samples = self.metric(f"{constants.OPERATOR_METRIC_PREFIX}api_writes_total")
        return sum(v for k, v in samples.items() if f'namespace="{namespace}"' in k)

    def log_tail(self, lines: int = 60) -> str:
        if not self.logs:
            return ""
        return "\n".join(self.logs[-1].read_text(errors="replace").splitlines()[-lines:])

    def tracebacks(self) -> list[str]:
        found = []
        for log in self.logs:
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                found.append(f"{log.name}:\n{text[text.index('Traceback') :][:3000]}")
        return found


@dataclass
class Replicas:
    """Several operator processes, as a Deployment's replicas: one leads, the rest stand by."""

    operators: list[Operator]

    def start(self) -> None:
        for operator in self.operators:
            operator.start()

    def leader(self, timeout: float = 60) -> Operator:
        """The one that leads, once one does; fails if two ever claim it."""

        def found() -> Operator | None:
            leading = [o for o in self.operators if o.leading()]
            if len(leading) > 1:
                raise HarnessError(f"two leaders: {[o.name for o in leading]}")
            return leading[0] if leading else None

        result: Operator = wait_for(found, timeout, "an operator replica to lead")
        return result

    def standbys(self) -> list[Operator]:
        return [o for o in self.operators if o.process is not None and not o.leading()]

    def stop(self) -> None:
        for operator in self.operators:
            operator.stop()

    def tracebacks(self) -> list[str]:
        return [t for o in self.operators for t in o.tracebacks()]


def chart_replicas(
    kubeconfig: Path, log_dir: Path, deployment: Any, count: int | None = None
) -> Replicas:
    """``count`` (default: the Deployment's replicas) operator processes started with the
    chart's own arguments, each as a pod of that Deployment would run it."""
    if not isinstance(deployment, dict):
        deployment = client.ApiClient().sanitize_for_serialization(deployment)
    count = count if count is not None else int(deployment["spec"]["replicas"])
    name = deployment["metadata"]["name"]
    return Replicas(
        [
            Operator(kubeconfig, log_dir, args=container_args(deployment, f"{name}-{i}"),
                     name=f"{name}-{i}")
            for i in range(count)
        ]
    )  # fmt: skip

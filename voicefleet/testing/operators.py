"""Running the operator as a real process under its own ServiceAccount, one or as a
Deployment's replicas, for the tests, the demo and the benchmark (no pytest here)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from voicefleet import constants
from voicefleet.sandbox import binaries
from voicefleet.testing.kube_admin import OPERATOR_NAMESPACE
from voicefleet.testing.loopback import free_port
from voicefleet.testing.polling import HarnessError, wait_for

CHART = Path(__file__).resolve().parents[2] / "charts" / "voicefleet"
# Fast enough for tests: drains progress and spot fallback within seconds.
POLL_SECONDS = 1.0
SPOT_FALLBACK_SECONDS = 4.0
# Short, so a NotReady node is judged within a test; blips in the tests stay well below it.
NOT_READY_GRACE_SECONDS = 4.0


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

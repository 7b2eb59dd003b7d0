"""A failing real-pod test reports what the real node saw: each pod's phase and container
states, and the end of each container's log. `kubectl logs` cannot reach the kubelet (it
listens inside the node's network namespace), and a CI log is all a failure leaves behind."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path

import pytest
from kubernetes import client, config

from voicefleet.sandbox import node
from voicefleet.sandbox.state import Sandbox

LOG_LINES = 30


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    sandbox = getattr(item, "funcargs", {}).get("real")
    if report.failed and isinstance(sandbox, Sandbox):
        report.sections.append(("real node", describe(sandbox)))
    return report


def describe(sandbox: Sandbox) -> str:
    lines = [_pods(sandbox)]
    pod_logs = node.layout_for(sandbox.state_dir, Path()).pod_logs
    for log in sorted(pod_logs.glob("*/*/*.log")):
        tail = log.read_text(errors="replace").splitlines()[-LOG_LINES:]
        lines.append(f"--- {log.relative_to(pod_logs)} (last {len(tail)} lines)")
        lines.extend(tail)
    return "\n".join(lines)


def _pods(sandbox: Sandbox) -> str:
    try:
        api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
        found = client.CoreV1Api(api).list_pod_for_all_namespaces().items
    except Exception as exc:  # a report of a failure must not fail itself
        return f"(pods not listed: {exc})"
    rows = []
    for pod in found:
        states = [
            json.dumps(api.sanitize_for_serialization(status.state))
            for status in pod.status.container_statuses or []
        ]
        rows.append(f"{pod.metadata.namespace}/{pod.metadata.name} {pod.status.phase} {states}")
    return "\n".join(rows) or "(no pods)"

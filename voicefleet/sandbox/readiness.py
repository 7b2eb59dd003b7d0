"""Waiting for the sandbox's parts: a control-plane component healthy, the fake nodes
created and Ready, and pods admissible in ``default``."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from voicefleet.sandbox import nodes, processes
from voicefleet.sandbox.api import ApiError, Client, get_text, unverified_context
from voicefleet.sandbox.components import Component, Health
from voicefleet.sandbox.processes import Process
from voicefleet.sandbox.state import Sandbox, SandboxError

POLL_SECONDS: Final = 0.2

NODES_READY_TIMEOUT: Final = 60.0


def health_ok(component: Component, client: Client) -> bool:
    if component.health is Health.ADMIN_TLS:
        return client.healthy(urllib.parse.urlparse(component.health_url).path)
    context = unverified_context() if component.health is Health.SELF_SIGNED else None
    status, _body = get_text(component.health_url, context)
    return status == 200


def wait_healthy(component: Component, process: Process, client: Client) -> None:
    deadline = time.monotonic() + component.start_timeout
    while True:
        if not processes.is_running(process):
            raise SandboxError(
                f"{component.name} exited during start; its log is {process.log}:\n"
                + processes.log_tail(process.log)
            )
        if health_ok(component, client):
            return
        if time.monotonic() > deadline:
            raise SandboxError(
                f"{component.name} was not healthy after {component.start_timeout:.0f} s "
                f"({component.health_url}); its log is {process.log}:\n"
                + processes.log_tail(process.log)
            )
        time.sleep(POLL_SECONDS)


def create_nodes(client: Client, manifests: Sequence[dict[str, Any]]) -> None:
    for manifest in manifests:
        try:
            client.request("POST", "/api/v1/nodes", manifest)
        except ApiError as exc:
            if exc.status != 409:  # already there: `up` is idempotent
                raise


def ready_nodes(client: Client, *, selector: bool = True) -> set[str]:
    query = f"?labelSelector={urllib.parse.quote(nodes.LABEL_SANDBOX_GROUP)}" if selector else ""
    listing = client.request("GET", f"/api/v1/nodes{query}")
    ready: set[str] = set()
    for item in listing.get("items", []):
        for condition in item.get("status", {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                ready.add(item["metadata"]["name"])
    return ready


def wait_cluster_ready(sandbox: Sandbox, kwok_log: Path) -> None:
    """Until every fake node is Ready and pods can be admitted in ``default``."""
    client = sandbox.client()
    deadline = time.monotonic() + NODES_READY_TIMEOUT
    missing: set[str] = set(sandbox.nodes)
    has_account = False
    while time.monotonic() < deadline:
        missing = set(sandbox.nodes) - ready_nodes(client)
        try:
            client.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            has_account = True
        except ApiError as exc:
            if exc.status != 404:
                raise
        if not missing and has_account:
            return
        time.sleep(POLL_SECONDS)
    if missing:
        raise SandboxError(
            f"kwok did not make nodes Ready within {NODES_READY_TIMEOUT:.0f} s "
            f"({', '.join(sorted(missing))}); its log is {kwok_log}"
        )
    raise SandboxError(
        "the controller manager made no default service account within "
        f"{NODES_READY_TIMEOUT:.0f} s; its log is {sandbox.layout.log('kube-controller-manager')}"
    )

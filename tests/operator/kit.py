"""Helpers shared by the operator's sandbox tests: pools, pods, status and runtimes."""

from __future__ import annotations

import copy
import json
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from kubernetes import client

from tests.fixtures.sandbox import (
    APPLY,
    CRD_DIR,
    FIELD_MANAGER,
    Apply,
    PodProcesses,
    wait_until,
)
from voicefleet import catalog, constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.cli.crd import crd_filename
from voicefleet.operator.planner import plan
from voicefleet.testing.kube_admin import draining, get_pool, is_ready, pool_pods, set_node_ready
from voicefleet.testing.polling import seconds_until

# The pool, pod and node helpers are shared with the e2e suite and the benchmark
# (voicefleet/testing/cluster.py); re-exported so the tests say kit.pool_pods(...).
__all__ = ["draining", "get_pool", "is_ready", "pool_pods", "set_node_ready"]

GROUP_VERSION = (constants.GROUP, constants.VERSION)


def pool_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def planned(**spec: Any) -> Any:
    return plan(VoiceAgentPoolSpec.model_validate(spec), catalog.builtin())


def make_pool(apply: Apply, name: str, **spec: Any) -> dict[str, Any]:
    result: dict[str, Any] = apply(pool_manifest(name, **spec)).to_dict()
    return result


def patch_pool(kube_api: client.ApiClient, namespace: str, name: str, patch: Any) -> None:
    objects = client.CustomObjectsApi(kube_api)
    objects.patch_namespaced_custom_object(*GROUP_VERSION, namespace, constants.PLURAL, name, patch)


def condition(pool: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (pool.get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def wait_pool_ready(kube_api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pool = get_pool(kube_api, namespace, name)
        return pool if condition(pool, constants.CONDITION_READY).get("status") == "True" else None

    result: dict[str, Any] = wait_until(ready, what=f"pool {namespace}/{name} to be Ready")
    return result


def wait_running(
    kube_api: client.ApiClient, namespace: str, pool: str, count: int
) -> list[client.V1Pod]:
    def running() -> list[client.V1Pod] | None:
        pods = [
            p for p in pool_pods(kube_api, namespace, pool) if p.status.pod_ip and not draining(p)
        ]
        return pods if len(pods) == count and all(is_ready(p) for p in pods) else None

    result: list[client.V1Pod] = wait_until(
        running, what=f"{count} running pods of {namespace}/{pool}"
    )
    return result


def start_contract_server(
    processes: PodProcesses, pod_ip: str, token: str, active: int = 0
) -> None:
    processes.start(
        pod_ip,
        [
            sys.executable,
            "-m",
            "voicefleet.testing.contract_server",
            "--host",
            "{ip}",
            "--token",
            token,
            "--active",
            str(active),
        ],
    )
    wait_until(lambda: http_json(pod_ip, constants.PATH_STATUS) is not None, what=f"{pod_ip}")


def http_json(ip: str, path: str, method: str = "GET") -> Any:
    url = f"http://{ip}:{constants.RUNTIME_PORT}{path}"
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def http_ok(ip: str, path: str) -> bool:
    """True when ``GET path`` on the pod's runtime port answers 200."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{constants.RUNTIME_PORT}{path}", timeout=2):
            return True
    except OSError:
        return False


def elapsed_until(predicate: Any, timeout: float = 10.0, step: float = 0.02) -> float:
    """Seconds until ``predicate()`` is true (fails the test after ``timeout``)."""
    took = seconds_until(predicate, timeout, step)
    if took is None:
        raise AssertionError(f"not true after {timeout} s: {predicate}")
    return took


def events(kube_api: client.ApiClient, namespace: str, reason: str) -> list[client.CoreV1Event]:
    core = client.CoreV1Api(kube_api)
    return [e for e in core.list_namespaced_event(namespace).items if e.reason == reason]


@contextmanager
def pre_upgrade_crd(kube_api: client.ApiClient) -> Iterator[None]:
    """The pool CRD as before the template became an allowlist and pool names were checked
    (``spec.template`` kept as written, no rule on ``metadata.name``), for the duration of
    the block; then the real CRD again.

    A pool written meanwhile is what an operator finds after an upgrade that left the CRD
    behind (``helm upgrade`` never upgrades CRDs), or one stored before the upgrade.
    """
    extensions = client.ApiextensionsV1Api(kube_api)
    (real,) = yaml.safe_load_all((CRD_DIR / crd_filename()).read_text())
    loose = copy.deepcopy(real)
    schema = loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"]["properties"]["template"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    del schema["x-kubernetes-validations"]
    probe = pool_manifest(
        "probe", template={"metadata": {"annotations": {constants.ANNOTATION_DRAINING: "x"}}}
    )

    def accepts_probe() -> bool:
        try:
            client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
                *GROUP_VERSION, "default", constants.PLURAL, probe, dry_run="All"
            )
        except client.ApiException as exc:
            if exc.status != 422:
                raise
            return False
        return True

    def put(crd: dict[str, Any]) -> None:
        extensions.patch_custom_resource_definition(
            constants.CRD_NAME, crd, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY
        )

    put(loose)
    try:
        # A CRD's new schema reaches the API server's handlers a moment after the write.
        wait_until(accepts_probe, what="the permissive CRD to be served")
        yield
    finally:
        put(real)
        wait_until(lambda: not accepts_probe(), what="the real CRD to be served again")

"""Reading and writing a cluster as its admin, for the tests, the demo and the benchmark:
pools and their pods, node readiness, RBAC, ServiceAccount kubeconfigs (no pytest here)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, dynamic

from voicefleet import constants
from voicefleet.operator import rbac
from voicefleet.rfc3339 import format_time
from voicefleet.sandbox.nodes import KWOK_NODE_ANNOTATION, KWOK_NODE_VALUE

OPERATOR_NAMESPACE = "voicefleet-system"
FIELD_MANAGER = "voicefleet-tests"


def get_pool(kube_api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    objects = client.CustomObjectsApi(kube_api)
    result: dict[str, Any] = objects.get_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, constants.PLURAL, name
    )
    return result


# Runtime pods of any pool: a pool's gateway replicas carry its pool label too.
RUNTIME_PODS = f"{constants.LABEL_POOL},{constants.LABEL_COMPONENT}={constants.COMPONENT_RUNTIME}"


def pool_pods(
    kube_api: client.ApiClient, namespace: str, pool: str, *, live: bool = True
) -> list[client.V1Pod]:
    """The pool's runtime pods (not its gateway's), by name; ``live`` leaves out those being
    deleted."""
    return _pods_of(kube_api, namespace, pool, constants.COMPONENT_RUNTIME, live)


def gateway_pods(kube_api: client.ApiClient, namespace: str, pool: str) -> list[client.V1Pod]:
    """The pool's gateway replicas (its Deployment's pods) not being deleted, by name."""
    return _pods_of(kube_api, namespace, pool, constants.COMPONENT_GATEWAY, live=True)


def _pods_of(
    kube_api: client.ApiClient, namespace: str, pool: str, component: str, live: bool
) -> list[client.V1Pod]:
    core = client.CoreV1Api(kube_api)
    selector = f"{constants.LABEL_POOL}={pool},{constants.LABEL_COMPONENT}={component}"
    items = core.list_namespaced_pod(namespace, label_selector=selector).items
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

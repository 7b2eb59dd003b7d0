"""The operator's least-privilege RBAC, written once here: the chart and the tests use it.

Three scopes, and why each rule exists:

- **The cluster** (a ClusterRole, always): Nodes, read and watch (interruption signals, GPU
  products; never written); CustomResourceDefinitions, read (kopf finds its resources and
  follows CRD changes); Namespaces, read (kopf in namespaced mode follows its watched
  namespaces being deleted and created again).
- **Pool namespaces** (:func:`pool_rules`): in the ClusterRole when the operator watches every
  namespace; with watched namespaces (the chart's ``watchNamespaces``, ``--namespace``), a
  Role in each of them instead, so the operator cannot touch a pod or a Secret anywhere else.

  - VoiceAgentPools: read and watch them, patch them (kopf's bookkeeping annotations) and
    their status.
  - Pods: everything but update: it owns them directly (create, delete, annotate draining).
  - Services, PodDisruptionBudgets: read and server-side apply (create, patch).
  - Deployments (the pool's gateway) and PodDisruptionBudgets: also delete, when a pool
    turns its gateway off.
  - Secrets: create and patch only: the pool token Secret is applied, never read.
  - ConfigMaps: get (the pool's price table).
  - Events: create and patch.

- **Its own namespace** (Roles there): its HMAC key Secret (get by name, and create once at
  the first start: create cannot be limited to a name), so it derives every pool's token
  without reading any other Secret; and the leader election Lease, get and update by name.
  The Lease comes with the chart (and with :func:`manifests`): the operator never creates
  one, so none is left behind by ``helm uninstall``.

``voicefleet operator rbac`` prints the manifests; ``--write charts/voicefleet/files``
regenerates the checked-in file the chart embeds (a test fails when it drifts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from voicefleet import constants, yamlout

SERVICE_ACCOUNT: Final = constants.OPERATOR_NAME
CLUSTER_ROLE: Final = constants.OPERATOR_NAME
POOL_ROLE: Final = constants.OPERATOR_NAME
KEY_ROLE: Final = f"{constants.OPERATOR_NAME}-key"
LEADER_ROLE: Final = f"{constants.OPERATOR_NAME}-leader"
RULES_FILE: Final = "operator-rbac.yaml"
RBAC_API: Final = "rbac.authorization.k8s.io"

READ: Final = ["get", "list", "watch"]


def _rule(
    groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": groups, "resources": resources}
    if names:
        rule["resourceNames"] = names
    rule["verbs"] = verbs
    return rule


def cluster_rules() -> list[dict[str, Any]]:
    """What only a ClusterRole can grant: cluster-scoped reads."""
    return [
        _rule([""], ["nodes"], list(READ)),
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], list(READ)),
        _rule([""], ["namespaces"], list(READ)),
    ]


def pool_rules() -> list[dict[str, Any]]:
    """What the operator does in a namespace whose pools it reconciles."""
    return [
        _rule([constants.GROUP], [constants.PLURAL], [*READ, "patch", "update"]),
        _rule([constants.GROUP], [f"{constants.PLURAL}/status"], ["get", "patch", "update"]),
        _rule([""], ["pods"], [*READ, "create", "patch", "delete"]),
        _rule([""], ["services"], [*READ, "create", "patch"]),
        _rule(["policy"], ["poddisruptionbudgets"], [*READ, "create", "patch", "delete"]),
        # The pool's gateway; deleted again when the pool turns it off.
        _rule(["apps"], ["deployments"], [*READ, "create", "patch", "delete"]),
        # No get, list or watch: the operator never reads a pool namespace's Secrets.
        _rule([""], ["secrets"], ["create", "patch"]),
        _rule([""], ["configmaps"], ["get"]),
        _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
    ]


def key_rules() -> list[dict[str, Any]]:
    """The Role in the operator's namespace for its own HMAC key Secret."""
    return [
        _rule([""], ["secrets"], ["get"], [constants.OPERATOR_KEY_SECRET]),
        _rule([""], ["secrets"], ["create"]),
    ]


def leader_rules() -> list[dict[str, Any]]:
    """The Role in the operator's namespace for the leader election Lease."""
    return [
        _rule(["coordination.k8s.io"], ["leases"], ["get", "update"], [constants.OPERATOR_LEASE])
    ]


def lease(namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The Lease the replicas elect their leader on (no holder yet)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": constants.OPERATOR_LEASE, "namespace": namespace, "labels": labels},
    }


def manifests(namespace: str, watch_namespaces: Sequence[str] = ()) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole + binding, pool Roles + bindings (watched namespaces
    only), key and leader Roles + bindings, and the Lease."""
    subject = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
    labels = {constants.LABEL_MANAGED_BY: constants.MANAGED_BY}
    cluster = cluster_rules() + ([] if watch_namespaces else pool_rules())
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
        },
        *_bound("ClusterRole", CLUSTER_ROLE, None, cluster, subject=subject, labels=labels),
    ]
    for watched in watch_namespaces:
        out += _bound("Role", POOL_ROLE, watched, pool_rules(), subject=subject, labels=labels)
    out += _bound("Role", KEY_ROLE, namespace, key_rules(), subject=subject, labels=labels)
    out += _bound("Role", LEADER_ROLE, namespace, leader_rules(), subject=subject, labels=labels)
    out.append(lease(namespace, labels))
    return out


def _bound(
    kind: str,
    name: str,
    namespace: str | None,
    rules: list[dict[str, Any]],
    *,
    subject: dict[str, str],
    labels: dict[str, str],
) -> list[dict[str, Any]]:
    """A (Cluster)Role and its (Cluster)RoleBinding to ``subject``."""
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace is not None:
        meta["namespace"] = namespace
    return [
        {"apiVersion": f"{RBAC_API}/v1", "kind": kind, "metadata": meta, "rules": rules},
        {
            "apiVersion": f"{RBAC_API}/v1",
            "kind": f"{kind}Binding",
            "metadata": dict(meta),
            "roleRef": {"apiGroup": RBAC_API, "kind": kind, "name": name},
            "subjects": [subject],
        },
    ]


def render_rules() -> str:
    """The rules file the chart embeds: every scope's rules."""
    header = (
        "# Generated by `voicefleet operator rbac --write charts/voicefleet/files`\n"
        "# from voicefleet/operator/rbac.py. Do not edit.\n"
    )
    body = {
        "clusterRules": cluster_rules(),
        "poolRules": pool_rules(),
        "keyRules": key_rules(),
        "leaderRules": leader_rules(),
    }
    return header + yamlout.dump(body, sort_keys=False)


def render_manifests(namespace: str, watch_namespaces: Sequence[str] = ()) -> str:
    return yamlout.dump_all(manifests(namespace, watch_namespaces), sort_keys=False)

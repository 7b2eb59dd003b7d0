"""The operator's least-privilege RBAC, written once here: the chart and the tests use it.

What the operator may do, and why each rule exists:

- VoiceAgentPools: read and watch them, patch them (kopf's finalizer and bookkeeping
  annotations) and their status.
- Pods: everything but update: it owns them directly (create, delete, annotate draining).
- Services, PodDisruptionBudgets: read and server-side apply (create, patch).
- Secrets: create and patch only, in pool namespaces: the pool token Secret is applied,
  never read. The one Secret it reads is its own HMAC key, by name, in its own namespace
  (a Role there), so it can derive every pool's token without reading any other Secret.
- ConfigMaps: get (the pool's price table).
- Nodes: read and watch (interruption signals, GPU products); never written.
- Events: create and patch.
- kopf's peering objects: so several replicas run with one active; CRDs and namespaces
  read-only, which kopf needs to find resources and namespaces.

``voicefleet operator rbac`` prints the manifests; ``--write charts/voicefleet/files``
regenerates the checked-in file the chart embeds (a test fails when it drifts).
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from voicefleet import constants

SERVICE_ACCOUNT: Final = constants.OPERATOR_NAME
CLUSTER_ROLE: Final = constants.OPERATOR_NAME
KEY_ROLE: Final = f"{constants.OPERATOR_NAME}-key"
PEERING_NAME: Final = constants.OPERATOR_NAME
KOPF_GROUP: Final = "kopf.dev"
RULES_FILE: Final = "operator-rbac.yaml"
PEERING_CRD_FILE: Final = "kopf.dev_peerings.yaml"

READ: Final = ["get", "list", "watch"]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def cluster_rules() -> list[dict[str, Any]]:
    """The ClusterRole's rules (pools may live in any namespace the operator watches)."""
    return [
        _rule([constants.GROUP], [constants.PLURAL], [*READ, "patch", "update"]),
        _rule([constants.GROUP], [f"{constants.PLURAL}/status"], ["get", "patch", "update"]),
        _rule([""], ["pods"], [*READ, "create", "patch", "delete"]),
        _rule([""], ["services"], [*READ, "create", "patch"]),
        _rule(["policy"], ["poddisruptionbudgets"], [*READ, "create", "patch"]),
        # No get, list or watch: the operator never reads a pool namespace's Secrets.
        _rule([""], ["secrets"], ["create", "patch"]),
        _rule([""], ["configmaps"], ["get"]),
        _rule([""], ["nodes"], READ),
        _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
        _rule([KOPF_GROUP], ["clusterkopfpeerings", "kopfpeerings"], [*READ, "patch"]),
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], READ),
        _rule([""], ["namespaces"], READ),
    ]


def key_rules() -> list[dict[str, Any]]:
    """The Role in the operator's namespace: its own HMAC key Secret, by name."""
    return [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [constants.OPERATOR_KEY_SECRET],
            "verbs": ["get"],
        },
    ]


def manifests(namespace: str) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole + binding, key Role + binding, the cluster peering."""
    subject = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
    rbac = "rbac.authorization.k8s.io/v1"
    labels = {constants.LABEL_MANAGED_BY: constants.MANAGED_BY}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": CLUSTER_ROLE, "labels": labels},
            "rules": cluster_rules(),
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": CLUSTER_ROLE, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": CLUSTER_ROLE,
            },
            "subjects": [subject],
        },
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": {"name": KEY_ROLE, "namespace": namespace, "labels": labels},
            "rules": key_rules(),
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": KEY_ROLE, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": KEY_ROLE},
            "subjects": [subject],
        },
        {
            "apiVersion": f"{KOPF_GROUP}/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": PEERING_NAME, "labels": labels},
        },
    ]


def peering_crds() -> list[dict[str, Any]]:
    """kopf's peering CRDs (cluster-wide and per namespace): its replicas meet there."""
    out = []
    for kind, plural, scope in (
        ("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        ("KopfPeering", "kopfpeerings", "Namespaced"),
    ):
        out.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.{KOPF_GROUP}"},
                "spec": {
                    "scope": scope,
                    "group": KOPF_GROUP,
                    "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        }
                                    },
                                }
                            },
                        }
                    ],
                },
            }
        )
    return out


def render_rules() -> str:
    """The rules file the chart embeds: cluster rules and the key Role's rules."""
    header = (
        "# Generated by `voicefleet operator rbac --write charts/voicefleet/files`\n"
        "# from voicefleet/operator/rbac.py. Do not edit.\n"
    )
    body = {"clusterRules": cluster_rules(), "keyRules": key_rules()}
    return header + yaml.safe_dump(body, sort_keys=False)


def render_peering_crds() -> str:
    header = "# kopf's peering CRDs, from voicefleet/operator/rbac.py. Do not edit.\n"
    return header + yaml.safe_dump_all(peering_crds(), sort_keys=False)


def render_manifests(namespace: str) -> str:
    return yaml.safe_dump_all(manifests(namespace), sort_keys=False)

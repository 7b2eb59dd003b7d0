"""The operator's RBAC: least privilege as promised, and the checked-in file up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voicefleet import constants
from voicefleet.operator import rbac

ROOT = Path(__file__).resolve().parents[2]
POOL_RESOURCES = {
    constants.PLURAL,
    "pods",
    "secrets",
    "services",
    "poddisruptionbudgets",
    "configmaps",
    "events",
}


def test_checked_in_rbac_matches_the_generator() -> None:
    rules = (ROOT / "charts" / "voicefleet" / "files" / rbac.RULES_FILE).read_text()
    assert rules == rbac.render_rules(), (
        "run `voicefleet operator rbac --write charts/voicefleet/files`"
    )


def _verbs(rules: list[dict[str, Any]], resource: str) -> set[str]:
    return {verb for rule in rules if resource in rule["resources"] for verb in rule["verbs"]}


def test_it_never_reads_pool_secrets_nor_writes_nodes() -> None:
    assert _verbs(rbac.pool_rules(), "secrets") == {"create", "patch"}
    assert _verbs(rbac.cluster_rules(), "nodes") == {"get", "list", "watch"}
    every = rbac.cluster_rules() + rbac.pool_rules() + rbac.key_rules() + rbac.leader_rules()
    assert "*" not in {v for rule in every for v in rule["verbs"]}


def test_the_only_secret_it_reads_is_its_key_by_name() -> None:
    read = [r for r in rbac.key_rules() if "get" in r["verbs"]]
    assert read == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [constants.OPERATOR_KEY_SECRET],
            "verbs": ["get"],
        }
    ]


def test_the_lease_is_got_and_updated_by_name_and_never_created() -> None:
    (rule,) = rbac.leader_rules()
    assert rule["resources"] == ["leases"]
    assert rule["resourceNames"] == [constants.OPERATOR_LEASE]
    assert set(rule["verbs"]) == {"get", "update"}


def _by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], Any]:
    return {
        (m["metadata"].get("namespace", ""), m["metadata"]["name"]): m
        for m in manifests
        if m["kind"] == kind
    }


def test_cluster_wide_the_cluster_role_holds_the_pool_rules() -> None:
    manifests = rbac.manifests("ops")
    (role,) = _by_kind(manifests, "ClusterRole").values()
    assert {r for rule in role["rules"] for r in rule["resources"]} >= POOL_RESOURCES
    assert set(_by_kind(manifests, "Role")) == {("ops", rbac.KEY_ROLE), ("ops", rbac.LEADER_ROLE)}
    assert set(_by_kind(manifests, "Lease")) == {("ops", constants.OPERATOR_LEASE)}


def test_with_watched_namespaces_pods_and_secrets_are_granted_only_there() -> None:
    manifests = rbac.manifests("ops", ["tenant-a", "tenant-b"])
    (role,) = _by_kind(manifests, "ClusterRole").values()
    cluster_wide = {r for rule in role["rules"] for r in rule["resources"]}
    assert cluster_wide == {"nodes", "customresourcedefinitions", "namespaces"}
    assert not cluster_wide & POOL_RESOURCES
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"get", "list", "watch"}
    roles = _by_kind(manifests, "Role")
    assert set(roles) == {
        ("tenant-a", rbac.POOL_ROLE),
        ("tenant-b", rbac.POOL_ROLE),
        ("ops", rbac.KEY_ROLE),
        ("ops", rbac.LEADER_ROLE),
    }
    assert roles[("tenant-a", rbac.POOL_ROLE)]["rules"] == rbac.pool_rules()
    bindings = _by_kind(manifests, "RoleBinding")
    assert set(bindings) == set(roles)
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": rbac.SERVICE_ACCOUNT, "namespace": "ops"}
        ]

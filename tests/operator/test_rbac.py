"""The operator's RBAC: least privilege as promised, and the checked-in files up to date."""

from __future__ import annotations

from pathlib import Path

from voicefleet.operator import rbac

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_rbac_and_peering_crds_match_the_generator() -> None:
    rules = (ROOT / "charts" / "voicefleet" / "files" / rbac.RULES_FILE).read_text()
    assert rules == rbac.render_rules(), (
        "run `voicefleet operator rbac --write charts/voicefleet/files --write-crds crds/`"
    )
    crds = (ROOT / "crds" / rbac.PEERING_CRD_FILE).read_text()
    assert crds == rbac.render_peering_crds()


def _verbs(resource: str) -> set[str]:
    return {
        verb
        for rule in rbac.cluster_rules()
        if resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_cluster_wide_it_never_reads_secrets_nor_writes_nodes() -> None:
    assert _verbs("secrets") == {"create", "patch"}
    assert _verbs("nodes") == {"get", "list", "watch"}
    assert "*" not in {v for rule in rbac.cluster_rules() for v in rule["verbs"]}


def test_the_only_secret_it_reads_is_its_key_by_name() -> None:
    (rule,) = rbac.key_rules()
    assert rule["resources"] == ["secrets"]
    assert rule["verbs"] == ["get"]
    assert rule["resourceNames"] == ["voicefleet-operator-key"]

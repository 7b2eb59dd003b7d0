"""The checked-in CRD is what the API types generate, and it is a structural schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from voicefleet.api.crd import build_crd
from voicefleet.cli.crd import crd_filename, render

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_crd_matches_the_api_types() -> None:
    checked_in = (ROOT / "crds" / crd_filename()).read_text(encoding="utf-8")
    assert checked_in == render(), (
        "crds/ is out of date with voicefleet/api/pool.py: run `voicefleet crd --write crds/`"
    )


def _int_or_string(node: dict[str, Any]) -> bool:
    """The one ``anyOf`` a structural schema allows: a Kubernetes quantity."""
    return bool(node.get("x-kubernetes-int-or-string")) and node.get("anyOf") == [
        {"type": "integer"},
        {"type": "string"},
    ]


def _walk(node: dict[str, Any], path: str) -> list[str]:
    """Paths of schema nodes that break the structural-schema rules we rely on."""
    problems = []
    for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "propertyNames", "const"):
        if banned in node and not (banned == "anyOf" and _int_or_string(node)):
            problems.append(f"{path}: {banned}")
    if "additionalProperties" in node and not isinstance(node["additionalProperties"], dict):
        problems.append(f"{path}: additionalProperties is not a schema")
    typed = "type" in node or _int_or_string(node)
    if not typed and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    for name, child in node.get("properties", {}).items():
        problems += _walk(child, f"{path}.{name}")
    if "items" in node:
        problems += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _walk(node["additionalProperties"], f"{path}{{}}")
    return problems


def test_schema_is_structural_and_every_spec_field_is_described() -> None:
    crd = yaml.safe_load(render())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    assert _walk(schema["properties"]["spec"], "spec") == []
    assert _walk(schema["properties"]["status"], "status") == []

    def undescribed(node: dict[str, Any], path: str) -> list[str]:
        out = [] if "description" in node else [path]
        for name, child in node.get("properties", {}).items():
            out += undescribed(child, f"{path}.{name}")
        return out

    assert undescribed(schema["properties"]["spec"], "spec") == []


def test_crd_carries_the_contract_from_design() -> None:
    crd = yaml.safe_load(render())
    assert crd["metadata"]["name"] == "voiceagentpools.voicefleet.dev"
    assert crd["spec"]["names"]["shortNames"] == ["vap", "voicepool"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.sessions.target"
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == [
        "Model", "GPU", "Sessions/Pod", "Pods", "Ready", "Spot", "Active", "Capacity",
        "$/Session-h", "Age",
    ]  # fmt: skip
    # `kubectl get -o wide` adds what the pool's gateway moved.
    wide = [c for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert [(c["name"], c["jsonPath"]) for c in wide] == [("Moved", ".status.gateway.moved")]
    capacity = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["capacity"]
    spot = capacity["properties"]["spotPercentage"]
    assert (spot["minimum"], spot["maximum"]) == (0, 100)
    assert capacity["properties"]["strategy"]["enum"] == ["on-demand", "spot-first", "spot-only"]
    assert any("onDemandBase == 0" in r["rule"] for r in capacity["x-kubernetes-validations"])


def test_no_field_keeps_unknown_fields() -> None:
    # Nothing free-form can carry privilege into a pod: fields declared only to be refused
    # keep no contents either (pruned), so a pool stored before the upgrade still ratchets.
    assert "x-kubernetes-preserve-unknown-fields" not in render()


def test_generated_files_have_no_yaml_anchors() -> None:
    # PyYAML writes repeated objects once with &id001 and *id001; linters and reviewers
    # read such files badly (kube-score, kubeconform).
    for path in [
        *(ROOT / "crds").glob("*.yaml"),
        *(ROOT / "charts" / "voicefleet" / "crds").glob("*.yaml"),
        ROOT / "charts" / "voicefleet" / "files" / "operator-rbac.yaml",
    ]:
        text = path.read_text()
        assert not re.search(r"[&*]id\d{3}", text), path


def test_the_runtime_image_is_not_defaulted_into_stored_pools() -> None:
    # A default would pin every stored pool to one version: upgrades would never roll it.
    runtime = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["runtime"]
    # Empty (stored as "") means: the operator's own version, resolved at every reconcile.
    assert runtime["properties"]["image"].get("default", "") == ""
    assert runtime.get("default", {}).get("image", "") == ""

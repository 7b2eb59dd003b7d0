"""Third-party linters on everything voicefleet puts into a cluster: the chart as rendered,
and every object the operator creates for the example pools (its builders' output, the
very dicts it applies). kubeconform validates them strictly against the sandbox API
server's own schemas (and the CRD's); kube-score judges them, and its only findings are
the false positives README.md lists with their reasons (``FALSE_POSITIVES``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import fleet
from tests.fixtures.sandbox import Cluster
from voicefleet import catalog, constants, yamlout
from voicefleet.api.pool import VoiceAgentPool
from voicefleet.operator import builders
from voicefleet.operator.planner import plan
from voicefleet.sandbox import binaries

pytestmark = pytest.mark.sandbox

EXAMPLES = fleet.REPO / "examples"
TINY: dict[str, Any] = {"apiVersion": constants.API_VERSION, "kind": constants.KIND,
        "metadata": {"name": "tiny", "namespace": "voice"},
        "spec": {"model": {"name": "tiny"}}}  # fmt: skip
# kube-score check id -> why its finding is not a defect here (README.md, "Linters").
FALSE_POSITIVES: dict[str, str] = {
    "container-resources": "no CPU limits: throttling would make the runtime's frames late "
    "(CPU and memory are requested, memory is limited)",
    "container-ephemeral-storage-request-and-limit": "the runtime's /tmp holds what the model "
    "downloads, whose size the pool's source decides; the operator's is set",
    "container-image-pull-policy": "images are tagged by version: IfNotPresent is right",
    "pod-networkpolicy": "who may call a pool is the cluster's policy; a NetworkPolicy of "
    "voicefleet's would have to guess its callers (a gateway, an ingress, other pods)",
}


def _binary(name: str) -> str:
    try:
        return str(binaries.resolve([name])[name])
    except Exception as exc:
        pytest.fail(f"cannot build {name}: {exc}", pytrace=False)


def _operator_objects() -> Iterator[dict[str, Any]]:
    """What the operator applies for each example pool (and a tiny one)."""
    pools: list[dict[str, Any]] = [TINY]
    for path in sorted(EXAMPLES.glob("*.yaml")):
        pools += [
            d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == constants.KIND
        ]
    for raw in pools:
        pool = VoiceAgentPool.model_validate(raw)
        ref = builders.PoolRef(
            name=raw["metadata"]["name"], namespace=raw["metadata"].get("namespace", "voice"),
            uid="00000000-0000-0000-0000-000000000001",
        )  # fmt: skip
        yield builders.build_secret(ref, builders.pool_token(b"key", ref))
        yield builders.build_service(ref, gateway=pool.spec.gateway.enabled)
        yield builders.build_headless_service(ref)
        yield builders.build_pdb(ref)
        if pool.spec.gateway.enabled:
            yield builders.build_gateway_deployment(ref, pool.spec)
            yield builders.build_gateway_pdb(ref)
        planned = plan(pool.spec, catalog.builtin())
        template = builders.build_pod_template(
            ref, pool.spec, planned, constants.CapacityType.SPOT, pool.spec.gpu.product
        )
        yield builders.build_pod(template, ref, 0)


def _chart() -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [_binary("helm"), "template", fleet.RELEASE, str(fleet.CHART), "--namespace=ops",
         "--include-crds"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lint") / "all.yaml"
    path.write_text(yamlout.dump_all([*_chart(), *_operator_objects()], sort_keys=False))
    return path


@pytest.fixture(scope="module")
def schemas(sandbox: Cluster, manifests: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A strict JSON schema per kind used, from the API server's OpenAPI (refs kept, its
    definitions beside them; no property a schema does not name), and the CRD's."""
    directory = tmp_path_factory.mktemp("schemas")
    kinds = {d["kind"] for d in yaml.safe_load_all(manifests.read_text()) if d}
    definitions = json.loads(sandbox.run_kubectl("get", "--raw", "/openapi/v2").stdout)[
        "definitions"
    ]
    strict = {name: _strict(schema) for name, schema in definitions.items()}
    for schema in definitions.values():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if gvk["kind"] not in kinds:
                continue
            group = gvk["group"].split(".")[0]
            version = f"{group}-{gvk['version']}" if group else gvk["version"]
            document = {**_strict(schema), "definitions": strict}
            (directory / f"{gvk['kind'].lower()}-{version}.json").write_text(json.dumps(document))
    crd = yaml.safe_load((fleet.REPO / "crds" / "voicefleet.dev_voiceagentpools.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    name = f"{constants.KIND.lower()}-voicefleet-{version['name']}.json"
    (directory / name).write_text(json.dumps(version["schema"]["openAPIV3Schema"]))
    return directory


def _strict(schema: Any) -> Any:
    """No properties the schema does not name (kubeconform -strict's schemas do the same)."""
    if isinstance(schema, dict):
        if schema.get("format") == "int-or-string":  # as kubeconform's own schemas have it
            return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def test_kubeconform_finds_every_object_valid(manifests: Path, schemas: Path) -> None:
    done = subprocess.run(
        [_binary("kubeconform"), "-strict", "-summary", "-output=text",
         f"-schema-location={schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
         "-skip=CustomResourceDefinition", str(manifests)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Invalid: 0, Errors: 0" in done.stdout, done.stdout


def test_kube_score_finds_nothing_but_the_listed_false_positives(manifests: Path) -> None:
    done = subprocess.run(
        [_binary("kube-score"), "score", "--output-format=json", str(manifests)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    findings = sorted(
        {
            (check["check"]["id"], f"{obj['type_meta']['kind']}/{obj['object_meta']['name']}")
            for obj in json.loads(done.stdout)
            for check in obj["checks"]
            if check["grade"] < 10 and not check["skipped"]  # 10 is "all OK"
        }
    )
    real = [finding for finding in findings if finding[0] not in FALSE_POSITIVES]
    assert real == [], "\n".join(f"{check}: {obj}" for check, obj in real)

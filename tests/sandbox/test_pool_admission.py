"""The API server refuses a pool that would grant more than creating its pods in its own
namespace, naming the field, in the same words as ``voicefleet plan`` (issue 9, items 2, 3,
7 and 9's names). Only the CRD is needed: nothing here reaches an operator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fixtures.sandbox import Cluster
from tests.hostile import DRAINING, HOSTILE
from voicefleet import constants
from voicefleet.api.manifest import Document, ManifestError, parse_pool

pytestmark = pytest.mark.sandbox

PRIVILEGED = {
    "spec": {"containers": [{"name": "runtime", "securityContext": {"privileged": True}}]}
}
REFUSED_OBJECTS_IN_HOSTILE = (
    "metadata.ownerReferences",
    "spec.securityContext",
    "spec.volumes",
    "spec.initContainers",
    "spec.containers[0].securityContext",
    "spec.containers[0].volumeMounts",
)
REFUSED_IN_HOSTILE = (
    *REFUSED_OBJECTS_IN_HOSTILE,
    "metadata.namespace",
    "metadata.name",
    "metadata.finalizers",
    "metadata.labels",
    "metadata.annotations",
    "spec.serviceAccountName",
    "spec.automountServiceAccountToken",
    "spec.hostPID",
    "spec.hostNetwork",
    "spec.hostIPC",
    "spec.nodeName",
    "spec.containers[0].image",
    "spec.containers[0].command",
    "spec.containers[0].resources.limits",
    "spec.containers[0].env[0].name",
)
HF_TOKEN = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}


def pool(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def create(kube_api: client.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    """Create as the Kubernetes client does by default: no strict field validation, so
    a field the schema does not declare would be pruned, not refused."""
    created: dict[str, Any] = client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        constants.GROUP,
        constants.VERSION,
        body["metadata"]["namespace"],
        constants.PLURAL,
        body,
    )
    return created


def refusal(kube_api: client.ApiClient, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as refused:
        create(kube_api, body)
    assert refused.value.status == 422
    return str(json.loads(refused.value.body)["message"])


def plan_problems(body: dict[str, Any]) -> list[str]:
    with pytest.raises(ManifestError) as err:
        parse_pool(Document(index=0, body=body))
    return err.value.problems


def test_kubectl_apply_refuses_the_reported_template_naming_every_field(
    sandbox: Cluster, voicefleet_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    body = pool("takeover", namespace, template=HOSTILE)
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(yaml.safe_dump(body))
    # Server-side apply (GitOps tools apply so too): every refused field, with its reason.
    applied = sandbox.run_kubectl("apply", "--server-side", "-f", str(manifest), check=False)
    assert applied.returncode != 0
    for field in REFUSED_IN_HOSTILE:
        assert f"spec.template.{field}: " in applied.stderr, field
    # `voicefleet plan` refuses the same manifest with the same lines (the first rule each
    # object breaks; the API server lists them all).
    problems = plan_problems(body)
    assert problems
    for problem in problems:
        assert problem in applied.stderr
    # Client-side apply decodes strictly first: it stops at the contents of the refused
    # objects (undeclared, so unknown) and names them.
    applied = sandbox.run_kubectl("apply", "-f", str(manifest), check=False)
    assert applied.returncode != 0
    for field in REFUSED_OBJECTS_IN_HOSTILE:
        assert f'unknown field "spec.template.{field}' in applied.stderr, field
    assert sandbox.run_kubectl("get", "vap", "-n", namespace, "-o", "name").stdout == ""


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ({"metadata": {"namespace": "kube-system"}}, "metadata.namespace"),
        ({"spec": {"serviceAccountName": "generic-garbage-collector"}}, "spec.serviceAccountName"),
        (PRIVILEGED, "spec.containers[0].securityContext"),
        ({"spec": {"hostPID": True}}, "spec.hostPID"),
        ({"spec": {"hostNetwork": True}}, "spec.hostNetwork"),
        ({"spec": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}, "spec.volumes"),
        ({"spec": {"nodeName": "h100-on-demand-0"}}, "spec.nodeName"),
        ({"metadata": {"annotations": DRAINING}}, "metadata.annotations"),
    ],
)  # fmt: skip
def test_each_privilege_is_refused_by_the_api_server_with_the_field_named(
    kube_api: client.ApiClient,
    voicefleet_crds: list[str],
    namespace: str,
    template: dict[str, Any],
    field: str,
) -> None:
    body = pool("asks", namespace, template=template)
    message = refusal(kube_api, body)
    (problem,) = plan_problems(body)
    assert problem.startswith(f"spec.template.{field}: ")
    assert problem in message


def test_a_second_container_is_refused_in_the_same_words(
    kube_api: client.ApiClient, voicefleet_crds: list[str], namespace: str
) -> None:
    containers = [{"name": "runtime"}, {"name": "sidecar", "image": "attacker/sidecar"}]
    body = pool("sidecar", namespace, template={"spec": {"containers": containers}})
    (problem,) = plan_problems(body)
    assert problem in refusal(kube_api, body)


def test_a_template_within_the_allowlist_is_stored_as_written(
    kube_api: client.ApiClient, voicefleet_crds: list[str], namespace: str
) -> None:
    template = {
        "metadata": {"labels": {"team": "voice"}, "annotations": {"example.com/owner": "voice"}},
        "spec": {
            "nodeSelector": {"topology.kubernetes.io/zone": "a"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "runtime",
                    "resources": {"requests": {"cpu": 4, "memory": "32Gi"}},
                    "env": [HF_TOKEN],
                }
            ],
        },
    }  # fmt: skip
    created = create(
        kube_api,
        pool("allowed", namespace, runtime={"serviceAccountName": "reader"}, template=template),
    )
    assert created["spec"]["template"] == template
    assert created["spec"]["runtime"]["serviceAccountName"] == "reader"


def test_pool_names_that_break_a_derived_name_are_refused_with_the_limit(
    kube_api: client.ApiClient, voicefleet_crds: list[str], namespace: str
) -> None:
    create(kube_api, pool("p" * 58, namespace))
    for name in ("p" * 59, "p" * 64, "support.en", "9lives"):
        body = pool(name, namespace)
        message = refusal(kube_api, body)
        problems = plan_problems(body)
        assert problems[0] in message, name
    long_message = refusal(kube_api, pool("p" * 59, namespace))
    assert "metadata.name must be at most 58 characters" in long_message
    assert "<name>-pods, which may be at most 63" in long_message


def test_a_prompt_outside_hertz_dev_or_not_a_file_is_refused_in_the_same_words(
    kube_api: client.ApiClient, voicefleet_crds: list[str], namespace: str
) -> None:
    for name, model in (
        ("moshi-prompt", {"name": "moshi", "prompt": "hf://org/voices/bob.wav"}),
        ("bad-prompt", {"name": "hertz-dev", "prompt": "s3://bucket/bob.wav"}),
    ):
        body = pool(name, namespace, model=model)
        (problem,) = plan_problems(body)
        assert problem in refusal(kube_api, body), name
    created = create(
        kube_api,
        pool("voiced", namespace, model={"name": "hertz-dev", "prompt": "pvc://voices/bob.wav"}),
    )
    assert created["spec"]["model"]["prompt"] == "pvc://voices/bob.wav"

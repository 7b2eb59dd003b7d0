"""What a pool's template can and cannot reach in its pods, checked on the pure builders.

The API server refuses a hostile template (tests/sandbox/test_pool_admission.py); these
tests show the builders drop it again, for pools that reach the operator without that check
(stored before the CRD upgrade, or through a CRD that never was upgraded).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.hostile import DRAINING, HOSTILE
from voicefleet import catalog, constants
from voicefleet.api import names
from voicefleet.api.container import EnvVar, ResourceRequirements, RuntimeContainer
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.api.template import PodTemplate, TemplateMetadata, TemplateSpec
from voicefleet.operator import builders
from voicefleet.operator.builders.template import allowed_overrides
from voicefleet.operator.planner import plan

ROOT = Path(__file__).resolve().parents[2]
POOL = builders.PoolRef(name="support-en", namespace="tenant-a", uid="uid-1")


def build(spec: VoiceAgentPoolSpec) -> dict[str, Any]:
    template = builders.build_pod_template(
        POOL,
        spec,
        plan(spec, catalog.builtin()),
        constants.CapacityType.SPOT,
        "NVIDIA-H100-80GB-HBM3",
    )
    return builders.build_pod(template, POOL, 0)


def spec(**fields: Any) -> VoiceAgentPoolSpec:
    return VoiceAgentPoolSpec.model_validate({"sessions": {"target": 40}, **fields})


def runtime(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["spec"]["containers"]
    assert container["name"] == constants.RUNTIME_CONTAINER
    return dict(container)


def test_the_allowlist_keeps_only_what_a_template_may_change() -> None:
    sidecar = {"name": "sidecar", "image": "attacker/sidecar"}
    hostile = {**HOSTILE, "spec": {**HOSTILE["spec"]}}
    hostile["spec"]["containers"] = [sidecar, *HOSTILE["spec"]["containers"]]
    assert allowed_overrides(hostile) == {
        "metadata": {
            "labels": {"team": "voice"},
            "annotations": {"karpenter.sh/do-not-disrupt": "true"},
        },
        "spec": {
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "containers": [
                {
                    "name": constants.RUNTIME_CONTAINER,
                    "resources": {"limits": {"memory": "64Gi"}},
                    "env": [{"name": "LOG_LEVEL", "value": "debug"}],
                }
            ],
        },
    }


def test_a_stored_template_that_skipped_admission_reaches_no_pod_field_it_asks_for() -> None:
    # model_construct skips validation, as a pool stored before the CRD upgrade did.
    bypassed = PodTemplate.model_construct(
        metadata=TemplateMetadata.model_construct(
            labels={constants.LABEL_POOL: "other", constants.LABEL_CAPACITY_TYPE: "x"},
            annotations={**DRAINING, constants.ANNOTATION_SPEC_HASH: "forged"},
        ),
        spec=TemplateSpec.model_construct(
            containers=[
                RuntimeContainer.model_construct(
                    name=constants.RUNTIME_CONTAINER,
                    env=[EnvVar.model_construct(name=constants.ENV_POOL_TOKEN, value="forged")],
                    resources=ResourceRequirements.model_construct(
                        limits={constants.RESOURCE_GPU: 8}
                    ),
                )
            ],
        ),
    )
    honest = build(spec())
    pod = build(spec().model_copy(update={"template": bypassed}))
    assert pod == honest  # nothing of it got through


def test_the_item_7_annotation_cannot_make_a_pod_born_draining() -> None:
    bypassed = PodTemplate.model_construct(
        metadata=TemplateMetadata.model_construct(annotations=dict(DRAINING))
    )
    pod = build(spec().model_copy(update={"template": bypassed}))
    assert constants.ANNOTATION_DRAINING not in pod["metadata"]["annotations"]


def test_runtime_pods_run_restricted_and_mount_no_token() -> None:
    pod = build(spec())
    assert pod["metadata"]["namespace"] == POOL.namespace
    pod_spec = pod["spec"]
    assert pod_spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": constants.RUNTIME_UID,
        "runAsGroup": constants.RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert runtime(pod)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # The read-only root's one writable place: /tmp, a volume of the pod's own.
    assert {"name": "tmp", "mountPath": "/tmp"} in runtime(pod)["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod_spec["volumes"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod_spec
    for field in ("hostNetwork", "hostPID", "hostIPC", "nodeName", "initContainers"):
        assert field not in pod_spec
    # Pod Security "restricted" allows only these volume kinds; the weights claim is one.
    pvc = build(spec(model={"source": "pvc://weights/moshiko"}))
    assert [set(v) - {"name"} for v in pvc["spec"]["volumes"]] == [
        {"persistentVolumeClaim"},
        {"emptyDir"},
    ]


def test_a_named_service_account_is_used_and_only_then_its_token_mounted() -> None:
    pod = build(spec(runtime={"serviceAccountName": "weights-reader"}))
    assert pod["spec"]["serviceAccountName"] == "weights-reader"
    assert pod["spec"]["automountServiceAccountToken"] is True


def test_allowed_fields_reach_the_pod() -> None:
    pod = build(
        spec(
            template={
                "metadata": {"labels": {"team": "voice"}, "annotations": {"a.example/b": "c"}},
                "spec": {
                    "priorityClassName": "voice-high",
                    "runtimeClassName": "nvidia",
                    "imagePullSecrets": [{"name": "registry"}],
                    "containers": [
                        {
                            "name": "runtime",
                            "resources": {"requests": {"cpu": 4, "memory": "32Gi"}},
                            "env": [
                                {
                                    "name": "HF_TOKEN",
                                    "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}},
                                }
                            ],
                        }
                    ],
                },
            }
        )
    )
    assert pod["metadata"]["labels"]["team"] == "voice"
    assert pod["metadata"]["annotations"]["a.example/b"] == "c"
    assert pod["spec"]["priorityClassName"] == "voice-high"
    assert pod["spec"]["runtimeClassName"] == "nvidia"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    container = runtime(pod)
    assert container["resources"]["requests"] == {
        constants.RESOURCE_GPU: "1",
        "cpu": 4,
        "memory": "32Gi",
    }
    assert [e["name"] for e in container["env"]] == [constants.ENV_POOL_TOKEN, "HF_TOKEN"]


def test_required_node_terms_narrow_the_placement_never_replace_it() -> None:
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}
    pod = build(
        spec(
            template={
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": [zone]}]
                            }
                        }
                    }
                }
            }
        )
    )
    placed = build(spec())
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    base = placed["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms["nodeSelectorTerms"] == [
        {"matchExpressions": [*t["matchExpressions"], zone]} for t in base["nodeSelectorTerms"]
    ]


def test_the_runtime_uid_is_the_images_user() -> None:
    dockerfile = (ROOT / "runtime" / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER\s+(\S+)\s*$", dockerfile, flags=re.MULTILINE)
    assert user.split(":")[0] == str(constants.RUNTIME_UID)


DNS_1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"


def _invalid_derived_names(pool_name: str) -> list[str]:
    """The names the builders derive from ``pool_name`` that Kubernetes would refuse."""
    pool = builders.PoolRef(name=pool_name, namespace="ns", uid="u")
    services = [builders.service_name(pool), builders.headless_service_name(pool)]
    label_value = builders.selector_labels(pool)[constants.LABEL_POOL]
    subdomains = [
        builders.secret_name(pool),
        builders.pdb_name(pool),
        builders.pod_name(pool, names.LARGEST_ORDINAL),
    ]
    bad = [n for n in services if len(n) > 63 or not re.fullmatch(DNS_1035_LABEL, n)]
    bad += [n for n in subdomains if len(n) > 253 or not re.fullmatch(DNS_SUBDOMAIN, n)]
    if len(label_value) > 63 or not re.fullmatch(LABEL_VALUE, label_value):
        bad.append(label_value)
    return bad


def test_the_pool_name_bound_is_the_longest_name_that_leaves_every_derived_name_valid() -> None:
    longest = "p" * names.MAX_POOL_NAME
    assert names.MAX_POOL_NAME == 58
    assert _invalid_derived_names(longest) == []
    assert names.name_problem(longest) is None
    assert _invalid_derived_names(longest + "p") == [longest + "p" + "-pods"]
    assert names.name_problem(longest + "p") == names.LENGTH_MESSAGE
    assert "at most 58" in names.LENGTH_MESSAGE
    assert _invalid_derived_names("voice.support")
    assert names.name_problem("voice.support") == names.FORM_MESSAGE

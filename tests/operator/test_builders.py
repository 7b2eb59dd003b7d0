"""The pure builders: every manifest the operator applies, checked without a cluster."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from pydantic import ValidationError

from voicefleet import catalog, constants
from voicefleet.api.manifest import describe
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator import builders
from voicefleet.operator.builders.merge import merge
from voicefleet.operator.planner import plan

POOL = builders.PoolRef(name="support-en", namespace="voice", uid="uid-1", generation=3)


def spec(**overrides: Any) -> VoiceAgentPoolSpec:
    return VoiceAgentPoolSpec.model_validate(
        {"sessions": {"target": 100}, "capacity": {"strategy": "spot-first"}, **overrides}
    )


def template(kind: str = constants.CapacityType.SPOT, **overrides: Any) -> dict[str, Any]:
    s = spec(**overrides)
    return builders.build_pod_template(
        POOL, s, plan(s, catalog.builtin()), kind, "NVIDIA-H100-80GB-HBM3"
    )


def container(pod: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = pod["spec"]["containers"][0]
    return found


def test_every_object_is_owned_by_the_pool_and_labelled() -> None:
    token = builders.pool_token(b"key", POOL)
    objects = [
        builders.build_secret(POOL, token),
        builders.build_service(POOL, gateway=True),
        builders.build_service(POOL, gateway=False),
        builders.build_headless_service(POOL),
        builders.build_pdb(POOL),
        builders.build_pod(template(), POOL, 0),
        builders.build_gateway_deployment(POOL, spec()),
        builders.build_gateway_pdb(POOL),
    ]
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == "voice"
        assert meta["labels"][constants.LABEL_POOL] == "support-en"
        (owner,) = meta["ownerReferences"]
        assert owner == {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "name": "support-en",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }


def test_token_is_an_hmac_of_the_uid_and_lands_in_the_secret() -> None:
    token = builders.pool_token(b"key", POOL)
    assert token == builders.pool_token(b"key", POOL)
    assert token != builders.pool_token(b"other", POOL)
    other_uid = builders.PoolRef(name="support-en", namespace="voice", uid="uid-2")
    assert token != builders.pool_token(b"key", other_uid)
    secret = builders.build_secret(POOL, token)
    assert base64.b64decode(secret["data"][constants.POOL_TOKEN_KEY]).decode() == token


def test_services_select_runtime_pods_on_the_runtime_port() -> None:
    service = builders.build_service(POOL, gateway=False)
    headless = builders.build_headless_service(POOL)
    # Callers reach only pods not marked draining; the headless Service names every pod.
    assert service["spec"]["selector"] == {
        **builders.selector_labels(POOL),
        constants.LABEL_SERVING: constants.SERVING_YES,
    }
    assert headless["spec"]["selector"] == builders.selector_labels(POOL)
    assert service["spec"]["ports"][0]["port"] == constants.RUNTIME_PORT
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["metadata"]["name"] != service["metadata"]["name"]


def test_with_a_gateway_callers_reach_its_replicas_and_never_a_runtime_pod_directly() -> None:
    service = builders.build_service(POOL, gateway=True)
    deployment = builders.build_gateway_deployment(POOL, spec())
    runtime_pod = builders.build_pod(template(), POOL, 0)
    selector = service["spec"]["selector"]
    gateway_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= gateway_labels.items()
    assert not selector.items() <= runtime_pod["metadata"]["labels"].items()
    # ... and the runtime's selectors (PDB, headless Service, scale) never take a gateway.
    runtime_selector = builders.selector_labels(POOL)
    assert not runtime_selector.items() <= gateway_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    pdb = builders.build_gateway_pdb(POOL)
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["metadata"]["name"] == deployment["metadata"]["name"] == "support-en-gateway"


def test_the_gateway_runs_unprivileged_from_the_operators_image_on_on_demand_nodes() -> None:
    settings = builders.PodSettings(gateway_image="registry.example/voicefleet/operator:9")
    deployment = builders.build_gateway_deployment(
        POOL, spec(sessions={"target": 100, "maxSessionSeconds": 180}), settings
    )
    assert deployment["spec"]["replicas"] == 2
    # A rollout adds a replica before taking one away: no conversation waits for a gateway.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = deployment["spec"]["template"]["spec"]
    (box,) = pod["containers"]
    assert box["image"] == "registry.example/voicefleet/operator:9"
    assert box["command"] == ["voicefleet", "gateway"]
    # Backends from the operator; a replaced replica keeps a conversation as long as it may last.
    assert "--backends-pushed" in box["args"] and "--drain-seconds=180" in box["args"]
    assert pod["terminationGracePeriodSeconds"] > 180
    (token,) = box["env"]
    assert token["name"] == constants.ENV_POOL_TOKEN
    assert token["valueFrom"]["secretKeyRef"]["name"] == builders.secret_name(POOL)
    # No Kubernetes API access, nothing privileged: Pod Security "restricted".
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert box["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert constants.RESOURCE_GPU not in box["resources"]["requests"]
    # Kept off spot nodes of every cloud, and off GPU nodes (no GPU toleration).
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {e["key"] for e in term["matchExpressions"] if e["operator"] == "NotIn"} >= {
        constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE,
        constants.NODE_LABEL_GKE_SPOT,
    }
    assert pod["tolerations"] == []
    anywhere = builders.build_gateway_deployment(
        POOL, spec(gateway={"capacityType": "any", "replicas": 3})
    )
    assert set(anywhere["spec"]["template"]["spec"]["affinity"]) == {"podAntiAffinity"}
    assert set(pod["affinity"]) == {"nodeAffinity", "podAntiAffinity"}
    assert anywhere["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    ("gateway", "error"),
    [
        ({"replicas": 1}, "gateway.replicas must be at least 2 while the gateway is enabled"),
        ({"enabled": False, "replicas": 1}, None),
        ({"capacityType": "spot"}, "capacityType"),
    ],
)
def test_gateway_settings_are_checked(gateway: dict[str, Any], error: str | None) -> None:
    try:
        VoiceAgentPoolSpec.model_validate({"gateway": gateway})
    except ValidationError as exc:
        problems = [describe(e, ("spec",)) for e in exc.errors()]
    else:
        problems = []
    if error is None:
        assert problems == [], problems
    else:
        assert any(error in p for p in problems), problems


def test_applied_hash_changes_with_content_only() -> None:
    a = builders.build_pdb(POOL)
    b = builders.build_pdb(POOL)
    key = constants.ANNOTATION_APPLIED_HASH
    assert a["metadata"]["annotations"][key] == b["metadata"]["annotations"][key]
    other = builders.build_pdb(builders.PoolRef("support-en", "voice", "uid-9"))
    assert other["metadata"]["annotations"][key] != a["metadata"]["annotations"][key]
    assert a["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_pod_requests_one_gpu_probes_and_grace_from_drain_seconds() -> None:
    pod = builders.build_pod(
        template(capacity={"strategy": "spot-first", "interruption": {"drainSeconds": 90}}),
        POOL,
        4,
    )
    assert pod["metadata"]["name"] == "support-en-4"
    c = container(pod)
    assert c["resources"]["limits"][constants.RESOURCE_GPU] == "1"
    assert c["readinessProbe"]["httpGet"]["path"] == constants.PATH_READYZ
    assert c["livenessProbe"]["httpGet"]["path"] == constants.PATH_HEALTHZ
    assert pod["spec"]["terminationGracePeriodSeconds"] == 90 + 30
    assert "90" in c["lifecycle"]["preStop"]["exec"]["command"]
    assert constants.PATH_DRAIN in c["lifecycle"]["preStop"]["exec"]["command"][2]
    env = c["env"][0]
    assert env["name"] == constants.ENV_POOL_TOKEN
    assert env["valueFrom"]["secretKeyRef"]["name"] == builders.secret_name(POOL)


def test_runtime_args_carry_slots_session_cap_and_source() -> None:
    s = spec(
        model={"name": "moshi", "source": "hf://kyutai/moshika-pytorch-bf16"},
        sessions={"target": 100, "maxSessionSeconds": 120},
    )
    p = plan(s, catalog.builtin())
    args = container(builders.build_pod_template(POOL, s, p, constants.CapacityType.SPOT, None))[
        "args"
    ]
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--max-sessions"] == str(p.sessions_per_pod)
    assert pairs["--max-session-seconds"] == "120"
    assert pairs["--weights"] == "hf://kyutai/moshika-pytorch-bf16"
    assert pairs["--backend"] == "moshi"


def test_an_fp8_kv_cache_reaches_the_runtime_flag_and_bf16_adds_none() -> None:
    for dtype, wanted in (("fp8", ["--kv-cache-dtype", "fp8"]), ("bf16", [])):
        s = spec(model={"name": "moshi", "kvCacheDtype": dtype})
        p = plan(s, catalog.builtin())
        args = container(
            builders.build_pod_template(POOL, s, p, constants.CapacityType.SPOT, None)
        )["args"]
        found = args[args.index("--kv-cache-dtype") :][:2] if "--kv-cache-dtype" in args else []
        assert found == wanted
        assert args[args.index("--max-sessions") + 1] == str(p.sessions_per_pod)


def test_pvc_source_becomes_a_read_only_mount() -> None:
    pod = template(model={"source": "pvc://weights/moshiko"})
    volume = pod["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
    args = container(pod)["args"]
    assert args[args.index("--weights") + 1].endswith("/moshiko")


def test_a_hertz_dev_prompt_reaches_the_runtime_and_a_pvc_one_is_mounted() -> None:
    hub = template(model={"name": "hertz-dev", "prompt": "hf://org/voices/bob.wav"})
    args = container(hub)["args"]
    assert args[args.index("--backend") + 1] == "hertz-dev"
    assert args[args.index("--prompt") + 1] == "hf://org/voices/bob.wav"
    pod = template(
        model={
            "name": "hertz-dev",
            "source": "pvc://weights/hertz",
            "prompt": "pvc://voices/agents/bob.wav",
        }
    )
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}  # fmt: skip
    assert sorted(c["claimName"] for c in claims.values()) == ["voices", "weights"]
    assert all(c["readOnly"] for c in claims.values())
    mounts = {m["name"]: m for m in container(pod)["volumeMounts"]}
    (prompt_volume,) = [name for name, c in claims.items() if c["claimName"] == "voices"]
    args = container(pod)["args"]
    mount = mounts[prompt_volume]
    assert mount["readOnly"]
    assert args[args.index("--prompt") + 1] == f"{mount['mountPath']}/agents/bob.wav"
    assert "--prompt" not in container(template(model={"name": "hertz-dev"}))["args"]


def _terms(pod: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = pod["spec"]["affinity"]["nodeAffinity"]
    terms: list[dict[str, Any]] = affinity["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return terms


@pytest.mark.parametrize(
    ("labels", "spot"),
    [
        ({constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE: "spot"}, True),
        ({constants.NODE_LABEL_EKS_CAPACITY_TYPE: "SPOT"}, True),
        ({constants.NODE_LABEL_GKE_SPOT: "true"}, True),
        ({constants.NODE_LABEL_AKS_PRIORITY: "spot"}, True),
        ({constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE: "on-demand"}, False),
        ({constants.NODE_LABEL_EKS_CAPACITY_TYPE: "ON_DEMAND"}, False),
        ({}, False),
    ],
)
def test_spot_and_on_demand_affinity_match_each_clouds_labels(
    labels: dict[str, str], spot: bool
) -> None:
    labels = {**labels, constants.NODE_LABEL_GPU_PRODUCT: "NVIDIA-H100-80GB-HBM3"}

    def matches(pod: dict[str, Any]) -> bool:
        # A tiny node-affinity evaluator: terms ORed, expressions ANDed.
        def ok(e: dict[str, Any]) -> bool:
            if e["operator"] == "In":
                return labels.get(e["key"]) in e["values"]
            return labels.get(e["key"]) not in e["values"]

        return any(all(ok(e) for e in t["matchExpressions"]) for t in _terms(pod))

    assert matches(template(constants.CapacityType.SPOT)) is spot
    assert matches(template(constants.CapacityType.ON_DEMAND)) is not spot


def test_spot_pods_tolerate_aks_and_gke_spot_taints() -> None:
    spot_keys = {t["key"] for t in template(constants.CapacityType.SPOT)["spec"]["tolerations"]}
    od_keys = {t["key"] for t in template(constants.CapacityType.ON_DEMAND)["spec"]["tolerations"]}
    assert constants.NODE_LABEL_AKS_PRIORITY in spot_keys
    assert constants.NODE_LABEL_GKE_SPOT in spot_keys
    assert constants.NODE_LABEL_AKS_PRIORITY not in od_keys


def test_template_merges_over_defaults() -> None:
    # What it may not take is in test_builders_template.py.
    pod = template(
        template={
            "metadata": {"labels": {"team": "voice"}},
            "spec": {
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "containers": [
                    {"name": "runtime", "env": [{"name": "LOG_LEVEL", "value": "debug"}]}
                ],
                "priorityClassName": "voice-high",
            },
        }
    )
    assert pod["metadata"]["labels"]["team"] == "voice"
    assert pod["metadata"]["labels"][constants.LABEL_POOL] == "support-en"
    assert pod["spec"]["priorityClassName"] == "voice-high"
    tolerations = {t["key"] for t in pod["spec"]["tolerations"]}
    assert {"dedicated", constants.RESOURCE_GPU} <= tolerations
    env = {e["name"] for e in container(pod)["env"]}
    assert env == {constants.ENV_POOL_TOKEN, "LOG_LEVEL"}
    assert container(pod)["image"]  # the rest of the container survives


def test_merge_replaces_scalars_and_plain_lists() -> None:
    assert merge({"a": [1, 2], "b": {"c": 1}}, {"a": [3], "b": {"d": 2}}) == {
        "a": [3],
        "b": {"c": 1, "d": 2},
    }


def test_spec_hash_tracks_image_and_slots_not_the_target() -> None:
    key = constants.ANNOTATION_SPEC_HASH

    def digest(**kw: Any) -> str:
        return str(template(**kw)["metadata"]["annotations"][key])

    base = digest()
    assert digest(sessions={"target": 110}) == base  # same pods, just more of them
    assert digest(runtime={"image": "ghcr.io/voicefleet/runtime:0.2.0"}) != base
    assert digest(sessions={"target": 100, "maxPerPod": 10}) != base


def test_avoided_nodes_go_into_every_affinity_term_without_changing_the_hash() -> None:
    t = template()
    before = copy.deepcopy(t)
    pod = builders.build_pod(t, POOL, 1, avoid_nodes=("node-b", "node-a"))
    for term in _terms(pod):
        assert {
            "key": constants.NODE_LABEL_HOSTNAME,
            "operator": "NotIn",
            "values": ["node-a", "node-b"],
        } in term["matchExpressions"]
    key = constants.ANNOTATION_SPEC_HASH
    assert pod["metadata"]["annotations"][key] == t["metadata"]["annotations"][key]
    assert t == before  # the shared template is not modified
    # Remembered, so the pod can be remade once those nodes recover.
    assert pod["metadata"]["annotations"][constants.ANNOTATION_AVOID_NODES] == "node-a,node-b"
    assert builders.build_pod(t, POOL, 2)["metadata"]["annotations"].keys() == (
        t["metadata"]["annotations"].keys()
    )


def test_a_new_pod_takes_callers_and_the_label_is_outside_the_spec_hash() -> None:
    t = template()
    pod = builders.build_pod(t, POOL, 0)
    assert pod["metadata"]["labels"][constants.LABEL_SERVING] == constants.SERVING_YES
    assert constants.LABEL_SERVING not in t["metadata"]["labels"]


def test_ownership_is_the_pools_uid_in_an_owner_reference_never_a_name() -> None:
    pdb = builders.build_pdb(POOL)
    assert builders.owned_by(pdb, POOL)
    twin = builders.PoolRef(name=POOL.name, namespace=POOL.namespace, uid="uid-of-another")
    assert not builders.owned_by(pdb, twin)
    stranger = {"metadata": {"name": POOL.name, "labels": builders.selector_labels(POOL)}}
    assert not builders.owned_by(stranger, POOL)


def test_ordinals_round_trip() -> None:
    assert builders.ordinal_of(POOL, builders.pod_name(POOL, 12)) == 12
    assert builders.ordinal_of(POOL, "support-en-token") is None
    assert builders.ordinal_of(POOL, "other-3") is None


def test_runtime_pods_request_cpu_and_memory_from_the_catalog_and_limit_memory() -> None:
    # Not BestEffort (evicted first): requests from the model's catalog entry.
    resources = container(template())["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "24Gi", constants.RESOURCE_GPU: "1"}
    assert resources["limits"] == {"memory": "48Gi", constants.RESOURCE_GPU: "1"}
    # The pool may override them (the template's resources merge over the catalog's).
    changed = template(
        template={"spec": {"containers": [{"name": "runtime", "resources": {
            "requests": {"memory": "30Gi"}, "limits": {"memory": "60Gi"}}}]}}
    )  # fmt: skip
    assert container(changed)["resources"]["requests"]["memory"] == "30Gi"
    assert container(changed)["resources"]["limits"]["memory"] == "60Gi"
    assert container(changed)["resources"]["requests"]["cpu"] == "4"


def test_an_empty_runtime_image_is_the_operators_own_version_and_a_set_one_wins() -> None:
    assert spec().runtime.image == ""
    assert container(template())["image"] == constants.DEFAULT_RUNTIME_IMAGE
    settings = builders.PodSettings(runtime_image="registry.example/voicefleet/runtime:9.9")
    s = spec()
    pod = builders.build_pod_template(
        POOL, s, plan(s, catalog.builtin()), "spot", None, settings=settings
    )
    assert container(pod)["image"] == "registry.example/voicefleet/runtime:9.9"
    # A new operator version changes the pods of pools that name no image: a rollout.
    assert pod["metadata"]["annotations"] != template()["metadata"]["annotations"]
    pinned = template(runtime={"image": "mine/runtime:1"})
    assert container(pinned)["image"] == "mine/runtime:1"


def test_a_tiny_pool_runs_on_the_cpu_without_a_gpu() -> None:
    s = spec(model={"name": "tiny"}, sessions={"target": 3})
    planned = plan(s, catalog.builtin())
    assert (planned.sessions_per_pod, planned.gpu, planned.replicas) == (2, "CPU", 3)
    assert planned.cost_per_hour is None  # GPU-hour prices say nothing about CPU pods
    pod = builders.build_pod_template(POOL, s, planned, "spot", "NVIDIA-H100-80GB-HBM3")
    runtime = container(pod)
    assert constants.RESOURCE_GPU not in runtime["resources"]["requests"]
    assert constants.RESOURCE_GPU not in runtime["resources"]["limits"]
    args = runtime["args"]
    assert args[args.index("--backend") + 1] == "tiny"
    assert args[args.index("--device") + 1] == "cpu" and "--variant" not in args
    # No GPU product in its node affinity, no GPU taint tolerated: any spot node fits.
    assert constants.NODE_LABEL_GPU_PRODUCT not in str(pod["spec"]["affinity"])
    assert all(t["key"] != constants.RESOURCE_GPU for t in pod["spec"]["tolerations"])

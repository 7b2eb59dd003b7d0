"""Manifest validation speaks the API server's words, including the CRD's CEL messages."""

from __future__ import annotations

import pytest

from voicefleet import catalog, constants
from voicefleet.api.manifest import Document, ManifestError, documents, parse_pool
from voicefleet.api.model_spec import ModelSpec


def pool(spec: dict[str, object]) -> Document:
    body = {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceAgentPool",
        "metadata": {"name": "p"},
        "spec": spec,
    }
    return Document(index=0, body=body)


def problems(spec: dict[str, object]) -> list[str]:
    with pytest.raises(ManifestError) as err:
        parse_pool(pool(spec))
    return err.value.problems


def test_bounds_are_reported_like_the_api_server() -> None:
    assert problems({"capacity": {"spotPercentage": 150}}) == [
        "spec.capacity.spotPercentage: Invalid value: 150: spec.capacity.spotPercentage "
        "in body should be less than or equal to 100"
    ]


def test_enum_and_unknown_field() -> None:
    found = problems({"capacity": {"strategy": "cheap", "spotPercent": 3}})
    assert 'spec.capacity.strategy: Unsupported value: "cheap"' in found[0]
    assert found[1] == 'spec.capacity: unknown field "spotPercent"'


def test_cross_field_rules_use_the_crd_message_on_the_blamed_field() -> None:
    (message,) = problems({"capacity": {"strategy": "spot-only", "onDemandBase": 2}})
    assert message.startswith("spec.capacity.onDemandBase: Invalid value: ")
    assert "set onDemandBase to 0" in message
    (message,) = problems({"model": {"name": "hertz-dev", "variant": "moshiko-bf16"}})
    assert message.startswith("spec.model.variant:")
    (message,) = problems({"sessions": {"maxSessionSeconds": 300}})
    assert "at most 240 for moshi" in message


def test_every_catalog_model_is_an_allowed_model_name_and_has_rules() -> None:
    for name in catalog.models():
        assert ModelSpec(name=name).name == name
    # One variant rule per model, one KV cache rule per model whose variants do not all
    # offer fp8 (hertz-dev), and the prompt's.
    kv_limited = [
        p for p in catalog.models().values() if not all(v.kv_cache for v in p.variants.values())
    ]
    assert len(ModelSpec.RULES) == len(catalog.models()) + len(kv_limited) + 1


def test_an_unknown_model_lists_the_catalog_names() -> None:
    (message,) = problems({"model": {"name": "gpt-voice"}})
    expected = ", ".join(f'"{name}"' for name in catalog.models())
    assert message == (
        f'spec.model.name: Unsupported value: "gpt-voice": supported values: {expected}'
    )


def test_defaults_fill_a_minimal_pool() -> None:
    parsed = parse_pool(pool({}))
    assert parsed.spec.sessions.max_session_seconds == 240
    assert parsed.spec.capacity.strategy == "on-demand"


def test_documents_skip_empty_and_reject_non_mappings() -> None:
    assert [d.index for d in documents("---\n---\na: 1\n", "f")] == [1]
    with pytest.raises(ManifestError, match="not a mapping"):
        list(documents("- 1\n", "f"))


def test_a_spec_validated_alone_is_described_from_spec() -> None:
    # The operator validates only the spec it reads from the API server.
    from pydantic import ValidationError  # noqa: PLC0415

    from voicefleet.api.manifest import describe  # noqa: PLC0415
    from voicefleet.api.pool import VoiceAgentPoolSpec  # noqa: PLC0415

    with pytest.raises(ValidationError) as err:
        VoiceAgentPoolSpec.model_validate({"capacity": {"spotPercentage": 150}})
    (error,) = err.value.errors()
    assert describe(error, prefix=("spec",)).startswith(
        "spec.capacity.spotPercentage: Invalid value: 150: spec.capacity.spotPercentage in body"
    )


def runtime_container(**fields: object) -> dict[str, object]:
    return {"spec": {"containers": [{"name": "runtime", **fields}]}}


def named(name: str, spec: dict[str, object] | None = None) -> Document:
    body = pool(spec or {}).body
    return Document(index=0, body={**body, "metadata": {"name": name}})


@pytest.mark.parametrize(
    ("template", "path", "words"),
    [
        ({"metadata": {"namespace": "kube-system"}}, "metadata.namespace", "own namespace"),
        (
            {"metadata": {"annotations": {constants.ANNOTATION_DRAINING: "true"}}},
            "metadata.annotations",
            "are the operator's",
        ),
        (
            {"metadata": {"labels": {constants.LABEL_MANAGED_BY: "me"}}},
            "metadata.labels",
            "are the operator's",
        ),
        (
            {"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/x": ""}}},
            "metadata.annotations",
            "reserved for Kubernetes",
        ),
        ({"metadata": {"finalizers": ["a/b"]}}, "metadata.finalizers", "may not be set"),
        ({"spec": {"serviceAccountName": "admin"}}, "spec.serviceAccountName", "spec.runtime"),
        ({"spec": {"hostPID": True}}, "spec.hostPID", "node's namespaces"),
        ({"spec": {"hostNetwork": True}}, "spec.hostNetwork", "node's namespaces"),
        ({"spec": {"hostIPC": True}}, "spec.hostIPC", "node's namespaces"),
        ({"spec": {"nodeName": "n"}}, "spec.nodeName", "bypasses the scheduler"),
        ({"spec": {"securityContext": {"runAsUser": 0}}}, "spec.securityContext", "restricted"),
        (
            {"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}},
            "spec.volumes",
            "pvc://",
        ),
        (
            runtime_container(securityContext={"privileged": True}),
            "spec.containers[0].securityContext",
            "restricted",
        ),
        (
            {"spec": {"containers": [{"name": "sidecar"}]}},
            "spec.containers[0].name",
            "name it runtime",
        ),
        (
            runtime_container(env=[{"name": constants.ENV_POOL_TOKEN, "value": "x"}]),
            "spec.containers[0].env[0].name",
            "is the operator's",
        ),
        (
            runtime_container(resources={"limits": {constants.RESOURCE_GPU: 2}}),
            "spec.containers[0].resources.limits",
            "exactly one GPU",
        ),
    ],
)  # fmt: skip
def test_a_template_field_outside_the_allowlist_is_refused_by_name(
    template: dict[str, object], path: str, words: str
) -> None:
    (message,) = problems({"template": template})
    assert message.startswith(f'spec.template.{path}: Invalid value: "object": ')
    assert words in message


def test_a_template_field_nobody_declared_is_an_unknown_field() -> None:
    assert problems({"template": {"spec": {"schedulerName": "mine"}}}) == [
        'spec.template.spec: unknown field "schedulerName"'
    ]


def test_what_a_template_may_set_is_accepted() -> None:
    parse_pool(
        pool(
            {
                "runtime": {"serviceAccountName": "weights-reader"},
                "template": {
                    "metadata": {
                        "labels": {"team": "voice", "app.kubernetes.io/part-of": "support"},
                        "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
                    },
                    "spec": {
                        "nodeSelector": {"topology.kubernetes.io/zone": "a"},
                        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                        "priorityClassName": "voice-high",
                        "containers": [
                            {
                                "name": "runtime",
                                "resources": {"limits": {"memory": "64Gi", "cpu": 8}},
                                "env": [
                                    {
                                        "name": "HF_TOKEN",
                                        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}},
                                    }
                                ],
                            }
                        ],
                    },
                },
            }
        )
    )


def test_a_pool_name_that_breaks_a_derived_name_is_refused_with_the_limit() -> None:
    parse_pool(named("p" * 58))
    with pytest.raises(ManifestError) as err:
        parse_pool(named("p" * 59))
    assert err.value.problems == [
        'metadata.name: Invalid value: "object": metadata.name must be at most 58 characters: '
        "the pool's headless Service is named <name>-pods, which may be at most 63"
    ]
    with pytest.raises(ManifestError) as err:
        parse_pool(named("support.en"))
    (message,) = err.value.problems
    assert message.startswith('metadata.name: Invalid value: "object": metadata.name must be a DNS')


def test_a_second_container_is_too_many_like_the_api_server_says() -> None:
    two = [{"name": "runtime"}, {"name": "sidecar"}]
    assert problems({"template": {"spec": {"containers": two}}}) == [
        "spec.template.spec.containers: Too many: 2: must have at most 1 item"
    ]


def test_a_prompt_is_for_hertz_dev_only_and_must_name_a_file() -> None:
    (message,) = problems({"model": {"name": "moshi", "prompt": "hf://org/voices/bob.wav"}})
    assert message.startswith("spec.model.prompt: Invalid value: ")
    assert "prompt is for model hertz-dev only" in message
    for bad in ("s3://bucket/bob.wav", "hf://org/repo", "pvc://claim", "bob.wav"):
        (message,) = problems({"model": {"name": "hertz-dev", "prompt": bad}})
        assert message.startswith(f'spec.model.prompt: Invalid value: "{bad}"'), message
        assert "should match" in message
    parsed = parse_pool(pool({"model": {"name": "hertz-dev", "prompt": "pvc://voices/bob.wav"}}))
    assert parsed.spec.model.prompt == "pvc://voices/bob.wav"


def test_a_kv_cache_dtype_is_bf16_or_fp8_and_fp8_only_where_the_catalog_offers_it() -> None:
    assert parse_pool(pool({})).spec.model.kv_cache_dtype == constants.KvCacheDtype.BF16
    for name in ("moshi", "tiny"):
        parsed = parse_pool(pool({"model": {"name": name, "kvCacheDtype": "fp8"}}))
        assert parsed.spec.model.kv_cache_dtype == constants.KvCacheDtype.FP8
    (message,) = problems({"model": {"name": "moshi", "kvCacheDtype": "fp4"}})
    assert message.startswith('spec.model.kvCacheDtype: Unsupported value: "fp4"'), message
    (message,) = problems({"model": {"name": "hertz-dev", "kvCacheDtype": "fp8"}})
    assert message.startswith("spec.model.kvCacheDtype: Invalid value: "), message
    assert "kvCacheDtype fp8 is not offered for model hertz-dev; remove it or set bf16" in message
    parsed = parse_pool(pool({"model": {"name": "hertz-dev", "kvCacheDtype": "bf16"}}))
    assert parsed.spec.model.kv_cache_dtype == constants.KvCacheDtype.BF16

"""Manifest validation speaks the API server's words, including the CRD's CEL messages."""

from __future__ import annotations

import pytest

from voicefleet import catalog
from voicefleet.api.manifest import Document, ManifestError, documents, parse_pool
from voicefleet.api.pool import ModelSpec


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
    names = ModelSpec.model_fields["name"].annotation
    assert set(names.__args__) == set(catalog.models())  # type: ignore[union-attr]
    assert len(ModelSpec.RULES) == len(catalog.models())


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

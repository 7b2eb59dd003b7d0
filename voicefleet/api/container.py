"""The runtime container's part of a template: its resources (not its GPU) and its env.

``valueFrom`` may read a Secret or ConfigMap key: a pod reads those of its own namespace
only, as a Deployment's pods may (e.g. ``HF_TOKEN`` for gated weights).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints

from voicefleet import constants
from voicefleet.api.formats import (
    CONFIG_KEY_PATTERN,
    ENV_NAME_PATTERN,
    Key,
    ObjectName,
    Opaque,
    Quantity,
    key_format_rule,
    refusal_rules,
    refused,
)
from voicefleet.api.model import ApiModel
from voicefleet.api.rules import Rule


class KeyReference(ApiModel):
    """One key of a Secret or ConfigMap of the pool's namespace."""

    name: ObjectName = Field(description="The object's name (in the pool's namespace).")
    key: Annotated[str, StringConstraints(max_length=253, pattern=CONFIG_KEY_PATTERN)] = Field(
        description="The key."
    )
    optional: bool | None = Field(default=None, description="Start even if it is missing.")


class FieldReference(ApiModel):
    """A field of the pod itself."""

    field_path: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="e.g. metadata.name, status.podIP."
    )
    api_version: str | None = Field(default=None, max_length=32, description="Default: v1.")


class ResourceFieldReference(ApiModel):
    """A resource request or limit of the runtime container."""

    resource: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="e.g. limits.memory."
    )
    container_name: str | None = Field(default=None, max_length=63, description="runtime.")
    divisor: Quantity | None = Field(default=None, description="Unit of the value.")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from: exactly one of these."""

    secret_key_ref: KeyReference | None = Field(
        default=None, description="A key of a Secret of the pool's namespace."
    )
    config_map_key_ref: KeyReference | None = Field(
        default=None, description="A key of a ConfigMap of the pool's namespace."
    )
    field_ref: FieldReference | None = Field(default=None, description="A field of the pod.")
    resource_field_ref: ResourceFieldReference | None = Field(
        default=None, description="A resource of the container."
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = (
        Rule["EnvVarSource"](
            cel=(
                "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
                "has(self.resourceFieldRef)].filter(x, x).size() == 1"
            ),
            message=(
                "set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef"
            ),
            violated=lambda s: (
                sum(
                    ref is not None
                    for ref in (
                        s.secret_key_ref,
                        s.config_map_key_ref,
                        s.field_ref,
                        s.resource_field_ref,
                    )
                )
                != 1
            ),
        ),
    )


class EnvVar(ApiModel):
    """An environment variable of the runtime container."""

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    ] = Field(description="The variable's name.")
    value: str | None = Field(default=None, max_length=32768, description="A literal value.")
    value_from: EnvVarSource | None = Field(
        default=None, description="Or where the value comes from."
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = (
        Rule["EnvVar"](
            cel="!has(self.value) || !has(self.valueFrom)",
            message="set value or valueFrom, not both",
            violated=lambda e: e.value is not None and e.value_from is not None,
            field_path=".valueFrom",
        ),
        Rule["EnvVar"](
            cel=f"self.name != '{constants.ENV_POOL_TOKEN}'",
            message=(
                f"{constants.ENV_POOL_TOKEN} is the operator's: it carries the pool token "
                "from the pool's Secret"
            ),
            violated=lambda e: e.name == constants.ENV_POOL_TOKEN,
            field_path=".name",
        ),
    )


ResourceMap = dict[Key, Quantity]


class ResourceRequirements(ApiModel):
    """CPU, memory and other resources of the runtime container (its GPU is the operator's)."""

    requests: ResourceMap | None = Field(
        default=None, max_length=16, description="Resources requested, e.g. cpu, memory."
    )
    limits: ResourceMap | None = Field(
        default=None, max_length=16, description="Resource limits, e.g. memory."
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = ()  # filled below


def _no_gpu_rule(wire: str) -> Rule[ResourceRequirements]:
    gpu = constants.RESOURCE_GPU

    def violated(r: ResourceRequirements) -> bool:
        return gpu in (getattr(r, wire) or {})

    return Rule(
        cel=f"!has(self.{wire}) || !('{gpu}' in self.{wire})",
        message=f"{gpu} is the operator's: every runtime pod gets exactly one GPU",
        violated=violated,
        field_path=f".{wire}",
    )


ResourceRequirements.RULES = (
    key_format_rule("requests", "requests"),
    key_format_rule("limits", "limits"),
    _no_gpu_rule("requests"),
    _no_gpu_rule("limits"),
)


class RuntimeContainer(ApiModel):
    """Changes to the runtime container (the only container of a runtime pod)."""

    name: str = Field(
        max_length=63,
        description=f"The container to change: always {constants.RUNTIME_CONTAINER}.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU and memory requests and limits (the GPU is the operator's)."
    )
    env: list[EnvVar] | None = Field(
        default=None,
        max_length=64,
        description=(
            "Extra environment variables. valueFrom may read Secrets and ConfigMaps of the "
            "pool's namespace (e.g. HF_TOKEN for gated weights), as a Deployment's pods may."
        ),
    )
    image: str | None = refused("set spec.runtime.image")
    command: list[str] | None = refused("the operator runs the runtime with the pool's settings")
    args: list[str] | None = refused("the operator runs the runtime with the pool's settings")
    security_context: Opaque | None = refused(
        "runtime pods run under the operator's restricted security context"
    )
    volume_mounts: list[Opaque] | None = refused(
        "weights come from spec.model.source (pvc://claim/path mounts a claim read-only)"
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = ()  # filled below


RuntimeContainer.RULES = (
    Rule["RuntimeContainer"](
        cel=f"self.name == '{constants.RUNTIME_CONTAINER}'",
        message=(
            f"a pool's pods run one container, {constants.RUNTIME_CONTAINER}: "
            f"name it {constants.RUNTIME_CONTAINER}"
        ),
        violated=lambda c: c.name != constants.RUNTIME_CONTAINER,
        field_path=".name",
    ),
    Rule["RuntimeContainer"](
        cel="!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))",
        message="env names must be unique",
        violated=lambda c: len({e.name for e in c.env or []}) != len(c.env or []),
        field_path=".env",
    ),
    *refusal_rules(RuntimeContainer),
)

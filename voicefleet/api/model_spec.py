"""``spec.model`` of a VoiceAgentPool: which catalog model the pool serves, its weights and,
for Hertz-dev, its voice prompt.

The model names and each model's variants come from the catalog (models.yaml), so a model
added there is accepted here, listed in the CRD's enum and given its variant rule without a
second list to keep equal.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from voicefleet import catalog, constants
from voicefleet.api.model import ApiModel
from voicefleet.api.rules import Rule

HERTZ_DEV = "hertz-dev"
# A file in a hub repository (org/repo/path), on the node or image, or in a volume claim.
PROMPT_PATTERN = r"^(hf://[^/]+/[^/]+/.+|file:///.+|pvc://[^/]+/.+)$"


def _known_model(name: str) -> str:
    """A catalog model's name, or the error pydantic gives for an enum (same words)."""
    known = [f"'{key}'" for key in catalog.models()]
    if name not in catalog.models():
        expected = ", ".join(known[:-1]) + f" or {known[-1]}" if len(known) > 1 else known[0]
        raise PydanticCustomError(
            "enum", "Input should be {expected} (the model catalog)", {"expected": expected}
        )
    return name


# A catalog key: the names come from the model catalog (models.yaml), so a model added there
# is accepted here and listed in the CRD's enum without a second list to keep equal.
ModelName = Annotated[
    str,
    AfterValidator(_known_model),
    Field(json_schema_extra={"enum": list(catalog.models())}),
]


def _variant_rules() -> tuple[Rule[ModelSpec], ...]:
    rules: list[Rule[ModelSpec]] = []
    for name, profile in sorted(catalog.models().items()):
        allowed = sorted(profile.variants)
        listed = ", ".join(allowed)
        cel_list = "[" + ", ".join(f"'{v}'" for v in allowed) + "]"

        def violated(m: ModelSpec, n: str = name, ok: frozenset[str] = frozenset(allowed)) -> bool:
            return m.name == n and m.variant is not None and m.variant not in ok

        rules.append(
            Rule(
                cel=f"self.name != '{name}' || !has(self.variant) || self.variant in {cel_list}",
                message=f"variant must be one of {listed} for model {name}",
                violated=violated,
                field_path=".variant",
            )
        )
    return tuple(rules)


class ModelSpec(ApiModel):
    """Which speech-to-speech model the pool serves."""

    name: ModelName = Field(
        default="moshi",
        description=(
            "Catalog key of the model: moshi (Kyutai Moshi 7B), hertz-dev, or tiny (a toy "
            "Moshi with random weights that runs on the CPU, without a GPU: demos and CI)."
        ),
    )
    variant: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description=(
            "Weights and precision, which pick the memory and compute profile: moshiko-bf16, "
            "moshika-bf16, moshiko-int8, moshika-int8 for moshi; hertz-dev-bf16 for hertz-dev. "
            "Defaults to the model's first variant."
        ),
    )
    source: str | None = Field(
        default=None,
        pattern=r"^(hf|file|pvc)://.+",
        max_length=512,
        description=(
            "Where the runtime loads the weights from: hf://org/repo, file:///path on the "
            "node or image, or pvc://claim/path. Defaults to the variant's Hugging Face repo."
        ),
    )

    kv_cache_dtype: constants.KvCacheDtype = Field(
        default=constants.KvCacheDtype.BF16,
        description=(
            "How the runtime stores the model's KV cache: bf16, or fp8 (e4m3 with a scale per "
            "head vector, read by a fused GPU kernel): half the GPU memory per conversation, "
            "so about twice the conversations per pod, at a small cost in accuracy (the "
            "README's fp8 section). moshi and tiny only."
        ),
    )
    prompt: str | None = Field(
        default=None,
        pattern=PROMPT_PATTERN,
        max_length=512,
        description=(
            "hertz-dev only: the voice prompt every conversation starts from, an audio file "
            "(WAV; stereo: left the caller's side, right the model's; the last 10 s are used) "
            "at hf://org/repo/path/file.wav, file:///path on the node or image, or "
            "pvc://claim/path/file.wav. Hertz-dev is a base model: the prompt sets who speaks "
            "and how. Unset: a second of silence."
        ),
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = ()  # filled below, once the catalog is read


def _kv_cache_rules() -> tuple[Rule[ModelSpec], ...]:
    """A KV cache dtype beside bf16 only where the model's variant offers it (models.yaml)."""
    rules: list[Rule[ModelSpec]] = []
    for name, profile in sorted(catalog.models().items()):
        for dtype in constants.KvCacheDtype:
            if dtype == constants.KvCacheDtype.BF16:
                continue
            ok = frozenset(v for v, offer in profile.variants.items() if dtype in offer.kv_cache)
            if ok == frozenset(profile.variants):
                continue
            cel_list = "[" + ", ".join(f"'{v}'" for v in sorted(ok)) + "]"
            if not ok:
                chosen = "false"
            elif profile.default_variant in ok:
                chosen = f"(!has(self.variant) || self.variant in {cel_list})"
            else:
                chosen = f"(has(self.variant) && self.variant in {cel_list})"
            message = (
                f"kvCacheDtype {dtype} is offered for variants {', '.join(sorted(ok))} of "
                f"model {name} only; choose one of them or kvCacheDtype bf16"
                if ok
                else f"kvCacheDtype {dtype} is not offered for model {name}; remove it or set bf16"
            )

            def violated(
                m: ModelSpec,
                n: str = name,
                d: str = dtype,
                allowed: frozenset[str] = ok,
                default: str = profile.default_variant,
            ) -> bool:
                chosen_variant = m.variant or default
                return m.name == n and m.kv_cache_dtype == d and chosen_variant not in allowed

            rules.append(
                Rule(
                    cel=(
                        f"self.name != '{name}' || !has(self.kvCacheDtype) || "
                        f"self.kvCacheDtype != '{dtype}' || {chosen}"
                    ),
                    message=message,
                    violated=violated,
                    field_path=".kvCacheDtype",
                )
            )
    return tuple(rules)


def _prompt_rule() -> Rule[ModelSpec]:
    # Only Hertz-dev continues a prompt; Moshi's runtime has no such input.
    return Rule(
        cel=f"self.name == '{HERTZ_DEV}' || !has(self.prompt)",
        message=f"prompt is for model {HERTZ_DEV} only; remove it or set name: {HERTZ_DEV}",
        violated=lambda m: m.name != HERTZ_DEV and m.prompt is not None,
        field_path=".prompt",
    )


ModelSpec.RULES = (*_variant_rules(), *_kv_cache_rules(), _prompt_rule())

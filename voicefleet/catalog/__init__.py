"""GPU, model and price catalogs: data files beside this module, read into typed models.

The tables are data, not code, so a new card or a price change is a YAML edit. Prices can be
overridden from a file of the same shape as ``prices.yaml`` (the operator reads one from a
ConfigMap; ``voicefleet plan --prices FILE`` reads one from disk).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voicefleet import constants
from voicefleet.naming import camel


class _CatalogModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=camel, populate_by_name=True, extra="forbid", frozen=True
    )


class GpuProduct(_CatalogModel):
    """One GPU product, keyed by its ``nvidia.com/gpu.product`` label value."""

    product: str
    short_name: str
    aliases: tuple[str, ...] = ()
    memory_mib: int = Field(gt=0)
    bandwidth_gbps: float = Field(gt=0)
    overhead_gib: float = Field(ge=0)

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024


class ComputeProfile(_CatalogModel):
    """Parameters of the frame-time model, calibrated on one GPU (see models.yaml)."""

    calibrated_on: str
    launch_ms: float = Field(ge=0)
    per_session_ms: float = Field(ge=0)
    bandwidth_efficiency: float = Field(gt=0, le=1)
    p95_over_p50: float = Field(ge=1)


class PodResources(_CatalogModel):
    """Host CPU and memory one runtime pod asks for (beside its GPU): requests keep it out
    of the BestEffort class that is evicted first; the memory limit bounds a leak."""

    cpu: str
    memory: str
    memory_limit: str


class KvCacheOption(_CatalogModel):
    """Another way a variant's runtime may store its KV cache (``spec.model.kvCacheDtype``):
    the state per step it then takes, and the compute per session when it differs."""

    state_bytes_per_step: int = Field(gt=0)
    per_session_ms: float | None = Field(default=None, ge=0)
    workspace_gib: float | None = Field(default=None, ge=0)
    measured: bool


class ModelVariant(_CatalogModel):
    """Weights and precision of one model: its memory and compute profile."""

    name: str
    source: str
    resources: PodResources
    # Sessions one pod holds on the CPU, for models that run without a GPU.
    cpu_sessions: int | None = Field(default=None, gt=0)
    weights_gib: float = Field(gt=0)
    state_bytes_per_step: int = Field(gt=0)
    state_fixed_gib: float = Field(ge=0)
    workspace_gib: float = Field(ge=0)
    # Sessions' worth of state the runtime keeps beside the slots (Moshi: the row a moved-in
    # conversation's history is replayed on).
    replay_rows: int = Field(default=0, ge=0)
    measured: bool
    compute: ComputeProfile
    # KV cache dtypes beside bf16 (the numbers above) that the runtime offers for this variant.
    kv_cache: dict[str, KvCacheOption] = Field(default_factory=dict)

    def with_kv_cache(self, dtype: str) -> ModelVariant:
        """This variant as it runs with its KV cache in ``dtype`` (bf16: unchanged); a dtype
        it does not offer raises KeyError (the spec's rules refuse it first)."""
        if dtype == constants.KV_CACHE_BF16:
            return self
        option = self.kv_cache[dtype]
        compute = self.compute
        if option.per_session_ms is not None:
            compute = compute.model_copy(update={"per_session_ms": option.per_session_ms})
        return self.model_copy(
            update={
                "workspace_gib": (
                    self.workspace_gib if option.workspace_gib is None else option.workspace_gib
                ),
                "state_bytes_per_step": option.state_bytes_per_step,
                "measured": self.measured and option.measured,
                "compute": compute,
            }
        )


class ModelProfile(_CatalogModel):
    """One model (catalog key of ``spec.model.name``) and its variants."""

    name: str
    display_name: str
    frame_hz: float = Field(gt=0)
    context_steps: int = Field(gt=0)
    default_variant: str
    variants: dict[str, ModelVariant]
    # gpu: one GPU per pod (nvidia.com/gpu), sized by the planner; cpu: no GPU at all.
    device: Literal["gpu", "cpu"] = "gpu"

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    @property
    def frame_ms(self) -> float:
        return 1000.0 / self.frame_hz

    @property
    def max_session_seconds(self) -> int:
        """The longest conversation the model's context holds, in whole seconds."""
        return int(self.context_steps / self.frame_hz)


class GpuPrice(_CatalogModel):
    on_demand_per_hour: float | None = Field(default=None, ge=0)
    spot_per_hour: float | None = Field(default=None, ge=0)


class PriceTable(_CatalogModel):
    currency: str = "USD"
    gpus: dict[str, GpuPrice] = Field(default_factory=dict)

    def merged_over(self, base: PriceTable) -> PriceTable:
        """This table's entries win; products it does not name keep ``base``'s prices."""
        gpus = dict(base.gpus)
        for product, price in self.gpus.items():
            old = gpus.get(product, GpuPrice())
            gpus[product] = GpuPrice(
                on_demand_per_hour=price.on_demand_per_hour
                if price.on_demand_per_hour is not None
                else old.on_demand_per_hour,
                spot_per_hour=price.spot_per_hour
                if price.spot_per_hour is not None
                else old.spot_per_hour,
            )
        return PriceTable(currency=self.currency, gpus=gpus)


class CatalogError(ValueError):
    """A catalog or price file that cannot be read; the message names the file and field."""


def _read_packaged(name: str) -> Any:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _gpu_table(raw: Any, origin: str) -> dict[str, GpuProduct]:
    if not isinstance(raw, dict):
        raise CatalogError(f"{origin}: expected a mapping of GPU products")
    try:
        return {str(key): GpuProduct(product=str(key), **value) for key, value in raw.items()}
    except (TypeError, ValidationError) as exc:
        where = ""
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) + ": " + first["msg"]
        raise CatalogError(f"{origin}: {where or exc}") from exc


@cache
def _builtin_gpus() -> dict[str, GpuProduct]:
    return _gpu_table(_read_packaged("gpus.yaml"), "gpus.yaml")


@cache
def models() -> dict[str, ModelProfile]:
    raw: dict[str, dict[str, Any]] = _read_packaged("models.yaml")
    out: dict[str, ModelProfile] = {}
    for key, value in raw.items():
        variants = {
            name: ModelVariant(name=name, **spec) for name, spec in value.pop("variants").items()
        }
        out[key] = ModelProfile(name=key, variants=variants, **value)
    return out


@cache
def _builtin_prices() -> PriceTable:
    return PriceTable.model_validate(_read_packaged("prices.yaml"))


def parse_prices(text: str, origin: str) -> PriceTable:
    """Reads a price override (the shape of prices.yaml); ``origin`` names it in errors."""
    try:
        data = yaml.safe_load(text)
        return PriceTable.model_validate(data or {})
    except yaml.YAMLError as exc:
        raise CatalogError(f"{origin}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CatalogError(f"{origin}: {where}: {first['msg']}") from exc


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read {what}: {exc.strerror}") from exc


def load_gpus(path: Path) -> dict[str, GpuProduct]:
    """GPU products from a file of the shape of gpus.yaml."""
    try:
        raw = yaml.safe_load(_read(path, "GPU catalog"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    return _gpu_table(raw, str(path))


@dataclass(frozen=True)
class Catalog:
    """The GPU, model and price tables a plan reads: a value its caller loads and passes in
    (the operator once at start-up, ``voicefleet plan`` per run), never a process global."""

    gpus: Mapping[str, GpuProduct]
    models: Mapping[str, ModelProfile]
    prices: PriceTable

    def find_gpu(self, product: str) -> GpuProduct | None:
        """The entry for a product label value or one of its aliases."""
        if product in self.gpus:
            return self.gpus[product]
        for gpu in self.gpus.values():
            if product in gpu.aliases:
                return gpu
        return None


@cache
def builtin() -> Catalog:
    """The tables shipped beside this module."""
    return Catalog(gpus=_builtin_gpus(), models=models(), prices=_builtin_prices())


def load(*, gpus_file: Path | None = None, prices_file: Path | None = None) -> Catalog:
    """The built-in tables with a cluster's own laid over them (``--gpu-catalog``: products
    added or replaced; ``--prices``: entries merged over the built-in prices)."""
    base = builtin()
    gpus = {**base.gpus, **load_gpus(gpus_file)} if gpus_file is not None else base.gpus
    prices = base.prices
    if prices_file is not None:
        table = parse_prices(_read(prices_file, "price file"), str(prices_file))
        prices = table.merged_over(base.prices)
    return Catalog(gpus=gpus, models=base.models, prices=prices)

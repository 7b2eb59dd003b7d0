"""The catalogs load, are internally consistent, and price overrides merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicefleet import catalog


def test_every_priced_gpu_is_in_the_gpu_catalog() -> None:
    assert set(catalog.builtin().prices.gpus) <= set(catalog.builtin().gpus)


def test_every_model_variant_is_calibrated_on_a_catalog_gpu() -> None:
    for profile in catalog.models().values():
        assert profile.default_variant in profile.variants
        if profile.on_cpu:  # runs without a GPU: no frame-time model to calibrate
            continue
        for variant in profile.variants.values():
            assert variant.compute.calibrated_on in catalog.builtin().gpus


def test_moshi_profile_matches_reference() -> None:
    moshi = catalog.models()["moshi"]
    assert moshi.frame_ms == 80.0
    assert moshi.max_session_seconds == 240
    bf16 = moshi.variants["moshiko-bf16"]
    assert bf16.measured
    assert bf16.state_bytes_per_step == 512 * 1024  # REFERENCE.md: 512 KiB per step


def test_aliases_find_the_catalog_entry() -> None:
    gpu = catalog.builtin().find_gpu("nvidia-h100-80gb")
    assert gpu is not None and gpu.product == "NVIDIA-H100-80GB-HBM3"
    assert catalog.builtin().find_gpu("NVIDIA-B9000") is None


def test_price_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("gpus:\n  NVIDIA-H100-80GB-HBM3: {spotPerHour: 0.5}\n")
    table = catalog.load(prices_file=path).prices
    h100 = table.gpus["NVIDIA-H100-80GB-HBM3"]
    assert (h100.on_demand_per_hour, h100.spot_per_hour) == (2.90, 0.5)
    assert table.gpus["NVIDIA-H200"].spot_per_hour == 1.19


def test_a_gpu_file_adds_products_to_a_loaded_catalog_only(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(
        "NVIDIA-B9000:\n  shortName: B9000\n  memoryMiB: 200000\n"
        "  bandwidthGBps: 9000\n  overheadGiB: 2\n"
    )
    loaded = catalog.load(gpus_file=path)
    assert loaded.find_gpu("NVIDIA-B9000") is not None
    assert loaded.find_gpu("NVIDIA-H100-80GB-HBM3") is not None
    # A value, not a process setting: the built-in tables are untouched.
    assert catalog.builtin().find_gpu("NVIDIA-B9000") is None


def test_bad_price_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("gpus:\n  NVIDIA-H100-80GB-HBM3: {spotPerHour: -1}\n")
    with pytest.raises(catalog.CatalogError, match=r"spotPerHour"):
        catalog.load(prices_file=path)


def test_every_variant_asks_for_cpu_and_memory_and_limits_memory() -> None:
    # Requests keep runtime pods out of BestEffort (evicted first); a limit bounds a leak.
    for profile in catalog.models().values():
        for variant in profile.variants.values():
            assert variant.resources.cpu and variant.resources.memory
            assert variant.resources.memory_limit


def test_the_tiny_model_runs_on_the_cpu_with_a_few_sessions() -> None:
    tiny = catalog.models()["tiny"]
    assert tiny.on_cpu
    assert tiny.variants[tiny.default_variant].cpu_sessions == 2

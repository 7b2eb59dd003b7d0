"""The Helm chart's files agree with the code they package (no cluster, no helm binary)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

import voicefleet
from voicefleet.constants import DEFAULT_RUNTIME_IMAGE, IMAGE_REPOSITORY

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "voicefleet"


def test_chart_crds_are_byte_identical_to_the_top_level_crds() -> None:
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == top, "copy crds/*.yaml into charts/voicefleet/crds/"


def test_versions_and_image_tags_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == voicefleet.__version__
    # Empty: the chart's appVersion's runtime, the operator's own default too.
    assert values["runtimeImage"] == ""
    assert f"{IMAGE_REPOSITORY}/runtime:{voicefleet.__version__}" == DEFAULT_RUNTIME_IMAGE
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert f'"{IMAGE_REPOSITORY}/runtime:%s" .Chart.AppVersion' in helpers
    assert values["image"]["repository"] == f"{IMAGE_REPOSITORY}/operator"


def test_every_value_is_in_the_schema_and_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    # `global` is Helm's for parent charts: accepted (so the chart can be a subchart), unset.
    assert set(values) == set(schema["properties"]) - {"global"}
    text = (CHART / "values.yaml").read_text()
    for key in values:
        # A comment block sits right above every top-level key.
        assert re.search(rf"#[^\n]*\n(#[^\n]*\n)*{re.escape(key)}:", text), key


def test_dashboard_queries_only_metrics_the_code_exports() -> None:
    import prometheus_client  # noqa: PLC0415

    import voicefleet.operator.metrics  # noqa: F401, PLC0415 (registers in the default registry)
    from voicefleet.runtime.gpu import GpuMemory  # noqa: PLC0415
    from voicefleet.runtime.metrics import RuntimeMetrics  # noqa: PLC0415

    runtime = RuntimeMetrics(lambda: GpuMemory(name="test", used=1, total=2))
    exported = {family.name for family in prometheus_client.REGISTRY.collect()}
    exported |= {family.name for family in runtime.registry.collect()}
    dashboard = json.loads((CHART / "dashboards" / "voicefleet.json").read_text())
    queried = {
        re.sub(r"_(bucket|total|sum|count)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"voicefleet_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"

"""The Argo CD health check (examples/gitops/argocd-health.lua), run by a real Lua VM."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.argocd import health


def pool(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"metadata": {"name": "p", "generation": generation}}
    if status is not None:
        out["status"] = status
    return out


def condition(type_: str, status: str, reason: str = "R", message: str = "m") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pool(1, None), "Progressing"),
        (
            pool(2, {"observedGeneration": 1, "conditions": [condition("Ready", "True")]}),
            "Progressing",
        ),
        (pool(2, {"observedGeneration": 2, "conditions": [condition("Ready", "True")]}), "Healthy"),
        (
            pool(2, {"observedGeneration": 2, "conditions": [condition("Ready", "False")]}),
            "Progressing",
        ),
        (
            pool(
                3,
                {
                    "observedGeneration": 3,
                    "conditions": [
                        condition("Ready", "True"),
                        condition("Degraded", "True", "PlanInvalid", "lower sessions.target"),
                    ],
                },
            ),
            "Degraded",
        ),
    ],
)
def test_health_follows_conditions_and_observed_generation(
    obj: dict[str, Any], expected: str
) -> None:
    assert health(obj)[0] == expected


def test_degraded_message_carries_reason_and_message() -> None:
    status = {
        "observedGeneration": 1,
        "conditions": [condition("Degraded", "True", "PlanInvalid", "lower sessions.target")],
    }
    assert health(pool(1, status)) == ("Degraded", "PlanInvalid: lower sessions.target")

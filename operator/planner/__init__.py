"""The capacity planner: pure functions from a pool spec to a plan (no I/O, no kopf, no
Kubernetes client; import-linter enforces it)."""

from voicefleet.operator.planner.plan import PlanError, plan, resolve_gpu, resolve_model

__all__ = ["PlanError", "plan", "resolve_gpu", "resolve_model"]

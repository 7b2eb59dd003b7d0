"""The voicefleet operator, imported as ``voicefleet.operator``.

Layers, outermost first (enforced by import-linter, see ``.importlinter``):

1. ``handlers``: kopf registrations, thin.
2. ``reconcile``: ordered, idempotent ensure steps that talk to the Kubernetes API.
3. ``planner`` and ``builders``: pure functions, no I/O, no kopf, no Kubernetes client.
"""

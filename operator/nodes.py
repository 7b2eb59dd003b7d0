"""The operator's view of the nodes: which are interrupted now, and since when. Pure, no I/O.

Node events come in one at a time (kopf's watch); :meth:`NodeWatch.seen` keeps each node's
latest view and answers with the signals that are new, so the reconcile can react at once.
Two things make a signal appear without a node event, so the caller asks again
(:meth:`NodeWatch.recheck`) at :meth:`NodeWatch.next_check`:

1. a NotReady node becomes an interruption only when its grace period ends;
2. the share of NotReady nodes crosses the mass threshold (in either direction), which turns
   NotReady signals off or on for every NotReady node at once.

When a mass outage ends, the nodes still NotReady get a fresh grace period from that moment:
nodes come back one by one as their kubelets report in, and the last few to do so must not
be drained for having been part of the outage.

The rules themselves are in ``interruption.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from voicefleet.operator import interruption
from voicefleet.operator.interruption import NodeView, Signal, SignalConfig

# Deleted nodes are remembered this long, so pods still bound to them are recognised.
GONE_MEMORY_SECONDS: Final = 3600.0


@dataclass(frozen=True)
class MassNotReady:
    """So many nodes NotReady at once that NotReady drains nothing."""

    not_ready: int
    total: int

    def describe(self, fraction: float) -> str:
        return (
            f"{self.not_ready} of {self.total} nodes are NotReady at once (at least "
            f"{fraction:.0%}): treated as a control-plane or network fault, not reclaims; "
            "nothing is drained for it until they recover"
        )


class NodeWatch:
    """Latest node views, the interruption signals in force, deleted nodes."""

    def __init__(self, config: SignalConfig) -> None:
        self.config = config
        self.views: dict[str, NodeView] = {}
        self.signals: dict[str, list[Signal]] = {}
        self.gone: dict[str, float] = {}
        # When the operator first saw a node NotReady that says nothing of since when.
        self._first_not_ready: dict[str, float] = {}
        self._not_ready: set[str] = set()
        self.mass: MassNotReady | None = None
        self._mass_ended = 0.0

    # --- input --------------------------------------------------------------------------

    def seed(self, bodies: list[dict[str, Any]], now: float) -> None:
        """Every node at once (a LIST at start-up), before any event is acted on: judged one
        event at a time, the first NotReady nodes of a mass outage would not yet look like
        one."""
        for body in bodies:
            view = NodeView.from_body(body)
            self.views[view.name] = view
        for body in bodies:
            self.seen("ADDED", body, now)

    def seen(
        self, event_type: str | None, body: Mapping[str, Any], now: float
    ) -> dict[str, list[Signal]]:
        """Take one node event; the signals it made new, by node."""
        self._forget_old_gone(now)
        name = str((body.get("metadata") or {}).get("name", ""))
        if event_type == "DELETED":
            self.views.pop(name, None)
            self.signals.pop(name, None)
            self._first_not_ready.pop(name, None)
            self._not_ready.discard(name)
            self.gone[name] = now
            new = {name: [Signal(interruption.KIND_DELETED)]}
            return new | self._update_mass(now)
        view = NodeView.from_body(body)
        self.gone.pop(name, None)
        if view.not_ready:
            self._not_ready.add(name)
            if view.not_ready_since is None:
                first = self._first_not_ready.setdefault(name, now)
                view = replace(view, not_ready_since=first)
        else:
            self._not_ready.discard(name)
            self._first_not_ready.pop(name, None)
        self.views[name] = view
        new = self._update_mass(now)
        found = self._judge(name, now)
        if found:
            new[name] = found
        return new

    def recheck(self, now: float) -> dict[str, list[Signal]]:
        """Judge every NotReady node again (grace periods end with no event)."""
        new = self._update_mass(now)
        for name in sorted(self._not_ready):
            found = self._judge(name, now)
            if found:
                new.setdefault(name, []).extend(s for s in found if s not in new[name])
        return new

    # --- output -------------------------------------------------------------------------

    def interrupted(self) -> dict[str, str]:
        """Node -> why, for every node with a signal in force."""
        return {node: ", ".join(s.describe() for s in sig) for node, sig in self.signals.items()}

    def next_check(self, now: float) -> float | None:
        """When a grace period ends next (a NotReady node to judge again), if one will."""
        if self.mass is not None:
            return None
        lefts = [
            left
            for name in self._not_ready
            if (left := interruption.not_ready_grace_left(self._judged(name), self.config, now))
            and left > 0
        ]
        return now + min(lefts) if lefts else None

    def not_ready_nodes(self) -> frozenset[str]:
        return frozenset(self._not_ready)

    # --- rules --------------------------------------------------------------------------

    def _judged(self, name: str) -> NodeView:
        """The view the rules see: NotReady counts from the end of the last mass outage at
        the earliest (see the module docstring)."""
        view = self.views[name]
        since = view.not_ready_since
        if since is not None and since < self._mass_ended:
            view = replace(view, not_ready_since=self._mass_ended)
        return view

    def _judge(self, name: str, now: float) -> list[Signal]:
        """Recompute ``name``'s signals; the ones that were not in force before."""
        if name not in self.views:
            return []
        view = self._judged(name)
        found = interruption.signals(view, self.config, now=now, mass_not_ready=bool(self.mass))
        old = self.signals.get(name, [])
        if found:
            self.signals[name] = found
        else:
            self.signals.pop(name, None)
        return [s for s in found if s not in old]

    def _update_mass(self, now: float) -> dict[str, list[Signal]]:
        """Follow the mass-NotReady state; when it flips, judge every NotReady node again."""
        down, total = len(self._not_ready), len(self.views)
        mass = (
            MassNotReady(down, total)
            if interruption.mass_not_ready(down, total, self.config)
            else None
        )
        flipped = bool(mass) != bool(self.mass)
        if self.mass is not None and mass is None:
            self._mass_ended = now
        self.mass = mass
        if not flipped:
            return {}
        new: dict[str, list[Signal]] = {}
        for name in sorted(self._not_ready):
            found = self._judge(name, now)
            if found:
                new[name] = found
        return new

    def _forget_old_gone(self, now: float) -> None:
        cutoff = now - GONE_MEMORY_SECONDS
        for name in [n for n, t in self.gone.items() if t < cutoff]:
            del self.gone[name]

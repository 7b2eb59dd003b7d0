"""Leader election among the operator's replicas, on a coordination.k8s.io/v1 Lease.

The protocol is client-go's ``leaderelection`` (kube-controller-manager's and
controller-runtime's), so its timings and failure modes are the familiar ones:

1. A candidate reads the Lease. It may take it when nobody holds it, when the holder is
   itself (the same identity: a restarted container of the same pod), or when the record has
   not changed for ``leaseDurationSeconds`` as measured on the candidate's own monotonic
   clock. The record's timestamps are never compared with the local wall clock, so clock
   skew between nodes cannot make two leaders.
2. Taking and renewing are one PUT carrying the resourceVersion that was read: of two
   candidates that race, the API server lets exactly one write.
3. The leader renews every retry period. When it has not renewed for the renew deadline
   (shorter than the lease, so it stops before anyone else may start) or it sees another
   holder, it has lost: :meth:`LeaderElector.hold` raises :class:`LeaseLost` and the caller
   stops acting at once.
4. On a graceful stop the leader releases the Lease (no holder, a one-second lease), so a
   standby takes over on its next try instead of waiting for the lease to run out.

It talks to the API only through :mod:`voicefleet.operator.kube`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from voicefleet import constants
from voicefleet.operator import metrics
from voicefleet.operator.kube import Kube, KubeError

log = logging.getLogger(__name__)

KIND: Final = "Lease"
API_VERSION: Final = "coordination.k8s.io/v1"
# Standbys spread their tries over up to 20 % more than the retry period, so replicas that
# started together do not try in lockstep.
JITTER: Final = 0.2
# A standby wakes this long after the holder's lease ran out (not a whole retry later).
EXPIRY_MARGIN_SECONDS: Final = 0.05


class LeaseLost(Exception):
    """This replica no longer leads; the message says why."""


@dataclass(frozen=True)
class LeaseSettings:
    """Where the Lease is, who this replica is, and client-go's three timings."""

    namespace: str
    identity: str
    name: str = constants.OPERATOR_LEASE
    # How long a standby waits after the record last changed before it takes the lease.
    lease_duration: float = 15.0
    # How long the leader keeps acting without a successful renewal.
    renew_deadline: float = 10.0
    # Between two tries, to acquire or to renew.
    retry_period: float = 2.0


def default_identity() -> str:
    """Host name plus a random suffix: unique even for two processes on one host. In a pod
    the chart passes the pod's name instead, so a restarted container takes back its own
    lease at once."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time() -> str:
    """Now as a Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One replica's view of the Lease: acquire it, hold it, release it."""

    def __init__(self, kube: Kube, settings: LeaseSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.leading = False
        self.holder = ""
        # The Lease as last read or written, and when (monotonic) its spec last changed.
        self._lease: dict[str, Any] | None = None
        self._seen_spec: dict[str, Any] | None = None
        self._seen_at = 0.0
        self._last_error = ""
        metrics.LEADER.set(0)

    # --- the three phases ----------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this replica leads; until then, try every retry period."""
        log.info(
            "leader election: %s is a candidate for Lease %s/%s",
            self.settings.identity,
            self.settings.namespace,
            self.settings.name,
        )
        while True:
            try:
                if await self._try():
                    self._last_error = ""
                    log.info("leader election: %s leads", self.settings.identity)
                    return
                self._last_error = ""
            except KubeError as exc:
                self._log_error(exc)
            await asyncio.sleep(self._next_try())

    async def hold(self) -> None:
        """Renew until it fails; raises :class:`LeaseLost` (it never returns)."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.retry_period)
            started = time.monotonic()
            left = renewed + self.settings.renew_deadline - started
            try:
                if left > 0 and await asyncio.wait_for(self._try(), left):
                    renewed = started
                    self._last_error = ""
            except (KubeError, TimeoutError) as exc:
                self._log_error(exc)
            if not self.leading:
                raise LeaseLost(f"Lease {self._where()} is held by {self.holder or 'nobody'}")
            if time.monotonic() - renewed >= self.settings.renew_deadline:
                self._set_leading(False)
                raise LeaseLost(
                    f"Lease {self._where()} not renewed for "
                    f"{self.settings.renew_deadline:g} s (the renew deadline)"
                )

    async def release(self) -> None:
        """Give the lease up (graceful stop), so a standby need not wait for it to expire.
        Best effort: a failure only means the standby waits the lease out."""
        if not self.leading or self._lease is None:
            return
        lease: Mapping[str, Any] | None = self._lease
        self._set_leading(False)
        # Twice at most: a renewal still in flight when the holding task was stopped may
        # have written first (a conflict); if the lease is still ours, release that.
        for _ in range(2):
            record = self._record(lease)
            record["spec"].update(holderIdentity="", leaseDurationSeconds=1)
            try:
                await self.kube.replace(record)
            except KubeError as exc:
                if exc.conflict:
                    lease = await self._still_ours()
                    if lease is not None:
                        continue
                log.warning("leader election: releasing Lease %s failed: %s", self._where(), exc)
                return
            log.info("leader election: %s released the lease", self.settings.identity)
            return

    async def _still_ours(self) -> Mapping[str, Any] | None:
        """The Lease as it is now, if this replica still holds it."""
        try:
            lease = await self.kube.get(KIND, self.settings.namespace, self.settings.name)
        except KubeError:
            return None
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
        return lease if holder == self.settings.identity else None

    # --- one try ---------------------------------------------------------------------------

    async def _try(self) -> bool:
        """One try to take or renew the lease; whether this replica holds it now."""
        if self.leading and self._lease is not None:
            # Renewing: write over what this replica wrote last, without reading first.
            # A conflict means someone else wrote since: read and decide again.
            try:
                return self._took(await self.kube.replace(self._record(self._lease)))
            except KubeError as exc:
                if not exc.conflict:
                    raise
        now = time.monotonic()
        lease = await self.kube.get(KIND, self.settings.namespace, self.settings.name)
        if lease is None:
            return self._took(await self.kube.create(self._record(None)))
        spec = dict(lease.get("spec") or {})
        if spec != self._seen_spec:
            self._seen_spec, self._seen_at = spec, now
        self._lease = lease
        self.holder = str(spec.get("holderIdentity") or "")
        if self.holder and self.holder != self.settings.identity and now < self._expires_at():
            self._set_leading(False)
            return False
        try:
            return self._took(await self.kube.replace(self._record(lease)))
        except KubeError as exc:
            if exc.conflict:
                return False  # another candidate wrote first; it leads
            raise

    def _record(self, lease: Mapping[str, Any] | None) -> dict[str, Any]:
        """The Lease with this replica as its holder, renewed now."""
        now = _micro_time()
        spec = (lease or {}).get("spec") or {}
        held = spec.get("holderIdentity") == self.settings.identity
        transitions = int(spec.get("leaseTransitions") or 0)
        # Keep every label and annotation (the chart's own, which helm checks on upgrade);
        # managed fields stay as the server has them.
        meta = dict((lease or {}).get("metadata") or {})
        meta.pop("managedFields", None)
        meta.update(name=self.settings.name, namespace=self.settings.namespace)
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": meta,
            "spec": {
                "holderIdentity": self.settings.identity,
                "leaseDurationSeconds": max(1, math.ceil(self.settings.lease_duration)),
                "acquireTime": (spec.get("acquireTime") or now) if held else now,
                "renewTime": now,
                "leaseTransitions": transitions if held or lease is None else transitions + 1,
            },
        }

    def _took(self, written: dict[str, Any] | None) -> bool:
        if written is None:
            return False  # created by another replica first
        self._lease = written
        self._seen_spec, self._seen_at = dict(written.get("spec") or {}), time.monotonic()
        self.holder = self.settings.identity
        self._set_leading(True)
        return True

    # --- helpers ---------------------------------------------------------------------------

    def _expires_at(self) -> float:
        spec = self._seen_spec or {}
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
        return self._seen_at + duration

    def _next_try(self) -> float:
        wait = self.settings.retry_period * (1 + random.random() * JITTER)
        expires_in = self._expires_at() - time.monotonic()
        if self.holder and 0 < expires_in < wait:
            wait = expires_in + EXPIRY_MARGIN_SECONDS
        return wait

    def _set_leading(self, leading: bool) -> None:
        self.leading = leading
        metrics.LEADER.set(1 if leading else 0)

    def _where(self) -> str:
        return f"{self.settings.namespace}/{self.settings.name}"

    def _log_error(self, exc: Exception) -> None:
        # One line per distinct error, not one per try: an API outage is retried every
        # couple of seconds.
        text = str(exc) or type(exc).__name__
        if text != self._last_error:
            self._last_error = text
            hint = ""
            if isinstance(exc, KubeError) and exc.status == 403:
                hint = (
                    " (the Lease is installed by the chart or `voicefleet operator rbac`, "
                    "and the operator may only get and update it)"
                )
            log.warning("leader election: Lease %s: %s%s", self._where(), text, hint)

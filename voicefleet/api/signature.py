"""Signed control messages from the operator to a pool's gateways.

The operator tells each gateway replica which runtime pods the pool has (``PUT
/v1/backends``). It finds those replicas by their labels, which anyone who may create pods
in the namespace can copy, so the pool token itself must never travel with the request: a
pod that merely looks like a gateway would learn it. The operator signs the body with the
token instead (HMAC-SHA256 over a timestamp and the body, the habit of webhook senders such
as Stripe and GitHub); the gateway, which has the token from the pool's Secret, checks it.
A replayed request is refused once it is older than :data:`MAX_SKEW_SECONDS`; inside that
window it can only repeat what the operator said a moment before.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

HEADER: Final = "X-Voicefleet-Signature"
MAX_SKEW_SECONDS: Final = 60.0


def sign(token: str, body: bytes, now: float) -> str:
    """The header's value: ``t=<unix seconds>,s=<hex HMAC-SHA256 of "t." + body>``."""
    stamp = str(int(now))
    return f"t={stamp},s={_mac(token, stamp, body)}"


def check(token: str, header: str | None, body: bytes, now: float) -> str | None:
    """None when ``header`` signs ``body`` with ``token`` within the allowed skew; else
    what is wrong, for the refusal's message."""
    if not header:
        return f"missing {HEADER} header"
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    stamp, mac = fields.get("t", ""), fields.get("s", "")
    if not stamp.isdigit() or not mac:
        return f"{HEADER} must read t=<unix seconds>,s=<hex HMAC-SHA256>"
    if abs(now - int(stamp)) > MAX_SKEW_SECONDS:
        return f"{HEADER} is older than {MAX_SKEW_SECONDS:g} s (or the clocks disagree)"
    if not hmac.compare_digest(mac, _mac(token, stamp, body)):
        return f"{HEADER} does not match the pool token"
    return None


def _mac(token: str, stamp: str, body: bytes) -> str:
    return hmac.new(token.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()

"""The pool token's check on the control endpoints (drain, moving conversations): the bearer
token of the pool's Secret, compared in constant time."""

from __future__ import annotations

import hmac

from aiohttp import web


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # Constant-time comparison: the token guards the power to empty a pod. On bytes, because
    # compare_digest refuses str with non-ASCII characters; aiohttp decodes header bytes as
    # UTF-8 with surrogateescape, so this gets back exactly the bytes that were sent.
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, token.encode("utf-8"))


def pool_token_refusal(
    request: web.Request, token: str | None, without: str
) -> web.Response | None:
    """The answer to a request without the pool token (None: let it through). ``without``
    says what still works when the pod has no token configured."""
    if token is None:
        return web.json_response(
            {
                "error": "no pool token configured: set VOICEFLEET_POOL_TOKEN or --token-file; "
                f"until then {without}"
            },
            status=403,
        )
    if not _authorized(request, token):
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)
    return None

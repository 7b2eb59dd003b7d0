"""A pool's name, and every name the operator derives from it.

The operator names what it makes after the pool, so the pool's name must leave each of them
valid; the API server checks the pool's own name only as a DNS subdomain (253 characters,
dots allowed), far looser. The derived names and the rule each must follow:

- the Services ``<pool>`` and ``<pool>-pods``: RFC 1035 labels (at most 63, a letter first,
  no dots);
- the token Secret ``<pool>-token``, the PodDisruptionBudget ``<pool>`` and the gateway's
  Deployment and PodDisruptionBudget ``<pool>-gateway``: DNS subdomains (at most 253);
- the pods ``<pool>-<ordinal>``: DNS subdomains; ordinals stay below 100000 (at most
  ``sessions.maxReplicas`` = 10000 pods, twice that while replacing);
- the label value ``voicefleet.dev/pool=<pool>``: at most 63.

So a pool's name is an RFC 1035 label of at most :data:`MAX_POOL_NAME` characters (58: the
headless Service's ``-pods`` suffix is the longest on a 63-character name).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from voicefleet import constants
from voicefleet.api.rules import Rule

if TYPE_CHECKING:
    from voicefleet.api.pool import VoiceAgentPool

DNS_LABEL_MAX: Final = 63
DNS_SUBDOMAIN_MAX: Final = 253
LABEL_VALUE_MAX: Final = 63
DNS_1035_LABEL_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
LARGEST_ORDINAL: Final = 99_999

# (what is named, how it is named from "{pool}", the longest it may be)
DERIVED_NAMES: Final[tuple[tuple[str, str, int], ...]] = (
    ("Service", "{pool}", DNS_LABEL_MAX),
    ("headless Service", "{pool}" + constants.SUFFIX_HEADLESS_SERVICE, DNS_LABEL_MAX),
    ("token Secret", "{pool}" + constants.SUFFIX_TOKEN_SECRET, DNS_SUBDOMAIN_MAX),
    ("PodDisruptionBudget", "{pool}", DNS_SUBDOMAIN_MAX),
    ("gateway Deployment and PDB", "{pool}" + constants.SUFFIX_GATEWAY, DNS_SUBDOMAIN_MAX),
    ("pods", "{pool}-" + str(LARGEST_ORDINAL), DNS_SUBDOMAIN_MAX),
    (f"label {constants.LABEL_POOL}", "{pool}", LABEL_VALUE_MAX),
)


def _binding() -> tuple[int, str, str, int]:
    """(longest pool name, what binds it, its name pattern, that name's limit)."""
    bounds = [
        (limit - len(pattern.format(pool="")), what, pattern, limit)
        for what, pattern, limit in DERIVED_NAMES
    ]
    return min(bounds)


MAX_POOL_NAME, _BOUND_BY, _BOUND_PATTERN, _BOUND_LIMIT = _binding()

LENGTH_MESSAGE: Final = (
    f"metadata.name must be at most {MAX_POOL_NAME} characters: the pool's {_BOUND_BY} is "
    f"named {_BOUND_PATTERN.format(pool='<name>')}, which may be at most {_BOUND_LIMIT}"
)
FORM_MESSAGE: Final = (
    "metadata.name must be a DNS label: lower-case letters, digits and '-', starting with "
    "a letter and ending with a letter or digit, no dots (it names the pool's Services)"
)


def _too_long(name: str) -> bool:
    return len(name) > MAX_POOL_NAME


def _malformed(name: str) -> bool:
    return re.match(DNS_1035_LABEL_PATTERN, name) is None


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a pool's name, in the API server's words; or None."""
    if _too_long(name):
        return LENGTH_MESSAGE
    if _malformed(name):
        return FORM_MESSAGE
    return None


def _pool_rule(cel: str, message: str, violated: Callable[[str], bool]) -> Rule[Any]:
    def pool_violates(pool: VoiceAgentPool) -> bool:
        return violated(pool.metadata.name)

    return Rule(cel=cel, message=message, violated=pool_violates, field_path=".metadata.name")


# On the CRD's root: CEL may read metadata.name there (and only there).
NAME_RULES: Final[tuple[Rule[Any], ...]] = (
    _pool_rule(f"size(self.metadata.name) <= {MAX_POOL_NAME}", LENGTH_MESSAGE, _too_long),
    _pool_rule(f"self.metadata.name.matches('{DNS_1035_LABEL_PATTERN}')", FORM_MESSAGE, _malformed),
)

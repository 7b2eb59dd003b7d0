"""The per-pool memory: refused writes back off, a spec change retries at once, and the same
refusal with other numbers in it is not news."""

from __future__ import annotations

from voicefleet.operator.pool_state import (
    CREATE_BACKOFF_FIRST_SECONDS,
    CREATE_BACKOFF_MAX_SECONDS,
    Refusals,
)

QUOTA = 'pods "x-{n}" is forbidden: exceeded quota: q, requested: pods=1, used: pods={n}'


def test_refusals_back_off_doubling_up_to_the_cap() -> None:
    refusals = Refusals()
    now = 1000.0
    delays = []
    for n in range(12):
        refusals.failed(QUOTA.format(n=n), now, generation=1)
        delays.append(refusals.retry_at - now)
        assert refusals.waiting(now, generation=1)
        assert not refusals.waiting(refusals.retry_at, generation=1)
    assert delays[:4] == [CREATE_BACKOFF_FIRST_SECONDS * 2**i for i in range(4)]
    assert max(delays) == CREATE_BACKOFF_MAX_SECONDS


def test_a_changed_spec_retries_at_once_and_success_clears() -> None:
    refusals = Refusals()
    refusals.failed("denied", 0.0, generation=3)
    assert refusals.waiting(1.0, generation=3)
    assert not refusals.waiting(1.0, generation=4)
    assert refusals.clear() is True
    assert refusals.clear() is False
    assert not refusals.waiting(1.0, generation=3)


def test_only_a_new_cause_is_news() -> None:
    refusals = Refusals()
    assert refusals.failed(QUOTA.format(n=1), 0.0, 1) is True
    assert refusals.failed(QUOTA.format(n=2), 1.0, 1) is False  # same quota, other numbers
    assert refusals.failed("violates PodSecurity restricted", 2.0, 1) is True

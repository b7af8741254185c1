"""Retry counts and delays, matching Inngest's defaults (spec §5.2)."""

from __future__ import annotations

import random as _random

DEFAULT_RETRIES = 4  # retries, not attempts: 5 attempts per queue item
MAX_RETRIES = 20
_TABLE_S = (15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)
_JITTER_S = 30


def clamp_retries(n: int | None) -> int:
    """A function's `retries` setting, kept within 0…20; None means the default."""
    if n is None:
        return DEFAULT_RETRIES
    return max(0, min(int(n), MAX_RETRIES))


def retry_delay_ms(attempt: int, fixed_interval_s: float | None = None, rng=_random) -> int:
    """Delay before retrying after 0-based `attempt` failed: table value plus 0–30 s jitter.

    `fixed_interval_s` (like `inngest dev --retry-interval`) replaces table and jitter.
    """
    if fixed_interval_s is not None:
        return max(0, int(fixed_interval_s * 1000))
    base = _TABLE_S[min(max(int(attempt), 0), len(_TABLE_S) - 1)]
    return int((base + rng.uniform(0, _JITTER_S)) * 1000)

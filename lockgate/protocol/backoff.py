"""Retry counts and delays, matching Inngest's defaults (spec §5.2)."""

from __future__ import annotations

import random as _random

DEFAULT_RETRIES = 4
MAX_RETRIES = 20
_TABLE_S = [15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200]
_JITTER_S = 30


def clamp_retries(n: int) -> int:
    return max(0, min(int(n), MAX_RETRIES))


def retry_delay_ms(attempt: int, fixed_interval_s: float | None = None, rng=_random) -> int:
    """Delay before retrying after 0-based `attempt` failed."""
    if fixed_interval_s is not None:
        return int(fixed_interval_s * 1000)
    base = _TABLE_S[min(max(attempt, 0), len(_TABLE_S) - 1)]
    return int((base + rng.uniform(0, _JITTER_S)) * 1000)

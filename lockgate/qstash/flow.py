"""Flow control per key: parallelism, rate per period, pause and pins, enforced in the store."""

from __future__ import annotations

from typing import Any

from lockgate.qstash.models import FlowControl, FlowKey
from lockgate.store import qstash_operations as qops
from lockgate.store.base import Tx


def note(tx: Tx, flow: FlowControl) -> None:
    """Each message's values update the key's limits, except the pinned ones."""
    key = qops.get_flow_key(tx, flow.key, for_update=True) or FlowKey(key=flow.key)
    if not key.pinned_parallelism:
        key.parallelism = flow.parallelism
    if not key.pinned_rate:
        key.rate, key.period = flow.rate, flow.period
    qops.save_flow_key(tx, key)


def admit(tx: Tx, flow_key: str, now: int) -> tuple[bool, int | None, int]:
    """(admitted, retry_at, at): retry_at is when a rate window reopens, None to wait for a free slot; `at` is
    the admission time, never before the start of the rate window it is counted in.

    Rate windows are fixed: one opens at the first admission at or after the previous one's end and admits
    `rate` messages. So no window holds more than `rate` starts, but two windows side by side can: the
    last `rate` starts of one and the first `rate` of the next may be less than a period apart."""
    key = qops.get_flow_key(tx, flow_key, for_update=True)
    if key is None:
        return True, None, now
    if key.paused:
        return False, None, now
    if key.parallelism and qops.active_count(tx, "flow_control_key", flow_key) >= key.parallelism:
        return False, None, now
    if key.rate:
        # `now` was read before this key's row lock: another delivery may have opened a window meanwhile.
        now = max(now, key.rate_period_start)
        window_ms = key.period * 1000
        if now >= key.rate_period_start + window_ms:
            key.rate_period_start, key.rate_count = now, 0
        if key.rate_count >= key.rate:
            return False, key.rate_period_start + window_ms, now
        key.rate_count += 1
        qops.save_flow_key(tx, key)
    return True, None, now


def info(tx: Tx, key: FlowKey) -> dict[str, Any]:
    return {
        "flowControlKey": key.key,
        "waitListSize": qops.waiting_count(tx, "flow_control_key", key.key),
        "parallelismMax": key.parallelism or 0,
        "parallelismCount": qops.active_count(tx, "flow_control_key", key.key),
        "rateMax": key.rate or 0,
        "rateCount": key.rate_count,
        "ratePeriod": key.period,
        "ratePeriodStart": key.rate_period_start // 1000,
        "isPaused": key.paused,
        "isPinnedParallelism": key.pinned_parallelism,
        "isPinnedRate": key.pinned_rate,
    }


def update(tx: Tx, flow_key: str, action: str, params: dict[str, str], now: int) -> FlowKey | None:
    """pause, resume, pin, unpin, resetRate, reset. Returns None for an unknown key."""
    key = qops.get_flow_key(tx, flow_key, for_update=True)
    if key is None:
        return None
    if action in ("pause", "resume"):
        key.paused = action == "pause"
    elif action == "pin":
        if "parallelism" in params:
            key.parallelism, key.pinned_parallelism = int(params["parallelism"]), True
        if "rate" in params:
            key.rate, key.pinned_rate = int(params["rate"]), True
        if "period" in params:
            key.period = int(params["period"])
        key.rate_count, key.rate_period_start = 0, now  # pinning restarts the rate window
    elif action == "unpin":
        if params.get("parallelism", "").lower() == "true":
            key.pinned_parallelism = False
        if params.get("rate", "").lower() == "true":
            key.pinned_rate = False
    elif action in ("resetRate", "reset"):
        key.rate_count, key.rate_period_start = 0, now
    qops.save_flow_key(tx, key)
    return key

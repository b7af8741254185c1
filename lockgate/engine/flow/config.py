"""Flow-control settings of a function, parsed and checked once (at sync) into typed records.

The SDK sends durations as strings ("10s", "1m30s") and limits as integers; a bare integer
for `concurrency` means `{limit: n}`. Every key/if/priority expression is compiled here, so a
function that syncs cannot fail later on a bad expression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lockgate.expressions import ExpressionError, compile_expression
from lockgate.protocol.timeparse import parse_duration

MAX_CONCURRENCY = 1000  # the Go server's default cap per function
MAX_RATE_PERIOD_MS = 24 * 3600_000
MAX_DEBOUNCE_MS = 7 * 86400_000
MAX_BATCH_SIZE = 1000
PRIORITY_CLAMP_S = 600


class FlowConfigError(ValueError):
    """A flow-control setting that cannot be accepted; the message names the field."""


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    limit: int
    key: str | None
    scope: str  # fn | env | account


@dataclass(frozen=True, slots=True)
class Throttle:
    limit: int
    period_ms: int
    burst: int
    key: str | None


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int
    period_ms: int
    key: str | None


@dataclass(frozen=True, slots=True)
class Debounce:
    period_ms: int
    key: str | None
    timeout_ms: int | None


@dataclass(frozen=True, slots=True)
class Batch:
    max_size: int
    timeout_ms: int
    key: str | None
    condition: str | None


@dataclass(frozen=True, slots=True)
class Singleton:
    key: str | None
    mode: str  # skip | cancel


@dataclass(frozen=True, slots=True)
class FlowConfig:
    concurrency: tuple[ConcurrencyLimit, ...] = ()
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    idempotency: str | None = None
    debounce: Debounce | None = None
    batch: Batch | None = None
    priority: str | None = None
    start_timeout_ms: int | None = None
    finish_timeout_ms: int | None = None
    singleton: Singleton | None = None

    @property
    def shapes_creation(self) -> bool:
        """True when run creation needs more than the plain path."""
        return any((self.throttle, self.rate_limit, self.idempotency, self.debounce, self.batch, self.priority,
                    self.start_timeout_ms, self.finish_timeout_ms, self.singleton, self.concurrency))


def _int(value: Any, field: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise FlowConfigError(f"{field} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise FlowConfigError(f"{field} must lie between {low} and {high}, got {int(value)}")
    return int(value)


def _duration_ms(value: Any, field: str, *, low_ms: int = 1000, high_ms: int | None = None) -> int:
    if isinstance(value, bool) or value is None:
        raise FlowConfigError(f"{field} must be a duration such as \"10s\"")
    try:
        ms = int(parse_duration(str(value)) * 1000)
    except ValueError as exc:
        raise FlowConfigError(f"{field}: {exc}") from None
    if ms < low_ms:
        raise FlowConfigError(f"{field} must be at least {low_ms // 1000}s, got {value!r}")
    if high_ms is not None and ms > high_ms:
        raise FlowConfigError(f"{field} must be at most {high_ms // 1000}s, got {value!r}")
    return ms


def _expression(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FlowConfigError(f"{field} must be an expression string")
    try:
        compile_expression(value)
    except ExpressionError as exc:
        raise FlowConfigError(f"{field} does not compile: {exc}") from None
    return value


def _object(raw: dict, name: str) -> dict | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise FlowConfigError(f"'{name}' must be an object")
    return value


def parse_flow(raw: dict) -> FlowConfig:
    """Typed flow control from a function's registered config; raises FlowConfigError."""
    limits: list[ConcurrencyLimit] = []
    concurrency = raw.get("concurrency")
    if concurrency is not None:
        entries = concurrency if isinstance(concurrency, list) else [concurrency]
        if len(entries) > 2:
            raise FlowConfigError("at most 2 concurrency limits")
        for i, entry in enumerate(entries):
            field = f"concurrency[{i}]"
            if isinstance(entry, (int, float)) and not isinstance(entry, bool):
                entry = {"limit": entry}
            if not isinstance(entry, dict):
                raise FlowConfigError(f"{field} must be an object or an integer")
            scope = entry.get("scope") or "fn"
            if scope not in ("fn", "env", "account"):
                raise FlowConfigError(f"{field}.scope must be fn, env or account, got {scope!r}")
            key = _expression(entry.get("key"), f"{field}.key")
            if scope != "fn" and key is None:
                raise FlowConfigError(f"{field}: scope {scope!r} needs a key")
            limit = _int(entry.get("limit"), f"{field}.limit", low=0, high=MAX_CONCURRENCY)
            if limit == 0:
                continue  # 0 means "no limit" for the SDKs
            limits.append(ConcurrencyLimit(limit=limit, key=key, scope=scope))

    throttle = None
    if (t := _object(raw, "throttle")) is not None:
        throttle = Throttle(
            limit=_int(t.get("limit"), "throttle.limit", low=1, high=10_000),
            period_ms=_duration_ms(t.get("period"), "throttle.period", high_ms=7 * 86400_000),
            # Python SDKs send burst 1 by default; absent means the same.
            burst=_int(1 if t.get("burst") is None else t.get("burst"), "throttle.burst", low=0, high=10_000),
            key=_expression(t.get("key"), "throttle.key"),
        )

    rate_limit = None
    if (r := _object(raw, "rateLimit")) is not None:
        rate_limit = RateLimit(
            limit=_int(r.get("limit"), "rateLimit.limit", low=1, high=1_000_000),
            period_ms=_duration_ms(r.get("period"), "rateLimit.period", high_ms=MAX_RATE_PERIOD_MS),
            key=_expression(r.get("key"), "rateLimit.key"),
        )

    debounce = None
    if (d := _object(raw, "debounce")) is not None:
        debounce = Debounce(
            period_ms=_duration_ms(d.get("period"), "debounce.period", high_ms=MAX_DEBOUNCE_MS),
            key=_expression(d.get("key"), "debounce.key"),
            timeout_ms=None if d.get("timeout") is None else _duration_ms(d.get("timeout"), "debounce.timeout",
                                                                           high_ms=MAX_DEBOUNCE_MS),
        )

    batch = None
    if (b := _object(raw, "batchEvents")) is not None:
        batch = Batch(
            max_size=_int(b.get("maxSize"), "batchEvents.maxSize", low=1, high=MAX_BATCH_SIZE),
            timeout_ms=_duration_ms(b.get("timeout") or "60s", "batchEvents.timeout", high_ms=3600_000),
            key=_expression(b.get("key"), "batchEvents.key"),
            condition=_expression(b.get("if"), "batchEvents.if"),
        )
        if debounce is not None:
            raise FlowConfigError("batchEvents cannot be combined with debounce")

    priority = None
    if (p := _object(raw, "priority")) is not None:
        priority = _expression(p.get("run"), "priority.run")

    start_ms = finish_ms = None
    if (tm := _object(raw, "timeouts")) is not None:
        if tm.get("start") is not None:
            start_ms = _duration_ms(tm.get("start"), "timeouts.start")
        if tm.get("finish") is not None:
            finish_ms = _duration_ms(tm.get("finish"), "timeouts.finish")

    singleton = None
    if (s := _object(raw, "singleton")) is not None:
        mode = s.get("mode")
        if mode not in ("skip", "cancel"):
            raise FlowConfigError(f"singleton.mode must be 'skip' or 'cancel', got {mode!r}")
        singleton = Singleton(key=_expression(s.get("key"), "singleton.key"), mode=mode)

    return FlowConfig(
        concurrency=tuple(limits),
        throttle=throttle,
        rate_limit=rate_limit,
        idempotency=_expression(raw.get("idempotency"), "idempotency"),
        debounce=debounce,
        batch=batch,
        priority=priority,
        start_timeout_ms=start_ms,
        finish_timeout_ms=finish_ms,
        singleton=singleton,
    )


_CACHE: dict[tuple[str, int], FlowConfig] = {}


def flow_of(fn: Any) -> FlowConfig:
    """The flow config of a synced Function (validated at sync, so this does not raise)."""
    key = (fn.id, fn.version)
    config = _CACHE.get(key)
    if config is None:
        try:
            config = parse_flow(fn.config)
        except FlowConfigError:
            config = FlowConfig()
        if len(_CACHE) > 4096:
            _CACHE.clear()
        _CACHE[key] = config
    return config

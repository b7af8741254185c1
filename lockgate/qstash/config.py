"""Read the `Upstash-*` headers of a publish request into a validated PublishConfig (spec §2.4–2.8).

Header names are matched case-insensitively: the JS SDK sends them lowercase, Python Title-Case.
Every problem raises ConfigError with a message fit for a 400 answer.
"""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import urlsplit

from lockgate.outbound import credentials_problem
from lockgate.protocol.text import has_control_chars
from lockgate.qstash.models import FlowControl, PublishConfig
from lockgate.qstash.retry import RetryDelayExpression

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_RETRIES = 100
MAX_DELAY_MS = 365 * 86_400_000
MAX_DURATION_MS = 10 * 365 * 86_400_000  # any duration header; beyond it the value is a mistake
MAX_INT = 2**31 - 1  # counts and rates; keeps every stored integer well inside 64 bits
MAX_UNIX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_DURATION_PART = re.compile(r"(\d+)(ms|d|h|m|s)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ConfigError(ValueError):
    pass


def parse_duration_ms(value: str, what: str) -> int:
    """`10s`, `1d10h30m`, `1h30m3s`; a bare integer means seconds."""
    text = value.strip()
    if len(text) > 64:
        raise ConfigError(f"invalid {what}: longer than 64 characters")
    if re.fullmatch(r"\d+", text):
        total = int(text) * 1000
    elif not text or not re.fullmatch(f"(?:{_DURATION_PART.pattern})+", text):
        raise ConfigError(f"invalid {what} {value!r}: use a duration such as 10s, 5m, 2h or 1d10h30m")
    else:
        total = sum(int(n) * _UNIT_MS[u] for n, u in _DURATION_PART.findall(text))
    if total > MAX_DURATION_MS:
        raise ConfigError(f"invalid {what} {value!r}: longer than 10 years")
    return total


def canonical_header(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value or ""):
        raise ConfigError(f"invalid {what} {value!r}: use only letters, digits, '-', '_' and '.'")
    return value


def check_url(value: str, what: str) -> str:
    if len(value) > 4096 or has_control_chars(value):
        raise ConfigError(f"invalid {what}: at most 4096 printable characters")
    if not value.lower().startswith(("http://", "https://")):
        raise ConfigError(f"invalid {what}: endpoint has invalid scheme, add http:// or https://")
    try:
        host = urlsplit(value).hostname
    except ValueError:
        host = None
    if not host:
        raise ConfigError(f"invalid {what}: {value!r} has no host")
    problem = credentials_problem(value)
    if problem:
        raise ConfigError(f"invalid {what}: {problem}")
    return value


def _int(value: str, what: str, *, low: int = 0, high: int = MAX_INT) -> int:
    text = value.strip()
    try:
        n = int(text) if len(text) <= 20 else None
    except ValueError:
        n = None
    if n is None:
        raise ConfigError(f"invalid {what} {value[:40]!r}: expected an integer between {low} and {high}")
    if n < low or n > high:
        raise ConfigError(f"invalid {what} {n}: must be between {low} and {high}")
    return n


def _redact_field(item: str) -> str:
    if item.lower() == "body":
        return "body"
    if item.lower() in ("header", "headers"):
        return "header"
    match = re.fullmatch(r"(?i)headers?\[([^\]]+)\]", item)
    if match:
        return f"header[{canonical_header(match.group(1))}]"
    raise ConfigError(f"invalid Upstash-Redact-Fields entry {item!r}: use body, header or header[<Name>]")


def parse_flow_control(key: str, value: str | None) -> FlowControl:
    flow = FlowControl(key=key)
    seen = False
    for part in (value or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, raw = part.partition("=")
        name = name.strip().lower()
        if not sep:
            raise ConfigError(f"invalid Upstash-Flow-Control-Value part {part!r}: expected name=value")
        if name == "parallelism":
            flow.parallelism = _int(raw, "flow-control parallelism", low=1)
        elif name == "rate":
            flow.rate = _int(raw, "flow-control rate", low=1)
        elif name == "period":
            period_ms = parse_duration_ms(raw, "flow-control period")
            if not 1000 <= period_ms <= 7 * 86_400_000:
                raise ConfigError("flow-control period must be between 1s and 1 week")
            flow.period = period_ms // 1000
            continue
        else:
            raise ConfigError(f"unknown flow-control setting {name!r}: use parallelism, rate or period")
        seen = True
    if not seen:
        raise ConfigError("Upstash-Flow-Control-Value must provide at least one of parallelism or rate")
    return flow


def parse_config(headers: Iterable[tuple[str, str]], *, now_ms: int, schedule: bool = False,
                 what: str = "") -> PublishConfig:
    cfg = PublishConfig()
    flow_key: str | None = None
    flow_value: str | None = None
    forwarded_content_type: list[str] | None = None
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == "content-type":
            if value.strip():
                cfg.headers["Content-Type"] = [value]
        elif name.startswith("upstash-forward-"):
            target = canonical_header(raw_name[len("upstash-forward-"):])
            if target == "Content-Type":
                forwarded_content_type = [value]  # the message's own Content-Type wins
                continue
            cfg.headers.setdefault(target, []).append(value)
        elif name.startswith("upstash-callback-") or name.startswith("upstash-failure-callback-"):
            prefix = "upstash-callback-" if name.startswith("upstash-callback-") else "upstash-failure-callback-"
            inner = "Upstash-" + raw_name[len(prefix):]
            if inner.lower() == "upstash-delay":
                raise ConfigError(f"{raw_name} is not supported: messages with delayed callbacks are rejected")
            target = cfg.callback_headers if prefix == "upstash-callback-" else cfg.failure_callback_headers
            target[inner] = value
        elif name == "upstash-method":
            method = value.strip().upper()
            if method not in METHODS:
                raise ConfigError(f"invalid Upstash-Method {value!r}: use one of {', '.join(METHODS)}")
            cfg.method = method
        elif name == "upstash-delay":
            cfg.delay_ms = parse_duration_ms(value, "Upstash-Delay")
            if cfg.delay_ms > MAX_DELAY_MS:
                raise ConfigError("Upstash-Delay is longer than the maximum of 365 days")
        elif name == "upstash-not-before":
            if schedule:
                raise ConfigError("Upstash-Not-Before is not accepted on schedules")
            cfg.not_before_ms = _int(value, "Upstash-Not-Before (unix seconds)", high=MAX_UNIX_SECONDS) * 1000
        elif name == "upstash-retries":
            cfg.retries = _int(value, "Upstash-Retries", high=MAX_RETRIES)
        elif name == "upstash-retry-delay":
            RetryDelayExpression(value)  # raises ValueError with a clear message
            cfg.retry_delay_expr = value
        elif name == "upstash-timeout":
            timeout_ms = parse_duration_ms(value, "Upstash-Timeout")
            cfg.timeout_s = max(1, timeout_ms // 1000)
        elif name == "upstash-callback":
            cfg.callback = check_url(value, "callback url")
        elif name == "upstash-failure-callback":
            cfg.failure_callback = check_url(value, "failure callback url")
        elif name == "upstash-deduplication-id":
            cfg.dedup_id = value
        elif name == "upstash-content-based-deduplication":
            cfg.content_based_dedup = value.strip().lower() == "true"
        elif name == "upstash-flow-control-key":
            flow_key = value.strip()
        elif name == "upstash-flow-control-value":
            flow_value = value
        elif name == "upstash-label":
            cfg.labels = [v.strip() for v in value.split(",") if v.strip()]
        elif name == "upstash-redact-fields":
            cfg.redact = [_redact_field(v.strip()) for v in value.split(",") if v.strip()]
        elif name == "upstash-cron" and schedule:
            cfg.cron = value.strip()
        elif name == "upstash-schedule-id" and schedule:
            cfg.schedule_id = check_name(value.strip(), "schedule id")
        elif name == "upstash-queue-name" and schedule:
            cfg.queue_name = check_name(value.strip(), "queue name")
        # Any other header (Authorization, User-Agent, SDK telemetry) is never forwarded.
    if forwarded_content_type and "Content-Type" not in cfg.headers:
        cfg.headers["Content-Type"] = forwarded_content_type
    if flow_key is not None:
        if not flow_key:
            raise ConfigError("Upstash-Flow-Control-Key must not be empty")
        cfg.flow_control = parse_flow_control(flow_key, flow_value)
    elif flow_value:
        raise ConfigError("Upstash-Flow-Control-Value needs an Upstash-Flow-Control-Key")
    for nested in (cfg.callback_headers, cfg.failure_callback_headers):
        if nested:  # validate now so a bad callback setting never surfaces after acceptance
            parse_config(nested.items(), now_ms=now_ms)
    return cfg


def due_at(cfg: PublishConfig, now_ms: int) -> int:
    """Not-Before overrides Delay; a past Not-Before means now."""
    if cfg.not_before_ms is not None:
        return max(now_ms, cfg.not_before_ms)
    return now_ms + cfg.delay_ms


def classify_destination(destination: str) -> tuple[str, str]:
    """('url', url) or ('group', name); raises ConfigError for anything else."""
    if destination.lower().startswith(("http://", "https://")):
        return "url", check_url(destination, "destination url")
    if "/" in destination or ":" in destination or not destination:
        raise ConfigError("invalid destination url: endpoint has invalid scheme, add http:// or https://")
    return "group", check_name(destination, "url group name")

"""QStash pure parts: retry delays, header parsing, the signature, cron zones."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import jwt
import pytest
from qstash import Receiver
from qstash.errors import SignatureError

from lockgate.protocol.cron import parse_cron
from lockgate.protocol.qstash_signing import DEV_CURRENT_KEY, DEV_NEXT_KEY, new_signing_key, sign
from lockgate.qstash.config import ConfigError, classify_destination, due_at, parse_config, parse_duration_ms
from lockgate.qstash.retry import RetryDelayExpression, default_backoff_ms, next_retry_delay_ms


def test_default_backoff_follows_the_qstash_curve():
    assert [round(default_backoff_ms(n) / 1000, 1) for n in range(1, 7)] == [
        12.2, 148.4, 1808.0, 22026.5, 86400.0, 86400.0]


def test_retry_delay_expressions():
    expr = RetryDelayExpression("1000 * (1 + retried)")
    assert [expr.delay_ms(r) for r in range(3)] == [1000, 2000, 3000]
    expr = RetryDelayExpression("max(10, pow(2, retried))")
    assert [expr.delay_ms(r) for r in range(5)] == [10, 10, 10, 10, 16]
    assert RetryDelayExpression("-5").delay_ms(0) == 0
    for bad in ("__import__('os')", "retried.x", "1 +", "open(1)", "2 ** 8", "lambda: 1"):
        with pytest.raises(ValueError):
            RetryDelayExpression(bad)


def test_retry_after_headers_win_over_expression_and_backoff():
    now = int(time.time() * 1000)
    assert next_retry_delay_ms(1, response_headers={"Retry-After": ["2"]}, expression="100", now_ms=now) == 2000
    assert next_retry_delay_ms(1, response_headers={"X-RateLimit-Reset": ["6m5s"]}, expression=None,
                               now_ms=now) == 365_000
    assert next_retry_delay_ms(1, response_headers={"Retry-After": ["999999"]}, expression="100", now_ms=now) == 100
    assert next_retry_delay_ms(2, response_headers={}, expression="1000 * retried", now_ms=now) == 1000


def test_durations():
    assert parse_duration_ms("1h30m3s", "x") == 5403_000
    assert parse_duration_ms("1d10h30m", "x") == (86400 + 36000 + 1800) * 1000
    assert parse_duration_ms("50", "x") == 50_000
    for bad in ("", "10x", "-1s", "1.5s"):
        with pytest.raises(ConfigError):
            parse_duration_ms(bad, "x")


def test_config_headers_are_case_insensitive_and_forwarded_by_rule():
    cfg = parse_config([
        ("content-type", "application/json"), ("upstash-forward-x-a", "1"), ("Upstash-Forward-X-A", "2"),
        ("Upstash-Content-Based-Deduplication", "True"), ("Authorization", "Bearer secret"),
        ("upstash-telemetry-sdk", "js"), ("Upstash-Flow-Control-Key", "k"),
        ("Upstash-Flow-Control-Value", "rate=23, period=1h30m3s"), ("Upstash-Label", "a,b"),
        ("Upstash-Callback", "http://cb.example/x"), ("Upstash-Callback-Forward-X-C", "1"),
    ], now_ms=0)
    assert cfg.headers == {"Content-Type": ["application/json"], "X-A": ["1", "2"]}
    assert cfg.content_based_dedup and cfg.labels == ["a", "b"]
    assert (cfg.flow_control.rate, cfg.flow_control.parallelism, cfg.flow_control.period) == (23, None, 5403)
    assert cfg.callback_headers == {"Upstash-Forward-X-C": "1"}


def test_not_before_overrides_delay():
    cfg = parse_config([("Upstash-Delay", "1h"), ("Upstash-Not-Before", "100")], now_ms=50_000)
    assert due_at(cfg, 50_000) == 100_000
    assert due_at(parse_config([("Upstash-Delay", "10s")], now_ms=0), 1000) == 11_000


def test_destinations():
    assert classify_destination("https://a.example/x?y=1") == ("url", "https://a.example/x?y=1")
    assert classify_destination("my-group") == ("group", "my-group")
    for bad in ("ftp://x", "a/b", "http://", "host:80"):
        with pytest.raises(ConfigError):
            classify_destination(bad)


def test_signature_verifies_with_the_official_receiver():
    body = b'{"hello":"world"}'
    token = sign(DEV_CURRENT_KEY, url="http://127.0.0.1:9000/hook", body=body)
    Receiver(DEV_CURRENT_KEY, DEV_NEXT_KEY).verify(signature=token, body=body.decode(),
                                                   url="http://127.0.0.1:9000/hook")
    Receiver("sig_" + "x" * 28, DEV_CURRENT_KEY).verify(signature=token, body=body.decode())  # next-key fallback
    claims = jwt.decode(token, DEV_CURRENT_KEY, algorithms=["HS256"], options={"verify_signature": True},
                        issuer="Upstash")
    assert claims["exp"] == claims["iat"] + 300 and claims["nbf"] == 0 and claims["jti"].startswith("jwt_")
    assert claims["body"] == base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()
    with pytest.raises(SignatureError):
        Receiver(DEV_CURRENT_KEY, DEV_NEXT_KEY).verify(signature=token, body=body.decode(), url="http://other/")
    with pytest.raises(SignatureError):
        Receiver(DEV_CURRENT_KEY, DEV_NEXT_KEY).verify(signature=token, body="tampered")
    assert len(new_signing_key()) == 32


def test_cron_tz_fires_at_local_time():
    start = int(datetime(2026, 1, 10, tzinfo=timezone.utc).timestamp() * 1000)
    tick = parse_cron("CRON_TZ=America/New_York 0 4 * * *").next_after(start)
    local = datetime.fromtimestamp(tick / 1000, tz=ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (4, 0)
    assert datetime.fromtimestamp(tick / 1000, tz=timezone.utc).hour == 9  # EST in January

"""Protocol adapters against the spec's vectors and the official SDK's own parsing."""

from __future__ import annotations

import base64

import pytest

from lockgate.protocol.backoff import clamp_retries, retry_delay_ms
from lockgate.protocol.cron import parse_cron
from lockgate.protocol.event_ids import ulid_from_seed
from lockgate.protocol.execution_request import build_execution_body
from lockgate.protocol.jsoncanon import canonical_json
from lockgate.protocol.sdk_response import (
    FunctionCompleted,
    FunctionErrored,
    OpsReturned,
    TransportError,
    parse_sdk_response,
    to_error_memo,
)
from lockgate.protocol.signing import (
    hashed_signing_key,
    sign_body,
    validate_signing_key,
    verify_bearer,
    verify_signature,
)
from lockgate.protocol.step_ids import hash_step_id
from lockgate.protocol.timeparse import iso_ms, parse_duration, parse_retry_after, parse_time_or_duration

NOW = 1_700_000_000_000
SDK = {"X-Inngest-SDK": "inngest-py:v0.5.19", "X-Inngest-Req-Version": "2"}


def test_signature_vectors():
    assert sign_body(b'{"a":"x","b":1}', "signkey-test-12345678", 1700000000) == (
        "t=1700000000&s=c7e483b63616c0d95dbd3bcacaa2e91bbd3677b0cb7e67b2cde008f22eb03239"
    )
    assert sign_body(b"", "signkey-test-12345678", 1700000000).endswith(
        "189656184e486419febc1f6fd73e1c45bc8595c99633a32ebe1ea40ac8adf630"
    )
    header = sign_body(b"body", "abcd", 1700000000)
    assert verify_signature(header, b"body", ["ffff", "signkey-prod-abcd"])
    assert not verify_signature(header, b"other", ["abcd"])


def test_bearer_accepts_plain_and_hashed_with_or_without_prefix():
    key = "signkey-prod-12345678"
    hashed = hashed_signing_key(key)
    assert hashed == "b2ed992186a5cb19f6668aade821f502c1d00970dfd0e35128d51bac4649916c"
    for token in (hashed, "signkey-prod-" + hashed, "12345678"):
        assert verify_bearer(f"Bearer {token}", [key])
    assert not verify_bearer("Bearer 00", [key])
    assert not verify_bearer(None, [key])


@pytest.mark.parametrize("bad, fragment", [("xyz", "hexadecimal"), ("abc", "even number"), ("signkey-prod-", "empty")])
def test_signing_key_validation_says_what_is_wrong(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_signing_key(bad)


def test_step_id_vectors():
    assert hash_step_id("my-step-id") == "e7d8a2f140845095749d60246ff1110c9d01d76a"
    assert hash_step_id("my-step-id", 1) == "f47c6228c581af870aa285200cf95ec3ac59bb6a"
    assert hash_step_id("a", 1) == "de89bfaf06245091a7873290a793604612302247"


def test_durations_and_times():
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    assert parse_duration("500ms") == 0.5
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    assert parse_time_or_duration("10s", NOW) == NOW + 10_000
    assert parse_time_or_duration(iso_ms(NOW + 5000), NOW) == NOW + 5000
    assert parse_time_or_duration("2001-01-01T00:00:00Z", NOW) == NOW  # past means now
    assert parse_time_or_duration("", NOW) == NOW


def test_retry_after_is_clamped():
    assert parse_retry_after("5", NOW) == NOW + 5000
    assert parse_retry_after(iso_ms(NOW + 2500), NOW) == NOW + 2500
    assert parse_retry_after("0", NOW) == NOW + 1000
    assert parse_retry_after("9999999", NOW) == NOW + 24 * 3600 * 1000
    assert parse_retry_after("garbage!", NOW) is None


def test_backoff_table_and_fixed_interval():
    class Zero:
        @staticmethod
        def uniform(a, b):
            return 0

    assert [retry_delay_ms(i, rng=Zero) for i in (0, 1, 2, 50)] == [15_000, 30_000, 60_000, 7_200_000]
    assert retry_delay_ms(3, fixed_interval_s=0.2) == 200
    assert clamp_retries(99) == 20 and clamp_retries(-1) == 0


def test_cron_with_time_zone():
    utc = parse_cron("0 12 * * *")
    paris = parse_cron("TZ=Europe/Paris 0 12 * * *")
    midnight = 1_700_006_400_000  # 2023-11-15T00:00:00Z
    assert utc.next_after(midnight) - midnight == 12 * 3600_000
    assert paris.next_after(midnight) - midnight == 11 * 3600_000  # CET is UTC+1
    for bad in ("@daily", "* * * *", "0 0 * * * *", "TZ=Mars/Base * * * * *"):
        with pytest.raises(ValueError):
            parse_cron(bad)


def test_seeded_ids_are_deterministic_and_distinct_per_index():
    seed = "1700000000000," + base64.b64encode(bytes(range(10))).decode()
    assert ulid_from_seed(seed, 0) == ulid_from_seed(seed, 0)
    assert ulid_from_seed(seed, 0) != ulid_from_seed(seed, 1)
    assert ulid_from_seed("nonsense", 0) is None
    assert ulid_from_seed(None, 0) is None


def test_sdk_response_kinds():
    assert parse_sdk_response(200, SDK, b'"hi"', NOW) == FunctionCompleted("hi", 2)
    ops = parse_sdk_response(206, SDK, b'[{"id":"x","op":"StepRun","data":1,"displayName":"a"}]', NOW)
    assert isinstance(ops, OpsReturned) and ops.ops[0].data == 1 and ops.ops[0].display_name == "a"
    err = parse_sdk_response(500, {**SDK, "X-Inngest-No-Retry": "true"}, b'{"name":"E","message":"m"}', NOW)
    assert isinstance(err, FunctionErrored) and not err.retriable
    retry = parse_sdk_response(500, {**SDK, "Retry-After": "3"}, b"oops", NOW)
    assert retry.retriable and retry.retry_at_ms == NOW + 3000 and retry.error["message"] == "oops"
    assert isinstance(parse_sdk_response(200, {}, b"<html>", NOW), TransportError)  # not an SDK
    assert isinstance(parse_sdk_response(206, SDK, b"[{]", NOW), TransportError)


def test_streamed_response_is_unwrapped():
    body = b'   {"status":500,"headers":{"X-Inngest-No-Retry":"true"},"body":"{\\"message\\":\\"no\\"}"}'
    result = parse_sdk_response(201, SDK, body, NOW)
    assert isinstance(result, FunctionErrored) and not result.retriable and result.error == {"message": "no"}


def test_error_memo_shape():
    assert to_error_memo({"name": "E", "message": "m", "code": "x", "stack": None}) == {"name": "E", "message": "m"}
    assert to_error_memo("plain") == {"name": "Error", "message": "plain"}


def test_execution_body_is_canonical_and_accepted_by_the_sdk():
    from inngest._internal.server_lib import ServerRequest

    event = {"name": "a/b", "data": {"z": 1, "a": 2}, "id": "x", "ts": NOW, "user": {}}
    body = build_execution_body(event=event, events=[event], steps={"s": {"data": 1}}, run_id="01RUN", attempt=0,
                                max_attempts=5, disable_immediate_execution=False, stack=["s"], request_version=-1,
                                use_api=False)
    raw = canonical_json(body)
    assert raw.startswith(b'{"ctx":{"attempt":0,"disable_immediate_execution":false')
    parsed = ServerRequest.model_validate_json(raw)
    assert parsed.ctx.run_id == "01RUN"
    assert parsed.steps == {"s": {"data": 1}}

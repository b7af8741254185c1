"""Protocol adapters against the spec's vectors and the official SDK's own code (inngest-py 0.5.19)."""

from __future__ import annotations

import time

import asyncio
import base64
import datetime
import json
import logging
import random

import jcs
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from inngest._internal import errors as sdk_errors
from inngest._internal import execution_lib, net, server_lib, step_lib, transforms
from inngest._internal.client_lib.client import _seed as sdk_seed
from inngest._internal.comm_lib import CommResponse
from inngest._internal.step_lib.base import Output, StepBase, StepIDCounter
from ulid import ULID

from lockgate.protocol.backoff import DEFAULT_RETRIES, MAX_RETRIES, clamp_retries, retry_delay_ms
from lockgate.protocol.cron import parse_cron
from lockgate.protocol.event_ids import new_ulid, ulid_from_seed
from lockgate.protocol.execution_request import build_execution_body, execution_headers
from lockgate.protocol.jsoncanon import canonical_json, dumps, loads
from lockgate.protocol.sdk_response import (
    FunctionCompleted,
    FunctionErrored,
    Op,
    OpsReturned,
    TransportError,
    parse_sdk_response,
    to_error_memo,
)
from lockgate.protocol.signing import (
    answer_signature_problem,
    hashed_signing_key,
    sign_body,
    strip_key_prefix,
    validate_signing_key,
    verify_bearer,
    verify_signature,
)
from lockgate.protocol.step_ids import hash_step_id
from lockgate.protocol.timeparse import iso_ms, parse_duration, parse_retry_after, parse_time_or_duration

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z
SDK = {"X-Inngest-SDK": "inngest-py:v0.5.19", "X-Inngest-Req-Version": "2"}
LOG = logging.getLogger("test_protocol")


class FixedRng:
    def __init__(self, value: float) -> None:
        self.value = value

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.value


# --- JSON ---------------------------------------------------------------------------------------


def test_canonical_json_sorts_keys_and_drops_whitespace():
    assert canonical_json({"b": 1, "a": [1.0, 2.5, "é"], "c": None}) == '{"a":[1,2.5,"é"],"b":1,"c":null}'.encode()


def test_big_integers_are_written_as_the_sdk_canonicaliser_writes_them():
    value = {"n": 2**60 + 1, "m": -(2**70), "ok": 2**53 - 1, "flag": True}
    raw = canonical_json(value)
    assert raw == jcs.canonicalize(value)
    assert b'"ok":9007199254740991' in raw and b'"flag":true' in raw


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"x": [10**400]}])
def test_canonical_json_refuses_values_json_cannot_hold(bad):
    with pytest.raises(ValueError, match="JSON"):
        canonical_json(bad)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_sdk_recanonicalising_our_bytes_gives_the_same_bytes(value):
    # The SDK checks the signature over jcs.canonicalize(json.loads(body)); it must equal what we signed.
    try:
        raw = canonical_json(value)
    except ValueError:
        return  # e.g. lone surrogates in text
    assert transforms.canonicalize(raw) == raw


_plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.text(alphabet=st.characters(codec="utf-8")) | st.sampled_from(["\x00\x1f\x7f\u2028", "é\"\\/", "\U0001f600"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=6) | st.sampled_from(["a", "B", "_", "\ue000", "\U0001f600", "é"]), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(_plain_values | _json_values)
def test_canonical_json_writes_exactly_what_rfc8785_and_the_sdk_write(value):
    # The fast path (orjson, for values without floats or big integers or non-ASCII keys) must give
    # the very bytes of the reference encoders, or signatures would not verify.
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        return  # big integers, lone surrogates: covered above
    assert canonical_json(value) == expected == jcs.canonicalize(value)


def test_dumps_and_loads_round_trip_including_big_integers():
    assert loads(dumps({"a": [1, "x", None]})) == {"a": [1, "x", None]}
    assert dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'
    assert loads("[1]") == [1]


# --- signing ------------------------------------------------------------------------------------


def test_signature_vectors_from_the_spec():
    key = "signkey-test-12345678"
    assert sign_body(b'{"a":"x","b":1}', key, 1700000000) == (
        "t=1700000000&s=c7e483b63616c0d95dbd3bcacaa2e91bbd3677b0cb7e67b2cde008f22eb03239"
    )
    assert sign_body(b"", key, 1700000000) == (
        "t=1700000000&s=189656184e486419febc1f6fd73e1c45bc8595c99633a32ebe1ea40ac8adf630"
    )


def test_signature_matches_the_sdk_and_the_sdk_accepts_it():
    key = "signkey-prod-0123456789abcdef0123456789abcdef"
    body = canonical_json({"z": 1, "a": {"y": [1, 2]}})
    header = sign_body(body, key, 1700000000)
    assert header == net.sign_request(body, key, 1700000000)
    ok = net.validate_request_sig(
        body=body, headers={"x-inngest-signature": header}, mode=server_lib.ServerKind.CLOUD,
        signing_key=key, signing_key_fallback=None,
    )
    assert ok == key
    wrong = net.validate_request_sig(
        body=body, headers={"x-inngest-signature": sign_body(body, "abcd", 1700000000)},
        mode=server_lib.ServerKind.CLOUD, signing_key=key, signing_key_fallback=None,
    )
    assert isinstance(wrong, Exception)


def test_verify_signature():
    header = sign_body(b"body", "abcd", 1700000000)
    assert verify_signature(header, b"body", ["ffff", "signkey-prod-abcd"])
    assert not verify_signature(header, b"other", ["abcd"])
    assert not verify_signature(header, b"body", [])
    assert not verify_signature(None, b"body", ["abcd"])
    assert not verify_signature("t=abc&s=00", b"body", ["abcd"])
    assert not verify_signature("s=00", b"body", ["abcd"])
    assert not verify_signature("t=1700000000&s=é", b"body", ["abcd"])
    assert not verify_signature(header, b"body", ["abcd"], max_age_s=300)  # 2023 is long ago
    assert verify_signature(sign_body(b"body", "abcd"), b"body", ["abcd"], max_age_s=300)


# Computed with signDataWithKey of the inngest JS SDK (3.54.2 and 4.24.0 agree), key
# "signkey-test-5ec0de5ec0de", timestamp "1700000000": the answer's bytes as sent, then the timestamp.
JS_ANSWER_VECTORS = [
    ('{"hello":"Ada","sdk":3}', "35b5f4f81c45bcfbe66db588c677cd4fa31b9a444621f5724759b5129e776ec1"),
    ('[{"op":"StepRun","data":"héllo ✓"}]', "17b3c27446f2a14e074baa8274d4d03497ebfc8c9af282943054aa023f9a2a12"),
    ("", "59326b2f7ed22c58f7c05e3e5fed9ee25f3f2a4272ec98e2cd202a8d6f65d688"),
]


@pytest.mark.parametrize("body, mac", JS_ANSWER_VECTORS)
def test_answers_signed_by_the_js_sdk_are_trusted(body, mac):
    key = "signkey-test-5ec0de5ec0de"
    header = {"X-Inngest-Signature": f"t=1700000000&s={mac}"}
    assert answer_signature_problem(200, header, body.encode(), [key]) is None
    assert answer_signature_problem(206, header, body.encode(), ["signkey-test-1234", key]) is None  # fallback
    assert answer_signature_problem(200, header, body.encode(), ["signkey-test-1234"]) == "wrong key"
    assert answer_signature_problem(200, header, body.encode() + b" ", [key]) == "wrong key"
    assert answer_signature_problem(200, {}, body.encode(), [key]) == "unsigned"


def test_answers_signed_by_the_python_sdk_are_trusted():
    key = "signkey-prod-0123456789abcdef"
    body = rb'{"data":"r\u00e9sum\u00e9","id":"x"}'
    header = net.sign_response(body, key)
    assert answer_signature_problem(200, {"x-inngest-signature": header}, body, [key]) is None
    assert answer_signature_problem(200, {"x-inngest-signature": header}, body, ["abcd"]) == "wrong key"


def test_a_streamed_answer_is_signed_inside_its_wrapper():
    key = "signkey-test-5ec0de5ec0de"
    inner = '{"hello":"Ada","sdk":3}'
    signed = {"X-Inngest-Signature": f"t=1700000000&s={JS_ANSWER_VECTORS[0][1]}", "x-inngest-sdk": "js:v3"}
    wrapper = b"   " + json.dumps({"status": 200, "headers": signed, "body": inner}).encode()
    assert answer_signature_problem(201, {"x-inngest-sdk": "js:v3"}, wrapper, [key]) is None
    # a signature on the outer 201 does not vouch for the streamed answer
    unsigned = json.dumps({"status": 200, "headers": {}, "body": inner}).encode()
    assert answer_signature_problem(201, signed, unsigned, [key]) == "unsigned"
    assert answer_signature_problem(201, {}, b"  {cut", [key]) == "unsigned"


def test_strip_key_prefix():
    assert strip_key_prefix("signkey-prod-abcd") == "abcd"
    assert strip_key_prefix("signkey-branch_1-abcd") == "abcd"
    assert strip_key_prefix("abcd") == "abcd"
    assert strip_key_prefix(" signkey-test-ab \n") == "ab"
    for key in ("signkey-prod-12345678", "12345678", "signkey-x-"):
        assert strip_key_prefix(key) == transforms.remove_signing_key_prefix(key)


def test_hashed_key_vectors_and_sdk_agreement():
    assert hashed_signing_key("signkey-prod-12345678") == (
        "b2ed992186a5cb19f6668aade821f502c1d00970dfd0e35128d51bac4649916c"
    )
    key = "signkey-prod-0123456789abcdef0123456789abcdef"
    hashed = hashed_signing_key(key)
    assert hashed.startswith("223e0a16") and hashed.endswith("22a")
    assert hashed == transforms.hash_signing_key(key)
    with pytest.raises(ValueError, match="hexadecimal"):
        hashed_signing_key("signkey-prod-xyz")


def test_bearer_accepts_plain_and_hashed_with_or_without_prefix():
    key = "signkey-prod-12345678"
    hashed = hashed_signing_key(key)
    for token in (hashed, "signkey-prod-" + hashed, "12345678", "signkey-test-12345678"):
        assert verify_bearer(f"Bearer {token}", [key]), token
        assert verify_bearer(f"bearer {token}", ["12345678"]), token
    assert verify_bearer(f"Bearer {hashed}", ["", "ffff", key])  # the fallback key may be the one


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Bearer 00", "Basic 12345678", "12345678", "Bearer ∂∂∂", "Bearer signkey-prod-"]
)
def test_bearer_rejects(header):
    assert not verify_bearer(header, ["signkey-prod-12345678"])


def test_bearer_with_no_keys_rejects():
    assert not verify_bearer("Bearer 12345678", [])


@pytest.mark.parametrize(
    "bad, fragment",
    [("xyz", "hexadecimal"), ("signkey-prod-12g4", "hexadecimal"), ("abc", "even number"),
     ("signkey-prod-", "empty"), ("", "empty"), ("signkey-prod-ab cd", "hexadecimal")],
)
def test_signing_key_validation_says_what_is_wrong(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_signing_key(bad)


def test_valid_signing_keys():
    for key in ("signkey-prod-12345678", "ABCDEF01", "signkey-branch-00"):
        validate_signing_key(key)


# --- step ids -----------------------------------------------------------------------------------


def test_step_id_vectors():
    assert hash_step_id("my-step-id") == "e7d8a2f140845095749d60246ff1110c9d01d76a"
    assert hash_step_id("my-step-id", 1) == "f47c6228c581af870aa285200cf95ec3ac59bb6a"
    assert hash_step_id("a") == "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"
    assert hash_step_id("a", 1) == "de89bfaf06245091a7873290a793604612302247"


def test_step_ids_match_the_sdk_for_repeats():
    step = StepBase(None, None, StepIDCounter(), None)  # type: ignore[arg-type]
    for index in range(3):
        parsed = step._parse_step_id("répété")
        assert parsed.hashed == hash_step_id("répété", index)
    with pytest.raises(ValueError):
        hash_step_id("a", -1)


# --- time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2h45m", 9900), ("2d", 172800), ("1w", 604800),
     ("1.5h", 5400), (".5s", 0.5), ("1us", 1e-6), ("1µs", 1e-6), ("100ns", 1e-7), ("0", 0), ("+1m", 60),
     ("-5s", -5), (" 90s ", 90), ("1w2d3h4m5s", 604800 + 172800 + 3 * 3600 + 4 * 60 + 5)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["soon", "", "10", "1h 30m", "1x", "h", "1.2.3s", "٣s", "--1s", "1H", "s1"])
def test_parse_duration_rejects_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_sdk_duration_strings_parse():
    for ms in (1000, 90_000, 3_600_000, 2 * 86_400_000, 604_800_000):
        assert parse_duration(transforms.to_duration_str(ms)) * 1000 == ms


def test_parse_time_or_duration():
    assert parse_time_or_duration("10s", NOW) == NOW + 10_000
    assert parse_time_or_duration(iso_ms(NOW + 5000), NOW) == NOW + 5000
    assert parse_time_or_duration("2001-01-01T00:00:00Z", NOW) == NOW  # past means now
    assert parse_time_or_duration("", NOW) == NOW  # empty timeout: expire at once
    assert parse_time_or_duration(None, NOW) == NOW  # type: ignore[arg-type]
    assert parse_time_or_duration("-5s", NOW) == NOW
    assert parse_time_or_duration("2023-11-15T01:13:20+02:00", NOW) == NOW + 3600_000
    assert parse_time_or_duration("2023-11-14t23:13:20.250z", NOW) == NOW + 3600_250
    assert parse_time_or_duration("2023-11-15 00:00:00", NOW) == 1_700_006_400_000  # no zone: UTC
    with pytest.raises(ValueError, match="neither a date"):
        parse_time_or_duration("tomorrow", NOW)
    with pytest.raises(ValueError, match="neither a date"):
        parse_time_or_duration("2023-13-45T00:00:00Z", NOW)


def test_sleep_name_written_by_the_sdk_parses_to_the_exact_millisecond():
    # Python puts the wake-up time in the Sleep op's `name` (spec §2.4). The last two values lose a
    # millisecond when parsed through float timestamps; the parser must not.
    until = datetime.datetime(2026, 11, 22, 13, 26, 22, 9000, tzinfo=datetime.timezone.utc)
    name = transforms.to_iso_utc(until)
    assert name == "2026-11-22T13:26:22.009Z"
    assert parse_time_or_duration(name, NOW) == 1_795_353_982_009
    for ms in (NOW + 1, NOW + 7, 1_795_353_982_009, 2_168_194_083_252, 1_099_296_617_182):
        stamp = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
        assert parse_time_or_duration(transforms.to_iso_utc(stamp), 0) == ms


def test_iso_ms():
    assert iso_ms(NOW) == "2023-11-14T22:13:20.000Z"
    assert iso_ms(1_795_353_982_009) == "2026-11-22T13:26:22.009Z"
    assert iso_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"


def test_retry_after():
    assert parse_retry_after("5", NOW) == NOW + 5000
    assert parse_retry_after(iso_ms(NOW + 2500), NOW) == NOW + 2500
    assert parse_retry_after("0", NOW) == NOW + 1000  # at least 1 s
    assert parse_retry_after("-30", NOW) == NOW + 1000
    assert parse_retry_after("9999999", NOW) == NOW + 24 * 3600 * 1000  # at most 24 h
    assert parse_retry_after(iso_ms(NOW - 60_000), NOW) == NOW + 1000
    assert parse_retry_after(iso_ms(NOW + 3 * 86_400_000), NOW) == NOW + 86_400_000
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", NOW) == NOW + 30_000  # RFC 1123
    for bad in ("garbage!", "inf", "nan", "1.5", "", "   ", "12345678", "1e3"):
        assert parse_retry_after(bad, NOW) is None, bad


def test_retry_after_written_by_the_sdk():
    err = sdk_errors.RetryAfterError("later", datetime.datetime.fromtimestamp((NOW + 42_123) / 1000, datetime.timezone.utc))
    header = transforms.to_iso_utc(err.retry_after)
    assert parse_retry_after(header, NOW) == NOW + 42_123


# --- event ids ----------------------------------------------------------------------------------


def test_new_ulid():
    a, b = new_ulid(), new_ulid()
    assert len(a) == 26 and a != b and str(ULID.from_str(a)) == a
    before = time.time_ns() // 1_000_000
    ids = [new_ulid() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert all(before <= ULID.from_str(u).milliseconds <= after for u in ids)  # python-ulid reads our encoding
    assert len(set(ids)) == len(ids)
    time.sleep(0.002)
    assert new_ulid() > max(ids)  # later milliseconds sort later


def test_seed_made_the_sdk_way_gives_deterministic_ids():
    seed = sdk_seed()  # what inngest-py puts in X-Inngest-Event-Id-Seed
    millis = int(seed.split(",")[0])
    ids = [ulid_from_seed(seed, i) for i in range(3)]
    assert ids == [ulid_from_seed(seed, i) for i in range(3)]  # a retried send gets the same ids
    assert len(set(ids)) == 3
    entropy = base64.b64decode(seed.split(",")[1])
    for index, value in enumerate(ids):
        raw = ULID.from_str(value).bytes
        assert raw[:6] == millis.to_bytes(6, "big") and raw[6:12] == entropy[:6]
        assert int.from_bytes(raw[12:], "big") == (int.from_bytes(entropy[6:], "big") + index) % 2**32


def test_seed_counter_layout():
    entropy = bytes([1, 2, 3, 4, 5, 6, 0, 0, 0, 255])
    seed = "1700000000000," + base64.b64encode(entropy).decode()
    first = ULID.from_str(ulid_from_seed(seed, 0)).bytes
    third = ULID.from_str(ulid_from_seed(seed, 2)).bytes
    assert first[:6] == (1700000000000).to_bytes(6, "big")
    assert first[6:] == entropy
    assert third[6:] == bytes([1, 2, 3, 4, 5, 6, 0, 0, 1, 1])  # big-endian uint32 in bytes 6..9, +2
    wrap = "1," + base64.b64encode(bytes(6) + b"\xff\xff\xff\xff").decode()
    assert ULID.from_str(ulid_from_seed(wrap, 1)).bytes[6:] == bytes(10)


@pytest.mark.parametrize(
    "seed",
    [None, "", "nonsense", "1700000000000", "abc," + base64.b64encode(bytes(10)).decode(),
     "1700000000000," + base64.b64encode(bytes(9)).decode(), "1700000000000,!!!!",
     "1700000000000,", str(2**48) + "," + base64.b64encode(bytes(10)).decode(),
     "-1," + base64.b64encode(bytes(10)).decode()],
)
def test_invalid_seed_gives_none(seed):
    assert ulid_from_seed(seed, 0) is None


def test_negative_index_gives_none():
    assert ulid_from_seed(sdk_seed(), -1) is None


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_table_and_fixed_interval():
    table = [15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200]
    assert [retry_delay_ms(i, rng=FixedRng(0)) for i in range(10)] == [s * 1000 for s in table]
    assert retry_delay_ms(50, rng=FixedRng(0)) == 7_200_000
    assert retry_delay_ms(-3, rng=FixedRng(0)) == 15_000
    assert retry_delay_ms(0, rng=FixedRng(1)) == 45_000  # jitter up to 30 s
    for _ in range(50):
        assert 15_000 <= retry_delay_ms(0, rng=random.Random()) <= 45_000
    assert retry_delay_ms(3, fixed_interval_s=0.2) == 200
    assert retry_delay_ms(3, fixed_interval_s=0) == 0


def test_clamp_retries():
    assert (DEFAULT_RETRIES, MAX_RETRIES) == (4, 20)
    assert clamp_retries(99) == 20 and clamp_retries(-1) == 0 and clamp_retries(3) == 3
    assert clamp_retries(None) == 4


# --- cron ---------------------------------------------------------------------------------------


def test_cron_with_time_zone():
    utc = parse_cron("0 12 * * *")
    paris = parse_cron("TZ=Europe/Paris 0 12 * * *")
    tokyo = parse_cron("CRON_TZ=Asia/Tokyo  0 9 * * 1-5")
    midnight = 1_700_006_400_000  # 2023-11-15T00:00:00Z, a Wednesday
    assert utc.next_after(midnight) - midnight == 12 * 3600_000
    assert paris.next_after(midnight) - midnight == 11 * 3600_000  # CET is UTC+1
    assert tokyo.next_after(midnight) == midnight + 24 * 3600_000  # 09:00 JST = 00:00Z, strictly after
    assert utc.next_after(midnight + 12 * 3600_000 - 1) == midnight + 12 * 3600_000
    assert utc.next_after(midnight + 12 * 3600_000 + 500) == midnight + 36 * 3600_000


def test_cron_daylight_saving_changes():
    ny_gap = parse_cron("TZ=America/New_York 30 2 * * *")  # 02:30 does not exist on 2024-03-10
    start = 1_710_036_000_000  # 2024-03-10T02:00:00Z
    assert iso_ms(ny_gap.next_after(start)) == "2024-03-10T07:00:00.000Z"  # 03:00 EDT, right after the jump
    ny_twice = parse_cron("TZ=America/New_York 30 1 * * *")  # 01:30 happens twice on 2024-11-03
    start = 1_730_592_000_000  # 2024-11-03T00:00:00Z
    first = ny_twice.next_after(start)
    assert iso_ms(first) == "2024-11-03T05:30:00.000Z"
    assert iso_ms(ny_twice.next_after(first)) == "2024-11-04T06:30:00.000Z"  # not again at 06:30Z
    every_half_hour = parse_cron("TZ=America/New_York */30 * * * *")
    assert every_half_hour.next_after(first + 30 * 60_000) == first + 60 * 60_000  # keeps going


@pytest.mark.parametrize(
    "bad, fragment",
    [("@daily", "descriptors"), ("* * * *", "five fields"), ("0 0 * * * *", "five fields"),
     ("TZ=Mars/Base * * * * *", "time zone"), ("61 * * * *", "not a valid"), ("0 0 30 2 *", "never"),
     ("", "empty"), ("TZ=UTC", "empty"), ("CRON_TZ=Europe/Paris @hourly", "descriptors")],
)
def test_cron_rejects(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_cron(bad)


# --- SDK responses ------------------------------------------------------------------------------


def _from_sdk(resp: CommResponse) -> tuple[int, dict[str, str], bytes]:
    body = resp.body_bytes()
    assert not isinstance(body, Exception)
    return resp.status_code, resp.headers, body


def _call_result(**kwargs) -> CommResponse:
    return CommResponse.from_call_result(LOG, execution_lib.CallResult(**kwargs), None, server_lib.Framework.FAST_API, None)


def test_real_sdk_completion_and_errors():
    status, headers, body = _from_sdk(_call_result(output={"ok": [1, 2]}))
    assert parse_sdk_response(status, headers, body, NOW) == FunctionCompleted({"ok": [1, 2]}, 2)
    assert parse_sdk_response(*_from_sdk(_call_result(output=None)), NOW) == FunctionCompleted(None, 2)

    result = parse_sdk_response(*_from_sdk(_call_result(error=ValueError("boom"))), NOW)
    assert isinstance(result, FunctionErrored) and result.retriable and result.retry_at_ms is None
    assert result.error["name"] == "ValueError" and result.error["message"] == "boom"
    assert result.error["code"] == "unknown" and "ValueError: boom" in result.error["stack"]

    result = parse_sdk_response(*_from_sdk(_call_result(error=sdk_errors.NonRetriableError("stop"))), NOW)
    assert isinstance(result, FunctionErrored) and not result.retriable
    assert result.error["code"] == "non_retriable_error"

    later = datetime.datetime.fromtimestamp((NOW + 60_000) / 1000, datetime.timezone.utc)
    result = parse_sdk_response(*_from_sdk(_call_result(error=sdk_errors.RetryAfterError("later", later))), NOW)
    assert isinstance(result, FunctionErrored) and result.retriable and result.retry_at_ms == NOW + 60_000


def test_real_sdk_ops():
    info = step_lib.StepInfo(display_name="nap", id=hash_step_id("nap"), op=server_lib.Opcode.SLEEP,
                             name="2026-11-22T13:26:22.009Z")
    run = step_lib.StepInfo(display_name="fetch", id=hash_step_id("fetch"), op=server_lib.Opcode.STEP_RUN)
    resp = _call_result(multi=[execution_lib.CallResult(step=info), execution_lib.CallResult(step=run, output=None)])
    result = parse_sdk_response(*_from_sdk(resp), NOW)
    assert isinstance(result, OpsReturned) and result.request_version == 2
    sleep, step = result.ops
    assert (sleep.op, sleep.id, sleep.display_name, sleep.name) == ("Sleep", hash_step_id("nap"), "nap",
                                                                   "2026-11-22T13:26:22.009Z")
    assert sleep.opts == {} and not sleep.has_data
    assert step.op == "StepRun" and step.has_data and step.data is None and not step.no_retry


def test_real_sdk_unauthorized_is_a_signing_key_mismatch():
    status, headers, body = _from_sdk(CommResponse.unauthorized(LOG, sdk_errors.SigVerificationFailedError()))
    result = parse_sdk_response(status, headers, body, NOW)
    assert isinstance(result, TransportError) and result.retriable
    assert "signing key mismatch" in result.message


def test_not_an_sdk():
    for status in (200, 206, 204):
        result = parse_sdk_response(status, {"Content-Type": "text/html"}, b"<html>", NOW)
        assert isinstance(result, TransportError) and result.retriable
        assert result.message.startswith("The response did not come from an Inngest SDK")
    assert isinstance(parse_sdk_response(201, {}, b"<html>", NOW), TransportError)


def test_headers_are_case_insensitive():
    headers = {"x-inngest-sdk": "js:v3", "X-INNGEST-REQ-VERSION": "1", "x-Inngest-No-Retry": "TRUE"}
    assert parse_sdk_response(200, headers, b"1", NOW) == FunctionCompleted(1, 1)
    assert parse_sdk_response(400, headers, b"{}", NOW).retriable is False


@pytest.mark.parametrize("value, retriable", [("true", False), (" True ", False), ("false", True), ("yes", True),
                                              ("", True), (None, True)])
def test_no_retry_header(value, retriable):
    headers = dict(SDK)
    if value is not None:
        headers["X-Inngest-No-Retry"] = value
    assert parse_sdk_response(500, headers, b'{"message":"m"}', NOW).retriable is retriable


def test_retry_after_forces_retry():
    headers = {**SDK, "X-Inngest-No-Retry": "true", "Retry-After": "3"}
    result = parse_sdk_response(500, headers, b"oops", NOW)
    assert result.retriable and result.retry_at_ms == NOW + 3000
    unreadable = parse_sdk_response(500, {**SDK, "X-Inngest-No-Retry": "true", "Retry-After": "soonish"}, b"", NOW)
    assert not unreadable.retriable and unreadable.retry_at_ms is None


def test_error_bodies():
    assert parse_sdk_response(500, SDK, b"oops", NOW).error == {"name": "Error", "message": "oops"}
    long = parse_sdk_response(502, {}, b"x" * 10_000, NOW).error["message"]
    assert 2000 <= len(long) <= 2001
    assert "empty body" in parse_sdk_response(500, SDK, b"", NOW).error["message"]
    assert parse_sdk_response(500, SDK, b'"just text"', NOW).error == {"name": "Error", "message": "just text"}
    assert parse_sdk_response(500, SDK, b"[1,2]", NOW).error == {"name": "Error", "message": "[1,2]"}
    js = b'{"error":"Could not find step","requestedStep":"x","foundSteps":[]}'
    assert parse_sdk_response(500, {**SDK, "X-Inngest-No-Retry": "false"}, js, NOW).error["requestedStep"] == "x"
    bad_utf8 = parse_sdk_response(500, SDK, b"\xff\xfe oops", NOW)
    assert bad_utf8.error["message"].endswith("oops")


def test_request_version():
    assert parse_sdk_response(200, {"X-Inngest-SDK": "x"}, b"null", NOW).request_version is None
    assert parse_sdk_response(200, {"X-Inngest-SDK": "x", "X-Inngest-Req-Version": "abc"}, b"1", NOW).request_version is None
    assert parse_sdk_response(500, {"X-Inngest-Req-Version": "1"}, b"", NOW).request_version == 1


def test_completion_bodies():
    assert parse_sdk_response(200, SDK, b"", NOW) == FunctionCompleted(None, 2)
    assert isinstance(parse_sdk_response(200, SDK, b"{not json", NOW), TransportError)
    assert parse_sdk_response(200, SDK, b'"hi"', NOW) == FunctionCompleted("hi", 2)


def test_op_parsing():
    raw = [
        {"id": "x", "op": "StepRun", "data": 1, "displayName": "a", "opts": None, "userland": {"id": "a", "index": 0}},
        {"id": "y", "op": "WaitForEvent", "name": "app/ok", "opts": {"event": "app/ok", "timeout": "1h", "if": None}},
        {"id": "z", "op": "StepRun", "name": "legacy display", "data": None},
        {"op": "RunComplete", "data": {"done": True}},
    ]
    result = parse_sdk_response(206, SDK, json.dumps(raw).encode(), NOW)
    assert isinstance(result, OpsReturned)
    a, wait, legacy, complete = result.ops
    assert a == Op(id="x", op="StepRun", display_name="a", opts={}, data=1, has_data=True,
                   userland={"id": "a", "index": 0})
    assert wait.name == "app/ok" and wait.opts["timeout"] == "1h" and wait.display_name == "app/ok"
    assert not wait.has_data and wait.data is None
    assert legacy.display_name == "legacy display" and legacy.has_data
    assert complete.op == "RunComplete" and complete.id == "" and complete.data == {"done": True}


def test_op_lists():
    assert parse_sdk_response(206, SDK, b"[]", NOW) == OpsReturned([], 2)
    single = parse_sdk_response(206, SDK, b'{"id":"x","op":"StepPlanned","displayName":"p"}', NOW)
    assert isinstance(single, OpsReturned) and single.ops[0].op == "StepPlanned"
    error = parse_sdk_response(206, {**SDK, "X-Inngest-No-Retry": "true"},
                               b'[{"id":"x","op":"StepError","error":{"name":"E","message":"m"}}]', NOW)
    assert error.ops[0].no_retry and error.ops[0].error == {"name": "E", "message": "m"}
    for bad in (b"[{]", b"null", b"[1]", b'[{"id":"x"}]', b'[{"op":"StepRun"}]', b'[{"op":"StepRun","id":5}]', b""):
        assert isinstance(parse_sdk_response(206, SDK, bad, NOW), TransportError), bad


def test_streamed_response_is_unwrapped():
    body = b'   {"status":500,"headers":{"X-Inngest-No-Retry":"true"},"body":"{\\"message\\":\\"no\\"}"}'
    result = parse_sdk_response(201, SDK, body, NOW)
    assert isinstance(result, FunctionErrored) and not result.retriable and result.error == {"message": "no"}
    result = parse_sdk_response(201, SDK, b'\n \t{"status":200,"headers":{},"body":"\\"{\\\\\\"a\\\\\\":1}\\""}', NOW)
    assert result == FunctionCompleted('{"a":1}', 2)  # a string holding JSON is decoded exactly once
    result = parse_sdk_response(201, SDK, b' {"status":206,"headers":{},"body":[{"id":"x","op":"StepRun"}]}', NOW)
    assert isinstance(result, OpsReturned) and result.ops[0].id == "x"
    assert isinstance(parse_sdk_response(201, SDK, b"    ", NOW), TransportError)  # cut before the end
    assert isinstance(parse_sdk_response(201, SDK, b'{"status":201,"body":"1"}', NOW), TransportError)
    result = parse_sdk_response(201, SDK, b'{"status":500,"headers":{},"body":"plain text"}', NOW)
    assert result.error == {"name": "Error", "message": "plain text"}


async def _stream_from_sdk(call_result: execution_lib.CallResult) -> tuple[int, dict[str, str], bytes]:
    async def call() -> execution_lib.CallResult:
        await asyncio.sleep(0)
        return call_result

    task = asyncio.ensure_future(call())
    resp = CommResponse.create_streaming(LOG, task, None, server_lib.Framework.FAST_API, None, net.ServerTimings())
    chunks = [chunk async for chunk in resp.stream()]
    return resp.status_code, resp.headers, b"".join(chunks)


async def test_real_sdk_streamed_responses():
    status, headers, body = await _stream_from_sdk(execution_lib.CallResult(output={"x": "y"}))
    assert status == 201
    assert parse_sdk_response(status, headers, body, NOW) == FunctionCompleted({"x": "y"}, 2)
    status, headers, body = await _stream_from_sdk(execution_lib.CallResult(error=sdk_errors.NonRetriableError("no")))
    result = parse_sdk_response(status, headers, body, NOW)
    assert isinstance(result, FunctionErrored) and not result.retriable and result.error["message"] == "no"
    run = step_lib.StepInfo(display_name="s", id=hash_step_id("s"), op=server_lib.Opcode.STEP_RUN)
    status, headers, body = await _stream_from_sdk(
        execution_lib.CallResult(multi=[execution_lib.CallResult(step=run, output="out")])
    )
    result = parse_sdk_response(status, headers, body, NOW)
    assert isinstance(result, OpsReturned) and result.ops[0].data == "out"


# --- error memos --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "err, memo",
    [
        ({"name": "E", "message": "m", "code": "x", "stack": None}, {"name": "E", "message": "m"}),
        ({"name": "E", "message": "m", "stack": "tb"}, {"name": "E", "message": "m", "stack": "tb"}),
        ("plain", {"name": "Error", "message": "plain"}),
        (None, {"name": "Error", "message": ""}),
        ({}, {"name": "Error", "message": ""}),
        ({"name": 7, "message": {"a": 1}, "stack": ["l1"]}, {"name": "7", "message": '{"a":1}', "stack": '["l1"]'}),
        ({"error": "Could not find step", "requestedStep": "x"}, {"name": "Error", "message": "Could not find step"}),
        ({"name": "", "message": 0}, {"name": "Error", "message": "0"}),
    ],
)
def test_error_memo_shape(err, memo):
    assert to_error_memo(err) == memo
    # The SDK must read it back as an error, not as step data.
    parsed = Output.from_raw({"error": memo})
    assert isinstance(parsed, Output) and parsed.error is not None and parsed.error.message == memo["message"]


def test_error_memo_from_a_real_sdk_step_error():
    info = step_lib.StepInfo(display_name="s", id=hash_step_id("s"), op=server_lib.Opcode.STEP_ERROR)
    resp = _call_result(multi=[execution_lib.CallResult(step=info, error=ValueError("bad"))])
    (op,) = parse_sdk_response(*_from_sdk(resp), NOW).ops
    memo = to_error_memo(op.error)
    assert set(memo) == {"name", "message", "stack"} and memo["name"] == "ValueError"
    assert Output.from_raw({"error": memo}).error.name == "ValueError"


# --- execution request --------------------------------------------------------------------------


def _event(**extra) -> dict:
    return {"name": "a/b", "data": {"z": 1, "a": 2}, "id": "01HEVENT", "ts": NOW, "user": {}, **extra}


def test_execution_body_is_canonical_and_accepted_by_the_sdk():
    event = _event()
    body = build_execution_body(event=event, events=[event], steps={"s": {"data": 1}}, run_id="01RUN", attempt=2,
                                max_attempts=5, disable_immediate_execution=True, stack=["s"], request_version=-1,
                                use_api=False)
    assert body["ctx"] == {"run_id": "01RUN", "attempt": 2, "max_attempts": 5, "disable_immediate_execution": True,
                           "use_api": False, "stack": {"stack": ["s"], "current": 1}}
    assert (body["use_api"], body["version"]) == (False, -1) and "fn_id" not in body["ctx"]
    raw = canonical_json(body)
    assert raw.startswith(b'{"ctx":{"attempt":2,"disable_immediate_execution":true')
    parsed = server_lib.ServerRequest.from_raw(raw)  # the SDK's own strict request model
    assert isinstance(parsed, server_lib.ServerRequest), parsed
    assert parsed.ctx.run_id == "01RUN" and parsed.ctx.max_attempts == 5 and parsed.ctx.attempt == 2
    assert parsed.ctx.disable_immediate_execution is True and parsed.use_api is False
    assert parsed.steps == {"s": {"data": 1}} and parsed.event.name == "a/b" and parsed.event.ts == NOW
    assert parsed.events is not None and parsed.events[0].data == {"z": 1, "a": 2}
    assert Output.from_raw(parsed.steps["s"]).data == 1


def test_minimal_and_use_api_bodies_are_accepted_by_the_sdk():
    event = _event(data={})
    body = build_execution_body(event=event, events=[], steps={}, run_id="01RUN", attempt=0, max_attempts=1,
                                disable_immediate_execution=False, stack=[], request_version=2, use_api=True,
                                fn_id="00000000-0000-0000-0000-000000000000", qi_id="01RUN:call:1")
    assert body["ctx"]["use_api"] is True and body["use_api"] is True
    assert body["ctx"]["stack"] == {"stack": [], "current": 0} and body["ctx"]["fn_id"].startswith("0000")
    assert body["ctx"]["qi_id"] == "01RUN:call:1"
    parsed = server_lib.ServerRequest.from_raw(canonical_json(body))
    assert isinstance(parsed, server_lib.ServerRequest), parsed
    assert parsed.use_api is True and parsed.events == []


def test_float_timestamps_would_be_refused_by_the_sdk():
    # Why `ts` must stay an integer end to end (spec §0.3).
    event = _event(ts=float(NOW) + 0.5)
    body = build_execution_body(event=event, events=[event], steps={}, run_id="r", attempt=0, max_attempts=1,
                                disable_immediate_execution=False, stack=[], request_version=-1, use_api=False)
    assert isinstance(server_lib.ServerRequest.from_raw(canonical_json(body)), Exception)


def test_signed_execution_body_passes_the_sdk_signature_check():
    key = "signkey-prod-0123456789abcdef0123456789abcdef"
    event = _event(data={"big": 2**60 + 3, "text": "naïve ☃", "f": 0.1})
    raw = canonical_json(build_execution_body(event=event, events=[event], steps={}, run_id="r", attempt=0,
                                              max_attempts=1, disable_immediate_execution=False, stack=[],
                                              request_version=-1, use_api=False))
    headers = {"x-inngest-signature": sign_body(raw, key)}
    ok = net.validate_request_sig(body=raw, headers=headers, mode=server_lib.ServerKind.CLOUD,
                                  signing_key=key, signing_key_fallback=None)
    assert ok == key


def test_execution_headers():
    headers = execution_headers(run_id="01RUN", step_id="step", request_version=-1, job_id="job-1",
                                request_id="req-1", signature="t=1&s=ab")
    assert headers == {
        "Content-Type": "application/json",
        "X-Inngest-Req-Version": "-1",
        "X-Run-ID": "01RUN",
        "X-Inngest-Step-ID": "step",
        "x-request-id": "req-1",
        "x-inngest-job-id": "job-1",
        "X-Inngest-Signature": "t=1&s=ab",
    }
    unsigned = execution_headers(run_id="r", step_id="abc", request_version=2, job_id="j", request_id="q", signature=None)
    assert "X-Inngest-Signature" not in unsigned and unsigned["X-Inngest-Req-Version"] == "2"


def test_the_readme_prints_the_retry_table_the_code_uses():
    import re
    from pathlib import Path

    from lockgate.protocol import backoff

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("Retry delays: "))
    units = {"s": 1, "m": 60, "h": 3600}
    printed = [int(n) * units[u] for n, u in re.findall(r"(\d+) ([smh])\b", line.split(", each plus")[0])]
    assert tuple(printed) == backoff._TABLE_S
    assert f"0–{backoff._JITTER_S} s of random jitter" in line

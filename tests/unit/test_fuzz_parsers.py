"""Property tests: the protocol parsers and the expression compiler answer any input with their own
clear error (or a result), never with an unexpected exception that would become a 500."""

from __future__ import annotations

import string

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.engine.checkpoint import CheckpointError, parse_checkpoint
from lockgate.engine.endpoints import endpoint_function, parse_new_run
from lockgate.engine.ingest import EventValidationError, parse_events
from lockgate.engine.sync import SyncError, parse_registration
from lockgate.expressions import ExpressionError, compile_expression
from lockgate.interfaces.graphql_limits import QueryTooComplex, parse_bounded
from lockgate.limits import DEFAULT, json_depth_exceeds
from lockgate.protocol.cron import parse_cron
from lockgate.protocol.sdk_response import parse_sdk_response
from lockgate.protocol.timeparse import parse_duration, parse_time_or_duration
from lockgate.qstash.config import ConfigError, parse_config

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**63 - 1) | \
    st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
# Objects shaped like the real thing, with any value in any field.
event_like = st.fixed_dictionaries({}, optional={"name": json_values | st.text(max_size=300), "data": json_values,
                                                 "user": json_values, "id": json_values | st.text(max_size=600),
                                                 "ts": json_values, "v": json_values})
function_like = st.fixed_dictionaries({}, optional={
    "id": json_values, "name": json_values, "triggers": st.lists(json_values | st.fixed_dictionaries(
        {}, optional={"event": json_values, "expression": st.text(max_size=30), "cron": st.text(max_size=20)}),
        max_size=3) | json_values,
    "steps": st.dictionaries(st.text(max_size=5), json_values | st.fixed_dictionaries(
        {"runtime": st.fixed_dictionaries({}, optional={"url": json_values | st.just("http://127.0.0.1:1/api")})}),
        max_size=2) | json_values,
    "concurrency": json_values, "throttle": json_values, "debounce": json_values, "batchEvents": json_values,
    "rateLimit": json_values, "cancel": json_values, "priority": json_values, "singleton": json_values})
register_like = st.fixed_dictionaries({}, optional={
    "appName": json_values, "url": json_values | st.just("http://127.0.0.1:1/api"), "sdk": json_values,
    "framework": json_values, "functions": st.lists(function_like, max_size=3) | json_values})


@FUZZ
@given(st.one_of(json_values, event_like, st.lists(event_like, max_size=5)))
def test_event_parser_accepts_or_explains(body):
    try:
        events = parse_events(body, seed=None, now=1_700_000_000_000)
    except EventValidationError:
        return
    for event in events:
        assert isinstance(event.name, str) and event.name
        orjson.dumps(event.payload())  # whatever was accepted can be stored


@FUZZ
@given(st.one_of(json_values, register_like))
def test_registration_parser_accepts_or_explains(body):
    try:
        parse_registration(body, now=1)
    except SyncError:
        pass


@FUZZ
@given(st.one_of(json_values, st.fixed_dictionaries({}, optional={"fn_id": json_values, "qi_id": json_values,
                                                                  "steps": st.lists(json_values, max_size=3)})))
def test_checkpoint_parser_accepts_or_explains(body):
    try:
        parse_checkpoint(body)
    except CheckpointError:
        pass


@FUZZ
@given(st.one_of(json_values, st.fixed_dictionaries({}, optional={
    "run_id": st.one_of(json_values, st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=26, max_size=26)),
    "event": st.one_of(json_values, st.fixed_dictionaries({"data": st.fixed_dictionaries({}, optional={
        "domain": st.one_of(json_values, st.sampled_from(["http://a", "https://b:1", "ftp://c", "x"])),
        "method": st.one_of(json_values, st.sampled_from(["GET", "POST", "G ET", ""])),
        "path": st.one_of(json_values, st.sampled_from(["/", "/a?b", "a"]))})})),
    "steps": st.lists(json_values, max_size=3), "retries": json_values, "request_version": json_values})))
def test_durable_endpoint_run_parser_accepts_or_explains(body):
    try:
        new = parse_new_run(body)
    except CheckpointError:
        return
    endpoint_function(new.event["data"], new.retries)  # a parsed request always names its function


@FUZZ
@given(status=st.sampled_from([200, 206, 400, 404, 500, 503]),
       headers=st.dictionaries(st.sampled_from(["x-inngest-no-retry", "retry-after", "content-type",
                                                 "x-inngest-req-version", "x-inngest-signature"]),
                               st.text(max_size=20), max_size=3),
       body=st.binary(max_size=200) | json_values.map(orjson.dumps))
def test_sdk_response_parser_never_raises(status, headers, body):
    parse_sdk_response(status, headers, body, 1_700_000_000_000)


cel_alphabet = string.ascii_letters + string.digits + " .()[]{}'\"=!<>&|+-*/%?:,_\\"


@FUZZ
@given(st.text(alphabet=cel_alphabet, max_size=60) | st.text(max_size=30))
def test_expression_compiler_compiles_or_explains(source):
    try:
        expr = compile_expression(source)
    except ExpressionError:
        return
    try:
        expr.evaluate({"event": {"name": "a/b", "data": {"x": 1, "s": "t", "l": [1, 2]}}, "async": {}})
    except ExpressionError:
        pass
    assert expr.matches({"event": {}}) in (True, False)


def test_expression_compiler_refuses_deep_nesting_clearly():
    for source in ("(" * 5000 + "1" + ")" * 5000, "!" * 5000 + "true", "-" * 5000 + "1", "[" * 3000 + "]" * 3000):
        try:
            compile_expression(source)
        except ExpressionError:
            continue


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["Upstash-Delay", "Upstash-Not-Before", "Upstash-Retries",
                                           "Upstash-Timeout", "Upstash-Method", "Upstash-Callback",
                                           "Upstash-Flow-Control-Key", "Upstash-Flow-Control-Value",
                                           "Upstash-Retry-Delay", "Upstash-Redact-Fields",
                                           "Upstash-Deduplication-Id", "Upstash-Forward-X"]),
                          st.text(max_size=30) | st.integers().map(str)), max_size=4))
def test_qstash_headers_parse_or_explain(headers):
    try:
        parse_config(headers, now_ms=1_700_000_000_000)
    except (ConfigError, ValueError):
        pass


@FUZZ
@given(st.text(max_size=40))
def test_time_and_cron_parsers_parse_or_explain(text):
    for parse in (parse_duration, lambda t: parse_time_or_duration(t, 1_700_000_000_000), parse_cron):
        try:
            parse(text)
        except ValueError:
            pass


@FUZZ
@given(st.text(alphabet="{}()[]:$!@ .aeqrunID\"xy,.\n", max_size=200))
def test_graphql_guard_parses_or_explains(query):
    try:
        parse_bounded(query, DEFAULT)
    except QueryTooComplex:
        pass


def test_depth_check_is_iterative_and_exact():
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    assert json_depth_exceeds(deep, 64)
    shallow: object = 1
    for _ in range(64):
        shallow = {"a": shallow}
    assert not json_depth_exceeds(shallow, 64)
    assert json_depth_exceeds({"a": shallow}, 64)

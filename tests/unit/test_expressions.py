"""Inngest's CEL dialect (spec section 6): parsing, Inngest-specific semantics, interpolation, keys."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.expressions import (
    Expression,
    ExpressionError,
    compile_expression,
    equality_keys,
    interpolate_event,
    key_value,
    render_key,
    validate_restrictive,
)

EVENT = {
    "name": "shop/order",
    "data": {"total": 20, "n": 5.0, "ratio": 1.0, "id": "abc", "empty": "", "zero": 0, "nothing": None,
             "flag": True, "items": [1, 2, 3], "tags": [], "user": {"id": "u1", "tier": "gold"},
             "b64": "aGVsbG8=", "json": '{"a": {"b": 2}}', "when": "2024-05-01T12:00:00Z"},
    "id": "e1",
    "ts": 1_700_000_000_000,
    "user": {},
}
VARS = {"event": EVENT}


def ev(source: str, variables: dict | None = None):
    return compile_expression(source).evaluate(VARS if variables is None else variables)


def ok(source: str, variables: dict | None = None) -> bool:
    return compile_expression(source).matches(VARS if variables is None else variables)


# --- spec compatibility rows C1–C3 and plain filters ----------------------------------------

@pytest.mark.parametrize(
    "source, expected",
    [
        ("event.data.missing == null", True),  # C1
        ("event.data.n == 5", True),  # C2: JSON numbers are doubles; 5.0 == 5
        ("event.data.ratio == 1", True),
        ("event.data.total == 20.0", True),
        ("event.data.total > 10 && event.data.user.tier == 'gold'", True),
        ("event.data.user.id in ['u1', 'u2']", True),
        ("size(event.data.items) == 3", True),
        ("event.name.startsWith('shop/')", True),
        ("event.data.total < 10", False),
        ("event.data.total", False),  # not a boolean: no match
        ('event.data.id == "abc"', True),
    ],
)
def test_filters(source, expected):
    assert ok(source) is expected


def test_concat_mixed_types_c3():
    assert ev('"id-" + event.data.n') == "id-5"  # Go %v prints 5.0 as 5
    assert ev('"x" + event.data.flag') == "xtrue"
    assert ev('event.data.total + "-" + event.data.id') == "20-abc"
    assert ev("1 + 2") == 3
    assert ev("'a' + 'b'") == "ab"
    assert ev("[1] + [2]") == [1, 2]


# --- missing fields -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "source, expected",
    [
        ("event.data.missing == null", True),
        ("event.data.missing == 'x'", False),
        ("event.data.missing == 0", False),
        ("event.data.missing != null", False),
        ("event.data.missing != 'x'", True),
        ("null == event.data.missing", True),
        ("event.data.missing.deeper.still == null", True),
        ("event.data.missing < 1", True),
        ("event.data.missing <= 1", True),
        ("event.data.missing > 1", False),
        ("event.data.missing >= 1", False),
        ("1 < event.data.missing", False),
        ("1 <= event.data.missing", False),
        ("1 > event.data.missing", True),
        ("1 >= event.data.missing", True),
        ("size(event.data.missing) == 0", True),
        ("event.data.missing.size() == 0", True),
        ("event.data.missing.startsWith('a')", False),
        ("lowercase(event.data.missing) == false", True),  # other calls on missing are false
        ("event.data.missing in ['a']", False),
        ("'a' in event.data.missing", False),
        ("event.data.missing.exists(x, x == 1)", False),
        ("has(event.data.missing)", False),
        ("has(event.data.missing.deeper)", False),
        ("event.data.items[10] == null", True),  # out of range reads as missing
        ("event.data.total.sub == null", True),  # selecting into a scalar reads as missing
        ("async.data.id == null", True),  # an absent variable is missing too
        ("event.data.missing == event.data.other", False),  # missing equals only null
    ],
)
def test_missing_fields_never_raise(source, expected):
    assert ev(source) is expected


def test_missing_plus_x_is_x():
    assert ev("event.data.missing + 'x'") == "x"
    assert ev("3 + event.data.missing") == 3


def test_missing_result_evaluates_to_none():
    assert ev("event.data.missing") is None
    assert ev("[event.data.missing]") == [None]


# --- explicit null --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "source, expected",
    [
        ("event.data.nothing == null", True),
        ("event.data.nothing == 0", False),
        ("event.data.nothing != 0", True),
        ("event.data.nothing != 'a'", True),
        ("event.data.nothing > 0", False),  # 0 > 0
        ("event.data.nothing >= 0", True),
        ("event.data.nothing < 1", True),
        ("event.data.nothing < -1", False),
        ("event.data.nothing < 'a'", True),  # "" < "a"
        ("null == null", True),
    ],
)
def test_explicit_null(source, expected):
    assert ev(source) is expected


# --- numbers --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "source, expected",
    [
        ("1 == 1.0", True),
        ("event.data.n == 5 && event.data.n >= 5 && event.data.n < 5.5", True),
        ("event.data.flag == 1", False),  # bool is not a number
        ("7 / 2 == 3", True),  # int division truncates, as in CEL
        ("-7 / 2 == -3", True),
        ("-7 % 3 == -1", True),
        ("7.0 / 2 == 3.5", True),
        ("event.data.total - 5 == 15", True),
        ("event.data.n -1 == 4", True),  # `-1` after an operand is subtraction
        ("-event.data.total == -20", True),
        ("[1, 2.0] == [1.0, 2]", True),
        ("{'a': 1} == {'a': 1.0}", True),
    ],
)
def test_numbers(source, expected):
    assert ev(source) is expected


def test_division_by_zero_is_a_runtime_error():
    with pytest.raises(ExpressionError, match="division by zero"):
        ev("1 / 0")
    assert ok("1 / 0 == 1") is False


# --- truthiness -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "source, expected",
    [
        ("event.data.missing || 'fallback'", "fallback"),  # C4 truthy OR returns the operand
        ("event.data.id || 'fallback'", "abc"),
        ("event.data.empty || event.data.zero || event.data.nothing || 'last'", "last"),
        ("event.data.zero || event.data.empty", ""),  # all falsy: the last operand
        ("event.data.tags || 'x'", []),  # empty list is truthy
        ("event.data.id && event.data.total", 20),
        ("event.data.empty && 'never'", ""),
        ("event.data.missing && true", None),
        ("true && false", False),
        ("false || true", True),
        ("event.data.id ? 'yes' : 'no'", "yes"),
        ("event.data.empty ? 'yes' : 'no'", "no"),
        ("event.data.missing ? 'yes' : 'no'", "no"),
        ("event.data.zero ? 1 : 2", 2),
    ],
)
def test_truthy_logic(source, expected):
    assert ev(source) == expected
    assert type(ev(source)) is type(expected)


def test_error_on_the_left_of_or_counts_as_falsy():
    assert ev("1 / 0 == 1 || true") is True
    with pytest.raises(ExpressionError):
        ev("1 / 0 == 1 && true")


def test_matches_needs_exactly_true():
    assert ok("event.data.id") is False
    assert ok("event.data.id || true") is False  # returns "abc"
    assert ok("'a' < 1") is False  # runtime error
    with pytest.raises(ExpressionError, match="cannot compare"):
        ev("'a' < 1")


# --- functions and macros -------------------------------------------------------------------

@pytest.mark.parametrize(
    "source, expected",
    [
        ("event.data.id.contains('b')", True),
        ("event.data.id.endsWith('bc')", True),
        ("event.data.id.matches('^a.c$')", True),
        ("matches(event.data.id, 'z')", False),
        ("size('héllo')", 5),
        ("size(event.data.user)", 2),
        ("int('42') + 1", 43),
        ("int(event.data.n)", 5),
        ("uint(3)", 3),
        ("double('1.5')", 1.5),
        ("string(event.data.n)", "5"),
        ("string(12)", "12"),
        ("lowercase('AbC')", "abc"),
        ("uppercase(event.data.id)", "ABC"),
        ("b64decode(event.data.b64)", "hello"),
        ("json_parse(event.data.json).a.b", 2),
        ("has(event.data.user.tier)", True),
        ("has(event.data.nothing)", True),  # present, even though null
        ("event.data.items.all(x, x > 0)", True),
        ("event.data.items.exists(x, x == 2)", True),
        ("event.data.items.exists_one(x, x > 1)", False),
        ("event.data.items.map(x, x * 10)", [10, 20, 30]),
        ("event.data.items.map(x, x > 1, x * 10)", [20, 30]),
        ("event.data.items.filter(x, x != 2)", [1, 3]),
        ("event.data.user.exists(k, k == 'tier')", True),  # maps iterate their keys
        ("event.data.items.exists(event, event == 3)", True),  # macro variables shadow
        ("event.data.user['tier']", "gold"),
        ("event.data.items[0]", 1),
        ("[1, 2][1]", 2),
        ("{'a': {'b': 'c'}}.a.b", "c"),
        ("'k' in {'k': 1}", True),
        ("!event.data.flag", False),
        ("!event.data.missing", False),
        ('"a\\"b" == \'a"b\'', True),
        ("'\\u00e9' == 'é'", True),
        ("r'\\d' == '\\\\d'", True),
        ("'''multi\nline'''.contains('\\n')", True),
        ("dyn(1) == 1", True),
    ],
)
def test_functions(source, expected):
    assert ev(source) == expected


def test_time_functions():
    now = datetime.now(timezone.utc)
    assert ev("date(event.data.when)") == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert ev("date(1700000000) == date(1700000000000)") is True  # seconds or milliseconds
    assert ev("date('2024/05/01') == date('2024-05-01T00:00:00Z')") is True
    assert ev("timestamp('2024-05-01T12:00:00Z') == date(event.data.when)") is True
    assert ev("duration('1h30m')") == timedelta(minutes=90)
    assert ev("duration('1h') == duration('60m')") is True
    assert ev("now() >= date(event.data.when)") is True
    assert ev("now_plus('24h') > now() && now_minus('7d') < now()") is True
    later = ev("now_plus('1d')")
    assert timedelta(hours=23) < later - now < timedelta(hours=25)
    assert ev("date(event.data.when) + duration('1h') > date(event.data.when)") is True


def test_unknown_function_and_bad_arity_fail_at_compile_time():
    with pytest.raises(ExpressionError, match="unknown function 'nope'"):
        compile_expression("nope(1)")
    with pytest.raises(ExpressionError, match="size"):
        compile_expression("size(1, 2)")
    with pytest.raises(ExpressionError, match="has"):
        compile_expression("has(event)")


# --- syntax errors --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "source, fragment",
    [
        ("event.data.x ==", "unexpected end of expression"),
        ("event.data.x == 'abc", "unexpected character"),
        ("a &&& b", "column 5"),
        ("(event.data.x", "unexpected end"),
        ("event.data.x = 1", "unexpected"),
    ],
)
def test_syntax_errors_say_what_and_where(source, fragment):
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    message = str(info.value)
    assert source in message or repr(source) in message
    assert fragment in message


def test_empty_expression_is_an_error():
    with pytest.raises(ExpressionError, match="empty"):
        compile_expression("  ")


def test_compiled_expressions_are_cached():
    assert compile_expression("event.data.total == 1") is compile_expression("event.data.total == 1")
    assert compile_expression("event.data.total == 1").source == "event.data.total == 1"
    assert isinstance(compile_expression("true"), Expression)


def test_constant_expressions_are_folded():
    assert compile_expression("1 == 2 && 'a' == 'a'").is_constant
    assert compile_expression("1 == 2 && 'a' == 'a'").evaluate({}) is False
    assert not compile_expression("async.data.x == 1").is_constant
    assert not compile_expression("now() > now_minus('1h')").is_constant


# --- restrictive policy (cancel ifs) --------------------------------------------------------

@pytest.mark.parametrize(
    "source",
    [
        "async.data.id == event.data.id",
        "async.data.n > 3 && !(async.data.flag == true) || async.data.tier in ['a', 'b']",
        "int(async.data.n) == uint(event.data.m) && double(async.data.x) < 1.5",
        "async.data.items[0] == 1 && async.data.a + 1 > 2 && async.data.n % 2 == 0",
        "async.data.flag ? async.data.a == 1 : false",
        "date(async.data.when) > now_minus('1h')",  # Go allows its date/time helpers
    ],
)
def test_restrictive_policy_allows(source):
    validate_restrictive(source)


@pytest.mark.parametrize(
    "source, name",
    [
        ("has(async.data.id)", "has"),
        ("async.data.items.all(x, x > 1)", "all"),
        ("async.data.items.exists(x, x > 1)", "exists"),
        ("async.data.items.exists_one(x, x > 1)", "exists_one"),
        ("size(async.data.items.map(x, x)) > 1", "map"),
        ("async.data.items.filter(x, x > 1) == []", "filter"),
        ("size(async.data.items) > 1", "size"),
        ("async.data.id.contains('a')", "contains"),
        ("lowercase(async.data.id) == 'a'", "lowercase"),
        ("now() > date(async.data.when)", "now"),
    ],
)
def test_restrictive_policy_rejects(source, name):
    with pytest.raises(ExpressionError, match=f"'{name}'"):
        validate_restrictive(source)


def test_restrictive_policy_reports_syntax_errors():
    with pytest.raises(ExpressionError, match="syntax error"):
        validate_restrictive("async.data.id ==")


# --- interpolation --------------------------------------------------------------------------

def test_interpolation_substitutes_event_fields():
    source = "async.data.id == event.data.id && async.data.n > event.data.total"
    out = interpolate_event(source, EVENT)
    assert out == 'async.data.id == "abc" && async.data.n > 20'
    assert compile_expression(out).matches({"async": {"data": {"id": "abc", "n": 21}}})
    assert not compile_expression(out).matches({"async": {"data": {"id": "abc", "n": 20}}})


@pytest.mark.parametrize(
    "value",
    ['say "hi"', "it's", "back\\slash", "line\nbreak\ttab\r", "\x00\x1f\x7f", "é ✓ 𝄞", "", "//not a comment"],
)
def test_interpolation_escapes_strings(value):
    out = interpolate_event("async.data.v == event.data.v", {"data": {"v": value}})
    assert compile_expression(out).matches({"async": {"data": {"v": value}}})
    assert compile_expression(out.split(" == ", 1)[1]).evaluate({}) == value


def test_interpolation_of_missing_null_and_structures():
    event = {"data": {"nums": [1, -2, 3.5], "m": {"k": "v", "n": None}, "neg": -4}, "user": {}}
    assert interpolate_event("event.data.absent == async.data.x", event) == "null == async.data.x"
    assert interpolate_event("event.data.m.n", event) == "null"
    assert interpolate_event("async.data.x in event.data.nums", event) == "async.data.x in [1, (-2), 3.5]"
    assert interpolate_event("event.data.m", event) == '{"k": "v", "n": null}'
    assert interpolate_event("-event.data.neg", event) == "-(-4)"
    assert ev(interpolate_event("-event.data.neg", event), {}) == 4
    assert interpolate_event("event['data'][\"nums\"][1] == 1", event) == "(-2) == 1"
    assert interpolate_event("has(event.data.m.k) && has(event.data.m.z)", event) == "true && false"
    assert interpolate_event("event.data.nums.exists(x, x == async.data.n)", event) == \
        "[1, (-2), 3.5].exists(x, x == async.data.n)"
    # the macro variable named `event` is not the event
    assert interpolate_event("async.data.l.exists(event, event == 1)", event) == \
        "async.data.l.exists(event, event == 1)"
    # an index that depends on async keeps the static prefix only
    assert interpolate_event("event.data.m[async.data.key] == 'v'", event) == \
        '{"k": "v", "n": null}[async.data.key] == \'v\''


def test_interpolation_keeps_the_rest_verbatim():
    source = "async.name == 'x' // comment\n && event.data.a == 1"
    assert interpolate_event(source, {"data": {"a": 1}}) == "async.name == 'x' // comment\n && 1 == 1"


def test_interpolated_false_is_constant():
    out = interpolate_event("event.data.kind == 'refund' && async.data.id == event.data.id",
                            {"data": {"kind": "order", "id": "o1"}})
    expression = compile_expression(out)
    assert expression.is_constant is False  # `false && …` still names async; evaluate says false
    assert expression.evaluate({}) is False
    assert compile_expression(interpolate_event("event.data.kind == 'refund'", {"data": {"kind": "o"}})).is_constant


_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
_json = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(value=_json, other=_json)
def test_interpolation_round_trips(value, other):
    """Substituting the event as literals gives the same answer as evaluating against the event."""
    event = {"data": {"v": value}}
    source = "async.data.v == event.data.v && event.data.v == async.data.v"
    out = interpolate_event(source, event)
    assert compile_expression(interpolate_event("event.data.v", event)).evaluate({}) == value
    for candidate in (value, other):
        variables = {"event": event, "async": {"data": {"v": candidate}}}
        assert compile_expression(out).evaluate(variables) == compile_expression(source).evaluate(variables)


@settings(max_examples=200, deadline=None)
@given(value=_json_scalars)
def test_interpolated_literals_compare_like_the_original(value):
    event = {"data": {"v": value}}
    for op in ("==", "!=", "<", ">="):
        source = f"event.data.v {op} async.data.w"
        variables = {"event": event, "async": {"data": {"w": 1}}}
        original = compile_expression(source).matches(variables)
        assert compile_expression(interpolate_event(source, event)).matches(variables) == original


# --- equality keys --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "source, keys",
    [
        ('async.data.id == "abc" && async.data.n > 3', [("data.id", "abc")]),
        ('"abc" == async.data.id', [("data.id", "abc")]),
        ("async.data.n == 1 && async.data.m == 1.0 && async.data.k == (-2)", [("data.n", 1.0), ("data.m", 1.0),
                                                                              ("data.k", -2.0)]),
        ("(async.name == 'a' && async.data.ok == true) && async.data['x'] == 'y'",
         [("name", "a"), ("data.ok", True), ("data.x", "y")]),
        ("async.data.id == 'a' || async.data.id == 'b'", []),
        ("async.data.id == null", []),  # null also matches a missing field
        ("async.data.id != 'a'", []),
        ("async.data.id == event.data.id", []),  # interpolate first
        ("async.data.items[0] == 1", []),
        ("event.data.id == 'a'", []),
    ],
)
def test_equality_keys(source, keys):
    assert equality_keys(source) == keys


def test_equality_keys_after_interpolation():
    out = interpolate_event("event.data.id == async.data.id && async.data.n >= event.data.total", EVENT)
    assert equality_keys(out) == [("data.id", "abc")]
    assert key_value(5) == key_value(5.0) == 5.0 and key_value("5") == "5"


# --- key rendering --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "value, text",
    [
        (5.0, "5"), (5, "5"), (-2.0, "-2"), (0.1, "0.1"), (2.5, "2.5"), (1e21, "1e+21"), (1e-7, "1e-07"),
        (1234567.5, "1.2345675e+06"), (1700000000000.0, "1700000000000"), (math.inf, "+Inf"),
        (True, "true"), (False, "false"), (None, ""), ("abc", "abc"),
        ({"b": 1.0, "a": [1, "x"]}, '{"a":[1,"x"],"b":1}'), ([], "[]"),
    ],
)
def test_render_key(value, text):
    assert render_key(value) == text


def test_render_key_of_expression_results():
    assert render_key(ev("event.data.user.id + '-' + event.data.n")) == "u1-5"
    assert render_key(ev("event.data.missing")) == ""

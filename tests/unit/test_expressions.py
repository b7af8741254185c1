"""Trigger filter expressions over real event payloads."""

from __future__ import annotations

import pytest

from lockgate.expressions import ExpressionError, compile_expression

EVENT = {"name": "shop/order", "data": {"total": 20, "ratio": 1.0, "user": {"id": "u1", "tier": "gold"}, "items": [1, 2]},
         "id": "e1", "ts": 1_700_000_000_000, "user": {}}


@pytest.mark.parametrize(
    "source, expected",
    [
        ("event.data.total == 20", True),
        ("event.data.ratio == 1", True),  # JSON has one number type: 1.0 equals the literal 1
        ("event.data.total > 10 && event.data.user.tier == 'gold'", True),
        ("event.data.user.id in ['u1', 'u2']", True),
        ("size(event.data.items) == 2", True),
        ("event.name.startsWith('shop/')", True),
        ("event.data.total < 10", False),
        ("event.data.missing == 'x'", False),  # a missing field does not match (and does not raise)
        ("event.data.total", False),  # not a boolean: no match
    ],
)
def test_filters(source, expected):
    assert compile_expression(source).matches({"event": EVENT}) is expected


def test_syntax_errors_say_which_expression():
    with pytest.raises(ExpressionError, match="event.data.x =="):
        compile_expression("event.data.x ==")


def test_compiled_expressions_are_cached():
    assert compile_expression("event.data.total == 1") is compile_expression("event.data.total == 1")

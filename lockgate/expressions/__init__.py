"""CEL expressions for trigger filters, compiled once and cached.

Built on `cel-python` (celpy): standard CEL over the event as JSON. Inngest's dialect
differs in places (missing fields compare as null, JS truthiness for && and ||, mixed
concatenation); those deviations belong with waits, cancellation and flow-control keys,
where they matter, and are not reproduced yet: a filter that touches a missing field
simply does not match.
"""

from __future__ import annotations

import functools
from typing import Any

import celpy


class ExpressionError(ValueError):
    """An expression that does not compile or cannot be evaluated; says which and why."""


_ENV = celpy.Environment()


class Expression:
    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = _ENV.program(_ENV.compile(source))
        except Exception as exc:  # celpy raises its own parse error types
            raise ExpressionError(f"cannot compile {source!r}: {exc}") from None

    def evaluate(self, variables: dict[str, Any]) -> Any:
        activation = {name: celpy.json_to_cel(_integral(value)) for name, value in variables.items()}
        try:
            result = self._program.evaluate(activation)
        except Exception as exc:
            raise ExpressionError(f"evaluating {self.source!r}: {exc}") from None
        if isinstance(result, Exception):  # celpy returns some errors as values
            raise ExpressionError(f"evaluating {self.source!r}: {result}")
        return result

    def matches(self, variables: dict[str, Any]) -> bool:
        """Boolean context (trigger filters): only an exact `true` matches; errors do not."""
        try:
            result = self.evaluate(variables)
        except ExpressionError:
            return False
        return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def _integral(value: Any) -> Any:
    """JSON has one number type: 1.0 from a client must equal the literal 1 in a filter."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    return Expression(source)

"""Inngest's CEL dialect (interim: stock CEL via celpy until the full dialect lands)."""

from __future__ import annotations

import functools
from typing import Any

import celpy


class ExpressionError(ValueError):
    pass


_ENV = celpy.Environment()


class Expression:
    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = _ENV.program(_ENV.compile(source))
        except Exception as exc:
            raise ExpressionError(f"cannot compile {source!r}: {exc}") from None

    def evaluate(self, variables: dict) -> Any:
        activation = {k: celpy.json_to_cel(v) for k, v in variables.items()}
        try:
            return self._program.evaluate(activation)
        except Exception as exc:
            raise ExpressionError(f"evaluating {self.source!r}: {exc}") from None

    def matches(self, variables: dict) -> bool:
        try:
            result = self.evaluate(variables)
        except ExpressionError:
            return False
        return isinstance(result, celpy.celtypes.BoolType) and bool(result)


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    return Expression(source)

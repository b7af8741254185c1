"""When to try a failed QStash delivery again (spec §2.6, §3.4)."""

from __future__ import annotations

import ast
import math
import re
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping

DAY_MS = 86_400_000

_FUNCTIONS: dict[str, Callable[..., float]] = {
    "pow": math.pow, "sqrt": math.sqrt, "abs": abs, "exp": math.exp, "floor": math.floor,
    "ceil": math.ceil, "round": round, "min": min, "max": max,
}
_BINOPS = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b if b else math.inf,
}


class RetryDelayExpression:
    """Arithmetic over `retried`, parsed once; never handed to eval()."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError:
            raise ValueError(f"invalid retry delay expression {source!r}") from None
        self._check(tree.body)
        self._tree = tree.body

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return
        if isinstance(node, ast.Name) and node.id == "retried":
            return
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            self._check(node.left)
            self._check(node.right)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            self._check(node.operand)
            return
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                and not node.keywords and node.args):
            for arg in node.args:
                self._check(arg)
            return
        raise ValueError(f"invalid retry delay expression {self.source!r}: only numbers, `retried`, + - * /"
                         " and pow, sqrt, abs, exp, floor, ceil, round, min, max are allowed")

    def delay_ms(self, retried: int) -> int:
        try:
            value = self._eval(self._tree, retried)
        except (ValueError, OverflowError, TypeError):
            return DAY_MS
        if math.isnan(value):
            return 0
        return int(max(0, min(value, DAY_MS)))

    def _eval(self, node: ast.AST, retried: int) -> float:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return retried
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](self._eval(node.left, retried), self._eval(node.right, retried))
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, retried)
            return -value if isinstance(node.op, ast.USub) else value
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id](*(self._eval(a, retried) for a in node.args))


def default_backoff_ms(retry_number: int, scale: float = 1.0) -> int:
    """QStash's curve: min(1 day, e^(2.5 n)) seconds before retry n (n starts at 1)."""
    seconds = min(86400.0, math.exp(2.5 * retry_number))
    return int(seconds * 1000 * scale)


_GO_UNITS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def _header_delay_ms(value: str, now_ms: int) -> int | None:
    value = value.strip()
    if re.fullmatch(r"\d+", value):
        return int(value) * 1000
    if _GO_DURATION.fullmatch(value) or re.fullmatch(f"(?:{_GO_DURATION.pattern})+", value):
        return int(sum(float(n) * _GO_UNITS[u] for n, u in _GO_DURATION.findall(value)))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() * 1000) - now_ms)


_RETRY_HEADERS = ("retry-after", "x-ratelimit-reset", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")


def next_retry_delay_ms(
    retry_number: int,
    *,
    response_headers: Mapping[str, Any] | None,
    expression: str | None,
    now_ms: int,
    backoff_scale: float = 1.0,
) -> int:
    """Delay before retry `retry_number` (1-based): response hint, then the expression, then backoff."""
    lowered = {k.lower(): v for k, v in (response_headers or {}).items()}
    for name in _RETRY_HEADERS:
        raw = lowered.get(name)
        if isinstance(raw, list):
            raw = raw[0] if raw else None
        if raw:
            delay = _header_delay_ms(str(raw), now_ms)
            if delay is not None and delay <= DAY_MS:
                return delay
    if expression:
        return RetryDelayExpression(expression).delay_ms(retry_number - 1)
    return default_backoff_ms(retry_number, backoff_scale)

"""Static work on expressions: restrictive validation, event interpolation and equality keys."""

from __future__ import annotations

from typing import Any, Iterator

from lockgate.expressions.functions import MACROS
from lockgate.expressions.syntax import ExpressionError, Node, parse
from lockgate.expressions.values import MISSING, to_literal

# Go's restrictive policy (cancel `if`) allows type conversions and, beyond spec 6.4's wording,
# the date/time helpers: an expression Go accepts at sync must not fail ours.
RESTRICTIVE_FUNCTIONS = frozenset({"int", "uint", "double", "date", "now_plus", "now_minus", "duration"})


def children(node: Node) -> Iterator[Node]:
    kind, args = node.kind, node.args
    if kind in ("select", "not", "neg"):
        yield args[0]
    elif kind == "index":
        yield from args
    elif kind == "binary":
        yield args[1]
        yield args[2]
    elif kind in ("and", "or", "list"):
        yield from args[0]
    elif kind == "cond":
        yield from args
    elif kind == "map":
        for key, value in args[0]:
            yield key
            yield value
    elif kind == "call":
        if args[1] is not None:
            yield args[1]
        yield from args[2]


def _walk(node: Node) -> Iterator[Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(children(current))


def validate_restrictive(source: str) -> None:
    """cancel[].if policy: no macros, no function calls except conversions (see RESTRICTIVE_FUNCTIONS)."""
    tree = parse(source)
    problems = []
    for node in _walk(tree):
        if node.kind != "call":
            continue
        name = node.args[0]
        if name in MACROS:
            problems.append(f"macros are disallowed (uses '{name}')")
        elif name not in RESTRICTIVE_FUNCTIONS:
            problems.append(f"function calls are disallowed (uses '{name}')")
    if problems:
        raise ExpressionError(f"{source!r} is not allowed here: " + "; ".join(sorted(set(problems))))


# --- interpolation ------------------------------------------------------------------------

def _static_path(node: Node, root: str, bound: frozenset[str]) -> list[Any] | None:
    """`root.a["b"][0]` → ["a", "b", 0] when every key is a literal; else None."""
    keys: list[Any] = []
    while True:
        if node.kind == "select":
            keys.append(node.args[1])
        elif node.kind == "index":
            key = node.args[1]
            if key.kind != "lit" or type(key.args[0]) not in (str, int):
                return None
            keys.append(key.args[0])
        elif node.kind == "ident" and node.args[0] == root and root not in bound:
            keys.reverse()
            return keys
        else:
            return None
        node = node.args[0]


def _resolve(value: Any, keys: list[Any]) -> Any:
    for key in keys:
        if type(value) is dict:
            value = value.get(key, MISSING)
        elif type(value) is list and type(key) is int and 0 <= key < len(value):
            value = value[key]
        else:
            return MISSING
    return value


def interpolate_event(source: str, event: dict) -> str:
    """Rewrite `source` with every `event.<path>` replaced by its literal value (missing → null).

    Run once when a wait or cancel listener is registered, so matching later needs only `async`.
    """
    tree = parse(source)
    edits: list[tuple[int, int, str]] = []

    def visit(node: Node, bound: frozenset[str]) -> None:
        if node.kind == "call":
            name, receiver, args = node.args
            if name == "has" and receiver is None and len(args) == 1 and args[0].kind == "select":
                path = _static_path(args[0], "event", bound)
                if path is not None:  # has() needs a field selection, so it becomes a literal bool
                    parent = _resolve(event, path[:-1])
                    edits.append((node.start, node.end, "true" if type(parent) is dict and path[-1] in parent
                                  else "false"))
                    return
            if name in MACROS and receiver is not None and args and args[0].kind == "ident":
                visit(receiver, bound)
                inner = bound | {args[0].args[0]}
                for arg in args[1:]:
                    visit(arg, inner)
                return
        path = _static_path(node, "event", bound)
        if path is not None:
            value = _resolve(event, path)
            edits.append((node.start, node.end, to_literal(None if value is MISSING else value)))
            return
        for child in children(node):
            visit(child, bound)

    visit(tree, frozenset())
    out = source
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text + out[end:]
    return out


# --- equality keys ------------------------------------------------------------------------

_NO_VALUE = object()


def _literal_value(node: Node) -> Any:
    if node.kind == "neg" and node.args[0].kind == "lit":
        value = node.args[0].args[0]
        return -float(value) if type(value) in (int, float) else _NO_VALUE
    if node.kind != "lit":
        return _NO_VALUE
    value = node.args[0]
    t = type(value)
    if t is int or t is float:
        return float(value)
    if t is str or t is bool:
        return value
    return _NO_VALUE  # null matches missing fields too, so it cannot be an index key


def _conjuncts(node: Node) -> Iterator[Node]:
    if node.kind == "and":
        for term in node.args[0]:
            yield from _conjuncts(term)
    else:
        yield node


def equality_keys(source: str, root: str = "async") -> list[tuple[str, Any]]:
    """[(path, value)] for top-level `async.<path> == <literal>` conjuncts, e.g.
    'async.data.id == "abc" && async.data.n > 3' → [("data.id", "abc")]. `root` names the variable
    (`event` for filters over a run's triggering event).

    Every such term must hold for the expression to be true, so pending waits can be indexed by
    them. Numbers come back as float (1 and 1.0 give the same key); strings and bools as they are.
    Note True == 1.0 in Python dict keys: treat an index hit as a candidate and still call matches().
    """
    out: list[tuple[str, Any]] = []
    for term in _conjuncts(parse(source)):
        if term.kind != "binary" or term.args[0] != "==":
            continue
        left, right = term.args[1], term.args[2]
        for side, other in ((left, right), (right, left)):
            path = _static_path(side, root, frozenset())
            if not path or any(type(k) is not str or "." in k for k in path):
                continue
            value = _literal_value(other)
            if value is not _NO_VALUE:
                out.append((".".join(path), value))
                break
    return out


def key_value(value: Any) -> Any:
    """Normalise an incoming event's field value the way equality_keys normalises literals."""
    t = type(value)
    return float(value) if t is int or t is float else value


# --- lookback bounds ----------------------------------------------------------------------

def _mentions(node: Node, root: str) -> bool:
    return any(n.kind == "ident" and n.args[0] == root for n in _walk(node))


def lookback_bound(source: str) -> str | None:
    """The source of X in a top-level conjunct `async.ts >= X` (or `>`, or mirrored), else None.

    X must not mention `async`: it is evaluated once, when a wait is registered, to find how far
    back already-received events may satisfy the wait (lockgate's lookback window).
    """
    flipped = {">=": "<=", ">": "<"}
    for term in _conjuncts(parse(source)):
        if term.kind != "binary" or term.args[0] not in (">=", ">", "<=", "<"):
            continue
        op, left, right = term.args
        for side, other, wanted in ((left, right, (">=", ">")), (right, left, tuple(flipped.values()))):
            if op in wanted and _static_path(side, "async", frozenset()) == ["ts"] and not _mentions(other, "async"):
                return source[other.start:other.end]
    return None

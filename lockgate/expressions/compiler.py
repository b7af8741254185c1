"""Node tree → a Python closure `fn(variables) -> value`.

Compiling to closures (instead of walking the tree per evaluation) keeps an evaluation to a few
function calls: this runs for every incoming event against every trigger filter and pending wait.
Sub-trees made only of literals are folded to constants at compile time.
"""

from __future__ import annotations

from typing import Any, Callable

from lockgate.expressions.functions import FUNCTIONS, IMPURE, MACROS
from lockgate.expressions.syntax import ExpressionError, Node
from lockgate.expressions.values import (MISSING, add, arith, compare, contained, equals, logical_not, negate,
                                         truthy, type_name)

Fn = Callable[[dict], Any]
_DYNAMIC = object()  # "not a constant" marker in (fn, constant) pairs


def compile_tree(node: Node) -> tuple[Fn, Any]:
    """Returns the closure and, when the whole tree is constant, its value (else _DYNAMIC)."""
    return _compile(node)


def is_constant(value: Any) -> bool:
    return value is not _DYNAMIC


def _constant(value: Any) -> tuple[Fn, Any]:
    return (lambda env: value), value


def _fold(fn: Fn, parts: list[tuple[Fn, Any]]) -> tuple[Fn, Any]:
    """If every operand is constant, evaluate now; errors are left to surface at run time."""
    if all(c is not _DYNAMIC for _, c in parts):
        try:
            return _constant(fn({}))
        except Exception:
            pass
    return fn, _DYNAMIC


def _compile(node: Node) -> tuple[Fn, Any]:
    kind, args = node.kind, node.args
    if kind == "lit":
        return _constant(args[0])
    if kind == "ident":
        name = args[0]
        return (lambda env: env.get(name, MISSING)), _DYNAMIC
    if kind == "select":
        path = _ident_path(node)
        if path is not None:
            return _path_getter(path[0], path[1:]), _DYNAMIC
        part = _compile(args[0])
        return _fold(_select(part[0], args[1]), [part])
    if kind == "index":
        parts = [_compile(args[0]), _compile(args[1])]
        return _fold(_index(parts[0][0], parts[1][0]), parts)
    if kind == "binary":
        return _binary(args[0], _compile(args[1]), _compile(args[2]))
    if kind == "and" or kind == "or":
        parts = [_compile(t) for t in args[0]]
        return _fold((_and if kind == "and" else _or)([f for f, _ in parts]), parts)
    if kind == "not" or kind == "neg":
        part = _compile(args[0])
        inner, op = part[0], logical_not if kind == "not" else negate
        return _fold(lambda env: op(inner(env)), [part])
    if kind == "cond":
        parts = [_compile(a) for a in args]
        test, then, other = (f for f, _ in parts)
        return _fold(lambda env: then(env) if truthy(test(env)) else other(env), parts)
    if kind == "list":
        parts = [_compile(item) for item in args[0]]
        return _fold(_list([f for f, _ in parts]), parts)
    if kind == "map":
        parts = [(_compile(k), _compile(v)) for k, v in args[0]]
        return _fold(_map([(k[0], v[0]) for k, v in parts]), [p for pair in parts for p in pair])
    if kind == "call":
        return _call(node)
    raise ExpressionError(f"unsupported node {kind}")  # pragma: no cover


# --- field access -------------------------------------------------------------------------

def _ident_path(node: Node) -> list[str] | None:
    """`event.data.x` → ["event", "data", "x"]; None when the chain is not plain field selection."""
    keys: list[str] = []
    while node.kind == "select":
        keys.append(node.args[1])
        node = node.args[0]
    if node.kind != "ident":
        return None
    keys.append(node.args[0])
    keys.reverse()
    return keys


def _path_getter(root: str, keys: list[str]) -> Fn:
    # Unrolled for the common depths: `event.data.x` is the hot path.
    if len(keys) == 1:
        (k1,) = keys

        def get1(env: dict) -> Any:
            v = env.get(root, MISSING)
            return v.get(k1, MISSING) if type(v) is dict else MISSING
        return get1
    if len(keys) == 2:
        k1, k2 = keys

        def get2(env: dict) -> Any:
            v = env.get(root, MISSING)
            if type(v) is not dict:
                return MISSING
            v = v.get(k1, MISSING)
            return v.get(k2, MISSING) if type(v) is dict else MISSING
        return get2

    def get(env: dict) -> Any:
        v = env.get(root, MISSING)
        for k in keys:
            if type(v) is not dict:
                return MISSING
            v = v.get(k, MISSING)
        return v
    return get


def _select(operand: Fn, field: str) -> Fn:
    def select(env: dict) -> Any:
        v = operand(env)
        return v.get(field, MISSING) if type(v) is dict else MISSING
    return select


def _index(operand: Fn, key: Fn) -> Fn:
    def index(env: dict) -> Any:
        v, k = operand(env), key(env)
        t = type(v)
        if t is dict:
            try:
                return v.get(k, MISSING)
            except TypeError:
                return MISSING
        if t is list:
            tk = type(k)
            if tk is float and k.is_integer():
                k = int(k)
            elif tk is not int:
                return MISSING
            return v[k] if 0 <= k < len(v) else MISSING
        # Indexing anything else (missing, null, scalars) yields missing, like a missing field.
        return MISSING
    return index


# --- operators ----------------------------------------------------------------------------

_FAST_EQ = (str, int, bool)  # operand types for which Python == is already CEL equality


def _binary(op: str, left: tuple[Fn, Any], right: tuple[Fn, Any]) -> tuple[Fn, Any]:
    lf, rf = left[0], right[0]
    rc = right[1]
    if op == "==" or op == "!=":
        negated = op == "!="
        if rc is not _DYNAMIC and type(rc) in _FAST_EQ:
            const, ctype = rc, type(rc)

            def eq_const(env: dict) -> bool:
                v = lf(env)
                return (v == const if type(v) is ctype else equals(v, const)) is not negated
            return _fold(eq_const, [left, right])

        def eq(env: dict) -> bool:
            return equals(lf(env), rf(env)) is not negated
        return _fold(eq, [left, right])
    if op in ("<", "<=", ">", ">="):
        if rc is not _DYNAMIC:
            const = rc
            return _fold(lambda env: compare(op, lf(env), const), [left, right])
        return _fold(lambda env: compare(op, lf(env), rf(env)), [left, right])
    if op == "in":
        return _fold(lambda env: contained(lf(env), rf(env)), [left, right])
    if op == "+":
        return _fold(lambda env: add(lf(env), rf(env)), [left, right])
    return _fold(lambda env: arith(op, lf(env), rf(env)), [left, right])


def _and(terms: list[Fn]) -> Fn:
    # JS semantics: the first falsy operand, else the last; plain booleans behave as in CEL.
    def and_(env: dict) -> Any:
        v: Any = True
        for term in terms:
            v = term(env)
            if v is not True and not truthy(v):
                return v
        return v
    return and_


def _or(terms: list[Fn]) -> Fn:
    # The first truthy operand, else the last. An error counts as falsy (so `err || true` is true).
    last = len(terms) - 1

    def or_(env: dict) -> Any:
        v: Any = False
        for i, term in enumerate(terms):
            try:
                v = term(env)
            except Exception:
                if i == last:
                    raise
                continue
            if v is True or (v is not False and truthy(v)):
                return v
        return v
    return or_


def _list(items: list[Fn]) -> Fn:
    def make(env: dict) -> list:
        out = [item(env) for item in items]
        return [None if v is MISSING else v for v in out]
    return make


def _map(entries: list[tuple[Fn, Fn]]) -> Fn:
    def make(env: dict) -> dict:
        out = {}
        for kf, vf in entries:
            k, v = kf(env), vf(env)
            if type(k) not in (str, int, bool):
                raise ExpressionError(f"map keys must be string, int or bool, not {type_name(k)}")
            out[k] = None if v is MISSING else v
        return out
    return make


# --- calls and macros ---------------------------------------------------------------------

def _call(node: Node) -> tuple[Fn, Any]:
    name, receiver, arg_nodes = node.args
    if name in MACROS:
        return _macro(name, receiver, arg_nodes), _DYNAMIC
    entry = FUNCTIONS.get(name)
    if entry is None:
        raise ExpressionError(f"unknown function {name!r}")
    fn, arities = entry
    nodes = ([receiver] if receiver is not None else []) + list(arg_nodes)
    if len(nodes) not in arities:
        raise ExpressionError(f"{name}() takes {' or '.join(map(str, arities))} argument(s), got {len(nodes)}")
    parts = [_compile(n) for n in nodes]
    fns = [f for f, _ in parts]
    on_missing = 0 if name == "size" else False  # Go's defaults for calls on unknown values

    if len(fns) == 0:
        call = lambda env: fn()  # noqa: E731
    elif len(fns) == 1:
        (a,) = fns

        def call(env: dict) -> Any:
            x = a(env)
            return on_missing if x is MISSING else fn(x)
    else:
        def call(env: dict) -> Any:
            values = [f(env) for f in fns]
            for x in values:
                if x is MISSING:
                    return on_missing
            return fn(*values)
    if name in IMPURE:
        return call, _DYNAMIC
    return _fold(call, parts)


def _macro(name: str, receiver: Node | None, arg_nodes: list[Node]) -> Fn:
    if name == "has":
        if receiver is not None or len(arg_nodes) != 1 or arg_nodes[0].kind != "select":
            raise ExpressionError("has() takes one field selection, e.g. has(event.data.x)")
        operand, field = arg_nodes[0].args
        of = _compile(operand)[0]

        def has(env: dict) -> bool:
            v = of(env)
            return type(v) is dict and field in v
        return has

    expected = (2, 3) if name == "map" else (2,)
    if receiver is None or len(arg_nodes) not in expected or arg_nodes[0].kind != "ident":
        raise ExpressionError(f"{name}() is used as list.{name}(x, predicate)")
    var = arg_nodes[0].args[0]
    source = _compile(receiver)[0]
    body = [_compile(n)[0] for n in arg_nodes[1:]]

    def run(env: dict) -> Any:
        items = source(env)
        if items is MISSING:
            return False
        if type(items) is dict:
            items = list(items)
        elif type(items) is not list:
            raise ExpressionError(f"{name}() needs a list or map, got {type_name(items)}")
        scope = dict(env)  # the macro variable shadows outer names only inside the macro

        def each(fn: Fn, item: Any) -> Any:
            scope[var] = item
            return fn(scope)

        if name == "all":
            return all(truthy(each(body[0], x)) for x in items)
        if name == "exists":
            return any(truthy(each(body[0], x)) for x in items)
        if name == "exists_one":
            return sum(1 for x in items if truthy(each(body[0], x))) == 1
        if name == "filter":
            return [x for x in items if truthy(each(body[0], x))]
        # map(x, expr) or map(x, filter, expr)
        if len(body) == 2:
            items = [x for x in items if truthy(each(body[0], x))]
        out = [each(body[-1], x) for x in items]
        return [None if v is MISSING else v for v in out]
    return run

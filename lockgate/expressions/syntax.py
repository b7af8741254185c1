"""CEL source → a small tree of `Node`s, using the Lark grammar that ships with cel-python.

celpy's tree mirrors the grammar (a dozen wrapper levels per operand); we flatten it into
nodes that the compiler, interpolation and key extraction can walk without knowing Lark.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import Any

import lark
from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken


class ExpressionError(ValueError):
    """An expression that does not compile or cannot be evaluated; the message quotes the source."""


class Node:
    """kind is one of: lit, ident, select, index, call, list, map, not, neg, binary, and, or, cond.

    `args` by kind — lit: (value,); ident: (name,); select: (operand, field); index: (operand, key);
    call: (name, receiver-or-None, [args]); list: ([items]); map: ([(k, v)]); not/neg: (operand,);
    binary: (op, left, right); and/or: ([terms]); cond: (test, then, else).
    start/end are character offsets of the node in the source (used to rewrite it).
    """

    __slots__ = ("kind", "args", "start", "end")

    def __init__(self, kind: str, args: tuple, start: int, end: int) -> None:
        self.kind, self.args, self.start, self.end = kind, args, start, end

    def __repr__(self) -> str:
        return f"Node({self.kind}, {self.args!r})"


_lock = threading.Lock()
_lark: lark.Lark | None = None


def _grammar() -> lark.Lark:
    """celpy's CEL grammar (cel.lark) in our own Lark instance.

    celpy's parser turns on propagate_positions, which doubles parse time; we only need the spans
    of a few node kinds and take them from tokens instead (see _Converter).
    """
    global _lark
    if _lark is None:
        with _lock:
            if _lark is None:
                import celpy

                grammar = (Path(celpy.__file__).parent / "cel.lark").read_text()
                _lark = lark.Lark(grammar, parser="lalr", start="expr", g_regex_flags=re.M,
                                  lexer_callbacks={"IDENT": _bool_literal}, maybe_placeholders=False,
                                  priority="invert")
    return _lark


def _bool_literal(token: Token) -> Token:
    # The grammar lets true/false lex as identifiers; celpy fixes them up the same way.
    return Token("BOOL_LIT", token.value) if token.value in ("true", "false") else token


@functools.lru_cache(maxsize=8192)
def parse(source: str) -> Node:
    """Parse once per distinct source (the tree is shared: never mutate it)."""
    if not isinstance(source, str):
        raise ExpressionError(f"expression must be a string, got {type(source).__name__}")
    if not source.strip():
        raise ExpressionError("empty expression")
    try:
        tree = _grammar().parse(source)
    except UnexpectedInput as exc:
        raise ExpressionError(_syntax_message(source, exc)) from None
    except lark.exceptions.LarkError as exc:  # lexer/grammar errors without a position
        raise ExpressionError(f"syntax error in {source!r}: {str(exc).splitlines()[0]}") from None
    try:
        return _Converter(source).convert(tree)
    except RecursionError:
        raise ExpressionError(f"expression nested too deeply: {source[:80]!r}") from None
    except ExpressionError as exc:
        raise ExpressionError(f"cannot compile {source!r}: {exc}") from None


def _syntax_message(source: str, exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        what = "unexpected end of expression"
    elif isinstance(exc, UnexpectedToken):
        what = f"unexpected {exc.token.value!r}"
    elif isinstance(exc, UnexpectedCharacters):
        what = f"unexpected character {exc.char!r}"
    else:
        what = "syntax error"
    line, column = getattr(exc, "line", -1), getattr(exc, "column", -1)
    where = f"line {line}, column {column}" if isinstance(line, int) and line > 0 else "the end"
    try:
        context = exc.get_context(source).rstrip("\n")
    except Exception:  # get_context needs a position; EOF errors may lack one
        context = ""
    message = f"syntax error in {source!r}: {what} at {where}"
    return f"{message}\n{context}" if context else message


# --- Lark tree → Node -------------------------------------------------------------------

_RELATIONS = {"relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">=",
              "relation_eq": "==", "relation_ne": "!=", "relation_in": "in"}
_ARITH = {"addition_add": "+", "addition_sub": "-", "multiplication_mul": "*",
          "multiplication_div": "/", "multiplication_mod": "%"}
_PASS_THROUGH = frozenset({"member", "primary", "paren_expr"})
_COMMENT = re.compile(r"\s*(?://[^\n]*\s*)*")


class _Converter:
    """Spans are exact for identifiers, selections, indexing and calls (what gets rewritten by
    interpolation); for other nodes they run from the first to the last token inside."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _closing(self, pos: int, char: str) -> int:
        # After a complete operand only whitespace, comments and ")" of parentheses can precede
        # the closing bracket, so the first `char` outside a comment is the one.
        src = self.source
        while pos < len(src):
            pos = _COMMENT.match(src, pos).end()
            if pos < len(src) and src[pos] == char:
                return pos + 1
            pos += 1
        return len(src)

    def convert(self, tree: Any) -> Node:
        kind = str(tree.data)
        ch = tree.children
        while kind in _PASS_THROUGH or (len(ch) == 1 and kind in _SINGLE):
            tree = ch[0]
            kind = str(tree.data)
            ch = tree.children
        if kind == "expr":
            test, then, other = (self.convert(c) for c in ch)
            return Node("cond", (test, then, other), test.start, other.end)
        if kind in ("conditionalor", "conditionaland"):
            # Left-recursive chains become one n-ary node: shallower closures, easy key extraction.
            terms = []
            node = tree
            while str(node.data) == kind and len(node.children) == 2:
                terms.append(node.children[1])
                node = node.children[0]
            terms.append(node)
            items = [self.convert(t) for t in reversed(terms)]
            return Node("or" if kind == "conditionalor" else "and", (items,), items[0].start, items[-1].end)
        if kind in ("relation", "addition", "multiplication"):
            op_tree, right = ch
            op = _RELATIONS.get(str(op_tree.data)) or _ARITH[str(op_tree.data)]
            left, right_node = self.convert(op_tree.children[0]), self.convert(right)
            return Node("binary", (op, left, right_node), left.start, right_node.end)
        if kind == "unary":
            operand = self.convert(ch[1])
            return Node("not" if ch[0].data == "unary_not" else "neg", (operand,), operand.start, operand.end)
        if kind == "member_dot":
            operand = self.convert(ch[0])
            return Node("select", (operand, str(ch[1])), operand.start, ch[1].end_pos)
        if kind == "member_dot_arg":
            receiver = self.convert(ch[0])
            args = [self.convert(e) for e in ch[2].children] if len(ch) > 2 else []
            end = self._closing(args[-1].end if args else self._closing(ch[1].end_pos, "("), ")")
            return Node("call", (str(ch[1]), receiver, args), receiver.start, end)
        if kind == "member_index":
            operand, key = self.convert(ch[0]), self.convert(ch[1])
            return Node("index", (operand, key), operand.start, self._closing(key.end, "]"))
        if kind in ("ident", "dot_ident"):
            return Node("ident", (str(ch[0]),), ch[0].start_pos, ch[0].end_pos)
        if kind in ("ident_arg", "dot_ident_arg"):
            args = [self.convert(e) for e in ch[1].children] if len(ch) > 1 else []
            end = self._closing(args[-1].end if args else self._closing(ch[0].end_pos, "("), ")")
            return Node("call", (str(ch[0]), None, args), ch[0].start_pos, end)
        if kind == "list_lit":
            items = [self.convert(e) for e in ch[0].children] if ch else []
            return Node("list", (items,), *self._bounds(items))
        if kind == "map_lit":
            flat = [self.convert(e) for e in ch[0].children] if ch else []
            return Node("map", (list(zip(flat[0::2], flat[1::2])),), *self._bounds(flat))
        if kind == "literal":
            token = ch[0]
            return Node("lit", (_literal(token.type, str(token)),), token.start_pos, token.end_pos)
        if kind == "member_object":
            raise ExpressionError("message construction (Type{field: …}) is not supported")
        raise ExpressionError(f"unsupported syntax {kind!r}")  # pragma: no cover - grammar is closed

    @staticmethod
    def _bounds(nodes: list[Node]) -> tuple[int, int]:
        return (nodes[0].start, nodes[-1].end) if nodes else (0, 0)


# Rules that are plain wrappers when they have a single child.
_SINGLE = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary"})


def _literal(kind: str, text: str) -> Any:
    if kind == "INT_LIT":
        return _int(text)
    if kind == "UINT_LIT":
        return _int(text[:-1])
    if kind == "FLOAT_LIT":
        return float(text)
    if kind == "BOOL_LIT":
        return text == "true"
    if kind == "NULL_LIT":
        return None
    if kind in ("STRING_LIT", "MLSTRING_LIT"):
        return unquote(text)
    if kind == "BYTES_LIT":
        value = unquote(text[1:])
        # b"\xff" is the byte 0xff, not the UTF-8 of U+00FF.
        return value.encode("latin-1") if _has_byte_escape(text) else value.encode("utf-8")
    raise ExpressionError(f"unknown literal {text!r}")  # pragma: no cover


def _int(text: str) -> int:
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    value = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits)
    return -value if negative else value


def _has_byte_escape(text: str) -> bool:
    return "\\x" in text or re.search(r"\\[0-3][0-7]{2}", text) is not None


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?"}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-3][0-7]{2}|.)", re.S)


def unquote(text: str) -> str:
    """The value of a CEL string literal token (quotes included, optional r prefix)."""
    raw = text[0] in "rR"
    if raw:
        text = text[1:]
    quote = 3 if text[:3] in ('"""', "'''") else 1
    body = text[quote:-quote]
    if raw or "\\" not in body:
        return body

    def escape(match: re.Match[str]) -> str:
        seq = match.group(1)
        if seq[0] in "xuU":
            return chr(int(seq[1:], 16))
        if seq[0].isdigit():
            return chr(int(seq, 8))
        if seq in _ESCAPES:
            return _ESCAPES[seq]
        raise ExpressionError(f"invalid escape \\{seq} in {text!r}")

    return _ESCAPE_RE.sub(escape, body)

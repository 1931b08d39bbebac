"""``--where`` filters: a tiny, safe expression language compiled to SQL.

Grammar (case-insensitive keywords)::

    expr    := term ("or" term)*
    term    := factor ("and" factor)*
    factor  := "not" factor | "(" expr ")" | COLUMN OP VALUE | COLUMN "is" ["not"] "null"
    OP      := < | <= | > | >= | == | = | !=
    VALUE   := number | 'text' | "text" | true | false

Nothing is evaluated by Python's ``eval``: the text becomes a SQLAlchemy
expression over named columns, with values bound as parameters. Columns are
typed (number, text, bool) so ``accuracy > 'high'`` is an error, not a
silent string comparison; numbers must be finite (``1e999`` is no bound).

Filters are for people: an expression nests at most :data:`MAX_DEPTH` deep
(parentheses and ``not``) and all of them together hold at most
:data:`MAX_TERMS` comparisons. Past that the parser would exhaust Python's
recursion (and SQLite's expression depth), so it says so in one line instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, not_, or_

from selection.errors import ConfigError

Kind = Literal["number", "text", "bool"]
_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|-?\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<str>'[^']*'|\"[^\"]*\")|(?P<op><=|>=|==|!=|<|>|=)|(?P<paren>[()])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)
_OPS = {
    "<": lambda c, v: c < v, "<=": lambda c, v: c <= v, ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v, "==": lambda c, v: c == v, "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
}
#: Deepest nesting of parentheses and ``not`` in one expression.
MAX_DEPTH = 32
#: Most comparisons in all ``--where`` expressions of one command together.
MAX_TERMS = 256
#: Longest expression text read (a filter typed by a person is far shorter).
MAX_LENGTH = 10_000
_HELP = "e.g. --where \"latency_ms < 2\" --where \"accuracy >= 0.8 and family == 'mlp'\""


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ConfigError(
                f"--where {text!r}: cannot read {text[pos:].strip()!r} at character {pos}; {_HELP}"
            )
        kind = match.lastgroup or ""
        out.append(_Tok(kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str, columns: Mapping[str, tuple[Any, Kind]], terms: int = 0) -> None:
        self.text, self.columns = text, columns
        if len(text) > MAX_LENGTH:
            raise self.fail(f"an expression is at most {MAX_LENGTH} characters; got {len(text)}")
        self.toks, self.i = _tokens(text), 0
        #: Comparisons read so far (with those of earlier expressions), and the nesting now.
        self.terms, self.depth = terms, 0

    def fail(self, why: str) -> ConfigError:
        shown = self.text if len(self.text) <= 80 else self.text[:80] + "..."
        return ConfigError(f"--where {shown!r}: {why}; {_HELP}")

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"parentheses and 'not' nest at most {MAX_DEPTH} deep; "
                            "write the filter flatter (several --where are ANDed)")

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def keyword(self, *words: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "word" and tok.text.lower() in words:
            self.i += 1
            return True
        return False

    def take(self, kind: str, what: str) -> _Tok:
        tok = self.peek()
        if tok is None or tok.kind != kind:
            got = "the end" if tok is None else repr(tok.text)
            raise self.fail(f"expected {what}, got {got}")
        self.i += 1
        return tok

    def parse(self) -> ColumnElement[bool]:
        if not self.toks:
            raise self.fail("the expression is empty")
        expr = self.expr()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek().text!r} after a complete comparison")  # type: ignore[union-attr]
        return expr

    def expr(self) -> ColumnElement[bool]:
        parts = [self.term()]
        while self.keyword("or"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else or_(*parts)

    def term(self) -> ColumnElement[bool]:
        parts = [self.factor()]
        while self.keyword("and"):
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else and_(*parts)

    def factor(self) -> ColumnElement[bool]:
        if self.keyword("not"):
            self.nest()
            negated = not_(self.factor())
            self.depth -= 1
            return negated
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.i += 1
            self.nest()
            inner = self.expr()
            self.take("paren", "')'")
            self.depth -= 1
            return inner
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.fail(f"filters hold at most {MAX_TERMS} comparisons in all; "
                            "use fewer (a range is two: x >= a and x <= b)")
        name = self.take("word", "a column name").text
        if name not in self.columns:
            raise ConfigError(
                f"--where {self.text!r}: unknown column {name!r}; known columns: "
                f"{', '.join(self.columns)}"
            )
        column, kind = self.columns[name]
        if self.keyword("is"):
            negate = self.keyword("not")
            if not self.keyword("null", "none"):
                raise self.fail("expected 'null' after 'is'")
            return column.is_not(None) if negate else column.is_(None)
        op = self.take("op", "a comparison (<, <=, >, >=, ==, !=)").text
        return _OPS[op](column, self.value(name, kind))

    def value(self, name: str, kind: Kind) -> Any:
        tok = self.peek()
        if tok is None:
            raise self.fail(f"expected a value to compare {name} with")
        self.i += 1
        if kind == "number" and tok.kind == "num":
            number = float(tok.text)
            if not math.isfinite(number):
                raise self.fail(f"a number must be finite; {tok.text[:40]!r} is too large for a float")
            return number
        if kind == "text" and tok.kind == "str":
            return tok.text[1:-1]
        if kind == "bool" and tok.kind == "word" and tok.text.lower() in ("true", "false"):
            return tok.text.lower() == "true"
        example = {"number": "a number like 0.8", "text": "a quoted string like 'mlp'",
                   "bool": "true or false"}[kind]
        raise self.fail(f"column {name} holds {kind} values, compare it with {example}; got {tok.text!r}")


def compile_where(
    expressions: str | list[str] | tuple[str, ...], columns: Mapping[str, tuple[Any, Kind]]
) -> ColumnElement[bool] | None:
    """One SQL condition for every expression (ANDed); None if there are none.

    ``columns`` maps each filterable name to ``(sql column, kind)``; an unknown
    name raises ConfigError listing them.
    """
    if isinstance(expressions, str):
        expressions = [expressions]
    clauses, terms = [], 0
    for text in expressions:
        parser = _Parser(text, columns, terms)
        clauses.append(parser.parse())
        terms = parser.terms
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else and_(*clauses)

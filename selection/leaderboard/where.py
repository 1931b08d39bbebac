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
silent string comparison.
"""

from __future__ import annotations

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
    def __init__(self, text: str, columns: Mapping[str, tuple[Any, Kind]]) -> None:
        self.text, self.columns = text, columns
        self.toks, self.i = _tokens(text), 0

    def fail(self, why: str) -> ConfigError:
        return ConfigError(f"--where {self.text!r}: {why}; {_HELP}")

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
            return not_(self.factor())
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.i += 1
            inner = self.expr()
            self.take("paren", "')'")
            return inner
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
            return float(tok.text)
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
    clauses = [_Parser(text, columns).parse() for text in expressions]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else and_(*clauses)

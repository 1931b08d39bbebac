"""Declared parameter constraints, checked where values enter (config files, flags).

In the spirit of scikit-learn's parameter validation: every setting is declared
once with its type, range or choices and a default, and a bad value produces a
message that names where it came from, the rule, the value and the fix. Unknown
keys are errors that list the known ones (a typo must never be silently ignored);
:func:`check_known_keys` is the one place that check and its wording live.

Numbers: a float setting never accepts nan or +-inf (TOML can spell both), an
int setting never accepts a bool (``True`` is an ``int`` in Python) and a value
outside the declared range fails whatever its size.

This module lives in ``selection`` so that both packages can use it
(``selection`` must not import ``shadow``).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selection.errors import ConfigError

_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One declared setting: its name, type, allowed values and default."""

    name: str
    kind: type
    default: Any = _REQUIRED
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    help: str = ""

    @property
    def required(self) -> bool:
        """Whether the setting has no default (leaving it out is an error)."""
        return self.default is _REQUIRED

    def rule(self) -> str:
        """The constraint in words, e.g. 'an int in the range [1, inf)'."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        article = "an" if self.kind is int else "a"
        words = f"{article} {self.kind.__name__}"
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else _num(self.low)
            hi = "inf" if self.high is None else _num(self.high)
            left = "(" if self.low_open or self.low is None else "["
            right = ")" if self.high_open or self.high is None else "]"
            words += f" in the range {left}{lo}, {hi}{right}"
        return words

    def check(self, value: Any, where: str) -> Any:
        """Return ``value`` converted to the declared kind, or raise ConfigError."""
        converted = _convert(value, self.kind)
        if converted is None or not self._in_range(converted):
            # nan and inf satisfy no range yet read as numbers: say so, the rule alone would puzzle.
            finite = " (finite: not nan or inf)" if _non_finite(converted) else ""
            raise ConfigError(
                f"{where}: '{self.name}' must be {self.rule()}{finite}; got {value!r}. "
                "Fix the value (see `--help` or the example configs in datasets/)."
            )
        return converted

    def _in_range(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if _non_finite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _convert(value: Any, kind: type) -> Any:
    # bool is an int subclass in Python; never let True pass as 1.
    if isinstance(value, bool) and kind is not bool:
        return None
    if kind is float and isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # an int past float's range is no usable float
            return None
    if kind is list:
        return list(value) if isinstance(value, list) else None
    return value if isinstance(value, kind) else None


def check_known_keys(
    table: Iterable[str], known: Sequence[str], where: str,
    error: type[ConfigError] = ConfigError,
) -> None:
    """Raise ``error`` naming every unknown key of ``table`` and listing the known ones.

    The one wording of this check in the project::

        <where>: unknown key 'rowz'; known keys: rows, fraction. Fix the spelling or remove it.

    ``error`` lets a caller raise its own ConfigError subclass (a malformed
    model signature, say) with the same message.
    """
    unknown = sorted(set(table) - set(known), key=str)
    if unknown:
        raise error(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)}; known keys: "
            f"{', '.join(known) or 'none'}. Fix the spelling or remove it."
        )


def parse_table(table: Any, params: Sequence[Param], where: str) -> dict[str, Any]:
    """Validate a config table against declared params; fill in defaults."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table of key = value pairs; got {table!r}.")
    check_known_keys(table, [p.name for p in params], where)
    out: dict[str, Any] = {}
    for param in params:
        if param.name in table:
            out[param.name] = param.check(table[param.name], where)
        elif param.required:
            raise ConfigError(
                f"{where}: missing required key '{param.name}' ({param.rule()}). Add it."
            )
        else:
            out[param.name] = param.default
    return out


def read_toml(path: Path, what: str, missing_fix: str, folder_fix: str) -> dict[str, Any]:
    """A TOML file's table; every way it can fail is one ConfigError naming the file and fix."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} does not exist; {missing_fix}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {str(path)!r} is a folder; {folder_fix}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML (UTF-8): {exc}. Fix the syntax.") from None

"""Paired significance tests on per-row outcomes (champion vs challenger).

Both models are scored on the same holdout rows, so only the rows where they
disagree about correctness carry information: ``b`` rows only the challenger
gets right, ``c`` rows only the champion gets right. Under "no difference"
each discordant row is a fair coin, so ``b ~ Binomial(b + c, 1/2)``: the exact
McNemar test. Exact rather than chi-square because holdouts are often small
and discordant rows few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from selection.errors import ConfigError

Alternative = Literal["greater", "two-sided"]
ALTERNATIVES: tuple[str, ...] = ("greater", "two-sided")


@dataclass(frozen=True)
class McNemarResult:
    """Counts of discordant rows and the exact p-value."""

    b_challenger_only: int
    c_champion_only: int
    n_rows: int
    p_value: float
    alternative: str

    @property
    def n_discordant(self) -> int:
        return self.b_challenger_only + self.c_champion_only


def mcnemar_exact(
    challenger_correct: np.ndarray, champion_correct: np.ndarray,
    alternative: Alternative = "greater",
) -> McNemarResult:
    """Exact McNemar test; ``greater`` asks "is the challenger better?".

    With no discordant row there is no evidence either way: p = 1.
    """
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"alternative must be one of {', '.join(ALTERNATIVES)}; got {alternative!r}")
    a = np.asarray(challenger_correct, dtype=bool)
    z = np.asarray(champion_correct, dtype=bool)
    if a.shape != z.shape or a.ndim != 1:
        raise ConfigError(
            "a paired test needs one outcome per holdout row for both models; got shapes "
            f"{a.shape} and {z.shape}; score both on the same holdout rows"
        )
    b = int(np.sum(a & ~z))
    c = int(np.sum(~a & z))
    p = 1.0 if b + c == 0 else binomial_half_p(b, b + c, alternative)
    return McNemarResult(b, c, int(a.size), p, alternative)


def binomial_half_p(k: int, n: int, alternative: Alternative) -> float:
    """Exact p-value of ``k`` successes in ``n`` fair coin flips.

    Integer arithmetic (exact at any n), and no scipy import: this runs on
    every promotion, and scipy alone costs about a second of CLI start-up.
    ``two-sided`` doubles the smaller tail (the distribution is symmetric).
    """
    total = 2 ** n
    upper = sum(math.comb(n, i) for i in range(k, n + 1))
    if alternative == "greater":
        return upper / total
    lower = sum(math.comb(n, i) for i in range(0, k + 1))
    return min(1.0, 2 * min(upper, lower) / total)

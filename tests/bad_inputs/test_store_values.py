"""Text with a NUL and integers past 64 bits, on both backends: one ConfigError, nothing stored.

PostgreSQL refuses NUL in text with a driver error and both backends overflow
past 64 bits; the store's one check (``engine.check_bindable``) refuses them
first, the same way everywhere, whatever path the value took.
"""

from __future__ import annotations

import pytest

from selection import Store, promote
from selection.errors import ConfigError
from selection.testing import add_tiny_candidates

NUL = "\x00"


def _rows(store: Store) -> list[tuple]:
    from sqlalchemy import text

    with store.snapshot() as conn:
        return [tuple(r) for t in ("sweeps", "candidates", "promotions", "channels")
                for r in conn.execute(text(f"SELECT * FROM {t}"))]  # noqa: S608 (fixed names)


@pytest.mark.parametrize("case", ["candidate-id", "reason", "who", "where-text", "sweep-id",
                                  "limit-past-int64"])
def test_values_no_backend_stores_are_refused(case: str, any_store: Store) -> None:
    from selection.leaderboard.frame import leaderboard

    add_tiny_candidates(any_store, ["c-a", "c-b"])
    promote(any_store, "c-a")
    before = _rows(any_store)
    attempts = {
        "candidate-id": lambda: any_store.get_candidate(f"c-{NUL}"),
        "reason": lambda: promote(any_store, "c-b", reason=f"why{NUL}"),
        "who": lambda: promote(any_store, "c-b", who=f"me{NUL}"),
        "where-text": lambda: leaderboard(any_store, sweep="all", where=[f"family == 'm{NUL}'"]),
        "sweep-id": lambda: leaderboard(any_store, sweep=f"s{NUL}"),
        "limit-past-int64": lambda: leaderboard(any_store, sweep="all", top=2**63),
    }
    with pytest.raises(ConfigError, match="NUL|64 bits"):
        attempts[case]()
    assert _rows(any_store) == before

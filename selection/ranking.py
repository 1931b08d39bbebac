"""How leaderboard rows are ranked.

The rule (the only one for now): within each ``(sweep_id, device)`` group,
rows whose ``status`` is ``"ok"`` are ordered by

1. ``accuracy``, higher first;
2. then ``latency_ms``, lower first;
3. then ``size_bytes``, smaller first;
4. then ``candidate_id``, so equal metrics still get a deterministic order.

A missing metric sorts after every present one at its step. Ranks are
1-based and consecutive (no shared ranks: the id breaks every tie). Rows
that are not ``"ok"`` get no rank (``<NA>``). Candidates of different sweeps
are never ranked together: they were scored on different holdouts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from selection.errors import ConfigError

#: Columns :func:`rank_rows` reads.
RANK_INPUT_COLUMNS = (
    "sweep_id",
    "device",
    "status",
    "accuracy",
    "latency_ms",
    "size_bytes",
    "candidate_id",
)
_GROUP = ["sweep_id", "device"]
_ORDER = ["accuracy", "latency_ms", "size_bytes", "candidate_id"]
_ASCENDING = [False, True, True, True]


def rank_rows(df: pd.DataFrame) -> pd.Series:
    """The rank of each row of ``df`` under the rule in this module's docstring.

    Returns a nullable ``Int64`` series named ``rank``, aligned with ``df``'s
    index (which need not be unique).
    """
    missing = [c for c in RANK_INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(
            f"ranking needs the columns {', '.join(RANK_INPUT_COLUMNS)}; the frame lacks "
            f"{', '.join(missing)}; build it with `selection.leaderboard.leaderboard()`"
        )
    ranks = np.zeros(len(df), dtype="int64")  # 0 marks "no rank"
    # Work on positions, not labels, so a duplicated index cannot misplace ranks.
    frame = df.loc[:, list(RANK_INPUT_COLUMNS)].reset_index(drop=True)
    ok = frame[frame["status"] == "ok"]
    if not ok.empty:
        ordered = ok.sort_values(
            _GROUP + _ORDER,
            ascending=[True, True] + _ASCENDING,
            na_position="last",
            kind="mergesort",
        )
        positions = ordered.index.to_numpy()
        ranks[positions] = ordered.groupby(_GROUP, sort=False).cumcount().to_numpy() + 1
    result = pd.Series(ranks, index=df.index, name="rank").astype("Int64")
    return result.mask(result == 0)

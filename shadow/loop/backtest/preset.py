"""The drift replay's sweep file, for any time-ordered dataset: slices measured in periods.

``shadow backtest`` runs the user's own sweep file. This preset is the one the drift replay
(``benchmarks/drift_replay.py``) has always run, written as data a user could have written:
all history, recent windows of 2, 3 and 5 periods, an expanding slice that stops 5 periods
before the holdout, an MLP searched with a small Optuna budget per slice, the newest period as
holdout, the vote of the sweep's top 3 slices as its challenger, the no-regression gate (it
suits refits, which are a holdout fresher than the candidate the gate judged) and a ``[watch]``
table that sweeps when a period's rows arrived, promotes automatically and refits the winner on
its slice plus the holdout.
"""

from __future__ import annotations

from typing import Any

from shadow.data.slicing.base import MIN_SLICE_ROWS
from shadow.errors import ConfigError

#: Recent windows offered as slices, in periods (2, 3 and 5 years for daily rows).
WINDOWS = (2, 3, 5)
#: The expanding slice stops this many periods before the holdout.
EXPANDING_GAP = 5
#: How the preset picks each sweep's challenger: the vote of its top slices. It served the unseen
#: next period better than rank 1 in every NOAA run and tied with it on the two short-period
#: streams (docs/benchmarks.md); "holdout" gives the rank-1 loop of before (and runs beside a warm start).
DEFAULT_SELECTION = "ensemble"
#: Members of the ensemble that ``selection = "ensemble"`` gates when no size is given: the
#: best candidate of each of the three best slices (2 to 5 were compared outside the loop,
#: docs/benchmarks.md: 3 was best or level-best on NOAA and Seattle; on the S&P 500 every vote
#: trailed rank 1).
ENSEMBLE_TOP_K = 3
#: A period is also the smallest slice (the expanding one's first): at least a slice's rows.
MIN_PERIOD = MIN_SLICE_ROWS


def preset_selection(selection: str | None, warm_start: bool) -> str:
    """The policy asked for, or the preset's: :data:`DEFAULT_SELECTION`, but rank 1 ("holdout")
    beside a warm start, which an ensemble champion would leave idle. ConfigError for the
    ensemble asked for beside a warm start."""
    if selection == "ensemble" and warm_start:
        raise ConfigError("a warm start continues the champion, and under --selection ensemble "
                          "the champion is an ensemble, which is never warm-started; pass "
                          "--selection holdout (or leave --selection out) with --warm-start")
    if selection is not None:
        return selection
    return "holdout" if warm_start else DEFAULT_SELECTION


def replay_config(
    dataset: str, period: int, *, trials: int = 3, epochs: int = 10, seed: int = 0,
    latency_guard: float | None = None, refit: bool = True, require: str | None = None,
    channel: str = "production", windows: tuple[int, ...] = WINDOWS,
    expanding_gap: int = EXPANDING_GAP, selection: str | None = None, ensemble: int = 0,
    warm_start: bool = False, baselines: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The preset as a raw sweep config (``shadow.sweep.config_from_dict`` validates it).

    ``require`` None: "no-regression" with refit, "improvement" (strict) without.
    ``latency_guard``: allowed latency regression in % (None: off; host latencies of
    microsecond MLPs on a shared machine are noise). ``windows`` (recent slices) and
    ``expanding_gap`` are in periods. ``selection``: ``[watch.selection] policy`` (how the
    challenger is picked out of each sweep: "ensemble", "holdout" or "track-record"; None:
    :func:`preset_selection`).
    ``ensemble``: combine each sweep's top this many candidates into one more (``[ensemble]
    top_k``; 0: off, or :data:`ENSEMBLE_TOP_K` with ``selection = "ensemble"``). ``warm_start``
    needs another ``selection`` than "ensemble" (an ensemble champion is never warm-started).
    ``warm_start``: each sweep also continues the champion on the newest period
    (``[warm_start]``, the defaults: as many rows as the holdout, 3 epochs, 0.3 x its lr).
    ``baselines``: ``[model] baselines`` (e.g. ``("prior",)``: the class prior on every slice).
    """
    if period < MIN_PERIOD:
        raise ConfigError(f"the drift replay's sweep file measures its slices in periods, which "
                          f"need at least {MIN_PERIOD} rows each; got --period {period}: pass "
                          f"--period {MIN_PERIOD} or more (or your own sweep file)")
    selection = preset_selection(selection, warm_start)
    guards = {} if latency_guard is None else {"latency_ms": latency_guard}
    slices: list[dict[str, Any]] = [{"strategy": "all"}]
    slices += [{"strategy": "recent", "rows": w * period} for w in windows]
    # Expanding slices grow from the oldest row; with count = 2 the larger one is all history
    # (deduplicated by the sweep) and the other ends `expanding_gap` periods earlier.
    slices.append({"strategy": "expanding", "min_rows": period, "step": expanding_gap * period,
                   "count": 2})
    config: dict[str, Any] = {
        "sweep": {"name": f"backtest-{period}", "dataset": dataset, "devices": ["host-cpu"],
                  "seed": seed},
        "holdout": {"rows": period},
        "slices": slices,
        "model": {"family": "mlp", "params": {"epochs": epochs},
                  **({"baselines": list(baselines)} if baselines else {})},
        "search": {
            "trials": trials,
            # One generation per slice: with a handful of trials TPE is still in its random
            # start-up phase, so waiting between generations would only idle cores.
            "parallel": trials,
            "space": {
                "width": {"low": 8, "high": 64},
                "lr": {"low": 1e-3, "high": 3e-2, "log": True},
                "hidden_layers": {"choices": [1, 2]},
            },
        },
        "gate": {"min_improvement": 0.0, "alpha": 0.05, "guards": guards,
                 "require": require or ("no-regression" if refit else "improvement")},
        "watch": {"channel": channel, "mode": "auto", "refit": refit,
                  "triggers": {"new_rows": period}, "selection": {"policy": selection}},
    }
    if ensemble == 0 and selection == "ensemble":
        ensemble = ENSEMBLE_TOP_K
    if ensemble > 0:
        config["ensemble"] = {"top_k": ensemble}
    if warm_start:
        config["warm_start"] = {"channel": channel}
    return config

"""Summaries of a replay: means, regret, targets, the markdown table and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drift.replay import ReplayResult

#: Approaches in the order the table and plot show them, with their labels.
APPROACHES = {
    "system": "shadow system (no-regression gate + promote --refit)",
    "refit_improvement": "strict gate (significantly better) + promote --refit",
    "gate_only": "strict gate + promote, no refit",
    "static": "static (first champion)",
    "retrain_all": "retrain-all",
    "retrain_recent": "retrain-recent",
    "always_promote": "always promote rank 1 (no gate)",
    "oracle": "oracle (best sweep candidate in hindsight)",
    "oracle_refit": "oracle over refits (best slice refit in hindsight)",
    "arf": "river ARF (prequential)",
    "hoeffding": "river Hoeffding tree (prequential)",
    "no_change": "no-change (previous label)",
    "majority": "majority class",
}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(100 * (a - b), 2)


def _text(value: object) -> str:
    return "n/a" if value is None else str(value)


def summarize(result: ReplayResult) -> dict[str, Any]:
    """Means over all scored periods and over post-drift ones, regret and the issue's targets."""
    summary: dict[str, Any] = {"dataset": result.dataset, "periods": len(result.periods),
                               "post_periods": sum(p.post_drift for p in result.periods)}
    for name in APPROACHES:
        everywhere = [p.accuracy[name] for p in result.periods if name in p.accuracy]
        after = [p.accuracy[name] for p in result.periods if p.post_drift and name in p.accuracy]
        summary[f"{name}_all"] = _mean(everywhere)
        summary[f"{name}_post"] = _mean(after)
    summary["arf"] = summary["arf_post"]
    # Regret in accuracy points: what selection left on the table versus its own best candidate.
    summary["regret"] = _points(summary["oracle_post"], summary["system_post"])
    summary["regret_all"] = _points(summary["oracle_all"], summary["system_all"])
    # The system ships refits: the bound for choosing among those is the best refit in hindsight.
    summary["regret_refit"] = _points(summary["oracle_refit_post"], summary["system_post"])
    summary["refit_gain"] = _points(summary["refit_improvement_post"], summary["gate_only_post"])
    summary["promotions"] = sum(p.step.promoted for p in result.periods)
    for channel in ("refit-improvement", "gate-only"):
        summary[f"{channel.replace('-', '_')}_promotions"] = sum(
            p.step.ablations.get(channel, False) for p in result.periods)
    summary["refit_refusals"] = sum(len(p.step.refit_errors) for p in result.periods)
    summary["gate_refusals"] = sum(
        (not p.step.promoted) and p.step.challenger_id is not None for p in result.periods
    )
    summary["targets"] = targets(summary)
    summary["seconds"] = {k: round(v, 1) for k, v in result.seconds.items()}
    return summary


def targets(s: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's four targets, measured on the post-drift periods (None if not measurable)."""
    system, static, oracle = s["system_post"], s["static_post"], s["oracle_post"]
    retrains = [v for v in (s["retrain_all_post"], s["retrain_recent_post"]) if v is not None]
    oracle_refit = s.get("oracle_refit_post")
    if system is None:
        return {"beats_static_by_10": None, "regret_at_most_1": None,
                "regret_vs_refit_oracle_at_most_1": None,
                "at_least_best_retrain": None, "at_least_arf": None}
    return {
        "beats_static_by_10": static is not None and system - static >= 0.10,
        "regret_at_most_1": oracle is not None and 100 * (oracle - system) <= 1.0,
        "regret_vs_refit_oracle_at_most_1": (oracle_refit is not None
                                             and 100 * (oracle_refit - system) <= 1.0),
        "at_least_best_retrain": bool(retrains) and system >= max(retrains),
        "at_least_arf": s["arf_post"] is not None and system >= s["arf_post"],
    }


def markdown(result: ReplayResult, summary: dict[str, Any], command: str) -> str:
    """The per-period table with the means under it, as markdown."""
    names = list(APPROACHES)
    head = ["period rows", "post-drift", "gate", "serving"] + names
    lines = [
        f"# Drift replay on `{result.dataset}`",
        "",
        f"Command: `{command}`. Periods of {result.settings.period} rows; drift from row "
        f"{result.drift_from_row}. Accuracy on the *next* period, never seen by any model "
        "(river learners: prequential, test-then-train, over the same rows).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for p in result.periods:
        gate = "promoted" if p.step.promoted else ("refused" if p.step.challenger_id else "no candidate")
        cells = [f"{p.start}-{p.stop - 1}", "yes" if p.post_drift else "", gate, p.production_slice]
        cells += [f"{p.accuracy[n]:.3f}" if n in p.accuracy else "" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    for label, suffix in (("mean, all periods", "all"), ("mean, post-drift", "post")):
        cells = [f"**{label}**", "", "", ""]
        cells += [f"**{summary[f'{n}_{suffix}']:.3f}**" if summary[f"{n}_{suffix}"] is not None else ""
                  for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Columns: " + "; ".join(f"`{k}` = {v}" for k, v in APPROACHES.items()) + ".", ""]
    lines += [
        f"Promotions (first champion included): {summary['promotions']}; gate refusals: "
        f"{summary['gate_refusals']}; refits refused by their checks: {summary['refit_refusals']}; "
        f"promotions behind the strict gate: {summary['refit_improvement_promotions']} with refit, "
        f"{summary['gate_only_promotions']} without. Regret (oracle - system, "
        f"post-drift): {_text(summary['regret'])} points (all periods: {_text(summary['regret_all'])}); "
        f"against the oracle over refits: {_text(summary['regret_refit'])} points. Refit gain "
        f"behind the strict gate (post-drift): {_text(summary['refit_gain'])} points.",
        "",
        "| target (post-drift) | met |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_text(met)} |" for name, met in summary["targets"].items()]
    return "\n".join(lines) + "\n"


def plot(result: ReplayResult, path: Path) -> None:
    """Accuracy per period, one line per approach; promotions and the drift point marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    x = [p.start for p in result.periods]
    fig, ax = plt.subplots(figsize=(14, 6))
    # tab20 gives every approach its own colour (the default cycle repeats after 10); the
    # system is drawn last, in black, so lines that equal it cannot hide it.
    colours = iter(plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2])
    for name, label in APPROACHES.items():
        y = [p.accuracy.get(name, np.nan) for p in result.periods]
        if name == "system":
            ax.plot(x, y, label=label, color="black", linewidth=2.6, marker="o", markersize=3, zorder=4)
            continue
        wide = name in ("gate_only", "static", "oracle_refit", "arf")
        ax.plot(x, y, label=label, color=next(colours), linewidth=2.0 if wide else 1.0,
                linestyle="-" if wide else "--")
    promoted = [p for p in result.periods if p.step.promoted]
    ax.scatter([p.start for p in promoted], [p.accuracy["system"] for p in promoted], marker="^",
               s=90, color="black", zorder=5, label="promotion of the system (gate passed)")
    if result.drift_from_row is not None:
        ax.axvline(result.drift_from_row, color="red", linestyle=":", label="documented drift")
    ax.set_xlabel(f"first row of the scored period ({result.settings.period} rows each)")
    ax.set_ylabel("accuracy on the unseen period")
    ax.set_title(f"Drift replay on {result.dataset}: which model serves the next period?")
    ax.grid(alpha=0.3)
    # Outside the axes: the lines fill the whole range after the drift.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

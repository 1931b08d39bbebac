"""A backtest's summary (means, regret, margins, targets), its markdown table and its plot.

The summary's keys are the drift replay's (``system_post``, ``static_post``, ``arf_post``,
``regret``, ...): accuracies are fractions over the scored periods (``_all``) and over those after
the manifest's documented drift (``_post``; on a dataset without one, every period counts as
"post"), margins and regrets are in accuracy points.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from shadow.loop.backtest.margins import PEERS, across_runs, run_margins
from shadow.loop.backtest.runner import BacktestResult, PeriodResult

#: Approaches in the order the table and plot show them, with their labels.
APPROACHES = {
    "system": "shadow system (the sweep file's triggers, gate and refit)",
    "refit_improvement": "strict gate (significantly better) + refit",
    "gate_only": "strict gate, no refit",
    "static": "static (first champion)",
    "retrain_all": "retrain-all (slice all, on the system's schedule)",
    "retrain_recent": "retrain-recent (the middle recent window)",
    "always_promote": "always promote the challenger (rank 1 or the policy's pick; no gate)",
    "oracle": "oracle (best sweep candidate in hindsight)",
    "oracle_refit": "oracle over refits (best slice or ensemble refit in hindsight)",
    "arf": "river ARF (prequential)",
    "hoeffding": "river Hoeffding tree (prequential)",
    "no_change": "no-change (previous label)",
    "majority": "majority class",
}


def accuracies(result: BacktestResult, period: PeriodResult) -> dict[str, float]:
    """The period's accuracies by approach name, with the two named retraining rules aliased."""
    acc = dict(period.accuracy)
    for name, rule in (("retrain_all", result.rule_all), ("retrain_recent", result.rule_recent)):
        if rule is not None and f"rule:{rule}" in acc:
            acc[name] = acc[f"rule:{rule}"]
    return acc


def dataset_label(dataset: str) -> str:
    """A dataset's name for file names: a catalog name as it is, a path by its folder's name
    (``x/dataset.toml`` and ``x/`` are both ``x``)."""
    if "/" not in dataset:
        return dataset
    path = Path(dataset)
    return path.parent.name if path.suffix == ".toml" else path.name


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(100 * (a - b), 2)


def _text(value: object) -> str:
    return "n/a" if value is None else str(value)


def summarize(result: BacktestResult) -> dict[str, Any]:
    """Means over all scored periods and over post-drift ones, regrets, margins and targets."""
    # Every comparison over the same periods: those the system served (a period before its
    # first promotion has no system score, and would leave only its peers' mean).
    rows = [(p, accuracies(result, p)) for p in result.periods if "system" in p.accuracy]
    post = [(p, a) for p, a in rows if p.post_drift or result.drift_from_row is None]
    summary: dict[str, Any] = {"dataset": result.dataset, "channel": result.channel,
                               "periods": len(rows), "post_periods": len(post),
                               "unserved_periods": len(result.periods) - len(rows),
                               "period_rows": result.settings.period}
    names = list(APPROACHES) + sorted({k for _, a in rows for k in a if k.startswith("rule:")})
    for name in names:
        key = name.replace("rule:", "rule_")
        summary[f"{key}_all"] = _mean([a[name] for _, a in rows if name in a])
        summary[f"{key}_post"] = _mean([a[name] for _, a in post if name in a])
    summary["arf"] = summary["arf_post"]
    # Fixed rules: a slice every sweep offered (an expanding slice's id moves with the data).
    fixed = {n[5:]: summary[f"rule_{n[5:]}_post"] for n in names
             if n.startswith("rule:") and all(n in a for _, a in rows)}
    summary["rules_post"] = {k: v for k, v in fixed.items() if v is not None}
    best_rule = max(summary["rules_post"].items(), key=lambda kv: kv[1], default=(None, None))
    summary["best_rule"], summary["best_rule_post"] = best_rule
    system = summary["system_post"]
    summary["regret"] = _points(summary["oracle_post"], system)
    summary["regret_all"] = _points(summary["oracle_all"], summary["system_all"])
    summary["regret_refit"] = _points(summary["oracle_refit_post"], system)
    summary["refit_gain"] = _points(summary["refit_improvement_post"], summary["gate_only_post"])
    summary["margin_vs_best_rule"] = _points(system, summary["best_rule_post"])
    summary["margin_vs_no_change"] = _points(system, summary["no_change_post"])
    summary["margin_vs_arf"] = _points(system, summary["arf_post"])
    # The same margins, paired per period, with their 95 % interval and a verdict (a lead
    # inside the noise is a tie).
    summary["margins"] = run_margins([a for _, a in post], summary["best_rule"])
    summary["promotions"] = sum(p.step.promoted for p in result.periods)
    summary["sweeps"] = sum(p.step.sweep_id is not None for p in result.periods)
    for suffix in ("refit-improvement", "gate-only"):
        summary[f"{suffix.replace('-', '_')}_promotions"] = sum(
            p.step.ablations.get(f"{result.channel}-{suffix}", False) for p in result.periods)
    summary["refit_refusals"] = sum(len(p.step.refit_errors) for p in result.periods)
    summary["gate_refusals"] = sum(p.step.gate_passed is False for p in result.periods)
    summary["targets"] = targets(summary)
    summary["seconds"] = {k: round(v, 1) for k, v in result.seconds.items()}
    return summary


def backtest_record(result: BacktestResult, summary: dict[str, Any], command: str) -> dict[str, Any]:
    """The JSON record of a run: command, settings, the config as run, summary, every period."""
    from dataclasses import asdict

    return {"command": command, "settings": asdict(result.settings), "config": result.config,
            "drift_from_row": result.drift_from_row, "summary": summary, "periods": [
                {"start": p.start, "stop": p.stop, "post_drift": p.post_drift,
                 "serving": p.serving_id, "serving_slice": p.serving_slice,
                 "chosen_slices": p.chosen, "accuracy": p.accuracy, **asdict(p.step)}
                for p in result.periods]}


def write_backtest(base: Path, result: BacktestResult, summary: dict[str, Any],
                   command: str) -> list[Path]:
    """The run's record, table and plot as ``base`` + ``.json``, ``.md``, ``.png``; their paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(suffix) for suffix in (".json", ".md", ".png")]
    record = backtest_record(result, summary, command)
    paths[0].write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(result, summary, command), encoding="utf-8")
    plot(result, paths[2])
    return paths


def write_seeds(base: Path, summaries: list[dict[str, Any]],
                command: str) -> tuple[dict[str, Any], str]:
    """Several seeds' runs judged together, as ``base`` + ``.json`` and ``.md``: the record
    (command, seeds, ``across_seeds``, every run's summary) and the markdown table."""
    across = across_runs(summaries)
    record = {"command": command, "seeds": [s.get("seed") for s in summaries],
              "across_seeds": across, "runs": summaries}
    base.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str) + "\n",
                                         encoding="utf-8")
    text = seeds_markdown(summaries, across, command)
    base.with_suffix(".md").write_text(text, encoding="utf-8")
    return record, text


def targets(s: dict[str, Any]) -> dict[str, bool | None]:
    """The loop's targets, measured on the post-drift periods (None: not measurable)."""
    system = s["system_post"]
    if system is None:
        return {}
    rules = [v for v in (s["retrain_all_post"], s["retrain_recent_post"]) if v is not None]

    def at_least(other: float | None) -> bool | None:
        return None if other is None else system >= other

    def within_1(oracle: float | None) -> bool | None:
        return None if oracle is None else 100 * (oracle - system) <= 1.0
    return {
        "beats_static_by_10": None if s["static_post"] is None
        else system - s["static_post"] >= 0.10,
        "regret_at_most_1": within_1(s["oracle_post"]),
        "regret_vs_refit_oracle_at_most_1": within_1(s["oracle_refit_post"]),
        "at_least_best_retrain": at_least(max(rules)) if rules else None,
        "at_least_best_rule": at_least(s["best_rule_post"]),
        "at_least_no_change": at_least(s["no_change_post"]),
        "at_least_arf": at_least(s["arf_post"]),
    }


def markdown(result: BacktestResult, summary: dict[str, Any], command: str) -> str:
    """The per-period table with the means under it, as markdown."""
    names = [n for n in APPROACHES if summary.get(f"{n}_all") is not None]
    head = ["period rows", "post-drift", "pass", "serving"] + names
    lines = [
        f"# Backtest on `{result.dataset}` (channel `{result.channel}`)",
        "",
        f"Command: `{command}`. Periods of {result.settings.period} rows; drift from row "
        f"{_text(result.drift_from_row)}. Accuracy on the *next* period, never seen by any model "
        "(river learners: prequential, test-then-train, over the same rows).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for p, acc in ((p, accuracies(result, p)) for p in result.periods):
        step = p.step
        verdict = ("promoted" if step.promoted else "refused" if step.challenger_id
                   else "no candidate") if step.sweep_id else "no trigger"
        cells = [f"{p.start}-{p.stop - 1}", "yes" if p.post_drift else "", verdict, p.serving_slice]
        cells += [f"{acc[n]:.3f}" if n in acc else "" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    for label, suffix in (("mean, all periods", "all"), ("mean, post-drift", "post")):
        cells = [f"**{label}**", "", "", ""]
        cells += [f"**{summary[f'{n}_{suffix}']:.3f}**" if summary[f"{n}_{suffix}"] is not None
                  else "" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Columns: " + "; ".join(f"`{k}` = {APPROACHES[k]}" for k in names) + ".", ""]
    if summary["rules_post"]:
        lines += ["Every fixed retraining rule (post-drift mean): " + ", ".join(
            f"`{k}` {v:.3f}" for k, v in sorted(summary["rules_post"].items())) + ".", ""]
    lines += [
        f"Sweeps: {summary['sweeps']}; promotions (first champion included): "
        f"{summary['promotions']}; gate refusals: {summary['gate_refusals']}; refits refused by "
        f"their checks: {summary['refit_refusals']}. Regret (oracle - system, post-drift): "
        f"{_text(summary['regret'])} points; against the oracle over refits: "
        f"{_text(summary['regret_refit'])} points. Margins (system - peer, post-drift): best rule "
        f"{_text(summary['margin_vs_best_rule'])}, no-change "
        f"{_text(summary['margin_vs_no_change'])}, ARF {_text(summary['margin_vs_arf'])} points.",
        "",
        "| target (post-drift) | met |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_text(met)} |" for name, met in summary["targets"].items()]
    lines += ["", *margins_table(summary["margins"])]
    return "\n".join(lines) + "\n"


#: How each peer's margin reads in a table.
PEER_LABELS = {"best_rule": "best fixed rule (picked in hindsight)", "no_change": "no-change",
               "arf": "river ARF", "oracle_refit": "oracle over refits (minus the regret)"}


def margins_table(margins: dict[str, Any]) -> list[str]:
    """Markdown lines: the system's paired margin over each peer, its 95 % interval, verdict."""
    lines = ["| system minus (post-drift, points) | margin | 95 % interval over periods | "
             "verdict |", "|---|---|---|---|"]
    for peer in PEERS:
        if peer in margins:
            m = margins[peer]
            ci = "n/a" if m["ci95"] is None else f"{m['ci95'][0]:+.2f} to {m['ci95'][1]:+.2f}"
            lines.append(f"| {PEER_LABELS[peer]} | {m['points']:+.2f} | {ci} | "
                         f"{_text(m['verdict'])} |")
    return lines + ["", "A verdict is `ahead` or `behind` only when the whole interval is; "
                    "otherwise the margin is inside the noise: a tie."]


def plot(result: BacktestResult, path: Path) -> None:
    """Accuracy per period, one line per approach; promotions and the drift point marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    x = [p.start for p in result.periods]
    per_period = [accuracies(result, p) for p in result.periods]
    fig, ax = plt.subplots(figsize=(14, 6))
    # tab20 gives every approach its own colour (the default cycle repeats after 10); the
    # system is drawn last, in black, so lines that equal it cannot hide it.
    tab20 = [plt.get_cmap("tab20")(i) for i in range(20)]
    colours = iter(tab20[::2] + tab20[1::2])
    for name, label in APPROACHES.items():
        y = [a.get(name, np.nan) for a in per_period]
        if all(np.isnan(y)):
            continue
        if name == "system":
            ax.plot(x, y, label=label, color="black", linewidth=2.6, marker="o", markersize=3,
                    zorder=4)
            continue
        wide = name in ("gate_only", "static", "oracle_refit", "arf", "no_change")
        ax.plot(x, y, label=label, color=next(colours), linewidth=2.0 if wide else 1.0,
                linestyle="-" if wide else "--")
    promoted = [(p.start, a["system"]) for p, a in zip(result.periods, per_period)
                if p.step.promoted and "system" in a]
    ax.scatter([s for s, _ in promoted], [v for _, v in promoted], marker="^", s=90,
               color="black", zorder=5, label="promotion of the system (gate passed)")
    if result.drift_from_row is not None:
        ax.axvline(result.drift_from_row, color="red", linestyle=":", label="documented drift")
    ax.set_xlabel(f"first row of the scored period ({result.settings.period} rows each)")
    ax.set_ylabel("accuracy on the unseen period")
    ax.set_title(f"Backtest on {result.dataset}: which model serves the next period?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # lines fill the range
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _span(interval: list[float] | None) -> str:
    return "n/a" if interval is None else f"{interval[0]:+.2f} to {interval[1]:+.2f}"


def seeds_markdown(summaries: list[dict[str, Any]], across: dict[str, Any], command: str) -> str:
    """Several seeds' runs side by side: each margin per seed, mean, spread, verdict over seeds."""
    seeds = [str(s.get("seed")) for s in summaries]
    dataset = summaries[0]["dataset"] if summaries else "?"
    lines = [f"# Backtest on `{dataset}` over seeds {', '.join(seeds)}", "",
             f"Command: `{command}`. Post-drift accuracies and margins in points. Each run's "
             "verdict comes from its periods; the verdict over seeds needs two 95 % t intervals "
             "to agree: the runs' margins, and the periods' differences averaged over the "
             "seeds.", "",
             "| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | min to max | "
             "95 % interval over seeds | over periods (seeds averaged) | verdict |",
             "|---|" + "---|" * (len(seeds) + 5)]
    system = [s.get("system_post") for s in summaries]
    lines.append("| system accuracy | " + " | ".join(_text(v) for v in system) + " | "
                 + (f"{np.mean([v for v in system if v is not None]):.4f}"
                    if any(v is not None for v in system) else "n/a") + " | | | | |")
    for peer in PEERS:
        if peer not in across:
            continue
        m = across[peer]
        per_run = [s.get("margins", {}).get(peer) for s in summaries]
        cells = [f"{r['points']:+.2f} ({_text(r['verdict'])})" if r else "n/a" for r in per_run]
        ci, pooled = (_span(m["ci95"]), _span(m.get("pooled_ci95")))
        lines.append(f"| minus {PEER_LABELS[peer]} | " + " | ".join(cells)
                     + f" | {m['mean']:+.2f} | {m['min']:+.2f} to {m['max']:+.2f} | {ci} | "
                     f"{pooled} | {_text(m['verdict'])} |")
    best = ", ".join(f"seed {s.get('seed')}: `{s.get('best_rule')}`" for s in summaries)
    lines += ["", f"The best fixed rule is picked in hindsight per run ({best}).",
              "A lead is real only when both intervals are above zero (it survives a new seed "
              "and the periods' own noise); otherwise it is a tie."]
    return "\n".join(lines) + "\n"

"""Collect every benchmark's JSON result line into one markdown summary.

``make bench`` runs each benchmark with ``--quick`` and keeps the last stdout
line as ``benchmarks/results/<name>.quick.json``; this writes
``benchmarks/results/SUMMARY.md`` from them. Usage: ``python benchmarks/summarize.py``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

#: The figures each issue names as targets, shown first for each benchmark.
HEADLINE = {
    "sweep_scaling": ["speedup", "overhead_pct", "tune_ratio"],
    "cost_model_fidelity": ["spearman", "within_10pct", "mape"],
    "leaderboard_scale": ["query_ms_p50", "query_ms_max", "lock_errors", "lost_rows"],
    "promote_under_load": ["requests", "failed", "wrong_model", "swap_ms_p50", "swap_ms_p99", "restart_failed"],
    "drift_replay": ["system_post", "static_post", "retrain_recent_post", "arf", "regret", "regret_refit",
                     "refit_gain", "promotions"],
}


def main() -> int:
    lines = [
        "# Benchmark summary (`make bench`, every script with --quick)",
        "",
        f"Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Timings come from a shared "
        "2-core machine: compare ratios measured in one run, not absolute times across runs.",
        "",
        "| benchmark | headline figures | status |",
        "| --- | --- | --- |",
    ]
    for path in sorted(RESULTS.glob("*.quick.json")):
        name = path.name.removesuffix(".quick.json")
        try:
            result = json.loads(path.read_text().strip() or "null")
        except json.JSONDecodeError:
            result = None
        if not isinstance(result, dict):
            lines.append(f"| {name} | - | failed: see {name}.log |")
            continue
        keys = HEADLINE.get(name, list(result)[:6])
        figures = ", ".join(f"{k} = {result.get(k)}" for k in keys)
        lines.append(f"| {name} | {figures} | ok |")
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    print(json.dumps({"summary": str(RESULTS / "SUMMARY.md")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A self-contained HTML report: the leaderboard and a Pareto plot per device.

One file, no external resources (plots are inline SVG from matplotlib, CSS
is inline), so it opens offline and can be attached to a ticket. Each
device gets an accuracy-vs-latency scatter with the eligible Pareto front
drawn as a staircase and the channel's champion marked with a star.
"""

from __future__ import annotations

import html
import io
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from selection.channels.promotion import current
from selection.leaderboard.frame import leaderboard
from selection.ranking.pareto import pareto_mask
from selection.records import DEFAULT_CHANNEL
from selection.store import Store

#: Above this many points a device's plot shows a deterministic sample of
#: the dominated ones (the front and the champion are always drawn): an SVG
#: with 100,000 circles is too heavy for a browser.
MAX_PLOT_POINTS = 4000
_TABLE_COLUMNS = ["rank", "candidate_id", "slice_id", "family", "params", "accuracy",
                  "latency_ms", "size_bytes", "eligible", "ineligible_reason", "pareto"]
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px;margin-bottom:2em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f0f0f0} td.id{white-space:nowrap} tr.champion td{background:#fff4c2} tr.ineligible td{color:#999}
.meta{color:#555} svg{max-width:100%;height:auto}
"""


def _svg(frame: pd.DataFrame, device: str, champion_id: str | None) -> str:
    """Accuracy vs latency for one device, as an inline ``<svg>`` element."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    points = frame.dropna(subset=["accuracy", "latency_ms"])
    front = points[points["pareto"]]
    rest = points[~points["pareto"]]
    if len(rest) > MAX_PLOT_POINTS:
        rest = rest.sample(MAX_PLOT_POINTS, random_state=0)
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "shadow"}):
        fig = Figure(figsize=(7, 4.2))
        ax = fig.add_subplot()
        for eligible, color, label in ((True, "#4a7ebb", "eligible"), (False, "#bbbbbb", "ineligible")):
            part = rest[rest["eligible"] == eligible]
            if len(part):
                ax.scatter(part["latency_ms"], part["accuracy"], s=14, alpha=0.7, color=color, label=label)
        if len(front):
            ordered = front.sort_values("latency_ms")
            ax.step(ordered["latency_ms"], np.maximum.accumulate(ordered["accuracy"].to_numpy()),
                    where="post", color="#d9534f", linewidth=1.2)
            ax.scatter(ordered["latency_ms"], ordered["accuracy"], s=28, color="#d9534f",
                       label="Pareto front", zorder=3)
        champ = points[points["candidate_id"] == champion_id]
        if len(champ):
            ax.scatter(champ["latency_ms"], champ["accuracy"], s=220, marker="*", color="#f0ad4e",
                       edgecolors="black", label=f"champion {champion_id}", zorder=4)
        ax.set_xlabel("latency (ms, lower is better)")
        ax.set_ylabel("holdout accuracy")
        ax.set_title(f"{device}: accuracy vs latency")
        ax.grid(alpha=0.3)
        if len(points):
            ax.legend(loc="lower right", fontsize=8)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog: the svg sits inside HTML


def _front(frame: pd.DataFrame) -> pd.Series:
    """Whether each eligible row is on its device's accuracy/latency/size front."""
    flags = pd.Series(False, index=frame.index)
    for _, group in frame[frame["eligible"]].groupby("device"):
        mask = pareto_mask(group["accuracy"].to_numpy("float64", na_value=np.nan),
                           group["latency_ms"].to_numpy("float64", na_value=np.nan),
                           group["size_bytes"].astype("float64").to_numpy(na_value=np.nan))
        flags.loc[group.index] = mask
    return flags


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return html.escape(", ".join(f"{k}={v}" for k, v in value.items()))
    return html.escape(str(value))


def _table(frame: pd.DataFrame, champion_id: str | None, top: int) -> str:
    shown = pd.concat([frame[frame["rank"].notna() & (frame["rank"] <= top)],
                       frame[frame["candidate_id"] == champion_id]]).drop_duplicates("candidate_id")
    head = "".join(f"<th>{c}</th>" for c in _TABLE_COLUMNS)
    rows = []
    for _, row in shown.iterrows():
        css = "champion" if row["candidate_id"] == champion_id else ("" if row["eligible"] else "ineligible")
        # Ids and slice names are read as one token: never break them at the hyphen.
        cells = "".join(
            f'<td class="id">{_cell(row[c])}</td>' if c in ("candidate_id", "slice_id")
            else f"<td>{_cell(row[c])}</td>"
            for c in _TABLE_COLUMNS
        )
        rows.append(f'<tr class="{css}" data-candidate="{html.escape(row["candidate_id"])}">{cells}</tr>')
    hidden = len(frame) - len(shown)
    note = f'<p class="meta">{hidden} more rows not shown (see `shadow leaderboard`).</p>' if hidden else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"


def build_report(
    store: Store, *, sweep: str = "latest", channel: str = DEFAULT_CHANNEL, top: int = 50,
) -> str:
    """The report for ``sweep`` as one HTML document (a string)."""
    frame = leaderboard(store, sweep=sweep)
    champion = current(store, channel)
    champion_id = champion.candidate_id if champion else None
    shown = champion_id or "none yet"
    if champion_id is not None:
        refit_of = store.get_candidate(champion_id).refit_of
        if refit_of:  # a refit is never on the board: mark the candidate it refits
            shown, champion_id = f"{champion_id} (refit of {refit_of}, marked)", refit_of
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sweeps = ", ".join(sorted(set(frame["sweep_id"]))) or "(no sweeps)"
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>shadow-sweep report: {html.escape(sweeps)}</title><style>{_CSS}</style></head><body>",
        f"<h1>shadow-sweep leaderboard</h1><p class=\"meta\">sweep {html.escape(sweeps)} &middot; "
        f"store {html.escape(store.url)} &middot; generated {when} &middot; channel "
        f"{html.escape(channel)}: champion {html.escape(shown)}</p>",
    ]
    if frame.empty:
        parts.append("<p>No candidates yet: run <code>shadow sweep run CONFIG</code>.</p>")
    else:
        frame = frame.assign(pareto=_front(frame))
        for device, group in frame.groupby("device", sort=True):
            policy = group["policy"].iloc[0]
            parts.append(f"<h2 id=\"device-{html.escape(str(device))}\">{html.escape(str(device))}</h2>")
            parts.append(f"<p class=\"meta\">{len(group)} rows, {int(group['eligible'].sum())} eligible "
                         f"under policy {html.escape(str(policy))}, {int(group['pareto'].sum())} on the "
                         "Pareto front (accuracy, latency, size)</p>")
            parts.append(f"<figure>{_svg(group, str(device), champion_id)}</figure>")
            parts.append(_table(group, champion_id, top))
    parts.append("</body></html>")
    return "\n".join(parts)

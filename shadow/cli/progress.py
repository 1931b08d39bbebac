"""Sweep progress for people: a live bar on a terminal, plain lines otherwise.

Everything goes to stderr, so ``--format json`` output on stdout stays clean.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shadow.cli.output import note

if TYPE_CHECKING:
    from shadow.sweep import Progress


def describe(p: Progress) -> str:
    """One landed candidate in words: ok with its numbers, or failed with its error."""
    record = p.record
    result = record.devices[0] if record.devices else None
    if record.status == "ok" and result is not None and result.status == "ok":
        latency = f"{result.latency_ms:.3f}ms" if result.latency_ms is not None else "-"
        return f"ok   acc={result.accuracy:.4f} lat={latency}"
    error = record.error or (result.error if result else "") or "unknown error"
    return f"FAILED {error[:120]}"


def eta_s(p: Progress) -> float:
    remaining = p.total - p.done
    return p.elapsed_s / p.done * remaining if p.done else 0.0


class SweepProgress:
    """Context manager handed ``Progress`` events by the sweep driver."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self._bar: Any = None  # a rich.progress.Progress once live (rich is imported lazily)
        self._task = None

    def __enter__(self) -> SweepProgress:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, value, traceback)

    def start(self, total: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task("sweep", total=total, status="starting Ray tasks")

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        best = f"best {p.best_accuracy:.4f}" if p.best_accuracy is not None else "best -"
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task, completed=p.done,
                status=f"{p.failed} failed, {p.running} running, {best}",
            )
            if p.record.status != "ok":
                self._bar.console.print(f"{p.record.candidate_id} {describe(p)}")
            return
        width = len(str(p.total))
        note(
            f"[{p.done:>{width}}/{p.total}] {p.record.candidate_id} {p.record.slice_id:<20} "
            f"{describe(p)} | {best} | {p.running} running | {p.elapsed_s:.0f}s elapsed, "
            f"~{eta_s(p):.0f}s left"
        )

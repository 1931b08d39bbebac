"""Live evidence: what the champion and its shadows answered on real requests, and the labels.

Standard library only (``sqlite3``), so the edge runtime, ``shadow serve`` and
the CLI share one log without the store: one SQLite file per channel
(``$SHADOW_HOME/live/<channel>.db``, WAL), written by one batching writer thread
per process (:class:`PredictionLog`). May import ``selection.errors`` only; the
runtime imports this, never the other way round.

- ``db``: the file, its schema and how it is opened;
- ``log``: :class:`PredictionLog`, batched fsync'd writes and ``flush``/``close``;
- ``feedback``: labels that come back (parsed, checked, applied all or nothing);
- ``ingest``: label files (CSV/JSONL) and prediction logs copied from edge devices;
- ``board``: champion and shadows on the same labelled requests (SQL), Wilson
  intervals, and the paired outcomes the gate judges on.
"""

from selection.live.db import live_log_path
from selection.live.feedback import Feedback, FeedbackResult, apply_feedback, parse_feedback
from selection.live.log import ModelRef, PredictionLog

__all__ = ["Feedback", "FeedbackResult", "ModelRef", "PredictionLog", "apply_feedback",
           "live_log_path", "parse_feedback"]

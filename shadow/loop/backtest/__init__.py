"""``shadow backtest``: the loop's controller over a dataset's history, in simulated time.

- ``plan``: the settings, the period boundaries and the simulated clock;
- ``preset``: the drift replay's sweep file for any dataset (slices measured in periods);
- ``runner``: the walk (append a period, one controller pass, score the next period);
- ``rules``: what the system is compared with (fixed retraining rules, oracles, ablations);
- ``baselines``: river's online learners and the naive baselines;
- ``report``: the summary (the drift replay's keys), the markdown table and the plot.

The controller is :func:`shadow.loop.controller.run_once`, unchanged: what a user measures on
their history is what runs live. Modules here may import ``selection``, ``shadow.data``,
``shadow.sweep`` and ``shadow.loop``; never ``shadow.cli``.
"""

from shadow.loop.backtest.plan import BacktestSettings, plan_boundaries
from shadow.loop.backtest.preset import replay_config
from shadow.loop.backtest.report import backtest_record, markdown, plot, summarize
from shadow.loop.backtest.runner import BacktestResult, run_backtest

__all__ = ["BacktestResult", "BacktestSettings", "backtest_record", "markdown", "plan_boundaries", "plot",
           "replay_config", "run_backtest", "summarize"]

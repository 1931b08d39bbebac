"""The continuous shadow-training loop: watch the champion, decide when to retrain, and drive it.

This package owns the loop's pieces:

- ``scorecard`` scores each new labelled batch with the channel's production model *as deployed*
  (the exact file and input handling an edge app uses) and keeps a running window of its accuracy;
- ``drift`` watches the champion's error stream (and optionally each feature) for drift;
- ``triggers`` turns scorecards and drift signals into a retrain decision;
- ``controller`` runs one pass of the loop end to end (``shadow watch --once``): whether to
  sweep, the sweep, and resuming a pass that stopped; ``decide`` is the pass's last step (the
  challenger, the gate, then promote or propose), ``pass_work`` the state the two share;
- ``track_record`` keeps score of how each way of choosing did on the data after it chose;
- ``journal``, ``lock``, ``outcome``, ``proposals``, ``deployed``: the pass's events and their
  invariant, the one-controller-per-channel lock, a pass's result, ``mode = "propose"``'s
  governance, and scoring a model as an edge app runs it;
- ``backtest`` runs this controller over a dataset's history in simulated time.

Import rules: modules here may import ``selection`` (the store, the runtime, validation, errors),
``shadow.data`` and ``shadow.sweep`` (the controller runs sweeps; a sweep file's ``[watch]`` table is
parsed in ``shadow.sweep.watch_config``); they never import ``shadow.cli`` (the CLI imports the loop).
"""

"""The champion/challenger gate: is a challenger truly better than the champion?

``decision`` decides (and ``promote_through_gate`` promotes on a pass), ``checks`` are its
individual checks, ``policy`` holds its thresholds (``GatePolicy``), ``record`` the typed
decision it returns and stores (``GateDecision``), ``paired`` loads the rows both models
answered, ``rescore`` scores an artifact on them, ``stats`` holds the exact McNemar test.
Imports go one way: decision -> checks -> policy, record.
May import: ``selection.store``, ``selection.ranking``, ``selection.leaderboard``,
``selection.channels`` (to promote on a pass), ``selection.artifacts``.
"""

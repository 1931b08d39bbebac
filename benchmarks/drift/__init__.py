"""Pieces of the drift replay benchmark (``benchmarks/drift_replay.py``).

Scripts, not product: each module owns one part of the replay.

- :mod:`drift.visible`: the rows visible at a boundary as a catalog dataset;
- :mod:`drift.shadow_step`: one boundary of the shadow system (sweep, gate, promote);
- :mod:`drift.scoring`: ONNX models (the production file, candidates) on unseen rows;
- :mod:`drift.online`: river's online learners and the naive baselines;
- :mod:`drift.report`: means, regret, the markdown table, the plot.
"""

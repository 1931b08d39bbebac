"""A controller whose passes keep failing backs off (doubling waits) and recovers its pace."""

from __future__ import annotations

import threading
from pathlib import Path

from selection.home import Home
from selection.store import Store
from shadow.loop.controller import MAX_BACKOFF, run_forever
from shadow.sweep import load_config
from tests.shadow.conftest import separable_frame, write_dataset

SWEEP = """\
[sweep]
name = "backoff"
dataset = "{dataset}"

[holdout]
rows = 50

[[slices]]
strategy = "all"

[model]
family = "mlp"

[watch]
poll_s = 0.05

[watch.triggers]
new_rows = 10
"""


def test_failing_passes_wait_twice_as_long_each_time(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path / "catalog", separable_frame(n=200), name="toy")
    config_path = tmp_path / "sweep.toml"
    config_path.write_text(SWEEP.format(dataset=manifest))
    config = load_config(config_path)
    (manifest.parent / "data.csv").unlink()  # every pass now fails to read the dataset
    home = Home(tmp_path / "home")
    stop = threading.Event()
    timer = threading.Timer(2.5, stop.set)
    timer.start()
    with Store.open(home) as store:
        passes = run_forever(config, store, home, stop)
        errors = store.list_events(channel="production", kinds="error")
    timer.cancel()
    waits = [e.evidence["wait_s"] for e in reversed(errors)]  # oldest first
    assert passes == len(errors) >= 4
    assert [e.evidence["failures_in_a_row"] for e in reversed(errors)] == list(range(1, passes + 1))
    expected = [0.05 * min(2 ** k, MAX_BACKOFF) for k in range(passes)]
    assert waits == expected  # 0.05, 0.1, 0.2, 0.4, ...: a broken store is not hammered
    assert "carries on in" in errors[0].reason and "data.csv" in errors[0].evidence["error"]

"""The warm start for real: the champion trained further on the newest rows, as a candidate.

Real sweeps on Ray (the session's cluster), real training and export: with no champion the
warm start is skipped; after a promotion the next sweep continues the champion (its weights
read back from its stored graph) and stores that as a ranked candidate; its refit continues
the same model on the holdout too, and a warm start of a warm start scales the learning rate
once; a bad [warm_start] table is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from selection.channels.promotion import promote
from selection.store import Store
from shadow.cli.main import main
from shadow.models.weights import PREFIX, WeightsError, load_onnx_weights
from shadow.sweep import load_config
from shadow.sweep.prepare import prepare_sweep
from shadow.sweep.refit import refit_candidate
from shadow.sweep.warm_start import LINEAGE_KEY, plan_warm_start
from tests.shadow.conftest import separable_frame, write_dataset
from tests.shadow.sweep.test_ensemble import CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sweep(config: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["sweep", "run", str(config), "--home", str(home), "--format", "json",
                 "--quiet"]) == 0
    return dict(json.loads(capsys.readouterr().out))


def _weights(model: bytes) -> dict[str, np.ndarray]:
    graph = onnx.load_model_from_string(model).graph
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer
            if i.name.startswith(PREFIX)}


def test_a_sweep_continues_its_champion_and_the_refit_continues_it_too(
        tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = write_dataset(tmp_path / "catalog", separable_frame(600, seed=4))
    config = tmp_path / "sweep.toml"
    config.write_text(CONFIG.format(dataset=dataset, ensemble="[warm_start]\nrows = 200\n"
                                                               "epochs = 2\nlr_scale = 0.5\n"))
    home = tmp_path / "home"
    first = _sweep(config, home, capsys)
    assert first["warm_start"] == "skipped: channel 'production' has no champion yet"
    assert first["planned"] == first["ok"] == 4, first  # the grid alone
    with Store.open(home) as store:
        promote(store, first["best_candidate_id"], reason="test")
        champion = store.get_candidate(first["best_candidate_id"])

    second = _sweep(config, home, capsys)
    assert second["planned"] == second["ok"] == 5, second
    with Store.open(home) as store:
        warm = store.get_candidate(second["warm_start"])
        assert warm.sweep_id == second["sweep_id"] and warm.slice_id == "warm-start-200"
        assert warm.family == champion.family
        # Its own epochs (no fresh model's step floor or scouting run), a smaller learning rate.
        assert warm.params == {**champion.params, "epochs": 2, "min_steps": 0, "early_stopping": 0,
                               "lr": champion.params["lr"] * 0.5}
        lineage = warm.lineage[LINEAGE_KEY]
        assert (lineage["from"], lineage["from_sha256"], lineage["rows"]) == (
            champion.candidate_id, champion.onnx_sha256, 200)
        assert warm.lineage["slice_rows"] == 200 and warm.devices[0].status == "ok"
        # Trained further from the champion's weights: same shapes, other values.
        before = _weights(store.artifacts.read_verified(champion.onnx_sha256 or ""))
        after = _weights(store.artifacts.read_verified(warm.onnx_sha256 or ""))
        assert before.keys() == after.keys()
        assert any(not np.array_equal(before[k], after[k]) for k in before)

        refit = refit_candidate(store, warm.candidate_id)
        assert refit.refit_of == warm.candidate_id and refit.status == "ok"
        assert refit.lineage[LINEAGE_KEY] == lineage  # what the next warm start continues
        assert refit.lineage["refit"]["rows"] == 200 + 120  # its rows plus the holdout
        # The refit saw the holdout: with no new rows since, a warm start from it would be
        # scored on rows it was trained on, so there is none (and the reason says why).
        promote(store, refit.candidate_id, reason="test")
        settings = load_config(config).warm_start
        assert settings is not None
        plan = plan_warm_start(store, prepare_sweep(load_config(config)), settings)
        assert plan.spec is None and plan.skipped is not None
        assert "inside this sweep's holdout (from row 480)" in plan.skipped
        promote(store, warm.candidate_id, reason="test")  # the warm start itself: rows < 480

    third = _sweep(config, home, capsys)
    with Store.open(home) as store:
        again = store.get_candidate(third["warm_start"])
        assert again.lineage[LINEAGE_KEY]["from"] == warm.candidate_id
        # Continued from a warm start, with the first champion's params: lr scaled once.
        assert again.params["lr"] == champion.params["lr"] * 0.5


def test_a_module_that_does_not_reproduce_its_graph_is_refused() -> None:
    """State outside parameters and buffers (a scale kept as a plain attribute) is not in
    the graph's tensors: loaded, the module would silently be another model."""
    import torch
    from torch import nn

    from shadow.models.export import export_onnx

    class Scaled(nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale = scale  # not a buffer: the exporter folds it into a constant
            self.linear = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x * self.scale)

    torch.manual_seed(0)
    rows = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    model = export_onnx(Scaled(5.0), rows)
    load_onnx_weights(Scaled(5.0), model, check_rows=rows)  # the same model: fine
    with pytest.raises(WeightsError, match="does not reproduce its outputs"):
        load_onnx_weights(Scaled(1.0), model, check_rows=rows)


def test_weights_that_do_not_fit_the_module_are_refused_by_name() -> None:
    import torch

    from shadow.models import get_family
    from shadow.models.export import export_onnx

    family = get_family("mlp")
    small = family.validate({"width": 4}, "test")
    big = family.validate({"width": 8}, "test")
    rows = np.zeros((4, 3), dtype=np.float32)
    model = export_onnx(family.build(small, 3, 2, torch.zeros(3), torch.ones(3)), rows)
    with pytest.raises(WeightsError, match=r"has shape \[4, 3\] in the graph but \[8, 3\]"):
        load_onnx_weights(family.build(big, 3, 2, torch.zeros(3), torch.ones(3)), model)


def test_a_bad_warm_start_table_is_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    dataset = write_dataset(tmp_path / "catalog", separable_frame(600, seed=4))
    config = tmp_path / "sweep.toml"
    config.write_text(CONFIG.format(dataset=dataset, ensemble="[warm_start]\nlr_scale = 0\n"))
    code = main(["sweep", "run", str(config), "--home", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "lr_scale" in err, err
    assert not (tmp_path / "home" / "shadow.db").exists()

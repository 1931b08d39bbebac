"""Baselines in a sweep: the class prior on every slice, beside the sweep's own candidates.

The prior family alone (it learns the class frequencies, exports and serves like any model);
``[model] baselines`` validated in one line; planned on every slice by the grid and the search
planners (never told to a study, counted, skipped on resume); a real sweep on Ray stores them and
ranks them; the track record keys each as an expert of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from selection.channels.promotion import promote
from selection.home import Home
from selection.records import CandidateRecord, SliceRecord
from selection.store import Store
from shadow.cli.main import main
from shadow.errors import ConfigError
from shadow.loop.track_record import HOLDOUT, expert_picks, ranked_candidates
from shadow.models import get_family
from shadow.models.export import export_onnx, verify_onnx
from shadow.models.training import train
from shadow.sweep import load_config
from shadow.sweep.config import WarmStartConfig, config_from_dict
from shadow.sweep.ensemble import choose_members
from shadow.sweep.prepare import WithBaselines, make_planner, prepare_sweep
from shadow.sweep.warm_start import plan_warm_start
from tests.shadow.conftest import separable_frame, write_dataset
from tests.shadow.sweep.test_sweep_search import BASE, with_search


def test_the_prior_learns_the_class_frequencies_whatever_the_features() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = rng.choice(3, size=400, p=[0.2, 0.5, 0.3])
    prior = get_family("prior")
    model = train(prior, prior.validate({}, "t"), x, y, 3, 0).module
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.from_numpy(-x * 100)), dim=1).numpy()
    assert np.allclose(probabilities, np.bincount(y, minlength=3) / len(y), atol=1e-3)
    assert verify_onnx(export_onnx(model, x[:8]), model, x[:8]) < 1e-6


@pytest.mark.parametrize(("baselines", "fragment"), [
    (["majority"], "'majority' is not a baseline family; the baselines are 'prior'"),
    (["prior", "prior"], "'prior' is listed twice"),
    ("prior", "'baselines' must be"),
])
def test_bad_baselines_are_one_line(baselines: object, fragment: str) -> None:
    raw = {**BASE, "model": {**BASE["model"], "baselines": baselines}}
    with pytest.raises(ConfigError, match=fragment):
        config_from_dict(raw)


def test_both_planners_hand_out_the_baselines_once_and_never_tell_a_study() -> None:
    grid = prepare_sweep(config_from_dict({**BASE, "model": {**BASE["model"], "baselines": ["prior"]}}))
    assert [(c.slice_id, c.family) for c in grid.baselines] == [("recent-730", "prior"),
                                                                ("recent-2000", "prior")]
    assert grid.n_planned == len(grid.candidates) + 2
    assert {c.family for c in make_planner(grid, []).ready()} == {"mlp", "prior"}

    searched = prepare_sweep(config_from_dict({**with_search(), "model": {**BASE["model"],
                                                                          "baselines": ["prior"]}}))
    planner = make_planner(searched, [])
    assert isinstance(planner, WithBaselines) and planner.total == 4 * 2 + 2
    first = planner.ready()
    assert [c.family for c in first].count("prior") == 2
    for spec in first:  # a baseline's result is not a trial: telling it must not reach Optuna
        planner.tell(spec, CandidateRecord(spec.candidate_id, searched.sweep_id, spec.slice_id,
                                           spec.family, spec.params, 5, "ok",
                                           lineage={"trial": spec.trial, "validation_accuracy": 0.6}))
    told = [t for s in planner.search.studies.values() for t in s.trials if t.state.is_finished()]
    assert len(told) == 4  # the four trials of the first generation, not the two baselines
    assert all(c.family == "mlp" for c in planner.ready())
    # Resumed with the baselines stored: they are not handed out again, and still counted.
    stored = [CandidateRecord(c.candidate_id, searched.sweep_id, c.slice_id, c.family, c.params, 5,
                              "ok") for c in first if c.family == "prior"]
    resumed = make_planner(searched, stored)
    assert resumed.total == 10 and all(c.family == "mlp" for c in resumed.ready())


def test_a_baseline_is_an_expert_of_its_own() -> None:
    slices = [SliceRecord(sweep_id="s", slice_id="all", strategy="all", params={}, n_rows=10,
                          rows_sha256="x")]
    ranked = [("c-prior", "all", 1, "prior"), ("c-mlp", "all", 2, None)]
    assert expert_picks(ranked, slices) == {HOLDOUT: "c-prior", "all/prior": "c-prior", "all": "c-mlp"}


def _sweep_with_prior(tmp_path: Path, frame: pd.DataFrame, capsys: pytest.CaptureFixture[str],
                      ) -> tuple[Path, dict]:
    from tests.shadow.sweep.test_ensemble import CONFIG

    dataset = write_dataset(tmp_path / "catalog", frame)
    config = tmp_path / "sweep.toml"
    config.write_text(CONFIG.format(dataset=dataset, ensemble="").replace(
        'family = "mlp"', 'family = "mlp"\nbaselines = ["prior"]'))
    home = tmp_path / "home"
    capsys.readouterr()
    assert main(["sweep", "run", str(config), "--home", str(home), "--format", "json", "--quiet"]) == 0
    return home, json.loads(capsys.readouterr().out)


@pytest.mark.integration
def test_a_sweep_with_the_prior_stores_and_ranks_it_on_every_slice(
        tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str]) -> None:
    home, summary = _sweep_with_prior(tmp_path / "signal", separable_frame(600, seed=4), capsys)
    assert summary["planned"] == summary["ok"] == 4 + 2, summary
    with Store.open(home) as store:
        priors = [c for c in store.list_candidates(summary["sweep_id"]) if c.family == "prior"]
        assert sorted(c.slice_id for c in priors) == ["all", "recent-150"]
        ranked = ranked_candidates(store, summary["sweep_id"])
    # On a learnable stream the MLPs beat the prior, which is still ranked, as a baseline.
    assert ranked[0][3] is None and {r[3] for r in ranked} == {None, "prior"}
    assert max(c.device("host-cpu").accuracy for c in priors) < summary["best_accuracy"]  # type: ignore[union-attr]
    with Store.open(home) as store:
        # Never an ensemble member, even when the ensemble could take every candidate.
        members = choose_members(store, summary["sweep_id"], top_k=6, device="host-cpu")
        assert len(members) == 4 and {m.family for m in members} == {"mlp"}
        # A prior champion is not continued by a warm start: nothing on the features to train.
        promote(store, priors[0].candidate_id, reason="test")
        prepared = prepare_sweep(load_config(home.parent / "sweep.toml"), home=Home(home))
        plan = plan_warm_start(store, prepared, WarmStartConfig())
    assert plan.spec is None and plan.skipped is not None and "is a baseline (prior" in plan.skipped

    # Coin tosses: the prior predicts the commonest class, and scores its share of the holdout.
    rng = np.random.default_rng(7)
    noise = pd.DataFrame({"x0": rng.normal(size=600), "x1": rng.normal(size=600),
                          "label": (rng.random(600) < 0.6).astype(int)})
    home, summary = _sweep_with_prior(tmp_path / "noise", noise, capsys)
    with Store.open(home) as store:
        priors = [c for c in store.list_candidates(summary["sweep_id"]) if c.family == "prior"]
    holdout = noise["label"].to_numpy()[-120:]
    for prior in priors:
        assert prior.device("host-cpu").accuracy == pytest.approx(float((holdout == 1).mean()))  # type: ignore[union-attr]


def test_the_prior_runs_on_an_emulated_npu_like_any_model() -> None:
    from shadow.devices import get_device
    from shadow.devices.edge import qnn

    if not qnn.emulator_status()[0]:
        pytest.skip("the QNN HTP emulator is not available here")
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (rng.random(300) < 0.6).astype(np.int64)
    prior = get_family("prior")
    model = train(prior, prior.validate({}, "t"), x, y, 2, 0).module
    result = get_device("snapdragon-8-gen-2-htp").run(export_onnx(model, x[:8]), x, y, x[:100]).result
    assert result.status == "ok" and result.accuracy == pytest.approx(float((y == 1).mean()))
    # Every check row agrees with the CPU run of the same quantized model: the commonest class.
    assert result.extra["emulator_cpu_agreement"] == 1.0 and not result.extra["has_fallback"]

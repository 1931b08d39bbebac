"""The loop with baselines: every gate event records the baseline check; rules ignore baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selection.records import CandidateRecord, DeviceResult
from selection.store import Store
from shadow.loop.backtest.rules import slice_bests
from tests.bad_inputs.contract import run_cli


def _record(cid: str, slice_id: str, family: str, accuracy: float) -> CandidateRecord:
    return CandidateRecord(cid, "s", slice_id, family, {}, 0, "ok",
                           devices=(DeviceResult(device="host-cpu", status="ok", accuracy=accuracy),))


def test_a_fixed_rule_retrains_the_sweeps_own_model_not_its_baseline() -> None:
    records = [_record("c-mlp", "all", "mlp", 0.52), _record("c-prior", "all", "prior", 0.55)]
    assert slice_bests(records) == {"all": "c-prior"}
    assert slice_bests(records, frozenset({"prior"})) == {"all": "c-mlp"}


@pytest.mark.slow
@pytest.mark.integration
def test_the_gate_event_says_whether_the_challenger_beat_the_baseline(
    tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str],
) -> None:
    from selection.home import Home
    from tests.shadow.conftest import write_dataset
    from tests.shadow.loop.test_backtest import SWEEP, drifting_frame

    manifest = write_dataset(tmp_path / "catalog", drifting_frame(n=600), name="flip")
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(dataset=manifest).replace(
        'family = "mlp"', 'family = "mlp"\nbaselines = ["prior"]'))
    out = tmp_path / "bt"
    outcome = run_cli(capsys, "backtest", str(config), "--period", "100", "--out", str(out),
                      "--no-online", "--no-ablations", "--format", "json")
    assert outcome.code == 0, outcome.stderr
    with Store.open(Home(out / "home")) as store:
        gates = list(reversed(store.list_events(channel="production", kinds="gate")))
        assert gates
        for gate in gates:
            check = gate.evidence["selection"]["baseline"]
            assert check["family"] == "prior" and check["trained_candidates"] >= 2
            # The learnable stream: the trained challenger beats the prior of all history...
            if check["kept"] == "challenger":
                assert gate.candidate_id != check["baseline"] and check["p_value"] < check["alpha"]
            else:  # ... or, right after the drift, it does not, and the prior is judged instead
                assert gate.candidate_id == check["baseline"] and check["p_value"] >= check["alpha"]
                assert store.get_candidate(check["baseline"]).family == "prior"
        assert any(g.evidence["selection"]["baseline"]["kept"] == "challenger" for g in gates)
    summary = json.loads(outcome.stdout)
    assert summary["sweeps"] == len(gates)

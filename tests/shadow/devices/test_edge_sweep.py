"""A real sweep with an emulated edge device: rows per (candidate, device), stored compiled binaries."""

from __future__ import annotations

import json

import onnx
import pytest

from selection.leaderboard.frame import leaderboard
from selection.store import Store
from shadow.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = """
[sweep]
name = "edge"
dataset = "toy"
devices = ["host-cpu", "snapdragon-8-gen-2-htp"]
seed = 1

[holdout]
rows = 100

[[slices]]
strategy = "all"

[model]
family = "mlp"

[model.params]
width = 4
hidden_layers = 1
epochs = 3
"""


def test_sweep_adds_a_row_per_candidate_and_device(tmp_path, toy_catalog, ray_local, capsys):
    config = tmp_path / "edge.toml"
    config.write_text(CONFIG)
    home = tmp_path / "home"
    code = main(["sweep", "run", str(config), "--home", str(home), "--format", "json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["ok"] == 1
    with Store.open(home, create=False) as store:
        board = leaderboard(store)
        candidates = [store.get_candidate(cid) for cid in sorted(set(board["candidate_id"]))]
        edge = [c.device("snapdragon-8-gen-2-htp") for c in candidates]
        binaries = [store.artifacts.read_verified(r.extra["compiled_sha256"]) for r in edge]
        qdq = [store.artifacts.read_verified(r.artifact_sha256) for r in edge]
    assert len(board) == 2 and set(board["device"]) == {"host-cpu", "snapdragon-8-gen-2-htp"}
    assert set(board["status"]) == {"ok"}
    emulators = dict(zip(board["device"], board["emulator"]))
    assert emulators == {"host-cpu": "none", "snapdragon-8-gen-2-htp": "qnn-htp"}
    # What a new user reads on the board: the device's numerics, emulator agreement, placement.
    by_device = board.set_index("device")
    assert by_device.loc["snapdragon-8-gen-2-htp", "numerics"] == "a8w8"
    assert by_device.loc["snapdragon-8-gen-2-htp", "placement"] == "npu"
    assert 0.9 <= by_device.loc["snapdragon-8-gen-2-htp", "emulator_agreement"] <= 1.0
    assert by_device.loc["host-cpu", "numerics"] == "fp32" and by_device.loc["host-cpu", "placement"] is None
    capsys.readouterr()
    assert main(["leaderboard", "--home", str(home)]) == 0
    table = capsys.readouterr().out
    assert {"numerics", "emulator_agreement", "placement"} <= set(table.splitlines()[0].split())
    for result, binary, model in zip(edge, binaries, qdq):
        assert result.emulator == "qnn-htp" and result.extra["numerics"] == "a8w8"
        assert result.extra["check_rows"] == 100 and result.extra["eligible"] is True
        assert result.latency_ms == result.extra["cost_model"]["total_ms"] > 0
        assert any(n.op_type == "EPContext" for n in onnx.load_model_from_string(binary).graph.node)
        assert any(n.op_type == "QuantizeLinear" for n in onnx.load_model_from_string(model).graph.node)
        assert result.predictions_sha256


def test_a_refit_is_quantized_and_compiled_for_the_device_it_ships_to(tmp_path, toy_catalog, ray_local,
                                                                      capsys):
    config = tmp_path / "edge.toml"
    config.write_text(CONFIG)
    home = tmp_path / "home"
    assert main(["sweep", "run", str(config), "--home", str(home), "--format", "json", "--quiet"]) == 0
    capsys.readouterr()
    device = "snapdragon-8-gen-2-htp"
    code = main(["promote", "--best", "--device", device, "--refit", "--home", str(home),
                 "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    shipped = json.loads(out)
    with Store.open(home, create=False) as store:
        refit = store.get_candidate(shipped["candidate_id"])
        parent = store.get_candidate(shipped["refit_of"])
        result = refit.device(device)
        binary = store.artifacts.read_verified(result.extra["compiled_sha256"])
    # The refit ran the whole device path again: QDQ a8w8 on the emulator, a compiled binary.
    assert refit.refit_of == parent.candidate_id and result.status == "ok"
    assert result.emulator == "qnn-htp" and result.extra["numerics"] == "a8w8"
    assert result.extra["eligible"] is True and len(binary) > 0
    # What ships is the refit's own artifact for that device, not the parent's.
    assert shipped["sha256"] == result.artifact_sha256 != parent.device(device).artifact_sha256
    model = home / "channels" / "production" / "model.onnx"
    graph = onnx.load_from_string(model.read_bytes()).graph
    # The production model is the device's: QDQ a8w8, and the manifest says for which device.
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    manifest = json.loads((home / "channels" / "production" / "manifest.json").read_text())
    assert manifest["device"] == device and manifest["sha256"] == result.artifact_sha256
    assert manifest["metrics"]["extra"]["numerics"] == "a8w8" and manifest["metrics"]["extra"]["soc"] == "SM8550"
    assert set(refit.refit["checks"]) == {"host-cpu", device}

"""Bad ``[model] family`` import paths and families that break the contract: one line, exit 2, nothing stored.

Every case is refused while the sweep is planned, before Ray starts (the one
that only the Ray workers reveal is in ``tests/shadow/models/test_user_family_sweep.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_inputs.contract import assert_user_error, run_cli, shadow, snapshot
from tests.shadow.conftest import separable_frame, write_dataset

HERE = "tests.shadow.models.user_families"

#: family value -> a fragment of the one line it must print.
CASES: dict[str, str] = {
    "a:b:c": "is not an import path; write it as \"package.module:ClassName\"",
    "no_such_pkg_xyz.models:Family": "no module named 'no_such_pkg_xyz'; install the package that holds it",
    f"{HERE}:Nope": "has no attribute 'Nope'; check the spelling after the colon",
    f"{HERE}:not_a_family": "is a function, not a model family",
    f"{HERE}:NoBuild": "does not implement build",
    f"{HERE}:NoEpochs": "params lacks 'epochs', which the training loop reads",
    f"{HERE}:BuildsAList": "build() returned a list, not a torch.nn.Module",
    f"{HERE}:WrongOutput": "it must return one tensor of logits shaped (batch, n_classes) = (16, 2)",
    f"{HERE}:VectorLoss": "loss() returned (16,); it must return a scalar tensor",
    f"{HERE}:NotExportable": "the module cannot be exported to ONNX",
}


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("catalog"), separable_frame())


def _config(folder: Path, dataset: Path, family: str) -> Path:
    config = folder / "sweep.toml"
    config.write_text(
        f'[sweep]\ndataset = "{dataset}"\n[holdout]\nrows = 100\n[[slices]]\nstrategy = "recent"\nrows = 100\n'
        f'[model]\nfamily = "{family}"\n[model.params]\nepochs = 1\n', encoding="utf-8",
    )
    return config


@pytest.mark.parametrize("family", sorted(CASES))
def test_bad_model_family(family: str, prepared: Path, toy_manifest: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(prepared)
    result = run_cli(capsys, "sweep", "run", str(_config(tmp_path, toy_manifest, family)),
                     "--home", str(prepared), "--quiet")
    assert_user_error(result, f"family {family!r}", CASES[family])
    assert snapshot(prepared) == before


def test_an_unexportable_family_from_a_real_process_prints_one_line(
    prepared: Path, toy_manifest: Path, tmp_path: Path,
) -> None:
    """What torch prints while an export fails (its partial graph, warnings) must not reach the user."""
    before = snapshot(prepared)
    result = shadow("sweep", "run", str(_config(tmp_path, toy_manifest, f"{HERE}:NotExportable")),
                    "--home", str(prepared), "--quiet")
    assert_user_error(result, "cannot be exported to ONNX (GuardOnDataDependentSymNode",
                      "user_families.py:")
    assert snapshot(prepared) == before

"""A real sweep on the test Ray cluster with a family defined outside ``shadow/``, and one its workers cannot import.

The session's two-node cluster has the repository root on its workers' path
(Ray adds the driver's working directory), as a user's project folder would be;
a folder added to the driver's ``sys.path`` only is what a package installed on
the laptop alone looks like to the nodes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from selection.store import Store
from tests.bad_inputs.contract import assert_user_error, run_cli, snapshot

EXAMPLE = "examples.custom_family.smoothed_mlp:SmoothedMLP"


def _sweep_file(tmp_path: Path, family: str, params: str = "") -> Path:
    config = tmp_path / "sweep.toml"
    config.write_text(
        '[sweep]\nname = "own-family"\ndataset = "toy"\nseed = 1\n[holdout]\nrows = 100\n'
        '[[slices]]\nstrategy = "recent"\nrows = 200\n'
        f'[model]\nfamily = "{family}"\n[model.params]\nepochs = 3\n{params}\n'
    )
    return config


@pytest.mark.slow
def test_a_sweep_trains_a_family_from_outside_shadow_on_the_cluster(
    ray_local: None, toy_catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = _sweep_file(tmp_path, EXAMPLE, "label_smoothing = [0.0, 0.1]\nwarmup_fraction = 0.2")
    home = tmp_path / "home"
    result = run_cli(capsys, "sweep", "run", str(config), "--home", str(home), "--quiet", "--format", "json")
    assert result.code == 0, result.stderr
    with Store.open(home, create=False) as store:
        records = store.list_candidates(store.latest_sweep_id())
    assert len(records) == 2
    assert {r.status for r in records} == {"ok"}, [r.error for r in records]
    # The path is what is stored (and what each worker resolved), with the family's own params.
    assert {r.family for r in records} == {EXAMPLE}
    assert sorted(r.params["label_smoothing"] for r in records) == [0.0, 0.1]
    assert all(r.lineage["worker"].get("node_id") for r in records)  # trained in Ray workers
    # Learned something on a separable toy set, through the family's own loss and schedule.
    assert min(r.devices[0].accuracy or 0.0 for r in records) > 0.8


@pytest.mark.slow
def test_a_family_only_the_driver_can_import_is_refused_before_anything_is_stored(
    ray_local: None, toy_catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    laptop_only = tmp_path / "site"
    laptop_only.mkdir()
    (laptop_only / "laptop_only_family.py").write_text(
        "from tests.shadow.models.user_families import Tiny\n\n\nclass LaptopOnly(Tiny):\n"
        "    name = 'laptop-only'\n"
    )
    monkeypatch.syspath_prepend(str(laptop_only))  # the driver sees it; the running workers do not
    home = tmp_path / "home"
    with Store.open(home):
        pass
    before = snapshot(home)
    result = run_cli(capsys, "sweep", "run", str(_sweep_file(tmp_path, "laptop_only_family:LaptopOnly")),
                     "--home", str(home), "--quiet")
    assert_user_error(result, "family 'laptop_only_family:LaptopOnly': Ray node", "cannot use it",
                      "no module named 'laptop_only_family'", "ray job submit --working-dir .")
    assert snapshot(home) == before

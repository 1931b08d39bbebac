"""Fixtures for the producer side: small real datasets written as catalog entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selection.store import Store
from shadow.cli.main import main


def write_dataset(
    folder: Path, frame: pd.DataFrame, *, name: str = "toy", target: str = "label",
    features: list[str] | None = None,
) -> Path:
    """A catalog entry ``folder/name/dataset.toml`` over ``frame`` saved as CSV."""
    entry = folder / name
    entry.mkdir(parents=True, exist_ok=True)
    frame.to_csv(entry / "data.csv", index=False)
    feats = features if features is not None else [c for c in frame.columns if c != target]
    listed = ", ".join(f'"{f}"' for f in feats)
    (entry / "dataset.toml").write_text(
        f'name = "{name}"\ntarget = "{target}"\nfeatures = [{listed}]\n'
        f'[source]\nkind = "csv"\npath = "data.csv"\n'
    )
    return entry / "dataset.toml"


def separable_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Two features, label = x0 + x1 > 0: a model that learns scores well above chance."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "label": (x.sum(axis=1) > 0).astype(int)})


@pytest.fixture
def toy_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalog folder with one valid dataset 'toy', put first on $SHADOW_CATALOG."""
    catalog = tmp_path / "catalog"
    write_dataset(catalog, separable_frame())
    monkeypatch.setenv("SHADOW_CATALOG", str(catalog))
    return catalog


SMALL_NOAA = """
[sweep]
name = "e2e"
dataset = "noaa-weather"
seed = 3

[holdout]
rows = 365

[[slices]]
strategy = "recent"
rows = 730

[[slices]]
strategy = "window"
size = 1000
stride = 4000
count = 2

[model]
family = "mlp"

[model.params]
width = [8, 16]
hidden_layers = 1
epochs = 3
"""


@pytest.fixture(scope="session")
def swept(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> tuple[Path, dict]:
    """One real sweep on NOAA data, shared by the tests that need a populated store."""
    home = tmp_path_factory.mktemp("home")
    config = home.parent / "small-noaa.toml"
    config.write_text(SMALL_NOAA)
    code = main(["sweep", "run", str(config), "--home", str(home), "--format", "json", "--quiet"])
    assert code == 0
    with Store.open(home, create=False) as store:
        sweep_id = store.latest_sweep_id()
    return home, {"sweep_id": sweep_id, "config": config}

"""Fixtures for the producer side: small real datasets written as catalog entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


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

"""Earlier labels as features, where a manifest declares each row's label known before the next:
the manifest's rules, the derived columns, the signature that carries them, the runtime's check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selection.runtime.errors import BadInputError
from selection.runtime.inputs import parse_rows
from selection.signature import ModelSignature, SignatureError
from shadow.data.catalog import find_manifest
from shadow.data.frames import with_label_lags
from shadow.data.loader import load_dataset
from shadow.data.manifest import DatasetManifest
from shadow.errors import ConfigError

BASE = {"name": "toy", "target": "y", "features": ["a", "b"],
        "source": {"kind": "csv", "path": "toy.csv"}}


def _manifest(tmp_path: Path, **lagged: object) -> DatasetManifest:
    return DatasetManifest.from_dict({**BASE, "lagged_labels": lagged}, tmp_path / "dataset.toml")


def test_lags_are_the_labels_of_the_rows_before_and_minus_one_before_the_first() -> None:
    values = np.arange(10, dtype=np.float32).reshape(5, 2)
    labels = np.array([1, 0, 2, 2, 1])
    out = with_label_lags(values, labels, 2)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert out[:, :2].tolist() == values.tolist()
    assert out[:, 2].tolist() == [-1, 1, 0, 2, 2]  # label_lag_1
    assert out[:, 3].tolist() == [-1, -1, 1, 0, 2]  # label_lag_2
    assert with_label_lags(values, labels, 0) is values


def test_the_manifest_declares_them_only_with_the_promise_that_makes_them_fair(
        tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, known_before_next_row=True, lags=2)
    assert manifest.label_lags == 2
    assert manifest.label_features == ("label_lag_1", "label_lag_2")
    plain = DatasetManifest.from_dict(BASE, tmp_path / "dataset.toml")
    assert plain.label_lags == 0 and plain.label_features == ()
    with pytest.raises(ConfigError, match="only when each row's label is known before the next"):
        _manifest(tmp_path, known_before_next_row=False)
    with pytest.raises(ConfigError, match="known_before_next_row"):
        _manifest(tmp_path, lags=1)  # the promise must be made, not assumed
    with pytest.raises(ConfigError, match="lags"):
        _manifest(tmp_path, known_before_next_row=True, lags=0)
    with pytest.raises(ConfigError, match="clash with declared features"):
        DatasetManifest.from_dict({**BASE, "features": ["a", "label_lag_1"], "lagged_labels": {
            "known_before_next_row": True}}, tmp_path / "dataset.toml")
    with pytest.raises(ConfigError, match="image dataset"):
        DatasetManifest.from_dict({k: v for k, v in BASE.items() if k != "features"}
                                  | {"input_shape": [1, 2, 2],
                                   "lagged_labels": {"known_before_next_row": True}},
                                  tmp_path / "dataset.toml")


def test_the_catalogs_lagged_noaa_is_noaa_plus_yesterdays_rain() -> None:
    plain = load_dataset(find_manifest("noaa-weather"))
    lagged = load_dataset(find_manifest("noaa-weather-lagged"))
    assert lagged.feature_names == (*plain.feature_names, "label_lag_1")
    assert lagged.label_features == ("label_lag_1",)
    assert np.array_equal(lagged.features[:, :-1], plain.features)
    assert np.array_equal(lagged.labels, plain.labels)
    assert lagged.features[0, -1] == -1
    codes = [lagged.label_codes.index(plain.classes[c]) for c in plain.labels[:-1]]
    assert lagged.features[1:, -1].tolist() == codes
    # Read with other features, so never taken for the same data version.
    assert lagged.fingerprint != plain.fingerprint


def test_the_signature_carries_them_and_old_manifests_read_as_before() -> None:
    sig = ModelSignature(features=("a", "label_lag_1"), classes=("dry", "rain"),
                         label_features=("label_lag_1",), label_codes=("rain", "dry"))
    data = sig.to_dict()
    assert data["label_features"] == ["label_lag_1"] and data["label_codes"] == ["rain", "dry"]
    assert ModelSignature.from_dict(data) == sig and sig.label_columns() == (1,)
    plain = ModelSignature(features=("a",), classes=("dry", "rain"))
    assert "label_features" not in plain.to_dict()  # what every earlier manifest holds
    assert "label_codes" not in plain.to_dict()
    with pytest.raises(SignatureError, match="must be among its 'features'"):
        ModelSignature(features=("a",), classes=("dry", "rain"), label_features=("b",),
                       label_codes=("dry",))
    with pytest.raises(SignatureError, match="no label_codes"):
        ModelSignature(features=("a", "b"), classes=("dry",), label_features=("b",))
    with pytest.raises(SignatureError, match=r"'label_codes' must be among its 'classes'; \['snow'\]"):
        ModelSignature(features=("a", "b"), classes=("dry",), label_features=("b",),
                       label_codes=("snow",))


@pytest.mark.parametrize("value", [0.5, 2, -2, 7])
def test_the_runtime_refuses_a_lag_that_is_not_a_class_index(value: float) -> None:
    with pytest.raises(BadInputError, match=r"'label_lag_1' carries an earlier row's label, so "
                                            r"it must be that label's code \(0..1\) or -1"):
        parse_rows({"rows": [[0.1, 1], [0.2, value]]}, n_features=2,
                   features=("a", "label_lag_1"), label_columns=(1,), n_classes=2)


def test_the_runtime_takes_class_indices_and_minus_one() -> None:
    rows = parse_rows({"rows": [{"a": 0.1, "label_lag_1": -1}, {"a": 0.2, "label_lag_1": 1}]},
                      n_features=2, features=("a", "label_lag_1"), label_columns=(1,),
                      n_classes=2)
    assert rows[:, 1].tolist() == [-1, 1]


def test_a_sweep_on_lagged_data_writes_the_contract_into_every_candidates_signature(
        tmp_path: Path) -> None:
    from shadow.sweep import load_config
    from shadow.sweep.prepare import prepare_sweep, sweep_data

    config = tmp_path / "sweep.toml"
    config.write_text('[sweep]\nname = "lagged"\ndataset = "noaa-weather-lagged"\n'
                      '[holdout]\nrows = 365\n[[slices]]\nstrategy = "recent"\nrows = 730\n'
                      '[model]\nfamily = "mlp"\n')
    data = sweep_data(prepare_sweep(load_config(config)))
    signature = ModelSignature.from_lineage(data.lineage)
    assert signature is not None and signature.label_features == ("label_lag_1",)
    assert signature.features is not None and signature.features[-1] == "label_lag_1"
    assert data.features.shape[1] == len(signature.features) == 9
    # What the runtime then asks of every request, from that signature alone.
    with pytest.raises(BadInputError, match="'label_lag_1' carries an earlier row's label"):
        parse_rows({"rows": [[0.0] * 8 + [3]]}, n_features=9, features=signature.features,
                   label_columns=signature.label_columns(), n_classes=len(signature.label_codes))


def test_a_backtests_copy_of_the_history_keeps_the_promise(tmp_path: Path) -> None:
    from shadow.data.history import full_table, write_prefix

    manifest = find_manifest("seattle-weather-lagged")
    table = full_table(manifest)
    copy = DatasetManifest.from_file(write_prefix(manifest, table, 500, tmp_path / "cut"))
    assert copy.label_lags == 1 and copy.label_features == ("label_lag_1",)
    cut = load_dataset(copy)
    whole = load_dataset(manifest)
    assert np.array_equal(cut.features, whole.features[:500])


def test_lag_codes_never_change_as_the_stream_grows_and_a_class_appears() -> None:
    """Codes follow first appearance: a class that comes later (fog, in 2012's autumn, sorted
    before rain) gets the next code, and no earlier row's lag is renumbered."""
    manifest = find_manifest("seattle-weather-lagged")
    import tempfile

    from shadow.data.history import full_table, write_prefix

    table = full_table(manifest)
    whole = load_dataset(manifest)
    first_fog = int(np.flatnonzero(table[manifest.target].to_numpy() == "fog")[0])
    with tempfile.TemporaryDirectory() as tmp:
        early = load_dataset(DatasetManifest.from_file(
            write_prefix(manifest, table, first_fog, Path(tmp) / "early")))
    assert "fog" not in early.classes and "fog" in whole.classes
    assert whole.label_codes[:len(early.label_codes)] == early.label_codes
    assert whole.label_codes[len(early.label_codes):] == ("fog",)
    assert np.array_equal(early.features, whole.features[:first_fog])  # lags unchanged
    # Sorted class indices would have moved: rain is 1 before fog comes, 2 after.
    assert early.classes.index("rain") != whole.classes.index("rain")

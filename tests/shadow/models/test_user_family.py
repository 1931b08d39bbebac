"""A family named by import path: resolved, checked against the contract, refused in one line when it breaks it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shadow.errors import ConfigError
from shadow.models import get_family
from shadow.models.contract import check_on_rows
from shadow.models.external import resolve_family
from tests.shadow.models.user_families import TINY, Tiny

HERE = "tests.shadow.models.user_families"


def test_a_class_or_an_instance_resolves_to_one_shared_family() -> None:
    family = get_family(f"{HERE}:Tiny")
    assert isinstance(family, Tiny)
    assert get_family(f"{HERE}:Tiny") is family
    assert get_family(f"{HERE}:TINY") is TINY


@pytest.mark.parametrize(("path", "fragment"), [
    ("a:b:c", "is not an import path; write it as \"package.module:ClassName\""),
    ("my pkg:Family", "is not an import path"),
    (":Family", "is not an import path"),
    ("pkg.models:", "is not an import path"),
    ("no_such_pkg_xyz.models:Family", "no module named 'no_such_pkg_xyz'; install the package"),
    (f"{HERE}:Nope", "has no attribute 'Nope'; check the spelling after the colon"),
    (f"{HERE}:not_a_family", "is a function, not a model family; point it at a subclass of "
                             "shadow.models.ModelFamily"),
    ("json:JSONDecoder", "is a type, not a model family"),
    (f"{HERE}:NoBuild", "class NoBuild does not implement build; define build(self, params"),
    (f"{HERE}:NoName", "the family has no name; set a class attribute name ="),
    (f"{HERE}:ParamsAsDict", "params must be a list of selection.validation.Param (got dict)"),
    (f"{HERE}:NoEpochs", "params lacks 'epochs', which the training loop reads"),
    (f"{HERE}:TwiceDeclared", "params declares 'lr' more than once"),
    (f"{HERE}:NeedsArguments", "NeedsArguments() failed with TypeError"),
    (f"{HERE}:PatienceAsEarlyStopping", "params declares 'early_stopping' as an int in the range "
                                        "[1, 100], but the training loop reads 'early_stopping' "
                                        "as the newest share of the rows held out"),
])
def test_a_path_or_class_that_breaks_the_contract_is_one_line(path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        get_family(path, "sweep.toml [model]")
    message = str(caught.value)
    assert message.startswith(f"sweep.toml [model]: family {path!r}")
    assert fragment in message
    assert "\n" not in message


def test_a_family_with_its_own_optimizer_need_not_declare_lr() -> None:
    assert get_family(f"{HERE}:SGDOnly").name == "sgd-only"


def test_a_module_that_fails_to_import_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_family_mod.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    (tmp_path / "needs_dep_family_mod.py").write_text("import not_installed_dep_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"importing 'broken_family_mod' failed with RuntimeError: no GPU "
                                          r"here; fix that module"):
        resolve_family("broken_family_mod:F")
    with pytest.raises(ConfigError, match=r"it needs module 'not_installed_dep_xyz', which is not installed"):
        resolve_family("needs_dep_family_mod:F")


def test_the_current_directory_is_searched_like_python_m(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwd_family_mod.py").write_text(
        f"from {HERE} import Tiny\n\nclass Mine(Tiny):\n    name = 'mine'\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert resolve_family("cwd_family_mod:Mine").name == "mine"


def _rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


@pytest.mark.parametrize(("name", "fragment"), [
    ("BuildsAList", "build() returned a list, not a torch.nn.Module"),
    ("WrongOutput", "returned (16, 1) for a batch of (16, 3) float32 rows; it must return one tensor of "
                    "logits shaped (batch, n_classes) = (16, 2)"),
    ("ExpectsImages", "the built module failed on a batch of (16, 3) float32 rows with RuntimeError"),
    ("VectorLoss", "loss() returned (16,); it must return a scalar tensor"),
    ("ReadsUndeclared", "reads param 'smoothing', which params does not declare"),
    ("NotExportable", "cannot be exported to ONNX (GuardOnDataDependentSymNode"),
])
def test_a_family_that_breaks_the_contract_on_data_is_refused(
    name: str, fragment: str, capfd: pytest.CaptureFixture[str],
) -> None:
    family = get_family(f"{HERE}:{name}")
    x, y = _rows()
    with pytest.raises(ConfigError) as caught:
        check_on_rows(family, family.validate({}, "t"), x, y, 2, None, "AT")
    message = str(caught.value)
    assert message.startswith("AT: ") and fragment in message and "\n" not in message
    if name == "NotExportable":  # where in the user's code, and nothing printed by torch
        assert "user_families.py:" in message
        out, err = capfd.readouterr()
        assert "def forward" not in err + out


def test_a_good_family_passes_on_data_and_leaves_torchs_random_state_alone() -> None:
    import torch

    family = get_family(f"{HERE}:Tiny")
    x, y = _rows()
    state = torch.random.get_rng_state()
    check_on_rows(family, family.validate({}, "t"), x, y, 2, None, "AT")
    assert torch.equal(torch.random.get_rng_state(), state)

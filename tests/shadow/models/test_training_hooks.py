"""The training loop's hooks: the defaults train the built-ins bit for bit as before; overrides take effect."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from examples.custom_family.smoothed_mlp import SmoothedMLP
from shadow.models import ModelFamily, get_family
from shadow.models.training import train


def _loop_before_hooks(
    family: ModelFamily, params: dict[str, Any], features: np.ndarray, labels: np.ndarray,
    n_classes: int, seed: int, input_shape: tuple[int, ...] | None = None,
) -> tuple[nn.Module, float]:
    """The training loop as it was before the hooks (commit 87f0054), verbatim but for timing."""
    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
    module = family.build(params, x.shape[1], n_classes, mean, std, input_shape)
    optimizer = torch.optim.Adam(module.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    batch = min(params["batch_size"], len(x))
    module.train()
    loss = torch.zeros(())
    for _ in range(params["epochs"]):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), batch):
            idx = order[begin:begin + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
    module.eval()
    return module, float(loss.detach())


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data.astype(np.float32)[:500], data.target[:500]


#: The step floor and the stopping rule off: the loop is then the one before the hooks.
_EPOCHS_ONLY = {"min_steps": 0, "early_stopping": 0.0}


@pytest.mark.parametrize(("family", "params"), [
    ("mlp", {"epochs": 3, "width": 16, "dropout": 0.1, "batch_size": 50, **_EPOCHS_ONLY}),
    ("mlp", {"epochs": 2, "hidden_layers": 0, "weight_decay": 1e-3, **_EPOCHS_ONLY}),
    ("cnn", {"epochs": 1, "blocks": 2, "channels": 4, "batch_size": 64, **_EPOCHS_ONLY}),
])
def test_builtins_train_bit_for_bit_as_before_the_hooks(
    family: str, params: dict[str, Any], digits: tuple[np.ndarray, np.ndarray],
) -> None:
    torch.set_num_threads(1)
    fam = get_family(family)
    checked = fam.validate(params, "test")
    x, y = digits
    got = train(fam, checked, x, y, 10, 11, (1, 8, 8))
    want, want_loss = _loop_before_hooks(fam, checked, x, y, 10, 11, (1, 8, 8))
    assert got.final_loss == want_loss
    mine, theirs = got.module.state_dict(), want.state_dict()
    assert list(mine) == list(theirs)
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key


class _Frozen(SmoothedMLP):
    """A schedule that sets the learning rate to 0: if the loop steps it, no weight moves."""

    def make_scheduler(self, optimizer: torch.optim.Optimizer, params: dict[str, Any],
                       total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)


def test_the_loop_uses_the_familys_optimizer_schedule_and_loss(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    frozen = _Frozen()
    params = frozen.validate({"epochs": 2, "weight_decay": 0.0}, "test")
    trained = train(frozen, params, x, y, 10, 5).module
    torch.manual_seed(5)
    fresh = frozen.build(params, x.shape[1], 10, torch.zeros(x.shape[1]), torch.ones(x.shape[1]))
    for (name, a), (_, b) in zip(trained.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), f"{name} moved: the schedule was not stepped"
    family = SmoothedMLP()
    smooth = train(family, family.validate({"epochs": 2, "label_smoothing": 0.2}, "t"), x, y, 10, 5)
    sharp = train(family, family.validate({"epochs": 2, "label_smoothing": 0.0}, "t"), x, y, 10, 5)
    # Label smoothing puts a floor under the loss: the smoothed run cannot fit as tightly.
    assert smooth.final_loss > sharp.final_loss

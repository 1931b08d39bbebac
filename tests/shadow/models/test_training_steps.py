"""How long the loop trains: a floor of optimizer steps, and a step count chosen on held-out rows."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from selection.validation import Param
from shadow.models import get_family
from shadow.models.base import ModelFamily, Standardize
from shadow.models.training import MIN_STOPPING_ROWS, train


def _separable(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two features, the class is which side of a line a row falls: learnable, not at init."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)


def _accuracy(module: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def test_a_small_slice_is_trained_to_the_step_floor_not_left_at_ten_steps() -> None:
    torch.set_num_threads(1)
    mlp = get_family("mlp")
    x, y = _separable(120)
    test_x, test_y = _separable(2000, seed=1)
    old = train(mlp, mlp.validate({"epochs": 10, "lr": 1e-3, "min_steps": 0, "early_stopping": 0.0},
                                  "t"), x, y, 2, 0)
    new = train(mlp, mlp.validate({"epochs": 10, "lr": 1e-3, "early_stopping": 0.0}, "t"), x, y, 2, 0)
    assert old.steps == 10  # one batch of 128 holds the whole slice: one step per epoch
    assert new.steps == 400 and new.stopping is None
    assert _accuracy(new.module, test_x, test_y) > 0.9
    assert _accuracy(new.module, test_x, test_y) > _accuracy(old.module, test_x, test_y) + 0.1


def test_early_stopping_chooses_the_steps_on_the_newest_rows_then_trains_on_all_of_them() -> None:
    torch.set_num_threads(1)
    mlp = get_family("mlp")
    x, y = _separable(300)
    y = np.where(np.random.default_rng(9).random(300) < 0.3, 1 - y, y)  # 30 % of labels flipped
    params = mlp.validate({"epochs": 2, "batch_size": 32, "min_steps": 200, "lr": 0.03}, "t")
    first = train(mlp, params, x, y, 2, 3)
    again = train(mlp, params, x, y, 2, 3)
    assert first.stopping is not None
    assert first.stopping["held_out_rows"] == 60 and first.stopping["budget_steps"] == 200
    assert first.steps == first.stopping["chosen_steps"] == _scouted_steps(mlp, params, x, y, 3)
    assert first.steps < 200  # this scout's loss turned up before the budget ran out
    # Deterministic given the seed: the same rows and params give the same weights.
    for (name, a), (_, b) in zip(first.module.state_dict().items(), again.module.state_dict().items()):
        assert torch.equal(a, b), name
    # The returned model saw every row: its scaling is the whole slice's, not the scouting part's.
    assert torch.allclose(first.module[0].mean, torch.from_numpy(x).mean(0))


def _scouted_steps(family: ModelFamily, params: dict[str, Any], x: np.ndarray, y: np.ndarray,
                   seed: int) -> int:
    """The step count early stopping should choose, found by hand: train on all but the newest
    fifth for the budget, the held-out cross-entropy after each epoch, the lowest one's steps."""
    cut = len(x) - int(round(len(x) * params["early_stopping"]))
    xt, yt = torch.from_numpy(x[:cut]), torch.from_numpy(y[:cut])
    xv, yv = torch.from_numpy(x[cut:]), torch.from_numpy(y[cut:])
    torch.manual_seed(seed)
    module = family.build(params, x.shape[1], 2, xt.mean(0), xt.std(0, unbiased=False))
    optimizer = torch.optim.Adam(module.parameters(), lr=params["lr"])
    generator = torch.Generator().manual_seed(seed)
    done, best = 0, (float("inf"), 0)
    while done < params["min_steps"]:
        order = torch.randperm(cut, generator=generator)
        for begin in range(0, cut, params["batch_size"]):
            idx = order[begin:begin + params["batch_size"]]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
            optimizer.step()
            done += 1
            if done == params["min_steps"]:
                break
        with torch.no_grad():
            held = float(torch.nn.functional.cross_entropy(module(xv), yv))
        if held < best[0]:
            best = (held, done)
    return best[1]


class _Decaying(ModelFamily):
    """A linear model whose learning rate falls linearly to zero over the schedule's steps."""

    name = "decaying"
    params: ClassVar[list[Param]] = get_family("mlp").params

    def build(self, params: dict[str, Any], n_features: int, n_classes: int,
              mean: torch.Tensor, std: torch.Tensor, input_shape: tuple[int, ...] | None = None,
              ) -> torch.nn.Module:
        return torch.nn.Sequential(Standardize(mean, std), torch.nn.Linear(n_features, n_classes))

    def make_scheduler(self, optimizer: torch.optim.Optimizer, params: dict[str, Any],
                       total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        self.seen.append(total_steps)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total_steps))

    seen: ClassVar[list[int]] = []


def test_the_final_run_follows_the_schedule_the_step_count_was_chosen_on() -> None:
    family = _Decaying()
    family.seen.clear()
    x, y = _separable(300)
    trained = train(family, family.validate({"epochs": 1, "batch_size": 32, "min_steps": 100}, "t"),
                    x, y, 2, 0)
    assert trained.stopping is not None
    # Both runs' schedules span the whole budget; the final one stops at the chosen step.
    assert family.seen == [100, 100]


def test_a_warm_start_scouts_from_the_champions_weights_too() -> None:
    """With ``initial``, both runs start from the given weights, not a fresh module's."""
    from shadow.models.export import export_onnx

    torch.set_num_threads(1)
    mlp = get_family("mlp")
    x, y = _separable(300)
    params = mlp.validate({"epochs": 1, "batch_size": 32, "min_steps": 60, "lr": 1e-4}, "t")
    champion = train(mlp, params, x, y, 2, 0).module
    flipped = y[::-1].copy()  # other labels: a fresh model would learn them from scratch
    fresh = train(mlp, params, x, flipped, 2, 1)
    warm = train(mlp, params, x, flipped, 2, 1, initial=export_onnx(champion, x[:8]))
    assert warm.stopping is not None and fresh.stopping is not None
    # At this small learning rate the warm model stays near the champion's weights.
    near = [torch.dist(a, b) for a, b in zip(warm.module.state_dict().values(),
                                            champion.state_dict().values())]
    far = [torch.dist(a, b) for a, b in zip(fresh.module.state_dict().values(),
                                           champion.state_dict().values())]
    assert sum(near) < 0.5 * sum(far)


def test_noise_is_stopped_early_and_signal_is_not() -> None:
    """On labels that are coin tosses the held-out loss is lowest early; on signal it keeps falling."""
    torch.set_num_threads(1)
    mlp = get_family("mlp")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    noise = rng.integers(0, 2, size=400)
    signal = (x[:, 0] - x[:, 3] > 0).astype(np.int64)
    params = mlp.validate({"epochs": 1, "batch_size": 32, "lr": 0.01, "width": 64, "min_steps": 600}, "t")
    stopped_noise = train(mlp, params, x, noise, 2, 0).steps
    stopped_signal = train(mlp, params, x, signal, 2, 0).steps
    assert stopped_noise < 200 < stopped_signal


def test_too_few_rows_to_hold_out_trains_the_whole_budget() -> None:
    mlp = get_family("mlp")
    rows = 2 * MIN_STOPPING_ROWS  # 20 % of it is under the minimum
    x, y = _separable(rows)
    trained = train(mlp, mlp.validate({"epochs": 1, "min_steps": 30}, "t"), x, y, 2, 0)
    assert trained.stopping is None and trained.steps == 30


class _EpochsOnly(ModelFamily):
    """A user's family that declares only what the loop always read: it trains as it always did."""

    name = "epochs-only"
    params: ClassVar[list[Param]] = [
        Param("epochs", int, default=3, low=1, high=100),
        Param("batch_size", int, default=16, low=1, high=1000),
        Param("lr", float, default=0.01, low=0.0, high=1.0, low_open=True),
        Param("weight_decay", float, default=0.0, low=0.0, high=1.0),
    ]

    def build(self, params: dict[str, Any], n_features: int, n_classes: int,
              mean: torch.Tensor, std: torch.Tensor, input_shape: tuple[int, ...] | None = None,
              ) -> torch.nn.Module:
        return torch.nn.Sequential(Standardize(mean, std), torch.nn.Linear(n_features, n_classes))


def test_a_family_without_the_settings_trains_its_epochs() -> None:
    family = _EpochsOnly()
    x, y = _separable(100)
    trained = train(family, family.validate({}, "t"), x, y, 2, 0)
    assert trained.steps == 3 * 7 and trained.stopping is None  # 3 epochs of ceil(100 / 16) batches

"""The class prior: predicts the training rows' class frequencies, whatever the features say.

The baseline a coin-toss stream should not lose to. On a stream without signal (the catalog's
S&P 500 direction: "up" on 54 % of days) every model trained on the features learns some of
the noise and lands below "always say the commonest class"; a sweep that offers this model
beside its others (``[model] baselines = ["prior"]``) lets the ranking, the track record and the
gate pick it when nothing beats it. Its graph takes the same flat rows and gives logits like
every family (so it exports, quantizes, compiles and serves the same way): the features times
zero, plus one learned bias per class. Trained by the default loop, on the bias alone, by full
batch gradient descent on the cross-entropy, whose minimum is the log of the class frequencies
(the loss is convex in the bias, so a few hundred steps reach it).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from selection.validation import Param
from shadow.models.base import ModelFamily


class ClassPrior(nn.Module):
    """Logits equal to a learned bias for every row; the input only sets the batch size."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x[:, :1] * 0 keeps the graph's batch dimension tied to the input's.
        return x[:, :1] * 0.0 + self.bias


class PriorFamily(ModelFamily):
    """The class frequencies of the training rows as a model (see the module docstring)."""

    name = "prior"
    description = "class prior: the training rows' commonest class for every input (a baseline)"
    params: ClassVar[list[Param]] = [
        Param("epochs", int, default=1, low=1, high=10_000),
        # One batch of every row: the gradient is exact, and the steps converge.
        Param("batch_size", int, default=1_000_000, low=1, high=1_000_000),
        Param("min_steps", int, default=200, low=0, high=10_000_000),
        Param("early_stopping", float, default=0.0, low=0.0, high=0.5),
        Param("lr", float, default=1.0, low=0.0, high=10.0, low_open=True,
              help="gradient-descent step on the bias"),
    ]

    def build(
        self, params: dict[str, Any], n_features: int, n_classes: int,
        mean: torch.Tensor, std: torch.Tensor, input_shape: tuple[int, ...] | None = None,
    ) -> nn.Module:
        return ClassPrior(n_classes)

    def make_optimizer(self, module: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.SGD(module.parameters(), lr=params["lr"])

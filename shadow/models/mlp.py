"""Multi-layer perceptron for tabular data: the default family."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from selection.validation import Param
from shadow.models.base import ModelFamily, Standardize

#: Training settings shared by every family trained with the default loop.
TRAINING_PARAMS = [
    Param("lr", float, default=3e-3, low=0.0, high=1.0, low_open=True, help="Adam learning rate"),
    Param("weight_decay", float, default=0.0, low=0.0, high=1.0, high_open=True),
    Param("epochs", int, default=20, low=1, high=10_000),
    Param("batch_size", int, default=128, low=1, high=1_000_000),
    Param("min_steps", int, default=400, low=0, high=10_000_000,
          help="optimizer steps at least, whatever epochs say (a small slice needs more epochs)"),
    Param("early_stopping", float, default=0.2, low=0.0, high=0.5,
          help="newest share of the rows held out to choose the step count, then trained on "
               "all rows for it (0: train the whole budget)"),
]


class MLPFamily(ModelFamily):
    """Standardize -> [Linear -> ReLU -> Dropout] x hidden_layers -> Linear."""

    name = "mlp"
    description = "MLP for tabular features (standardization built into the graph)"
    params: ClassVar[list[Param]] = [
        Param("hidden_layers", int, default=2, low=0, high=16),
        Param("width", int, default=64, low=1, high=8192),
        Param("dropout", float, default=0.0, low=0.0, high=1.0, high_open=True),
        *TRAINING_PARAMS,
    ]

    def build(
        self, params: dict[str, Any], n_features: int, n_classes: int,
        mean: torch.Tensor, std: torch.Tensor, input_shape: tuple[int, ...] | None = None,
    ) -> nn.Module:
        layers: list[nn.Module] = [Standardize(mean, std)]
        width_in = n_features
        for _ in range(params["hidden_layers"]):
            layers += [nn.Linear(width_in, params["width"]), nn.ReLU()]
            if params["dropout"] > 0:
                layers.append(nn.Dropout(params["dropout"]))
            width_in = params["width"]
        layers.append(nn.Linear(width_in, n_classes))
        return nn.Sequential(*layers)

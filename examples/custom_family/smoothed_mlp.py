"""An example of your own model family: an MLP trained with label smoothing and a cosine schedule.

Use it from a sweep file by import path (this folder is found from the repository root, or
put the module in your own package)::

    [model]
    family = "examples.custom_family.smoothed_mlp:SmoothedMLP"

    [model.params]
    label_smoothing = [0.0, 0.1]

It shows the whole contract: declared hyper-parameters with ranges and defaults
(``params``), a builder taking flat ``(batch, n_features)`` rows and returning
``(batch, n_classes)`` logits with feature scaling inside the graph, and the three
optional training hooks where the default Adam + cross-entropy loop does not fit.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from selection.validation import Param
from shadow.models import TRAINING_PARAMS, ModelFamily, Standardize


class SmoothedMLP(ModelFamily):
    """Standardize -> [Linear -> GELU] x hidden_layers -> Linear, trained by AdamW on a cosine schedule."""

    name = "smoothed-mlp"
    description = "MLP with label smoothing, AdamW and a cosine learning-rate schedule (example)"
    params: ClassVar[list[Param]] = [
        Param("hidden_layers", int, default=1, low=0, high=8),
        Param("width", int, default=32, low=1, high=4096),
        Param("label_smoothing", float, default=0.1, low=0.0, high=0.5, high_open=True,
              help="share of each target spread evenly over the classes"),
        Param("warmup_fraction", float, default=0.0, low=0.0, high=1.0, high_open=True,
              help="share of the steps spent ramping the learning rate up linearly"),
        *TRAINING_PARAMS,  # lr, weight_decay, epochs, batch_size, min_steps, early_stopping
    ]

    def build(
        self, params: dict[str, Any], n_features: int, n_classes: int,
        mean: torch.Tensor, std: torch.Tensor, input_shape: tuple[int, ...] | None = None,
    ) -> nn.Module:
        layers: list[nn.Module] = [Standardize(mean, std)]
        width_in = n_features
        for _ in range(params["hidden_layers"]):
            layers += [nn.Linear(width_in, params["width"]), nn.GELU()]
            width_in = params["width"]
        layers.append(nn.Linear(width_in, n_classes))
        return nn.Sequential(*layers)

    def make_optimizer(self, module: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
        # Decoupled weight decay: with AdamW, weight_decay means the same at every learning rate.
        return torch.optim.AdamW(module.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])

    def make_scheduler(
        self, optimizer: torch.optim.Optimizer, params: dict[str, Any], total_steps: int,
    ) -> torch.optim.lr_scheduler.LRScheduler:
        # Stepped after every batch: an optional linear warm-up, then cosine decay to zero.
        warmup = int(total_steps * params["warmup_fraction"])

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=params["label_smoothing"])

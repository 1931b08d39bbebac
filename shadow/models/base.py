"""The model-family interface and its registry.

A family declares its hyper-parameters (with ranges and defaults) and builds a
torch module from them. Training settings (learning rate, epochs, batch size)
are hyper-parameters of the family too, because they are what a sweep varies.
Adding a built-in family is adding one module with its :class:`ModelFamily`
subclass and one ``FAMILIES.register`` line in ``shadow/models/__init__.py``,
where the built-ins are registered, all in one place. A user's own family needs
no edit here: ``[model] family = "my_pkg.models:MyFamily"`` names it by import
path (:mod:`shadow.models.external` resolves it, :mod:`shadow.models.contract`
checks it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from selection.registry import Registry
from selection.validation import Param, parse_table


class Standardize(nn.Module):
    """Feature scaling fitted on the training slice and carried inside the model.

    The exported ONNX graph then takes raw features: the edge app and the
    production model can never disagree about preprocessing.
    """

    # Buffers (saved and exported with the module), declared for type checkers.
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        # A constant column has std 0; dividing by 1 keeps it finite (it carries no signal).
        self.register_buffer("std", torch.where(std > 0, std, torch.ones_like(std)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class WithProbabilities(nn.Module):
    """Wraps a logits model so the exported graph outputs class probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


class ModelFamily(ABC):
    """The contract of a model family: declared params, a builder and training settings.

    - ``name`` is the ``[model] family = ...`` value; ``description`` one line for
      listings; ``params`` declares every hyper-parameter, training settings
      (``lr``, ``epochs``, ``batch_size``, ``weight_decay``) included, because they
      are what a sweep varies. :meth:`validate` is the only way params reach
      :meth:`build`, so ``build`` may index them without checking.
    - :meth:`build` returns a fresh, untrained torch module: the same params and
      shapes give the same architecture (seeding is the trainer's job). Its input
      is always flat ``(batch, n_features)`` float32 rows and its output
      ``(batch, n_classes)`` logits, whatever the family does inside; that is the
      exported ONNX graph's signature, so every family serves the same way.
    - Feature scaling lives inside the module (:class:`Standardize` from the
      ``mean``/``std`` of the training slice), never in the caller.
    - A family that cannot handle the data (e.g. a CNN without an image shape)
      raises ConfigError naming the fix. Families hold no state: one instance is
      registered and shared.
    - Training (optional hooks): the default loop (:func:`shadow.models.training.train`)
      reads ``epochs`` and ``batch_size``, shuffles with the candidate's seed and,
      per batch, calls :meth:`loss`, then steps the optimizer from
      :meth:`make_optimizer` and the schedule from :meth:`make_scheduler`. The
      defaults (Adam on ``lr``/``weight_decay``, mean cross-entropy, no schedule)
      are the built-ins' training exactly; a family overrides only what differs
      (its own loss, optimizer or learning-rate schedule), and declares in
      ``params`` whatever its hooks read.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    params: ClassVar[list[Param]]

    def validate(self, params: dict[str, Any], where: str) -> dict[str, Any]:
        """Params checked against the declaration, with defaults filled in."""
        return parse_table(params, self.params, f"{where} (family {self.name!r})")

    @abstractmethod
    def build(
        self, params: dict[str, Any], n_features: int, n_classes: int,
        mean: torch.Tensor, std: torch.Tensor, input_shape: tuple[int, ...] | None = None,
    ) -> nn.Module:
        """A fresh module taking flat (batch, n_features) rows, returning (batch, n_classes) logits.

        ``input_shape`` is one example's shape (images: channels, height, width)
        for families that need it; inputs still arrive flat.
        """

    def make_optimizer(self, module: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
        """The optimizer the training loop steps once per batch; default Adam on ``lr``, ``weight_decay``."""
        return torch.optim.Adam(module.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])

    def make_scheduler(
        self, optimizer: torch.optim.Optimizer, params: dict[str, Any], total_steps: int,
    ) -> torch.optim.lr_scheduler.LRScheduler | None:
        """A learning-rate schedule stepped after every optimizer step (``total_steps`` in all); default none."""
        return None

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """One batch's training loss (a scalar) from logits and int64 class targets; default mean cross-entropy."""
        return F.cross_entropy(logits, targets)


#: Model families by name (one shared instance each); built-ins registered in ``shadow/models/__init__.py``.
#: ``shadow.models.get_family`` looks a family up here, or by import path.
FAMILIES: Registry[ModelFamily] = Registry(
    "model family",
    fix="Set [model] family to one of those names, or to your own family's import path "
        "such as \"my_pkg.models:MyFamily\".",
)

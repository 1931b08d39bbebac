"""The model-family interface and its registry.

A family declares its hyper-parameters (with ranges and defaults) and builds a
torch module from them. Training settings (learning rate, epochs, batch size)
are hyper-parameters of the family too, because they are what a sweep varies.
Adding a family is adding one module that calls :func:`register`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from shadow.errors import ConfigError
from shadow.params import Param, parse_table


class Standardize(nn.Module):
    """Feature scaling fitted on the training slice and carried inside the model.

    The exported ONNX graph then takes raw features: the edge app and the
    production model can never disagree about preprocessing.
    """

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


class ModelFamily:
    """Base of model families: declared params, a builder and training settings."""

    name: ClassVar[str]
    description: ClassVar[str]
    params: ClassVar[list[Param]]

    def validate(self, params: dict[str, Any], where: str) -> dict[str, Any]:
        """Params checked against the declaration, with defaults filled in."""
        return parse_table(params, self.params, f"{where} (family {self.name!r})")

    def build(
        self, params: dict[str, Any], n_features: int, n_classes: int,
        mean: torch.Tensor, std: torch.Tensor, input_shape: tuple[int, ...] | None = None,
    ) -> nn.Module:  # pragma: no cover - interface
        """A fresh module taking flat (batch, n_features) rows, returning (batch, n_classes) logits.

        ``input_shape`` is one example's shape (images: channels, height, width)
        for families that need it; inputs still arrive flat.
        """
        raise NotImplementedError


FAMILIES: dict[str, ModelFamily] = {}


def register(cls: type[ModelFamily]) -> type[ModelFamily]:
    FAMILIES[cls.name] = cls()
    return cls


def get_family(name: str, where: str = "[model]") -> ModelFamily:
    """The registered family ``name``, or a ConfigError listing the known ones."""
    family = FAMILIES.get(name)
    if family is None:
        raise ConfigError(
            f"{where}: unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}."
        )
    return family

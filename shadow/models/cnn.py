"""Small convolutional network for images (the packaging-robot camera case)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from selection.validation import Param
from shadow.errors import ConfigError
from shadow.models.base import ModelFamily, Standardize
from shadow.models.mlp import TRAINING_PARAMS


class Unflatten(nn.Module):
    """Flat rows -> (batch, *shape): the graph takes the same flat input as every family."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class CNNFamily(ModelFamily):
    """Standardize -> [Conv3x3 -> ReLU -> MaxPool2] x blocks -> global average -> Linear.

    Channels double each block from ``channels``. Global average pooling keeps
    the head tiny and the graph free of shape-specific reshapes.
    """

    name = "cnn"
    description = "small CNN for images (needs input_shape in the dataset manifest)"
    params: ClassVar[list[Param]] = [
        Param("blocks", int, default=2, low=1, high=5),
        Param("channels", int, default=8, low=1, high=256),
        *TRAINING_PARAMS,
    ]

    def build(
        self, params: dict[str, Any], n_features: int, n_classes: int,
        mean: torch.Tensor, std: torch.Tensor, input_shape: tuple[int, ...] | None = None,
    ) -> nn.Module:
        if input_shape is None or len(input_shape) != 3:
            raise ConfigError(
                "family 'cnn' needs images: set input_shape = [channels, height, width] in the "
                f"dataset manifest (got {input_shape!r}), or use family 'mlp'."
            )
        channels_in, height, width = input_shape
        if min(height, width) < 2 ** params["blocks"]:
            raise ConfigError(
                f"family 'cnn': {params['blocks']} pooling blocks need images of at least "
                f"{2 ** params['blocks']} pixels a side; got {height}x{width}. Lower 'blocks'."
            )
        layers: list[nn.Module] = [Standardize(mean, std), Unflatten(tuple(input_shape))]
        channels = params["channels"]
        for _ in range(params["blocks"]):
            layers += [nn.Conv2d(channels_in, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels_in, channels = channels, channels * 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels_in, n_classes)]
        return nn.Sequential(*layers)

"""Model families defined outside ``shadow/``, as a user's own package would: good ones and contract breakers.

Named in tests by import path, e.g. ``tests.shadow.models.user_families:Tiny``
(``tests`` is a package, and the test Ray session's workers have the repository
root on their path, as any driver's working directory is).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from selection.validation import Param
from shadow.models import TRAINING_PARAMS, ModelFamily, Standardize


class Tiny(ModelFamily):
    """Standardize -> Linear: the smallest family that keeps the contract."""

    name = "tiny"
    description = "one linear layer (test family)"
    params: ClassVar[list[Param]] = [Param("bias", bool, default=True), *TRAINING_PARAMS]

    def build(
        self, params: dict[str, Any], n_features: int, n_classes: int,
        mean: torch.Tensor, std: torch.Tensor, input_shape: tuple[int, ...] | None = None,
    ) -> nn.Module:
        return nn.Sequential(Standardize(mean, std), nn.Linear(n_features, n_classes, bias=params["bias"]))


#: An instance works as well as the class.
TINY = Tiny()


class SGDOnly(Tiny):
    """Its own optimizer, so it need not declare lr/weight_decay (it declares momentum)."""

    name = "sgd-only"
    params: ClassVar[list[Param]] = [
        Param("momentum", float, default=0.9, low=0.0, high=1.0, high_open=True),
        Param("epochs", int, default=2, low=1, high=100),
        Param("batch_size", int, default=32, low=1, high=10_000),
        Param("bias", bool, default=True),
    ]

    def make_optimizer(self, module: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.SGD(module.parameters(), lr=0.05, momentum=params["momentum"])


def not_a_family() -> None:
    """A function, not a family."""


class NoBuild(ModelFamily):
    name = "no-build"
    params: ClassVar[list[Param]] = list(TRAINING_PARAMS)


class NoName(Tiny):
    name = ""


class ParamsAsDict(Tiny):
    params = {"width": 3}  # type: ignore[assignment]


class NoEpochs(Tiny):
    params: ClassVar[list[Param]] = [p for p in TRAINING_PARAMS if p.name != "epochs"]


class TwiceDeclared(Tiny):
    params: ClassVar[list[Param]] = [*TRAINING_PARAMS, Param("lr", float, default=0.1)]


class PatienceAsEarlyStopping(Tiny):
    """Its own `early_stopping` (a patience in epochs): the loop would read it as a share."""

    params: ClassVar[list[Param]] = [
        *[p for p in TRAINING_PARAMS if p.name != "early_stopping"],
        Param("early_stopping", int, default=5, low=1, high=100),
    ]


class NeedsArguments(Tiny):
    def __init__(self, depth: int) -> None:
        self.depth = depth


class BuildsAList(Tiny):
    def build(self, *args: Any, **kwargs: Any) -> nn.Module:
        return [nn.Linear(2, 2)]  # type: ignore[return-value]


class WrongOutput(Tiny):
    """Returns one score per row instead of one logit per class."""

    def build(self, params: dict[str, Any], n_features: int, n_classes: int, *args: Any, **kw: Any) -> nn.Module:
        return nn.Linear(n_features, 1)


class ExpectsImages(Tiny):
    """Convolves its input as given: flat rows break it."""

    def build(self, params: dict[str, Any], n_features: int, n_classes: int, *args: Any, **kw: Any) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(n_classes))


class VectorLoss(Tiny):
    """Forgets to reduce its loss to a scalar."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, targets, reduction="none")


class ReadsUndeclared(Tiny):
    """Its loss reads a parameter it never declared."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, targets, label_smoothing=params["smoothing"])


class _Branchy(nn.Module):
    """A Python branch on a tensor's value: runs in torch, cannot be traced into one graph."""

    def __init__(self, n_features: int, n_classes: int) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(n_features, n_classes), nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) if float(x.sum()) > 0 else self.b(x)


class NotExportable(Tiny):
    def build(self, params: dict[str, Any], n_features: int, n_classes: int, *args: Any, **kw: Any) -> nn.Module:
        return _Branchy(n_features, n_classes)

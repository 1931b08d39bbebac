"""The training loop: one candidate, one slice, deterministic given its seed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from shadow.models.base import ModelFamily


@dataclass(frozen=True)
class TrainedModel:
    """A trained module (returns logits) and how training went."""

    module: nn.Module
    seconds: float
    final_loss: float


def train(
    family: ModelFamily,
    params: dict[str, Any],
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    seed: int,
    input_shape: tuple[int, ...] | None = None,
    initial: bytes | None = None,
) -> TrainedModel:
    """Fit a fresh model of ``family`` on the given rows with the family's training hooks.

    Mini-batches of ``batch_size`` rows for ``epochs`` epochs, shuffled by a generator
    seeded with ``seed``; per batch: :meth:`ModelFamily.loss`, backward, the optimizer
    from :meth:`ModelFamily.make_optimizer`, then the schedule, if any, from
    :meth:`ModelFamily.make_scheduler`. The hooks' defaults are Adam + cross-entropy.

    ``initial``: an exported graph of this family and params (the champion's) whose
    weights training starts from (a warm start), feature scaling included, instead
    of a fresh module's.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
    module = family.build(params, x.shape[1], n_classes, mean, std, input_shape)
    if initial is not None:
        from shadow.models.weights import load_onnx_weights

        load_onnx_weights(module, initial, check_rows=features[:64])
    optimizer = family.make_optimizer(module, params)
    generator = torch.Generator().manual_seed(seed)
    batch = min(params["batch_size"], len(x))
    scheduler = family.make_scheduler(optimizer, params, params["epochs"] * math.ceil(len(x) / batch))
    module.train()
    loss = torch.zeros(())
    for _ in range(params["epochs"]):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), batch):
            idx = order[begin:begin + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = family.loss(module(x[idx]), y[idx], params)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    module.eval()
    final = float(loss.detach())
    if not np.isfinite(final):
        raise FloatingPointError(
            f"training diverged (loss {final}); lower 'lr' or check the features' scale"
        )
    return TrainedModel(module=module, seconds=time.perf_counter() - started, final_loss=final)

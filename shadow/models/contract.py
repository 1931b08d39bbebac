"""The model-family contract, checked: a user's family is refused before any candidate runs.

Two checks, each failure one ConfigError naming what broke and the fix:

- :func:`check_declaration`, when the family is resolved (no data needed): a
  name, ``params`` a list of distinct :class:`~selection.validation.Param`, the
  training settings the loop reads (``epochs``, ``batch_size``; ``lr`` and
  ``weight_decay`` too unless the family brings its own optimizer), callable
  hooks.
- :func:`check_on_rows`, once per sweep on the driver, on a few real rows of the
  dataset: ``build`` returns a torch module, a flat ``(batch, n_features)``
  batch gives ``(batch, n_classes)`` logits, one training step of the family's
  own hooks runs (a scalar loss that can be back-propagated), and the module
  exports to ONNX with the project's exporter and agrees with torch. The
  built-in families are tested by the project and skip this (it costs an
  export, about 1 to 4 s).
"""

from __future__ import annotations

import io
import logging
import os
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any

import numpy as np
import torch
from torch import nn

from selection.validation import Param
from shadow.errors import ConfigError
from shadow.models.base import ModelFamily
from shadow.models.export import export_onnx, verify_onnx

#: Rows of the dataset the dry run uses: enough for a batch, cheap to export and compare.
DRY_RUN_ROWS = 16
#: What the default training loop reads from every family's params.
LOOP_PARAMS = ("epochs", "batch_size")
#: What the default optimizer (:meth:`ModelFamily.make_optimizer`) reads.
OPTIMIZER_PARAMS = ("lr", "weight_decay")
#: Names the training loop reads when a family declares them (kind, lowest, highest, meaning):
#: a family's own setting of that name with another meaning would be silently reinterpreted.
STOPPING_PARAMS: dict[str, tuple[type, float, float | None, str]] = {
    "min_steps": (int, 0, None, "a floor of optimizer steps"),
    "early_stopping": (float, 0.0, 0.5, "the newest share of the rows held out to choose the step count"),
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FIX_PARAMS = "e.g. params = [..., *TRAINING_PARAMS] with TRAINING_PARAMS from shadow.models"


def check_declaration(family: ModelFamily, at: str) -> None:
    """ConfigError unless ``family`` declares what the contract asks (see the module docstring)."""
    name = getattr(family, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{at}: the family has no name; set a class attribute name = \"my-family\".")
    if not isinstance(getattr(family, "description", ""), str):
        raise ConfigError(f"{at}: description must be one line of text; set description = \"...\".")
    params = getattr(family, "params", None)
    if not isinstance(params, (list, tuple)) or not all(isinstance(p, Param) for p in params):
        got = type(params).__name__ if not isinstance(params, (list, tuple)) else "a list holding " + ", ".join(
            sorted({type(p).__name__ for p in params if not isinstance(p, Param)}))
        raise ConfigError(
            f"{at}: params must be a list of selection.validation.Param (got {got}); declare each "
            "hyper-parameter as Param(name, kind, default=..., low=..., high=...)."
        )
    names = [p.name for p in params]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{at}: params declares {', '.join(map(repr, twice))} more than once; keep one each.")
    needed = list(LOOP_PARAMS)
    if type(family).make_optimizer is ModelFamily.make_optimizer:
        needed += OPTIMIZER_PARAMS
    missing = [n for n in needed if n not in names]
    if missing:
        raise ConfigError(
            f"{at}: params lacks {', '.join(map(repr, missing))}, which the training loop reads; "
            f"declare them ({_FIX_PARAMS}), or override make_optimizer if lr/weight_decay do not apply."
        )
    by_name = {p.name: p for p in params}
    for key, (kind, lowest, highest, meaning) in STOPPING_PARAMS.items():
        declared = by_name.get(key)
        if declared is None:
            continue
        fits = declared.kind is kind and declared.low is not None and declared.low >= lowest \
            and (highest is None or (declared.high is not None and declared.high <= highest))
        if not fits:
            span = f"[{lowest:g}, {'inf' if highest is None else f'{highest:g}'}]"
            raise ConfigError(
                f"{at}: params declares {key!r} as {declared.rule()}, but the training loop reads "
                f"{key!r} as {meaning} ({'an' if kind is int else 'a'} {kind.__name__} in {span}); "
                f"rename your setting, or take the loop's from TRAINING_PARAMS."
            )
    for hook in ("build", "make_optimizer", "make_scheduler", "loss"):
        if not callable(getattr(family, hook, None)):
            raise ConfigError(f"{at}: {hook} must be a method; define it as in shadow.models.ModelFamily.")


def check_on_rows(
    family: ModelFamily, params: dict[str, Any], features: np.ndarray, labels: np.ndarray,
    n_classes: int, input_shape: tuple[int, ...] | None, at: str,
) -> None:
    """Build, run, train one step and export ``family`` on a few of these rows; ConfigError on a breach.

    ``params`` are validated ones (a grid point). Torch's global random state is
    left as it was: planning has no side effects.
    """
    x = torch.from_numpy(np.ascontiguousarray(features[:DRY_RUN_ROWS], dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(labels[:DRY_RUN_ROWS], dtype=np.int64))
    batch = f"a batch of {tuple(x.shape)} float32 rows"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = _build(family, params, x, n_classes, input_shape, at)
        module.eval()
        try:
            with torch.no_grad():
                out = module(x)
        except Exception as exc:
            raise ConfigError(
                f"{at}: the built module failed on {batch} with {_describe(exc)}; inputs arrive flat "
                "(batch, n_features): reshape inside the module (input_shape is passed to build)."
            ) from None
        expected = (len(x), n_classes)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"{at}: the built module returned {got} for {batch}; it must return one tensor of "
                f"logits shaped (batch, n_classes) = {expected}."
            )
        _train_one_step(family, module, params, x, y, at)
        module.eval()
        try:
            with _quiet():
                verify_onnx(export_onnx(module, x.numpy()), module, x.numpy())
        except Exception as exc:
            raise ConfigError(
                f"{at}: the module cannot be exported to ONNX ({_root_cause(exc)}); use operations "
                "torch.onnx.export(dynamo=True) supports and no Python branch on tensor values."
            ) from None


def _build(
    family: ModelFamily, params: dict[str, Any], x: torch.Tensor, n_classes: int,
    input_shape: tuple[int, ...] | None, at: str,
) -> nn.Module:
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
    try:
        module = family.build(params, x.shape[1], n_classes, mean, std, input_shape)
    except ConfigError:
        raise  # the family's own word that it cannot handle this data, with its fix
    except Exception as exc:
        raise ConfigError(f"{at}: build() failed with {_describe(exc)}; fix the family's build.") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"{at}: build() returned a {type(module).__name__}, not a torch.nn.Module; return the model."
        )
    return module


def _train_one_step(
    family: ModelFamily, module: nn.Module, params: dict[str, Any], x: torch.Tensor, y: torch.Tensor,
    at: str,
) -> None:
    """One step of exactly what :func:`shadow.models.training.train` calls per batch."""
    module.train()
    try:
        optimizer = family.make_optimizer(module, params)
        scheduler = family.make_scheduler(optimizer, params, 1)
        optimizer.zero_grad(set_to_none=True)
        loss = family.loss(module(x), y, params)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not loss.requires_grad:
            what = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ConfigError(
                f"{at}: loss() returned {what}; it must return a scalar tensor computed from the "
                "logits (so it can be back-propagated), e.g. F.cross_entropy(logits, targets)."
            )
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    except ConfigError:
        raise
    except KeyError as exc:
        raise ConfigError(
            f"{at}: its training step reads param {exc.args[0]!r}, which params does not declare; "
            "declare it in params."
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"{at}: one training step failed with {_describe(exc)}; fix the family's loss, "
            "make_optimizer or make_scheduler."
        ) from None


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch while it tries the export: a failing export prints its partial graph to stderr.

    (``torch.export`` ``print``s it, and logs warnings, before raising; the CLI owes the user one
    line.) Only the driver's dry run is wrapped, once per sweep, before any thread of ours runs.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _root_cause(exc: BaseException) -> str:
    """The innermost cause's first line, and the user's own line it came from when there is one."""
    chain = [exc]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(nxt)
    inner = chain[-1]
    first = _ANSI.sub("", str(inner)).strip().splitlines()
    text = f"{type(inner).__name__}: {' '.join(first[0].split())[:240] if first else ''}"
    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for e in chain for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith((torch_dir, os.path.dirname(__file__)))
              and "site-packages" not in f.filename]
    if frames:
        text += f" at {frames[-1].filename}:{frames[-1].lineno}"
    return text


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"

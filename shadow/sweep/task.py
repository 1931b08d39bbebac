"""One candidate, start to finish: train -> export -> verify -> run on each device.

This is a plain function so it can run in a Ray worker (see
:mod:`shadow.sweep.runner`) or serially in the driver (benchmarks compare the
two). It never raises for a candidate's own failure: a failure is data, a
record with status ``failed`` and the error, so one bad candidate cannot stop
a sweep.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from selection.artifacts.arrays import encode_array
from selection.artifacts.content import sha256_bytes
from selection.records import CandidateRecord, DeviceResult
from shadow.data.slicing.base import rows_sha256
from shadow.devices import get_device
from shadow.models import get_family
from shadow.models.export import export_onnx, verify_onnx
from shadow.models.training import train
from shadow.sweep.plan import CandidateSpec

#: Rows of the holdout used to check ONNX Runtime against torch.
VERIFY_ROWS = 256
#: Rows of the candidate's own training slice handed to devices that calibrate.
CALIBRATION_ROWS = 512


@dataclass(frozen=True)
class SweepData:
    """Everything a worker needs, put into Ray's object store once per sweep.

    Workers read the arrays zero-copy (read-only); slicing copies what it uses.
    """

    sweep_id: str
    features: np.ndarray
    labels: np.ndarray
    holdout_start: int
    holdout_stop: int
    slice_rows: dict[str, np.ndarray]
    n_classes: int
    devices: tuple[str, ...]
    lineage: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    #: Exported models warm starts continue from, by sha256 (``CandidateSpec.init_model``).
    init_models: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateOutcome:
    """A finished candidate: its record and the artifact bytes its rows point at."""

    record: CandidateRecord
    artifacts: dict[str, bytes]
    worker: dict[str, Any] = field(default_factory=dict)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frame: enough to act on, short enough for a row."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def calibration_rows(rows: np.ndarray, seed: int) -> np.ndarray:
    """An evenly spread, seeded sample of the slice's rows for quantization calibration."""
    if len(rows) <= CALIBRATION_ROWS:
        return rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=CALIBRATION_ROWS, replace=False))


def split_validation(rows: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train on the start of the slice, validate on its end (the most recent rows).

    Search trials are scored here, never on the holdout.
    """
    if fraction <= 0:
        return rows, rows[:0]
    cut = len(rows) - max(1, int(round(len(rows) * fraction)))
    return rows[:cut], rows[cut:]


def torch_accuracy(module: torch.nn.Module, features: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of a trained module (logits) on rows."""
    with torch.no_grad():
        logits = module(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
    return float((logits.argmax(dim=1).numpy() == labels).mean())


def worker_identity() -> dict[str, Any]:
    """Where this candidate ran: host, pid and, under Ray, the node id."""
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        if ray.is_initialized():
            identity["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # lineage is best effort; never fail a candidate over it
        pass
    return identity


def evaluate_on_devices(
    onnx_bytes: bytes, data: SweepData, rows: np.ndarray, seed: int,
) -> tuple[tuple[DeviceResult, ...], dict[str, bytes]]:
    """Run ``onnx_bytes`` on each of the sweep's devices: their results and every artifact bytes.

    Every candidate goes through here (a trained one, an ensemble, a refit): scored on the
    holdout, calibrated on a seeded sample of ``rows`` (the rows it was trained on). A device
    that fails is a failed result for that device only. The artifacts include the model
    itself, each device's compiled file and per-row predictions, keyed by sha256.
    """
    holdout_x = data.features[data.holdout_start:data.holdout_stop]
    holdout_y = data.labels[data.holdout_start:data.holdout_stop]
    calibration = data.features[calibration_rows(rows, seed)]
    artifacts = {sha256_bytes(onnx_bytes): onnx_bytes}
    results = []
    for name in data.devices:
        try:
            run = get_device(name).run(onnx_bytes, holdout_x, holdout_y, calibration)
        except Exception as exc:  # failed on this device only; others still count
            results.append(DeviceResult(device=name, status="failed", error=describe_error(exc)))
            continue
        result = run.result
        if run.artifact is not None and result.artifact_sha256:
            artifacts[result.artifact_sha256] = run.artifact
        artifacts.update(run.extra_artifacts)
        if run.predictions is not None:
            encoded = encode_array(np.asarray(run.predictions, dtype=np.int64))
            digest = sha256_bytes(encoded)
            result = replace(result, predictions_sha256=digest)
            artifacts[digest] = encoded
        results.append(result)
    return tuple(results), artifacts


def run_candidate(spec: CandidateSpec, data: SweepData) -> CandidateOutcome:
    """Train, export and evaluate one candidate; failures become a failed record."""
    # One thread per task: Ray already runs one task per core, and torch's own
    # thread pool on top would oversubscribe the machine.
    torch.set_num_threads(1)
    base: dict[str, Any] = dict(
        candidate_id=spec.candidate_id,
        sweep_id=data.sweep_id,
        slice_id=spec.slice_id,
        family=spec.family,
        params=spec.params,
        seed=spec.seed,
    )
    rows = data.slice_rows[spec.slice_id]
    train_rows, validation_rows = split_validation(rows, spec.validation_fraction)
    lineage = {
        **data.lineage,
        "slice_rows": int(len(rows)),
        "slice_sha256": rows_sha256(rows),
        "train_rows": int(len(train_rows)),
        "worker": worker_identity(),
    }
    if spec.trial is not None:
        lineage["trial"] = spec.trial
    started = time.perf_counter()
    try:
        trained = train(
            get_family(spec.family), spec.params, data.features[train_rows],
            data.labels[train_rows], data.n_classes, spec.seed, data.input_shape,
            initial=data.init_models[spec.init_model] if spec.init_model else None,
        )
        if len(validation_rows):
            lineage["validation_rows"] = int(len(validation_rows))
            lineage["validation_accuracy"] = torch_accuracy(
                trained.module, data.features[validation_rows], data.labels[validation_rows]
            )
        holdout_x = data.features[data.holdout_start:data.holdout_stop]
        onnx_bytes = export_onnx(trained.module, holdout_x)
        lineage["onnx_max_abs_diff"] = verify_onnx(onnx_bytes, trained.module, holdout_x[:VERIFY_ROWS])
        lineage["final_loss"] = trained.final_loss
        lineage["train_steps"] = trained.steps
        if trained.stopping is not None:
            lineage["early_stopping"] = trained.stopping
    except Exception as exc:  # a candidate's failure is a row, never a crashed sweep
        return CandidateOutcome(
            CandidateRecord(**base, status="failed", error=describe_error(exc),
                            train_seconds=time.perf_counter() - started, lineage=lineage),
            {},
        )
    results, artifacts = evaluate_on_devices(onnx_bytes, data, rows, spec.seed)
    onnx_sha = sha256_bytes(onnx_bytes)
    lineage["compute_seconds"] = time.perf_counter() - started
    record = CandidateRecord(
        **base,
        status="ok",
        train_seconds=trained.seconds,
        onnx_sha256=onnx_sha,
        lineage=lineage,
        devices=results,
    )
    return CandidateOutcome(record, artifacts)

"""One candidate as one MLflow run: params, per-device metrics, lineage tags, its ONNX model.

The run is named after the candidate and carries its lineage as ``shadow.*``
tags (sweep, candidate, slice, dataset and its fingerprint, seed, each
model's sha256), so a run found in MLflow leads back to the store and the
artifact, and a candidate is found again in MLflow by its id (a resumed
sweep logs only the candidates MLflow lacks; a promotion registers the run's
model). A failed candidate is a run with status ``FAILED`` and its error in
the ``shadow.error`` tag. Uses ``MlflowClient`` with explicit run ids only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from selection.records import CandidateRecord
from selection.signature import ModelSignature
from selection.tracking.client import TrackingError, calls, log_onnx_model

TAG = "shadow."
#: Run tag naming the MLflow model logged for the artifact of a sha256 (one per shipped model).
MODEL_TAG = TAG + "model_uri."
#: MLflow keeps param values up to a bound; longer ones (a long list) are cut, the store keeps all.
_MAX_PARAM = 500


@dataclass(frozen=True)
class SweepContext:
    """What every run of one sweep is tagged with."""

    sweep_id: str
    sweep_name: str
    dataset: str
    dataset_fingerprint: str
    #: slice id -> strategy name (``recent``, ``window``, ...), for the ``shadow.slice_strategy`` tag.
    strategies: Mapping[str, str]


def experiment_id(client: Any, uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing (TrackingError if it was deleted)."""
    with calls(uri, f"finding or creating experiment {name!r}"):
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return str(client.create_experiment(name, tags={TAG + "kind": "sweep"}))
            except Exception:  # created by another driver at the same moment: read it back
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
    if found.lifecycle_stage != "active":
        raise TrackingError(f"MLflow at {uri}: experiment {name!r} is deleted; restore it "
                            "(`mlflow experiments restore`) or name another one in [mlflow] experiment")
    return str(found.experiment_id)


def runs_of_sweep(client: Any, uri: str, experiment: str, sweep_id: str) -> dict[str, Any]:
    """candidate id -> the newest finished (or failed) run of sweep ``sweep_id`` in ``experiment``."""
    found: dict[str, Any] = {}
    token = None
    with calls(uri, f"listing the runs of sweep {sweep_id}"):
        while True:
            page = client.search_runs(
                [experiment], filter_string=f"tags.`{TAG}sweep_id` = '{sweep_id}'",
                max_results=1000, page_token=token, order_by=["attributes.start_time ASC"],
            )
            for run in page:
                cid = run.data.tags.get(TAG + "candidate_id")
                if cid and run.info.status in ("FINISHED", "FAILED"):
                    found[cid] = run
            token = page.token
            if not token:
                return found


def find_run(client: Any, uri: str, experiment: str, candidate_id: str) -> Any | None:
    """The newest finished (or failed) run of candidate ``candidate_id`` in ``experiment``, or None."""
    with calls(uri, f"finding the run of candidate {candidate_id}"):
        page = client.search_runs(
            [experiment], filter_string=f"tags.`{TAG}candidate_id` = '{candidate_id}'",
            max_results=50, order_by=["attributes.start_time DESC"],
        )
    return next((run for run in page if run.info.status in ("FINISHED", "FAILED")), None)


def log_candidate(
    client: Any, uri: str, experiment: str, sweep: SweepContext, candidate: CandidateRecord, *,
    eligible: Mapping[str, bool | None], model_bytes: bytes | None,
) -> str:
    """Log ``candidate`` as a new run of ``experiment``; returns the run id.

    ``eligible`` is each device's eligibility under the sweep's ranking
    policy; ``model_bytes`` the candidate's exported ONNX (None for a failed
    candidate). The run ends ``FINISHED`` for an ok candidate, ``FAILED`` with
    the error for a failed one; a run the server broke off mid-way stays
    ``RUNNING`` and is ignored by :func:`runs_of_sweep`.
    """
    from mlflow.entities import Metric, Param

    cid = candidate.candidate_id
    now = int(time.time() * 1000)
    with calls(uri, f"logging candidate {cid}"):
        run = client.create_run(experiment, run_name=cid, tags=_tags(sweep, candidate))
        run_id = str(run.info.run_id)
        params = [Param(k, str(v)[:_MAX_PARAM]) for k, v in _params(sweep, candidate).items()]
        metrics = [Metric(k, v, now, 0) for k, v in _metrics(candidate, eligible).items()]
        client.log_batch(run_id, metrics=metrics, params=params)
    if candidate.status == "ok" and model_bytes is not None and candidate.onnx_sha256:
        log_model(client, uri, run_id, candidate, candidate.onnx_sha256, model_bytes, name="model")
    with calls(uri, f"ending the run of candidate {cid}"):
        client.set_terminated(run_id, "FINISHED" if candidate.status == "ok" else "FAILED")
    return run_id


def log_model(
    client: Any, uri: str, run_id: str, candidate: CandidateRecord, sha: str, model_bytes: bytes, *,
    name: str,
) -> str:
    """Log one of ``candidate``'s models (artifact ``sha``) to ``run_id``; tag the run with its URI."""
    signature = ModelSignature.from_lineage(candidate.lineage)
    model_uri = log_onnx_model(uri, run_id, model_bytes, signature, name=name,
                               tags={TAG + "candidate_id": candidate.candidate_id, TAG + "sha256": sha})
    with calls(uri, f"tagging run {run_id}"):
        client.set_tag(run_id, MODEL_TAG + sha, model_uri)
    return model_uri


def _tags(sweep: SweepContext, candidate: CandidateRecord) -> dict[str, str]:
    lineage = candidate.lineage if isinstance(candidate.lineage, dict) else {}
    tags = {
        TAG + "sweep_id": sweep.sweep_id,
        TAG + "sweep_name": sweep.sweep_name,
        TAG + "candidate_id": candidate.candidate_id,
        TAG + "slice_id": candidate.slice_id,
        TAG + "slice_strategy": sweep.strategies.get(candidate.slice_id, ""),
        TAG + "dataset": sweep.dataset,
        TAG + "dataset_fingerprint": str(lineage.get("dataset_fingerprint") or sweep.dataset_fingerprint),
        TAG + "seed": str(candidate.seed),
        TAG + "family": candidate.family,
        TAG + "status": candidate.status,
    }
    if candidate.onnx_sha256:
        tags[TAG + "onnx_sha256"] = candidate.onnx_sha256
    for result in candidate.devices:
        if result.artifact_sha256:
            tags[f"{TAG}artifact_sha256.{result.device}"] = result.artifact_sha256
    if candidate.refit_of:
        tags[TAG + "refit_of"] = candidate.refit_of
    error = candidate.error or next((d.error for d in candidate.devices if d.error), None)
    if error:
        tags[TAG + "error"] = error[:5000]
    return tags


def _params(sweep: SweepContext, candidate: CandidateRecord) -> dict[str, Any]:
    params: dict[str, Any] = {f"model.{k}": v for k, v in sorted(candidate.params.items())}
    params.update(family=candidate.family, seed=candidate.seed, slice_id=candidate.slice_id,
                  slice_strategy=sweep.strategies.get(candidate.slice_id, ""))
    if candidate.error:
        params["error"] = candidate.error.splitlines()[0] if candidate.error.strip() else candidate.error
    return params


def _metrics(candidate: CandidateRecord, eligible: Mapping[str, bool | None]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if candidate.train_seconds is not None:
        metrics["train_seconds"] = float(candidate.train_seconds)
    for result in candidate.devices:
        values = {"accuracy": result.accuracy, "latency_ms": result.latency_ms,
                  "size_bytes": result.size_bytes, "host_latency_p50_ms": result.host_latency_p50_ms}
        for key, value in values.items():
            if value is not None:
                metrics[f"{result.device}.{key}"] = float(value)
        ok = eligible.get(result.device)
        if ok is not None:
            metrics[f"{result.device}.eligible"] = 1.0 if ok else 0.0
    return metrics

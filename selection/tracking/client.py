"""Connecting to MLflow: the only module that imports ``mlflow``, and only inside functions.

Every call to the server goes through :func:`calls`, which turns MLflow's and
the HTTP layer's exceptions into one :class:`TrackingError` line naming the
server and the fix. :func:`connect` first asks the server's ``/health`` with a
short timeout, so a server that is down is found in seconds, before a sweep
trains or a promotion changes anything (MLflow's own client would retry for
minutes). The retries and timeout MLflow applies to each request are lowered,
and its printing of run URLs on stdout turned off, unless the user set them
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``, ...):
only for the duration of :func:`calls`, then put back as they were.

:func:`log_onnx_model` logs an ONNX model with ``mlflow.onnx.log_model`` to an
explicit run id; that function resolves its server from MLflow's global
tracking URI, so the URI is set around the call and restored afterwards (the
only place global MLflow state is touched; everything else uses
``MlflowClient`` with explicit ids).
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from selection.errors import ConfigError, ShadowError
from selection.signature import INPUT_NAME, OUTPUT_NAME, ModelSignature
from selection.tracking.settings import ENV_TRACKING_URI

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: Seconds to wait for ``/health`` before calling the server unreachable.
HEALTH_TIMEOUT_S = 5.0
# MLflow's defaults (7 retries with backoff, 120 s timeout) make a dead server cost minutes; and
# it prints each run's URL on stdout, where `--format json` must be alone (its only print there).
_REQUEST_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                     "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                     "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class TrackingError(ShadowError, ConnectionError):
    """The MLflow server cannot be reached, or refused a request."""


def require_mlflow() -> Any:
    """The ``mlflow`` module, or ConfigError naming the extra to install."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "MLflow tracking is configured ([mlflow], --mlflow or $MLFLOW_TRACKING_URI) but mlflow "
            "is not installed; install the extra: pip install 'shadow-sweep[mlflow]'"
        ) from None
    return mlflow


def check_reachable(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """TrackingError unless the tracking server at ``uri`` answers ``GET /health`` (http/https only)."""
    if not uri.lower().startswith(("http://", "https://")):
        return  # a local store (sqlite:, file:) is reached by opening it: the first call says
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as answer:
            if answer.status != 200:
                raise TrackingError(_unreachable(uri, f"/health answered HTTP {answer.status}"))
    except urllib.error.HTTPError as exc:
        raise TrackingError(_unreachable(uri, f"/health answered HTTP {exc.code}")) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(_unreachable(uri, str(reason))) from None


def _unreachable(uri: str, why: str) -> str:
    return (f"the MLflow server at {uri} cannot be reached ({why}); start it (e.g. `mlflow server "
            "--host 127.0.0.1 --port 5000`) or fix the tracking URI ([mlflow] tracking_uri, "
            "--mlflow, $MLFLOW_TRACKING_URI)")


def connect(uri: str) -> MlflowClient:
    """A client of the tracking server and model registry at ``uri``, checked to answer first."""
    require_mlflow()
    check_reachable(uri)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def calls(uri: str, what: str) -> Iterator[None]:
    """Run MLflow calls; any failure becomes one TrackingError line saying ``what`` failed.

    MLflow's request settings (:data:`_REQUEST_DEFAULTS`: fewer retries, a shorter timeout, no
    run URL printed on stdout, which a verb's ``--format json`` owns) are in force meanwhile.
    """
    try:
        with _request_settings():
            yield
    except ShadowError:
        raise
    except Exception as exc:  # MlflowException, requests' errors, urllib3's: all one outcome
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise TrackingError(f"MLflow at {uri}: {what} failed ({first}); check the server "
                            "(`curl URI/health`) and retry") from None


_settings_lock = threading.Lock()
_settings_users = 0
_settings_saved: dict[str, str | None] = {}


@contextmanager
def _request_settings() -> Iterator[None]:
    """:data:`_REQUEST_DEFAULTS` set in the environment (where unset) while any call runs.

    What stays global, and why: MLflow reads these settings from ``os.environ`` at each
    request and has no per-client or per-call option, so while a call runs every thread of the
    process sees them. They are set when the first concurrent call starts and put back (a
    variable the user never set is removed again) when the last one ends; nothing is left
    behind once no MLflow call runs. (The former stdout redirect is gone: it swapped
    ``sys.stdout`` for every thread, and the run URL was MLflow's only print there.)
    """
    global _settings_users
    with _settings_lock:
        if _settings_users == 0:
            _settings_saved.clear()
            for key, value in _REQUEST_DEFAULTS.items():
                _settings_saved[key] = os.environ.get(key)
                os.environ.setdefault(key, value)
        _settings_users += 1
    try:
        yield
    finally:
        with _settings_lock:
            _settings_users -= 1
            if _settings_users == 0:
                for key, saved in _settings_saved.items():
                    if saved is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = saved


def mlflow_signature(signature: ModelSignature) -> Any:
    """The MLflow signature of a model with ``signature``: float32 rows in, class probabilities out."""
    import numpy as np
    from mlflow.models import ModelSignature as MlflowSignature
    from mlflow.types.schema import Schema, TensorSpec

    row = tuple(signature.input_shape) if signature.input_shape else (signature.n_features or -1,)
    classes = len(signature.classes) if signature.classes else -1
    return MlflowSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *row), signature.input or INPUT_NAME)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes), signature.output or OUTPUT_NAME)]),
    )


def log_onnx_model(
    uri: str, run_id: str, model_bytes: bytes, signature: ModelSignature | None, *,
    name: str, tags: dict[str, str],
) -> str:
    """Log ``model_bytes`` (ONNX) to run ``run_id`` as an MLflow model; returns its model URI.

    The signature gives MLflow the input name and shape; the class labels,
    feature names and target ride along as the model's metadata (MLflow's
    signature has no place for class labels). Pip requirements are the onnx
    flavour's defaults, so MLflow does not load the model in a subprocess to
    infer them.
    """
    require_mlflow()
    import mlflow
    import mlflow.onnx
    import onnx

    model = onnx.load_model_from_string(model_bytes)
    metadata = {"shadow_signature": signature.to_dict()} if signature else None
    with calls(uri, f"logging model {name!r} of run {run_id}"), _tracking_uri(mlflow, uri):
        info = mlflow.onnx.log_model(
            model, name=name, run_id=run_id,
            signature=mlflow_signature(signature) if signature else None,
            metadata=metadata, tags=tags, save_as_external_data=False,
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        )
    return str(info.model_uri)


@contextmanager
def _tracking_uri(mlflow: Any, uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` for one call, then put back.

    MLflow's ``set_tracking_uri`` also writes (and, restoring "unset", deletes) the process's
    ``$MLFLOW_TRACKING_URI``: the user's variable is saved and put back too, or a long-running
    driver (``shadow watch``) would forget it after its first logged model.
    """
    saved_env = os.environ.get(ENV_TRACKING_URI)
    try:
        try:
            from mlflow.tracking._tracking_service.utils import _use_tracking_uri
        except ImportError:  # a future MLflow without the private helper: set and restore by hand
            previous = mlflow.get_tracking_uri()
            mlflow.set_tracking_uri(uri)
            try:
                yield
            finally:
                mlflow.set_tracking_uri(previous)
            return
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved_env is None:
            os.environ.pop(ENV_TRACKING_URI, None)
        else:
            os.environ[ENV_TRACKING_URI] = saved_env

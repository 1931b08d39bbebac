"""One verified, loaded channel version: an ONNX Runtime session plus its manifest.

A version directory (``channels/.versions/<name>/``) is immutable once its
channel points at it, so loading reads both files from the *resolved*
directory: a swap of the channel link while we read cannot mix a new
manifest with an old model. Loading is all-or-nothing: the bytes must hash to
the manifest's sha256, hold no tensor whose data lives in another file
(``selection.artifacts.external_data``: such a model would make ONNX Runtime
read that file), ONNX Runtime must build a session, and a smoke inference must
return one finite probability row; otherwise ModelLoadError, and whoever
asked keeps the model it had. Both files must be regular files (a symlink is
refused: it could lead anywhere). The manifest's ``model_io`` is read by
:class:`selection.signature.ModelSignature` alone.

What this trusts: the manifest beside the model. Its sha256 proves the model
bytes are the ones it describes, not who wrote it: without ``trusted_keys``,
whoever can write inside the channels directory can serve any model. With
``trusted_keys`` (``selection.signing``) the manifest's exact bytes must carry
a valid ``manifest.sig`` by one of those keys, checked before anything else
is read from them, so a forged or edited manifest (and hence a swapped model,
whose sha256 the signed manifest fixes) is refused. Which *directory* is
trusted is decided by the caller (:class:`selection.runtime.ChannelRuntime` accepts only
versions inside its channels directory; ``shadow serve`` with a store also
requires a version the store recorded).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from selection.artifacts.external_data import ExternalDataError, check_self_contained
from selection.channels.layout import MANIFEST_FILE, MODEL_FILE, read_regular, version_name
from selection.errors import IntegrityError
from selection.live.log import ModelRef
from selection.runtime.errors import ModelLoadError
from selection.signature import INPUT_NAME, OUTPUT_NAME, SIGNATURE_KEY, ModelSignature, SignatureError
from selection.signing import PublicKey, verify_version

__all__ = ["DEFAULT_INPUT", "DEFAULT_OUTPUT", "MANIFEST_FILE", "MODEL_FILE", "LoadedModel",
           "load_model_bytes", "load_model_file", "load_version"]

#: Graph names the sweep exports; used when a manifest records no signature.
DEFAULT_INPUT = INPUT_NAME
DEFAULT_OUTPUT = OUTPUT_NAME
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_DTYPES: dict[str, type[np.floating[Any]]] = {"tensor(float)": np.float32, "tensor(double)": np.float64}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to answer; immutable, so a request can hold it while a swap happens.

    ONNX Runtime's ``InferenceSession.run`` is safe to call from many
    threads at once, so one instance serves every request thread.
    """

    channel: str
    version: str
    candidate_id: str
    sha256: str
    manifest: dict[str, Any]
    #: The manifest's signature; None when it records none (names then come from the graph).
    signature: ModelSignature | None
    input_name: str
    output_name: str
    n_features: int
    features: tuple[str, ...] | None
    classes: tuple[str, ...] | None
    dtype: type[np.floating[Any]]
    session: Any = field(repr=False)
    loaded_at: datetime
    load_ms: float

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities, ``(n_rows, n_classes)``, for a ready ``(n_rows, n_features)`` batch."""
        return np.asarray(self.session.run([self.output_name], {self.input_name: batch})[0])

    def predict(self, batch: np.ndarray) -> dict[str, Any]:
        """JSON-able answer: predictions (class labels when known), probabilities, model id."""
        probabilities = self.run(batch)
        indices = probabilities.argmax(axis=1).tolist()
        labels = [self.classes[i] if self.classes and i < len(self.classes) else i for i in indices]
        return {
            "predictions": labels,
            "probabilities": probabilities.astype(float).round(6).tolist(),
            "candidate_id": self.candidate_id,
            "sha256": self.sha256,
        }

    @property
    def ref(self) -> ModelRef:
        """Who answered, as the prediction log records it."""
        return ModelRef(self.candidate_id, self.sha256, self.classes)

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows: identity, io contract, when it was loaded."""
        return {
            "channel": self.channel,
            "version": self.version,
            "candidate_id": self.candidate_id,
            "sha256": self.sha256,
            "history_id": self.manifest.get("history_id"),
            "device": self.manifest.get("device"),
            "promoted_at": self.manifest.get("promoted_at"),
            "promoted_by": self.manifest.get("promoted_by"),
            "input": self.input_name,
            "output": self.output_name,
            "n_features": self.n_features,
            "features": list(self.features) if self.features else None,
            "classes": list(self.classes) if self.classes else None,
            # Earlier labels the app must send, and how to code them (see selection.signature).
            **({"label_features": list(self.signature.label_features),
                "label_codes": list(self.signature.label_codes)}
               if self.signature is not None and self.signature.label_features else {}),
            "loaded_at": self.loaded_at.isoformat(),
            "load_ms": round(self.load_ms, 3),
        }


def load_version(version_dir: Path, *, channel: str, threads: int = 1,
                 trusted_keys: Mapping[str, PublicKey] | None = None) -> LoadedModel:
    """Verify, load and smoke-test the model in ``version_dir`` (ModelLoadError if anything fails).

    ``trusted_keys`` (``selection.signing.TrustedKeys``): when given, the
    manifest must be signed by one of them (``manifest.sig``), else
    ModelLoadError; None skips the signature check.

    The version must belong to ``channel``, signed or not: its manifest must
    name ``channel`` and the directory must be named as the promotion that
    wrote it names it (``version_name(channel, history_id, sha256)``), else
    ModelLoadError. A signature proves who wrote a manifest, not which channel
    may serve it: without this, pointing ``production`` at a (validly signed)
    canary version would serve the canary model as production.
    """
    start = time.perf_counter()
    manifest = _read_manifest(version_dir, trusted_keys)
    sha = manifest.get("sha256")
    if not isinstance(sha, str) or not _SHA_RE.match(sha):
        raise ModelLoadError(
            f"{version_dir / MANIFEST_FILE} must record the model's sha256 (64 hex digits); "
            f"got {sha!r}; run `shadow doctor --repair` to rewrite it from the store"
        )
    model_path = version_dir / MODEL_FILE
    data = _read(model_path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha:
        raise ModelLoadError(
            f"{model_path} must hash to the manifest's sha256 {sha}; its {len(data)} bytes "
            f"hash to {actual} (tampered with or truncated); refusing it; run "
            "`shadow doctor --repair` to restore it from the artifact store"
        )
    try:
        # Before ONNX Runtime sees the bytes: building the session is what reads the files.
        check_self_contained(data, str(model_path))
    except ExternalDataError as exc:
        raise ModelLoadError(f"refusing version {version_dir.name}: {exc}") from None
    signature = _signature(manifest, version_dir / MANIFEST_FILE)
    model = load_model_bytes(data, candidate_id=str(manifest.get("candidate_id", "unknown")),
                             sha256=sha, channel=channel, signature=signature,
                             version=version_dir.name, manifest=manifest, threads=threads,
                             where=model_path, smoke=False)
    _smoke(model, model_path)
    # Last, so a version that is damaged as well reports the damage (the repair is the same).
    _check_bound(manifest, version_dir, channel, sha)
    return _with_load_ms(model, (time.perf_counter() - start) * 1000)


def load_model_bytes(data: bytes, *, candidate_id: str, sha256: str | None = None,
                     channel: str = "", signature: ModelSignature | None = None,
                     version: str = "", manifest: dict[str, Any] | None = None,
                     threads: int = 1, where: Path | str = "model", smoke: bool = True
                     ) -> LoadedModel:
    """A model from its bytes (a shadow from the artifact store, or an edge app's own file).

    The same session, io contract and smoke test as a channel version; the
    caller vouches for the bytes (``sha256``, if given, must match them).
    """
    start = time.perf_counter()
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256:
        raise ModelLoadError(f"{where} must hash to {sha256}; its bytes hash to {actual}; "
                             "refusing it")
    model_path = Path(where)
    if manifest is None:
        try:
            check_self_contained(data, str(model_path))
        except ExternalDataError as exc:
            raise ModelLoadError(f"refusing {where}: {exc}") from None
    session = _session(data, model_path, threads)
    input_name = _pick(signature.input if signature else None,
                       [i.name for i in session.get_inputs()], DEFAULT_INPUT, "input", model_path)
    output_name = _pick(signature.output if signature else None,
                        [o.name for o in session.get_outputs()], DEFAULT_OUTPUT, "output",
                        model_path)
    node = next(i for i in session.get_inputs() if i.name == input_name)
    features = (signature.features or None) if signature else None  # [] means unnamed too
    n_features = _width(node.shape, features, model_path)
    dtype = _DTYPES.get(node.type)
    if dtype is None:
        raise ModelLoadError(
            f"the runtime feeds float tensors; input {input_name!r} of {model_path} is "
            f"{node.type}; export the model with a float32 input"
        )
    model = LoadedModel(
        channel=channel, version=version, candidate_id=candidate_id, sha256=actual,
        manifest=manifest if manifest is not None else {"candidate_id": candidate_id,
                                                        "sha256": actual},
        signature=signature, input_name=input_name, output_name=output_name,
        n_features=n_features, features=features,
        classes=(signature.classes or None) if signature else None,
        dtype=dtype, session=session, loaded_at=datetime.now(UTC), load_ms=0.0,
    )
    if smoke:
        _smoke(model, model_path)
        return _with_load_ms(model, (time.perf_counter() - start) * 1000)
    return model


def load_model_file(path: str | Path, *, candidate_id: str | None = None,
                    signature: ModelSignature | None = None, threads: int = 1) -> LoadedModel:
    """An ONNX file as a model (an edge app's shadow); its candidate id defaults to the file stem."""
    model_path = Path(path)
    return load_model_bytes(_read(model_path), candidate_id=candidate_id or model_path.stem,
                            signature=signature, threads=threads, where=model_path)


def _check_bound(manifest: dict[str, Any], version_dir: Path, channel: str, sha: str) -> None:
    """ModelLoadError unless the manifest and directory name say this version is ``channel``'s."""
    fix = ("point the channel back at one of its own versions (`shadow rollback --channel "
           f"{channel}`, or `shadow doctor --repair` with the store), or promote the model to "
           f"{channel} so it gets a version of its own")
    recorded = manifest.get("channel")
    if recorded != channel:
        raise ModelLoadError(
            f"refusing version {version_dir.name} for channel {channel!r}: its manifest says it "
            f"was promoted to channel {recorded!r}, and a version serves only its own channel; "
            f"{fix}")
    history_id = manifest.get("history_id")
    expected = (version_name(channel, history_id, sha)
                if isinstance(history_id, int) and not isinstance(history_id, bool) else None)
    if version_dir.name != expected:
        raise ModelLoadError(
            f"refusing version {version_dir.name} for channel {channel!r}: a version directory "
            "must be named after its manifest's channel, history_id and sha256 "
            f"({expected or f'history_id {history_id!r} is not an integer'}); {fix}")


def _read(path: Path) -> bytes:
    """A version's file: a regular file, never a symlink (which could lead anywhere)."""
    try:
        return read_regular(path)
    except OSError as exc:
        if os.path.islink(path):
            raise ModelLoadError(
                f"{path} must be a regular file, not a symlink (-> {os.readlink(path)}); "
                "refusing it; run `shadow doctor --repair`") from None
        raise ModelLoadError(
            f"{path} must be readable; {exc.strerror}; run `shadow doctor --repair`"
        ) from None


def _read_manifest(version_dir: Path,
                   trusted_keys: Mapping[str, PublicKey] | None) -> dict[str, Any]:
    path = version_dir / MANIFEST_FILE
    raw = _read(path)
    if trusted_keys is not None:
        try:
            # These exact bytes are what gets parsed and trusted below.
            verify_version(version_dir, trusted_keys, manifest_bytes=raw)
        except IntegrityError as exc:
            raise ModelLoadError(str(exc)) from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise ModelLoadError(
            f"{path} must be a readable JSON manifest; {exc}; run `shadow doctor --repair`"
        ) from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path} must hold a JSON object; run `shadow doctor --repair`")
    return manifest


def _session(data: bytes, model_path: Path, threads: int) -> Any:
    import onnxruntime as ort  # lazy: importing it costs ~0.2 s and only serving needs it

    options = ort.SessionOptions()
    # Many request threads share one session: one thread per run avoids
    # oversubscribing the cores (and spinning threads stealing them).
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped errors for bad models
        raise ModelLoadError(
            f"{model_path} must be a model ONNX Runtime can load; it failed: "
            f"{' '.join(str(exc).split())[:300]}; promote another candidate or run "
            "`shadow doctor --repair`"
        ) from None


def _signature(manifest: dict[str, Any], path: Path) -> ModelSignature | None:
    data = manifest.get(SIGNATURE_KEY)
    if data is None:
        return None
    try:
        return ModelSignature.from_dict(data, where=f"{path}'s {SIGNATURE_KEY!r}")
    except SignatureError as exc:
        raise ModelLoadError(f"{exc}; run `shadow doctor --repair` to rewrite it from the "
                             "store, or re-export the model with a valid signature") from None


def _pick(wanted: str | None, names: list[str], default: str, what: str,
          model_path: Path) -> str:
    """The graph's ``what`` name: the signature's, else the default, else the only one."""
    if wanted is None:
        wanted = default if default in names or len(names) != 1 else names[0]
    if wanted not in names:
        raise ModelLoadError(
            f"the {what} {wanted!r} named by the manifest must exist in {model_path}; "
            f"the graph's {what}s are {names}; re-export the model with that name"
        )
    return wanted


def _width(shape: list[Any], features: tuple[str, ...] | None, model_path: Path) -> int:
    if len(shape) == 2 and isinstance(shape[1], int):
        if features and len(features) != shape[1]:
            raise ModelLoadError(
                f"the manifest lists {len(features)} features but {model_path} takes "
                f"{shape[1]} columns; re-export the model and its manifest together"
            )
        return shape[1]
    if len(shape) == 2 and features:
        return len(features)
    raise ModelLoadError(
        f"the runtime serves models with a (batch, n_features) input; {model_path} has "
        f"shape {shape} and its manifest lists no features; export a 2-D input"
    )


def _smoke(model: LoadedModel, model_path: Path) -> None:
    """One inference on a zero row before the model may answer anyone."""
    try:
        out = model.run(np.zeros((1, model.n_features), dtype=model.dtype))
    except Exception as exc:  # noqa: BLE001 - any failure means: do not serve this
        raise ModelLoadError(
            f"{model_path} must answer a smoke inference on one zero row; it failed: "
            f"{' '.join(str(exc).split())[:300]}; promote another candidate"
        ) from None
    if out.ndim != 2 or out.shape[0] != 1 or not np.isfinite(out).all():
        raise ModelLoadError(
            f"{model_path} must return one finite row of probabilities for one input row; "
            f"got shape {out.shape}; promote another candidate"
        )


def _with_load_ms(model: LoadedModel, ms: float) -> LoadedModel:
    from dataclasses import replace

    return replace(model, load_ms=ms)

"""The hot-swap runtime: serve a channel's model and follow the channel as it changes.

A background thread polls the channel symlink (``os.readlink``, a few
microseconds, portable: no inotify/kqueue dependency, and a symlink swap is
exactly one rename to notice). When the target changes it loads, verifies
and smoke-tests the new version *off the request path*, then replaces one
attribute: ``self._model``. Assigning a reference is atomic in Python, and a
request reads it once at its start, so requests in flight finish on the model
they started on and the old session is freed when the last of them returns.
A version that fails to load is refused (an event says why) and the current
model keeps serving; it is retried only when the link moves again or its
files change (``shadow doctor --repair`` rewrote them).

What the runtime trusts, and what it refuses (it needs no store, so this is
all an edge app gets):

- the channel link must resolve to a real directory directly inside
  ``<channels_dir>/.versions``; a link re-pointed anywhere else (another
  folder, another home, through ``..`` or a symlinked version entry) is
  refused whatever its manifest says (``selection.channels.layout``);
- ``model.onnx`` and ``manifest.json`` must be regular files, the model must
  hash to the manifest's sha256 and hold no external-data tensor (which would
  make ONNX Runtime read another file) (``runtime.model.load_version``);
- without ``trusted_keys``, the manifest itself is trusted: whoever can write
  inside the channels directory can serve a model of their own, and file
  permissions are the only boundary;
- with ``trusted_keys`` (public key files, ``selection.signing``), the
  manifest's exact bytes must be signed (``manifest.sig``, Ed25519) by one of
  those keys: an unsigned version, one signed by another key, an edited
  manifest and a swapped model (the signed manifest fixes its sha256) are all
  refused. Writing the folder is then not enough; forging a version takes the
  private key, which stays on the promoting machine
  (``$SHADOW_HOME/keys/signing.key``). Several keys may be trusted at once
  (rotation). A refused version at start raises ModelLoadError; during a hot
  swap it is refused (a ``refused`` event) and the old model keeps serving;
- ``verify`` adds the caller's own check: ``shadow serve`` with a store passes
  one that accepts only versions the store recorded, with the sha256 it
  recorded.

Signatures prove who wrote a version, not that it is the newest: anyone who
can move the link can point it back at an older version that was signed
(the store check refuses that; without a store, protect the link with file
permissions).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from selection.channels.layout import (
    MANIFEST_FILE,
    MODEL_FILE,
    UntrustedChannelError,
    resolve_target,
)
from selection.errors import IntegrityError
from selection.live.ids import new_request_id
from selection.live.log import PredictionLog
from selection.runtime.errors import ModelLoadError, NoModelError
from selection.runtime.inputs import parse_rows
from selection.runtime.model import LoadedModel, load_version
from selection.runtime.shadows import ShadowScorer
from selection.signing import SIGNATURE_FILE, PublicKey, TrustedKeys

#: A caller's extra check of a loaded model before it may answer, given the model serving now
#: (None at start); raises an IntegrityError (e.g. ModelLoadError) to refuse it.
Verifier = Callable[[LoadedModel, LoadedModel | None], None]

#: Seconds between two looks at the channel link. 5 ms keeps the swap delay
#: well under the 50 ms target for a ~0.2% CPU cost (measured; see benchmarks/).
DEFAULT_POLL_S = 0.005


@dataclass(frozen=True)
class RuntimeEvent:
    """Something the runtime did on its own: ``loaded``, ``swapped``, ``refused`` or ``missing``."""

    kind: str
    at: datetime
    version: str | None
    candidate_id: str | None = None
    sha256: str | None = None
    previous_candidate_id: str | None = None
    load_ms: float | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``GET /model`` and logs)."""
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


class ChannelRuntime:
    """Serves predictions from ``channels/<channel>`` and hot-swaps it when it changes.

    ``channels_dir`` is ``$SHADOW_HOME/channels`` (or any copy of it on an
    edge device). ``on_event`` is called from the watcher thread; keep it
    quick. ``verify`` (optional) is called with every loaded model and the
    one serving before it may answer, at start and before each swap (from the
    watcher thread); an IntegrityError it raises refuses that model.
    ``trusted_keys`` (paths of PEM public key files, loaded ``PublicKey``
    objects or a ``TrustedKeys``): when given, only versions whose manifest
    one of them signed are served (SigningKeyError here if a key file is bad
    or the list is empty). ``log`` (a ``selection.live.PredictionLog``, or a
    path for one this runtime opens and closes) records every answer;
    ``shadows`` (a :class:`~selection.runtime.shadows.ShadowScorer`, or
    loaded models, e.g. ``load_model_file``) score the same inputs in the
    background and log theirs: the edge form of ``shadow serve --shadows``,
    whose log ``shadow feedback`` ingests later. Use as a context manager, or
    call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        channels_dir: str | Path,
        channel: str = "production",
        *,
        poll_s: float = DEFAULT_POLL_S,
        reload: bool = True,
        threads: int = 1,
        on_event: Callable[[RuntimeEvent], None] | None = None,
        verify: Verifier | None = None,
        trusted_keys: TrustedKeys | Iterable[str | os.PathLike[str] | PublicKey] | None = None,
        log: PredictionLog | str | os.PathLike[str] | None = None,
        shadows: ShadowScorer | Sequence[LoadedModel] | None = None,
    ) -> None:
        self.channels_dir = Path(channels_dir)
        self.channel = channel
        self.poll_s = poll_s
        self.reload = reload
        self.threads = threads
        self._on_event = on_event
        self._verify = verify
        # Loaded now, so a bad key file fails the constructor, not the first swap.
        self.trusted_keys = None if trusted_keys is None else TrustedKeys.load(trusted_keys)
        self._model: LoadedModel | None = None
        self._loaded_target: str | None = None  # the link text the current model came from
        self._refused: tuple[str, tuple[int, ...]] | None = None  # (version, file stats)
        self._events: deque[RuntimeEvent] = deque(maxlen=20)
        self._counts = {"swaps": 0, "refused": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # A log named by path is this runtime's to close; a PredictionLog object is the caller's.
        self._owns_log = log is not None and not isinstance(log, PredictionLog)
        self.log: PredictionLog | None = (
            None if log is None else log if isinstance(log, PredictionLog)
            else PredictionLog(log, channel=channel))
        self.shadows: ShadowScorer | None = (
            None if shadows is None else shadows if isinstance(shadows, ShadowScorer)
            else ShadowScorer(shadows, self.log))

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> LoadedModel:
        """Load the channel's current model (raises if it is missing or bad), then watch it."""
        target = self._target()
        if target is None:
            raise NoModelError(
                f"channel {self.channel!r} must exist to be served; {self._link()} is missing; "
                f"promote a model first (`shadow promote CANDIDATE_ID --channel {self.channel}`) "
                "or pass the right --home/--channel"
            )
        model = self._load(target)
        self._model, self._loaded_target = model, target
        if self.shadows is not None:
            self.shadows.follow_swap(None, model)  # the champion never shadows itself
            self.shadows.start()
        self._emit(RuntimeEvent("loaded", _now(), model.version, model.candidate_id,
                                model.sha256, load_ms=model.load_ms))
        if self.reload and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name=f"watch-{self.channel}",
                                            daemon=True)
            self._thread.start()
        return model

    def stop(self) -> None:
        """Stop watching (the current model keeps answering :meth:`predict`).

        Shadows score what they have queued and stop; the prediction log is
        flushed (and closed when it was given as a path).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.shadows is not None:
            self.shadows.stop()
        if self.log is not None:
            if self._owns_log:
                self.log.close()
            else:
                self.log.flush()

    def __enter__(self) -> ChannelRuntime:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- serving --------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel:
        """The model answering now (NoModelError before :meth:`start`)."""
        model = self._model
        if model is None:
            raise NoModelError(f"the runtime of channel {self.channel!r} has not loaded a model; "
                               "call start() first")
        return model

    def predict(self, payload: Any, request_id: str | None = None) -> dict[str, Any]:
        """Answer one request (``{"rows": [...]}``, see ``runtime.inputs``) on one model.

        The answer carries ``request_id`` (a new uuid4 hex unless given: the
        key its label comes back with). With a log, the champion's predicted
        labels are logged; with shadows, the batch is queued for them (or
        skipped when they are behind), never waited for.
        """
        model = self.model  # read once: this request finishes on this model, swap or not
        signature = model.signature
        batch = parse_rows(payload, n_features=model.n_features, features=model.features,
                           dtype=model.dtype,
                           label_columns=signature.label_columns() if signature else (),
                           n_classes=len(signature.label_codes) if signature else 0)
        answer = model.predict(batch)
        rid = request_id if request_id is not None else new_request_id()
        answer["request_id"] = rid
        # The log keeps a request id's first inputs: a reused id's other inputs are not logged.
        digest = (hashlib.sha256(batch.tobytes()).hexdigest()
                  if self.log is not None or self.shadows is not None else None)
        if self.log is not None and digest is not None:
            if not self.log.log_champion(rid, model.ref, answer["predictions"], digest) \
                    and self.log.closed:
                # Stopping: an answer that could not be logged is not given (no lost evidence).
                raise NoModelError("the server is stopping and its prediction log is closed; "
                                   "retry the request (on its restart)")
        if self.shadows is not None:
            self.shadows.submit(rid, batch, model, answer["predictions"], digest)
        return answer

    def status(self) -> dict[str, Any]:
        """The current model, counters and recent events (JSON-able)."""
        model = self._model
        return {
            "model": model.describe() if model else None,
            "watching": self._thread is not None and self._thread.is_alive(),
            "poll_ms": self.poll_s * 1000,
            # The key ids a version must be signed by; None: signatures are not checked.
            "trusted_keys": sorted(self.trusted_keys) if self.trusted_keys is not None else None,
            **self._counts,
            "log": self.log.stats() if self.log is not None else None,
            "shadows": self.shadows.stats() if self.shadows is not None else None,
            "events": [e.as_dict() for e in self._events],
        }

    # -- watching ---------------------------------------------------------------------

    def check_now(self) -> bool:
        """Look at the channel once; swap if it moved to a loadable version. True if swapped."""
        target = self._target()
        current = self._model.version if self._model else None
        if target is None:
            if not self._events or self._events[-1].kind != "missing":
                self._emit(RuntimeEvent("missing", _now(), None, detail=(
                    f"{self._link()} disappeared; still serving {current}")))
            return False
        if target == self._loaded_target:  # link text is ".versions/<name>": unchanged
            return False
        stats = self._stats(target)
        if self._refused == (target, stats):
            return False  # already refused these exact files
        try:
            model = self._load(target)
        except ModelLoadError as exc:
            self._refused = (target, stats)
            self._counts["refused"] += 1
            self._emit(RuntimeEvent("refused", _now(), target, detail=str(exc)))
            return False
        previous, self._model = self._model, model  # the swap: one reference assignment
        self._loaded_target = target
        self._refused = None
        self._counts["swaps"] += 1
        if self.shadows is not None:
            self.shadows.follow_swap(previous, model)
        self._emit(RuntimeEvent("swapped", _now(), model.version, model.candidate_id,
                                model.sha256, previous.candidate_id if previous else None,
                                load_ms=model.load_ms))
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_now()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any surprise
                self._emit(RuntimeEvent("refused", _now(), None, detail=f"watcher error: {exc!r}"))
                time.sleep(min(1.0, self.poll_s * 100))

    def _load(self, target: str) -> LoadedModel:
        """Load the version the link leads to, if the link is one we may follow."""
        try:
            version = resolve_target(self.channels_dir, self.channel, target)
        except UntrustedChannelError as exc:
            raise ModelLoadError(str(exc)) from None
        model = load_version(version, channel=self.channel, threads=self.threads,
                             trusted_keys=self.trusted_keys)
        if self._verify is not None:
            try:
                self._verify(model, self._model)
            except IntegrityError as exc:
                raise ModelLoadError(str(exc)) from None
        return model

    def _link(self) -> Path:
        return self.channels_dir / self.channel

    def _target(self) -> str | None:
        try:
            return os.readlink(self._link())
        except OSError:
            return None

    def _stats(self, target: str) -> tuple[int, ...]:
        """Size and mtime of a version's files: a refused version is retried when they change."""
        out: list[int] = []
        # The signature too: a version refused as unsigned is retried once it is signed.
        for name in (MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE):
            try:
                st = os.stat(self.channels_dir / target / name)
                out += [st.st_size, st.st_mtime_ns, st.st_ino]
            except OSError:
                out += [-1, -1, -1]
        return tuple(out)

    def _emit(self, event: RuntimeEvent) -> None:
        self._events.append(event)
        if self._on_event is not None:
            self._on_event(event)


def _now() -> datetime:
    return datetime.now(UTC)

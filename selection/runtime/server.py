"""``shadow serve``'s HTTP front end over a :class:`~selection.runtime.ChannelRuntime`.

Standard library only for HTTP (``http.server``: an edge app installs nothing
more): one thread per connection, HTTP/1.1 keep-alive, JSON in and out.
Framing and deadlines are ``runtime.http_handler``; connection limits
``runtime.http_server``. Endpoints:

- ``POST /predict``: body ``{"rows": [[...], ...]}`` or ``{"rows": [{"name": value, ...}]}``;
  answers ``predictions``, ``probabilities``, ``candidate_id``, ``sha256`` and
  ``request_id`` (the client's ``X-Request-Id`` if it sent a valid one, else a
  new uuid4 hex; also sent back as the ``X-Request-Id`` header);
- ``POST /feedback``: ``{"request_id": ..., "label": ...}`` or a list of them
  (``selection.live.feedback`` has the rules: 404 unknown id, 409 a different
  label for a labelled row, 422 a label the model cannot predict; 503 with
  ``Retry-After`` while another writer holds the log);
- ``GET /metrics``: Prometheus text format (``runtime.metrics``);
- ``GET /model``: the model answering now, counters, shadows, the log, recent events;
- ``GET /healthz``: 200 with the model's id while one is loaded, else 503.

Every client mistake is a 4xx JSON ``{"error": message, "status": code}``;
an unexpected failure is a 500 JSON answer for that request only, never a dead
server. Answers are strict JSON: probabilities that overflowed to NaN are a 422.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from selection.errors import ConfigError, NotFoundError, ShadowError
from selection.live.db import LogBusyError
from selection.live.feedback import (
    BadLabelError,
    FeedbackError,
    LabelConflictError,
    UnknownRequestError,
    parse_feedback,
)
from selection.live.ids import REQUEST_ID_RULE, valid_request_id
from selection.runtime import BadInputError, ChannelRuntime, NoModelError
from selection.runtime.http_handler import MAX_REQUEST_LINE, JsonHandler, encode_json
from selection.runtime.http_server import LISTEN_BACKLOG, BoundedServer, ServerLimits
from selection.runtime.inputs import parse_json
from selection.runtime.metrics import CONTENT_TYPE, ServerMetrics

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "LISTEN_BACKLOG", "MAX_BODY_BYTES", "MAX_REQUEST_LINE",
           "ModelServer", "ServerLimits", "make_server"]

#: Largest request body accepted (10,000 rows of ~100 features fit easily).
MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: Seconds a client is told to wait when the prediction log is busy (POST /feedback 503).
RETRY_AFTER_S = 1


class ModelServer(BoundedServer):
    """A threading HTTP server that answers from ``runtime`` within ``limits``."""

    def __init__(self, address: tuple[str, int], runtime: ChannelRuntime,
                 log: Callable[[str], None] | None = None,
                 limits: ServerLimits | None = None,
                 error_log: Callable[[str], None] | None = None) -> None:
        self.runtime = runtime
        self.metrics = ServerMetrics(runtime)
        super().__init__(address, _Handler, log, limits, error_log)


def make_server(runtime: ChannelRuntime, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                log: Callable[[str], None] | None = None, *,
                limits: ServerLimits | None = None,
                error_log: Callable[[str], None] | None = None) -> ModelServer:
    """Bind a :class:`ModelServer` (call ``serve_forever()`` on it; ``shutdown()`` to stop).

    ``log`` gets protocol lines (timeouts, malformed requests); ``error_log``
    (default: ``log``) gets failures that are bugs, with their traceback.
    """
    return ModelServer((host, port), runtime, log, limits, error_log)


class _Handler(JsonHandler):
    server: ModelServer

    def handle_one_request(self) -> None:
        start = time.perf_counter()
        self._status: int | None = None
        super().handle_one_request()
        if self._status is not None:  # answered (an idle close answers nothing)
            path = getattr(self, "path", "").split("?", 1)[0]
            self.server.metrics.observe(path, self._status, time.perf_counter() - start)

    def _write(self, status: int, body: bytes, allow: str | None = None,
               extra: tuple[str, ...] = (), content_type: str = "application/json") -> None:
        self._status = status
        super()._write(status, body, allow, extra, content_type)

    def method_message(self, method: str, path: str) -> str:
        if path in ("/predict", "/feedback"):
            if method == "GET":
                return f"POST {path} takes a JSON body; GET is not allowed here"
            return f"method {method[:40]!r} is not supported on {path}; use POST"
        return f"{path} answers GET only; method {method[:40]!r} is not supported there"

    # -- endpoints ----------------------------------------------------------------------

    def _healthz(self, body: bytes) -> None:
        try:
            model = self.server.runtime.model
        except NoModelError as exc:
            self._send(503, {"status": "unavailable", "error": str(exc)})
            return
        self._send(200, {"status": "ok", "channel": model.channel,
                         "candidate_id": model.candidate_id, "sha256": model.sha256})

    def _model(self, body: bytes) -> None:
        self._send(200, {**self.server.runtime.status(), "server": self.server.describe()})

    def _metrics(self, body: bytes) -> None:
        self._write(200, self.server.metrics.render(), content_type=CONTENT_TYPE)

    def _predict(self, body: bytes) -> None:
        request_id = self.headers.get("X-Request-Id")
        if request_id is not None and not valid_request_id(request_id):
            self._error(400, f"X-Request-Id must be {REQUEST_ID_RULE}; got "
                             f"{request_id[:80]!r}; send a valid id or none (one is made)")
            return
        try:
            answer = self.server.runtime.predict(parse_json(body), request_id)
        except BadInputError as exc:
            self._error(400, str(exc))
        except NoModelError as exc:
            self._error(503, str(exc))
        except ShadowError as exc:
            self._error(422, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server
            self._error(500, f"internal error while predicting: {exc!r}; see the server log")
            self._report_bug("predict failed")
        else:
            try:
                encoded = encode_json(answer)
            except ValueError:  # NaN or inf: the inputs overflowed inside the model
                self._error(422, _non_finite_message(answer))
                return
            self._write(200, encoded, extra=(f"X-Request-Id: {answer['request_id']}",))

    def _feedback(self, body: bytes) -> None:
        log = self.server.runtime.log
        if log is None:
            self._error(404, "this server keeps no prediction log (started with --no-log), so "
                             "it cannot take labels; restart it without --no-log")
            return
        try:
            result = log.add_feedback(parse_feedback(parse_json(body)))
        except (BadInputError, FeedbackError) as exc:
            self._error(400, str(exc))
        except UnknownRequestError as exc:
            self._error(404, str(exc))
        except LabelConflictError as exc:
            self._error(409, str(exc))
        except LogBusyError as exc:  # another writer (shadow feedback, a merge) holds the file
            self._send(503, {"error": str(exc), "status": 503},
                       extra=(f"Retry-After: {RETRY_AFTER_S}",))
        except (BadLabelError, ConfigError, NotFoundError) as exc:
            self._error(422, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server
            self._error(500, f"internal error while storing feedback: {exc!r}; see the server "
                             "log")
            self._report_bug("feedback failed")
        else:
            self._send(200, result.as_dict())


_Handler.routes = {
    "/predict": {"POST": _Handler._predict},
    "/feedback": {"POST": _Handler._feedback},
    "/metrics": {"GET": _Handler._metrics},
    "/model": {"GET": _Handler._model},
    "/healthz": {"GET": _Handler._healthz},
}
_Handler.body_limits = {"/predict": MAX_BODY_BYTES, "/feedback": MAX_BODY_BYTES}


def _non_finite_message(answer: dict[str, Any]) -> str:
    rows = answer.get("probabilities") or []
    row = next((i for i, r in enumerate(rows) if not all(math.isfinite(p) for p in r)), "?")
    return (f"the model's probabilities for row {row} are not finite numbers (its values are so "
            "large that the model overflows); send values on the scale the model was trained on")

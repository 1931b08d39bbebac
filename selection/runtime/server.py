"""``shadow serve``'s HTTP front end over a :class:`~selection.runtime.ChannelRuntime`.

Standard library only (``http.server``): one thread per connection,
HTTP/1.1 keep-alive, JSON in and out. Endpoints:

- ``POST /predict``: body ``{"rows": [[...], ...]}`` or ``{"rows": [{"name": value, ...}]}``;
  answers ``predictions``, ``probabilities``, ``candidate_id``, ``sha256``.
- ``GET /model``: the model answering now, counters, recent swap events.
- ``GET /healthz``: 200 with the model's id while one is loaded, else 503.

Every client mistake is a 4xx JSON ``{"error": message, "status": code}``;
an unexpected failure is a 500 JSON answer for that request only, never a
dead server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selection.errors import ShadowError
from selection.runtime import BadInputError, ChannelRuntime, NoModelError

#: Largest request body accepted (10,000 rows of ~100 features fit easily).
MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class ModelServer(ThreadingHTTPServer):
    """A threading HTTP server that answers from ``runtime``."""

    daemon_threads = True
    # Restarting on the same port right after a stop must not fail with EADDRINUSE.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], runtime: ChannelRuntime,
                 log: Callable[[str], None] | None = None) -> None:
        self.runtime = runtime
        self.log = log
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """``http://host:port`` actually bound (port 0 asks the OS for a free one)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(runtime: ChannelRuntime, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                log: Callable[[str], None] | None = None) -> ModelServer:
    """Bind a :class:`ModelServer` (call ``serve_forever()`` on it; ``shutdown()`` to stop)."""
    return ModelServer((host, port), runtime, log)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a closed-loop client reuses its connection
    # Headers and body go out in two writes; with Nagle on, the second waits for
    # the client's delayed ACK: ~40 ms per answer (measured 86 vs thousands of req/s).
    disable_nagle_algorithm = True
    server_version = "shadow-serve"
    server: ModelServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            try:
                model = self.server.runtime.model
            except NoModelError as exc:
                self._send(503, {"status": "unavailable", "error": str(exc)})
                return
            self._send(200, {"status": "ok", "channel": model.channel,
                             "candidate_id": model.candidate_id, "sha256": model.sha256})
        elif path == "/model":
            self._send(200, self.server.runtime.status())
        elif path == "/predict":
            self._error(405, "POST /predict takes a JSON body; GET is not allowed here",
                        allow="POST")
        else:
            self._not_found(path)

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path != "/predict":
            self._drain()
            if path in ("/model", "/healthz"):
                self._error(405, f"{path} answers GET only", allow="GET")
            else:
                self._not_found(path)
            return
        payload = self._json_body()
        if payload is _INVALID:
            return
        try:
            answer = self.server.runtime.predict(payload)
        except BadInputError as exc:
            self._error(400, str(exc))
        except NoModelError as exc:
            self._error(503, str(exc))
        except ShadowError as exc:
            self._error(422, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server
            self._error(500, f"internal error while predicting: {exc!r}; see the server log")
            self.log_message("predict failed: %r", exc)
        else:
            self._send(200, answer)

    def _json_body(self) -> Any:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self._error(411, "POST /predict needs a Content-Length header (chunked bodies are "
                             "not accepted); send the JSON body with its length")
            self.close_connection = True
            return _INVALID
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self._error(400, f"Content-Length must be a byte count; got {length_text!r}")
            self.close_connection = True
            return _INVALID
        if length > MAX_BODY_BYTES:
            self._error(413, f"request bodies may be at most {MAX_BODY_BYTES} bytes; got "
                             f"{length}; split the rows over several requests")
            self.close_connection = True  # do not read (or leave behind) the huge body
            return _INVALID
        body = self.rfile.read(length)
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            self._error(400, f'the body must be JSON such as {{"rows": [[1.0, 2.0]]}}; it does '
                             f"not parse ({exc})")
            return _INVALID

    def _drain(self) -> None:
        """Read and drop a body we refused, so the next keep-alive request parses."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _not_found(self, path: str) -> None:
        self._error(404, f"no endpoint {path!r}; use POST /predict, GET /model or GET /healthz")

    def _error(self, status: int, message: str, allow: str | None = None) -> None:
        self._send(status, {"error": message, "status": status}, allow=allow)

    def _send(self, status: int, data: dict[str, Any], allow: str | None = None) -> None:
        body = (json.dumps(data, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unknown method) as JSON too, then hang up."""
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        if code == 501:
            text = f"method {self.command!r} is not supported; use GET or POST"
        body = (json.dumps({"error": text, "status": code}) + "\n").encode("utf-8")
        self.send_response(code, text)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # The library never prints; the CLI decides where (and whether) lines go.
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Per-request access lines are off: at thousands of requests/s they cost more than the work."""


_INVALID = object()

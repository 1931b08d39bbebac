"""``shadow serve``'s HTTP front end over a :class:`~selection.runtime.ChannelRuntime`.

Standard library only (``http.server``, so an edge app installs nothing more):
one thread per connection, HTTP/1.1 keep-alive, JSON in and out. Endpoints:

- ``POST /predict``: body ``{"rows": [[...], ...]}`` or ``{"rows": [{"name": value, ...}]}``;
  answers ``predictions``, ``probabilities``, ``candidate_id``, ``sha256``.
- ``GET /model``: the model answering now, counters, recent swap events, connection limits.
- ``GET /healthz``: 200 with the model's id while one is loaded, else 503.

What the stdlib server lacks and this one adds (see :class:`ServerLimits`):

- a listen backlog of :data:`LISTEN_BACKLOG` (the stdlib's 5 reset connections
  from a burst of 20 clients);
- deadlines, not per-read timeouts: a connection idle between requests is
  closed after ``idle_timeout_s``, and a request must arrive whole (request
  line, headers, body) within ``request_timeout_s`` of its first byte, so a
  client trickling one byte at a time, or sending less body than its
  Content-Length, cannot hold a thread for longer than that;
- at most ``max_connections`` connections at once (beyond that a 503 JSON);
- strict framing: exactly one plain Content-Length, no Transfer-Encoding, and
  a body on any method is read (or the connection closed) before the answer,
  so the next keep-alive request starts where it should.

Every client mistake is a 4xx JSON ``{"error": message, "status": code}``
(a body the parser refuses is rejected by ``runtime.inputs``); an unexpected
failure is a 500 JSON answer for that request only, never a dead server.
Answers are strict JSON: probabilities that overflowed to NaN are a 422.
"""

from __future__ import annotations

import io
import json
import math
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selection.errors import ConfigError, ShadowError
from selection.runtime import BadInputError, ChannelRuntime, NoModelError
from selection.runtime.inputs import parse_json

#: Largest request body accepted (10,000 rows of ~100 features fit easily).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Largest body accepted (and thrown away) on the endpoints that take none.
MAX_OTHER_BODY_BYTES = 64 * 1024
#: Longest request line (the stdlib's limit; longer is a 414).
MAX_REQUEST_LINE = 65536
#: Pending connections the kernel queues before accept (capped by net.core.somaxconn).
LISTEN_BACKLOG = 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

#: After an answer that closes the connection, unread input is drained this long at most.
_LINGER_S = 0.5
_LINGER_READS = 16
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token: methods, header names
_DIGITS = re.compile(r"^[0-9]{1,19}$")


@dataclass(frozen=True)
class ServerLimits:
    """How long and how many: the knobs that keep slow or idle clients from starving others."""

    idle_timeout_s: float = 5.0
    """A keep-alive connection with no request for this long is closed."""
    request_timeout_s: float = 10.0
    """A request must arrive whole this long after its first byte (else 408 and close);
    also the longest an answer may take to write to a client that does not read."""
    max_connections: int = 1024
    """Connections served at once; one more is answered 503 and closed."""

    def __post_init__(self) -> None:
        for name in ("idle_timeout_s", "request_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds; got {value!r}; "
                                  "e.g. 5")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise ConfigError(f"max_connections must be a positive integer; got "
                              f"{self.max_connections!r}; e.g. 1024")


class ModelServer(ThreadingHTTPServer):
    """A threading HTTP server that answers from ``runtime`` within ``limits``."""

    daemon_threads = True
    # Restarting on the same port right after a stop must not fail with EADDRINUSE.
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], runtime: ChannelRuntime,
                 log: Callable[[str], None] | None = None,
                 limits: ServerLimits | None = None,
                 error_log: Callable[[str], None] | None = None) -> None:
        self.runtime = runtime
        self.log = log
        self.error_log = error_log if error_log is not None else log
        self.limits = limits or ServerLimits()
        self._lock = threading.Lock()
        self._active = 0
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """``http://host:port`` actually bound (port 0 asks the OS for a free one)."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def connections(self) -> int:
        """Connections open now (each holds one thread)."""
        return self._active

    def describe(self) -> dict[str, Any]:
        """The server half of ``GET /model``: limits and open connections."""
        return {"connections": self._active, **asdict(self.limits)}

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = self._active >= self.limits.max_connections
            if not full:
                self._active += 1
        if full:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()  # the thread did not start: it will not release its slot
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection failed outside a request's own error handling: log it, never print."""
        if self.error_log is None:
            return
        exc = traceback.format_exc()
        if "ConnectionResetError" in exc or "BrokenPipeError" in exc:
            self.error_log(f"{client_address[0]} connection lost: {exc.strip().splitlines()[-1]}")
        else:
            self.error_log(f"{client_address[0]} unexpected error (a bug; please report it):\n{exc}")

    def _release(self) -> None:
        with self._lock:
            self._active -= 1

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 without a thread: the limit exists to bound threads."""
        limit = self.limits.max_connections
        body = _encode({"error": f"the server holds its limit of {limit} connections; retry "
                                 "shortly, or reuse a keep-alive connection", "status": 503})
        try:
            request.settimeout(0.5)
            request.sendall(_head(503, len(body), close=True, extra=("Retry-After: 1",)) + body)
        except OSError:
            pass
        self.close_request(request)

    def shutdown_request(self, request: Any) -> None:
        """Close after a lingering read, so a refused request's unread bytes do not turn
        the close into a reset that destroys the error answer before the client reads it."""
        try:
            request.shutdown(socket.SHUT_WR)  # the client sees the end of the answer now
            deadline = time.monotonic() + _LINGER_S
            for _ in range(_LINGER_READS):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                request.settimeout(remaining)
                if not request.recv(65536):
                    break  # the client closed too: a clean close
        except OSError:
            pass  # reset, or the linger time is up: close regardless
        self.close_request(request)


def make_server(runtime: ChannelRuntime, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                log: Callable[[str], None] | None = None, *,
                limits: ServerLimits | None = None,
                error_log: Callable[[str], None] | None = None) -> ModelServer:
    """Bind a :class:`ModelServer` (call ``serve_forever()`` on it; ``shutdown()`` to stop).

    ``log`` gets protocol lines (timeouts, malformed requests); ``error_log``
    (default: ``log``) gets failures that are bugs, with their traceback.
    """
    return ModelServer((host, port), runtime, log, limits, error_log)


class _DeadlineReader(io.RawIOBase):
    """The read side of a connection, where every read ends at the current deadline.

    A per-read socket timeout would let a client that sends a byte every few
    seconds hold its thread forever; a deadline bounds the whole request.
    """

    def __init__(self, sock: socket.socket, request_timeout_s: float) -> None:
        self._sock = sock
        self._request_timeout_s = request_timeout_s
        self._deadline = math.inf
        self.waiting = True  # no byte of the next request has arrived yet
        self.probing = False  # answer "no data" instead of reading (see buffered)

    def readable(self) -> bool:
        return True

    def wait_for_request(self, idle_timeout_s: float, *, buffered: bool = False) -> None:
        """Between requests: the next one must start within ``idle_timeout_s``.

        ``buffered``: bytes of it were read with the one before (pipelining),
        so it has started and its request deadline runs from now.
        """
        self.waiting = not buffered
        self._deadline = time.monotonic() + (self._request_timeout_s if buffered else idle_timeout_s)

    def buffered(self, rfile: io.BufferedReader[_DeadlineReader]) -> bool:
        """Whether ``rfile`` (over this reader) holds bytes already, without reading the socket."""
        self.probing = True
        try:
            return bool(rfile.peek(1))
        finally:
            self.probing = False

    def readinto(self, buffer: Any) -> int | None:
        if self.probing:
            return None  # as a non-blocking socket with nothing to read: peek stays in the buffer
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(remaining)
        n = self._sock.recv_into(buffer)
        if n and self.waiting:
            self.waiting = False
            self._deadline = time.monotonic() + self._request_timeout_s
        return n


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a closed-loop client reuses its connection
    server_version = "shadow-serve"
    server: ModelServer

    def setup(self) -> None:
        self.connection = self.request
        # Head and body go out in one write, but a 100 Continue is its own:
        # with Nagle on, a second small write waits for the client's delayed ACK (~40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self._reader = _DeadlineReader(self.connection, self.server.limits.request_timeout_s)
        self._buffer = io.BufferedReader(self._reader, 64 * 1024)
        self.rfile = self._buffer
        self.wfile = self.connection.makefile("wb", 0)
        self._answered = False

    def handle_one_request(self) -> None:
        """Read one request within its deadlines, answer it (always JSON), or close."""
        limits = self.server.limits
        self._reader.wait_for_request(limits.idle_timeout_s,
                                      buffered=self._reader.buffered(self._buffer))
        self._answered = False
        self.command, self.request_version, self.requestline = "", "HTTP/1.1", ""
        try:
            line = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore a stray empty line first
                line = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if not line:
                self.close_connection = True
                return
            self.raw_requestline = line
            if len(line) > MAX_REQUEST_LINE:
                self.send_error(414, f"the request line may be at most {MAX_REQUEST_LINE} bytes")
                return
            if len(line.split()) == 2:  # "GET /path": HTTP/0.9 has no headers to wait for
                self.request_version = "HTTP/0.9"
                self.requestline = line.decode("latin-1").rstrip("\r\n")
                self.close_connection = True
                self._error(400, "HTTP/0.9 requests are not served; send an HTTP/1.1 request "
                                 "such as 'GET /healthz HTTP/1.1'")
                return
            if not self.parse_request():
                self.close_connection = True
                return  # parse_request answered (send_error), or the line was blank
            self._dispatch()
        except TimeoutError:
            self.close_connection = True
            if self._reader.waiting:
                return  # idle keep-alive connection: close it quietly
            self.log_message("request timed out (%s)", self.requestline[:80] or "no request line")
            if not self._answered:
                self._error(408, f"a request must arrive whole within "
                                 f"{limits.request_timeout_s:g} s of its first byte; send the "
                                 "headers and the Content-Length bytes of body at once")

    # -- routing ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        if not _TOKEN.match(self.command):
            self.close_connection = True
            self._error(400, f"the method must be a token such as GET or POST; got "
                             f"{self.command[:40]!r}")
            return
        body = self._read_body(MAX_BODY_BYTES if path == "/predict" else MAX_OTHER_BODY_BYTES)
        if body is None:
            return  # answered, and the connection is closing
        routes = _ROUTES.get(path)
        if routes is None:
            self._error(404, f"no endpoint {path[:200]!r}; use POST /predict, GET /model or "
                             "GET /healthz")
            return
        handler = routes.get("GET" if self.command == "HEAD" else self.command)
        if handler is None:
            allow = ", ".join(sorted(routes) + (["HEAD"] if "GET" in routes else []))
            self._error(405, _method_message(self.command, path), allow=allow)
            return
        handler(self, body)

    def _read_body(self, limit: int) -> bytes | None:
        """The request's body by its Content-Length, or None after refusing its framing."""
        for name in self.headers.keys():
            if not _TOKEN.match(name):
                return self._reject(400, f"header names must be tokens; got {name[:40]!r}; "
                                         "remove the spaces or odd characters")
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get_all("Transfer-Encoding"):
            if lengths:
                return self._reject(400, "a request may not carry both Transfer-Encoding and "
                                         "Content-Length; send Content-Length only")
            return self._reject(411, f"{self.command} {self.path[:80]} needs a Content-Length "
                                     "header (chunked bodies are not accepted); send the JSON "
                                     "body with its length")
        if not lengths:
            if self.command == "POST":
                return self._reject(411, f"POST {self.path[:80]} needs a Content-Length header "
                                         "(chunked bodies are not accepted); send the JSON body "
                                         "with its length")
            return b""
        text = lengths[0].strip()
        if len(lengths) > 1 or not _DIGITS.match(text):
            got = lengths[0] if len(lengths) == 1 else lengths
            return self._reject(400, f"Content-Length must be one byte count (digits only); "
                                     f"got {str(got)[:60]!r}")
        length = int(text)
        if length > limit:
            # Not read: closing is cheaper than reading megabytes we will drop.
            return self._reject(413, f"request bodies to {self.path[:80]} may be at most {limit} "
                                     f"bytes; got {length}; split the rows over several requests")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            return self._reject(400, f"the body ended after {len(body)} of the {length} bytes "
                                     "its Content-Length announced; send the whole body")
        return body

    def _reject(self, status: int, message: str) -> bytes | None:
        """Answer ``status`` and close: the body's framing cannot be trusted (always None)."""
        self.close_connection = True
        self._error(status, message)
        return None

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

    def _predict(self, body: bytes) -> None:
        try:
            answer = self.server.runtime.predict(parse_json(body))
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
                encoded = _encode(answer)
            except ValueError:  # NaN or inf: the inputs overflowed inside the model
                self._error(422, _non_finite_message(answer))
                return
            self._write(200, encoded)

    # -- answers ------------------------------------------------------------------------

    def _error(self, status: int, message: str, allow: str | None = None) -> None:
        self._send(status, {"error": message, "status": status}, allow=allow)

    def _send(self, status: int, data: dict[str, Any], allow: str | None = None) -> None:
        try:
            encoded = _encode(data)
        except ValueError:
            self._report_bug(f"answer {status} was not strict JSON")
            status, encoded = 500, _encode({"error": "internal error: the answer was not valid "
                                                     "JSON; see the server log", "status": 500})
        self._write(status, encoded, allow)

    def _write(self, status: int, body: bytes, allow: str | None = None) -> None:
        extra = [f"Allow: {allow}"] if allow else []
        if not self.close_connection and self.request_version == "HTTP/1.0":
            extra.append("Connection: keep-alive")
        head = _head(status, len(body), close=self.close_connection, extra=extra,
                     date=self.date_time_string())
        self._answered = True
        self.connection.settimeout(self.server.limits.request_timeout_s)
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors found by ``parse_request`` (bad request line, headers): JSON too."""
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        self._error(code, f"{text}{'; ' + explain if explain else ''}; send an HTTP/1.1 "
                          "request such as 'POST /predict HTTP/1.1' with Content-Length")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # The library never prints; the CLI decides where (and whether) lines go.
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Per-request access lines are off: at thousands of requests/s they cost more than the work."""

    def _report_bug(self, what: str) -> None:
        if self.server.error_log is not None:
            self.server.error_log(f"{self.address_string()} {what}:\n{traceback.format_exc()}")


_ROUTES: dict[str, dict[str, Callable[[_Handler, bytes], None]]] = {
    "/predict": {"POST": _Handler._predict},
    "/model": {"GET": _Handler._model},
    "/healthz": {"GET": _Handler._healthz},
}


def _method_message(method: str, path: str) -> str:
    if path == "/predict":
        if method == "GET":
            return "POST /predict takes a JSON body; GET is not allowed here"
        return f"method {method[:40]!r} is not supported on /predict; use POST"
    return f"{path} answers GET only; method {method[:40]!r} is not supported there"


def _non_finite_message(answer: dict[str, Any]) -> str:
    rows = answer.get("probabilities") or []
    row = next((i for i, r in enumerate(rows) if not all(math.isfinite(p) for p in r)), "?")
    return (f"the model's probabilities for row {row} are not finite numbers (its values are so "
            "large that the model overflows); send values on the scale the model was trained on")


def _encode(data: dict[str, Any]) -> bytes:
    """Strict JSON (no NaN or Infinity, which JSON parsers reject), one line."""
    return (json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
            + "\n").encode("utf-8")


def _head(status: int, length: int, *, close: bool, extra: Any = (), date: str | None = None
          ) -> bytes:
    # Always "HTTP/1.1": a server answers with its own version (RFC 9110 6.2), and the
    # stdlib's HTTP/0.9 fallback would send an error body without any status line.
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
             f"Server: {_Handler.server_version}",
             *([f"Date: {date}"] if date else []),
             "Content-Type: application/json",
             f"Content-Length: {length}",
             *(["Connection: close"] if close else []),
             *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

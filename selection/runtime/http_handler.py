"""One HTTP/1.1 request at a time, within deadlines, always answered in JSON (stdlib only).

:class:`JsonHandler` is the framing every endpoint of ``shadow serve`` shares:

- deadlines, not per-read timeouts: a connection idle between requests is
  closed after ``idle_timeout_s``, and a request must arrive whole (request
  line, headers, body) within ``request_timeout_s`` of its first byte, so a
  client trickling one byte at a time, or sending less body than its
  Content-Length, cannot hold a thread for longer than that;
- strict framing: exactly one plain Content-Length, no Transfer-Encoding, and
  a body on any method is read (or the connection closed) before the answer,
  so the next keep-alive request starts where it should.

Every client mistake is a 4xx JSON ``{"error": message, "status": code}``.
Subclasses declare ``routes`` (path -> method -> handler) and ``body_limits``.
"""

from __future__ import annotations

import io
import json
import math
import re
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

#: Largest body accepted (and thrown away) on the endpoints that take none.
MAX_OTHER_BODY_BYTES = 64 * 1024
#: Longest request line (the stdlib's limit; longer is a 414).
MAX_REQUEST_LINE = 65536

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token: methods, header names
_DIGITS = re.compile(r"^[0-9]{1,19}$")

Route = Callable[[Any, bytes], None]


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


class JsonHandler(BaseHTTPRequestHandler):
    """Reads one request within its deadlines and dispatches it to ``routes``; answers JSON.

    ``server`` must carry ``limits`` (a ``ServerLimits``), ``log`` and ``error_log``.
    """

    protocol_version = "HTTP/1.1"  # keep-alive: a closed-loop client reuses its connection
    server_version = "shadow-serve"
    server: Any
    #: path -> method -> handler(self, body); filled by subclasses.
    routes: Mapping[str, Mapping[str, Route]] = {}
    #: path -> largest body accepted there (others: MAX_OTHER_BODY_BYTES).
    body_limits: Mapping[str, int] = {}

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
        body = self._read_body(self.body_limits.get(path, MAX_OTHER_BODY_BYTES))
        if body is None:
            return  # answered, and the connection is closing
        routes = self.routes.get(path)
        if routes is None:
            known = ", ".join(f"{'/'.join(sorted(m))} {p}" for p, m in self.routes.items())
            self._error(404, f"no endpoint {path[:200]!r}; use one of: {known}")
            return
        handler = routes.get("GET" if self.command == "HEAD" else self.command)
        if handler is None:
            allow = ", ".join(sorted(routes) + (["HEAD"] if "GET" in routes else []))
            self._error(405, self.method_message(self.command, path), allow=allow)
            return
        handler(self, body)

    def method_message(self, method: str, path: str) -> str:
        """What a 405 says; subclasses name their POST endpoints' bodies."""
        allowed = " or ".join(sorted(self.routes.get(path, {})))
        return f"{path} answers {allowed} only; method {method[:40]!r} is not supported there"

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

    # -- answers ------------------------------------------------------------------------

    def _error(self, status: int, message: str, allow: str | None = None) -> None:
        self._send(status, {"error": message, "status": status}, allow=allow)

    def _send(self, status: int, data: dict[str, Any], allow: str | None = None,
              extra: tuple[str, ...] = ()) -> None:
        try:
            encoded = encode_json(data)
        except ValueError:
            self._report_bug(f"answer {status} was not strict JSON")
            status, encoded = 500, encode_json({"error": "internal error: the answer was not "
                                                         "valid JSON; see the server log",
                                                "status": 500})
        self._write(status, encoded, allow, extra=extra)

    def _write(self, status: int, body: bytes, allow: str | None = None,
               extra: tuple[str, ...] = (), content_type: str = "application/json") -> None:
        headers = [f"Allow: {allow}"] if allow else []
        headers.extend(extra)
        if not self.close_connection and self.request_version == "HTTP/1.0":
            headers.append("Connection: keep-alive")
        head = response_head(status, len(body), close=self.close_connection, extra=headers,
                             date=self.date_time_string(), content_type=content_type)
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



def encode_json(data: dict[str, Any]) -> bytes:
    """Strict JSON (no NaN or Infinity, which JSON parsers reject), one line."""
    return (json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
            + "\n").encode("utf-8")


def response_head(status: int, length: int, *, close: bool, extra: Any = (),
                  date: str | None = None, content_type: str = "application/json") -> bytes:
    """The status line and headers of an answer (always ``HTTP/1.1``)."""
    # Always "HTTP/1.1": a server answers with its own version (RFC 9110 6.2), and the
    # stdlib's HTTP/0.9 fallback would send an error body without any status line.
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
             f"Server: {JsonHandler.server_version}",
             *([f"Date: {date}"] if date else []),
             f"Content-Type: {content_type}",
             f"Content-Length: {length}",
             *(["Connection: close"] if close else []),
             *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

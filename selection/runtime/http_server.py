"""The connection-bounded threading HTTP server under ``shadow serve`` (standard library only).

What the stdlib server lacks and this one adds (see :class:`ServerLimits`):

- a listen backlog of :data:`LISTEN_BACKLOG` (the stdlib's 5 reset connections
  from a burst of 20 clients);
- at most ``max_connections`` connections at once (beyond that a 503 JSON,
  answered without a thread, since the limit exists to bound threads);
- a lingering close, so a refused request's unread bytes do not turn the close
  into a reset that destroys the error answer.

The per-request framing and deadlines live in ``runtime.http_handler``; the
endpoints in ``runtime.server``.
"""

from __future__ import annotations

import math
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selection.errors import ConfigError
from selection.runtime.http_handler import encode_json, response_head

#: Pending connections the kernel queues before accept (capped by net.core.somaxconn).
LISTEN_BACKLOG = 1024

#: After an answer that closes the connection, unread input is drained this long at most.
_LINGER_S = 0.5
_LINGER_READS = 16


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



class BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server that holds at most ``limits.max_connections`` connections."""

    daemon_threads = True
    # Restarting on the same port right after a stop must not fail with EADDRINUSE.
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 log: Callable[[str], None] | None = None,
                 limits: ServerLimits | None = None,
                 error_log: Callable[[str], None] | None = None) -> None:
        self.log = log
        self.error_log = error_log if error_log is not None else log
        self.limits = limits or ServerLimits()
        self._lock = threading.Lock()
        self._active = 0
        super().__init__(address, handler)

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
        body = encode_json({"error": f"the server holds its limit of {limit} connections; retry "
                                 "shortly, or reuse a keep-alive connection", "status": 503})
        try:
            request.settimeout(0.5)
            request.sendall(response_head(503, len(body), close=True, extra=("Retry-After: 1",))
                            + body)
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


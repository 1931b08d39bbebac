"""A faulty network between devices and a fleet server, on loopback (tests and the benchmark).

:class:`FaultyProxy` forwards real TCP connections to a real fleet server
and, on request, breaks model downloads the ways a network does: a flipped
byte (``corrupt``), a server gone mid-transfer (``cut``: the headers and half
the body, then the connection closes), a server gone altogether (``down``:
connections are closed without an answer) or a slow link (``slow``, so a
test can kill a device mid-download). Not on the serving path; like
``selection.runtime.http_checks``, it is here so the benchmark and the tests
share one implementation. Standard library only.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress
from typing import Literal

from selection.runtime.remote import ARTIFACT_ROUTE

Mode = Literal["pass", "corrupt", "cut", "down", "slow"]


class FaultyProxy:
    """``127.0.0.1:<port>`` in front of ``upstream``; set :attr:`mode` to inject a fault."""

    def __init__(self, upstream: tuple[str, int], *, slow_chunk: int = 4096,
                 slow_delay_s: float = 0.05) -> None:
        self.upstream = upstream
        self.mode: Mode = "pass"
        self.slow_chunk = slow_chunk
        self.slow_delay_s = slow_delay_s
        self.faults = 0  # artifact answers broken so far
        # What crossed the proxy, counted as it was forwarded (HTTP bytes: request head and
        # answer; TCP/IP framing not included): every exchange, and the 304 polls alone.
        self.wire = {"exchanges": 0, "bytes": 0, "idle_polls": 0, "idle_bytes": 0}
        self._wire_lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="faulty-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        """Where devices should poll."""
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop accepting (connections in flight finish)."""
        self._stop.set()
        with suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            try:
                request = _read_head(client)
                if self.mode == "down" or not request:
                    return  # the server is not there: no answer at all
                with socket.create_connection(self.upstream, timeout=10) as up:
                    up.sendall(request)
                    answer = _read_all(up)
                path = request.split(b" ", 2)[1].decode("latin-1") if b" " in request else ""
                self._count(request, answer)
                if path.startswith(ARTIFACT_ROUTE) and self.mode != "pass":
                    self._broken(client, answer)
                else:
                    client.sendall(answer)
            except OSError:
                return

    def _count(self, request: bytes, answer: bytes) -> None:
        idle = answer.startswith(b"HTTP/1.1 304 ") or answer.startswith(b"HTTP/1.0 304 ")
        with self._wire_lock:
            self.wire["exchanges"] += 1
            self.wire["bytes"] += len(request) + len(answer)
            if idle:
                self.wire["idle_polls"] += 1
                self.wire["idle_bytes"] += len(request) + len(answer)

    def _broken(self, client: socket.socket, answer: bytes) -> None:
        head, _, body = answer.partition(b"\r\n\r\n")
        self.faults += 1
        if self.mode == "corrupt" and body:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
            client.sendall(head + b"\r\n\r\n" + body)
        elif self.mode == "cut":
            client.sendall(head + b"\r\n\r\n" + body[: len(body) // 2])
        elif self.mode == "slow":
            client.sendall(head + b"\r\n\r\n")
            for i in range(0, len(body), self.slow_chunk):
                if self.mode != "slow":  # the fault was lifted: send the rest at once
                    client.sendall(body[i:])
                    return
                client.sendall(body[i:i + self.slow_chunk])
                time.sleep(self.slow_delay_s)
        else:
            client.sendall(answer)


def _read_head(sock: socket.socket) -> bytes:
    """One request's head (the devices' requests are GETs without a body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


def _read_all(sock: socket.socket) -> bytes:
    """The upstream's whole answer: the device asked for ``Connection: close``."""
    parts = []
    while chunk := sock.recv(262144):
        parts.append(chunk)
    return b"".join(parts)

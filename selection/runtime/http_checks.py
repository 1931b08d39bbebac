"""Malformed HTTP requests and the answers ``shadow serve`` owes them, over a raw socket.

Shared by the test suite and ``benchmarks/serve_stress.py`` (like
``selection.testing``: public for checking a server, not part of serving).
Each :class:`Case` is the exact bytes a client sends and the status it must
get back; :func:`check_case` sends them on a fresh loopback connection and
says what was wrong, if anything:

- the answer must be a complete HTTP/1.1 response whose body is strict JSON
  (no NaN), for an error an object ``{"error": str, "status": code}``;
- if the server keeps the connection open (no ``Connection: close``), a
  follow-up request on it must get a clean 200: nothing of the bad request
  may be left to be read as the next one (keep-alive desync);
- afterwards a new connection must still be served.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field

from selection.runtime.inputs import MAX_INT_DIGITS, MAX_JSON_DEPTH, MAX_ROWS
from selection.runtime.server import MAX_BODY_BYTES, MAX_REQUEST_LINE

FOLLOW_UP = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


@dataclass(frozen=True)
class Case:
    """One request as raw bytes and the status codes it may be answered with."""

    name: str
    data: bytes
    statuses: tuple[int, ...]
    half_close: bool = False
    """Shut the client's write side after sending (a body that ends early)."""
    head: bool = False
    """The answer has no body (HEAD)."""


@dataclass
class Reply:
    """What came back: status, headers (lower-case names), body; ``closed`` if the server hung up."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = False
    leftover: bytes = field(default=b"", repr=False)


def post(path: str, body: bytes, *headers: str, length: int | None = None) -> bytes:
    """Raw bytes of a POST with ``body``; ``length`` overrides the Content-Length."""
    lines = [f"POST {path} HTTP/1.1", "Host: t", *headers]
    if length is not None or not any(h.lower().startswith("content-length") for h in headers):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def predict(body: bytes | str) -> bytes:
    """A well-framed ``POST /predict`` with this body."""
    return post("/predict", body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body)


def _row(value: str, n: int = 8) -> str:
    return "[" + ", ".join([value] + ["0.5"] * (n - 1)) + "]"


def cases(n_features: int = 8, features: tuple[str, ...] = ()) -> list[Case]:
    """The table: bodies the parser must refuse, framing errors, methods, paths, protocol."""
    ok_row = _row("0.5", n_features)
    keyed = {name: 0.5 for name in features}
    table = [
        Case("not JSON", predict("{not json"), (400,)),
        Case("not UTF-8", predict(b"\xff\xfe{}"), (400,)),
        Case("UTF-8 BOM (accepted)", predict(b"\xef\xbb\xbf" + f'{{"rows": [{ok_row}]}}'.encode()),
             (200,)),
        Case("empty body", predict(b""), (400,)),
        Case("top-level array", predict(f"[{ok_row}]"), (400,)),
        Case("rows not a list", predict('{"rows": "x"}'), (400,)),
        Case("rows empty", predict('{"rows": []}'), (400,)),
        Case("row too short", predict('{"rows": [[1, 2]]}'), (400,)),
        Case("row a number", predict('{"rows": [5]}'), (400,)),
        Case("nested 100k deep", predict("[" * 100_000), (400,)),
        Case("nested past the limit", predict('{"rows": ' + "[" * MAX_JSON_DEPTH + "]"
                                              * MAX_JSON_DEPTH + "}"), (400,)),
        Case("nested inside a row", predict('{"rows": [[[[[[1]]]]]]}'), (400,)),
        Case("400-digit integer", predict(f'{{"rows": [{_row("9" * 400, n_features)}]}}'), (400,)),
        Case("integer past the digit limit",
             predict(f'{{"rows": [{_row("1" * (MAX_INT_DIGITS + 1), n_features)}]}}'), (400,)),
        Case("beyond float32", predict(f'{{"rows": [{_row("1e39", n_features)}]}}'), (400,)),
        Case("below -float32", predict(f'{{"rows": [{_row("-3.5e38", n_features)}]}}'), (400,)),
        Case("beyond float64", predict(f'{{"rows": [{_row("1e400", n_features)}]}}'), (400,)),
        Case("NaN literal", predict(f'{{"rows": [{_row("NaN", n_features)}]}}'), (400,)),
        Case("Infinity literal", predict(f'{{"rows": [{_row("-Infinity", n_features)}]}}'), (400,)),
        Case("string value", predict(f'{{"rows": [{_row(chr(34) + "7" + chr(34), n_features)}]}}'),
             (400,)),
        Case("null value", predict(f'{{"rows": [{_row("null", n_features)}]}}'), (400,)),
        Case("bool value", predict(f'{{"rows": [{_row("true", n_features)}]}}'), (400,)),
        Case("lone surrogate", predict('{"rows": ["\\ud800"]}'), (400,)),
        Case("too many rows", predict('{"rows": [' + ",".join([ok_row] * (MAX_ROWS + 1)) + "]}"),
             (400,)),
        # Within float32, but large enough to overflow inside the model: a 422, or a
        # 200 if this model happens to stay finite; never NaN in the JSON.
        Case("float32 max everywhere", predict(f'{{"rows": [{_row("3.4e38", n_features)}]}}'
                                               .replace("0.5", "3.4e38")), (200, 422)),
        # Framing: how long the body is must be unambiguous, or the connection closes.
        Case("no Content-Length", b"POST /predict HTTP/1.1\r\nHost: t\r\n\r\n", (411,)),
        Case("chunked", b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n0\r\n\r\n", (411,)),
        Case("chunked and Content-Length",
             post("/predict", b"{}", "Transfer-Encoding: chunked"), (400,)),
        Case("Content-Length text", post("/predict", b"", "Content-Length: abc"), (400,)),
        Case("Content-Length signed", post("/predict", b"{}", "Content-Length: +2"), (400,)),
        Case("Content-Length negative", post("/predict", b"", "Content-Length: -1"), (400,)),
        Case("Content-Length list", post("/predict", b"{}", "Content-Length: 2, 2"), (400,)),
        Case("two Content-Lengths",
             post("/predict", b"{}", "Content-Length: 2", "Content-Length: 2"), (400,)),
        Case("Content-Length past the limit", post("/predict", b"", length=MAX_BODY_BYTES + 1),
             (413,)),
        Case("body shorter than Content-Length", post("/predict", b'{"rows": []}', length=500),
             (400,), half_close=True),
        Case("space before colon", b"POST /predict HTTP/1.1\r\nHost: t\r\n"
                                   b"Content-Length : 2\r\n\r\n{}", (400, 411)),
        Case("GET with a body", b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\n"
                                b'{"rows": [[]]}', (200,)),
        Case("POST to /healthz with a body", post("/healthz", b'{"rows": []}'), (405,)),
        # Methods and paths.
        Case("GET /predict", b"GET /predict HTTP/1.1\r\nHost: t\r\n\r\n", (405,)),
        Case("PUT /predict", post("/predict", b"{}").replace(b"POST", b"PUT", 1), (405,)),
        Case("DELETE /model", b"DELETE /model HTTP/1.1\r\nHost: t\r\n\r\n", (405,)),
        Case("lower-case method", b"get /healthz HTTP/1.1\r\nHost: t\r\n\r\n", (405,)),
        Case("unknown path", b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", (404,)),
        Case("POST unknown path", post("/nope", b'{"rows": []}'), (404,)),
        Case("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", (404,)),
        Case("HEAD /healthz", b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n", (200,), head=True),
        # Protocol: the request line and headers.
        Case("method not a token", b"G@T /healthz HTTP/1.1\r\nHost: t\r\n\r\n", (400,)),
        Case("binary request line", b"\x00\x01\x02 / HTTP/1.1\r\n\r\n", (400,)),
        Case("one word", b"GARBAGE\r\n\r\n", (400,)),
        Case("four words", b"GET / HTTP/1.1 x\r\n\r\n", (400,)),
        Case("bad version", b"GET /healthz HTTP/1.x\r\n\r\n", (400,)),
        Case("HTTP/2.0 line", b"GET /healthz HTTP/2.0\r\n\r\n", (505,)),
        Case("HTTP/0.9", b"GET /healthz\r\n", (400,)),
        Case("POST HTTP/0.9", b"POST /predict\r\n", (400,)),
        Case("request line too long", b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\n\r\n",
             (414,)),
        Case("header line too long", b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
             (431,)),
        Case("101 headers", b"GET /healthz HTTP/1.1\r\n"
                            + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", (431,)),
        Case("HTTP/1.0", b"GET /healthz HTTP/1.0\r\n\r\n", (200,)),
    ]
    if features:
        table += [
            Case("keyed row missing a feature",
                 predict(json.dumps({"rows": [dict(list(keyed.items())[1:])]})), (400,)),
            Case("keyed row unknown feature",
                 predict(json.dumps({"rows": [{**keyed, "nope": 1}]})), (400,)),
        ]
    return table


def read_reply(sock: socket.socket, *, head: bool = False, timeout: float = 10.0) -> Reply:
    """One HTTP response from ``sock`` (raises ValueError if it is not one)."""
    deadline = time.monotonic() + timeout
    data = b""
    closed = False

    def more() -> bool:
        nonlocal data, closed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete answer in time")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
        data += chunk
        return bool(chunk)

    while b"\r\n\r\n" not in data:
        if not more():
            raise ValueError(f"the connection closed before a complete answer; got {data[:80]!r}")
    head_bytes, rest = data.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode("latin-1").split("\r\n")
    version, _, status_text = lines[0].partition(" ")
    if version != "HTTP/1.1" or not status_text[:3].isdigit():
        raise ValueError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    data = rest
    while len(data) < length:
        if not more():
            raise ValueError(f"the body ended after {len(data)} of {length} bytes")
    return Reply(int(status_text[:3]), headers, data[:length], closed, data[length:])


def strict_json(body: bytes) -> object:
    """``body`` parsed as strict JSON: NaN and Infinity are errors, as in most parsers."""
    def refuse(token: str) -> object:
        raise ValueError(f"{token} is not JSON")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


def check_reply(reply: Reply, statuses: tuple[int, ...], *, head: bool = False) -> str | None:
    """What is wrong with ``reply`` as an answer that must have one of ``statuses``, if anything."""
    if reply.status not in statuses:
        return f"status {reply.status}, expected {statuses}: {reply.body[:200]!r}"
    if not reply.headers.get("content-type", "").startswith("application/json"):
        return f"content-type {reply.headers.get('content-type')!r}, expected application/json"
    if head:
        return None
    try:
        value = strict_json(reply.body)
    except ValueError as exc:
        return f"the body is not strict JSON ({exc}): {reply.body[:200]!r}"
    if reply.status >= 400 and not (isinstance(value, dict) and isinstance(value.get("error"), str)
                                    and value.get("status") == reply.status):
        return f"an error answer must be {{'error': str, 'status': code}}; got {value!r:.200}"
    return None


def check_case(host: str, port: int, case: Case, timeout: float = 10.0) -> str | None:
    """Send ``case`` on a fresh connection; None if every promise above held, else what broke."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(case.data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and hang up before reading a huge request
        if case.half_close:
            sock.shutdown(socket.SHUT_WR)
        try:
            reply = read_reply(sock, head=case.head, timeout=timeout)
        except (ValueError, OSError) as exc:
            return f"no valid answer: {exc}"
        wrong = check_reply(reply, case.statuses, head=case.head)
        if wrong:
            return wrong
        keeps_open = reply.headers.get("connection", "").lower() != "close" and not case.half_close
        if keeps_open and not reply.closed:
            try:
                sock.sendall(FOLLOW_UP)
                follow = read_reply(sock, timeout=timeout)
            except (ValueError, OSError) as exc:
                return f"the connection stayed open but the next request got no answer: {exc}"
            if follow.status != 200:
                return (f"the next request on the same connection got {follow.status} "
                        f"(keep-alive desync): {follow.body[:120]!r}")
    return serving(host, port, timeout)


def serving(host: str, port: int, timeout: float = 10.0) -> str | None:
    """None if a new connection gets 200 from ``GET /healthz``, else what happened."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(FOLLOW_UP)
            reply = read_reply(sock, timeout=timeout)
    except (ValueError, OSError) as exc:
        return f"the server stopped serving: {exc}"
    return None if reply.status == 200 else f"the server answers /healthz with {reply.status}"

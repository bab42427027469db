"""The HTTP server of ``python -m sandbox``: Werkzeug's threaded server, with keep-alive.

A real platform sits behind a load balancer that keeps client connections open
(HTTP/1.1 persistent connections, RFC 9112 §9.3), so a client that reuses its
connection pays one round trip per call instead of a TCP handshake as well.
Werkzeug's development server cannot do that: it sends ``Connection: close``
with every response and, after each one, reads whatever is left on the socket
(which, on a kept-alive connection, would swallow the client's next request).

:class:`KeepAliveRequestHandler` keeps Werkzeug's request parsing and WSGI
environ (``werkzeug.socket`` included, which ``sandbox.faults`` needs to drop a
connection) and replaces only the response writing: the application's answer
is buffered (every sandbox response is small), framed by ``Content-Length``,
and the unread rest of the request body is read off to its declared end, so the
next request line is next on the socket. A connection closes when the client
asks for it, after ``idle_timeout_s`` without a request, when a fault dropped
it, or after every response when ``idle_timeout_s`` is 0 (the old behaviour).
"""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import InternalServerError
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.config import DEFAULT_KEEP_ALIVE_S
from sandbox.faults import CONNECTION_DROPPED_KEY

log = logging.getLogger(__name__)

MAX_UNREAD_BODY_BYTES = 1 << 20
"""Request body left unread by the application that is still read off to keep the
connection; a larger rest closes the connection instead."""

_NO_BODY_STATUSES = frozenset({204, 304})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _CountingInput(io.RawIOBase):
    """``wsgi.input`` that counts the bytes the application read from the request body."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self.consumed += len(data)
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._stream.read(-1 if size is None else size)
        self.consumed += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._stream.readline(-1 if size is None else size)
        self.consumed += len(data)
        return data

    def discard(self, size: int) -> bool:
        """Read and drop ``size`` bytes; True when all of them arrived."""
        while size > 0:
            chunk = self.read(min(size, 64 * 1024))
            if not chunk:
                return False
            size -= len(chunk)
        return True

    def discard_to_end(self, limit: int) -> bool:
        """Read and drop until the stream ends; False if more than ``limit`` bytes remain."""
        read = 0
        while read <= limit:
            chunk = self.read(64 * 1024)
            if not chunk:
                return True
            read += len(chunk)
        return False


def call_app(
    app: WsgiApp, environ: dict[str, Any]
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """Run one WSGI request to completion and buffer its answer.

    Returns ``(status code, reason phrase, headers, body)``. Raises whatever the
    application raises, and RuntimeError if it never called ``start_response``.
    """
    started: list[tuple[str, list[tuple[str, str]]]] = []
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [(status, headers)]
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the application returned without calling start_response")
    status, headers = started[0]
    code, _, reason = status.partition(" ")
    return int(code), reason, headers, b"".join(chunks)


class KeepAliveRequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler with persistent HTTP/1.1 connections.

    Subclass it (see :func:`make_keep_alive_server`) to set ``idle_timeout_s``
    (seconds; 0 closes every connection after its response) and
    ``on_connection`` (called once per accepted TCP connection).
    """

    protocol_version = "HTTP/1.1"
    idle_timeout_s: float = DEFAULT_KEEP_ALIVE_S
    on_connection: Callable[[], None] | None = None

    def setup(self) -> None:
        # socketserver applies ``timeout`` to the connection's socket: an idle
        # keep-alive connection then ends after that many seconds without a
        # request (http.server closes it on the TimeoutError).
        self.timeout = self.idle_timeout_s if self.idle_timeout_s > 0 else None
        super().setup()
        # Without TCP_NODELAY a kept-alive connection waits ~40 ms per call: Nagle
        # holds back our small response until the client's delayed ACK arrives.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hook = type(self).on_connection
        if hook is not None:
            hook()

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        # An idle keep-alive connection timing out is routine, not an error.
        if format.startswith("Request timed out"):
            log.debug("closed an idle connection")
            return
        super().log_error(format, *args)

    def run_wsgi(self) -> None:
        """Answer one request; leaves ``close_connection`` saying whether another may follow."""
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()
        body = _CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = body
        try:
            code, reason, headers, payload = call_app(self.server.app, environ)
        except Exception:
            if self.server.passthrough_errors:
                raise
            log.exception("error on %s %s", self.command, environ.get("PATH_INFO"))
            code, reason, headers, payload = call_app(InternalServerError(), environ)

        if environ.get(CONNECTION_DROPPED_KEY):
            # A fault shut the socket: the client must see no response at all.
            self.close_connection = True
            return
        # Read the unread body off even when closing: closing a socket with
        # unread bytes resets it, and the client might lose the response.
        whole_body_read = self._read_rest_of_body(environ, body)
        if self.idle_timeout_s <= 0 or not whole_body_read:
            self.close_connection = True
        self._send(code, reason, headers, payload)

    def _read_rest_of_body(self, environ: dict[str, Any], body: _CountingInput) -> bool:
        # Whatever the application left of the body sits before the next
        # request line; read it off, or give the connection up.
        if environ.get("wsgi.input_terminated"):
            return body.discard_to_end(MAX_UNREAD_BODY_BYTES)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return False
        rest = length - body.consumed
        if rest > MAX_UNREAD_BODY_BYTES:
            return False
        return body.discard(rest)

    def _send(self, code: int, reason: str, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(code, reason)
        has_length = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == "connection":
                if value.lower() == "close":
                    self.close_connection = True
                continue
            has_length = has_length or lowered == "content-length"
            self.send_header(name, value)
        sends_body = code >= 200 and code not in _NO_BODY_STATUSES and self.command != "HEAD"
        if not has_length and code >= 200 and code not in _NO_BODY_STATUSES:
            self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0":
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        if sends_body and payload:
            self.wfile.write(payload)


def make_keep_alive_server(
    host: str,
    port: int,
    app: WsgiApp,
    *,
    idle_timeout_s: float = DEFAULT_KEEP_ALIVE_S,
    on_connection: Callable[[], None] | None = None,
) -> BaseWSGIServer:
    """A threaded Werkzeug server for ``app`` whose connections stay open between requests.

    ``port`` 0 picks a free port (read it back from ``server.port``);
    ``idle_timeout_s`` (seconds, 0 = close after every response) and
    ``on_connection()`` (called per accepted connection) as in
    :class:`KeepAliveRequestHandler`. Run it with ``serve_forever()``; stop it
    with ``shutdown()`` then ``server_close()``. Raises SystemExit (Werkzeug's
    behaviour) when the port cannot be bound.
    """
    handler = type(
        "SandboxRequestHandler",
        (KeepAliveRequestHandler,),
        {
            "idle_timeout_s": idle_timeout_s,
            "on_connection": staticmethod(on_connection) if on_connection else None,
        },
    )
    return make_server(host, port, app, threaded=True, request_handler=handler)

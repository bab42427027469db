"""A loopback HTTP/1.1 keep-alive proxy that records how long each ``POST /prescriptions`` took upstream.

``python -m bench.send_latency`` puts it between the worker and the sandbox, so
that the platform call can be subtracted from "202 to issued" per
prescription: for every issue call it records the payload's
``client_ref_id``, the wall-clock time (seconds since the epoch) the request
arrived here and the seconds until its answer was written back. Everything
else is forwarded untouched (headers, body, status), on one keep-alive
upstream session per proxy thread. ``GET /__records`` answers the records as
JSON (and is never forwarded). Loopback only; bench use only.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
}


class RecordingProxy(ThreadingHTTPServer):
    """Forward to ``upstream`` (``http://127.0.0.1:<port>``) and record issue calls."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        if not upstream.startswith("http://127.0.0.1:"):
            raise ValueError("loopback only")
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/")
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.local = threading.local()

    def session(self) -> requests.Session:
        """This thread's keep-alive session to the upstream."""
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.trust_env = False
        return session


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body leave in two writes: with Nagle on, the body waits for the
    # worker's delayed ACK of the headers (~40 ms on Linux), a delay outside "seconds".
    disable_nagle_algorithm = True
    server: RecordingProxy

    def log_message(self, *_args: Any) -> None:  # quiet
        pass

    def _forward(self) -> None:
        arrived, started = time.time(), time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
        try:
            resp = self.server.session().request(
                self.command,
                self.server.upstream + self.path,
                data=body or None,
                headers=headers,
                timeout=30,
            )
        except requests.RequestException:
            self.send_error(502)
            return
        payload = resp.content
        self.send_response(resp.status_code)
        for key, value in resp.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()
        if self.command == "POST" and self.path.split("?")[0] == "/prescriptions":
            try:
                ref = json.loads(body or b"{}").get("client_ref_id")
            except ValueError:
                ref = None
            with self.server.lock:
                self.server.records.append(
                    {
                        "ref": ref,
                        "arrived": arrived,
                        "seconds": time.perf_counter() - started,
                        "status": resp.status_code,
                    }
                )

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/__records":
            with self.server.lock:
                data = json.dumps(self.server.records).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._forward()

    def do_POST(self) -> None:  # noqa: N802
        self._forward()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.dispatch.recording_proxy --upstream URL``: serve until SIGTERM.

    Prints ``listening on <port>`` (flushed) once ready.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m bench.dispatch.recording_proxy")
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args(argv)
    proxy = RecordingProxy(args.upstream)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"listening on {proxy.server_address[1]}", flush=True)
    stop.wait()
    proxy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A loopback TCP proxy that adds network latency: the one delay proxy of the benchmarks.

The sandbox answers in a few milliseconds on loopback; a real platform is tens
of milliseconds away, and a managed database is one network hop (about 1 ms)
away. ``bench.dispatch --rtt-ms`` puts this proxy between both clients and the
sandbox; ``bench.reads`` puts it between the service and PostgreSQL. Every
chunk is delivered half an RTT after it was received, in each direction
(latency, not bandwidth: chunks in flight overlap as on a real link), with
``TCP_NODELAY`` on both legs, and a new connection waits one RTT before its
first byte moves (the TCP handshake). Loopback only; threads end with their
connection, and :meth:`LatencyProxy.close` stops accepting.

Threads and ``time.sleep`` rather than asyncio: the event loop rounds its
timeouts up to whole milliseconds (epoll), which would turn 0.5 ms into 1 ms.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


class LatencyProxy:
    """Listen on 127.0.0.1 (a free port) and forward to ``upstream`` with ``rtt_s`` of latency."""

    def __init__(self, upstream: tuple[str, int], rtt_s: float) -> None:
        if upstream[0] != "127.0.0.1":
            raise ValueError("loopback only")
        self.upstream = upstream
        self.one_way_s = rtt_s / 2
        self.rtt_s = rtt_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="latency-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: where clients connect instead of the upstream."""
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop accepting; connections already open end when either side closes."""
        self._closed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        time.sleep(self.rtt_s)  # the handshake a remote server would cost
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
        done = _Pair(client, server)
        for src, dst in ((client, server), (server, client)):
            chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._read, args=(src, chunks), daemon=True).start()
            threading.Thread(target=self._write, args=(dst, chunks, done), daemon=True).start()

    def _read(self, src: socket.socket, chunks: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            chunks.put((time.monotonic() + self.one_way_s, data))
            if not data:
                return

    def _write(
        self, dst: socket.socket, chunks: queue.Queue[tuple[float, bytes]], done: _Pair
    ) -> None:
        try:
            while True:
                due, data = chunks.get()
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            return
        finally:
            done.one_direction_done()


class _Pair:
    """Closes both sockets of a proxied connection once both directions have ended."""

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self._socks = (a, b)
        self._left = 2
        self._lock = threading.Lock()

    def one_direction_done(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left:
                return
        for sock in self._socks:
            sock.close()


def start_process(
    upstream_port: int, *, rtt_ms: float, cwd: Path | None = None
) -> tuple[subprocess.Popen, int]:
    """Start ``python -m bench.latency_proxy`` in its own process; returns (process, its port).

    Its own process so that the proxy's threads take no CPU or GIL from the clients being
    measured. ``rtt_ms`` is the round trip (each direction gets half). The caller stops it
    (``terminate()``). Raises RuntimeError when it does not report its port.
    """
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.latency_proxy",
            "--upstream-port",
            str(upstream_port),
            "--rtt-ms",
            f"{rtt_ms:g}",
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = proc.stdout.readline() if proc.stdout else ""
    if not ready.startswith("listening on "):
        proc.kill()
        raise RuntimeError("the latency proxy did not start")
    return proc, int(ready.split()[-1])


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.latency_proxy --upstream-port P (--rtt-ms X | --delay-ms Y)``: serve.

    Serves until SIGTERM.

    Prints ``listening on <port>`` (flushed) once ready. Runs in its own process so
    that its threads take no CPU or GIL from the clients being measured.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m bench.latency_proxy")
    parser.add_argument("--upstream-port", type=int, required=True)
    delay = parser.add_mutually_exclusive_group(required=True)
    delay.add_argument("--rtt-ms", type=float, help="round trip added (each direction gets half)")
    delay.add_argument("--delay-ms", type=float, help="one-way delay added in each direction")
    args = parser.parse_args(argv)
    rtt_ms = args.rtt_ms if args.rtt_ms is not None else 2 * args.delay_ms
    if not 0 <= rtt_ms <= 10_000:
        parser.error("the round trip must be 0..10000 ms")
    proxy = LatencyProxy(("127.0.0.1", args.upstream_port), rtt_ms / 1000)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"listening on {proxy.port}", flush=True)
    stop.wait()
    proxy.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A loopback TCP proxy that adds network latency, to stand in for a remote platform.

The sandbox answers in a few milliseconds on loopback; a real platform is tens
of milliseconds away. With ``--rtt-ms`` the dispatch benchmark puts this proxy
between both clients and the sandbox: every chunk is delivered half an RTT
after it was received, in each direction (latency, not bandwidth: chunks in
flight overlap as on a real link), and a new connection waits one RTT before
its first byte moves (the TCP handshake). Loopback only; threads end with
their connection, and :meth:`LatencyProxy.close` stops accepting.
"""

from __future__ import annotations

import queue
import socket
import threading
import time


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
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
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

    def _write(self, dst: socket.socket, chunks: queue.Queue[tuple[float, bytes]], done: _Pair) -> None:
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


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.dispatch.latency_proxy --upstream-port P --rtt-ms X``: serve until SIGTERM.

    Prints ``listening on <port>`` (flushed) once ready. Runs in its own process so
    that its threads take no CPU or GIL from the clients being measured.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m bench.dispatch.latency_proxy")
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--rtt-ms", type=float, required=True)
    args = parser.parse_args(argv)
    proxy = LatencyProxy(("127.0.0.1", args.upstream_port), args.rtt_ms / 1000)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"listening on {proxy.port}", flush=True)
    stop.wait()
    proxy.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

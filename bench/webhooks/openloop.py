"""An open-loop load generator: POST pre-signed requests on a fixed schedule, whatever the answers do.

wrk is closed-loop (a connection sends its next request when the previous one
is answered), so a slow server gets less load and its latency looks better
than a platform sending at its own pace would see. Here request ``i`` is due
at ``start + i / rate``: a scheduler thread releases each one at its time to a
pool of ``connections`` threads, each holding one HTTP/1.1 keep-alive
connection (``http.client``). If every connection is busy, a request waits and
its schedule lag grows; the lag is reported, so a generator that fell behind
is visible. Loopback only, bounded by the request count and a per-request
timeout.
"""

from __future__ import annotations

import http.client
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class OpenLoopResult:
    """What one open-loop run saw. Times are seconds; latencies milliseconds.

    ``latency_ms``: from the request's actual send to its full response, for
    every answered request; ``lag_ms``: actual send minus scheduled send;
    ``from_schedule_ms``: scheduled send to full response (what a sender at
    this fixed rate waits when the server falls behind), per answered request;
    ``statuses``: count per HTTP status; ``errors``: requests without an
    answer (socket errors, timeouts), by exception name.
    """

    rate: float
    scheduled: int
    duration_s: float = 0.0
    sent: int = 0
    answered: int = 0
    ok: int = 0
    latency_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    from_schedule_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0


def run(
    url: str,
    requests: Sequence[tuple[str, bytes]],
    *,
    rate: float,
    connections: int = 16,
    timeout_s: float = 10.0,
) -> OpenLoopResult:
    """POST every ``(signature, body)`` of ``requests`` to ``url`` at ``rate`` per second.

    ``url``: ``http://127.0.0.1:PORT/path`` (plain HTTP); ``rate``: requests per
    second (> 0); ``connections``: keep-alive connections (threads);
    ``timeout_s``: per request. Returns when every request was answered or
    failed. Raises ValueError for a bad rate or URL.
    """
    if rate <= 0 or connections < 1:
        raise ValueError("rate and connections must be positive")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"plain http URL expected, got {url!r}")
    host, port, path = parts.hostname, parts.port or 80, parts.path or "/"
    result = OpenLoopResult(rate=rate, scheduled=len(requests))
    jobs: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        latency, lag, from_schedule, statuses, errors = [], [], [], {}, {}
        sent = answered = ok = 0
        while (job := jobs.get()) is not None:
            i, due = job
            sig, body = requests[i]
            t0 = time.perf_counter()
            lag.append((t0 - due) * 1000)
            sent += 1
            try:
                conn.request(
                    "POST",
                    path,
                    body=body,
                    headers={"Content-Type": "application/json", "X-Signature": sig},
                )
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
                continue
            t1 = time.perf_counter()
            latency.append((t1 - t0) * 1000)
            from_schedule.append((t1 - due) * 1000)
            answered += 1
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            ok += 200 <= resp.status < 300
            if resp.will_close:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        conn.close()
        with lock:
            result.latency_ms.extend(latency)
            result.lag_ms.extend(lag)
            result.from_schedule_ms.extend(from_schedule)
            result.sent += sent
            result.answered += answered
            result.ok += ok
            for k, v in statuses.items():
                result.statuses[k] = result.statuses.get(k, 0) + v
            for k, v in errors.items():
                result.errors[k] = result.errors.get(k, 0) + v

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    result.started_at = time.time()
    start = time.perf_counter() + 0.05
    for i in range(len(requests)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        jobs.put((i, due))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(timeout_s + 30)
    result.duration_s = time.perf_counter() - start
    return result

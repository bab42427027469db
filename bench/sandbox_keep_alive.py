"""``python -m bench.sandbox_keep_alive``: what keep-alive saves per platform call.

Starts two sandbox processes, one as it runs by default (HTTP/1.1 keep-alive)
and one with ``--keep-alive 0`` (a new TCP connection per call, the old
behaviour), optionally each behind ``bench.latency_proxy`` with
``--rtt-ms`` of round trip. One ``requests.Session`` per sandbox sends
``--calls`` ``POST /oauth/token`` (the cheapest authenticated-path call),
alternating which sandbox goes first on each pair so that a noisy neighbour hits
both alike. Prints p50 and p90 latency (milliseconds) and the TCP connections
each sandbox accepted (``/sandbox/stats``), and the p50 ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import requests

from bench.latency_proxy import LatencyProxy
from bench.report import markdown_table, percentile, ratio
from scripts.stack import REPO_ROOT

TOKEN_FORM = {
    "grant_type": "client_credentials",
    "client_id": "erx-sandbox-client",
    "client_secret": "erx-sandbox-secret",
}
VARIANTS = {"keep-alive (default)": (), "--keep-alive 0": ("--keep-alive", "0")}


@contextmanager
def sandbox(extra: tuple[str, ...]) -> Iterator[str]:
    """Run ``python -m sandbox --port 0 *extra``; yields its base URL, stops it on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", *extra],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("sandbox listening on "):
            raise RuntimeError(f"sandbox did not start: {line!r}")
        yield line.split(" on ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(10)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print the table; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox_keep_alive", description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="calls per sandbox (default 300)")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="added round trip (default 0)")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 100_000:
        parser.error("--calls must be between 1 and 100000")
    if not 0 <= args.rtt_ms <= 500:
        parser.error("--rtt-ms must be between 0 and 500")

    with ExitStack() as stack:
        direct: dict[str, str] = {}
        target: dict[str, str] = {}
        for name, extra in VARIANTS.items():
            direct[name] = stack.enter_context(sandbox(extra))
            target[name] = direct[name]
            if args.rtt_ms:
                port = int(direct[name].rsplit(":", 1)[1])
                proxy = LatencyProxy(("127.0.0.1", port), args.rtt_ms / 1000)
                stack.callback(proxy.close)
                target[name] = proxy.url
        sessions = {name: stack.enter_context(requests.Session()) for name in VARIANTS}
        samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for name in VARIANTS:  # warm-up: first connection, first request
            sessions[name].post(f"{target[name]}/oauth/token", data=TOKEN_FORM, timeout=10)
        order = list(VARIANTS)
        for i in range(args.calls):
            for name in order if i % 2 == 0 else reversed(order):
                started = time.perf_counter()
                response = sessions[name].post(
                    f"{target[name]}/oauth/token", data=TOKEN_FORM, timeout=10
                )
                samples[name].append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
        rows = []
        for name in VARIANTS:
            stats = requests.get(f"{direct[name]}/sandbox/stats", timeout=10).json()
            # minus the stats call's own connection
            connections = stats["connections_accepted"] - 1
            rows.append(
                [
                    name,
                    args.calls + 1,
                    f"{percentile(samples[name], 50):.2f}",
                    f"{percentile(samples[name], 90):.2f}",
                    connections,
                ]
            )
    print(f"sandbox, POST /oauth/token over one requests.Session, +{args.rtt_ms:g} ms RTT")
    print(markdown_table(["sandbox", "calls", "p50 ms", "p90 ms", "TCP connections"], rows))
    keep_alive, close = (percentile(samples[name], 50) for name in VARIANTS)
    p50_ratio = ratio(keep_alive, close)
    print(f"p50 keep-alive / close: {p50_ratio:.2f}" if p50_ratio is not None else "p50 ratio: n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main())

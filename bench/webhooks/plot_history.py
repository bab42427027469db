"""Plot receipt->history latency and apply/intake from saved ``bench.webhooks`` results.

Usage::

    python -m bench.webhooks.plot_history OUT.png LABEL=results.json [LABEL=results.json ...]

Each JSON is a ``bench/results/webhooks.json`` of one run; the plot shows,
per label and connection count, the sampled "seen committed" p50/p99 (ms, log
scale) and the workers' apply rate over the receiver's intake rate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen


def main(argv: list[str]) -> int:
    """Write the PNG named by ``argv[0]``; returns a process exit code."""
    if len(argv) < 2:
        print("usage: python -m bench.webhooks.plot_history OUT.png LABEL=results.json ...", file=sys.stderr)
        return 2
    out, runs = Path(argv[0]), [arg.split("=", 1) for arg in argv[1:]]
    bars: list[tuple[str, float, float, float]] = []
    for label, path in runs:
        data = json.loads(Path(path).read_text())
        for entry in data["receipt_to_history"]:
            seen = entry["receipt_to_commit_sampled_ms"]
            intake = entry["load"]["rps"]
            ratio = entry["worker_throughput_per_s"] / intake if intake else 0.0
            bars.append((f"{label}\nc={entry['connections']}", seen["p50"] or 0.0, seen["p99"] or 0.0, ratio))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = range(len(bars))
    ax1.bar([x - 0.2 for x in xs], [b[1] for b in bars], width=0.4, label="p50")
    ax1.bar([x + 0.2 for x in xs], [b[2] for b in bars], width=0.4, label="p99")
    ax1.set_yscale("log")
    ax1.set_ylabel("receipt -> history committed, ms (log)")
    ax1.set_xticks(list(xs), [b[0] for b in bars], fontsize=8)
    ax1.legend()
    ax2.bar(list(xs), [b[3] for b in bars])
    ax2.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax2.set_ylabel("inbox apply rate / receiver intake rate")
    ax2.set_xticks(list(xs), [b[0] for b in bars], fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

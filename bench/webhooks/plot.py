"""Plot a ``bench.webhooks`` results file: one PNG per phase it holds.

Usage::

    python -m bench.webhooks.plot [bench/results/webhooks.json] [--out docs]

* ``bench-ingest.png``: the per-round ratios service/reference at each
  connection count, with the run's A/A band (reference copy / reference).
* ``bench-history.png``: receipt -> history (async, service + inbox workers)
  against the synchronous receiver's request latency at the steady rate:
  p50 and p99 per round, and the distribution (CDF) of every event.
* ``bench-saturation.png``: intake and applied events per second over the
  saturation load and its drain.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from scripts.stack import REPO_ROOT  # noqa: E402

DEFAULT_RESULTS = REPO_ROOT / "bench" / "results" / "webhooks.json"


def _subtitle(data: dict[str, Any]) -> str:
    m = data["machine"]
    return f"{data['database']}, {m['cpus']} CPUs, commit {m['git_commit']}, {m['measured_at']}"


def plot_ingest(data: dict[str, Any], out: Path) -> Path:
    """Per-round service/reference ratios with the A/A band, one column per connection count."""
    comps = data["ingest"]["comparisons"]
    fig, axes = plt.subplots(1, len(comps), figsize=(5 * len(comps), 4), squeeze=False)
    for ax, c in zip(axes[0], comps, strict=True):
        svc = c["ratio_service_over_reference_per_round"]
        aa = c["ratio_copy_over_reference_per_round"]
        rounds = list(range(1, len(svc) + 1))
        band = c["aa_band"]
        if band:
            ax.axhspan(
                band[0], band[1], color="grey", alpha=0.2, label="A/A band (copy / reference)"
            )
        ax.plot(rounds, aa, "s--", color="grey", label="reference copy / reference")
        ax.plot(rounds, svc, "o-", color="C0", label="service / reference")
        med = c["pooled_median_service_over_reference"]
        if med is not None:
            ax.axhline(
                med, color="C0", linewidth=1, linestyle=":", label=f"pooled median {med:.2f}"
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"{c['connections']} connection(s)")
        ax.set_xlabel("round (fresh servers)")
        ax.set_xticks(rounds)
        ax.set_ylabel("requests/s ratio")
        ax.legend(fontsize=7)
    fig.suptitle(
        "Webhook ingest: service against the bare reference receiver\n" + _subtitle(data),
        fontsize=9,
    )
    fig.tight_layout()
    path = out / "bench-ingest.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_history(data: dict[str, Any], out: Path) -> Path:
    """p50/p99 per round: async receipt -> history and the sync receiver's request latency."""
    h = data["history"]
    asyncs = sorted((x for x in h["loads"] if x["slot"] == "async"), key=lambda x: x["round"])
    syncs = sorted((x for x in h["loads"] if x["slot"] == "sync"), key=lambda x: x["round"])
    fig, (ax, cdf) = plt.subplots(1, 2, figsize=(13, 4.5))
    for rows, key, label, color, dx in (
        (asyncs, "receipt_to_history_ms", "async: receipt -> history visible", "C0", -0.1),
        (syncs, "request_latency_ms", "sync: request latency (applied in the request)", "C1", 0.1),
    ):
        xs = [x["round"] + dx for x in rows]
        ax.plot(xs, [x[key]["p50"] for x in rows], "o", color=color, label=f"{label}, p50")
        ax.plot(xs, [x[key]["p99"] for x in rows], "^", color=color, label=f"{label}, p99")
        ax.vlines(
            xs, [x[key]["p50"] for x in rows], [x[key]["p99"] for x in rows], color=color, alpha=0.5
        )
    if syncs:
        ax.plot(
            [x["round"] for x in syncs],
            [2 * x["request_latency_ms"]["p99"] for x in syncs],
            "_",
            color="red",
            markersize=20,
            label="target: 2 x sync p99",
        )
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_xticks(sorted({x["round"] for x in h["loads"]}))
    ax.set_ylabel("ms (log)")
    ax.legend(fontsize=7)
    ax.set_title("p50 and p99 per round", fontsize=9)
    for rows, key, label, color in (
        (asyncs, "receipt_to_history_values_ms", "async: receipt -> history", "C0"),
        (syncs, "request_latency_values_ms", "sync: request latency", "C1"),
    ):
        for i, x in enumerate(rows):
            values = x.get(key) or []
            if values:
                ys = [(k + 1) / len(values) for k in range(len(values))]
                cdf.plot(
                    values,
                    ys,
                    color=color,
                    alpha=0.5 + 0.5 * (i == 0),
                    linewidth=1,
                    label=f"{label}, round {x['round']}",
                )
    cdf.set_xscale("log")
    cdf.set_xlabel("ms (log)")
    cdf.set_ylabel("fraction of events")
    cdf.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
    cdf.set_title("distribution (every event, every round)", fontsize=9)
    cdf.legend(fontsize=7)
    fig.suptitle(
        f"Receipt to history at {h['rate_per_s']:g} events/s, {h['inbox_workers']} inbox workers, "
        "against the synchronous receiver\n" + _subtitle(data),
        fontsize=9,
    )
    fig.tight_layout()
    path = out / "bench-history.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_saturation(data: dict[str, Any], out: Path) -> Path:
    """Intake and applied per second over the saturation load."""
    s = data["saturation"]
    series = s["series"]
    xs = [i * series["step_s"] for i in range(len(series["intake_per_s"]))]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(xs, series["intake_per_s"], label="intake (stored) /s")
    ax.plot(
        xs[: len(series["applied_per_s"])],
        series["applied_per_s"],
        label="applied (history visible) /s",
    )
    ax.axvline(series["load_end_s"], color="grey", linestyle="--", linewidth=1, label="load stops")
    ax.set_xlabel("seconds from the first receipt")
    ax.set_ylabel("events per second")
    rth = s["receipt_to_history_ms"]
    ax.set_title(
        f"Saturation: {s['connections']} connections, {s['inbox_workers']} inbox workers; apply/intake "
        f"{s['apply_over_intake']}, receipt->history p50 {rth['p50']} ms p99 {rth['p99']} ms\n"
        + _subtitle(data),
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "bench-saturation.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    """Draw every phase the results file holds; returns a process exit code."""
    p = argparse.ArgumentParser(
        prog="python -m bench.webhooks.plot", description=__doc__.splitlines()[0]
    )
    p.add_argument("results", nargs="?", default=str(DEFAULT_RESULTS))
    p.add_argument(
        "--out", default=str(REPO_ROOT / "docs"), help="folder for the PNGs (default docs/)"
    )
    args = p.parse_args(argv)
    data = json.loads(Path(args.results).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = [
        fn(data, out)
        for key, fn in (
            ("ingest", plot_ingest),
            ("history", plot_history),
            ("saturation", plot_saturation),
        )
        if data.get(key)
    ]
    for path in drawn:
        print(f"wrote {path}")
    if not drawn:
        print("no phase in the results to plot", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

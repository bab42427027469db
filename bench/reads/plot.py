"""``python -m bench.reads.plot RESULTS.json OUT.png``: the read benchmark's figures, every round.

Left: each audited request's requests per second over ``GET /api/v1/regions`` in the same
round, per target and connection count (one marker per round, the median as a bar), with
the issue's targets as dashed lines. Right: p50 latency at one connection per round.
matplotlib (pinned in requirements-dev.txt), Agg backend: no display needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def draw(data: dict[str, Any], out: Path) -> None:
    """Write the PNG for ``data`` (the results of ``python -m bench.reads``) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = data["loads"]
    requests = [r for r in data["settings"]["requests"] if r != "regions"]
    targets = data["settings"]["targets"]
    conns = data["settings"]["connections"]
    groups = [(t, c) for t in targets for c in conns]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(requests), 1)
    colours = {"single": "tab:blue", "list": "tab:orange", "fhir": "tab:green"}
    for j, request in enumerate(requests):
        for i, (t, c) in enumerate(groups):
            vals = [
                x["ratio_to_regions"]
                for x in loads
                if x["target"] == t
                and x["connections"] == c
                and x["request"] == request
                and x.get("ratio_to_regions") is not None
            ]
            if not vals:
                continue
            xpos = i + (j - (len(requests) - 1) / 2) * width
            med = sorted(vals)[len(vals) // 2]
            left.bar(
                xpos,
                med,
                width * 0.9,
                color=colours.get(request, "grey"),
                alpha=0.35,
                label=request if i == 0 else None,
            )
            left.scatter(
                [xpos] * len(vals), vals, color=colours.get(request, "grey"), s=14, zorder=3
            )
    for request, want in (("single", 0.8), ("list", 0.3)):
        if request in requests:
            left.axhline(want, color=colours[request], linestyle="--", linewidth=0.8)
    left.set_xticks(range(len(groups)), [f"{t}\n{c} conn" for t, c in groups])
    left.set_ylabel("req/s / GET /regions (same round)")
    left.set_title("Audited reads against the reference, every round")
    left.legend(fontsize=8)
    one = [t for t in targets]
    for j, request in enumerate([*requests, "regions"]):
        for i, t in enumerate(one):
            vals = [
                x["latency_ms"]["p50"]
                for x in loads
                if x["target"] == t and x["connections"] == 1 and x["request"] == request
            ]
            if vals:
                xpos = i + (j - len(requests) / 2) * (0.8 / (len(requests) + 1))
                right.scatter(
                    [xpos] * len(vals),
                    vals,
                    color=colours.get(request, "grey"),
                    s=14,
                    label=request if i == 0 else None,
                )
    for request, want in (("single", 5.0), ("list", 8.0)):
        if request in requests:
            right.axhline(want, color=colours[request], linestyle="--", linewidth=0.8)
    right.set_xticks(range(len(one)), one)
    right.set_yscale("log")
    right.set_ylabel("p50 ms, one connection (log)")
    right.set_title("One client: p50 per round")
    right.legend(fontsize=8)
    m = data["machine"]
    fig.suptitle(
        f"bench.reads, {data['database']}, commit {m['git_commit']}, {m['measured_at']}, proxy "
        f"{data['settings']['delay_ms']:g} ms each way",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Read the results file and draw the PNG; exits 2 with a one-line cause on bad arguments."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.reads.plot RESULTS.json OUT.png", file=sys.stderr)
        return 2
    try:
        data = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"cannot read {args[0]}: {type(exc).__name__}", file=sys.stderr)
        return 2
    draw(data, Path(args[1]))
    print(f"wrote {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

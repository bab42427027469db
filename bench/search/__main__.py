"""``python -m bench.search``: p95 latency of pharmacy search over 12,000 pharmacies vs the seeded few.

What runs (loopback only, every loop bounded):

1. Two throwaway PostgreSQL databases (``bench.database``; ``erx_bench_id_small``
   and ``erx_bench_id_large`` by default, ``--db-prefix`` changes them): both
   migrated (``alembic upgrade head``: the pg_trgm index of migration 0003) and
   seeded with the reference data (``scripts/seed/001_reference.sql``: 46
   pharmacies, 40 of them Region B); the large one also gets
   ``scripts/seed/bulk/pharmacies.sql`` (12,000 more). Both are VACUUM ANALYZEd,
   so the GIN index has no pending list and the planner has statistics.
2. ``--rounds`` rounds (default 3). In each, for both databases, in alternating
   order (small first in odd rounds, large first in even ones), a FRESH
   service process starts under gunicorn (the project's gunicorn.conf.py,
   ``--workers`` workers), answers ``--warmup`` untimed queries, then the same
   ``--queries`` queries (default 1,000), one after the other over one
   keep-alive HTTP session, each ``GET /api/v1/pharmacies?q=...`` with a
   patient's development token; the client times each request (send to last
   byte) and checks it answered 200. Then the process is stopped.
3. The queries are drawn once (``--seed``) from a fixed mix: pharmacy names and
   name words, towns, postcode prefixes (with and without the space), accented
   and unaccented spellings, short type-ahead prefixes, and a few generic words.

Prints a Markdown table per round and pooled (all rounds' latencies together),
the p95 ratio large/small per round, the median of those ratios and the pooled
ratio; the target is the 12,000 case within 2x of the small one. Writes
``bench/results/search.json`` and, with ``--plot PATH``, a PNG (matplotlib).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy import text

from app.foundation.config import Settings
from app.foundation.db import make_engine
from app.interfaces.identity import mint_token
from app.services.seeding import bulk_pharmacies_sql, execute_sql_script, run_seed_scripts
from bench.database import BenchDatabase
from bench.procstat import busy_pct
from bench.report import fmt, machine, markdown_table, percentile, preflight, ratio, write_results
from scripts.stack import REPO_ROOT, Stack, base_env, free_port

HTTP_TIMEOUT = 10.0
LOG_DIR = REPO_ROOT / "instance" / "logs" / "bench-search"

# The query mix: (weight, candidates). Candidates are what a patient types into the
# search box; the same draws go to both databases.
NAMES = [
    "Headingley Pharmacy",
    "Marylebone",
    "Boots Leeds",
    "Mill Road",
    "Clifton Village",
    "Jesmond",
    "Lark Lane Pharmacy",
    "Boots Manchester",
    "Chorlton",
    "Roath",
    "Station Road Pharmacy",
    "patel chemists",
    "The High Street Pharmacy",
    "Khan Healthcare",
    "hughes",
    "Byres Road",
    "castle street",
    "kings heath",
    "Morningside Pharmacy",
    "evans",
    "walsh's pharmacy",
    "campbell",
    "bridge street pharmacy",
    "Uplands",
]
TOWNS = [
    "Leeds",
    "Bristol",
    "Cardiff",
    "Edinburgh",
    "Glasgow",
    "Belfast",
    "Oxford",
    "Cambridge",
    "York",
    "Bath",
    "Exeter",
    "Plymouth",
    "Norwich",
    "Hull",
    "Derby",
    "Reading",
    "Preston",
    "Harrogate",
    "Inverness",
    "Wrexham",
    "Caernarfon",
    "Llandudno",
    "Merthyr Tudful",
    "Newcastle upon Tyne",
    "Stoke-on-Trent",
    "Milton Keynes",
    "Lancaster",
    "Swansea",
    "Aberdeen",
    "Dundee",
    "London",
    "Manchester",
    "Birmingham",
    "Sheffield",
    "Liverpool",
]
POSTCODES = [
    "W1U",
    "W1U 5HS",
    "LS6 2",
    "LS62",
    "ls6 2al",
    "BS8 4",
    "bs84bx",
    "EH10 4QP",
    "M21",
    "CF24 3",
    "G12 8",
    "B14",
    "NE2",
    "SW1A",
    "EC1A",
    "WC2N",
    "BT9 6",
    "OX2",
    "CB1 3",
    "YO23",
    "PL4 6LF",
    "ST4",
    "LL55",
    "AB25",
    "DD5",
]
ACCENTS = [
    "Müller",
    "muller",
    "Zoë",
    "zoe healthcare",
    "Ó Briain",
    "o briain",
    "Chloé",
    "chloe's pharmacy",
    "Brontë",
    "bronte chemists",
    "Siân",
    "sian",
    "Llŷr",
    "Ní Mhurchú",
    "ni mhurchu",
    "Renée",
    "François",
    "Hélène",
    "Søren",
    "Ångström",
    "Noël",
    "Gaël",
    "Bérénice",
    "Núñez",
]
TYPE_AHEAD = ["hea", "mar", "boo", "lee", "car", "pat", "jes", "mil", "edi", "gla", "bri", "she"]
GENERIC = ["pharmacy", "chemist", "boots"]
MIX: list[tuple[float, list[str]]] = [
    (0.27, NAMES),
    (0.27, TOWNS),
    (0.22, POSTCODES),
    (0.16, ACCENTS),
    (0.06, TYPE_AHEAD),
    (0.02, GENERIC),
]


def draw_queries(count: int, seed: int) -> list[str]:
    """``count`` queries drawn from :data:`MIX` with ``random.Random(seed)``."""
    rng = random.Random(seed)
    weights = [w for w, _ in MIX]
    return [rng.choice(rng.choices([c for _, c in MIX], weights=weights)[0]) for _ in range(count)]


@dataclass
class Run:
    """One server process answering all queries: latencies in milliseconds, in query order."""

    case: str
    round: int
    latencies_ms: list[float] = field(default_factory=list)
    hits: int = 0

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "case": self.case,
            "round": self.round,
            "requests": len(lat),
            "mean_ms": statistics.fmean(lat),
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat),
            "total_hits": self.hits,
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--queries", type=int, default=1000, help="timed queries per run (default 1000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument(
        "--warmup", type=int, default=50, help="untimed queries per fresh server (default 50)"
    )
    parser.add_argument(
        "--pharmacies", type=int, default=12000, help="bulk pharmacies in the large case"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--seed", type=int, default=8, help="random seed of the query draw (default 8)"
    )
    parser.add_argument(
        "--db-prefix", default="erx_bench_id", help="database name prefix (erx_bench*)"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="write a PNG plot here (matplotlib)"
    )
    return parser.parse_args(argv)


def prepare(db: BenchDatabase, *, bulk: int) -> int:
    """Recreate, migrate and seed ``db`` (plus ``bulk`` pharmacies); returns the pharmacy count."""
    db.recreate()
    subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "alembic"), "upgrade", "head"],
        cwd=REPO_ROOT,
        env=base_env(DATABASE_URL=db.url),
        check=True,
        capture_output=True,
    )
    engine = make_engine(db.url)
    try:
        run_seed_scripts(engine, reference_only=True)
        if bulk:
            execute_sql_script(engine, bulk_pharmacies_sql(bulk))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE pharmacies"))
            return int(conn.execute(text("SELECT count(*) FROM pharmacies")).scalar() or 0)
    finally:
        engine.dispose()


def run_once(
    db: BenchDatabase,
    *,
    case: str,
    round_no: int,
    queries: list[str],
    warmup: list[str],
    workers: int,
    token: str,
) -> Run:
    """Start a fresh service on ``db``, warm it, time ``queries``, stop it."""
    stack = Stack(env=base_env(DATABASE_URL=db.url, GUNICORN_LOGLEVEL="warning"), log_dir=LOG_DIR)
    run = Run(case=case, round=round_no)
    try:
        base = stack.start_service(port=free_port(), workers=workers)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"

        def ask(q: str) -> requests.Response:
            response = session.get(f"{base}/api/v1/pharmacies?q={quote(q)}", timeout=HTTP_TIMEOUT)
            if response.status_code != 200:
                raise RuntimeError(f"{case}: q={q!r} answered {response.status_code}")
            return response

        for q in warmup:
            ask(q)
        for q in queries:
            started = time.perf_counter()
            response = ask(q)
            run.latencies_ms.append((time.perf_counter() - started) * 1000.0)
            run.hits += int(response.json()["total"])
        session.close()
    finally:
        stack.stop()
    return run


def plot(path: Path, runs: list[Run], pooled: dict[str, dict[str, Any]]) -> None:
    """Per-round p50/p95 of both cases, and the pooled latency distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    rounds = sorted({r.round for r in runs})
    for offset, case, colour in ((-0.18, "small", "#4c72b0"), (0.18, "large", "#dd8452")):
        by_round = {r.round: r.summary() for r in runs if r.case == case}
        xs = [n + offset for n in rounds]
        left.bar(
            xs,
            [by_round[n]["p95_ms"] for n in rounds],
            width=0.34,
            color=colour,
            label=f"{case}: {pooled[case]['pharmacies']:,} pharmacies, p95",
        )
        left.scatter(xs, [by_round[n]["p50_ms"] for n in rounds], color="black", s=14, zorder=3)
        lat = sorted(x for r in runs if r.case == case for x in r.latencies_ms)
        right.plot(
            lat,
            [i / len(lat) for i in range(1, len(lat) + 1)],
            color=colour,
            label=f"{case} ({pooled[case]['pharmacies']:,})",
        )
    left.set_xticks(rounds, [f"round {n}" for n in rounds])
    left.set_ylabel("latency (ms); dots = p50")
    left.set_title("GET /api/v1/pharmacies?q=... per round (fresh server each)")
    left.legend(fontsize=8)
    right.axhline(0.95, color="grey", linewidth=0.8, linestyle="--")
    right.set_xscale("log")
    right.set_xlabel("latency (ms, log)")
    right.set_ylabel("fraction of requests")
    right.set_title("all rounds pooled (dashed: p95)")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.monotonic()
    busy_before = busy_pct()
    preflight(busy_before)
    small = BenchDatabase(
        "postgresql",
        f"{args.db_prefix}_small",
        f"postgresql+psycopg2://postgres@127.0.0.1:5432/{args.db_prefix}_small",
    )
    large = BenchDatabase(
        "postgresql",
        f"{args.db_prefix}_large",
        f"postgresql+psycopg2://postgres@127.0.0.1:5432/{args.db_prefix}_large",
    )
    print(
        f"== search benchmark: {args.queries} queries x {args.rounds} rounds, 12k case = "
        f"{args.pharmacies:,} bulk + seeded pharmacies",
        flush=True,
    )
    counts = {"small": prepare(small, bulk=0), "large": prepare(large, bulk=args.pharmacies)}
    print(f"pharmacies: small {counts['small']:,}, large {counts['large']:,}", flush=True)
    queries = draw_queries(args.queries, args.seed)
    warmup = draw_queries(args.warmup, args.seed + 1)
    token = mint_token(Settings(), role="patient", subject="pt-0001", ttl_s=3600)
    runs: list[Run] = []
    try:
        for round_no in range(1, args.rounds + 1):
            order = [("small", small), ("large", large)]
            if round_no % 2 == 0:
                order.reverse()
            for case, db in order:
                run = run_once(
                    db,
                    case=case,
                    round_no=round_no,
                    queries=queries,
                    warmup=warmup,
                    workers=args.workers,
                    token=token,
                )
                runs.append(run)
                s = run.summary()
                print(
                    f"round {round_no} {case:5}: p50 {s['p50_ms']:.2f} ms  p95 {s['p95_ms']:.2f} ms  "
                    f"p99 {s['p99_ms']:.2f} ms",
                    flush=True,
                )
    finally:
        for db in (small, large):
            db.finish()

    per_round = []
    for round_no in range(1, args.rounds + 1):
        s = next(r for r in runs if r.round == round_no and r.case == "small").summary()
        lg = next(r for r in runs if r.round == round_no and r.case == "large").summary()
        per_round.append(
            {
                "round": round_no,
                "small": s,
                "large": lg,
                "p95_ratio": ratio(lg["p95_ms"], s["p95_ms"]),
                "first": "small" if round_no % 2 else "large",
            }
        )
    pooled: dict[str, dict[str, Any]] = {}
    for case in ("small", "large"):
        lat = [x for r in runs if r.case == case for x in r.latencies_ms]
        pooled[case] = {
            "pharmacies": counts[case],
            "requests": len(lat),
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "mean_ms": statistics.fmean(lat),
        }
    ratios = [r["p95_ratio"] for r in per_round]
    verdict = {
        "median_round_p95_ratio": statistics.median(ratios),
        "pooled_p95_ratio": ratio(pooled["large"]["p95_ms"], pooled["small"]["p95_ms"]),
        "pooled_p50_ratio": ratio(pooled["large"]["p50_ms"], pooled["small"]["p50_ms"]),
        "target": "large p95 within 2x of small p95",
    }
    verdict["met"] = bool(
        verdict["pooled_p95_ratio"] is not None and verdict["pooled_p95_ratio"] <= 2.0
    )

    rows = []
    for r in per_round:
        for case in (("small", r["small"]), ("large", r["large"])):
            name, s = case
            rows.append(
                [
                    r["round"],
                    f"{name} ({counts[name]:,})",
                    "first" if r["first"] == name else "second",
                    fmt(s["p50_ms"], 2),
                    fmt(s["p95_ms"], 2),
                    fmt(s["p99_ms"], 2),
                    fmt(s["mean_ms"], 2),
                    fmt(r["p95_ratio"], 2) if name == "large" else "",
                ]
            )
    for name in ("small", "large"):
        p = pooled[name]
        rows.append(
            [
                "pooled",
                f"{name} ({counts[name]:,})",
                "",
                fmt(p["p50_ms"], 2),
                fmt(p["p95_ms"], 2),
                fmt(p["p99_ms"], 2),
                fmt(p["mean_ms"], 2),
                fmt(verdict["pooled_p95_ratio"], 2) if name == "large" else "",
            ]
        )
    print()
    print(
        markdown_table(
            [
                "round",
                "case (pharmacies)",
                "order",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "mean ms",
                "p95 ratio large/small",
            ],
            rows,
        )
    )
    print(
        f"\nmedian of per-round p95 ratios: {verdict['median_round_p95_ratio']:.2f}; pooled p95 ratio: "
        f"{verdict['pooled_p95_ratio']:.2f} (target <= 2.0: {'met' if verdict['met'] else 'NOT met'})"
    )
    data = {
        "machine": machine(busy_before_pct=busy_before),
        "command": " ".join(["python -m bench.search", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mix": [{"weight": w, "candidates": len(c)} for w, c in MIX],
        "rounds": per_round,
        "pooled": pooled,
        "verdict": verdict,
        "wall_s": time.monotonic() - wall,
    }
    path = write_results("search", data)
    print(f"results: {path.relative_to(REPO_ROOT)}")
    if args.plot:
        plot(args.plot, runs, pooled)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

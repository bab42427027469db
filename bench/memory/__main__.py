"""``python -m bench.memory``: does a process keep growing? (Tests and measurements)

Starts the real stack (scripts/stack.py: sandbox, gunicorn with ONE worker
process, and later ``flask --app app worker``) on a throwaway database
(bench/database.py; default ``erx_bench_memory``, ``BENCH_DB=sqlite`` for SQLite)
and samples the resident set (``VmRSS`` of /proc/<pid>/status, KiB) every
``--every`` operations:

- **web**: the gunicorn worker after ``--requests`` requests, mixed in turn:
  GET a prescription (service token), a pharmacy search, a signed webhook POST;
- **worker**: the queue worker after ``--jobs`` applied inbox events (signed
  webhooks for one issued prescription, posted through the service in chunks;
  each is claimed, applied through app.mechanisms.history and audited).

Reports every sample and the slope after warm-up (the first ``--warmup``
samples): a least-squares line through the rest, KiB per 1,000 operations.
Writes bench/results/memory.json, docs/bench-memory.json and a plot
(``--plot``, default docs/bench-memory.png).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, func, select, text, update

from app.foundation.models import Prescription, WebhookInbox
from bench.database import BenchDatabase
from bench.report import machine, write_results
from scripts.stack import REPO_ROOT, WEBHOOK_SECRET, Stack, base_env, free_port
from webhooks.signature import sign

TOKEN = "SRXBENCHMEM00001"


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS of /proc/<pid>/status; Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def gunicorn_worker(master: int) -> int:
    """The single worker process forked by gunicorn master ``master``."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker, found {children}")
    return int(children[0])


def slope_per_1000(samples: list[tuple[int, int]], warmup: int) -> float:
    """Least-squares slope of RSS (KiB) per 1,000 operations over the samples after warm-up."""
    rest = samples[warmup:]
    if len(rest) < 2:
        return 0.0
    xs = [n / 1000 for n, _ in rest]
    ys = [float(kib) for _, kib in rest]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def event(n: int, run: str) -> bytes:
    """A signed-status event for the benchmark's one issued prescription (contract §6 shape)."""
    body = {
        "id": f"evt_mem_{run}_{n}",
        "type": "prescription.status_updated",
        "created": "2026-11-20T10:15:09Z",
        "data": {
            "prescription": {
                "id": TOKEN,
                "client_ref_id": "rx-000001",
                "status": "signed",
                "previous_status": "issued",
                "occurred_at": "2026-11-20T10:15:08Z",
            }
        },
    }
    return json.dumps(body).encode()


def post_event(http: requests.Session, url: str, n: int, run: str) -> None:
    body = event(n, run)
    headers = {
        "Content-Type": "application/json",
        "X-Signature": sign(body, [WEBHOOK_SECRET], timestamp=int(time.time())),
    }
    resp = http.post(f"{url}/webhooks/platform", data=body, headers=headers, timeout=10)
    resp.raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000)
    parser.add_argument("--warmup", type=int, default=3, help="samples before the slope is taken")
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs" / "bench-memory.png")
    args = parser.parse_args(argv)

    os.environ.setdefault("BENCH_PG_DB", "erx_bench_memory")
    database = BenchDatabase.from_env()
    database.recreate()
    logs = REPO_ROOT / "instance" / "bench" / "memory-logs"
    stack = Stack(
        env=base_env(
            DATABASE_URL=database.url,
            ERX_ENV="test",
            WORKER_POLL_S="0.02",
            WORKER_BATCH="100",
            LOG_LEVEL="WARNING",
        ),
        log_dir=logs,
    )
    engine = create_engine(database.url)
    web: list[tuple[int, int]] = []
    worker: list[tuple[int, int]] = []
    run = str(int(time.time()))
    try:
        port = free_port()
        stack.start_sandbox(webhook_port=port)
        stack.prepare_database()
        with engine.begin() as conn:
            pid = conn.execute(select(func.min(Prescription.id))).scalar_one()
            conn.execute(
                update(Prescription)
                .where(Prescription.id == pid)
                .values(platform_token=TOKEN, status="issued")
            )
        url = stack.start_service(port=port, workers=1)
        web_pid = gunicorn_worker(stack.procs["service"].pid)
        auth = stack.bearer(role="service", subject="bench-memory")
        http = requests.Session()
        posted = 0
        web.append((0, rss_kib(web_pid)))
        for n in range(1, args.requests + 1):
            kind = n % 3
            if kind == 0:
                http.get(
                    f"{url}/api/v1/prescriptions/{pid}", headers=auth, timeout=10
                ).raise_for_status()
            elif kind == 1:
                http.get(
                    f"{url}/api/v1/pharmacies",
                    params={"q": "pharm", "per_page": 5},
                    headers=auth,
                    timeout=10,
                ).raise_for_status()
            else:
                posted += 1
                post_event(http, url, posted, run)
            if n % args.every == 0:
                web.append((n, rss_kib(web_pid)))
                print(f"web {n:>6} requests: {web[-1][1]} KiB", flush=True)

        proc = stack.start_worker("worker")
        worker_pid = proc.pid

        def done() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        select(func.count())
                        .select_from(WebhookInbox)
                        .where(WebhookInbox.processed_at.is_not(None))
                    ).scalar_one()
                )

        time.sleep(1.0)
        worker.append((0, rss_kib(worker_pid)))
        for target in range(args.every, args.jobs + 1, args.every):
            while posted < target:
                posted += 1
                post_event(http, url, posted, run)
            deadline = time.monotonic() + 300
            while done() < target:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker stuck below {target} applied events")
                time.sleep(0.05)
            worker.append((target, rss_kib(worker_pid)))
            print(f"worker {target:>6} jobs: {worker[-1][1]} KiB", flush=True)
        with engine.connect() as conn:
            audited = conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
    finally:
        stack.stop()
        engine.dispose()
        if not os.environ.get("BENCH_KEEP_DB"):
            database.drop()

    result: dict[str, Any] = {
        "machine": machine(),
        "database": database.label,
        "command": "python -m bench.memory " + " ".join(argv if argv is not None else sys.argv[1:]),
        "every": args.every,
        "warmup_samples": args.warmup,
        "web": {
            "samples_kib": web,
            "slope_kib_per_1000_after_warmup": round(slope_per_1000(web, args.warmup), 1),
        },
        "worker": {
            "samples_kib": worker,
            "slope_kib_per_1000_after_warmup": round(slope_per_1000(worker, args.warmup), 1),
            "audit_rows": audited,
        },
    }
    write_results("memory", result)
    (REPO_ROOT / "docs" / "bench-memory.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(web, worker, args.plot, args.warmup)
    print(json.dumps({k: result[k] for k in ("web", "worker")}, indent=1))
    return 0


def plot(
    web: list[tuple[int, int]], worker: list[tuple[int, int]], path: Path, warmup: int
) -> None:
    """Two series, MiB against operations, warm-up shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [n for n, _ in web],
        [k / 1024 for _, k in web],
        marker="o",
        label="gunicorn web worker (requests)",
    )
    ax.plot(
        [n for n, _ in worker],
        [k / 1024 for _, k in worker],
        marker="s",
        label="queue worker (inbox jobs)",
    )
    if web and len(web) > warmup:
        ax.axvspan(0, web[warmup][0], color="0.9", label="warm-up")
    ax.set_xlabel("operations")
    ax.set_ylabel("resident set (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    ax.set_title("Resident set under load (VmRSS, sampled every 1,000)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())

"""The read and growth benchmarks' command lines and arithmetic, and the shared delay proxy.

The benchmarks themselves are run by hand (docs/benchmarks.md), never timed in tests: these
check that the modules import, parse their arguments, refuse bad ones with a usage error,
and compute ratios and targets from loads exactly as the report says.
"""

from __future__ import annotations

import socket
import threading

import pytest

from bench.growth.__main__ import Plan, _chunks
from bench.growth.__main__ import main as growth_main
from bench.latency_proxy import LatencyProxy
from bench.reads.__main__ import (
    growth_comparison,
    parse_args,
    request_paths,
    scan_deltas,
    summarise,
    targets_met,
)
from bench.reads.fixtures import ReadFixtures
from bench.reads.lockwatch import LockTally
from bench.webhooks.__main__ import parse_args as webhooks_args


def test_reads_defaults_measure_single_list_and_the_reference_directly_and_proxied() -> None:
    args = parse_args([])
    assert args.targets == ["direct", "proxy"]
    assert args.requests == ["single", "list", "regions"]
    assert args.connections == [32, 1]
    assert (args.delay_ms, args.rounds, args.name) == (0.5, 3, "reads")


def test_reads_with_a_grown_database_compares_it_with_the_small_one_and_adds_fhir() -> None:
    args = parse_args(["--growth-db", "erx_bench_growth", "--requests", "list"])
    assert args.targets == ["direct", "growth"]
    assert args.requests == ["list", "regions"]  # the reference is always measured
    assert args.name == "reads-growth"


@pytest.mark.parametrize(
    "argv",
    [
        ["--connections", "0"],
        ["--connections", "x"],
        ["--targets", "nowhere"],
        ["--requests", ""],
        ["--targets", "growth"],
        ["--growth-db", "production"],
        ["--delay-ms", "0"],
        ["--rounds", "0"],
    ],
)
def test_reads_refuses_bad_arguments_with_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2


def test_request_paths_name_the_patients_prescriptions_in_turn() -> None:
    fx = ReadFixtures("pt-0001", (3, 27, 51))
    assert request_paths("single", fx) == [
        "/api/v1/prescriptions/3",
        "/api/v1/prescriptions/27",
        "/api/v1/prescriptions/51",
    ]
    assert request_paths("list", fx) == ["/api/v1/me/prescriptions?per_page=50"]
    assert request_paths("fhir", fx) == ["/fhir/R4/MedicationRequest?patient=pt-0001"]
    assert request_paths("regions", fx) == ["/api/v1/regions"]


def _load(
    target: str,
    conns: int,
    rnd: int,
    request: str,
    rps: float,
    p50: float,
    waits: int = 0,
    wal_waits: int = 0,
) -> dict:
    """One load's record; ``waits`` samples saw an advisory lock wait, the next ``wal_waits``
    a commit waiting on a WAL flush (``LWLock:WALWrite``)."""
    tally = LockTally()
    for i in range(10):
        advisory = i < waits
        wal = not advisory and i < waits + wal_waits
        tally.add(
            active=2,
            waiting=1 if advisory or wal else 0,
            advisory=1 if advisory else 0,
            events=["Lock:advisory"] if advisory else ["LWLock:WALWrite"] if wal else [],
            heavyweight=1 if advisory else 0,
        )
    return {
        "target": target,
        "connections": conns,
        "round": rnd,
        "request": request,
        "rps": rps,
        "latency_ms": {"p50": p50, "p99": p50 * 3},
        "locks": tally.as_json(),
    }


def test_summary_gives_each_rounds_ratio_to_regions_and_the_targets_use_the_proxied_medians() -> (
    None
):
    args = parse_args(["--requests", "single,list", "--rounds", "2"])
    loads = []
    for rnd, (single, lst) in enumerate(((400.0, 150.0), (440.0, 100.0)), start=1):
        for target in ("direct", "proxy"):
            loads += [
                _load(target, 32, rnd, "regions", 500.0, 10.0),
                _load(target, 32, rnd, "single", single, 12.0),
                _load(target, 32, rnd, "list", lst, 90.0, waits=3 if rnd == 2 else 0),
                _load(target, 1, rnd, "regions", 200.0, 2.0),
                _load(target, 1, rnd, "single", 150.0, 4.0),
                _load(target, 1, rnd, "list", 80.0, 9.0),
            ]
    summary = summarise(loads, args)
    row = summary["proxy/c32"]["single"]
    assert row["ratio_to_regions_per_round"] == [0.8, 0.88]
    assert row["ratio_to_regions_median"] == pytest.approx(0.84)
    assert summary["proxy/c32"]["list"]["samples_with_advisory_wait"] == 3
    met = {t["target"]: t["met"] for t in targets_met(summary, args)}
    assert met["proxy, 1 ms round trip, 32 conns: single / regions >= 0.8"] is True
    assert met["proxy, 1 ms round trip, 32 conns: list / regions >= 0.3"] is False  # 0.25 median
    assert met["proxy, 1 ms round trip, 1 client: single p50 <= 5 ms"] is True
    assert met["proxy, 1 ms round trip, 1 client: list p50 <= 8 ms"] is False
    assert [
        t["met"] for t in targets_met(summary, args) if t["target"].startswith("no session")
    ] == [False]


def test_a_commit_waiting_on_the_wal_flush_is_reported_but_is_no_lock_wait() -> None:
    args = parse_args(["--requests", "single", "--rounds", "1"])
    loads = [
        _load("proxy", 32, 1, "regions", 500.0, 10.0),
        _load("proxy", 32, 1, "single", 450.0, 12.0, wal_waits=4),
        _load("proxy", 1, 1, "regions", 200.0, 2.0),
        _load("proxy", 1, 1, "single", 150.0, 4.0),
    ]
    targets = {t["target"]: t for t in targets_met(summarise(loads, args), args)}
    lock_target = next(t for name, t in targets.items() if name.startswith("no session"))
    assert lock_target["met"] is True and lock_target["measured"].startswith("0 of ")
    any_wait = next(t for name, t in targets.items() if "WALWrite" in name)
    assert any_wait["met"] is None and any_wait["measured"].startswith("4 of ")


def test_growth_comparison_is_within_only_when_both_throughput_and_p50_stay_within_1_2x() -> None:
    args = parse_args(
        [
            "--growth-db",
            "erx_bench_growth",
            "--requests",
            "list",
            "--connections",
            "1",
            "--rounds",
            "1",
        ]
    )
    loads = [
        _load("direct", 1, 1, "list", 100.0, 6.0),
        _load("growth", 1, 1, "list", 90.0, 7.0),
        _load("direct", 1, 1, "regions", 200.0, 3.0),
        _load("growth", 1, 1, "regions", 200.0, 3.0),
    ]
    rows = {g["request"]: g for g in growth_comparison(loads, args)}
    assert rows["list"]["within"] is True
    loads[1] = _load("growth", 1, 1, "list", 10.0, 89.0)
    rows = {g["request"]: g for g in growth_comparison(loads, args)}
    assert rows["list"]["small_over_grown_rps_per_round"] == [10.0]
    assert rows["list"]["within"] is False


def test_growth_plan_scales_every_table_and_refuses_a_scale_outside_0_to_1() -> None:
    full = Plan.at(1.0)
    assert (full.prescriptions, full.audit, full.inbox, full.patients) == (
        1_000_000,
        10_000_000,
        2_000_000,
        100_000,
    )
    tenth = Plan.at(0.1)
    assert (tenth.prescriptions, tenth.audit, tenth.heavy) == (100_000, 1_000_000, 200)
    with pytest.raises(ValueError):
        Plan.at(0)
    assert _chunks(25, 10) == [(1, 10), (11, 20), (21, 25)]


def test_growth_cli_refuses_a_database_not_named_erx_bench(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        growth_main(["seed", "--database", "erx_prod"])
    assert exc.value.code == 2
    assert "erx_bench" in capsys.readouterr().err


def test_webhooks_apply_phase_and_pinning_options_parse() -> None:
    args = webhooks_args(["--phases", "apply", "--web-cpus", "0", "--worker-cpus", "1"])
    assert (args.phases, args.web_cpus, args.worker_cpus, args.apply_duration) == (
        ["apply"],
        "0",
        "1",
        10.0,
    )
    with pytest.raises(SystemExit):
        webhooks_args(["--web-cpus", "first"])


def test_the_delay_proxy_carries_bytes_both_ways_unchanged() -> None:
    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    proxy = LatencyProxy(("127.0.0.1", server.getsockname()[1]), 0.002)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            for payload in (b"SELECT 1", b"x" * 100_000):
                client.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    got += client.recv(65536)
                assert got == payload
    finally:
        proxy.close()
        server.close()


def test_scan_deltas_name_the_table_a_growing_read_scans_most_rows_first() -> None:
    before = {"prescriptions": (10, 1_000, 5), "regions": (100, 200, 0), "patients": (0, 0, 50)}
    after = {"prescriptions": (30, 20_001_000, 5), "regions": (120, 240, 0), "patients": (0, 0, 70)}
    deltas = scan_deltas(before, after, requests=20)
    assert deltas == [
        {
            "table": "prescriptions",
            "seq_scans_per_request": 1.0,
            "rows_read_per_request": 1_000_000.0,
            "index_scans_per_request": 0.0,
        },
        {
            "table": "regions",
            "seq_scans_per_request": 1.0,
            "rows_read_per_request": 2.0,
            "index_scans_per_request": 0.0,
        },
    ]

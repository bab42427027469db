"""Every error in the JSON shape, through gunicorn (gunicorn.conf.py), not the test client.

gunicorn refuses an over-long request line (414) and too many or too long headers (431)
before the app runs; the app answers Werkzeug's 404/405/413 on /api, /fhir and /webhooks.
Each answer must be ``{"code", "message", "errors"}`` (an OperationOutcome under /fhir)
with a JSON content type, never an HTML page. Raw sockets: an HTTP client library would
refuse to send some of these requests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.foundation.config import REPO_ROOT, Settings
from app.interfaces.identity import mint_token
from scripts.stack import free_port, wait_http

SECRET = "wire-errors-test-secret-of-32-bytes!"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    port = free_port()
    db = tmp_path_factory.mktemp("wire") / "erx.sqlite3"
    env = {
        **os.environ,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "2",
        "DATABASE_URL": f"sqlite:///{db}",
        "ERX_ENV": "development",
        "JWT_SECRET": SECRET,
        "PROMETHEUS_MULTIPROC_DIR": "",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen(
        [str(gunicorn), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _exchange(server: tuple[str, int], raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` bytes, read until the server closes; return (status, headers, body)."""
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    return int(lines[0].split()[1]), headers, body


def _request(
    path: str, *, method: str = "GET", headers: list[str] = (), body: bytes = b""
) -> bytes:  # type: ignore[assignment]
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def assert_json_error(
    status: int, headers: dict[str, str], body: bytes, expected: int, code: str
) -> None:
    assert status == expected, body[:200]
    assert headers["content-type"].startswith("application/json"), headers
    document = json.loads(body)
    assert set(document) == {"code", "message", "errors"}
    assert document["code"] == code


def test_an_over_long_request_line_is_414_json(server) -> None:  # type: ignore[no-untyped-def]
    answer = _exchange(server, _request("/api/v1/pharmacies?q=" + "a" * 9000))

    assert_json_error(*answer, 414, "uri_too_long")
    assert b"aaaa" not in answer[2]  # the request line (search text) is not echoed


def test_too_many_headers_is_431_json(server) -> None:  # type: ignore[no-untyped-def]
    answer = _exchange(
        server, _request("/api/v1/regions", headers=[f"X-H{n}: v" for n in range(150)])
    )

    assert_json_error(*answer, 431, "request_header_fields_too_large")


def test_a_header_over_the_size_limit_is_431_json(server) -> None:  # type: ignore[no-untyped-def]
    answer = _exchange(server, _request("/api/v1/regions", headers=["X-Big: " + "b" * 40000]))

    assert_json_error(*answer, 431, "request_header_fields_too_large")


def test_malformed_http_is_400_json(server) -> None:  # type: ignore[no-untyped-def]
    answer = _exchange(server, b"GET /api/v1/regions HTTP/9.9\r\nHost: x\r\n\r\n")

    assert answer[0] == 400
    assert json.loads(answer[2])["code"] == "bad_request"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/api/v1/nothing-here", b"", 404, "not_found"),
        ("DELETE", "/api/v1/regions", b"", 405, "method_not_allowed"),
        ("GET", "/webhooks/nothing-here", b"", 404, "not_found"),
        ("GET", "/webhooks/platform", b"", 405, "method_not_allowed"),
        (
            "POST",
            "/api/v1/prescriptions/1/send",
            b"x" * (1024 * 1024 + 1),
            413,
            "request_entity_too_large",
        ),
    ],
)
def test_werkzeug_errors_are_json(server, method, path, body, status, code) -> None:  # type: ignore[no-untyped-def]
    token = mint_token(Settings(jwt_secret=SECRET), role="patient", subject="pt-0001")
    headers = ["Content-Type: application/json", f"Authorization: Bearer {token}"] if body else []

    answer = _exchange(server, _request(path, method=method, headers=headers, body=body))

    assert_json_error(*answer, status, code)


def test_fhir_errors_are_operation_outcomes(server) -> None:  # type: ignore[no-untyped-def]
    status, headers, body = _exchange(server, _request("/fhir/R4/Nothing"))

    assert status == 404
    assert "json" in headers["content-type"]
    assert json.loads(body)["resourceType"] == "OperationOutcome"

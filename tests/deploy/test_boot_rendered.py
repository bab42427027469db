"""Boot what the manifests render: each overlay's web and worker containers, their exact
environment, the repo's gunicorn.conf.py, and a stand-in identity provider.

For each overlay the web container's environment is built as the kubelet would (the
rendered ConfigMap, then the Secret from k8s/base/secret.example.yaml, then the
container's own ``env``). Only placeholders and addresses are replaced, by test values:
the database (the test database), the platform (the sandbox), the identity provider's
key set URL (a JWKS server on 127.0.0.1 publishing an RSA key; the overlay's issuer and
audience are kept), secrets (fresh random ones), the bind address and the metrics
directory (loopback and a temporary directory). gunicorn and the worker run with that
environment and nothing else; an RS256 token the stand-in provider signs gets 200 from
the API, and the pages, static files, FHIR and the webhook answer through the paths
the overlay's Ingress routes. The rate limits count in Redis (the ConfigMap's
``RATE_LIMIT_STORAGE_URL``, pointed at the local Redis), and the audit sealer, started
with its rendered command and environment, seals the audited reads and answers on its
metrics port. Production settings refuse to start without the identity provider, with
one line naming what is missing.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
import requests
from cryptography.fernet import Fernet

from app.foundation.config import load_settings
from app.mechanisms.audit_keys import generate_private_key
from scripts.stack import BIN, REPO_ROOT, Stack, base_env, free_port, wait_http
from tests.deploy.rendered import OVERLAYS, STARTUP_S, Render, path_routed, render, scrape
from tests.support import run_repo_command
from tests.unit.test_identity import RSA_KEY, KeyServer

pytestmark = pytest.mark.integration  # about 15 s per overlay

KID = "deploy-test-rsa-1"
# The machine's Redis (127.0.0.1:6379) stands in for the render's erx-connector-redis; a
# database index of its own, emptied by the test, so no other user's counters mix in.
REDIS_TEST_DB = 13


def deployed_env(
    r: Render, kind: str, name: str, container: str, **addresses: str
) -> dict[str, str]:
    """The container's rendered environment with test values for placeholders and addresses.

    ``addresses``: the values to substitute (setting name -> value). Every setting that
    still holds a placeholder afterwards fails the test: nothing is silently left out.
    """
    env = r.container_env(kind, name, container)
    unknown = set(addresses) - set(env) - {"JWT_JWKS_URL"}
    assert not unknown, f"substituting settings the render does not have: {sorted(unknown)}"
    env.update(addresses)
    left = sorted(
        k
        for k, v in env.items()
        if "REPLACE_ME" in v or ".example.test" in v and k not in LEFT_AS_RENDERED
    )
    assert left == [], f"placeholders left in the environment: {left}"
    return env


# Names kept as rendered although they hold example addresses: the token's issuer and
# the sender address are strings compared, never connected to; AMQP (the publisher's
# only setting) and KEDA's connection string are read by no process started here.
LEFT_AS_RENDERED = {"JWT_ISSUER", "MAIL_FROM", "AMQP_URL", "KEDA_POSTGRES_CONNECTION"}


def substitutions(
    db_url: str, sandbox_url: str, jwks_url: str, port: int, tmp_path: Path
) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "ERX_BASE_URL": sandbox_url,
        "ERX_CLIENT_ID": "deploy-test-client",
        "ERX_CLIENT_SECRET": secrets.token_urlsafe(24),
        "WEBHOOK_SECRETS": "whsec_" + secrets.token_hex(16),
        "ERX_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "AMQP_URL": "amqps://erx-connector:unused@127.0.0.1:5671/erx",
        "KEDA_POSTGRES_CONNECTION": "host=127.0.0.1 dbname=unused",
        "SMTP_HOST": "127.0.0.1",
        "JWT_JWKS_URL": jwks_url,
        "BIND": f"127.0.0.1:{port}",
        "RATE_LIMIT_STORAGE_URL": f"redis://127.0.0.1:6379/{REDIS_TEST_DB}",
        "AUDIT_SIGNING_KEYS": generate_private_key(),
    }


def token(config: dict[str, str], *, role: str = "service", kid: str = KID) -> str:
    now = int(time.time())
    claims = {
        "iss": config["JWT_ISSUER"],
        "aud": config["JWT_AUDIENCE"],
        "sub": "svc-deploy-test",
        "role": role,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, RSA_KEY, algorithm="RS256", headers={"kid": kid})


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(*procs: subprocess.Popen[Any]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def key_server():  # type: ignore[no-untyped-def]
    server = KeyServer()
    server.publish(KID, RSA_KEY.public_key(), kty="RSA")
    yield server
    server.close()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_overlay_serves_its_routes(
    overlay: str, seeded, db_url: str, key_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    r = render(overlay)
    ingress = r.get("Ingress", "erx-connector")
    port = free_port()
    stack = Stack(env=base_env(), log_dir=tmp_path / "logs")
    sandbox_url = stack.start_sandbox(webhook_port=port)
    values = substitutions(db_url, sandbox_url, key_server.url, port, tmp_path)
    web_env = deployed_env(
        r,
        "Deployment",
        "erx-connector-web",
        "web",
        **values,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    worker_env = deployed_env(r, "Deployment", "erx-connector-worker", "worker", **values)
    sealer_port = free_port()
    sealer_env = deployed_env(
        r,
        "Deployment",
        "erx-connector-audit-sealer",
        "audit-sealer",
        **values,
        WORKER_METRICS_PORT=str(sealer_port),
    )
    # The rendered Redis URL names the Service this render declares (replaced above by the local one).
    rendered_redis = r.container_env("Deployment", "erx-connector-web", "web")[
        "RATE_LIMIT_STORAGE_URL"
    ]
    assert rendered_redis.startswith("redis://erx-connector-redis:")
    assert "erx-connector-redis" in r.names("Service")
    counters = redis.Redis.from_url(values["RATE_LIMIT_STORAGE_URL"])
    counters.flushdb()
    job_env = deployed_env(r, "Job", "erx-connector-migrate", "migrate", **values)
    assert web_env["ERX_ENV"] == worker_env["ERX_ENV"] == "production"
    # The migrate Job's command with its environment (the schema is at head already: a no-op).
    assert load_settings(job_env).env == "production"
    job = r.container("Job", "erx-connector-migrate", "migrate")["command"]
    migrated = run_repo_command(job, job_env)
    assert migrated.returncode == 0, migrated.stderr[-2000:]

    worker_port = free_port()
    command = r.container("Deployment", "erx-connector-worker", "worker")["command"]
    assert command[0] == "flask"
    command = [str(BIN / "flask"), *command[1:]]
    command[command.index("--metrics-port") + 1] = str(worker_port)
    web_command = r.container("Deployment", "erx-connector-web", "web")["command"]
    assert web_command == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    sealer_command = r.container("Deployment", "erx-connector-audit-sealer", "audit-sealer")[
        "command"
    ]
    assert sealer_command[0] == "flask" and "--loop" in sealer_command
    web = spawn([str(BIN / "gunicorn"), *web_command[1:]], web_env, tmp_path / "web.log")
    worker = spawn(command, worker_env, tmp_path / "worker.log")
    sealer = spawn([str(BIN / "flask"), *sealer_command[1:]], sealer_env, tmp_path / "sealer.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", proc=web, timeout_s=STARTUP_S)
        wait_http(f"http://127.0.0.1:{worker_port}/metrics", proc=worker, timeout_s=STARTUP_S)
        assert requests.get(base + "/readyz", timeout=10).status_code == 200

        def get(path: str, **kwargs: Any) -> requests.Response:
            assert path_routed(path.split("?")[0], ingress), (
                f"{overlay}: the Ingress does not route {path}"
            )
            return requests.get(base + path, timeout=10, **kwargs)

        auth = {"Authorization": f"Bearer {token(web_env)}"}
        regions = get("/api/v1/regions", headers=auth)
        assert regions.status_code == 200, regions.text
        assert regions.json()
        assert get("/api/v1/regions").status_code == 401
        # A token from anyone but the provider the overlay names is refused.
        forged = token({**web_env, "JWT_ISSUER": "https://someone-else.example.test/"})
        assert (
            get("/api/v1/regions", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        )
        assert get("/api/v1/openapi.json").status_code == 200
        fhir = get("/fhir/R4/MedicationRequest?patient=Patient/pt-0001", headers=auth)
        assert fhir.status_code == 200, fhir.text
        assert fhir.json()["resourceType"] == "Bundle"
        for page in ("/", "/support"):
            response = get(page)
            assert (
                response.status_code == 200 and "text/html" in response.headers["Content-Type"]
            ), page
        assert get("/static/style.css").status_code == 200
        # The webhook URL reaches the receiver (an unsigned delivery is refused by it, in JSON).
        assert path_routed("/webhooks/platform", ingress)
        hook = requests.post(
            base + "/webhooks/platform",
            data=b"{}",
            timeout=10,
            headers={"Content-Type": "application/json"},
        )
        assert hook.status_code in (400, 401) and "code" in hook.json()
        # Internal paths answer inside the pod but are not routed from outside.
        assert requests.get(base + "/metrics", timeout=10).status_code == 200
        assert not path_routed("/metrics", ingress) and not path_routed("/readyz", ingress)
        # The rate limits counted in Redis: one store for every gunicorn worker and pod.
        assert counters.keys("*erx*"), "no rate-limit counter reached Redis"
        # The sealer seals the audited reads above and reports it on its metrics port.
        sealer_metrics = f"http://127.0.0.1:{sealer_port}/metrics"
        wait_http(sealer_metrics, proc=sealer, timeout_s=STARTUP_S)
        deadline = time.monotonic() + STARTUP_S
        while (
            scrape(sealer_metrics).get("erx_audit_tree_size", 0) < 1 and time.monotonic() < deadline
        ):
            assert sealer.poll() is None, (tmp_path / "sealer.log").read_text()[-2000:]
            time.sleep(0.2)
        sealed = scrape(sealer_metrics)
        assert (
            sealed["erx_audit_tree_size"] >= 1
            and sealed["erx_audit_last_seal_timestamp_seconds"] > 0
        )
        assert sealed["erx_audit_verify_failures_total"] == 0
        assert web.poll() is None and worker.poll() is None and sealer.poll() is None
    finally:
        stop(web, worker, sealer)
        counters.flushdb()
        stack.stop()


@pytest.mark.parametrize("missing", ["JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"])
def test_production_refuses_to_start_without_its_identity_provider(
    missing: str, db_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    r = render("production")
    port = free_port()
    values = substitutions(
        db_url, "http://127.0.0.1:9", "http://127.0.0.1:9/jwks.json", port, tmp_path
    )
    env = deployed_env(
        r,
        "Deployment",
        "erx-connector-web",
        "web",
        **values,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    del env[missing]
    result = subprocess.run(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    named = [line for line in result.stderr.splitlines() if missing in line]
    assert len(named) == 1, result.stderr
    assert "identity provider" in named[0]
    assert "Traceback" not in result.stderr and result.stdout == ""

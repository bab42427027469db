"""What the rendered overlays make the service do, checked on the render itself.

Every public route of the Flask app is routed by the Ingress and the internal ones are
not; the migrate Job's references exist in the same render and it runs before the
pods without being a pre-sync hook; the web, worker and audit sealer pods are scraped
the same way; the rate limits count in the Redis only the web pods reach;
the web pods run gunicorn in multiprocess metrics mode; KEDA runs the service's own
due-work query; the identity provider is configured.
"""

from __future__ import annotations

import re

import pytest

from app.mechanisms.metrics import QUEUE_DEPTH_SQL
from tests.deploy.rendered import OVERLAYS, path_routed, render, secret_example

INTERNAL = ("/metrics", "/readyz", "/healthz")
# Development only: the page's token refresh answers 404 under ERX_ENV=production (the
# hosting app passes the identity provider's tokens; app/interfaces/pages.py), so it is not routed.
DEVELOPMENT_ONLY = ("/page-token",)
PUBLIC_EXAMPLES = (
    "/",
    "/support",
    "/static/style.css",
    "/fhir/R4/MedicationRequest",
    "/api/v1/regions",
    "/webhooks/platform",
    "/favicon.ico",
)


def sample_path(rule: str) -> str:
    """A concrete request path for a url_map rule (``<int:id>`` -> ``1``, ``<path:p>`` -> ``x``)."""
    return re.sub(r"<(?:(\w+):)?\w+>", lambda m: "1" if m.group(1) == "int" else "x", rule)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_public_route_is_routed_and_internal_ones_are_not(app, overlay: str) -> None:  # type: ignore[no-untyped-def]
    ingress = render(overlay).get("Ingress", "erx-connector")
    rules = sorted({r.rule for r in app.url_map.iter_rules()})
    public = [r for r in rules if not r.startswith(INTERNAL) and r not in DEVELOPMENT_ONLY]
    assert len(public) > 10  # the app's pages, static, FHIR, API and webhook routes
    unrouted = [r for r in public if not path_routed(sample_path(r), ingress)]
    assert unrouted == [], f"public routes the Ingress does not reach: {unrouted}"
    assert set(DEVELOPMENT_ONLY) <= set(rules)  # still a route: keep the exemption true
    exposed = [
        p
        for p in INTERNAL + DEVELOPMENT_ONLY
        if path_routed(p, ingress) or path_routed(p + "/x", ingress)
    ]
    assert exposed == []
    assert all(path_routed(p, ingress) for p in PUBLIC_EXAMPLES)
    # Whole path elements only: a lookalike prefix is not routed.
    assert not path_routed("/api/v10", ingress) and not path_routed("/metricsz", ingress)
    # TLS covers the one host the rules serve.
    hosts = {r["host"] for r in ingress["spec"]["rules"]}
    assert hosts == set(ingress["spec"]["tls"][0]["hosts"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrate_job_references_exist_in_the_same_render(overlay: str) -> None:
    r = render(overlay)
    job = r.get("Job", "erx-connector-migrate")
    pod = r.pod_spec("Job", "erx-connector-migrate")
    container = pod["containers"][0]
    assert container["command"] == ["alembic", "upgrade", "head"]
    config_refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
    secret_refs = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    # The hash-named ConfigMap it reads is in this very render, and it is the one the pods read.
    assert config_refs and set(config_refs) <= r.names("ConfigMap")
    web_refs = [
        s["configMapRef"]["name"]
        for s in r.container("Deployment", "erx-connector-web", "web")["envFrom"]
        if "configMapRef" in s
    ]
    assert config_refs == web_refs
    # The Secret is the one the overlay names everywhere (created before the first install).
    web_secret = [
        s["secretRef"]["name"]
        for s in r.container("Deployment", "erx-connector-web", "web")["envFrom"]
        if "secretRef" in s
    ]
    assert secret_refs == web_secret == [f"erx-connector-{overlay}"]
    assert pod["serviceAccountName"] in r.names("ServiceAccount")
    # First install and config change, kubectl: the migrate phase brings the ConfigMap with the Job.
    phase = {
        (d["kind"], d["metadata"]["name"])
        for d in r.docs
        if d["metadata"].get("labels", {}).get("deploy-phase") == "migrate"
    }
    assert ("ConfigMap", config_refs[0]) in phase and ("Job", "erx-connector-migrate") in phase
    assert ("ServiceAccount", pod["serviceAccountName"]) in phase
    assert not any(kind in ("Deployment", "CronJob") for kind, _ in phase)
    # Argo CD: not a hook (hooks run before the new ConfigMap exists); ConfigMap wave < Job wave < pods.
    annotations = job["metadata"].get("annotations", {})
    assert "argocd.argoproj.io/hook" not in annotations
    config = r.get("ConfigMap", config_refs[0])
    wave = {
        "config": int(
            config["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0")
        ),
        "job": int(annotations.get("argocd.argoproj.io/sync-wave", "0")),
    }
    pods = [
        int(d["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))
        for d in r.of_kind("Deployment") + r.of_kind("CronJob")
    ]
    assert wave["config"] < wave["job"] < min(pods)
    # A changed template (new image or config) needs the Job recreated, not patched.
    assert "Replace=true" in annotations.get("argocd.argoproj.io/sync-options", "")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_worker_and_audit_sealer_are_scraped_the_same_way(overlay: str) -> None:
    r = render(overlay)
    seen = {}
    for name, container in (
        ("erx-connector-web", "web"),
        ("erx-connector-worker", "worker"),
        ("erx-connector-audit-sealer", "audit-sealer"),
    ):
        template = r.get("Deployment", name)["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/path") == "/metrics", name
        ports = {
            p["containerPort"]: p
            for p in r.container("Deployment", name, container).get("ports", [])
        }
        port = int(annotations["prometheus.io/port"])
        assert port in ports, f"{name}: the scraped port {port} is not a container port"
        # The web pods serve /metrics on their http port; the others have a port of their own.
        expected = "http" if container == "web" else "metrics"
        assert ports[port].get("name") == expected, (
            f"{name}: the scraped port is not named {expected}"
        )
        seen[name] = port
    worker = r.container("Deployment", "erx-connector-worker", "worker")
    command = worker["command"]
    assert command[command.index("--metrics-port") + 1] == str(seen["erx-connector-worker"])
    # The sealer serves its erx_audit_* metrics on the port the annotation names.
    sealer = r.container_env("Deployment", "erx-connector-audit-sealer", "audit-sealer")
    assert sealer["WORKER_METRICS_PORT"] == str(seen["erx-connector-audit-sealer"])
    # The NetworkPolicies let Prometheus (namespace monitoring) reach every metrics port.
    allowed = set()
    for policy in r.of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            if any(
                f.get("namespaceSelector", {})
                .get("matchLabels", {})
                .get("kubernetes.io/metadata.name")
                == "monitoring"
                for f in rule.get("from", [])
            ):
                component = policy["spec"]["podSelector"]["matchLabels"].get(
                    "app.kubernetes.io/component"
                )
                allowed |= {(component, p["port"]) for p in rule.get("ports", [])}
    assert ("web", seen["erx-connector-web"]) in allowed and (
        "worker",
        seen["erx-connector-worker"],
    ) in allowed
    assert ("audit-sealer", seen["erx-connector-audit-sealer"]) in allowed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rate_limits_count_in_the_redis_only_the_web_pods_reach(overlay: str) -> None:
    r = render(overlay)
    config = next(iter(r.of_kind("ConfigMap")))["data"]
    service = r.get("Service", "erx-connector-redis")
    port = service["spec"]["ports"][0]["port"]
    # Every web pod and gunicorn worker counts in the one Redis the render declares.
    assert config["RATE_LIMIT_STORAGE_URL"] == f"redis://erx-connector-redis:{port}/0"
    pods = r.get("Deployment", "erx-connector-redis")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pods.items()
    redis = r.container("Deployment", "erx-connector-redis", "redis")
    assert (
        "--save" in redis["command"]
        and redis["command"][redis["command"].index("--save") + 1] == ""
    )
    mounts = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}
    volumes = {v["name"]: v for v in r.pod_spec("Deployment", "erx-connector-redis")["volumes"]}
    assert "emptyDir" in volumes[mounts["/data"]]
    # Who may connect: the web pods, on that port, and nobody else (Prometheus included).
    admitted = []
    for policy in r.of_kind("NetworkPolicy"):
        if (
            policy["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
            != "redis"
        ):
            continue
        for rule in policy["spec"].get("ingress", []):
            admitted += [
                (f["podSelector"]["matchLabels"].get("app.kubernetes.io/component"), p["port"])
                for f in rule.get("from", [])
                for p in rule.get("ports", [])
            ]
    assert admitted == [("web", port)]
    # And the web pods may leave for it (the default deny covers egress).
    egress = [
        (p["port"], t["podSelector"]["matchLabels"].get("app.kubernetes.io/component"))
        for policy in r.of_kind("NetworkPolicy")
        if policy["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "web"
        for rule in policy["spec"].get("egress", [])
        for t in rule.get("to", [])
        for p in rule["ports"]
    ]
    assert (port, "redis") in egress


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_pods_keep_metrics_in_a_multiprocess_directory_of_their_own(overlay: str) -> None:
    r = render(overlay)
    env = r.container_env("Deployment", "erx-connector-web", "web")
    assert int(env["WEB_CONCURRENCY"]) > 1
    path = env["PROMETHEUS_MULTIPROC_DIR"]
    mounts = {
        m["mountPath"]: m["name"]
        for m in r.container("Deployment", "erx-connector-web", "web")["volumeMounts"]
    }
    volumes = {v["name"]: v for v in r.pod_spec("Deployment", "erx-connector-web")["volumes"]}
    assert path in mounts and "emptyDir" in volumes[mounts[path]]
    # Shared ConfigMap: the worker, the Job and the CronJob have no such volume, so not there.
    config = next(iter(r.of_kind("ConfigMap")))["data"]
    assert "PROMETHEUS_MULTIPROC_DIR" not in config


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_runs_the_services_due_work_query(overlay: str) -> None:
    r = render(overlay)
    scaled = r.get("ScaledObject", "erx-connector-worker")
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "postgresql"]
    assert trigger["metadata"]["query"] == QUEUE_DEPTH_SQL
    auth = r.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
    keys = {ref["key"] for ref in auth["spec"]["secretTargetRef"]}
    assert keys <= set(secret_example()["stringData"])
    # The web tier's HPA scales on CPU, never on a queue.
    hpa = r.get("HorizontalPodAutoscaler", "erx-connector-web")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_names_its_identity_provider(overlay: str) -> None:
    config = next(iter(render(overlay).of_kind("ConfigMap")))["data"]
    assert config["ERX_ENV"] == "production"
    assert config["JWT_JWKS_URL"].startswith("https://")
    assert config["JWT_ISSUER"] and config["JWT_AUDIENCE"]

"""The k8s overlays as rendered (``kubectl kustomize``), for the deployment tests; and
scrapes of what the processes export, checked against the alert rules (k8s/alerts).

The render comes from ``$MANIFESTS_OUT`` when `bash .ci/manifests` has written it
there (``<overlay>.yaml``), else from ``kubectl kustomize`` (kubectl on PATH, or the
one .ci/manifests installs into .venv-tools). Without either the tests skip, unless
``ERX_REQUIRE_RENDER=1`` (set by .ci/manifests), where they fail instead: CI never
passes by skipping them.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "k8s" / "alerts"
OVERLAYS = ("staging", "production")
SECRET_EXAMPLE = REPO / "k8s" / "base" / "secret.example.yaml"
# Seconds a started gunicorn or worker gets to answer: several processes importing the app
# at once on a busy CI machine take far longer than on a quiet one.
STARTUP_S = 120.0


@dataclass(frozen=True)
class Render:
    """One overlay's rendered objects, looked up by kind and name."""

    overlay: str
    docs: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind)}

    def pod_spec(self, kind: str, name: str) -> dict[str, Any]:
        obj = self.get(kind, name)
        if kind == "CronJob":
            return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return obj["spec"]["template"]["spec"]

    def container(self, kind: str, name: str, container: str) -> dict[str, Any]:
        return next(c for c in self.pod_spec(kind, name)["containers"] if c["name"] == container)

    def container_env(self, kind: str, name: str, container: str) -> dict[str, str]:
        """The container's environment as the kubelet builds it: envFrom in order, then env.

        Secrets named by the overlay come from ``secret.example.yaml`` (its stringData,
        placeholders included: the caller substitutes test values).
        """
        c = self.container(kind, name, container)
        env: dict[str, str] = {}
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
            elif "secretRef" in source:
                env.update(secret_example()["stringData"])
        for item in c.get("env", []):
            env[item["name"]] = str(item["value"])
        return env


def _kubectl() -> str | None:
    found = shutil.which("kubectl")
    tools = REPO / ".venv-tools" / "bin" / "kubectl"
    return found or (str(tools) if tools.exists() else None)


@functools.cache
def _render_text(overlay: str) -> str | None:
    out = os.environ.get("MANIFESTS_OUT")
    if out and (Path(out) / f"{overlay}.yaml").exists():
        return (Path(out) / f"{overlay}.yaml").read_text()
    kubectl = _kubectl()
    if kubectl is None:
        return None
    result = subprocess.run(
        [kubectl, "kustomize", str(REPO / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def render(overlay: str) -> Render:
    """The rendered ``overlay``; skips (or fails under ERX_REQUIRE_RENDER=1) without kubectl."""
    text = _render_text(overlay)
    if text is None:
        message = "no kubectl to render k8s/overlays (bash .ci/manifests installs one)"
        if os.environ.get("ERX_REQUIRE_RENDER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Render(overlay, tuple(d for d in yaml.safe_load_all(text) if d))


def secret_example() -> dict[str, Any]:
    """k8s/base/secret.example.yaml, parsed."""
    return yaml.safe_load(SECRET_EXAMPLE.read_text())


def path_routed(path: str, ingress: dict[str, Any]) -> bool:
    """True when the Ingress routes request ``path`` (Kubernetes Exact/Prefix semantics).

    Prefix matches whole path elements: ``/api/v1`` matches ``/api/v1`` and
    ``/api/v1/x``, not ``/api/v10`` (networking.k8s.io/v1 HTTPIngressPath).
    """
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            want, kind = p["path"], p["pathType"]
            if kind == "Exact" and path == want:
                return True
            if kind == "Prefix":
                base = want.rstrip("/")
                if base == "" or path == base or path.startswith(base + "/"):
                    return True
    return False


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> dict[str, float]:
    """``{'name{a="x",b="y"}': value}`` for every erx_ sample at ``url`` (Prometheus text format).

    Histogram buckets and ``_created`` samples are left out; labels are sorted by name.
    Raises ``requests.RequestException`` when the endpoint does not answer.
    """
    samples: dict[str, float] = {}
    for line in requests.get(url, timeout=10).text.splitlines():
        m = _SAMPLE.match(line)
        name = m.group("name") if m else ""
        if not name.startswith("erx_") or name.endswith(("_bucket", "_created")):
            continue
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(LABEL.findall(m.group("labels") or "")))
        samples[f"{m.group('name')}{{{labels}}}" if labels else m.group("name")] = float(
            m.group("value")
        )
    return samples


def series_labels(series: str) -> tuple[str, dict[str, str]]:
    """``('name', {label: value})`` of a key of :func:`scrape`'s result."""
    name, _, rest = series.partition("{")
    return name, dict(LABEL.findall(rest))


def rule_selectors(rules: Path) -> list[tuple[str, dict[str, str]]]:
    """Every ``erx_...{label="value"}`` selector in the ``rules`` file's expressions.

    Returns ``(metric name, equality matchers)`` pairs, in file order (``{}`` when the
    selector has no matchers).
    """
    found = []
    for group in yaml.safe_load(rules.read_text()).get("groups", []):
        for rule in group["rules"]:
            for m in re.finditer(r"\b(erx_\w+)(?:\{([^}]*)\})?", rule["expr"]):
                found.append((m.group(1), dict(LABEL.findall(m.group(2) or ""))))
    return found


def unexported_selectors(rules: Path, exported: dict[str, float]) -> list[str]:
    """The selectors of ``rules`` no series of ``exported`` (a :func:`scrape`) matches.

    Each as ``name{matchers}`` text; ``[]`` when every metric name and label value the
    rules select is exported.
    """
    by_name: dict[str, list[dict[str, str]]] = {}
    for series in exported:
        name, labels = series_labels(series)
        by_name.setdefault(name, []).append(labels)
    return [
        f"{name}{matchers}"
        for name, matchers in rule_selectors(rules)
        if not any(matchers.items() <= labels.items() for labels in by_name.get(name, []))
    ]

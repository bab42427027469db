"""design.md's "Packages and what each may import", checked by walking imports with ``ast``.

Every import counts, including those inside functions: a lazy import still
couples the packages.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STDLIB = frozenset(sys.stdlib_module_names)
OUTBOUND_MODULES = (
    "requests",
    "httpx",
    "urllib3",
    "aiohttp",
    "urllib.request",
    "http.client",
    "socket",
    "smtplib",
    "ftplib",
    "xmlrpc.client",
)
# connector's vocabulary: names and rules, no HTTP. The package root itself
# (``import connector`` / ``from connector import X``) loads the client.
CONNECTOR_VOCABULARY = (
    "connector.statuses",
    "connector.backoff",
    "connector.errors",
    "connector.parsing",
    "connector.results",
)


@dataclass(frozen=True)
class Imported:
    """One import statement: ``import module`` or ``from module import names``."""

    path: Path
    line: int
    module: str  # fully qualified, relative imports resolved
    names: tuple[str, ...] = ()

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    @property
    def targets(self) -> tuple[str, ...]:
        """What the statement may load: ``from a import b`` is ``a.b`` (a submodule or a name in a)."""
        if not self.names:
            return (self.module,)
        return tuple(f"{self.module}.{n}" for n in self.names)

    def __str__(self) -> str:
        where = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        what = f"from {self.module} import {', '.join(self.names)}" if self.names else f"import {self.module}"
        return f"{where}:{self.line} {what}"


def _package_of(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts[:-1])


def imports_in_source(source: str, path: Path) -> list[Imported]:
    """Every import statement in ``source``, wherever it sits (functions included)."""
    found: list[Imported] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Imported(path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(path).split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "__future__":
                continue
            names = tuple(alias.name for alias in node.names if alias.name != "*") or ("*",)
            found.append(Imported(path, node.lineno, module, names))
    return found


def python_files(package: str) -> list[Path]:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    return files


def imports_of(package: str) -> list[Imported]:
    found: list[Imported] = []
    for path in python_files(package):
        found += imports_in_source(path.read_text(encoding="utf-8"), path)
    return found


def _is(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


# -- the checks, as functions so they can be tested on bad code too -------------------


def connector_violations(imports: list[Imported]) -> list[str]:
    allowed = {"requests", "cachetools", "marshmallow", "connector"}
    return [str(i) for i in imports if i.top not in STDLIB and i.top not in allowed]


def webhooks_violations(imports: list[Imported]) -> list[str]:
    bad = []
    for i in imports:
        targets = i.targets
        if any(_is(t, m) for t in (i.module, *targets) for m in OUTBOUND_MODULES):
            bad.append(f"{i} (outbound I/O)")
        elif i.top == "connector":
            if not all(any(_is(t, v) for v in CONNECTOR_VOCABULARY) for t in targets):
                bad.append(f"{i} (only connector's vocabulary: {', '.join(CONNECTOR_VOCABULARY)})")
        elif any(_is(t, m) for t in targets for m in ("app.services", "app.worker", "app.cli")):
            bad.append(f"{i} (service code that calls out)")
        elif i.top in {"sandbox", "migrations", "scripts", "bench"}:
            bad.append(str(i))
    return bad


def sandbox_violations(imports: list[Imported]) -> list[str]:
    allowed = {"flask", "werkzeug", "requests", "sandbox"}
    bad = []
    for i in imports:
        if i.top in {"app", "connector", "webhooks", "migrations", "scripts", "bench"}:
            bad.append(f"{i} (the sandbox is the other side of the wire)")
        elif i.top not in STDLIB and i.top not in allowed:
            bad.append(str(i))
    return bad


def migrations_violations(imports: list[Imported]) -> list[str]:
    allowed_app = ("app.models", "app.config", "app.db")
    bad = []
    for i in imports:
        if i.top == "app":
            if not all(any(_is(t, a) for a in allowed_app) for t in i.targets):
                bad.append(str(i))
        elif i.top not in STDLIB and i.top not in {"alembic", "sqlalchemy"}:
            bad.append(str(i))
    return bad


def environment_reads(source: str, path: Path) -> list[str]:
    """Reads of the process environment: os.environ / os.getenv / from os import environ."""
    names = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in names:
            if isinstance(node.value, ast.Name) and node.value.id in {"os", "posix", "nt"}:
                found.append(f"{path.name}:{node.lineno} os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in {"os", "posix", "nt"}:
            found += [f"{path.name}:{node.lineno} from os import {a.name}" for a in node.names if a.name in names]
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names if a.name in {"dotenv", "environs", "decouple"}]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {"dotenv", "environs", "decouple"}:
            found.append(f"{path.name}:{node.lineno} from {node.module}")
    return found


# -- the rules on the real code --------------------------------------------------------


def test_connector_imports_only_stdlib_requests_cachetools_marshmallow() -> None:
    assert connector_violations(imports_of("connector")) == []


def test_connector_never_imports_the_service_packages() -> None:
    imports = imports_of("connector")
    assert [str(i) for i in imports if i.top in {"flask", "sqlalchemy", "app", "webhooks", "sandbox"}] == []


def test_connector_never_reads_the_environment() -> None:
    found = []
    for path in python_files("connector"):
        found += environment_reads(path.read_text(encoding="utf-8"), path)
    assert found == []


def test_webhooks_never_import_http_clients_or_the_connector_client() -> None:
    assert webhooks_violations(imports_of("webhooks")) == []


def test_webhooks_use_connector_vocabulary() -> None:
    # The receiver does rely on the shared lifecycle vocabulary; if this ever
    # goes to zero the check above has stopped looking at real imports.
    modules = {i.module for i in imports_of("webhooks")}
    assert "connector.statuses" in modules
    assert "app.models" in modules


def test_sandbox_never_imports_the_service() -> None:
    assert sandbox_violations(imports_of("sandbox")) == []


def test_migrations_import_only_models_config_db_and_alembic() -> None:
    assert migrations_violations(imports_of("migrations")) == []


# -- the checker itself catches what it should ------------------------------------------


def _check(source: str, package: str) -> list[Imported]:
    return imports_in_source(source, REPO / package / "example.py")


@pytest.mark.parametrize(
    ("package", "source", "check"),
    [
        ("connector", "import flask", connector_violations),
        ("connector", "def f():\n    from sqlalchemy import select\n", connector_violations),
        ("connector", "from app.models import Prescription", connector_violations),
        ("webhooks", "import requests", webhooks_violations),
        ("webhooks", "from urllib.request import urlopen", webhooks_violations),
        ("webhooks", "from connector.client import ConnectorClient", webhooks_violations),
        ("webhooks", "from connector import ConnectorClient", webhooks_violations),
        ("webhooks", "from ..connector import client", webhooks_violations),
        ("webhooks", "from app.services.connector_factory import make_client", webhooks_violations),
        ("sandbox", "from connector.statuses import LIFECYCLE", sandbox_violations),
        ("sandbox", "from webhooks.signature import verify", sandbox_violations),
        ("sandbox", "import app", sandbox_violations),
        ("migrations", "from app.services.dispatch import Dispatcher", migrations_violations),
        ("migrations", "import webhooks", migrations_violations),
        ("migrations", "from app import services", migrations_violations),
    ],
)
def test_checker_flags_forbidden_imports(package: str, source: str, check) -> None:  # type: ignore[no-untyped-def]
    assert check(_check(source, package)) != []


@pytest.mark.parametrize(
    ("package", "source", "check"),
    [
        ("connector", "import requests\nimport cachetools\nfrom . import errors", connector_violations),
        ("webhooks", "from connector.statuses import LIFECYCLE", webhooks_violations),
        ("webhooks", "from connector.errors import ConnectorError", webhooks_violations),
        ("webhooks", "from connector import statuses", webhooks_violations),
        ("sandbox", "import requests\nfrom flask import Flask", sandbox_violations),
        ("migrations", "from app.models import Base\nimport sqlalchemy as sa", migrations_violations),
        ("migrations", "from app import models\nfrom alembic import op", migrations_violations),
    ],
)
def test_checker_allows_permitted_imports(package: str, source: str, check) -> None:  # type: ignore[no-untyped-def]
    assert check(_check(source, package)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ['A']",
        "import os\nx = os.getenv('A')",
        "from os import environ",
        "from os import getenv as g",
    ],
)
def test_environment_check_flags_reads(source: str) -> None:
    assert environment_reads(source, Path("example.py")) != []


def test_environment_check_allows_other_os_use() -> None:
    assert environment_reads("import os\np = os.path.join('a', 'b')", Path("example.py")) == []

"""The sandbox's modules import its state, never the app factory that imports them."""

from __future__ import annotations

import ast
from pathlib import Path

SANDBOX = Path(__file__).resolve().parents[2] / "sandbox"
# The package front door and the CLI are the factory's callers, not its callees.
FACTORY_CALLERS = {"__init__.py", "__main__.py", "server.py"}


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_sandbox_module_imports_the_app_factory() -> None:
    offenders = sorted(
        path.name
        for path in SANDBOX.glob("*.py")
        if path.name not in FACTORY_CALLERS and "sandbox.server" in _imported_modules(path)
    )
    assert offenders == []

"""design.md's "Packages and what each may import", checked by walking the code with ``ast``.

Every import counts, including those inside functions: a lazy import still
couples the packages. Besides the imports, design.md's sentences "every append
to history goes through one function of ``app.mechanisms.history``" and "``app.mechanisms.queue``,
the only module that writes lease and state columns" are checked on
assignments, UPDATE/INSERT statements and the dicts of column values that reach
them, and no code reaches into a third-party library's private attributes (they
break silently on a version bump).
The rules inside ``app/`` (its layers) live with the folder layout.
"""

from __future__ import annotations

import ast
import re
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
        """What the statement may load: ``from a import b`` is ``a.b`` (a submodule or a name)."""
        if not self.names:
            return (self.module,)
        return tuple(f"{self.module}.{n}" for n in self.names)

    def __str__(self) -> str:
        where = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        what = (
            f"from {self.module} import {', '.join(self.names)}"
            if self.names
            else f"import {self.module}"
        )
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
#
# Each function states one row of design.md's table "Packages and what each may
# import". "Flask" there means the framework: ``flask`` and its WSGI toolkit
# ``werkzeug``, which Flask re-exports and requires.

FIRST_PARTY = ("app", "connector", "webhooks", "sandbox", "migrations", "scripts", "bench", "tests")
FLASK = ("flask", "werkzeug")
# Where app may wire webhooks in: create_app, and the worker/CLI wiring.
APP_WEBHOOK_WIRING = ("app/__init__.py", "app/interfaces/worker.py", "app/interfaces/cli.py")
WEBHOOKS_MAY_IMPORT_FROM_APP = (
    "app.mechanisms.audit",  # append only: a webhook-applied audit row where the event is applied
    "app.foundation.db",
    "app.foundation.models",
    "app.interfaces.errors",
    "app.mechanisms.runtime",
    "app.mechanisms.history",
    "app.mechanisms.queue",
    "app.mechanisms.retry",
)
WEBHOOKS_MAY_IMPORT_FROM_CONNECTOR = ("connector.statuses", "connector.parsing")
MIGRATIONS_MAY_IMPORT_FROM_APP = (
    "app.foundation.config",
    "app.foundation.db",
    "app.foundation.models",
)
SCRIPTS_MAY_IMPORT_FROM_APP = (
    "app.foundation.config",
    "app.foundation.db",
    "app.foundation.models",
    "app.interfaces.cli",
)


def _all_under(i: Imported, prefixes: tuple[str, ...]) -> bool:
    """Every target of ``i`` lies under one of ``prefixes`` (``from app import models``)."""
    return all(any(_is(t, p) for p in prefixes) for t in i.targets)


def _rel(i: Imported) -> str:
    return i.path.relative_to(REPO).as_posix() if i.path.is_relative_to(REPO) else i.path.name


def connector_violations(imports: list[Imported]) -> list[str]:
    """connector/: stdlib, requests, cachetools, marshmallow, itself. No Flask, SQLAlchemy, app."""
    allowed = {"requests", "cachetools", "marshmallow", "connector"}
    return [str(i) for i in imports if i.top not in STDLIB and i.top not in allowed]


def app_violations(imports: list[Imported]) -> list[str]:
    """app/: connector; webhooks only in create_app and the worker/CLI wiring; no other ours."""
    bad = []
    for i in imports:
        if i.top == "webhooks" and _rel(i) not in APP_WEBHOOK_WIRING:
            bad.append(f"{i} (webhooks only in {', '.join(APP_WEBHOOK_WIRING)})")
        elif i.top in FIRST_PARTY and i.top not in {"app", "connector", "webhooks"}:
            bad.append(str(i))
    return bad


def services_violations(imports: list[Imported]) -> list[str]:
    """app/services/: plain arguments in, plain results or domain errors out: no Flask, no HTTP."""
    bad = []
    for i in imports:
        if i.top in FLASK:
            bad.append(f"{i} (services are Flask-free)")
        elif any(
            _is(t, m)
            for t in (i.module, *i.targets)
            for m in ("app.interfaces.errors", "app.interfaces.api", "app.mechanisms.runtime")
        ):
            bad.append(f"{i} (services raise app.foundation.errors, never HTTP errors)")
    return bad


def webhooks_violations(imports: list[Imported]) -> list[str]:
    """webhooks/: Flask, SQLAlchemy, app's db/models/errors/extensions/history/queue/audit
    (append)/retry, connector's statuses and parsing. Never an outbound call, never app.services."""
    bad = []
    for i in imports:
        if any(_is(t, m) for t in (i.module, *i.targets) for m in OUTBOUND_MODULES):
            bad.append(f"{i} (outbound I/O)")
        elif i.top == "connector":
            if not _all_under(i, WEBHOOKS_MAY_IMPORT_FROM_CONNECTOR):
                bad.append(f"{i} (only {', '.join(WEBHOOKS_MAY_IMPORT_FROM_CONNECTOR)})")
        elif i.top == "app":
            if not _all_under(i, WEBHOOKS_MAY_IMPORT_FROM_APP):
                bad.append(f"{i} (only {', '.join(WEBHOOKS_MAY_IMPORT_FROM_APP)})")
        elif i.top in STDLIB or i.top in {*FLASK, "sqlalchemy", "webhooks"}:
            continue
        else:
            bad.append(str(i))
    return bad


def sandbox_violations(imports: list[Imported]) -> list[str]:
    """sandbox/: stdlib, Flask, requests. Never the service: it is the other side of the wire."""
    allowed = {*FLASK, "requests", "sandbox"}
    bad = []
    for i in imports:
        if i.top in FIRST_PARTY and i.top != "sandbox":
            bad.append(f"{i} (the sandbox is the other side of the wire)")
        elif i.top not in STDLIB and i.top not in allowed:
            bad.append(str(i))
    return bad


def migrations_violations(imports: list[Imported]) -> list[str]:
    """migrations/: Alembic (and SQLAlchemy under it) with app.foundation config, db, models."""
    bad = []
    for i in imports:
        if i.top == "app":
            if not _all_under(i, MIGRATIONS_MAY_IMPORT_FROM_APP):
                bad.append(str(i))
        elif i.top not in STDLIB and i.top not in {"alembic", "sqlalchemy"}:
            bad.append(str(i))
    return bad


def scripts_violations(imports: list[Imported]) -> list[str]:
    """scripts/: app's settings, db, models and CLI; never webhooks, app.services or internals."""
    bad = []
    for i in imports:
        if i.top == "app":
            if not _all_under(i, SCRIPTS_MAY_IMPORT_FROM_APP):
                bad.append(f"{i} (only {', '.join(SCRIPTS_MAY_IMPORT_FROM_APP)})")
        elif i.top in FIRST_PARTY and i.top != "scripts":
            bad.append(str(i))
    return bad


# Its CLI (click) and its own table (sqlalchemy) are libraries, not the service's internals.
NOTIFIER_MAY_IMPORT = ("contracts", "pika", "notifier", "click", "sqlalchemy")


def notifier_violations(imports: list[Imported]) -> list[str]:
    """notifier/: ``contracts/``, pika, its own modules, the mailer it needs; never ``app``."""
    bad = []
    for i in imports:
        if i.top in FIRST_PARTY or i.top == "app":
            bad.append(f"{i} (a downstream service: only the event contract and its own modules)")
        elif (
            i.top not in STDLIB
            and i.top not in NOTIFIER_MAY_IMPORT
            and i.top not in NOTIFIER_MAILERS
        ):
            bad.append(str(i))
    return bad


# The mailers a downstream service may use (design.md: "the mailer it needs").
NOTIFIER_MAILERS = ("smtplib", "email")


def environment_reads(source: str, path: Path) -> list[str]:
    """Reads of the process environment: os.environ / os.getenv / from os import environ."""
    names = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in names:
            if isinstance(node.value, ast.Name) and node.value.id in {"os", "posix", "nt"}:
                found.append(f"{path.name}:{node.lineno} os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in {"os", "posix", "nt"}:
            found += [
                f"{path.name}:{node.lineno} from os import {a.name}"
                for a in node.names
                if a.name in names
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"{path.name}:{node.lineno} import {a.name}"
                for a in node.names
                if a.name in {"dotenv", "environs", "decouple"}
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {
            "dotenv",
            "environs",
            "decouple",
        }:
            found.append(f"{path.name}:{node.lineno} from {node.module}")
    return found


# -- the rules on the real code: one test per rule of design.md ---------------------------


def test_connector_imports_only_stdlib_requests_cachetools_marshmallow() -> None:
    assert connector_violations(imports_of("connector")) == []


def test_connector_never_reads_the_environment() -> None:
    found = []
    for path in python_files("connector"):
        found += environment_reads(path.read_text(encoding="utf-8"), path)
    assert found == []


def test_app_imports_webhooks_only_in_create_app_and_the_worker_cli_wiring() -> None:
    assert app_violations(imports_of("app")) == []


def test_services_are_flask_free_and_raise_domain_errors() -> None:
    assert services_violations(imports_of("app/services")) == []


def test_webhooks_import_only_what_design_md_allows() -> None:
    assert webhooks_violations(imports_of("webhooks")) == []


def test_the_walk_sees_real_imports() -> None:
    # Not a rule: if these vanish, the checks above have stopped looking at real imports.
    modules = {i.module for i in imports_of("webhooks")}
    assert {
        "connector.statuses",
        "connector.parsing",
        "app.foundation.models",
        "app.mechanisms.history",
        "app.mechanisms.queue",
    } <= modules


def test_sandbox_never_imports_the_service() -> None:
    assert sandbox_violations(imports_of("sandbox")) == []


def test_migrations_import_only_models_config_db_and_alembic() -> None:
    assert migrations_violations(imports_of("migrations")) == []


def test_scripts_import_only_settings_db_models_and_cli_of_app() -> None:
    assert scripts_violations(imports_of("scripts")) == []


def _source_files(*packages: str) -> list[Path]:
    return [p for package in packages for p in python_files(package)]


def test_every_history_append_goes_through_app_history() -> None:
    # "Every append to history goes through app.mechanisms.history": nothing else names the table to write it.
    writers = [
        p.relative_to(REPO).as_posix()
        for p in _source_files("app", "webhooks", "scripts")
        if re.search(
            r"(?<!class )StatusHistory\(|StatusHistory\.__table__", p.read_text(encoding="utf-8")
        )
    ]
    assert writers == ["app/mechanisms/history.py"]


# -- who writes what: assignments and UPDATEs, walked with ast ---------------------------------

# The queue tables and their lease and state columns (app/mechanisms/queue.py's module docs).
QUEUE_MODELS = frozenset({"DispatchOutbox", "WebhookInbox", "EventOutbox"})
QUEUE_COLUMNS = frozenset(
    {"state", "attempts", "next_attempt_at", "locked_until", "locked_by", "last_error"}
)
# Objects with columns of the same names that are not queue rows: (file, variable).
NOT_QUEUE_ROWS = frozenset(
    {("app/services/mail.py", "intent")}
)  # EmailIntent: Region A's send record


def _flat(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [e for t in target.elts for e in _flat(t)]
    return [target]


def _updated_models(node: ast.expr) -> set[str]:
    """The models of ``update(X)`` / ``insert(X)`` calls in a chain like ``update(X).where()``."""
    found: set[str] = set()
    while isinstance(node, (ast.Call, ast.Attribute)):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in {"update", "insert"} and node.args:
                if isinstance(node.args[0], ast.Name):
                    found.add(node.args[0].id)
            node = func
        else:
            node = node.value
    return found


@dataclass(frozen=True)
class Write:
    """One column write: ``x.column = ...``, ``update(Model).values(column=...)``, ``Model()``."""

    path: str
    line: int
    base: str  # the assigned object's variable (or the model of a statement)
    column: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.base}.{self.column}"


# Calls whose arguments are written to a table: a statement's values, an INSERT helper's rows,
# the parameters of an executed statement (which a prebuilt UPDATE/INSERT binds).
WRITE_SINK_METHODS = frozenset({"values", "execute", "executemany"})
WRITE_SINK_FUNCTIONS = frozenset({"update", "insert", "insert_ignore"})


def _dict_columns(node: ast.AST, columns: frozenset[str]) -> set[str]:
    """The ``columns`` a dict built in ``node`` sets: ``{"col": ...}`` keys, ``dict(col=...)``."""
    found: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Dict):
            found |= {
                k.value for k in sub.keys if isinstance(k, ast.Constant) and k.value in columns
            }
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "dict":
            found |= {k.arg for k in sub.keywords if k.arg in columns}
    return found


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _called_in(node: ast.AST) -> set[str]:
    return {
        n.func.id
        for n in ast.walk(node)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }


def _sink_target(call: ast.Call) -> str | None:
    """The model a write sink writes, when the code names one (``update(X)``, ``X.__table__``)."""
    if isinstance(call.func, ast.Name) and call.func.id not in WRITE_SINK_FUNCTIONS:
        return call.func.id  # a model's constructor
    if isinstance(call.func, ast.Name):
        tables = call.args[1:2] if call.func.id == "insert_ignore" else call.args[:1]
    else:
        models = _updated_models(call.func)
        return next(iter(sorted(models))) if models else None
    for arg in tables:
        if isinstance(arg, ast.Name):
            return arg.id
        if isinstance(arg, ast.Attribute) and arg.attr == "__table__":
            return ast.unparse(arg.value)
    return None


def _is_write_sink(call: ast.Call, models: frozenset[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr in WRITE_SINK_METHODS
    return isinstance(func, ast.Name) and (func.id in WRITE_SINK_FUNCTIONS or func.id in models)


def _dict_writes(
    tree: ast.AST, path: str, columns: frozenset[str], models: frozenset[str]
) -> list[Write]:
    """``columns`` set through a dict (a literal, ``dict(...)``, ``d["col"] = ...``) that reaches a
    write sink in the same module: passed to it directly, through a variable, or returned by a
    function whose call is passed to it. A sink whose model the code names and that is not one
    of ``models`` (``update(EmailIntent)``) is not a write of them."""
    # Which variables and functions carry such a dict (two rounds: a variable set from a function).
    tainted: dict[str, set[str]] = {}
    for _ in range(2):
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value:
                cols = _dict_columns(node.value, columns)
                cols |= {
                    c
                    for n in _names_in(node.value) | _called_in(node.value)
                    for c in tainted.get(n, ())
                }
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in (e for t in targets for e in _flat(t)):
                    if isinstance(target, ast.Name) and cols:
                        tainted.setdefault(target.id, set()).update(cols)
                    elif (
                        isinstance(target, ast.Subscript)
                        and isinstance(target.value, ast.Name)
                        and isinstance(target.slice, ast.Constant)
                        and target.slice.value in columns
                    ):
                        tainted.setdefault(target.value.id, set()).add(target.slice.value)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "update"
                and isinstance(node.func.value, ast.Name)
            ):
                cols = {k.arg for k in node.keywords if k.arg in columns}
                for arg in node.args:
                    cols |= _dict_columns(arg, columns)
                if cols:
                    tainted.setdefault(node.func.value.id, set()).update(cols)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        cols = _dict_columns(ret.value, columns)
                        cols |= {
                            c
                            for n in _names_in(ret.value) | _called_in(ret.value)
                            for c in tainted.get(n, ())
                            if n != node.name
                        }
                        if cols:
                            tainted.setdefault(node.name, set()).update(cols)
    found: list[Write] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _is_write_sink(node, models)):
            continue
        target = _sink_target(node)
        if target is not None and target[:1].isupper() and target not in models:
            continue  # another table's columns of the same names
        cols: set[str] = set()
        for arg in [*node.args, *(k.value for k in node.keywords if k.arg is None)]:
            cols |= _dict_columns(arg, columns)
            cols |= {c for n in _names_in(arg) | _called_in(arg) for c in tainted.get(n, ())}
        found += [Write(path, node.lineno, target or "<dict>", c) for c in sorted(cols)]
    return found


def column_writes(
    source: str, path: str, columns: frozenset[str], models: frozenset[str], *, constructors: bool
) -> list[Write]:
    """Every write of ``columns``: attribute assignments (and ``setattr``) on anything but
    ``self``, ``.values(col=...)`` of an UPDATE/INSERT of one of ``models`` or of a statement whose
    model the code does not name, with ``constructors`` ``Model(column=...)``, and the columns
    of a dict that reaches a write (:func:`_dict_writes`)."""
    found: list[Write] = []
    tree = ast.parse(source, filename=path)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in (e for t in targets for e in _flat(t)):
                if isinstance(target, ast.Attribute) and target.attr in columns:
                    base = ast.unparse(target.value)
                    if base not in {"self", "cls"}:
                        found.append(Write(path, node.lineno, base, target.attr))
        elif isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Name)
                and func.id == "setattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in columns
            ):
                found.append(
                    Write(path, node.lineno, ast.unparse(node.args[0]), node.args[1].value)
                )
                continue
            keywords = {k.arg for k in node.keywords if k.arg} & columns
            if not keywords:
                continue
            if isinstance(func, ast.Attribute) and func.attr == "values":
                updated = _updated_models(func.value)
                for model in (updated & models) if updated else {"<statement>"}:
                    found += [Write(path, node.lineno, model, c) for c in sorted(keywords)]
            elif constructors and isinstance(func, ast.Name) and func.id in models:
                found += [Write(path, node.lineno, func.id, c) for c in sorted(keywords)]
    return found + _dict_writes(tree, path, columns, models)


def _writes_in(
    *packages: str, columns: frozenset[str], models: frozenset[str], constructors: bool
) -> list[Write]:
    return [
        w
        for p in _source_files(*packages)
        for w in column_writes(
            p.read_text(encoding="utf-8"),
            p.relative_to(REPO).as_posix(),
            columns,
            models,
            constructors=constructors,
        )
    ]


def test_only_app_queue_writes_lease_and_state_columns() -> None:
    writes = _writes_in(
        "app", "webhooks", columns=QUEUE_COLUMNS, models=QUEUE_MODELS, constructors=True
    )
    outside = [
        str(w)
        for w in writes
        if w.path != "app/mechanisms/queue.py" and (w.path, w.base) not in NOT_QUEUE_ROWS
    ]
    assert outside == []


def test_only_app_history_sets_a_prescriptions_status() -> None:
    writes = _writes_in(
        "app",
        "webhooks",
        columns=frozenset({"status"}),
        models=frozenset({"Prescription"}),
        constructors=False,
    )
    assert [str(w) for w in writes if w.path != "app/mechanisms/history.py"] == []


def test_outcome_unknown_changes_only_through_the_dispatch_outcome_rule() -> None:
    # A new outbox row starts with its outcome known (constructors are not changes).
    writes = _writes_in(
        "app",
        "webhooks",
        columns=frozenset({"outcome_unknown"}),
        models=frozenset({"DispatchOutbox"}),
        constructors=False,
    )
    assert [str(w) for w in writes if w.path != "app/services/dispatch/outcome.py"] == []


# -- no private attributes of third-party libraries --------------------------------------------

# Underscore names that are public by their library's documentation, and the one use the
# event publisher's rework removes (the lead empties this list once it has merged).
PRIVATE_ACCESS_ALLOWED = frozenset(
    {
        "os._exit",  # documented: exit without cleanup, in a forked child
    }
)
# Public API spelled with one underscore so it cannot clash with field names: SQLAlchemy's
# Row._mapping and the namedtuple methods (docs of each).
DOCUMENTED_UNDERSCORE_API = frozenset({"_mapping", "_asdict", "_fields", "_replace", "_make"})


def private_accesses(
    source: str, path: str, own_modules: frozenset[str] = frozenset()
) -> list[str]:
    """``x._name`` (one leading underscore, no dunder) on anything but self, cls, our modules."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if not (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and (owner.id in {"self", "cls"} or owner.id in own_modules):
            continue
        if node.attr in DOCUMENTED_UNDERSCORE_API:
            continue
        # super()._hook: overriding a library's documented extension point (marshmallow fields)
        if (
            isinstance(owner, ast.Call)
            and isinstance(owner.func, ast.Name)
            and owner.func.id == "super"
        ):
            continue
        text = ast.unparse(node)
        if text in PRIVATE_ACCESS_ALLOWED or f"{path} {text}" in PRIVATE_ACCESS_ALLOWED:
            continue
        found.append(f"{path}:{node.lineno} {text}")
    return found


# Our own top-level packages, whose underscore names are ours to reach: the service's and the
# separately shipped reference consumer with the contract both sides import.
OWN_PACKAGES = (*FIRST_PARTY, "notifier", "contracts")


def _own_module_names(source: str) -> frozenset[str]:
    """Names bound by importing our own modules (``from app import metrics``: ``metrics``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.split(".")[0] in OWN_PACKAGES
            }
        elif isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").split(".")[0] in OWN_PACKAGES
        ):
            names |= {a.asname or a.name for a in node.names}
    return frozenset(names)


def test_no_private_attributes_of_third_party_objects() -> None:
    found = []
    for p in _source_files("app", "connector", "webhooks", "notifier"):
        source = p.read_text(encoding="utf-8")
        found += private_accesses(source, p.relative_to(REPO).as_posix(), _own_module_names(source))
    assert found == []


# -- the checker itself catches what it should ------------------------------------------


def _check(source: str, package: str) -> list[Imported]:
    return imports_in_source(source, REPO / package / "example.py")


@pytest.mark.parametrize(
    ("source", "columns", "models"),
    [
        ("row.state = 'done'", QUEUE_COLUMNS, QUEUE_MODELS),
        ("row.locked_by, row.locked_until = None, None", QUEUE_COLUMNS, QUEUE_MODELS),
        ("row.attempts += 1", QUEUE_COLUMNS, QUEUE_MODELS),
        (
            "s = update(EventOutbox).where(x).values(state='dead', last_error=e)",
            QUEUE_COLUMNS,
            QUEUE_MODELS,
        ),
        ("r = DispatchOutbox(prescription_id=1, state='pending')", QUEUE_COLUMNS, QUEUE_MODELS),
        ("setattr(row, 'state', 'done')", QUEUE_COLUMNS, QUEUE_MODELS),
        # Dicts and keyword arguments that reach a write.
        ("statement.values(state='dead')", QUEUE_COLUMNS, QUEUE_MODELS),
        (
            "update(DispatchOutbox).values({'state': 'pending', 'next_attempt_at': now})",
            QUEUE_COLUMNS,
            QUEUE_MODELS,
        ),
        (
            "values = {'state': 'pending', 'next_attempt_at': now}\nconn.execute(stmt, values)",
            QUEUE_COLUMNS,
            QUEUE_MODELS,
        ),
        (
            "values = {'event_id': e}\nvalues['state'] = 'ignored'\nconn.execute(stmt, values)",
            QUEUE_COLUMNS,
            QUEUE_MODELS,
        ),
        (
            "values = dict(locked_by=None)\nsession.execute(update(WebhookInbox).values(**values))",
            QUEUE_COLUMNS,
            QUEUE_MODELS,
        ),
        (
            "def row_values(now):\n    return {'state': 'pending', 'attempts': 0}\n"
            "def stage():\n    return EventOutbox(**row_values(now))",
            QUEUE_COLUMNS,
            QUEUE_MODELS,
        ),
        (
            "values = {'id': 1}\nvalues.update(state='dead')\ninsert_ignore(s, t, values)",
            QUEUE_COLUMNS,
            QUEUE_MODELS,
        ),
        ("rx.status = 'issued'", frozenset({"status"}), frozenset({"Prescription"})),
        (
            "update(Prescription).values(status='dead')",
            frozenset({"status"}),
            frozenset({"Prescription"}),
        ),
    ],
)
def test_write_checker_flags_column_writes(
    source: str, columns: frozenset[str], models: frozenset[str]
) -> None:
    assert column_writes(source, "app/x.py", columns, models, constructors=True) != []


def test_write_checker_ignores_reads_and_other_tables() -> None:
    source = (
        "if row.state == 'dead':\n    x = row.attempts\n"
        "update(EmailIntent).values(last_error=None)\nself.state = 1\n"
        # A payload that shows the columns is read, not written.
        "def payload(row):\n    return {'state': row.state, 'attempts': row.attempts}\n"
        "update(EmailIntent).values({'last_error': None})\n"
        "insert_ignore(session, EmailIntent.__table__, {'attempts': 0})\n"
        "session.execute(select(DispatchOutbox).where(x), {'id': 1})"
    )
    assert column_writes(source, "app/x.py", QUEUE_COLUMNS, QUEUE_MODELS, constructors=True) == []


@pytest.mark.parametrize(
    "source",
    ["breaker._lock.acquire()", "x = channel._impl", "request._get_current_object()", "a.b._c"],
)
def test_private_access_checker_flags_reaching_into_objects(source: str) -> None:
    assert private_accesses(source, "app/x.py") != []


def test_private_access_checker_allows_self_dunders_and_our_modules() -> None:
    source = "from app import history\nself._x = 1\ncls._y\nx.__class__\nhistory._move"
    assert private_accesses(source, "app/x.py", _own_module_names(source)) == []


def test_private_access_checker_allows_the_notifiers_own_modules_only() -> None:
    source = "from notifier import store\nstore._table\nimport pika\npika._impl"
    assert private_accesses(source, "notifier/x.py", _own_module_names(source)) == [
        "notifier/x.py:4 pika._impl"
    ]


def test_app_wiring_modules_may_import_webhooks() -> None:
    source = "from webhooks.processing import InboxProcessor"
    assert (
        app_violations(imports_in_source(source, REPO / "app" / "interfaces" / "worker.py")) == []
    )
    assert app_violations(imports_in_source(source, REPO / "app" / "services" / "x.py")) != []


@pytest.mark.parametrize(
    ("package", "source", "check"),
    [
        ("connector", "import flask", connector_violations),
        ("connector", "def f():\n    from sqlalchemy import select\n", connector_violations),
        ("connector", "from app.foundation.models import Prescription", connector_violations),
        ("webhooks", "import requests", webhooks_violations),
        ("webhooks", "from urllib.request import urlopen", webhooks_violations),
        ("webhooks", "from connector.client import ConnectorClient", webhooks_violations),
        ("webhooks", "from connector import ConnectorClient", webhooks_violations),
        ("webhooks", "from ..connector import client", webhooks_violations),
        ("webhooks", "from app.services.connector_factory import make_client", webhooks_violations),
        ("webhooks", "from app.services import prescriptions", webhooks_violations),
        ("webhooks", "from app import services", webhooks_violations),
        ("webhooks", "from connector.backoff import full_jitter_delay", webhooks_violations),
        ("webhooks", "import smtplib", webhooks_violations),
        ("app", "from webhooks.processing import InboxProcessor", app_violations),
        ("app", "import sandbox", app_violations),
        ("app/services", "from flask import current_app", services_violations),
        ("app/services", "from app.interfaces.errors import ApiError", services_violations),
        ("app/services", "from werkzeug.exceptions import NotFound", services_violations),
        ("scripts", "from app.services.prescriptions import queue_send", scripts_violations),
        ("scripts", "from webhooks.signature import sign", scripts_violations),
        ("scripts", "from app import services", scripts_violations),
        ("scripts", "import connector", scripts_violations),
        ("sandbox", "from connector.statuses import LIFECYCLE", sandbox_violations),
        ("sandbox", "from webhooks.signature import verify", sandbox_violations),
        ("sandbox", "import app", sandbox_violations),
        ("migrations", "from app.services.dispatch import Dispatcher", migrations_violations),
        ("migrations", "import webhooks", migrations_violations),
        ("migrations", "from app import services", migrations_violations),
        ("webhooks", "from connector.errors import ConnectorError", webhooks_violations),
        ("notifier", "from app.foundation.models import EventOutbox", notifier_violations),
        ("notifier", "import webhooks", notifier_violations),
        ("notifier", "import flask", notifier_violations),
    ],
)
def test_checker_flags_forbidden_imports(package: str, source: str, check) -> None:  # type: ignore[no-untyped-def]
    assert check(_check(source, package)) != []


@pytest.mark.parametrize(
    ("package", "source", "check"),
    [
        (
            "connector",
            "import requests\nimport cachetools\nfrom . import errors",
            connector_violations,
        ),
        ("webhooks", "from connector.statuses import LIFECYCLE", webhooks_violations),
        ("webhooks", "from connector import statuses", webhooks_violations),
        ("webhooks", "from connector.parsing import value_at", webhooks_violations),
        ("webhooks", "from app.mechanisms.history import record", webhooks_violations),
        (
            "webhooks",
            "from app.mechanisms.queue import claim_returning\nfrom app.mechanisms.retry import RetryPolicy",
            webhooks_violations,
        ),
        ("app", "from connector import ConnectorClient", app_violations),
        (
            "app/services",
            "from sqlalchemy import select\nfrom app.foundation.errors import NotFound",
            services_violations,
        ),
        (
            "scripts",
            "from app.foundation.config import load_settings\nfrom app.foundation.models import Patient",
            scripts_violations,
        ),
        ("sandbox", "import requests\nfrom flask import Flask", sandbox_violations),
        (
            "migrations",
            "from app.foundation.models import Base\nimport sqlalchemy as sa",
            migrations_violations,
        ),
        (
            "migrations",
            "from app.foundation import models\nfrom alembic import op",
            migrations_violations,
        ),
        ("webhooks", "from app.mechanisms.audit import PLATFORM, record_by", webhooks_violations),
        (
            "notifier",
            "import pika\nfrom contracts.events import x\nimport smtplib",
            notifier_violations,
        ),
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


def test_notifier_imports_only_the_contract_pika_and_its_own_modules() -> None:
    found = imports_of("notifier")
    assert notifier_violations(found) == []
    assert {i.top for i in found} >= {"contracts", "pika"}  # the walk sees real imports


# -- layers inside app/ -------------------------------------------------------------------------
#
# design.md: "Inside app/, layers from the bottom up, each importing only those below it: models,
# config, db (and crypto, logs) -> mechanisms -> services -> interfaces -> create_app. The folder
# layout shows the layers." A module may use its own layer's siblings; it never imports upward.

APP_LAYERS = ("app.foundation", "app.mechanisms", "app.services", "app.interfaces")


def app_layer(module: str) -> int:
    """The layer of an ``app`` module: 0 foundation ... 3 interfaces, 4 the package root."""
    for rank, prefix in enumerate(APP_LAYERS):
        if _is(module, prefix):
            return rank
    return len(APP_LAYERS)  # app/__init__.py: create_app, on top


def _module_of(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def layer_violations(imports: list[Imported]) -> list[str]:
    """Imports from a lower app layer into a higher one (design.md, inside app/)."""
    bad = []
    for i in imports:
        here = app_layer(_module_of(i.path))
        for target in {i.module, *i.targets}:
            if target.split(".")[0] != "app" or target == "app.":
                continue
            if target == "app" or not any(_is(target, p) for p in APP_LAYERS):
                continue  # the package root's names (create_app) are used by no layer
            if app_layer(target) > here:
                bad.append(f"{i} ({APP_LAYERS[here] if here < 4 else 'app'} imports upward)")
                break
    return bad


def test_every_app_module_sits_in_one_layer_folder() -> None:
    loose = [
        p.relative_to(REPO).as_posix()
        for p in python_files("app")
        if p.relative_to(REPO).as_posix() != "app/__init__.py"
        and app_layer(_module_of(p)) == len(APP_LAYERS)
    ]
    assert loose == []


def test_app_layers_import_only_their_own_layer_or_below() -> None:
    assert layer_violations(imports_of("app")) == []


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("app/foundation/models.py", "from app.mechanisms.queue import claim_batch"),
        ("app/mechanisms/audit.py", "from app.services.void import VoidResult"),
        ("app/services/mail.py", "from app.interfaces import worker"),
        ("app/mechanisms/history.py", "from app.interfaces.cli import cli"),
    ],
)
def test_layer_rule_refuses_an_upward_import(path: str, source: str) -> None:
    assert layer_violations(imports_in_source(source, REPO / path)) != []


def test_layer_rule_allows_siblings_and_lower_layers() -> None:
    source = "from app.services.paging import Page\nfrom app.foundation.db import Database"
    assert layer_violations(imports_in_source(source, REPO / "app/services/patients.py")) == []

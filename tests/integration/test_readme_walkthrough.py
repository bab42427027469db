"""The README's "Running the service" section, run verbatim in a fresh clone.

What a newcomer does, from ``git clone`` to a dispensed Region B prescription and an
emailed Region A one: every indented shell block of the section (and its walkthrough
subsection) is run as written with bash, in a fresh ``git clone`` of this repository in
a temporary folder. Three changes only, none to the commands: the clone's ``.venv`` is
a symlink to this checkout's virtualenv (nothing is reinstalled); the long-running
commands (``make sandbox``, ``make run``, ``make worker``) run in the background, each
waited for until it answers; and the ports are free ones (``PORT`` and
``SANDBOX_PORT`` for make, ``127.0.0.1:8000`` in the commands rewritten to the
service's port). The database is the clone's own SQLite file (the README's default),
so the run touches nothing outside the temporary folder.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.stack import free_port, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Running the service"
LONG_RUNNING = ("make sandbox", "make run", "make worker")
# The walkthrough runs; "### Seed data" (psql and createdb on a PostgreSQL server) does not:
# it would create a database outside the temporary folder.
WALKTHROUGH = ("### A walkthrough",)


def section_blocks(
    readme: str, heading: str = SECTION, *, subsections: tuple[str, ...] = WALKTHROUGH
) -> list[list[str]]:
    """The indented code blocks of the level-2 section ``heading`` and of its ``subsections``
    (other subsections, such as the PostgreSQL seeding alternative, are left out), each as a
    list of commands (backslash continuations joined, comments kept for bash)."""
    start = readme.index(heading + "\n")
    following = re.search(r"^## ", readme[start + len(heading) :], re.M)
    body = readme[start : start + len(heading) + following.start()] if following else readme[start:]
    blocks: list[list[str]] = []
    current: list[str] = []
    included = True
    for line in body.splitlines() + [""]:
        if line.startswith("### "):
            included = line.startswith(subsections)
        if line.startswith("    ") and (current or line.strip()):
            current.append(line[4:])
            continue
        if current:
            joined = "\n".join(current).replace("\\\n", " ")
            if included:
                blocks.append([c for c in joined.splitlines() if c.strip()])
            current = []
    return blocks


def test_section_blocks_reads_continuations_and_subsections():
    text = (
        "## Running the service\n\nText\n\n    a \\\n      b\n    c\n\n"
        "### A walkthrough\n\n    d\n\n"
        "### Seed data\n\n    createdb x\n\n## Next\n\n    e\n"
    )
    assert section_blocks(text) == [["a    b", "c"], ["d"]]


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "erx-connector"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True, timeout=120)
    (target / ".venv").symlink_to((REPO / ".venv").resolve(), target_is_directory=True)
    yield target


def _env(port: int, sandbox_port: int) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        PORT=str(port),
        SANDBOX_PORT=str(sandbox_port),
        ERX_BASE_URL=f"http://127.0.0.1:{sandbox_port}",
    )
    return env


def _bash(script: str, *, cwd: Path, env: dict[str, str], timeout_s: float) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert result.returncode == 0, (
        f"README commands failed:\n{script}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result.stdout


def test_readme_running_the_service_works_verbatim_from_a_fresh_clone(clone: Path):
    port, sandbox_port = free_port(), free_port()
    env = _env(port, sandbox_port)
    blocks = section_blocks((clone / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3, blocks
    background: list[subprocess.Popen[bytes]] = []
    logs = clone / "instance" / "readme-test-logs"
    outputs: list[str] = []
    try:
        for block in blocks:
            foreground: list[str] = []
            for command in block:
                if command.startswith(LONG_RUNNING):
                    logs.mkdir(parents=True, exist_ok=True)
                    name = command.split()[1]
                    out = (logs / f"{name}.log").open("wb")
                    proc = subprocess.Popen(
                        ["bash", "-c", command],
                        cwd=clone,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                    background.append(proc)
                    if name == "sandbox":
                        wait_http(
                            f"http://127.0.0.1:{sandbox_port}/sandbox/stats",
                            timeout_s=60,
                            proc=proc,
                        )
                    elif name == "run":
                        wait_http(f"http://127.0.0.1:{port}/healthz", timeout_s=60, proc=proc)
                else:
                    foreground.append(command.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
            if foreground:
                outputs.append(_bash("\n".join(foreground), cwd=clone, env=env, timeout_s=600))
        for proc in background:
            assert proc.poll() is None, f"{proc.args} exited early: see {logs}"
    finally:
        for proc in background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in background:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    everything = "\n".join(outputs)
    # Both sandbox prescribers can send: the default patient's prescriptions are dr.patel's.
    assert everything.count("credentials=stored") == 2, everything
    assert "clinic display_id=201334 platform_id=994: ok" in everything
    # The walkthrough's two ends: Region B dispensed, Region A emailed with the PDF on disk.
    assert re.search(
        r'"reference":\s*"rx-000001".*?"status":\s*"dispensed"|"status":\s*"dispensed"', everything
    )
    assert re.search(r'"status":\s*"emailed"', everything)
    assert (clone / "instance" / "mail" / "rx-000017.eml").is_file()

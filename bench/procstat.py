"""CPU seconds used by processes, read from /proc (Linux; zeros elsewhere).

Used to say where the time goes during a load phase: the web server's
processes, PostgreSQL's, the load generator's. No third-party package needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, cpu seconds user+system) of ``pid``, or None if it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm is in parentheses and may contain spaces: split after the last ')'.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime = int(fields[11]), int(fields[12])
    return comm, ppid, (utime + stime) / _TICK


def _all() -> dict[int, tuple[str, int, float]]:
    found = {}
    if not _PROC.is_dir():
        return found
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                found[int(entry.name)] = stat
    return found


def tree_cpu(roots: Iterable[int]) -> float:
    """CPU seconds of the processes ``roots`` and all their live descendants."""
    procs = _all()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, stack, seen = 0.0, list(roots), set()
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        total += procs[pid][2]
        stack.extend(children.get(pid, ()))
    return total


def named_cpu(name: str) -> float:
    """CPU seconds of every live process whose command name starts with ``name`` (e.g. postgres)."""
    return sum(cpu for comm, _, cpu in _all().values() if comm.startswith(name))


def machine_busy() -> tuple[float, float, float]:
    """(busy, total, steal) CPU seconds of the whole machine since boot, from /proc/stat.

    ``steal`` is time the hypervisor gave to other guests: on a shared VM it
    makes every figure noisier, so the reports show it.
    """
    try:
        first = (_PROC / "stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0, 0.0, 0.0
    values = [int(v) for v in first[1:]] + [0] * 8
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle - values[7]) / _TICK, total / _TICK, values[7] / _TICK


def busy_pct(seconds: float = 1.0) -> float | None:
    """How busy the whole machine is over the next ``seconds`` (percent of all CPUs)."""
    import time

    busy0, total0, _ = machine_busy()
    time.sleep(seconds)
    busy1, total1, _ = machine_busy()
    if total1 <= total0:
        return None
    return round(100.0 * (busy1 - busy0) / (total1 - total0), 1)


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each live process in ``pids``; gone ones are left out.

    Take it before and after a phase and subtract per pid: a process that
    started during the phase counts from zero, one that ended is lost.
    """
    found = {}
    for pid in pids:
        stat = _stat(pid)
        if stat is not None:
            found[pid] = stat[2]
    return found

"""``python -m bench.events.cpuprofile OUT``: the publisher under cProfile, timed in CPU seconds.

``python -m cProfile`` times wall clock: on a busy machine that charges the
time a process waits for a CPU to whatever it was doing, so it says little
about what the publisher itself costs. This counts ``time.process_time``.
"""

from __future__ import annotations

import cProfile
import sys
import time

from flask.cli import main


def run(out: str) -> None:
    """Run ``flask --app app events publish`` until it exits (SIGTERM), then write pstats to ``out``."""
    sys.argv = ["flask", "--app", "app", "events", "publish"]
    profile = cProfile.Profile(time.process_time)
    try:
        profile.runcall(main)
    except SystemExit:
        pass
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    run(sys.argv[1])

"""``python -m notifier COMMAND``: see :mod:`notifier.cli`."""

from __future__ import annotations

from notifier.cli import main

if __name__ == "__main__":
    main(prog_name="python -m notifier")

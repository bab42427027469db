#!/usr/bin/env bash
# Run one benchmark command alternately in this checkout and in a reference checkout, N pairs.
#
#   git worktree add /tmp/reference <commit>      # the code a figure in docs/benchmarks.md came from
#   (cd /tmp/reference && make .venv/.installed)  # its own pinned virtualenv
#   bash bench/alternate.sh /tmp/reference 6 -- python -m bench.events --rounds 2 --drain 0
#
# Each run uses the checkout's own .venv/bin/python (the command's leading "python" is replaced).
# Alternating in one session puts both under the same machine load, so their ratio means
# something where absolute figures on a shared 2-core machine vary several-fold between runs.
# Prints a header per run (checkout, pair, UTC time, load average) and the command's output.
set -euo pipefail
if [ $# -lt 4 ] || [ "$3" != "--" ]; then
  echo "usage: bash bench/alternate.sh REFERENCE_CHECKOUT PAIRS -- python -m bench.<name> [args]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd)
reference=$(cd "$1" && pwd)
pairs=$2
shift 3
[ "$1" = "python" ] && shift
for dir in "$here" "$reference"; do
  if [ ! -x "$dir/.venv/bin/python" ]; then
    echo "alternate: $dir has no .venv (run: cd $dir && make .venv/.installed)" >&2
    exit 2
  fi
done
for pair in $(seq 1 "$pairs"); do
  for dir in "$here" "$reference"; do
    echo "== $dir $pair $(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd "$dir" && .venv/bin/python "$@")
  done
done

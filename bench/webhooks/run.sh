#!/usr/bin/env bash
# Webhook benchmark (receipt throughput and latency): installs wrk if it is missing, then runs
# `python -m bench.webhooks`: ingest (service vs the bare reference receiver and
# a copy of it, fresh servers per round), receipt->history at a steady 200/s
# (inbox workers vs a synchronous receiver) and saturation (wrk, 32 connections,
# 60 s, inbox workers running). Arguments pass through, e.g.
#
#   bash bench/webhooks/run.sh --phases ingest --rounds 3
#   bash bench/webhooks/run.sh --phases saturation --inbox-workers 3 --plot
#   BENCH_DB=sqlite bash bench/webhooks/run.sh      # ingest + history only
#
# Loopback only. Results: bench/results/webhooks.json; exits 1 if a row check failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

install_wrk() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "wrk is missing and this user cannot install packages: install wrk, then re-run" >&2
      return 1
    fi
  fi
  if command -v apt-get >/dev/null 2>&1; then
    echo "== installing wrk (apt-get)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    echo "== installing wrk (dnf)" >&2
    $sudo dnf install -y -q wrk
  elif command -v apk >/dev/null 2>&1; then
    echo "== installing wrk (apk)" >&2
    $sudo apk add --quiet wrk
  elif command -v brew >/dev/null 2>&1; then
    echo "== installing wrk (brew)" >&2
    brew install wrk
  else
    echo "wrk is missing and no known package manager was found: install wrk, then re-run" >&2
    return 1
  fi
}

if ! command -v wrk >/dev/null 2>&1; then
  install_wrk
fi
command -v wrk >/dev/null 2>&1 || { echo "wrk is still not on PATH" >&2; exit 1; }

if [ ! -x "$PYTHON" ]; then
  echo "no Python at $PYTHON: run 'make test' or 'make demo' once to create .venv, or set PYTHON" >&2
  exit 1
fi

exec "$PYTHON" -m bench.webhooks "$@"

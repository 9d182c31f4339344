#!/usr/bin/env bash
# Print the trace hash of every scenario (and regression) at seeds 1, 2, 3:
# a refactor that claims "no behaviour change" must leave every line equal.
#   simulations/trace-hashes.sh [STARLING_SIM] > before.txt   # then again after; diff
# STARLING_SIM defaults to a release build of the simulator alone. large.toml
# (1,000 nodes, ~5-15 min) runs only with ALL=1.
set -euo pipefail
cd "$(dirname "$0")/.."
sim=${1:-}
if [ -z "$sim" ]; then
  cargo build -q --release -p starling-sim --no-default-features
  sim="${CARGO_TARGET_DIR:-target}/release/starling-sim"
fi
for f in simulations/scenarios/*.toml simulations/regressions/*.toml; do
  case "$f" in *large.toml) [ "${ALL:-0}" = 1 ] || continue ;; esac
  for s in 1 2 3; do
    d=$(mktemp -d)
    rc=0
    "$sim" run "$f" --seed "$s" --out "$d" > /dev/null 2>&1 || rc=$?
    h=$(grep -o '"trace_hash": *"[0-9a-f]*"' "$d/results.json" 2>/dev/null | grep -o '[0-9a-f]\{16\}' || echo none)
    echo "$f $s rc=$rc $h"
    rm -rf "$d"
  done
done

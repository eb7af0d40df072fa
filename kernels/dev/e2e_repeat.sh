#!/usr/bin/env bash
# Runs the carried e2e cargo test (gpu_checks backend_matches_cpu_and_goldens) N times per test
# binary, each with a fresh seed, and tallies the runs that failed and the rows that failed them.
# For telling a flaky check from a regression: give the binary of the old and of the new tree.
#
#   kernels/dev/e2e_repeat.sh N BINARY [BINARY ...]      (e.g. 20 .bin/old_tests/gpu_checks .bin/tests/gpu_checks)
set -uo pipefail
[ $# -ge 2 ] || { sed -n 2,6p "$0"; exit 2; }
N=$1
shift
for bin in "$@"; do
  fails=0
  rows=$(mktemp)
  for _ in $(seq 1 "$N"); do
    out=$(timeout 60 "$bin" backend_matches_cpu_and_goldens --nocapture 2>&1)
    if ! grep -aq "test result: ok" <<< "$out"; then
      fails=$((fails + 1))
      grep -a "| FAIL |" <<< "$out" | sort -u | cut -d'|' -f2 >> "$rows"
    fi
  done
  echo "$bin: $fails of $N runs failed"
  sort "$rows" | uniq -c | sed 's/^/  /'
  rm -f "$rows"
done

#!/usr/bin/env bash
# A/B of decode-kernel variants in one device call: kernel checks of each variant, then the same
# fixed plans timed for every variant in alternating repeats (so drift shows up as disagreement
# between repeats, not as a difference between variants).
#
#   kernels/dev/harness_ab.sh KERNELS SPECS VARIANT [VARIANT ...]
#
# KERNELS: comma list for --kernels (e.g. wgmma_t16,wgmma_r64). SPECS: as --time
# ("heads,batch,ctx,kernel[,chunk];..."). VARIANT: name|source|defines, e.g.
#   "old|/path/to/old/mla_decode.cu|" "new|kernels/cuda/mla_decode.cu|-DSOMETHING"
# REPEATS (default 2). Needs what mla_decode_check.py needs (PyTorch, CuPy or cuda-python).
# An older revision's kernels, exported before the device call into a carried folder (the device
# gets no .git):  for f in $(git ls-files kernels/cuda); do git show REV:$f > DIR/${f##*/}; done
set -uo pipefail
[ $# -ge 3 ] || { sed -n 2,13p "$0"; exit 2; }
KERNELS=$1 SPECS=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
K="$HERE/mla_decode_check.py"
REPEATS=${REPEATS:-2}
status=0
for v in "$@"; do
  IFS='|' read -r name src defs <<< "$v"
  if MLA_SRC=$src MLA_DEFINES="$defs" python3 "$K" --check-only --kernels "$KERNELS" > "/tmp/ab_check_$name.log" 2>&1; then
    echo "check $name: PASS ($(grep -ac '^ok' "/tmp/ab_check_$name.log") cases)"
  else
    echo "check $name: FAIL"
    grep -a "FAIL" "/tmp/ab_check_$name.log" | head -5
    status=1
  fi
done
for r in $(seq 1 "$REPEATS"); do
  for v in "$@"; do
    IFS='|' read -r name src defs <<< "$v"
    echo "=== $name (repeat $r)"
    MLA_SRC=$src MLA_DEFINES="$defs" python3 "$K" --time "$SPECS" --kernels "$KERNELS" 2>&1 | grep -a "^time" || status=1
  done
done
exit $status

#!/usr/bin/env bash
# The kernel switches under test (kernels/README.md), checked and timed in one device call: the
# kernel checks with the step's programmatic launches on (every new kernel's rows, whatever its
# switch); the fixtures end to end with the defaults and with every switch on (the forward pass on
# the kernels they choose, weights prefetched into L2 before each step kernel's wait);
# `--bench-gemm` (each new GEMM beside the one it would replace). Their end-to-end speed is
# dev/step_ab.sh. Needs BIN (kernels/dev/gpu_env.sh sets OUT).
set -u
BIN=${BIN:-.bin/run/mlahost}
OUT=${OUT:-/tmp/mlahost-gpu}
SEED=${SEED:-$(date +%s)}
ALL="MLAHOST_STEP_PDL=1 MLAHOST_MOE_STREAM=1 MLAHOST_MOE_WGMMA=1 MLAHOST_DENSE_STREAM=1 MLAHOST_COMBINE_NORM=1 MLAHOST_KERNEL_DEFINES=-DWEIGHT_PREFETCH=1"
mkdir -p "$OUT"
rows() { grep -E "^\|" "$1" | grep -v "^|---"; }
MLAHOST_STEP_PDL=1 timeout "${KERNELS_S:-200}" "$BIN" gpu-check --kernels-only --seed "$SEED" > "$OUT/kernels.log" 2>&1
echo "kernels rc=$? (seed $SEED): $(grep -c '| ok' "$OUT/kernels.log") ok; failed:"
rows "$OUT/kernels.log" | grep -E "FAIL" | cut -c1-220 | head -20
rows "$OUT/kernels.log" | grep -E "_pp|Stream|Wgmma|linear_stream|absorb|route_small|combine_norm|, wgmma|, stream" | cut -c1-200 | head -50
timeout "${E2E_S:-100}" "$BIN" gpu-check --e2e-only --seed "$SEED" > "$OUT/e2e.log" 2>&1
echo "e2e, defaults: rc=$?"; rows "$OUT/e2e.log" | cut -c1-160 | sort -u | head -30
env $ALL timeout "${E2E_S:-100}" "$BIN" gpu-check --e2e-only --seed "$SEED" > "$OUT/e2e_switched.log" 2>&1
echo "e2e, $ALL: rc=$?"; rows "$OUT/e2e_switched.log" | cut -c1-160 | sort -u | head -30
timeout "${GEMM_S:-160}" "$BIN" gpu-check --bench-only --bench-gemm --seed "$SEED" > "$OUT/gemm.log" 2>&1
echo "bench-gemm rc=$?"; grep -E "^\||copy" "$OUT/gemm.log" | grep -v "^|---" | head -80

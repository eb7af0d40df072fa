#!/usr/bin/env bash
# The GPU check: on a machine with the CUDA driver, NVRTC, cuBLAS and Python/PyTorch but no Rust
# toolchain, run the carried release binary's kernel checks, the end-to-end comparisons and the
# benchmarks, and print one table at the end.
#
#   kernels/gpu_check.sh [checks] [bench] [e2e]        (default: checks bench)
#
# BIN (default .bin/mlahost) is the release binary built on the development machine;
# TOKENIZER_DIR (default .bin/tokenizer) holds the DeepSeek tokenizer for the random checkpoints;
# OUT (default /tmp/mlahost-gpu) receives logs and JSON.
set -uo pipefail
BIN=${BIN:-.bin/mlahost}
TOKENIZER_DIR=${TOKENIZER_DIR:-.bin/tokenizer}
OUT=${OUT:-/tmp/mlahost-gpu}
WORK=${WORK:-/tmp/mlahost-work}
STEPS=${*:-checks bench}
mkdir -p "$OUT" "$WORK"
export MLAHOST_KERNEL_CACHE="$WORK/kernel-cache"
# CUDA 13 libraries as the PyTorch wheels ship them (nvidia/cu13/lib, nvidia/*/lib, torch/lib).
export LD_LIBRARY_PATH="$(python3 - <<'PY'
import glob, os
import nvidia, torch
dirs = []
for root in nvidia.__path__:
    dirs += glob.glob(os.path.join(root, "*", "lib")) + glob.glob(os.path.join(root, "cu*", "lib"))
dirs.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
print(":".join(d for d in dirs if os.path.isdir(d)))
PY
):${LD_LIBRARY_PATH:-}"
SUMMARY="$OUT/summary.md"
: > "$SUMMARY"
status=0
note() { echo "$*" | tee -a "$SUMMARY"; }

has() { [[ " $STEPS " == *" $1 "* ]]; }

if has checks || has bench; then
  SMALL="$WORK/v2-lite-3l"
  [ -d "$SMALL" ] || python3 examples/gpu/make_v2_lite_random.py --out "$SMALL" --tokenizer-dir "$TOKENIZER_DIR" --layers 3 --shard-gb 1 > "$OUT/make_small.log" 2>&1
  args=(gpu-check --model "$SMALL")
  has bench && args+=(--bench --bench-json "$OUT/bench.jsonl")
  has checks || args+=(--bench-only)
  "$BIN" "${args[@]}" 2>&1 | tee "$OUT/gpu_check.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  grep -E "^\| |^## |^device" "$OUT/gpu_check.log" | grep -v "decode kernel benchmark" >> "$SUMMARY"
  if has bench; then
    python3 kernels/dev/torch_decode_baseline.py > "$OUT/torch.jsonl" 2> "$OUT/torch.log" || status=1
    note ""
    note "## decode kernel vs copy bandwidth and PyTorch (same run, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
    python3 kernels/dev/bench_table.py "$OUT/bench.jsonl" "$OUT/torch.jsonl" | tee -a "$SUMMARY"
  fi
fi

if has e2e; then
  bash kernels/gpu_e2e.sh 2>&1 | tee "$OUT/e2e.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  grep -E "^\| |^## " "$OUT/e2e.log" >> "$SUMMARY"
fi

echo
echo "================ summary ================"
cat "$SUMMARY"
exit $status

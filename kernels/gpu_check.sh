#!/usr/bin/env bash
# The GPU check: on a machine with the CUDA driver, NVRTC, cuBLAS and Python/PyTorch but no Rust
# toolchain, run the carried release binary's kernel checks, the end-to-end comparisons and the
# benchmarks, and print one table at the end.
#
#   kernels/gpu_check.sh [checks] [bench] [e2e] [server]   (default: checks bench)
#
# server: the API's GPU paths on the tiny fixture: lm-eval's echo + logprobs requests against the
# transformers goldens (tests/lm_eval_check.py --direct) and the structured-output checks
# (tests/structured_outputs.py --stdlib-only: grammar allow-sets in the device sampler).
#
# BIN (default .bin/mlahost) is the release binary built on the development machine;
# TOKENIZER_DIR (default .bin/tokenizer) holds the DeepSeek tokenizer for the random checkpoints;
# OUT (default /tmp/mlahost-gpu) receives logs and JSON; SWEEP=1 adds the split-plan sweep to bench.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev/gpu_env.sh"
STEPS=${*:-checks bench}
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
  [ "${SWEEP:-0}" = 1 ] && args+=(--sweep)
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

# plan's capacity answer against what serve allocates on this GPU (small model: quick to load)
if has checks; then
  GPU_BYTES=$(python3 -c "import torch; print(torch.cuda.get_device_properties(0).total_memory)")
  note ""
  note "## plan vs serve pool on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  note "| kv dtype | plan pool tokens | serve pool tokens | equal |"
  note "|---|---|---|---|"
  for dt in bf16 fp8; do
    planned=$("$BIN" plan --model "$SMALL" --gpu-memory "$GPU_BYTES" --kv-cache-dtype $dt --json | python3 -c "import json,sys; print(json.load(sys.stdin)['pool']['tokens'])")
    "$BIN" serve --device cuda:0 --model "$SMALL" --port 8012 --kv-cache-dtype $dt > "$OUT/serve_plan_$dt.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do curl -sf http://127.0.0.1:8012/health > /dev/null && break; kill -0 $pid 2> /dev/null || break; sleep 1; done
    served=$(curl -s http://127.0.0.1:8012/metrics | python3 -c "import re,sys; m=re.search(r'^mlahost_kv_cache_tokens_total\{[^}]*\} (\d+)', sys.stdin.read(), re.M); print(m.group(1) if m else -1)")
    kill $pid; wait $pid 2> /dev/null
    [ "$planned" = "$served" ] || status=1
    note "| $dt | $planned | $served | $([ "$planned" = "$served" ] && echo yes || echo NO) |"
  done
fi

# The GPU crates' tests as built by `cargo test --release -p mlahost-cuda -p mlahost-gpu-check --no-run` (copied into
# TESTS_DIR): the sampling kernel against the engine's sampler, the checks as cargo tests.
TESTS_DIR=${TESTS_DIR:-.bin/tests}
if has checks && [ -d "$TESTS_DIR" ]; then
  note ""
  note "## cargo tests of mlahost-cuda (carried binaries)"
  for t in "$TESTS_DIR"/*; do
    if MLAHOST_FIXTURES=tests/fixtures "$t" --test-threads 1 > "$OUT/test_$(basename "$t").log" 2>&1; then
      note "| $(basename "$t") | $(grep -E '^test result' "$OUT/test_$(basename "$t").log" | tail -1) |"
    else
      status=1
      note "| $(basename "$t") | FAILED: $(grep -E 'panicked|^test result' "$OUT/test_$(basename "$t").log" | head -3 | tr '\n' ' ') |"
    fi
  done
fi

if has server; then
  "$BIN" serve --device cuda:0 --model tests/fixtures/tiny-v2-lite --served-model-name tiny-v2-lite --port 8013 > "$OUT/serve_api.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 240); do curl -sf http://127.0.0.1:8013/health > /dev/null && break; kill -0 $pid 2> /dev/null || break; sleep 0.5; done
  note ""
  note "## the API on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) (tiny-v2-lite)"
  python3 tests/lm_eval_check.py --direct --base-url http://127.0.0.1:8013 --model tiny-v2-lite --tolerance-per-token 0.05 > "$OUT/lm_eval_direct.log" 2>&1 || status=1
  note "| lm-eval's requests vs transformers | $(tail -1 "$OUT/lm_eval_direct.log") |"
  python3 tests/structured_outputs.py --base-url http://127.0.0.1:8013 --model tiny-v2-lite --stdlib-only > "$OUT/structured.log" 2>&1 || status=1
  note "| structured outputs | $(tail -1 "$OUT/structured.log"); $(grep -c '^FAIL' "$OUT/structured.log") FAIL lines |"
  kill $pid; wait $pid 2> /dev/null
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

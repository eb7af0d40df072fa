#!/usr/bin/env bash
# FP8 weights on the GPU machine (driver, NVRTC, cuBLAS, PyTorch; no Rust): with the carried
# release binary, run the steps asked for and write logs to OUT.
#
#   kernels/gpu_fp8.sh [checks] [bench] [models] [gen] [fp8]
#
#   checks  gpu-check: every kernel check (the FP8 ones included) and the fixtures end to end
#   bench   the FP8 linears against cuBLAS bf16 on DeepSeek-V3's shapes (gpu-check --bench-fp8)
#   models  the V3-shaped reduced FP8 checkpoint (examples/gpu/make_v3_reduced_fp8.py) and a
#           3-layer V2-Lite-shaped bf16 one, each GPU (bf16 and FP8 weights) against the CPU engine
#   gen     generate timings, bf16 against FP8 weights, on both
#   quick   the FP8 kernel checks, the fixtures' FP8-weight rows and the benchmark (no big models)
#   v3      the V3-shaped reduced FP8 checkpoint: GPU bf16 and FP8 weights against the CPU engine
#   fp8     in one gpu-check: the FP8 kernel checks, the FP8-weight rows of the fixtures and of
#           both models (with their bf16 rows), and the benchmark
#   e2e     DeepSeek-V2-Lite's exact config with dummy weights, served as bf16, `--quantization
#           fp8`, and fp8 + `--kv-cache-dtype fp8`: `generate` (1,024-token prefill, decode) and
#           `bench` at concurrency 1 / 16 / 64 (1,024 in, 256 out)
#   v3gen   the V3-shaped reduced model's prefill and decode step (generate), bf16 and FP8 weights
#   verify  the FP8 checks (cuBLASLt's probe in every output mode, the forced fp8 decode kernels,
#           the fixtures' FP8 rows with cuBLASLt in their prefill) and the FP8 GEMM benchmark;
#           then the decode benchmark at batch 64 (the fp8 variants not chosen, beside the chosen
#           ones; BENCH_BATCH=all for every shape)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev/gpu_env.sh"
# called on its own from a device call (PACK=1): one archive comes back, not dozens of files
[ "${PACK:-0}" = 1 ] && source "$(dirname "${BASH_SOURCE[0]}")/dev/pack_out.sh"
STEPS=${*:-checks bench}
has() { [[ " $STEPS " == *" $1 "* ]]; }
status=0
SEED=${SEED:-$(date +%s)}
args=(gpu-check --seed "$SEED")
has bench && args+=(--bench-fp8)
if has checks || has bench; then
  has checks || args+=(--bench-only)
  timeout "${CHECK_S:-330}" "$BIN" "${args[@]}" > "$OUT/check.log" 2>&1 || status=1
fi
V3="$WORK/v3-reduced-fp8" V2="$WORK/v2-lite-3l"
if has verify; then
  timeout "${QUICK_S:-200}" "$BIN" gpu-check --fp8-only --bench-fp8 --seed "$SEED" > "$OUT/verify.log" 2>&1 || status=1
  # batch 64 only (BENCH_BATCH=all for every shape): the whole table outlasts a call's budget
  bb=(--bench-batch "${BENCH_BATCH:-64}"); [ "${BENCH_BATCH:-64}" = all ] && bb=()
  timeout "${BENCH_S:-150}" "$BIN" gpu-check --bench-only --bench "${bb[@]}" --seed "$SEED" > "$OUT/verify_bench.log" 2>&1 || status=1
fi
if has quick; then
  timeout "${QUICK_S:-200}" "$BIN" gpu-check --fp8-only --bench-fp8 --seed "$SEED" > "$OUT/quick.log" 2>&1 || status=1
fi
if has v3; then
  [ -d "$V3" ] || timeout "${MAKE_S:-120}" python3 examples/gpu/make_v3_reduced_fp8.py --out "$V3" --tokenizer-dir "$TOKENIZER_DIR" > "$OUT/make.log" 2>&1 || status=1
  timeout "${V3_S:-150}" "$BIN" gpu-check --models-only --fp8-only --seed "$SEED" --model "$V3" > "$OUT/v3.log" 2>&1 || status=1
fi
if has models || has gen || has fp8; then
  [ -d "$V3" ] || python3 examples/gpu/make_v3_reduced_fp8.py --out "$V3" --tokenizer-dir "$TOKENIZER_DIR" > "$OUT/make.log" 2>&1 || status=1
  [ -d "$V2" ] || python3 examples/gpu/make_v2_lite_random.py --out "$V2" --tokenizer-dir "$TOKENIZER_DIR" --layers 3 --shard-gb 1 >> "$OUT/make.log" 2>&1 || status=1
fi
if has models; then
  timeout "${MODELS_S:-240}" "$BIN" gpu-check --models-only --seed "$SEED" --model "$V3" --model "$V2" > "$OUT/models.log" 2>&1 || status=1
fi
if has fp8; then
  timeout "${FP8_S:-420}" "$BIN" gpu-check --fp8-only --bench-fp8 --seed "$SEED" --model "$V3" --model "$V2" > "$OUT/fp8.log" 2>&1 || status=1
fi
if has e2e; then
  LITE="$WORK/v2-lite-dummy"
  mkdir -p "$LITE"
  cp tests/fixtures/configs/deepseek-v2-lite.json "$LITE/config.json"
  cp "$TOKENIZER_DIR"/tokenizer.json "$TOKENIZER_DIR"/tokenizer_config.json "$LITE/"
  PROMPT=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(16, 1000)) for _ in range(1024)))")
  for variant in "bf16:--quantization bf16" "fp8:--quantization fp8" "fp8-cache:--quantization fp8 --kv-cache-dtype fp8"; do
    name=${variant%%:*}; flags=${variant#*:}
    # shellcheck disable=SC2086
    "$BIN" generate --device cuda:0 --model "$LITE" --load-format dummy $flags --prompt-ids "$PROMPT" --max-tokens 128 --ignore-eos --json 2> /dev/null \
      | python3 -c "import json,sys; r=json.load(sys.stdin)['stats']; print(f\"| $name | generate | prefill 1024 {r['prefill_s']*1e3:.1f} ms | decode {r['decode_tokens_per_s']:.1f} tok/s |\")" | tee -a "$OUT/e2e.md" || status=1
    # shellcheck disable=SC2086
    "$BIN" serve --device cuda:0 --model "$LITE" --load-format dummy $flags --port 8021 --max-model-len 4096 > "$OUT/serve_$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do curl -sf http://127.0.0.1:8021/health > /dev/null && break; kill -0 $pid 2> /dev/null || break; sleep 1; done
    for c in 1 16 64; do
      n=$(( c == 1 ? 4 : 2 * c ))
      timeout "${BENCH_S:-120}" "$BIN" bench --url http://127.0.0.1:8021 --input-len 1024 --output-len 256 --num-prompts $n --concurrency $c \
        --extra-body '{"ignore_eos": true}' --json "$OUT/${name}_c$c.json" > "$OUT/${name}_c$c.log" 2>&1 || status=1
      python3 -c "import json,sys; r=json.load(open('$OUT/${name}_c$c.json'))['runs'][0]; print(f\"| $name | c=$c | {r['output_throughput']:.1f} tok/s | TPOT p50 {r['tpot_ms']['median']:.2f} ms | TTFT p50 {r['ttft_ms']['median']:.1f} ms | failed {r['failed']} |\")" | tee -a "$OUT/e2e.md" || status=1
    done
    kill $pid; wait $pid 2> /dev/null
  done
fi
if has v3gen; then
  PROMPT=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(16, 1000)) for _ in range(1024)))")
  [ -d "$V3" ] || python3 examples/gpu/make_v3_reduced_fp8.py --out "$V3" --tokenizer-dir "$TOKENIZER_DIR" > "$OUT/make.log" 2>&1 || status=1
  for q in bf16 fp8; do
    "$BIN" generate --device cuda:0 --model "$V3" --quantization $q --prompt-ids "$PROMPT" --max-tokens 64 --ignore-eos --json 2> /dev/null \
      | python3 -c "import json,sys; r=json.load(sys.stdin)['stats']; print(f\"| v3-reduced $q | generate | prefill 1024 {r['prefill_s']*1e3:.1f} ms | decode step {1e3/r['decode_tokens_per_s']:.2f} ms |\")" | tee -a "$OUT/e2e.md" || status=1
  done
fi
if has gen; then
  for m in "$V3" "$V2"; do
    for q in bf16 fp8; do
      "$BIN" generate --device cuda:0 --model "$m" --quantization $q --prompt-ids "$(python3 -c 'print(",".join(str(i % 1000 + 100) for i in range(1024)))')" \
        --max-tokens 64 --ignore-eos --json 2> /dev/null | python3 -c "import json,sys; r=json.load(sys.stdin); print('$(basename $m) $q', json.dumps({k: v for k, v in r.items() if k not in ('token_ids','top_logprobs','prompt_token_ids','text')}))" >> "$OUT/gen.log" 2>&1 || status=1
    done
  done
fi
exit $status

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
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev/gpu_env.sh"
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
if has gen; then
  for m in "$V3" "$V2"; do
    for q in bf16 fp8; do
      "$BIN" generate --device cuda:0 --model "$m" --quantization $q --prompt-ids "$(python3 -c 'print(",".join(str(i % 1000 + 100) for i in range(1024)))')" \
        --max-tokens 64 --ignore-eos --json 2> /dev/null | python3 -c "import json,sys; r=json.load(sys.stdin); print('$(basename $m) $q', json.dumps({k: v for k, v in r.items() if k not in ('token_ids','top_logprobs','prompt_token_ids','text')}))" >> "$OUT/gen.log" 2>&1 || status=1
    done
  done
fi
exit $status

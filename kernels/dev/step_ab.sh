#!/usr/bin/env bash
# A/B of the decode step's switches in one device call, DeepSeek-V2-Lite's config with dummy
# weights: for each variant, `generate` (1,024-token prompt, batch-1 decode tok/s) and, unless
# SERVE=0, `serve` + `bench` at concurrency 16 and 64 (1,024-token prompts, 128 outputs). The
# variants, in order (each an env assignment list; "-" is the plain binary):
#   -                       the defaults (only attention's kernels launched programmatically)
#   MLAHOST_STEP_PDL=1      programmatic launch for all the step's kernels of ours
#   ... MLAHOST_MOE_STREAM=1 MLAHOST_MOE_WGMMA=1 MLAHOST_COMBINE_NORM=1   moe_gemm_stream for
#                           the 16-row expert tiles (decode), moe_gemm_wgmma for the 64-row ones
#                           (prefill: the prefill ms), the combine with the next input norm
#   ... MLAHOST_DENSE_STREAM=1   and the small-batch path at <= 16 tokens: linear_stream for the
#                           dense linears, absorb.cu for W_UK + rope + cache write and W_UV, moe_route_small
#                           for the router, routing and dispatch
#   ... MLAHOST_KERNEL_DEFINES=-DWEIGHT_PREFETCH=1   and each streaming kernel asks L2 for its
#                           weights before it waits for the kernel ahead (util::prefetch_weights_l2)
# VARIANTS (|-separated) overrides them. Needs BIN and TOKENIZER_DIR (kernels/dev/gpu_env.sh).
set -u
BIN=${BIN:-.bin/run/mlahost}
OUT=${OUT:-/tmp/mlahost-gpu}
WORK=${WORK:-/tmp/mlahost-work}
PORT=${PORT:-8013}
SERVE=${SERVE:-1}
ALL="MLAHOST_STEP_PDL=1 MLAHOST_MOE_STREAM=1 MLAHOST_MOE_WGMMA=1 MLAHOST_COMBINE_NORM=1"
VARIANTS=${VARIANTS:-"-|MLAHOST_STEP_PDL=1|$ALL|$ALL MLAHOST_DENSE_STREAM=1|$ALL MLAHOST_DENSE_STREAM=1 MLAHOST_KERNEL_DEFINES=-DWEIGHT_PREFETCH=1"}
LITE="$WORK/v2-lite-dummy"
mkdir -p "$LITE" "$OUT"
cp tests/fixtures/configs/deepseek-v2-lite.json "$LITE/config.json"
cp "$TOKENIZER_DIR"/tokenizer.json "$TOKENIZER_DIR"/tokenizer_config.json "$LITE/"
PROMPT=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(16, 1000)) for _ in range(1024)))")
echo "| variant | generate decode tok/s | prefill ms | c=16 tok/s | c=16 TPOT ms | c=64 tok/s | c=64 TPOT ms | c=64 TTFT p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
IFS='|' read -ra LIST <<< "$VARIANTS"
for i in "${!LIST[@]}"; do
  var="${LIST[$i]}"
  envs=()
  [ "$var" != "-" ] && read -ra envs <<< "$var"
  env "${envs[@]}" timeout "${GEN_S:-90}" "$BIN" generate --device cuda:0 --model "$LITE" --load-format dummy --prompt-ids "$PROMPT" \
    --max-tokens 128 --ignore-eos --json > "$OUT/ab_gen_$i.json" 2> "$OUT/ab_gen_$i.err"
  gen=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['stats']; print(f\"{r['decode_tokens_per_s']:.1f} | {r['prefill_s']*1e3:.1f}\")" "$OUT/ab_gen_$i.json" 2> /dev/null || echo "failed | -")
  served="- | - | - | - | -"
  if [ "$SERVE" = 1 ]; then
    env "${envs[@]}" "$BIN" serve --device cuda:0 --model "$LITE" --load-format dummy --port $PORT --max-model-len 2048 > "$OUT/ab_serve_$i.log" 2>&1 &
    server=$!
    for _ in $(seq 1 180); do
      curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
      kill -0 $server 2> /dev/null || break
      sleep 1
    done
    served=""
    for c in 16 64; do
      timeout "${BENCH_S:-60}" "$BIN" bench --url "http://127.0.0.1:$PORT" --input-len 1024 --output-len 128 --num-prompts $((2 * c)) --concurrency $c \
        --extra-body '{"ignore_eos": true}' --json "$OUT/ab_c${c}_$i.json" > "$OUT/ab_c${c}_$i.log" 2>&1
      served+=$(python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
r = r[0] if isinstance(r, list) else r.get('runs', [r])[0]
tpot, ttft = r.get('tpot_ms', {}), r.get('ttft_ms', {})
p99 = f\" | {ttft.get('p99', float('nan')):.1f}\" if sys.argv[2] == '64' else ''
print(f\"{r.get('output_throughput', 0):.1f} | {tpot.get('median', float('nan')):.2f}{p99} | \", end='')" "$OUT/ab_c${c}_$i.json" $c 2> /dev/null || echo -n "failed | - | $([ $c = 64 ] && echo "- | ")")
    done
    served=${served% | }
    kill $server; wait $server 2> /dev/null
  fi
  echo "| $var | $gen | $served |"
done
# each variant's roofline shares (kernels/dev/step_roofline.py: the formula kernels/gpu_e2e.sh reports)
python3 kernels/dev/step_roofline.py "$LITE/config.json" "$(python3 kernels/dev/copy_gbps.py)" "$OUT" "$VARIANTS" 2> /dev/null || echo "roofline shares: failed"

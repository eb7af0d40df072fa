#!/usr/bin/env bash
# End-to-end on the GPU with DeepSeek-V2-Lite's exact config and random bf16 weights (15.7B):
# plan vs serve capacity, `generate`, and `serve` under load at concurrency 1, 16 and 64 with
# 1K-token prompts and 256 output tokens. Called by kernels/gpu_check.sh (same variables).
set -uo pipefail
BIN=${BIN:-.bin/mlahost}
TOKENIZER_DIR=${TOKENIZER_DIR:-.bin/tokenizer}
OUT=${OUT:-/tmp/mlahost-gpu}
WORK=${WORK:-/tmp/mlahost-work}
PORT=${PORT:-8011}
MODEL="$WORK/v2-lite"
status=0
if [ ! -f "$MODEL/model.safetensors.index.json" ]; then
  t0=$(date +%s)
  python3 examples/gpu/make_v2_lite_random.py --out "$MODEL" --tokenizer-dir "$TOKENIZER_DIR" | tail -1
  echo "checkpoint written in $(( $(date +%s) - t0 )) s"
fi
# total memory as the driver reports it to the backend (cuDeviceTotalMem), not nvidia-smi's MiB
GPU_BYTES=$(python3 -c "import torch; print(torch.cuda.get_device_properties(0).total_memory)")
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
for dt in bf16 fp8; do
  "$BIN" plan --model "$MODEL" --gpu-memory "$GPU_BYTES" --context 32768 --kv-cache-dtype $dt --json > "$OUT/plan_$dt.json" || status=1
done
"$BIN" plan --model "$MODEL" --gpu-memory "$GPU_BYTES" --context 32768 --kv-cache-dtype bf16 | tee "$OUT/plan_bf16.txt"

echo "## generate (1024-token prompt, 256 tokens, $CARD)"
PROMPT=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(16, 1000)) for _ in range(1024)))")
"$BIN" generate --device cuda:0 --model "$MODEL" --prompt-ids "$PROMPT" --max-tokens 256 --ignore-eos --json > "$OUT/generate.json" 2> "$OUT/generate.log" || status=1
python3 - "$OUT/generate.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["stats"]
print(f"| generate | load {r['load_s']:.1f} s | prefill {r['prefill_s']*1e3:.1f} ms | decode {r['decode_tokens_per_s']:.1f} tok/s |")
PY

echo "## serve under load ($CARD)"
"$BIN" serve --device cuda:0 --model "$MODEL" --port $PORT --max-model-len 4096 > "$OUT/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  kill -0 $SERVER 2> /dev/null || break
  sleep 1
done
curl -s "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics_start.txt"
python3 - "$OUT/plan_bf16.json" "$OUT/plan_fp8.json" "$OUT/metrics_start.txt" <<'PY'
import json, re, sys
bf, fp = (json.load(open(p)) for p in sys.argv[1:3])
m = re.search(r"^mlahost_kv_cache_tokens_total\{[^}]*\} (\d+)", open(sys.argv[3]).read(), re.M)
served = int(m.group(1)) if m else -1
print("| plan (bf16) pool tokens | serve pool tokens | equal | 32K-token seqs that fit, bf16 | fp8 | fp8 pool tokens |")
print("|---|---|---|---|---|---|")
pb, pf = bf["pool"]["tokens"], fp["pool"]["tokens"]
print(f"| {pb} | {served} | {pb == served} | {bf['pool']['sequences']} | {fp['pool']['sequences']} | {pf} |")
PY
for c in 1 16 64; do
  n=$(( c == 1 ? 4 : 2 * c ))
  "$BIN" bench --url "http://127.0.0.1:$PORT" --input-len 1024 --output-len 256 --num-prompts $n --concurrency $c \
    --extra-body '{"ignore_eos": true}' --json "$OUT/serve_c$c.json" > "$OUT/bench_c$c.log" 2>&1 || status=1
done
# the built-in grammar plugin's cost on the real model: 0/50/100% of a batch of 64 constrained
echo "## structured outputs on the whole model ($CARD)"
timeout "${STRUCT_S:-120}" python3 examples/bench/structured_throughput.py --base-url "http://127.0.0.1:$PORT" --batch 64 --tokens 128 | tee "$OUT/structured.txt" || status=1
kill $SERVER; wait $SERVER 2> /dev/null
# plan's decode step at each concurrency (mean cached length 1,024 + 128): routed experts by the
# expected share touched, the embedding table only by rows; the second roofline column
for c in 1 16 64; do
  "$BIN" plan --model "$MODEL" --gpu-memory "$GPU_BYTES" --context 1152 --decode-batch $c --json > "$OUT/step_c$c.json" || status=1
done
COPY_GBPS=$(python3 kernels/dev/copy_gbps.py)
python3 - "$OUT" "$MODEL/config.json" "$COPY_GBPS" <<'PY'
import json, sys
out, cfg = sys.argv[1], json.load(open(sys.argv[2]))
copy = float(sys.argv[3]) * 1e9  # device-to-device copy bandwidth (bytes read + written)
print(f"copy bandwidth {copy / 1e9:.0f} GB/s")
sys.path.insert(0, "kernels/dev")
from step_roofline import step_bytes
print("| concurrency | output tok/s | TPOT ms (median) | TTFT ms (median) | TTFT ms (p99) | weights+KV per step GB | roofline share | plan's step GB | its share |")
print("|---|---|---|---|---|---|---|---|---|")
for c in (1, 16, 64):
    try:
        r = json.load(open(f"{out}/serve_c{c}.json"))
        r = r[0] if isinstance(r, list) else r.get("runs", [r])[0]
    except Exception as e:
        print(f"| {c} | failed ({e}) |"); continue
    tput, tpot, ttft, ttft99 = r["output_throughput"], r["tpot_ms"]["median"], r["ttft_ms"]["median"], r["ttft_ms"]["p99"]
    step = step_bytes(cfg, c)
    share = (step / copy) / (tpot * 1e-3) if copy and tpot == tpot else float("nan")
    try:
        st = json.load(open(f"{out}/step_c{c}.json"))["decode_step"]
        plan_bytes = st["weight_bytes_per_gpu"] + st["kv_bytes_per_gpu"]
        plan_share = f"{100 * (plan_bytes / copy) / (tpot * 1e-3):.0f}%"
    except Exception:
        plan_bytes, plan_share = float("nan"), "?"
    print(f"| {c} | {tput:.1f} | {tpot:.2f} | {ttft:.1f} | {ttft99:.1f} | {step / 1e9:.2f} | {100 * share:.0f}% | {plan_bytes / 1e9:.2f} | {plan_share} |")
PY
exit $status

#!/usr/bin/env bash
# DeepSeek-V3 on one 8-GPU node (issue 23): the reduced-layer correctness rows over NCCL, then
# V3's exact config with --load-format dummy, FP8 weights and an FP8 latent cache, served under
# plain tensor parallelism and under data-parallel attention with expert parallelism, each
# measured with the seed's workloads and SemiAnalysis InferenceX's. Tables land in $OUT.
#
#   kernels/gpu_node.sh [check] [emulated] [tp8] [dp8] [profile]   (default: check tp8 dp8 profile)
#
# Each of tp8 / dp8 serves the seed's workloads and InferenceX's, then probes how many 128K-token
# users the layout runs at once without preemption; profile times one decode step per rank by
# kind (attention, MoE, GEMMs, collectives). $OUT/node_report.md gathers the tables beside each
# step's roofline (plan --decode-batch at the node's measured copy bandwidth) and the anchors
# (kernels/dev/node_report.py).
#
# BIN, TOKENIZER_DIR (DeepSeek's tokenizer), OUT, WORK as for kernels/gpu_check.sh; BENCH_S
# bounds each benchmark run, LOAD_S each server start, PROBE_S the capacity probe.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev/gpu_env.sh"
STEPS=${*:-check tp8 dp8 profile}
has() { [[ " $STEPS " == *" $1 "* ]]; }
status=0
GPUS=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "## $GPUS x $CARD"
echo "$GPUS x $CARD" > "$OUT/card.txt"
[ "$GPUS" -ge 8 ] || { echo "needs 8 GPUs, found $GPUS"; exit 1; }

# Correctness: a V3-shaped reduced FP8 checkpoint (V3's widths, 4 layers, 32 experts) split 8
# ways over NCCL (TP 8, TP 8 + EP, DP 8 + EP packed and in slots, DP 4 x TP 2 + EP) against the
# whole model on GPU 0. The same splits emulated on one GPU are `emulated` (the 2-layer model's
# ran on one H100: kernels/PERFORMANCE.md, Several GPUs).
if has check || has emulated; then
  SMALL="$WORK/v3-reduced-4l"
  [ -d "$SMALL" ] || python3 examples/gpu/make_v3_reduced_fp8.py --out "$SMALL" --tokenizer-dir "$TOKENIZER_DIR" --layers 4 > "$OUT/make_reduced.log" 2>&1 || status=1
fi
if has check; then
  timeout "${CHECK_S:-540}" "$BIN" gpu-check --nccl-only --model "$SMALL" > "$OUT/node_check.log" 2>&1 || status=1
  grep "NCCL" "$OUT/node_check.log" | grep "^|" | tee "$OUT/node_check.md"
fi
if has emulated; then
  timeout "${CHECK_S:-540}" "$BIN" gpu-check --models-only --layouts-only --model "$SMALL" > "$OUT/node_emulated.log" 2>&1 || status=1
  grep "emulated" "$OUT/node_emulated.log" | grep "^|" | tee "$OUT/node_emulated.md"
fi

# V3's exact config (61 layers, 256 experts, FP8 blocks) with generated weights.
MODEL="$WORK/v3-dummy"
mkdir -p "$MODEL"
cp tests/fixtures/configs/deepseek-v3.json "$MODEL/config.json"
cp "$TOKENIZER_DIR"/tokenizer.json "$TOKENIZER_DIR"/tokenizer_config.json "$MODEL/"
GPU_BYTES=$(python3 -c "import torch; print(torch.cuda.get_device_properties(0).total_memory)")
# one GPU's device-to-device copy rate (bytes read + written), the rooflines' memory bandwidth
COPY_GBPS=$(python3 "$(dirname "${BASH_SOURCE[0]}")/dev/copy_gbps.py")
echo "copy bandwidth $COPY_GBPS GB/s"
PLAN=("$BIN" plan --model "$MODEL" --gpus 8 --gpu-memory "$GPU_BYTES" --kv-cache-dtype fp8 --quantization fp8)
"${PLAN[@]}" -tp 8 --context 131072 > "$OUT/plan_tp8.txt" 2>&1 || status=1
"${PLAN[@]}" -tp 8 --context 131072 --json > "$OUT/plan_tp8.json" 2>&1 || status=1
"${PLAN[@]}" -dp 8 --enable-expert-parallel --context 131072 > "$OUT/plan_dp8.txt" 2>&1 || status=1
"${PLAN[@]}" -dp 8 --enable-expert-parallel --context 131072 --json > "$OUT/plan_dp8.json" 2>&1 || status=1
# each workload's decode step at its mean cached length (both layouts are in every plan's list)
for w in "seed_4k 4096 512 16" "ctx_32k 32768 512 16" "ctx_128k 131072 512 8" "inferencex 1024 1024 8 16 32 64"; do
  set -- $w
  tag=$1 ctx=$(($2 + $3 / 2)); shift 3
  for c in "$@"; do
    "${PLAN[@]}" -tp 8 --context $ctx --decode-batch "$c" --hbm-gbps "$COPY_GBPS" --json > "$OUT/roofline_${tag}_c$c.json" 2>&1 || status=1
  done
done

# serve LAYOUT_NAME ARGS...: start, run every workload, stop
serve_and_bench() {
  local name=$1; shift
  local port=8100
  "$BIN" serve --device cuda:0 --model "$MODEL" --load-format dummy --quantization fp8 --kv-cache-dtype fp8 \
    --max-model-len 139264 --port $port "$@" > "$OUT/serve_$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 "${LOAD_S:-1800}"); do
    curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
    kill -0 $pid 2> /dev/null || { echo "$name: the server exited"; tail -5 "$OUT/serve_$name.log"; status=1; return; }
    sleep 1
  done
  curl -s "http://127.0.0.1:$port/metrics" > "$OUT/metrics_$name.txt"
  run() { # tag input output prompts concurrency
    timeout "${BENCH_S:-1200}" "$BIN" bench --url "http://127.0.0.1:$port" --input-len "$2" --output-len "$3" --num-prompts "$4" \
      --concurrency "$5" --extra-body '{"ignore_eos": true}' --json "$OUT/${name}_$1.json" > "$OUT/${name}_$1.log" 2>&1 || status=1
    tail -3 "$OUT/${name}_$1.log"
  }
  run seed_4k 4096 512 100 16
  run ctx_32k 32768 512 32 16
  run ctx_128k 131072 512 16 8
  run inferencex 1024 1024 256 8,16,32,64
  capacity_probe "$name" $port
  kill $pid; wait $pid 2> /dev/null
}

# metric PORT NAME: the sum of NAME over its label sets (one per replica)
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '{ split($1, n, "{") } n[1] == m { s += $2 } END { print int(s) }'; }
# capacity_probe NAME PORT: two more 128K-token users than plan says the layout holds, all at once;
# the most running at once (polled from /metrics) and the preemptions meanwhile
capacity_probe() {
  local name=$1 port=$2
  local label; label=$([ "$name" = tp8 ] && echo "TP=8" || echo "DP=8 + EP=8")
  local n; n=$(python3 -c "import json,sys; print(next(l.get('sequences', 0) for l in json.load(open(sys.argv[1]))['parallel']['layouts'] if l['layout'] == sys.argv[2]))" "$OUT/plan_$name.json" "$label" 2> /dev/null || echo 0)
  local c=$((n + 2)) before peak=0
  before=$(metric $port mlahost_num_preemptions_total)
  timeout "${PROBE_S:-1500}" "$BIN" bench --url "http://127.0.0.1:$port" --input-len 130816 --output-len 256 --num-prompts $c \
    --concurrency $c --extra-body '{"ignore_eos": true}' --json "$OUT/${name}_capacity.json" > "$OUT/${name}_capacity.log" 2>&1 &
  local bench=$!
  while kill -0 $bench 2> /dev/null; do
    local r; r=$(metric $port mlahost_num_requests_running)
    [ "${r:-0}" -gt "$peak" ] && peak=$r
    sleep 2
  done
  wait $bench || status=1
  local after; after=$(metric $port mlahost_num_preemptions_total)
  echo "{\"plan_sequences\": $n, \"concurrency\": $c, \"peak_running\": $peak, \"preemptions\": $((${after:-0} - ${before:-0}))}" | tee "$OUT/capacity_$name.json"
}

# one decode step per rank by kind: a 4,096-token prompt, 32 tokens, eager, every rank profiled
profile() {
  local name=$1; shift
  local prompt; prompt=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(16, 1000)) for _ in range(4096)))")
  timeout "${PROFILE_S:-900}" "$BIN" generate --device cuda:0 --model "$MODEL" --load-format dummy --quantization fp8 --kv-cache-dtype fp8 \
    --prompt-ids "$prompt" --max-tokens 32 --ignore-eos --json --profile-kernels "$@" > "$OUT/profile_$name.json" 2> "$OUT/profile_$name.err" || status=1
  grep -A12 "decode µs per pass, rank" "$OUT/profile_$name.err"
}

has tp8 && serve_and_bench tp8 -tp 8
has dp8 && serve_and_bench dp8 -tp 1 -dp 8 --enable-expert-parallel
has profile && profile tp8 -tp 8 && profile dp8 -tp 1 -dp 8 --enable-expert-parallel
python3 "$(dirname "${BASH_SOURCE[0]}")/dev/node_report.py" "$OUT" > "$OUT/node_report.md" && cat "$OUT/node_report.md"
exit $status

#!/usr/bin/env bash
# DeepSeek-V3 on one 8-GPU node (issue 23): the reduced-layer correctness rows over NCCL, then
# V3's exact config with --load-format dummy, FP8 weights and an FP8 latent cache, served under
# plain tensor parallelism and under data-parallel attention with expert parallelism, each
# measured with the seed's workloads and SemiAnalysis InferenceX's. Tables land in $OUT.
#
#   kernels/gpu_node.sh [check] [emulated] [tp8] [dp8]      (default: check tp8 dp8)
#
# BIN, TOKENIZER_DIR (DeepSeek's tokenizer), OUT, WORK as for kernels/gpu_check.sh; BENCH_S
# bounds each benchmark run, LOAD_S each server start.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev/gpu_env.sh"
STEPS=${*:-check tp8 dp8}
has() { [[ " $STEPS " == *" $1 "* ]]; }
status=0
GPUS=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "## $GPUS x $CARD"
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
"$BIN" plan --model "$MODEL" --gpus 8 --gpu-memory "$GPU_BYTES" -tp 8 --kv-cache-dtype fp8 --context 131072 --quantization fp8 > "$OUT/plan_tp8.txt" 2>&1 || status=1
"$BIN" plan --model "$MODEL" --gpus 8 --gpu-memory "$GPU_BYTES" -dp 8 --enable-expert-parallel --kv-cache-dtype fp8 --context 131072 --quantization fp8 > "$OUT/plan_dp8.txt" 2>&1 || status=1

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
  kill $pid; wait $pid 2> /dev/null
}
has tp8 && serve_and_bench tp8 -tp 8
has dp8 && serve_and_bench dp8 -tp 1 -dp 8 --enable-expert-parallel
exit $status

#!/usr/bin/env bash
# Everything a session needs from one device call, for when device time is short: the
# correctness checks (kernels/gpu_check.sh checks server), then the decode benchmark and the
# structured-output throughput at 0/50/100% constrained. TRAIN_S=N also trains the default model
# (examples/train) for N seconds in the background beside the checks (they time nothing, but
# share the GPU's memory: the server and plan-vs-serve steps then cannot start).
#
# Carry `.bin/carry` (mlahost.xz: a release build with `--no-default-features`, which leaves the
# built-in model out; tests.tgz, tokenizer.tgz: compressed so the working tree stays under the
# device's 64 MiB), and `.train/data` to train. TRAIN_S, CHECK_S, BENCH_S bound the steps;
# BENCH_S=0 skips the decode benchmark, STRUCT_S=0 the structured-output throughput, CHECK_S=0
# the checks; FP8_S=N ends with `kernels/gpu_fp8.sh
# quick` (the FP8 kernel checks, the fixtures' FP8 rows by depth, the FP8 GEMM benchmark).
set -u
source "$(dirname "${BASH_SOURCE[0]}")/pack_out.sh"
if [ -d .bin/carry ]; then
  mkdir -p .bin/run && python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.bin/carry/mlahost.xz'), open('.bin/run/mlahost', 'wb'))" && chmod +x .bin/run/mlahost
  tar xzf .bin/carry/tests.tgz -C .bin && tar xzf .bin/carry/tokenizer.tgz -C .bin
fi
source kernels/dev/gpu_env.sh
export BIN=.bin/run/mlahost TESTS_DIR=.bin/tests
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
T0=$(date +%s)
TRAIN=""
if [ "${TRAIN_S:-0}" != 0 ]; then
  mkdir -p "$OUT/train"
  ( PYTHONUNBUFFERED=1 python3 examples/train/train.py --data .train/data --out /tmp/run --return-dir "$OUT/train" --max-seconds "$TRAIN_S" > "$OUT/train.log" 2>&1
    echo "train rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/train.log" ) &
  TRAIN=$!
fi
if [ "${CHECK_S:-260}" != 0 ]; then
  timeout "${CHECK_S:-260}" kernels/gpu_check.sh checks server > "$OUT/checks.log" 2>&1
  echo "checks rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/checks.log"
fi
if [ -n "$TRAIN" ]; then wait "$TRAIN"; tail -22 "$OUT/train.log"; fi
[ -f "$OUT/checks.log" ] && { sed -n '/==== summary/,$p' "$OUT/checks.log" | head -90; tail -1 "$OUT/checks.log"; }
if [ "${BENCH_S:-100}" != 0 ]; then
  echo "bench at $(( $(date +%s) - T0 )) s"
  OUT="$OUT/bench" timeout "${BENCH_S:-100}" kernels/gpu_check.sh bench > "$OUT/bench.log" 2>&1; echo "bench rc $?"
  sed -n '/==== summary/,$p' "$OUT/bench.log" | head -40
fi
if [ "${STRUCT_S:-90}" != 0 ]; then
echo "structured outputs at $(( $(date +%s) - T0 )) s"
"$BIN" serve --device cuda:0 --model "$WORK/v2-lite-3l" --port 8014 > "$OUT/serve_structured.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do curl -sf http://127.0.0.1:8014/health > /dev/null && break; kill -0 $pid 2> /dev/null || break; sleep 1; done
timeout "${STRUCT_S:-90}" python3 examples/bench/structured_throughput.py --base-url http://127.0.0.1:8014 --batch 64 --tokens 128 2>&1 | tee "$OUT/structured.txt"
kill $pid; wait $pid 2> /dev/null
fi
if [ "${FP8_S:-0}" != 0 ]; then
  echo "fp8 quick at $(( $(date +%s) - T0 )) s"
  OUT="$OUT/fp8" QUICK_S="$FP8_S" kernels/gpu_fp8.sh quick; echo "fp8 rc $?"
  grep -E "FP8|depth|fp8" "$OUT/fp8/quick.log" | grep -v "^| fp8_gemm\|^| fp8 grouped\|^| fp8_quant" | head -40
fi
echo "end at $(( $(date +%s) - T0 )) s"

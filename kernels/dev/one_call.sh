#!/usr/bin/env bash
# Everything a session needs from one device call, for when device time is short: the default
# model's training run in the background (examples/train), the correctness checks beside it
# (kernels/gpu_check.sh checks server: they do not time anything), then alone on the GPU the
# decode benchmark and the structured-output throughput at 0/50/100% constrained.
#
# Carry `.train/data` and `.bin/carry` (mlahost.gz, tests.tgz, tokenizer.tgz: compressed so the
# working tree stays under the device's 64 MiB). TRAIN_S, CHECK_S, BENCH_S bound the steps;
# BENCH_S=0 stops after the checks.
set -u
if [ -d .bin/carry ]; then
  mkdir -p .bin/run && gunzip -c .bin/carry/mlahost.gz > .bin/run/mlahost && chmod +x .bin/run/mlahost
  tar xzf .bin/carry/tests.tgz -C .bin && tar xzf .bin/carry/tokenizer.tgz -C .bin
fi
source kernels/dev/gpu_env.sh
export BIN=.bin/run/mlahost TESTS_DIR=.bin/tests
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
T0=$(date +%s)
mkdir -p "$OUT/train"
( PYTHONUNBUFFERED=1 python3 examples/train/train.py --data .train/data --out /tmp/run --return-dir "$OUT/train" --max-seconds "${TRAIN_S:-300}" > "$OUT/train.log" 2>&1
  echo "train rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/train.log" ) &
TRAIN=$!
timeout "${CHECK_S:-260}" kernels/gpu_check.sh checks server > "$OUT/checks.log" 2>&1
echo "checks rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/checks.log"
wait $TRAIN
tail -22 "$OUT/train.log"
sed -n '/==== summary/,$p' "$OUT/checks.log" | head -90; tail -1 "$OUT/checks.log"
[ "${BENCH_S:-100}" = 0 ] && { echo "end at $(( $(date +%s) - T0 )) s (no benchmarks)"; exit 0; }
echo "bench at $(( $(date +%s) - T0 )) s"
OUT="$OUT/bench" timeout "${BENCH_S:-100}" kernels/gpu_check.sh bench > "$OUT/bench.log" 2>&1; echo "bench rc $?"
sed -n '/==== summary/,$p' "$OUT/bench.log" | head -40
echo "structured outputs at $(( $(date +%s) - T0 )) s"
"$BIN" serve --device cuda:0 --model "$WORK/v2-lite-3l" --port 8014 > "$OUT/serve_structured.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do curl -sf http://127.0.0.1:8014/health > /dev/null && break; kill -0 $pid 2> /dev/null || break; sleep 1; done
timeout 90 python3 examples/bench/structured_throughput.py --base-url http://127.0.0.1:8014 --batch 64 --tokens 128 2>&1 | tee "$OUT/structured.txt"
kill $pid; wait $pid 2> /dev/null
echo "end at $(( $(date +%s) - T0 )) s"

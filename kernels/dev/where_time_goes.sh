#!/usr/bin/env bash
# One device call that says where the time goes, for the speed issues: the 64-row decode kernels
# phase by phase (a -DMLA_F8_TRACE -DR64_PROF build: f8mma's producer and consumer, the wgmma
# kernels' warpgroups, cycles per 64-token tile) at batch 64; the batch-1 rows and ThunderMLA's
# ragged case; and a --profile-kernels breakdown of a DeepSeek-V2-Lite decode step (dummy
# weights, 1,024-token prompt).
#
# Carry `.bin/carry` (mlahost.xz from `cargo build --release -p mlahost --no-default-features`,
# tokenizer.tgz). TRACE_S, BATCH1_S, PROFILE_S bound the steps (0 skips one). AB_DEFINES="-DF8_ADEPTH=4"
# (say; or "-DPP_S_FIRST=1 -DF8PP_S_FIRST=0" for the ping-pong kernels' other orders) adds the batch-64 bench of a variant
# build beside a plain one, in the same call (AB_S).
set -u
if [ -d .bin/carry ]; then
  mkdir -p .bin/run && python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.bin/carry/mlahost.xz'), open('.bin/run/mlahost', 'wb'))" && chmod +x .bin/run/mlahost
  tar xzf .bin/carry/tokenizer.tgz -C .bin
fi
source kernels/dev/gpu_env.sh
export BIN=.bin/run/mlahost
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
SEED=${SEED:-$(date +%s)}
if [ "${TRACE_S:-220}" != 0 ]; then
  MLAHOST_KERNEL_DEFINES="-DMLA_F8_TRACE -DR64_PROF" timeout "${TRACE_S:-220}" "$BIN" gpu-check --bench-only --bench --bench-batch 64 --seed "$SEED" > "$OUT/trace.log" 2>&1
  echo "trace rc=$?"; sed -n '/time goes/,$p' "$OUT/trace.log" | head -20
fi
if [ -n "${AB_DEFINES:-}" ]; then
  for variant in plain variant; do
    defs=""
    [ $variant = variant ] && defs="$AB_DEFINES"
    MLAHOST_KERNEL_DEFINES="$defs" timeout "${AB_S:-220}" "$BIN" gpu-check --bench-only --bench --bench-batch 64 --seed "$SEED" > "$OUT/ab_$variant.log" 2>&1
    echo "A/B [$defs] rc=$?"; grep -E "^\| (fp8_f8mma_r64|fp8_f8mma_pp|wgmma_r64|fp8_wgmma_r64_ov|wgmma_pp|fp8_wgmma_pp) " "$OUT/ab_$variant.log"
  done
fi
if [ "${BATCH1_S:-150}" != 0 ]; then
  timeout "${BATCH1_S:-150}" "$BIN" gpu-check --bench-only --bench --bench-batch 1 --seed "$SEED" > "$OUT/batch1.log" 2>&1
  echo "batch-1 rc=$?"; grep -E "^\| " "$OUT/batch1.log" | head -24; sed -n '/ThunderMLA/,+4p' "$OUT/batch1.log"
fi
if [ "${PROFILE_S:-150}" != 0 ]; then
  LITE="$WORK/v2-lite-dummy"
  mkdir -p "$LITE"
  cp tests/fixtures/configs/deepseek-v2-lite.json "$LITE/config.json"
  cp "$TOKENIZER_DIR"/tokenizer.json "$TOKENIZER_DIR"/tokenizer_config.json "$LITE/"
  PROMPT=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(16, 1000)) for _ in range(1024)))")
  timeout "${PROFILE_S:-150}" "$BIN" generate --device cuda:0 --model "$LITE" --load-format dummy --prompt-ids "$PROMPT" \
    --max-tokens 32 --ignore-eos --json --profile-kernels > "$OUT/profile.json" 2> "$OUT/profile.err"
  echo "profile rc=$?"; grep -v "^\s*$" "$OUT/profile.err" | tail -60
fi

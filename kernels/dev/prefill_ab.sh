#!/usr/bin/env bash
# Issue 28's prefill figure in one device call: `generate` of a 1,024- and an 8,192-token prompt
# (one output token) on DeepSeek-V2-Lite's config with dummy weights, for each variant (an env
# assignment list; "-" is the plain binary; default: the defaults, and the wgmma grouped expert
# GEMMs), with the active FLOPs' share of the card's bf16 tensor peak (dev/prefill_share.py).
# Needs BIN and TOKENIZER_DIR (kernels/dev/gpu_env.sh).
set -u
BIN=${BIN:-.bin/run/mlahost}
OUT=${OUT:-/tmp/mlahost-gpu}
WORK=${WORK:-/tmp/mlahost-work}
VARIANTS=${VARIANTS:-"-|MLAHOST_MOE_WGMMA=1"}
LITE="$WORK/v2-lite-dummy"
mkdir -p "$LITE" "$OUT"
cp tests/fixtures/configs/deepseek-v2-lite.json "$LITE/config.json"
cp "$TOKENIZER_DIR"/tokenizer.json "$TOKENIZER_DIR"/tokenizer_config.json "$LITE/"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
IFS='|' read -ra LIST <<< "$VARIANTS"
for i in "${!LIST[@]}"; do
  var="${LIST[$i]}"
  envs=()
  [ "$var" != "-" ] && read -ra envs <<< "$var"
  for n in 1024 8192; do
    prompt=$(python3 -c "import random, sys; random.seed(1); print(','.join(str(random.randrange(16, 1000)) for _ in range(int(sys.argv[1]))))" $n)
    env "${envs[@]}" timeout "${GEN_S:-90}" "$BIN" generate --device cuda:0 --model "$LITE" --load-format dummy --prompt-ids "$prompt" \
      --max-tokens 1 --ignore-eos --json > "$OUT/prefill_${i}_$n.json" 2> "$OUT/prefill_${i}_$n.err"
    secs=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['stats']['prefill_s'])" "$OUT/prefill_${i}_$n.json" 2> /dev/null)
    if [ -n "$secs" ]; then
      echo "$var | $(python3 kernels/dev/prefill_share.py "$LITE/config.json" "$GPU" $n "$secs")"
    else
      echo "$var | $n tokens: failed ($(tail -1 "$OUT/prefill_${i}_$n.err" | cut -c1-200))"
    fi
  done
done

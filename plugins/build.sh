#!/usr/bin/env bash
# Builds the example plugins to plugins/<name>.wasm (WebAssembly components, wasm32-wasip2).
#   plugins/build.sh             the four examples
#   plugins/build.sh --hostile   also the hostile test plugins, to plugins/target/hostile/<name>.wasm
# Works from any directory. Extra arguments after the flags go to cargo (e.g. -j 1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Always this workspace's own target dir, whatever the caller's CARGO_TARGET_DIR says.
export CARGO_TARGET_DIR="$here/target"
target=wasm32-wasip2
examples=(prefix_router tenant_quota pin_shared_prefixes no_repeat_ngram grammar)
hostile=(hostile_loop hostile_loop_router hostile_alloc hostile_init_trap hostile_hook_trap
         hostile_huge_sampler hostile_huge_router hostile_wrong_world sandbox_probe
         hostile_bad_evict hostile_sleep_sampler hostile_sleep_admission hostile_slow_init
         hostile_bad_sampler hostile_chatty_admission)

with_hostile=0
cargo_args=()
for arg in "$@"; do
    case "$arg" in
        --hostile) with_hostile=1 ;;
        -h|--help) sed -n '2,5p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) cargo_args+=("$arg") ;;
    esac
done

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target"
fi

packages=()
for p in "${examples[@]}"; do packages+=(-p "$p"); done
if [[ $with_hostile == 1 ]]; then
    for p in "${hostile[@]}"; do packages+=(-p "$p"); done
fi

cargo build --manifest-path "$here/Cargo.toml" --target "$target" --release \
    "${packages[@]}" ${cargo_args[@]+"${cargo_args[@]}"}

out="$here/target/$target/release"
for p in "${examples[@]}"; do
    cp "$out/$p.wasm" "$here/$p.wasm"
    echo "built plugins/$p.wasm ($(wc -c < "$here/$p.wasm") bytes)"
done
if [[ $with_hostile == 1 ]]; then
    mkdir -p "$here/target/hostile"
    for p in "${hostile[@]}"; do
        cp "$out/$p.wasm" "$here/target/hostile/$p.wasm"
        echo "built plugins/target/hostile/$p.wasm ($(wc -c < "$here/target/hostile/$p.wasm") bytes)"
    done
fi

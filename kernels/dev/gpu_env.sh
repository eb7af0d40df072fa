# The GPU machine's environment for the kernels/*.sh scripts (sourced): the carried binary,
# the tokenizer, output and work folders, the kernel cache, and the CUDA 13 libraries as the
# PyTorch wheels ship them (nvidia/cu13/lib, nvidia/*/lib, torch/lib).
BIN=${BIN:-.bin/mlahost}
TOKENIZER_DIR=${TOKENIZER_DIR:-.bin/tokenizer}
OUT=${OUT:-/tmp/mlahost-gpu}
WORK=${WORK:-/tmp/mlahost-work}
mkdir -p "$OUT" "$WORK"
export MLAHOST_KERNEL_CACHE="$WORK/kernel-cache"
export LD_LIBRARY_PATH="$(python3 - <<'PY'
import glob, os
import nvidia, torch
dirs = []
for root in nvidia.__path__:
    dirs += glob.glob(os.path.join(root, "*", "lib")) + glob.glob(os.path.join(root, "cu*", "lib"))
dirs.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
print(":".join(d for d in dirs if os.path.isdir(d)))
PY
):${LD_LIBRARY_PATH:-}"

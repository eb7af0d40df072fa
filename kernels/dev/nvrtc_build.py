"""Compile a kernel family (default kernels/cuda/mla_decode.cu) with NVRTC (no GPU needed) and
report resources.

Usage: [SRC=kernels/cuda/fp8_skinny.cu] python3 kernels/dev/nvrtc_build.py [arch] [out.cubin]
Needs the `cuda-bindings` Python package (NVRTC) and, for the SASS summary, a cuobjdump on PATH
or in triton's bundled bin/ folder.
"""
import glob
import os
import subprocess
import sys

from cuda.bindings import nvrtc

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SRC", os.path.join(HERE, "..", "cuda", "mla_decode.cu"))


def compile_cubin(arch="sm_90a"):
    src = open(SRC, "rb").read()
    err, prog = nvrtc.nvrtcCreateProgram(src, os.path.basename(SRC).encode(), 0, [], [])
    opts = [b"--std=c++17", f"-arch={arch}".encode(), b"--ptxas-options=-v", f"--include-path={os.path.dirname(SRC)}".encode()]
    opts += [o.encode() for o in os.environ.get("MLA_DEFINES", "").split()]  # experiments
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, n = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * n
    nvrtc.nvrtcGetProgramLog(prog, log)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        print(log.decode())
        raise SystemExit(f"NVRTC failed: {err}")
    _, n = nvrtc.nvrtcGetCUBINSize(prog)
    cub = b" " * n
    nvrtc.nvrtcGetCUBIN(prog, cub)
    return cub, log.decode()


def main():
    arch = sys.argv[1] if len(sys.argv) > 1 else "sm_90a"
    out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/" + os.path.basename(SRC).replace(".cu", ".cubin")
    cub, log = compile_cubin(arch)
    open(out, "wb").write(cub)
    for line in log.splitlines():
        if any(k in line for k in ("Compiling entry", "registers", "spill", "warning", "error")):
            print(line)
    tools = glob.glob(os.path.join(os.path.dirname(sys.executable), "..", "lib", "python3*",
                                   "site-packages", "triton", "backends", "nvidia", "bin", "cuobjdump"))
    cuobjdump = tools[0] if tools else "cuobjdump"
    try:
        sass = subprocess.run([cuobjdump, "--dump-sass", out], capture_output=True, text=True).stdout
        cur = None
        counts = {}
        for line in sass.splitlines():
            if "Function :" in line:
                cur = line.split(":")[1].strip()
                counts[cur] = {}
            elif cur:
                for op in ("HGMMA", "HMMA", "LDSM", "LDGSTS", "LDL", "STL", "BAR"):
                    if f" {op}" in line:
                        counts[cur][op] = counts[cur].get(op, 0) + 1
        for k, v in counts.items():
            print(k, v)
    except FileNotFoundError:
        print("(no cuobjdump: skipped SASS summary)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Convert a hub-format checkpoint to a bf16 GGUF with llama.cpp's own converter.

    python3 examples/bench/convert_gguf.py --llama-cpp LLAMA_CPP_SOURCE --model /tmp/bench-ckpt \
        --out /tmp/bench-ckpt.bf16.gguf

Runs LLAMA_CPP_SOURCE/convert_hf_to_gguf.py (with its own gguf-py) as `--outtype bf16`. A
converter identifies the BPE pre-tokenizer by hashing the installed tokenizer library's encoding
of a test string; when the library is newer than the release and the hash is not in its table,
the pre-tokenizer is named here instead (`--pre`, default `deepseek-v3`: the tokenizer the bench
checkpoints ship). Tokenization plays no part in the decode benchmark.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True, type=Path, help="llama.cpp source tree (a release)")
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--pre", default="deepseek-v3", help="pre-tokenizer name when the hash is unknown")
    args = ap.parse_args()

    sys.path.insert(0, str(args.llama_cpp / "gguf-py"))
    sys.path.insert(0, str(args.llama_cpp))
    import convert_hf_to_gguf as conv  # noqa: E402  (llama.cpp's converter)

    base = getattr(conv, "Model", None) or getattr(conv, "TextModel")
    known = base.get_vocab_base_pre

    def vocab_base_pre(self, tokenizer) -> str:
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            print(f"convert_gguf: pre-tokenizer hash unknown to this release; naming it {args.pre!r}")
            return args.pre

    base.get_vocab_base_pre = vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", str(args.model), "--outtype", "bf16", "--outfile", str(args.out)]
    conv.main()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Put a trained checkpoint back together from what train.py --return-dir copied out of the GPU
machine, and check it.

    python3 examples/train/assemble.py RETURN_DIR DEST [--data .train/data]

Joins model.safetensors.part0, part1, ... into DEST/model.safetensors, checks its SHA-256
against result.json, and writes beside it config.json (from result.json), generation_config.json
and the tokenizer files (from --data, the ones the run was trained with).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("return_dir", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--data", type=Path, default=Path(".train/data"))
    args = ap.parse_args()
    result = json.loads((args.return_dir / "result.json").read_text())
    parts = sorted(args.return_dir.glob("model.safetensors.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    weights = b"".join(p.read_bytes() for p in parts)
    digest = hashlib.sha256(weights).hexdigest()
    assert digest == result["model_safetensors_sha256"], f"SHA-256 {digest} does not match result.json"
    args.dest.mkdir(parents=True, exist_ok=True)
    (args.dest / "model.safetensors").write_bytes(weights)
    (args.dest / "config.json").write_text(json.dumps(result["config"], indent=2) + "\n")
    (args.dest / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 0, "eos_token_id": 1, "do_sample": False}, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (args.dest / name).write_bytes((args.data / name).read_bytes())
    print(f"{args.dest}: {len(parts)} parts, {len(weights):,} bytes, sha256 {digest[:16]}..., "
          f"held-out perplexity {result['heldout_perplexity']:.2f} (unigram {result['unigram_perplexity']:.2f})")


if __name__ == "__main__":
    main()

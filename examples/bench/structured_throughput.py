#!/usr/bin/env python3
"""CPU decode throughput with 0%, 50% and 100% of a batch of 64 requests constrained by the
built-in grammar plugin (prints figures; not a test).

Every request generates exactly --tokens tokens: unconstrained ones ignore EOS, constrained ones
follow a regex far longer than the budget (lowercase words), so each of their steps takes a
mask from the plugin.

    mlahost serve --port 8000 &          # the built-in random-weight model, or --model DIR
    python3 examples/bench/structured_throughput.py --base-url http://127.0.0.1:8000
"""

import argparse
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def post(base, body):
    req = urllib.request.Request(base + "/v1/completions", json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def run(base, batch, constrained, tokens):
    bodies = []
    for i in range(batch):
        b = {"prompt": f"Request {i} says", "max_tokens": tokens, "temperature": 1.0, "seed": i, "ignore_eos": True}
        if i < constrained:
            b["guided_regex"] = "[a-z ]{%d}" % (tokens * 64)
        bodies.append(b)
    started = time.perf_counter()
    with ThreadPoolExecutor(batch) as pool:
        results = list(pool.map(lambda b: post(base, b), bodies))
    wall = time.perf_counter() - started
    generated = sum(r["usage"]["completion_tokens"] for r in results)
    return generated, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    run(args.base_url, 8, 4, 8)  # warm-up: the constraint is compiled once and cached
    print(f"batch {args.batch}, {args.tokens} tokens each")
    base_tps = None
    for share in (0.0, 0.5, 1.0):
        n = int(args.batch * share)
        generated, wall = run(args.base_url, args.batch, n, args.tokens)
        tps = generated / wall
        base_tps = base_tps or tps
        print(f"{int(share * 100):>3}% constrained: {generated} tokens in {wall:.2f} s = {tps:.0f} tok/s ({tps / base_tps:.2f}x the unconstrained)")


if __name__ == "__main__":
    main()

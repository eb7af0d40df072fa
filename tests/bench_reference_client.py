#!/usr/bin/env python3
"""An independent timing client for checking `mlahost bench`: the official openai package,
one thread per concurrent request, a timestamp on every streamed chunk.

    python3 tests/bench_reference_client.py --base-url URL/v1 --model M --prompts FILE.jsonl \
        --max-tokens N --concurrency C
Prints one JSON object: requests, output_tokens, and mean ttft/tpot/e2e in milliseconds.
"""

import argparse
import json
import statistics
import threading
import time

import openai


def one(client, model, prompt, max_tokens):
    """One streamed request. The raw streaming response of the openai package is read line by
    line (json.loads per event), so per-chunk client overhead stays small."""
    start = time.perf_counter()
    first = None
    tokens = 0
    with client.completions.with_streaming_response.create(
            model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}) as response:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            choices = event.get("choices") or []
            if choices and choices[0].get("text") and first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return {"ttft": first - start, "e2e": end - start, "tokens": tokens,
            "tpot": (end - first) / (tokens - 1) if tokens > 1 else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--max-tokens", type=int, required=True)
    ap.add_argument("--concurrency", type=int, required=True)
    args = ap.parse_args()
    prompts = [json.loads(line)["prompt"] for line in open(args.prompts) if line.strip()]
    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=120)
    one(client, args.model, prompts[0], 2)  # warm-up: connection and client set-up, not timed
    results, lock, queue = [], threading.Lock(), list(prompts)

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                p = queue.pop(0)
            r = one(client, args.model, p, args.max_tokens)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = lambda xs: 1e3 * statistics.mean(xs)
    print(json.dumps({
        "requests": len(results),
        "output_tokens": sum(r["tokens"] for r in results),
        "ttft_ms": ms([r["ttft"] for r in results]),
        "tpot_ms": ms([r["tpot"] for r in results if r["tpot"] is not None]),
        "e2e_ms": ms([r["e2e"] for r in results]),
    }))


if __name__ == "__main__":
    main()

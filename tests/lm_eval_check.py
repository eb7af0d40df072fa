#!/usr/bin/env python3
"""lm-evaluation-harness against mlahost: a multiple-choice task made from local JSON
(tests/fixtures/lm-eval-mc/data.jsonl), run with lm-eval's `local-completions` model (echo +
logprobs requests) against a running server on the tiny fixture, compared with Hugging Face
transformers on the same token ids.

    python3 tests/lm_eval_check.py --base-url http://127.0.0.1:8000 --model tiny-v2-lite
    python3 tests/lm_eval_check.py --make-golden      # needs torch; rewrites golden.json
    python3 tests/lm_eval_check.py --direct --base-url URL --tolerance-per-token 0.05

`--direct` sends the requests lm-eval's `local-completions` sends (the stored token ids, `echo`,
`logprobs: 1`, `max_tokens: 0`) with the standard library only and scores them as lm-eval does:
for a machine without lm-eval (the GPU machine), after the full check has passed on the CPU.

The goldens (per request: lm-eval's context and continuation token ids, transformers'
loglikelihood and is_greedy; and the accuracy) are computed by transformers from
`from_pretrained(fixture, dtype=float32)` and stored, as the fixtures' other goldens are; the
check needs lm-eval and the tokenizer only. It also re-encodes every request with lm-eval's own
tokenization and asserts the ids are the stored ones, so both sides score the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent
FIXTURE = ROOT / "fixtures" / "tiny-v2-lite"
TASK_DIR = ROOT / "fixtures" / "lm-eval-mc"
GOLDEN = TASK_DIR / "golden.json"
TASK = "mlahost_mc"
# Per token: the CPU engine and transformers agree to about 1e-6 on this fixture.
TOLERANCE_PER_TOKEN = 1e-4


def task_manager(tmp: Path):
    from lm_eval.tasks import TaskManager

    (tmp / "mlahost_mc.yaml").write_text(
        f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {TASK_DIR / 'data.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_target: gold
doc_to_choice: choices
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
    )
    return TaskManager(include_path=str(tmp))


def lm_eval_model(base_url: str, model: str):
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    return LocalCompletionsAPI(
        base_url=f"{base_url}/v1/completions",
        model=model,
        tokenizer=str(FIXTURE),
        tokenizer_backend="huggingface",
        tokenized_requests=True,
        num_concurrent=1,
        max_retries=1,
        batch_size=4,
    )


def requests_of(tm) -> list[tuple[int, str, str]]:
    """(doc id, context, continuation) of every loglikelihood request, in task order."""
    from lm_eval.tasks import get_task_dict

    task = get_task_dict([TASK], tm)[TASK]
    task.build_all_requests(limit=None, rank=0, world_size=1)
    return [(inst.doc_id, inst.args[0], inst.args[1]) for inst in task.instances]


def make_golden() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory() as tmp:
        tm = task_manager(Path(tmp))
        lm = lm_eval_model("http://unused", "unused")
        reqs = requests_of(tm)
    model = AutoModelForCausalLM.from_pretrained(str(FIXTURE), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    out = []
    for doc, ctx, cont in reqs:
        ctx_ids, cont_ids = lm._encode_pair(ctx, cont)
        ids = torch.tensor([ctx_ids + cont_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        lp = torch.log_softmax(logits, dim=-1)
        positions = range(len(ctx_ids) - 1, len(ctx_ids) + len(cont_ids) - 1)
        token_lps = [float(lp[p, t]) for p, t in zip(positions, cont_ids)]
        greedy = all(int(lp[p].argmax()) == t for p, t in zip(positions, cont_ids))
        out.append({"doc": doc, "context": ctx, "continuation": cont, "context_ids": ctx_ids, "continuation_ids": cont_ids,
                    "loglikelihood": sum(token_lps), "is_greedy": greedy})
    docs = [json.loads(line) for line in (TASK_DIR / "data.jsonl").read_text().splitlines()]
    acc = accuracy(docs, out, lambda r: r["loglikelihood"])
    GOLDEN.write_text(json.dumps({
        "computed_with": "transformers AutoModelForCausalLM.from_pretrained(tiny-v2-lite, dtype=float32, attn_implementation='eager'); "
                         "log_softmax in float64; token ids from lm-eval's LocalCompletionsAPI._encode_pair with the fixture's tokenizer",
        "transformers": __import__("transformers").__version__,
        "accuracy": acc,
        "requests": out,
    }, indent=1) + "\n")
    print(f"wrote {GOLDEN} ({len(out)} requests, accuracy {acc})")


def accuracy(docs, results, ll) -> float:
    by_doc: dict[int, list[float]] = {}
    for r in results:
        by_doc.setdefault(r["doc"], []).append(ll(r))
    right = sum(1 for d, lls in by_doc.items() if max(range(len(lls)), key=lambda i: lls[i]) == docs[d]["gold"])
    return right / len(docs)


def check(base_url: str, model: str, tolerance: float) -> int:
    import lm_eval

    golden = json.loads(GOLDEN.read_text())
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        tm = task_manager(Path(tmp))
        lm = lm_eval_model(base_url, model)
        # The same token ids: lm-eval's tokenization of every request is the stored one.
        for (doc, ctx, cont), g in zip(requests_of(tm), golden["requests"], strict=True):
            if (doc, ctx, cont) != (g["doc"], g["context"], g["continuation"]) or list(lm._encode_pair(ctx, cont)) != [g["context_ids"], g["continuation_ids"]]:
                failures.append(f"request {doc}/{cont!r} is not tokenized as in the golden")
        results = lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=tm, log_samples=True, num_fewshot=0)
    samples = results["samples"][TASK]
    by_key = {(g["doc"], g["continuation"]): g for g in golden["requests"]}
    seen = 0
    for s in samples:
        for arg, resp in zip(s["arguments"], s["resps"]):
            ctx, cont = arg[0], arg[1]
            ll, greedy = resp[0]
            g = by_key[(s["doc_id"], cont)]
            seen += 1
            n = len(g["continuation_ids"])
            if abs(ll - g["loglikelihood"]) > tolerance * n:
                failures.append(f"doc {s['doc_id']} {cont!r}: lm-eval {ll:.6f}, transformers {g['loglikelihood']:.6f}")
            if bool(greedy) != g["is_greedy"]:
                failures.append(f"doc {s['doc_id']} {cont!r}: is_greedy {greedy}, transformers {g['is_greedy']}")
            print(f"doc {s['doc_id']} {cont!r:16} lm-eval {ll:12.6f}  transformers {g['loglikelihood']:12.6f}")
    if seen != len(golden["requests"]):
        failures.append(f"lm-eval scored {seen} requests, the golden has {len(golden['requests'])}")
    return report("lm-eval", results["results"][TASK]["acc,none"], golden, seen, failures)


def report(who: str, acc: float, golden: dict, requests: int, failures: list) -> int:
    """Prints the accuracy beside transformers' and every failure; the exit status."""
    print(f"accuracy: {who} {acc}, transformers {golden['accuracy']}")
    if abs(acc - golden["accuracy"]) > 1e-9:
        failures.append(f"accuracy {acc} != {golden['accuracy']}")
    for f in failures:
        print("FAIL:", f)
    print(f"{who} check: {requests} requests, {len(failures)} failures")
    return 1 if failures else 0


def direct_check(base_url: str, model: str, tolerance: float) -> int:
    import urllib.request

    golden = json.loads(GOLDEN.read_text())
    failures, results = [], []
    for g in golden["requests"]:
        ids = g["context_ids"] + g["continuation_ids"]
        body = json.dumps({"model": model, "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0}).encode()
        req = urllib.request.Request(f"{base_url}/v1/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            lp = json.load(r)["choices"][0]["logprobs"]
        n_ctx = len(g["context_ids"])
        tokens, tops = lp["token_logprobs"][n_ctx:], lp["top_logprobs"][n_ctx:]
        if len(tokens) != len(g["continuation_ids"]) or len(lp["token_logprobs"]) != len(ids):
            failures.append(f"doc {g['doc']} {g['continuation']!r}: {len(lp['token_logprobs'])} echoed logprobs for {len(ids)} tokens")
            continue
        ll = sum(tokens)
        # lm-eval's is_greedy: each continuation token is its position's top-1 alternative.
        greedy = all(max(top.values()) <= tok + 1e-6 for tok, top in zip(tokens, tops))
        results.append(dict(g, loglikelihood=ll))
        if abs(ll - g["loglikelihood"]) > tolerance * len(tokens):
            failures.append(f"doc {g['doc']} {g['continuation']!r}: server {ll:.6f}, transformers {g['loglikelihood']:.6f}")
        if greedy != g["is_greedy"]:
            failures.append(f"doc {g['doc']} {g['continuation']!r}: is_greedy {greedy}, transformers {g['is_greedy']}")
        print(f"doc {g['doc']} {g['continuation']!r:16} server {ll:12.6f}  transformers {g['loglikelihood']:12.6f}")
    docs = [json.loads(line) for line in (TASK_DIR / "data.jsonl").read_text().splitlines()]
    return report("server", accuracy(docs, results, lambda r: r["loglikelihood"]), golden, len(results), failures)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default="tiny-v2-lite")
    p.add_argument("--make-golden", action="store_true")
    p.add_argument("--direct", action="store_true", help="the same requests without lm-eval (standard library only)")
    p.add_argument("--tolerance-per-token", type=float, default=TOLERANCE_PER_TOKEN,
                   help="loglikelihood tolerance per continuation token (a bf16 GPU server needs more than the CPU's)")
    a = p.parse_args()
    if a.make_golden:
        make_golden()
        return 0
    if a.direct:
        return direct_check(a.base_url, a.model, a.tolerance_per_token)
    return check(a.base_url, a.model, a.tolerance_per_token)


if __name__ == "__main__":
    sys.exit(main())

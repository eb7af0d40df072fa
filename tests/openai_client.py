#!/usr/bin/env python3
"""The official `openai` package against a running mlahost (started by the Rust test
host/cli/tests/openai_python.rs): completions, chat, streaming with usage, logprobs.

    python3 tests/openai_client.py --base-url http://127.0.0.1:8000/v1 --model tiny-v2-lite
"""

import argparse
import sys

import openai


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=60)
    model = args.model
    checks = []

    def check(name, cond, detail=""):
        checks.append((name, bool(cond)))
        print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"))

    models = client.models.list()
    check("models lists the served model", [m.id for m in models.data] == [model], models)

    c = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=8, temperature=0,
                                  logprobs=3, extra_body={"ignore_eos": True})
    ch = c.choices[0]
    check("completion text", isinstance(ch.text, str) and c.usage.completion_tokens == 8, c)
    check("completion logprobs", len(ch.logprobs.token_logprobs) == 8 and len(ch.logprobs.top_logprobs[0]) >= 1
          and all(lp <= 0 for lp in ch.logprobs.token_logprobs), ch.logprobs)
    check("completion finish_reason", ch.finish_reason == "length", ch.finish_reason)

    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello!"}],
                                       max_tokens=6, temperature=0, logprobs=True, top_logprobs=2,
                                       extra_body={"ignore_eos": True})
    msg = r.choices[0].message
    check("chat message", msg.role == "assistant" and isinstance(msg.content, str), r)
    lps = r.choices[0].logprobs.content
    check("chat logprobs", len(lps) == 6 and len(lps[0].top_logprobs) == 2 and lps[0].logprob <= 0, lps)

    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello!"}],
                                            max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check("streamed chat equals the non-streamed one", text == msg.content, (text, msg.content))
    check("stream usage", usage is not None and usage.completion_tokens == 6, usage)
    check("stream finish_reason", finish == "length", finish)

    pieces = []
    for chunk in client.completions.create(model=model, prompt="The quick brown fox", max_tokens=8,
                                           temperature=0, stream=True, extra_body={"ignore_eos": True}):
        pieces.extend(ch.text for ch in chunk.choices)
    check("streamed completion equals the non-streamed one", "".join(pieces) == ch.text, (pieces, ch.text))

    try:
        client.completions.create(model=model, prompt="hi", temperature=-3)
        check("bad temperature is a 400", False, "no error")
    except openai.BadRequestError as e:
        check("bad temperature is a 400", e.status_code == 400 and "temperature" in str(e), e)
    try:
        client.completions.create(model="no-such-model", prompt="hi")
        check("unknown model is a 404", False, "no error")
    except openai.NotFoundError as e:
        check("unknown model is a 404", e.status_code == 404, e)

    failed = sum(1 for _, ok in checks if not ok)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Structured outputs against a running mlahost on its random-weight model (started by the Rust
test host/cli/tests/structured_outputs.rs): 50 generated nested JSON schemas validated with
`jsonschema`, streaming and not; regex and choice; invalid schemas; the `openai` package's
`beta.chat.completions.parse` with a pydantic model; unconstrained requests unchanged by
constrained neighbours in the same batch.

    python3 tests/structured_outputs.py --base-url http://127.0.0.1:8000 --model tiny-v2-lite
    python3 tests/structured_outputs.py --base-url URL --model M --stdlib-only

`--stdlib-only` (for the GPU machine, which has no jsonschema, openai or pydantic) skips the
openai-package checks and checks the schema outputs parse as JSON of the schema's top-level type;
the full run validates them, in CI.
"""

import argparse
import json
import random
import re
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import List, Literal

try:
    import jsonschema
    import openai
    import pydantic
except ImportError:  # --stdlib-only
    jsonschema = openai = pydantic = None

checks = []


def check(name, cond, detail=""):
    checks.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)


def post(base, path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stream_text(base, path, body):
    """Concatenated text (completions) or content (chat) of an SSE stream, and the finish reason."""
    status, raw = post(base, path, dict(body, stream=True))
    assert status == 200, raw
    text, finish = "", None
    for line in raw.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for ch in json.loads(line[6:]).get("choices", []):
            text += ch.get("text") or (ch.get("delta") or {}).get("content") or ""
            finish = ch.get("finish_reason") or finish
    return text, finish


def validate(value, schema):
    """jsonschema's validation; without the package, the top-level type only (--stdlib-only)."""
    if jsonschema is not None:
        jsonschema.validate(value, schema)
    elif schema.get("type") == "object" and not isinstance(value, dict):
        raise ValueError(f"not an object: {value!r}")


def random_schema(rng, depth=0):
    """A nested schema whose every instance is short (bounded strings, arrays and integers;
    no extra keys), so a random model finishes it within the token budget."""
    kinds = ["integer", "boolean", "enum", "string", "anyof"] + (["object", "array"] * 2 if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "integer":
        lo = rng.randint(-50, 50)
        return {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(0, 500)}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", "cyan", 7, True, None], rng.randint(1, 4))}
    if kind == "string":
        return {"type": "string", "minLength": rng.randint(0, 2), "maxLength": rng.randint(3, 8)}
    if kind == "anyof":
        return {"anyOf": [random_schema(rng, depth + 1) for _ in range(rng.randint(2, 3))]}
    if kind == "array":
        lo = rng.randint(0, 2)
        return {"type": "array", "items": random_schema(rng, depth + 1), "minItems": lo, "maxItems": lo + rng.randint(0, 2)}
    names = rng.sample(["id", "name", "tags", "size", "ok", "meta", "kind", "items", "x", "y"], rng.randint(1, 4))
    props = {n: random_schema(rng, depth + 1) for n in names}
    required = sorted(rng.sample(names, rng.randint(1, len(names))))
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def nested_schema(rng):
    while True:
        s = random_schema(rng)
        if s.get("type") == "object":
            return s


def json_schema_checks(base, model):
    rng = random.Random(24)
    schemas = [nested_schema(rng) for _ in range(50)]
    check("50 distinct schemas", len({json.dumps(s, sort_keys=True) for s in schemas}) == 50)

    def one(i):
        s = schemas[i]
        body = {"model": model, "prompt": f"Item {i}:", "max_tokens": 600, "temperature": 1.0, "seed": i,
                "response_format": {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": s, "strict": True}}}
        status, raw = post(base, "/v1/completions", body)
        if status != 200:
            return f"status {status}: {raw}"
        ch = json.loads(raw)["choices"][0]
        if ch["finish_reason"] != "stop":
            return f"finish {ch['finish_reason']}: {ch['text']!r}"
        try:
            validate(json.loads(ch["text"]), s)
        except Exception as e:  # noqa: BLE001 - any parse or validation error is the failure
            return f"{e}: {ch['text']!r}"
        text, finish = stream_text(base, "/v1/completions", body)
        if text != ch["text"] or finish != "stop":
            return f"stream differs: {text!r} vs {ch['text']!r} ({finish})"
        return None

    with ThreadPoolExecutor(16) as pool:
        errors = [(i, e) for i, e in enumerate(pool.map(one, range(50))) if e]
    check("50 nested schemas: every output validates, streaming and not", not errors, errors[:3])

    # Chat, through vLLM's field, streamed.
    s = schemas[0]
    body = {"model": model, "messages": [{"role": "user", "content": "JSON please"}], "max_tokens": 600, "seed": 3,
            "structured_outputs": {"json": s}}
    text, finish = stream_text(base, "/v1/chat/completions", body)
    ok = finish == "stop"
    try:
        validate(json.loads(text), s)
    except Exception:  # noqa: BLE001
        ok = False
    check("chat structured_outputs.json streams valid JSON", ok, (finish, text))


def regex_and_choice_checks(base, model):
    pattern = r"[a-z]{2,5}-[0-9]{3}( [A-Z])?"
    outs = []
    for seed in range(8):
        status, raw = post(base, "/v1/completions", {"model": model, "prompt": "code:", "max_tokens": 40, "seed": seed,
                                                       "guided_regex": pattern})
        outs.append((status, json.loads(raw)["choices"][0]["text"] if status == 200 else raw))
    check("guided_regex holds", all(s == 200 and re.fullmatch(pattern, t) for s, t in outs), outs)
    choices = ["yes", "no", "maybe (later)"]
    got = set()
    for seed in range(12):
        status, raw = post(base, "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "?"}],
                                                            "max_tokens": 20, "seed": seed, "guided_choice": choices})
        got.add(json.loads(raw)["choices"][0]["message"]["content"] if status == 200 else raw)
    check("guided_choice holds", got <= set(choices) and got, got)
    status, raw = post(base, "/v1/completions", {"model": model, "prompt": "x", "max_tokens": 40, "seed": 1,
                                                 "structured_outputs": {"grammar": 'start: "(" num ("," num)* ")"\nnum: /[0-9]{1,2}/'}})
    text = json.loads(raw)["choices"][0]["text"] if status == 200 else raw
    check("a Lark grammar holds", re.fullmatch(r"\([0-9]{1,2}(,[0-9]{1,2})*\)", text) is not None, text)


def invalid_checks(base, model):
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/missing"}}}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
        ({"guided_regex": "(unclosed"}, "guided_regex"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ]
    bad = []
    for extra, param in cases:
        status, raw = post(base, "/v1/completions", dict({"model": model, "prompt": "x", "max_tokens": 4}, **extra))
        err = json.loads(raw).get("error", {}) if raw.startswith("{") else {}
        if status != 400 or err.get("param") != param:
            bad.append((extra, status, raw))
    check("invalid constraints are 400s naming the field", not bad, bad)


def openai_parse_checks(base, model):
    class Pet(pydantic.BaseModel):
        kind: Literal["cat", "dog", "fish"]
        age: pydantic.conint(ge=0, le=30)
        vaccinated: bool
        toys: List[Literal["ball", "rope"]] = pydantic.Field(max_length=2)

    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
    ok, detail = True, []
    for seed in range(3):
        r = client.beta.chat.completions.parse(model=model, messages=[{"role": "user", "content": "A pet?"}],
                                               response_format=Pet, max_tokens=300, seed=seed)
        parsed = r.choices[0].message.parsed
        detail.append(r.choices[0].message.content)
        ok &= isinstance(parsed, Pet) and Pet.model_validate_json(r.choices[0].message.content) == parsed
    check("openai beta.chat.completions.parse round-trips a pydantic model", ok, detail)


WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Tokyo", "Lima"]},
                                           "days": {"type": "integer", "minimum": 1, "maximum": 7},
                                           "units": {"enum": ["C", "F"]}},
           "required": ["city", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "parameters": {
             "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                              "b": {"type": "integer", "minimum": 0, "maximum": 99}},
             "required": ["a", "b"], "additionalProperties": False}}}]


def tool_checks(base, model):
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    msgs = [{"role": "user", "content": "Weather in Paris for 3 days?"}]
    problems, streamed_same = [], True
    for seed in range(6):
        choice = "required" if seed % 2 == 0 else {"type": "function", "function": {"name": "add"}}
        r = client.chat.completions.create(model=model, messages=msgs, tools=TOOLS, tool_choice=choice,
                                           max_tokens=300, seed=seed)
        c = r.choices[0]
        calls = c.message.tool_calls or []
        if c.finish_reason != "tool_calls" or not calls:
            problems.append((seed, c.finish_reason, c.message))
            continue
        for call in calls:
            try:
                jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
            except Exception as e:  # noqa: BLE001
                problems.append((seed, str(e), call))
        if isinstance(choice, dict) and [x.function.name for x in calls] != ["add"]:
            problems.append((seed, "named choice not honoured", calls))
        # The same request streamed: deltas reassembled the way OpenAI clients do.
        acc, finish = {}, None
        for chunk in client.chat.completions.create(model=model, messages=msgs, tools=TOOLS, tool_choice=choice,
                                                    max_tokens=300, seed=seed, stream=True):
            for ch in chunk.choices:
                finish = ch.finish_reason or finish
                for d in ch.delta.tool_calls or []:
                    slot = acc.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                    slot["id"] = d.id or slot["id"]
                    if d.function is not None:
                        slot["name"] += d.function.name or ""
                        slot["arguments"] += d.function.arguments or ""
        # Call ids are per response; each streamed call must have one.
        got = [(acc[k]["name"], acc[k]["arguments"], bool(acc[k]["id"])) for k in sorted(acc)]
        want = [(x.function.name, x.function.arguments, True) for x in calls]
        streamed_same &= got == want and finish == "tool_calls"
        if got != want:
            problems.append((seed, "stream", got, want))
    check("tool_choice required/named yields tool_calls whose arguments validate", not problems, problems[:2])
    check("streamed tool_call deltas reassemble to the same calls", streamed_same, problems[:2])
    status, raw = post(base, "/v1/chat/completions", {"model": model, "messages": msgs, "tools": TOOLS,
                                                      "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    check("a tool_choice naming an unknown function is a 400", status == 400 and json.loads(raw)["error"]["param"] == "tool_choice", raw)


def batch_independence_checks(base, model):
    def plain(i):
        return {"model": model, "prompt": f"Plain {i} text", "max_tokens": 24, "seed": 100 + i, "temperature": 1.0,
                "ignore_eos": True, "logprobs": 0, "return_tokens_as_token_ids": True}

    def tokens(raw):
        return json.loads(raw)["choices"][0]["logprobs"]["tokens"]

    alone = [tokens(post(base, "/v1/completions", plain(i))[1]) for i in range(4)]
    constrained = [{"model": model, "prompt": f"C{i}", "max_tokens": 200, "seed": i,
                    "guided_json": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 6}}
                   for i in range(8)]
    with ThreadPoolExecutor(12) as pool:
        mixed = list(pool.map(lambda b: post(base, "/v1/completions", b), constrained[:4] + [plain(i) for i in range(4)] + constrained[4:]))
    together = [tokens(raw) for _, raw in mixed[4:8]]
    check("unconstrained requests are token-identical beside constrained ones", together == alone, (together, alone))
    check("their constrained neighbours succeeded", all(s == 200 for s, _ in mixed), [r for s, r in mixed if s != 200][:2])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True, help="the server, without /v1")
    ap.add_argument("--model", required=True)
    ap.add_argument("--stdlib-only", action="store_true", help="no jsonschema/openai/pydantic: skip the client checks")
    args = ap.parse_args()
    if not args.stdlib_only and jsonschema is None:
        print("jsonschema, openai and pydantic are needed (or pass --stdlib-only)")
        return 1
    base = args.base_url.rstrip("/")
    json_schema_checks(base, args.model)
    regex_and_choice_checks(base, args.model)
    invalid_checks(base, args.model)
    if not args.stdlib_only:
        openai_parse_checks(base, args.model)
        tool_checks(base, args.model)
    batch_independence_checks(base, args.model)
    failed = sum(1 for _, ok in checks if not ok)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer on the corpus and encode the corpus into token ids.

    python3 examples/train/tokenize_corpus.py [--work .train] [--vocab 8192]

Reads WORK/corpus/{train,heldout}.jsonl (from corpus.py) and writes WORK/data/:
  tokenizer.json, tokenizer_config.json   hub format, with the chat template
  train.bin, heldout.bin                   little-endian uint16 ids; each document is
                                           BOS + text + EOS, documents back to back
  data.json                                counts (tokens, documents, UTF-8 bytes per split)
  prompts.json                             sample prompts as token ids, for the run's report

The tokenizer is trained on the train split only. Everything the GPU run needs is in WORK/data,
so the GPU machine needs neither the tokenizers library nor the corpus text.
"""

from __future__ import annotations

import argparse
import json
import sys
from array import array
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
SPECIAL_TOKENS = [BOS, EOS, PAD]  # ids 0, 1, 2 as in DeepSeek's tokenizers

# DeepSeek-V2's pre-tokenizer (digits in runs of up to 3, CJK runs, then words, punctuation and
# whitespace), followed by byte-level mapping: the same pipeline mlahost's fixtures use.
SPLIT_DIGITS = r"\p{N}{1,3}"
SPLIT_CJK = "[一-龥\u3040-ゟ゠-ヿ]+"
SPLIT_MAIN = (
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    "|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*"
    "|\\s*[\r\n]+"
    "|\\s+(?!\\S)"
    "|\\s+"
)

# DeepSeek-V2-Lite-Chat's plain-text turns: "User: ...\n\nAssistant: ...<eos>". corpus.py writes
# its chat exchanges in exactly this form.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


# Prompts whose greedy completions the training run reports (pre-tokenized here, since the GPU
# machine may lack the tokenizers library). Chat prompts are rendered as CHAT_TEMPLATE does.
SAMPLE_PROMPTS = [
    "The quick brown fox",
    "Once upon a time",
    "Python is a programming language that",
    "A computer is",
    "The meaning of life is",
    "In the morning, the",
    "To open a file in Python,",
    "A hacker is",
]
SAMPLE_QUESTIONS = ['What does "ocean" mean?', 'What does "happiness" mean?']


def read_docs(path: Path) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["text"] for line in f]


def train_tokenizer(texts: list[str], vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_DIGITS), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(SPLIT_CJK), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(SPLIT_MAIN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # BOS comes from the post-processor, as in DeepSeek's tokenizer.json (transformers and mlahost
    # both take it from there).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    return tok


def tokenizer_config(model_max_length: int) -> dict:
    def added(content: str) -> dict:
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}

    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": added(BOS),
        "eos_token": added(EOS),
        "pad_token": added(EOS),
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": model_max_length,
        "sp_model_kwargs": {},
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def encode(tok: Tokenizer, texts: list[str], path: Path) -> int:
    """Writes BOS + ids + EOS per document as uint16; returns the token count."""
    eos = tok.token_to_id(EOS)
    out = array("H")
    batch = 2048
    for i in range(0, len(texts), batch):
        for enc in tok.encode_batch(texts[i:i + batch], add_special_tokens=True):
            out.extend(enc.ids)
            out.append(eos)
    if sys.byteorder != "little":
        out.byteswap()
    with open(path, "wb") as f:
        out.tofile(f)
    return len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(".train"))
    ap.add_argument("--vocab", type=int, default=8192, help="tokenizer size, special tokens included")
    ap.add_argument("--model-max-length", type=int, default=2048)
    args = ap.parse_args()
    assert args.vocab <= 65536, "ids are stored as uint16"
    corpus, out = args.work / "corpus", args.work / "data"
    out.mkdir(parents=True, exist_ok=True)
    splits = {s: read_docs(corpus / f"{s}.jsonl") for s in ("train", "heldout")}
    tok = train_tokenizer(splits["train"], args.vocab)
    tok.save(str(out / "tokenizer.json"))
    with open(out / "tokenizer_config.json", "w") as f:
        json.dump(tokenizer_config(args.model_max_length), f, indent=2, ensure_ascii=False)
        f.write("\n")
    meta = {"vocab_size": tok.get_vocab_size(), "bos_token_id": 0, "eos_token_id": 1, "dtype": "uint16-le"}
    for split, texts in splits.items():
        n = encode(tok, texts, out / f"{split}.bin")
        # UTF-8 bytes of the text (BOS/EOS excluded) so perplexity can also be given per byte.
        meta[split] = {"tokens": n, "documents": len(texts), "bytes": sum(len(t.encode()) for t in texts)}
        print(f"{split}: {len(texts)} docs, {n:,} tokens, {meta[split]['bytes'] / n:.2f} bytes/token", file=sys.stderr)
    prompts = [{"text": t, "ids": tok.encode(t, add_special_tokens=True).ids} for t in SAMPLE_PROMPTS]
    for q in SAMPLE_QUESTIONS:
        rendered = f"{BOS}User: {q}\n\nAssistant:"
        prompts.append({"text": rendered, "ids": tok.encode(rendered, add_special_tokens=False).ids})
    with open(out / "prompts.json", "w") as f:
        json.dump(prompts, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(out / "data.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

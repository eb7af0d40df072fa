#!/usr/bin/env python3
"""Build the English training corpus from freely licensed Debian packages.

    python3 examples/train/corpus.py [--work .train]

Downloads the packages of SOURCES with `apt-get download` (into WORK/debs), extracts the text
of each into documents, and writes WORK/corpus/{train,heldout}.jsonl (one JSON object a line:
{"source", "key", "text"}) plus WORK/corpus/manifest.json (package versions, sizes, counts).

The split is deterministic: a document goes to held-out when the SHA-256 of its key (a stable
name such as "python-doc:library/os.html#3") falls in the first HELDOUT_PERCENT of the range,
so the same packages always give the same split. Licenses: README.md beside this file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import html.parser
import json
import re
import subprocess
import textwrap
import sys
from pathlib import Path

HELDOUT_PERCENT = 2
# WordNet synsets and fortunes are tiny; they are grouped into documents of this many entries.
GROUP = 40
# A share of WordNet synsets becomes a chat exchange in the chat template's plain-text form, so
# the built-in chat template gets answers that fit it (each synset appears once either way).
CHAT_PERCENT = 35

SOURCES = {
    # name: (Debian package, license as stated in the package's copyright file)
    "python-doc": ("python3.11-doc", "PSF-2.0 (Python Software Foundation License Version 2)"),
    "wordnet": ("wordnet-base", "WordNet-3.0 (Princeton; permissive, BSD-like)"),
    "fortunes": ("fortunes", "BSD-3-Clause (fortune-mod data files)"),
    "jargon": ("jargon-text", "public domain (The Jargon File 4.4.7)"),
    "devil": ("dict-devil", "public domain (Ambrose Bierce, The Devil's Dictionary, 1911)"),
}


# --------------------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------------------


def fetch(package: str, debs: Path) -> tuple[Path, str]:
    """apt-get download the package (once) and extract it; returns (root, version)."""
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
    deb = found[-1]
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    root = debs / "x" / package
    if not root.exists():
        tmp = root.with_suffix(".tmp")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
    return root, version


# --------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------


def unwrap(paragraph: str) -> str:
    """Joins a hard-wrapped paragraph into one line; indented blocks (verse, code, tables)
    keep their line breaks."""
    lines = textwrap.dedent(paragraph).split("\n")
    if len(lines) > 1 and any(line.startswith((" ", "\t")) for line in lines[1:]):
        return "\n".join(line.rstrip() for line in lines)
    return " ".join(line.strip() for line in lines)


def paragraphs(text: str) -> list[str]:
    out = []
    for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        p = p.strip("\n")
        if p.strip():
            out.append(unwrap(p))
    return out


def groups(items: list[str], n: int, sep: str) -> list[str]:
    return [sep.join(items[i:i + n]) for i in range(0, len(items), n)]


def chat(question: str, answer: str) -> str:
    """An exchange as the chat template renders it (BOS/EOS are added at tokenization)."""
    return f"User: {question}\n\nAssistant: {answer}"


# --------------------------------------------------------------------------------------
# Sources: each yields (key, text) documents
# --------------------------------------------------------------------------------------


class _DocText(html.parser.HTMLParser):
    """Prose of a Sphinx page's main body: paragraphs, list items, definitions and headings;
    code blocks, permalinks and the navigation are left out."""

    BLOCKS = {"p", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "caption", "th", "td"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0  # <div> nesting inside the main body; 0 = outside
        self.skip = 0  # > 0 inside <pre>, a permalink or a script (nesting of skip_tag)
        self.skip_tag = ""
        self.blocks: list[str] = []
        self.cur: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.depth == 0:
            if tag == "div" and a.get("role") == "main":
                self.depth = 1
            return
        if tag == "div":
            self.depth += 1
        if self.skip:
            self.skip += tag == self.skip_tag  # nested tags of the skipped kind
            return
        if tag in ("pre", "script", "style") or (tag == "a" and "headerlink" in (a.get("class") or "")):
            self.skip, self.skip_tag = 1, tag
        if tag in self.BLOCKS:
            self.flush()

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if self.skip:
            self.skip -= tag == self.skip_tag
        elif tag in self.BLOCKS:
            self.flush()
        if tag == "div":
            self.depth -= 1
            if self.depth == 0:
                self.flush()

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.cur.append(data)

    def flush(self):
        text = re.sub(r"\s+", " ", "".join(self.cur)).strip()
        self.cur = []
        if text:
            self.blocks.append(text)


def python_doc(root: Path):
    base = root / "usr/share/doc/python3.11/html"
    skip_names = re.compile(r"^(genindex|py-modindex|search|contents|copyright|license|download|bugs)")
    for page in sorted(base.rglob("*.html")):
        rel = page.relative_to(base).as_posix()
        if rel.startswith(("_", "whatsnew/changelog")) or skip_names.match(page.name):
            continue
        parser = _DocText()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        parser.flush()
        # Keep blocks that read as prose: at least a few words, mostly letters.
        blocks = [b for b in parser.blocks if len(b.split()) >= 4 and sum(c.isalpha() for c in b) > 0.6 * len(b)]
        # Long pages become several documents, so the held-out split samples across pages.
        for i, doc in enumerate(groups(blocks, 60, "\n\n")):
            yield f"python-doc:{rel}#{i}", doc


_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def _wordnet_synsets(path: Path):
    """(lemmas, part of speech, gloss) of each synset of a WordNet data.* file."""
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  ") or " | " not in line:
            continue  # the license header
        head, gloss = line.split(" | ", 1)
        f = head.split()
        n_words = int(f[3], 16)
        lemmas = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        lemmas = [re.sub(r"\((a|p|ip)\)$", "", w) for w in lemmas]  # adjective position markers
        yield lemmas, _POS[f[2]], gloss.strip()


def _gloss_sentence(gloss: str) -> tuple[str, list[str]]:
    """Splits 'definition; "example one"; "example two"' into the definition and examples."""
    examples = re.findall(r'"([^"]+)"', gloss)
    definition = re.sub(r';?\s*"[^"]*"', "", gloss).strip(" ;")
    return definition, examples


def wordnet(root: Path):
    base = root / "usr/share/wordnet"
    for pos_file in ("data.noun", "data.verb", "data.adj", "data.adv"):
        entries = []
        for lemmas, pos, gloss in _wordnet_synsets(base / pos_file):
            definition, examples = _gloss_sentence(gloss)
            if not definition:
                continue
            head = lemmas[0]
            h = int(hashlib.sha256(f"{pos_file}:{head}:{definition}".encode()).hexdigest()[:8], 16)
            if h % 100 < CHAT_PERCENT:
                answer = f'"{head}" ({pos}) means {definition}.'
                if examples:
                    answer += f' For example: "{examples[0]}".'
                if len(lemmas) > 1:
                    answer += " Synonyms: " + ", ".join(lemmas[1:]) + "."
                yield f"wordnet:{pos_file}:chat:{head}:{h:08x}", chat(f'What does "{head}" mean?', answer)
                continue
            text = f"{', '.join(lemmas)} ({pos}): {definition}."
            if examples:
                text += " " + " ".join(f'"{e}".' if not e.endswith((".", "!", "?")) else f'"{e}"' for e in examples)
            entries.append(text)
        for i, doc in enumerate(groups(entries, GROUP, "\n")):
            yield f"wordnet:{pos_file}#{i}", doc


def fortunes(root: Path):
    base = root / "usr/share/games/fortunes"
    for path in sorted(base.iterdir()):
        if path.suffix or path.is_symlink() or not path.is_file():
            continue  # .dat indexes and .u8 duplicates
        text = path.read_text(encoding="utf-8", errors="replace")
        cookies = [c.strip("\n") for c in re.split(r"^%$", text, flags=re.M)]
        cookies = ["\n\n".join(paragraphs(c)) for c in cookies if c.strip()]
        if path.name == "ascii-art":
            continue  # pictures, not prose
        for i, doc in enumerate(groups(cookies, GROUP, "\n\n")):
            yield f"fortunes:{path.name}#{i}", doc


def jargon(root: Path):
    text = gzip.open(root / "usr/share/doc/jargon-text/jargon.txt.gz").read().decode("utf-8", errors="replace")
    paras = paragraphs(text)
    # The table of contents is a long run of one-line headwords; keep paragraphs of prose.
    paras = [p for p in paras if len(p.split()) >= 6]
    for i, doc in enumerate(groups(paras, 30, "\n\n")):
        yield f"jargon#{i}", doc


def devil(root: Path):
    raw = gzip.open(root / "usr/share/dictd/devil.dict.dz").read().decode("latin-1")
    paras = [p for p in paragraphs(raw) if not p.startswith("00-database")]
    for i, doc in enumerate(groups(paras, 30, "\n\n")):
        yield f"devil#{i}", doc


EXTRACT = {"python-doc": python_doc, "wordnet": wordnet, "fortunes": fortunes, "jargon": jargon, "devil": devil}


# --------------------------------------------------------------------------------------
# Split and write
# --------------------------------------------------------------------------------------


def is_heldout(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < HELDOUT_PERCENT


def clean(text: str) -> str:
    text = text.replace("\u00a0", " ").replace("\t", "    ")
    text = "".join(c for c in text if c == "\n" or c.isprintable())
    return re.sub(r"[ ]+\n", "\n", text).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(".train"), help="working folder (git-ignored)")
    args = ap.parse_args()
    out = args.work / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"heldout_percent": HELDOUT_PERCENT, "sources": {}}
    seen: set[str] = set()
    with open(out / "train.jsonl", "w") as ftrain, open(out / "heldout.jsonl", "w") as fheld:
        for name, (package, license_) in SOURCES.items():
            root, version = fetch(package, args.work / "debs")
            stats = {"package": package, "version": version, "license": license_,
                     "train_docs": 0, "heldout_docs": 0, "train_chars": 0, "heldout_chars": 0, "duplicates": 0}
            for key, text in EXTRACT[name](root):
                text = clean(text)
                if not text:
                    continue
                digest = hashlib.sha256(text.encode()).hexdigest()
                if digest in seen:
                    stats["duplicates"] += 1
                    continue
                seen.add(digest)
                split = "heldout" if is_heldout(key) else "train"
                line = json.dumps({"source": name, "key": key, "text": text}, ensure_ascii=False)
                (fheld if split == "heldout" else ftrain).write(line + "\n")
                stats[f"{split}_docs"] += 1
                stats[f"{split}_chars"] += len(text)
            manifest["sources"][name] = stats
            print(f"{name:12s} {package} {version}: {stats['train_docs']} + {stats['heldout_docs']} docs, "
                  f"{stats['train_chars'] / 1e6:.2f} + {stats['heldout_chars'] / 1e6:.2f} M chars", file=sys.stderr)
    for split in ("train", "heldout"):
        manifest[f"{split}_bytes"] = (out / f"{split}.jsonl").stat().st_size
    with open(out / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(json.dumps({k: v for k, v in manifest.items() if k != "sources"}), file=sys.stderr)


if __name__ == "__main__":
    main()

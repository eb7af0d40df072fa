#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

For every crate under host/, each .rs file is a module; `use crate::a::b` (and `crate::a::b::`
paths in code, and `super::` paths resolved against m's parent) from module m is an edge m -> the longest module prefix of a::b that exists.
A module never depends on its own parent or children through this check (a parent declares
its children; children may use their parent's items), so only edges between modules where
neither contains the other count. Prints each cycle and exits 1 if any.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
USE = re.compile(r"\b(crate|super)::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)")


def modules(src: pathlib.Path) -> dict:
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("lib", "main"):
            parts = parts[:-1]
        elif parts[-1] == "mod":
            parts = parts[:-1]
        mods["::".join(parts)] = f
    return mods


def edges(mods: dict) -> dict:
    out = {m: set() for m in mods}
    for m, f in mods.items():
        text = re.sub(r"//.*", "", f.read_text())
        text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
        for root, path in USE.findall(text):
            parts = path.split("::")
            if root == "super":
                # `super::` from a file module is its parent module (a mod.rs is its own directory)
                own = m.split("::") if m else []
                parent = own if mods[m].stem == "mod" else own[:-1]
                parts = parent[:-1] + parts if mods[m].stem == "mod" else parent + parts
            target = None
            for n in range(len(parts), 0, -1):
                cand = "::".join(parts[:n])
                if cand in mods:
                    target = cand
                    break
            if target is None or target == m:
                continue
            related = target.startswith(m + "::") or m.startswith(target + "::") or target == "" or m == ""
            if not related:
                out[m].add(target)
    return out


def cycles(graph: dict) -> list:
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def main() -> int:
    bad = 0
    for src in sorted(ROOT.glob("host/*/src")):
        for comp in cycles(edges(modules(src))):
            bad += 1
            print(f"{src.parent.name}: import cycle among {', '.join(comp)}")
    if bad == 0:
        print("no import cycles between modules of the host crates")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

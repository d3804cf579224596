#!/usr/bin/env python3
"""Fails when a module of the library imports from a layer above its own.

The library is built in layers, each using only the ones below it (docs/ARCHITECTURE.md):

    0 foundations   units, element, error, environment, thread_exit, setters
    1 host-side     ops, stats, diagnostics, buffer_trait, trace (allocation traces)
    2 host          host memory
    3 backend       the Backend trait and its implementations
    4 pool          size classes, caches, arena, device pool, the pool context the buffers
                    and the engine share, object and array pools
    5 buffer        unified buffers, views, per-thread magazines
    6 transfer      the transfer engine; dlpack (DLPack export and import, feature `dlpack`)
    7 manager       the MemoryManager facade; replay (traces through allocators)
    8 root          lib.rs and the prelude

Every `crate::x` path in code (use lines and inline paths; comments are skipped) is mapped to
the top-level module `x`. A name re-exported at the root (`crate::Error`) counts as the root
itself, layer 8: inside the library, items are named by the module that defines them.
"""
import pathlib
import re
import sys

LAYERS = {
    "units": 0, "element": 0, "error": 0, "environment": 0, "thread_exit": 0, "setters": 0,
    "ops": 1, "stats": 1, "diagnostics": 1, "buffer_trait": 1, "trace": 1,
    "host": 2,
    "backend": 3,
    "pool": 4,
    "buffer": 5,
    "dlpack": 6,
    "transfer": 6,
    "manager": 7, "replay": 7,
    "lib": 8, "prelude": 8,
}

SRC = pathlib.Path(__file__).resolve().parent.parent / "crates" / "dotcompute-memory" / "src"


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] if not line.lstrip().startswith("//") else "" for line in text.splitlines())


def top_level_targets(text):
    """Yields (line number, first path segment) for every `crate::` path in `text`."""
    for m in re.finditer(r"\bcrate::(\{)?", text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group(1):
            depth, i, item = 1, m.end(), ""
            while i < len(text) and depth:
                c = text[i]
                depth += c == "{"
                depth -= c == "}"
                if depth == 1 and c == ",":
                    yield line, item.strip().split("::")[0]
                    item = ""
                elif depth == 1 and c not in "{}":
                    item += c  # nested groups only follow the first segment, which is all we need
                i += 1
            if item.strip():
                yield line, item.strip().split("::")[0]
        else:
            seg = re.match(r"\w+", text[m.end():])
            if seg:
                yield line, seg.group(0)


def main():
    errors = []
    for path in sorted(SRC.rglob("*.rs")):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".rs") if len(rel.parts) > 1 or rel.name != "lib.rs" else "lib"
        if own not in LAYERS:
            errors.append(f"{rel}: module `{own}` has no layer in scripts/check-layers.py")
            continue
        text = strip_comments(path.read_text())
        for line, target in top_level_targets(text):
            if not target or target == "self":
                continue
            module = target if target in LAYERS else "lib"
            if LAYERS[module] > LAYERS[own]:
                errors.append(
                    f"{rel}:{line}: `{own}` (layer {LAYERS[own]}) uses `crate::{target}` from `{module}` (layer {LAYERS[module]}), a layer above it"
                )
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} import(s) against the layering; move the code or the item to the right layer")
        return 1
    print(f"layers: every `crate::` path in {SRC.relative_to(SRC.parents[2])} points down or sideways")
    return 0


if __name__ == "__main__":
    sys.exit(main())

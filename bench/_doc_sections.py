"""docs/benchmarks.md is shared by several benchmarks: each rewrites only its own marked section.

A section is the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`. Replacing it leaves the rest of
the file untouched; a missing file gets a top-level header first, a missing section is appended.
"""

from __future__ import annotations

from pathlib import Path

HEADER = """# Benchmarks

Measured numbers, written by the scripts in `bench/` (each rewrites only its own section, between its
`<!-- name:begin -->` / `<!-- name:end -->` markers). Re-run them with `make bench`; the section says
which machine, which versions and which command produced it.
"""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(path: Path, name: str, body: str) -> None:
    """Write `body` as section `name` of the markdown file at `path`, keeping everything else."""
    begin, end = markers(name)
    block = f"{begin}\n{body.strip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    start = text.find(begin)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        stop = text.find(end, start)
        if stop == -1:
            raise ValueError(f"{path}: {begin} has no matching {end}")
        stop += len(end)
        if text[stop : stop + 1] == "\n":
            stop += 1
        text = text[:start] + block + text[stop:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")

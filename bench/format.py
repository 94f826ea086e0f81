"""Formatter throughput on a generated 5,000-line mapping, in lines per second.

    python -m bench.format [--lines N] [--repeat R]

Uses the same mapping as ``bench/parse.py`` (many realistic flows with comments), de-formatted (one
space around `=`, modifiers right after the expression) so that the formatter has work to do. Prints
the best of R runs for ``format_module`` alone (tree already parsed) and for ``format_text`` (parse +
format), CPU time and wall time (the machine may be shared), and checks the output is a fixed point.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.parse import generate
from mapsync.dsl.formatter import format_module, format_text
from mapsync.dsl.parser import parse

T = TypeVar("T")


def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    text = re.sub(r" {2,}", " ", generate(args.lines))  # undo the alignment
    n = text.count("\n")
    parsed = parse(text, "bench.map")
    if not parsed.ok:
        print(f"the generated mapping does not parse: {parsed.diagnostics[0].headline()}", file=sys.stderr)
        return 1
    best: dict[str, tuple[float, float]] = {}
    formatted = ""
    for _ in range(args.repeat):
        formatted, fw, fc = _timed(lambda: format_module(parsed.module, source=text))
        _, tw, tc = _timed(lambda: format_text(text, "bench.map"))
        for key, w, c in (("format", fw, fc), ("parse + format", tw, tc)):
            old = best.get(key)
            best[key] = (min(w, old[0]), min(c, old[1])) if old else (w, c)
    if format_text(formatted, "bench.map") != formatted:
        print("the formatted mapping is not a fixed point", file=sys.stderr)
        return 1
    print(f"{n} lines, {len(parsed.module.decls)} declarations, {len(parsed.module.comments)} comments, "
          f"best of {args.repeat}:")
    for key, (w, c) in best.items():
        print(f"  {key:<15} {n / c:>10,.0f} lines/s CPU   {n / w:>10,.0f} lines/s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Editor latency: median time from a `didChange` to the `publishDiagnostics` that answers it, for a
1,000-line mapping open in `mapsync lsp` (a real server subprocess, driven over stdio by pygls's client).

    python -m bench.lsp [--lines N] [--changes K]

Two kinds of change are timed: one that leaves the mapping valid (a literal edited: one lark pass and the
checker), and one that breaks a line and then mends it (the broken half goes through the parser's error
recovery: the pass that fails, the tree parser that phrases the error, and a pass over the mended text). It prints the median and 90th percentile of each, the server's CPU time per change (from
/proc, so the load of a shared machine can be told apart), and the ratio of the valid median to the
target of 50 ms; a ratio above 1 misses the target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

from bench.parse import generate

TARGET_MS = 50.0


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(folder: Path, text: str, changes: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    client = LanguageClient("bench", "1")
    arrived: asyncio.Queue[float] = asyncio.Queue()

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
        arrived.put_nowait(time.perf_counter())

    await client.start_io(sys.executable, "-m", "mapsync.engine.cli", "lsp", cwd=str(folder))
    await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities(),
                                                       root_uri=folder.as_uri()))
    client.initialized(lsp.InitializedParams())
    uri = (folder / "big.map").as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri=uri, language_id="mapsync", version=1, text=text)))
    await arrived.get()

    lines = text.split("\n")
    literal = next(i for i, ln in enumerate(lines) if '"dynamics365"' in ln)
    literal_col = lines[literal].index('"dynamics365"') + 1
    assignment = next(i for i, ln in enumerate(lines) if " = " in ln and i > len(lines) // 2)
    equals_col = lines[assignment].index(" = ") + 1

    def edit(version: int, line: int, col: int, end: int, new: str) -> float:
        started = time.perf_counter()
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [lsp.TextDocumentContentChangePartial(range=lsp.Range(lsp.Position(line, col), lsp.Position(line, end)),
                                                  text=new)]))
        return started

    times: dict[str, list[float]] = {"valid": [], "broken": []}
    cpu: dict[str, float] = {"valid": 0.0, "broken": 0.0}
    pid = client._server.pid if client._server is not None else 0
    version = 1
    for i in range(changes):
        # valid: "dynamics365" <-> "Dynamics365"; then " = " -> " x " (broken) and back (valid again)
        for kind, line, col, new in (("valid", literal, literal_col, "D" if i % 2 == 0 else "d"),
                                     ("broken", assignment, equals_col, "x"),
                                     ("valid", assignment, equals_col, "=")):
            version += 1
            before = _cpu_seconds(pid)
            started = edit(version, line, col, col + 1, new)
            times[kind].append(await arrived.get() - started)
            after = _cpu_seconds(pid)
            if before is not None and after is not None:
                cpu[kind] += after - before
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return times, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.lsp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1000, help="size of the mapping (default 1000)")
    parser.add_argument("--changes", type=int, default=40, help="changes of each kind (default 40)")
    args = parser.parse_args(argv)
    text = generate(args.lines)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "big.map").write_text(text, encoding="utf-8")
        times, cpu = asyncio.run(_measure(folder, text, args.changes))
    print(f"mapsync lsp: didChange -> publishDiagnostics, {text.count(chr(10))}-line mapping")
    for kind, found in times.items():
        ms = sorted(t * 1000 for t in found)
        p90 = ms[int(0.9 * (len(ms) - 1))]
        per_change = 1000 * cpu[kind] / len(ms)
        print(f"  {kind:<7} median {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms   "
              f"server CPU {per_change:6.1f} ms/change   ({len(ms)} changes)")
    median = statistics.median(t * 1000 for t in times["valid"])
    print(f"  ratio to the {TARGET_MS:.0f} ms target (valid edits): {median / TARGET_MS:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

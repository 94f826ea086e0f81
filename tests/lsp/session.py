"""A real LSP session for the tests: `python -m mapsync.engine.cli lsp` as a subprocess, driven by pygls's client.

The client runs on its own event loop in a background thread; every call here blocks until the answer
is in. The server handles messages in order and publishes diagnostics while it handles a change, so
once any later request has been answered the diagnostics of that change have arrived too.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient

T = TypeVar("T")
TIMEOUT = 60


def offset(text: str, pos: lsp.Position) -> int:
    """Offset of an LSP position in ASCII text (the tests' texts are ASCII: units are characters)."""
    lines = text.split("\n")
    if pos.line >= len(lines):
        return len(text)
    return sum(len(x) + 1 for x in lines[: pos.line]) + min(pos.character, len(lines[pos.line]))


def apply(text: str, change: lsp.TextDocumentContentChangeEvent) -> str:
    if isinstance(change, lsp.TextDocumentContentChangeWholeDocument):
        return change.text
    return text[: offset(text, change.range.start)] + change.text + text[offset(text, change.range.end) :]


def changes(edit: lsp.WorkspaceEdit | None) -> dict[str, list[lsp.TextEdit]] | None:
    """A workspace edit's changes as plain lists (the client decodes JSON arrays as tuples)."""
    return None if edit is None or edit.changes is None else {k: list(v) for k, v in edit.changes.items()}


class Session:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = LanguageClient("mapsync-tests", "1")
        self.diagnostics: dict[str, list[lsp.Diagnostic]] = {}
        self.published: list[tuple[float, str]] = []  # (perf_counter, uri) of every publish, in order
        self.versions: dict[str, int] = {}
        self.texts: dict[str, str] = {}  # what the server's buffers hold (the edits applied here too)

        self.messages: list[str] = []  # window/showMessage: pygls reports a handler's exception this way

        @self.client.feature(lsp.WINDOW_SHOW_MESSAGE)
        def on_message(params: lsp.ShowMessageParams) -> None:
            self.messages.append(params.message)

        @self.client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
            self.diagnostics[params.uri] = list(params.diagnostics)
            self.published.append((time.perf_counter(), params.uri))

        self.run(self.client.start_io(sys.executable, "-m", "mapsync.engine.cli", "lsp", cwd=str(root)))
        self.run(self.client.initialize_async(lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(),
            root_uri=root.as_uri(),
            workspace_folders=[lsp.WorkspaceFolder(uri=root.as_uri(), name="fixture")],
        )))
        self.notify(self.client.initialized, lsp.InitializedParams())

    # ---- plumbing
    def run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)  # type: ignore[arg-type]

    def notify(self, method: Any, params: Any) -> None:
        async def send() -> None:
            method(params)
        self.run(send())

    def close(self) -> None:
        try:
            self.run(self.client.shutdown_async(None))
            self.notify(self.client.exit, None)
            self.run(self.client.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def uri(self, name: str) -> str:
        return (self.root / name).resolve().as_uri()

    # ---- documents
    def open(self, name: str, text: str | None = None) -> str:
        uri = self.uri(name)
        text = (self.root / name).read_text(encoding="utf-8") if text is None else text
        self.versions[uri] = 1
        self.texts[uri] = text
        self.notify(self.client.text_document_did_open, lsp.DidOpenTextDocumentParams(
            lsp.TextDocumentItem(uri=uri, language_id="mapsync", version=1, text=text)))
        self.settle()
        return uri

    def change(self, name: str, *changes: lsp.TextDocumentContentChangeEvent) -> None:
        uri = self.uri(name)
        self.versions[uri] += 1
        for c in changes:
            self.texts[uri] = apply(self.texts[uri], c)
        self.notify(self.client.text_document_did_change, lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]), list(changes)))
        self.settle()

    def replace_all(self, name: str, text: str) -> None:
        self.change(name, lsp.TextDocumentContentChangePartial(
            range=lsp.Range(lsp.Position(0, 0), lsp.Position(10**6, 0)), text=text))

    def edit(self, name: str, line: int, col: int, end_line: int, end_col: int, text: str) -> None:
        self.change(name, lsp.TextDocumentContentChangePartial(
            range=lsp.Range(lsp.Position(line, col), lsp.Position(end_line, end_col)), text=text))

    def text(self, name: str) -> str:
        return self.texts[self.uri(name)]

    def close_doc(self, name: str) -> None:
        self.versions.pop(self.uri(name), None)
        self.texts.pop(self.uri(name), None)
        self.notify(self.client.text_document_did_close, lsp.DidCloseTextDocumentParams(
            lsp.TextDocumentIdentifier(uri=self.uri(name))))
        self.settle()

    def settle(self) -> None:
        """Wait until the server has handled everything sent so far (a request's answer comes after it)."""
        self.run(self._ping())

    async def _ping(self) -> None:
        # "method not found" is an answer all the same, and it is sent after the earlier messages were handled
        with contextlib.suppress(JsonRpcException):
            await self.client.protocol.send_request_async("mapsync/ping", None)

    # ---- requests
    def _doc(self, name: str) -> lsp.TextDocumentIdentifier:
        return lsp.TextDocumentIdentifier(uri=self.uri(name))

    def complete(self, name: str, line: int, col: int) -> list[lsp.CompletionItem]:
        result = self.run(self.client.text_document_completion_async(
            lsp.CompletionParams(self._doc(name), lsp.Position(line, col))))
        if result is None:
            return []
        return list(result.items if isinstance(result, lsp.CompletionList) else result)

    def hover(self, name: str, line: int, col: int) -> lsp.Hover | None:
        return self.run(self.client.text_document_hover_async(lsp.HoverParams(self._doc(name), lsp.Position(line, col))))

    def definition(self, name: str, line: int, col: int) -> Any:
        return self.run(self.client.text_document_definition_async(
            lsp.DefinitionParams(self._doc(name), lsp.Position(line, col))))

    def references(self, name: str, line: int, col: int, *, declaration: bool = True) -> list[lsp.Location]:
        return list(self.run(self.client.text_document_references_async(lsp.ReferenceParams(
            context=lsp.ReferenceContext(include_declaration=declaration), text_document=self._doc(name),
            position=lsp.Position(line, col)))) or [])

    def prepare_rename(self, name: str, line: int, col: int) -> Any:
        return self.run(self.client.text_document_prepare_rename_async(
            lsp.PrepareRenameParams(self._doc(name), lsp.Position(line, col))))

    def rename(self, name: str, line: int, col: int, new_name: str) -> lsp.WorkspaceEdit | None:
        return self.run(self.client.text_document_rename_async(
            lsp.RenameParams(text_document=self._doc(name), position=lsp.Position(line, col), new_name=new_name)))

    def format(self, name: str) -> list[lsp.TextEdit] | None:
        found = self.run(self.client.text_document_formatting_async(lsp.DocumentFormattingParams(
            text_document=self._doc(name), options=lsp.FormattingOptions(tab_size=2, insert_spaces=True))))
        return None if found is None else list(found)

    def code_actions(self, name: str, line: int, col: int, end_line: int, end_col: int) -> list[lsp.CodeAction]:
        result = self.run(self.client.text_document_code_action_async(lsp.CodeActionParams(
            text_document=self._doc(name), range=lsp.Range(lsp.Position(line, col), lsp.Position(end_line, end_col)),
            context=lsp.CodeActionContext(diagnostics=[]))))
        return [a for a in result or [] if isinstance(a, lsp.CodeAction)]

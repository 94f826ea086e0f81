"""The pygls wiring: LSP requests in, the answers of ``mapsync.lsp`` out. Runs over stdio (`mapsync lsp`).

Diagnostics are published after every open, change, save and close, for every file of the changed file's
project: a change in `replacements.map` shows up in `contacts.map`, which imports it. Each LSP diagnostic
carries the checker's code and message; the hint follows the message on its own line and is also in
``data.hint``.
"""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidRequest
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace import PositionCodec

from mapsync import __version__
from mapsync.dsl import ast
from mapsync.dsl.diagnostics import Diagnostic, Severity
from mapsync.lsp import complete as completion
from mapsync.lsp import edits
from mapsync.lsp.describe import describe
from mapsync.lsp.locate import at
from mapsync.lsp.workspace import Snapshot, Workspace, offset_of, position_of

__all__ = ["build_server", "main"]

SOURCE = "mapsync"


class MapsyncServer(LanguageServer):
    def __init__(self, config: Path | None = None) -> None:
        super().__init__("mapsync", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.config = config
        self._state: Workspace | None = None
        self._told: set[str] = set()
        self.published: dict[Path, set[str]] = {}  # project folder -> uris given diagnostics last time

    @property
    def state(self) -> Workspace:
        if self._state is None:
            roots = [Path(p) for f in self.workspace.folders.values() if (p := to_fs_path(f.uri))]
            if not roots and self.workspace.root_path:
                roots = [Path(self.workspace.root_path)]
            self._state = Workspace(roots, config=self.config)
        return self._state

    def tell_problems(self) -> None:
        """Configuration problems (a bad `snapshots:` setting), shown once each."""
        for message in self.state.problems:
            if message not in self._told:
                self._told.add(message)
                self.window_show_message(lsp.ShowMessageParams(type=lsp.MessageType.Warning, message=message))

    @property
    def codec(self) -> PositionCodec:
        return self.workspace.position_codec


# ---------------------------------------------------------------------------------------------- positions


def _line(text: str, line: int) -> str:
    start = offset_of(text, line, 0)
    end = text.find("\n", start)
    return text[start : len(text) if end == -1 else end]


def to_position(codec: PositionCodec, text: str, offset: int) -> lsp.Position:
    line, col = position_of(text, offset)
    return lsp.Position(line, codec.client_num_units(_line(text, line)[:col]))


def to_range(codec: PositionCodec, text: str, start: int, end: int) -> lsp.Range:
    return lsp.Range(to_position(codec, text, start), to_position(codec, text, end))


def to_offset(codec: PositionCodec, text: str, pos: lsp.Position) -> int:
    line_text = _line(text, pos.line)
    units = col = 0
    while col < len(line_text) and units < pos.character:
        units += codec.client_num_units(line_text[col])
        col += 1
    return offset_of(text, pos.line, col)


def _span_range(codec: PositionCodec, text: str, span: ast.Span) -> lsp.Range:
    """A diagnostic's 1-based line/column span (what `mapsync validate` prints) as an LSP range."""
    def pos(line: int, col: int) -> lsp.Position:
        return lsp.Position(max(line - 1, 0), codec.client_num_units(_line(text, max(line - 1, 0))[: max(col - 1, 0)]))
    return lsp.Range(pos(span.line, span.col), pos(span.end_line, span.end_col))


def to_diagnostic(codec: PositionCodec, text: str, d: Diagnostic) -> lsp.Diagnostic:
    return lsp.Diagnostic(
        range=_span_range(codec, text, d.span),
        message=d.message + (f"\nhint: {d.hint}" if d.hint else ""),
        severity=lsp.DiagnosticSeverity.Error if d.severity is Severity.ERROR else lsp.DiagnosticSeverity.Warning,
        code=d.code,
        source=SOURCE,
        data={"hint": d.hint},
    )


# ---------------------------------------------------------------------------------------------- server


def build_server(config: Path | None = None) -> MapsyncServer:
    server = MapsyncServer(config)

    def path_of(uri: str) -> Path:
        fs = to_fs_path(uri)
        if fs is None:
            raise JsonRpcInvalidRequest(f"not a file: {uri}")
        return Path(fs).resolve()

    def snapshot_of(uri: str) -> tuple[Snapshot, str | None, str]:
        path = path_of(uri)
        snap = server.state.snapshot(path)
        file = snap.file_of(path)
        text = snap.text_of(file) if file is not None else server.state.buffers.get(path, "")
        return snap, file, text

    def uri_of(snap: Snapshot, file: str | Path) -> str:
        path = file if isinstance(file, Path) else snap.paths[file]
        return from_fs_path(str(path)) or path.as_uri()

    def publish(uri: str) -> None:
        path = path_of(uri)
        snap = server.state.snapshot(path)
        sent: set[str] = set()
        for file_path, found in snap.diagnostics_by_path().items():
            file = snap.file_of(file_path)
            text = snap.text_of(file) if file is not None else ""
            target = from_fs_path(str(file_path)) or file_path.as_uri()
            sent.add(target)
            server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
                uri=target, diagnostics=[to_diagnostic(server.codec, text, d) for d in found]))
        for stale in server.published.get(snap.folder, set()) - sent:
            server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=stale, diagnostics=[]))
        server.published[snap.folder] = sent
        server.tell_problems()

    def sync(uri: str) -> None:
        doc = server.workspace.get_text_document(uri)
        server.state.set_buffer(path_of(uri), doc.source)
        publish(uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: MapsyncServer, params: lsp.DidOpenTextDocumentParams) -> None:
        sync(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: MapsyncServer, params: lsp.DidChangeTextDocumentParams) -> None:
        sync(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: MapsyncServer, params: lsp.DidSaveTextDocumentParams) -> None:
        server.state.disk_changed(path_of(params.text_document.uri))
        publish(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: MapsyncServer, params: lsp.DidCloseTextDocumentParams) -> None:
        # The disk's version counts again; a buffer never saved leaves the project (its diagnostics are cleared).
        server.state.drop_buffer(path_of(params.text_document.uri))
        publish(params.text_document.uri)

    @server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def watched(ls: MapsyncServer, params: lsp.DidChangeWatchedFilesParams) -> None:
        for change in params.changes:
            path = path_of(change.uri)
            server.state.disk_changed(path)
        for uri in list(server.workspace.text_documents):
            publish(uri)

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                    lsp.CompletionOptions(trigger_characters=[".", "(", ",", " ", "="]))
    def on_complete(ls: MapsyncServer, params: lsp.CompletionParams) -> lsp.CompletionList:
        snap, file, text = snapshot_of(params.text_document.uri)
        offset = to_offset(server.codec, text, params.position)
        items = completion.complete(snap, file, text, offset)
        return lsp.CompletionList(is_incomplete=False, items=items)

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def on_hover(ls: MapsyncServer, params: lsp.HoverParams) -> lsp.Hover | None:
        snap, file, text = snapshot_of(params.text_document.uri)
        module = snap.project.module(file) if file else None
        if module is None:
            return None
        offset = to_offset(server.codec, text, params.position)
        occ = at(module, offset, snap.project)
        body = describe(snap, occ, offset) if occ is not None else None
        if body is None or occ is None:
            return None
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=body),
                         range=to_range(server.codec, text, occ.span.start, occ.span.end))

    def location(snap: Snapshot, file: str, span: ast.Span) -> lsp.Location:
        return lsp.Location(uri=uri_of(snap, file), range=to_range(server.codec, snap.text_of(file), span.start, span.end))

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def on_definition(ls: MapsyncServer, params: lsp.DefinitionParams) -> lsp.Location | None:
        snap, file, text = snapshot_of(params.text_document.uri)
        if file is None:
            return None
        found = edits.definition(snap, file, to_offset(server.codec, text, params.position))
        if found is None:
            return None
        where, span = found
        if span is None:
            return lsp.Location(uri=uri_of(snap, where), range=lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)))
        assert isinstance(where, str)
        return location(snap, where, span)

    @server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
    def on_references(ls: MapsyncServer, params: lsp.ReferenceParams) -> list[lsp.Location]:
        snap, file, text = snapshot_of(params.text_document.uri)
        if file is None:
            return []
        found = edits.references(snap, file, to_offset(server.codec, text, params.position),
                                 include_declaration=params.context.include_declaration)
        return [location(snap, f, span) for f, span in found]

    @server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
    def on_prepare_rename(ls: MapsyncServer, params: lsp.PrepareRenameParams) -> lsp.Range | None:
        snap, file, text = snapshot_of(params.text_document.uri)
        occ = edits.rename_target(snap, file, to_offset(server.codec, text, params.position)) if file else None
        return to_range(server.codec, text, occ.span.start, occ.span.end) if occ else None

    @server.feature(lsp.TEXT_DOCUMENT_RENAME, lsp.RenameOptions(prepare_provider=True))
    def on_rename(ls: MapsyncServer, params: lsp.RenameParams) -> lsp.WorkspaceEdit | None:
        snap, file, text = snapshot_of(params.text_document.uri)
        if file is None:
            return None
        try:
            found = edits.rename(snap, file, to_offset(server.codec, text, params.position), params.new_name)
        except edits.RenameError as exc:
            raise JsonRpcInvalidRequest(str(exc)) from None
        return workspace_edit(snap, found)

    def workspace_edit(snap: Snapshot, found: list[edits.Edit]) -> lsp.WorkspaceEdit:
        changes: dict[str, list[lsp.TextEdit]] = {}
        for e in found:
            text = snap.text_of(e.file)
            changes.setdefault(uri_of(snap, e.file), []).append(
                lsp.TextEdit(range=to_range(server.codec, text, e.start, e.end), new_text=e.new))
        return lsp.WorkspaceEdit(changes=changes)

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    def on_format(ls: MapsyncServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
        _, file, text = snapshot_of(params.text_document.uri)
        formatted = edits.format_document(text, file or "<buffer>")
        if formatted is None or formatted == text:
            return None if formatted is None else []
        return [lsp.TextEdit(range=to_range(server.codec, text, 0, len(text)), new_text=formatted)]

    @server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                    lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
    def on_code_action(ls: MapsyncServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
        snap, file, text = snapshot_of(params.text_document.uri)
        if file is None:
            return []
        start = to_offset(server.codec, text, params.range.start)
        end = to_offset(server.codec, text, params.range.end)
        out = []
        for d in snap.diagnostics:
            if d.span.file != file or d.span.start > end or d.span.end < start:
                continue
            found = edits.fixes(snap, d)
            for fix in found:
                out.append(lsp.CodeAction(
                    title=fix.title, kind=lsp.CodeActionKind.QuickFix,
                    diagnostics=[to_diagnostic(server.codec, text, d)], edit=workspace_edit(snap, list(fix.edits)),
                    is_preferred=len(found) == 1 or None))
        return out

    return server


def main(config: Path | None = None) -> None:
    """Serve over stdio until the editor says exit. ``config``: the `mapsync.yaml` for every project (default:
    the nearest one at or above each mapping folder)."""
    build_server(config).start_io()

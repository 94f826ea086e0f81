"""The editor set-up of docs/editors.md: each snippet parses, and the docs show the files as shipped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.paths import FIXTURE_MAPPINGS

ROOT = Path(__file__).resolve().parent.parent.parent
EDITORS = ROOT / "editors"
DOC = (ROOT / "docs" / "editors.md").read_text(encoding="utf-8")


def fenced(lang: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"```{lang}\n(.*?)```", DOC, re.S)]


# ------------------------------------------------------------------------------------------- VS Code


def test_the_vscode_extension_declares_the_language_grammar_and_server() -> None:
    manifest = json.loads((EDITORS / "vscode" / "package.json").read_text(encoding="utf-8"))
    (language,) = manifest["contributes"]["languages"]
    assert language["id"] == "mapsync" and language["extensions"] == [".map"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert grammar["scopeName"] == "source.mapsync"
    for relative in (grammar["path"], language["configuration"], manifest["main"]):
        assert (EDITORS / "vscode" / relative).is_file(), relative
    assert manifest["contributes"]["configuration"]["properties"]["mapsync.server.command"]["default"] == ["mapsync", "lsp"]
    json.loads((EDITORS / "vscode" / "language-configuration.json").read_text(encoding="utf-8"))


def test_the_vscode_client_is_valid_javascript() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    done = subprocess.run([node, "--check", str(EDITORS / "vscode" / "extension.js")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _grammar() -> dict[str, object]:
    return json.loads((EDITORS / "vscode" / "syntaxes" / "mapsync.tmLanguage.json").read_text(encoding="utf-8"))


def _rules(grammar: dict[str, object]) -> list[dict[str, object]]:
    repository = grammar["repository"]
    assert isinstance(repository, dict)
    return [repository[p["include"].lstrip("#")] for p in grammar["patterns"]]  # type: ignore[index,union-attr]


def highlight(line: str) -> list[tuple[str, str]]:
    """(text, scope) of each token: the TextMate rule that matches leftmost wins, the first listed on a tie."""
    rules = [(re.compile(str(r["match"])), r) for r in _rules(_grammar())]
    out: list[tuple[str, str]] = []
    at = 0
    while at < len(line):
        found = [(m.start(), i, m, r) for i, (rx, r) in enumerate(rules) if (m := rx.search(line, at)) and m.end() > m.start()]
        if not found:
            break
        _, _, m, rule = min(found, key=lambda f: (f[0], f[1]))
        captures = rule.get("captures", {})
        assert isinstance(captures, dict)
        named = [(m.group(int(k)), v["name"]) for k, v in captures.items() if m.group(int(k))]
        out.extend(named or [(m.group(), str(rule["name"]))])
        at = m.end()
    return out


def test_every_pattern_of_the_grammar_compiles() -> None:
    for rule in _rules(_grammar()):
        re.compile(str(rule["match"]))


def test_the_grammar_highlights_a_shipped_mapping() -> None:
    text = (FIXTURE_MAPPINGS / "contacts.map").read_text(encoding="utf-8").splitlines()
    tokens = {ln: highlight(ln) for ln in text}
    assert tokens["flow contacts {"] == [("flow", "storage.type.mapsync"), ("contacts", "entity.name.type.mapsync")]
    assert tokens['import "replacements.map"'] == [("import", "keyword.control.mapsync"),
                                                    ('"replacements.map"', "string.quoted.double.mapsync")]
    email = next(ln for ln in text if ln.strip().startswith("email "))
    assert tokens[email] == [("=", "keyword.operator.mapsync"), ("lower", "support.function.mapsync"),
                             ("trim", "support.function.mapsync"), ("required", "storage.modifier.mapsync")]
    where = next(ln for ln in text if ln.strip().startswith("where "))
    assert tokens[where] == [("where", "keyword.control.mapsync"), ("==", "keyword.operator.mapsync"),
                             ("0", "constant.numeric.mapsync"), ("and", "keyword.operator.word.mapsync"),
                             ("is", "keyword.operator.word.mapsync"), ("not", "keyword.operator.word.mapsync"),
                             ("null", "constant.language.mapsync")]
    key = next(ln for ln in text if ln.strip().startswith("key "))
    assert tokens[key][:2] == [("key", "keyword.control.mapsync"), ("->", "keyword.operator.mapsync")]
    assert tokens[key][-1][1] == "comment.line.number-sign.mapsync"


# ------------------------------------------------------------------------------------------- Neovim and Helix


def test_the_neovim_snippet_is_the_shipped_file_and_loads_in_lua() -> None:
    shipped = (EDITORS / "neovim" / "mapsync.lua").read_text(encoding="utf-8")
    assert fenced("lua") == [shipped]
    assert "vim.lsp.start" in shipped and '{ "mapsync", "lsp" }' in shipped
    lupa = pytest.importorskip("lupa")
    lua = lupa.LuaRuntime()
    syntax_error = lua.eval("function(source) local chunk, err = load(source); return err end")
    assert syntax_error(shipped) is None


def test_the_helix_snippet_is_the_shipped_file_and_parses() -> None:
    shipped = (EDITORS / "helix" / "languages.toml").read_text(encoding="utf-8")
    assert fenced("toml") == [shipped]
    config = tomllib.loads(shipped)
    assert config["language-server"]["mapsync"] == {"command": "mapsync", "args": ["lsp"]}
    (language,) = config["language"]
    assert language["file-types"] == ["map"] and language["language-servers"] == ["mapsync"]


def test_the_readme_links_the_editor_docs() -> None:
    assert "(docs/editors.md)" in (ROOT / "README.md").read_text(encoding="utf-8")

"""`mapsync init`: a consultant's project, complete and valid, never written over an existing file."""

from __future__ import annotations

import pytest

from mapsync.engine.cli import main
from mapsync.engine.config import load_config
from mapsync.engine.scaffold import plan_project
from mapsync.resources import snapshots_dir, starter_mappings_dir


def test_init_writes_a_whole_project(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "p")]) == 0
    project = tmp_path / "p"
    written = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert written == sorted(f.path.as_posix() for f in plan_project())
    assert {"mapsync.yaml", ".gitignore", "README.md", ".github/workflows/mapsync.yml"} <= set(written)
    assert {p.name for p in (project / "mappings").iterdir()} == {
        p.name for p in starter_mappings_dir().iterdir() if p.suffix == ".map" or p.name.endswith(".test.yaml")}
    assert len(list((project / "schemas" / "snapshots").glob("*/*.json"))) == len(list(snapshots_dir().glob("*/*.json")))
    ignored = (project / ".gitignore").read_text(encoding="utf-8")
    assert "/.mapsync/" in ignored and "*.sqlite" in ignored and ".env" in ignored
    assert "next: cd" in capsys.readouterr().out


def test_the_configuration_asks_each_environment_for_its_own_secrets(tmp_path) -> None:
    assert main(["init", str(tmp_path)]) == 0
    text = (tmp_path / "mapsync.yaml").read_text(encoding="utf-8")
    assert "client_secret: \"${D365_STAGE_CLIENT_SECRET}\"" in text and "${ACS_PROD_CLIENT_SECRET}" in text
    stage = {"D365_STAGE_URL": "https://contoso-stage.crm4.dynamics.com", "D365_TENANT_ID": "t",
             "D365_STAGE_CLIENT_ID": "c", "D365_STAGE_CLIENT_SECRET": "s", "ACS_STAGE_ORG": "contoso-stage",
             "ACS_STAGE_CLIENT_ID": "a", "ACS_STAGE_CLIENT_SECRET": "b",
             "ACS_STAGE_JOURNAL_URL": "https://events.adobe.io/events/organizations/o/integrations/i/r"}
    config = load_config(tmp_path / "mapsync.yaml", environ=stage, only="stage")  # prod's variables not needed
    env = config.environment("stage")
    assert env.d365 is not None and env.d365.url == "https://contoso-stage.crm4.dynamics.com"
    assert config.snapshots == (tmp_path / "schemas" / "snapshots")


def test_init_never_overwrites_and_writes_nothing_when_a_file_exists(tmp_path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "contacts.map").write_text("# mine\n", encoding="utf-8")
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mappings/contacts.map" in err and "never overwrites" in err and "Traceback" not in err
    assert (tmp_path / "mappings" / "contacts.map").read_text(encoding="utf-8") == "# mine\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["contacts.map", "mappings"]


def test_init_into_a_file_is_refused(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").write_text("", encoding="utf-8")
    assert main(["init", str(tmp_path / "x")]) == 2
    assert "is a file" in capsys.readouterr().err

"""A PostgreSQL state store's password never appears in any command's output, wherever the URL carries it.

The password is planted in the state URL's user-info and, separately, in its query (``?password=``), and
every command that shows or uses the state store runs as a subprocess against the emulators: ``run -v``,
``status``, ``deadletters list`` and ``show``, ``plan``, ``explain``; then the same against a server that
is not there and with a wrong password, so the error messages are searched too. Output is searched with
whitespace removed as well, so a table that wraps the URL over two lines cannot hide a leak.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from mapsync.emulators.server import Emulator
from tests.e2e.conftest import serving
from tests.paths import FIXTURE_MAPPINGS
from tests.postgres_server import PostgresServer, fresh_schema

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
MAPSYNC = [sys.executable, "-m", "mapsync.engine.cli"]
TIMEOUT_S = 120
WRONG_PASSWORD = "Zq7-wrong-planted-pw"
CONTACT = "2f1e3c1a-6b8d-4c1e-9a3e-0d5f7b9c1e2a"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Emulator, Any]]:
    with serving(seed=3, contacts=40) as pair:
        yield pair


def _state_url(server: PostgresServer, schema: str, password: str, where: str, port: int | None = None) -> str:
    host = f"{server.host}:{port or server.port}"
    options = f"options=-csearch_path%3D{schema}"
    if where == "userinfo":
        return f"postgresql://{server.user}:{quote(password, safe='')}@{host}/{server.database}?{options}"
    return f"postgresql://{server.user}@{host}/{server.database}?{options}&password={quote(password, safe='')}"


def _project(tmp: Path, served: tuple[Emulator, Any], state: str) -> Path:
    emulator, running = served
    if not (tmp / "mappings").exists():
        shutil.copytree(FIXTURE_MAPPINGS, tmp / "mappings")
    c, base = emulator.credentials, running.base_url
    env = {
        "d365": {"url": base, "tenant_id": c.tenant_id, "client_id": c.d365_client_id,
                 "client_secret": c.d365_client_secret, "authority_host": base},
        "campaign": {"organization": c.organization, "client_id": c.campaign_client_id,
                     "client_secret": c.campaign_client_secret, "ims_url": base, "base_url": base},
        "events": {"journal_url": f"{base}{c.journal_path}"},
        "state": state,
        "ca_file": str(running.ca_file),
    }
    (tmp / "mapsync.yaml").write_text(yaml.safe_dump({"version": 1, "mappings": "mappings",
                                                      "environments": {"stage": env}}), encoding="utf-8")
    return tmp


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


COMMANDS = [
    ("status", "--env", "stage"),
    ("deadletters", "list", "--env", "stage"),
    ("deadletters", "show", "1", "2", "--env", "stage"),
    ("plan", "--env", "stage"),
    ("explain", "--env", "stage", "--flow", "contacts", "--key", CONTACT),
    ("run", "--env", "stage", "-v", "--flow", "contacts"),
]

# Where the store cannot be used, every command fails the same way: these four stand for them all.
FAILING = [COMMANDS[0], COMMANDS[1], COMMANDS[4], COMMANDS[5]]


def _outputs(project: Path, commands: list[tuple[str, ...]]) -> dict[str, str]:
    environ = {**os.environ, "COLUMNS": "400"}
    running = [(" ".join(args), subprocess.Popen([*MAPSYNC, "--config", str(project / "mapsync.yaml"), *args],
                                                 cwd=project, env=environ, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True)) for args in commands]
    found = {}
    for name, process in running:
        out, err = process.communicate(timeout=TIMEOUT_S)
        found[name] = out + err
    return found


def _assert_no_leak(outputs: dict[str, str], secret: str) -> None:
    for command, text in outputs.items():
        assert "Traceback" not in text and "internal error" not in text, (command, text[-2000:])
        for shown in (text, re.sub(r"\s+", "", text)):
            assert secret not in shown and quote(secret, safe="") not in shown, (command, text[-2000:])


@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_the_state_password_appears_in_no_output(tmp_path: Path, served: tuple[Emulator, Any],
                                                 postgres_server: PostgresServer, where: str) -> None:
    password = postgres_server.password.reveal()
    schema = fresh_schema(postgres_server)
    project = _project(tmp_path, served, _state_url(postgres_server, schema, password, where))
    first = _outputs(project, [("run", "--env", "stage", "-v")])
    outputs = {"first run -v": first["run --env stage -v"], **_outputs(project, COMMANDS[:-1])}
    assert "mapsync status" in outputs["status --env stage"], outputs["status --env stage"]  # it did reach the store
    _assert_no_leak(outputs, password)

    _project(tmp_path, served, _state_url(postgres_server, schema, password, where, port=_closed_port()))
    down = _outputs(project, FAILING)
    assert all("cannot connect to the state store" in text for text in down.values()), down
    _assert_no_leak(down, password)

    _project(tmp_path, served, _state_url(postgres_server, schema, WRONG_PASSWORD, where))
    refused = _outputs(project, FAILING)
    assert all("password authentication failed" in text for text in refused.values()), refused
    _assert_no_leak(refused, WRONG_PASSWORD)

"""Security properties of a run, checked from the outside.

1. No secret in any output: ``mapsync`` runs as a subprocess against the emulators with client secrets
   that are distinctive strings (good and bad ones); none may appear in stdout, stderr, the state files
   (SQLite database and WAL, dead letters included) or the output of ``status`` / ``deadletters list``.
2. Config and mapping files cannot make mapsync read or write outside the project: relative paths that
   climb out are refused with the setting named; mapping imports are confined to the mapping root (the
   file outside is never read).
3. Filter values cannot change a query's structure: OData literals parse back (with the emulator's own,
   independent ``$filter`` parser) to one comparison with the same value, and the URLs the connectors
   build for lookups carry exactly the intended query parameters.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl.project import load_project
from mapsync.dsl.schema import load_catalog
from mapsync.emulators.dataverse.odata import Compare, Literal, Prop, parse_filter
from mapsync.emulators.server import Credentials, Emulator, start_in_thread
from mapsync.engine.config import CampaignSettings, D365Settings, Secret, ServiceLimits, load_config
from mapsync.engine.connectors.campaign import CampaignConnector
from mapsync.engine.connectors.d365 import D365Connector
from mapsync.engine.connectors.odata import literal
from mapsync.engine.errors import ConfigError
from mapsync.engine.http import HttpClient

ROOT = Path(__file__).resolve().parents[2]
MAPSYNC = [sys.executable, "-m", "mapsync.engine.cli"]
RUN_TIMEOUT_S = 60

# Distinctive values: any of them found in an output is a leak, never a coincidence.
GOOD_D365 = "GoodD365-" + uuid.uuid4().hex
GOOD_CAMPAIGN = "GoodAcs-" + uuid.uuid4().hex
BAD_D365 = "BadD365-" + uuid.uuid4().hex
BAD_CAMPAIGN = "BadAcs-" + uuid.uuid4().hex
SECRETS = (GOOD_D365, GOOD_CAMPAIGN, BAD_D365, BAD_CAMPAIGN)


# ------------------------------------------------------------------------------ 1. secrets


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Emulator, Any]]:
    credentials = Credentials(d365_client_secret=GOOD_D365, campaign_client_secret=GOOD_CAMPAIGN)
    emulator = Emulator(seed=3, contacts=40, credentials=credentials)
    running = start_in_thread(emulator)
    try:
        yield emulator, running
    finally:
        running.stop()


def _project(tmp: Path, emulator: Emulator, running: Any) -> Path:
    """A project folder: the shipped mappings and a mapsync.yaml whose secrets are ${VAR} references."""
    shutil.copytree(ROOT / "mappings", tmp / "mappings")
    shutil.copy(running.ca_file, tmp / "ca.pem")
    c = emulator.credentials
    base = running.base_url
    env = {
        "d365": {"url": base, "tenant_id": c.tenant_id, "client_id": c.d365_client_id,
                 "client_secret": "${MAPSYNC_D365_SECRET}", "authority_host": base,
                 "limits": {"max_retries": 1}},
        "campaign": {"organization": c.organization, "client_id": c.campaign_client_id,
                     "client_secret": "${MAPSYNC_CAMPAIGN_SECRET}", "ims_url": base, "base_url": base,
                     "limits": {"max_retries": 1}},
        "events": {"journal_url": f"{base}{c.journal_path}"},
        "state": "sqlite:///.mapsync/stage.sqlite",
        "ca_file": "ca.pem",
    }
    (tmp / "mapsync.yaml").write_text(yaml.safe_dump({"version": 1, "mappings": "mappings",
                                                      "environments": {"stage": env}}), encoding="utf-8")
    return tmp


def _mapsync(project: Path, *args: str, d365: str, campaign: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MAPSYNC_D365_SECRET": d365, "MAPSYNC_CAMPAIGN_SECRET": campaign}
    return subprocess.run([*MAPSYNC, "--config", str(project / "mapsync.yaml"), *args], cwd=project, env=environ,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)


def _leaks(text: str | bytes) -> list[str]:
    blob = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in blob]


def _state_leaks(project: Path) -> list[str]:
    found = []
    for path in (project / ".mapsync").rglob("*") if (project / ".mapsync").exists() else ():
        if path.is_file():
            found += [f"{path.name}: {s}" for s in _leaks(path.read_bytes())]
    return found


@pytest.mark.parametrize(("d365", "campaign"), [
    pytest.param(BAD_D365, BAD_CAMPAIGN, id="both-secrets-wrong"),
    pytest.param(GOOD_D365, BAD_CAMPAIGN, id="dataverse-works-campaign-refuses"),
    pytest.param(BAD_D365, GOOD_CAMPAIGN, id="dataverse-refuses-journal-works"),
])
def test_no_secret_in_any_output_of_a_run_with_bad_credentials(tmp_path: Path, served: Any, d365: str,
                                                                 campaign: str) -> None:
    project = _project(tmp_path, *served)
    run = _mapsync(project, "run", "--env", "stage", "-v", d365=d365, campaign=campaign)
    # The run made the state; the other commands only read it (or not at all), so they go side by side.
    others = [("plan", "--env", "stage"), ("status", "--env", "stage"), ("deadletters", "list", "--env", "stage"),
              ("schema", "pull", "--env", "stage", "--out", "pulled")]
    environ = {**os.environ, "MAPSYNC_D365_SECRET": d365, "MAPSYNC_CAMPAIGN_SECRET": campaign}
    running = [subprocess.Popen([*MAPSYNC, "--config", str(project / "mapsync.yaml"), *args], cwd=project, env=environ,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in others]
    outputs = {"run": (run.stdout, run.stderr)}
    for args, process in zip(others, running, strict=True):
        outputs[" ".join(args[:2])] = process.communicate(timeout=RUN_TIMEOUT_S)
    for command, (out, err) in outputs.items():
        assert "Traceback" not in err, (command, err[-2000:])
        assert not _leaks(out + err), (command, out[-1000:], err[-1000:])
    assert run.returncode != 0, "a run with a wrong secret must fail"
    said = (run.stdout + run.stderr).lower()
    assert "secret" in said or "credential" in said, f"the message should name the credentials:\n{run.stderr[-1500:]}"
    assert not _state_leaks(project)
    pulled = project / "pulled"
    for path in pulled.rglob("*") if pulled.exists() else ():
        assert path.is_dir() or not _leaks(path.read_bytes()), path


def test_secrets_are_not_in_the_config_repr(tmp_path: Path, served: Any) -> None:
    project = _project(tmp_path, *served)
    config = load_config(project / "mapsync.yaml", environ={"MAPSYNC_D365_SECRET": GOOD_D365,
                                                            "MAPSYNC_CAMPAIGN_SECRET": GOOD_CAMPAIGN})
    env = config.environment("stage")
    assert env.d365 is not None and env.d365.client_secret.reveal() == GOOD_D365  # resolved, not lost
    assert not _leaks(repr(config) + str(config) + repr(env) + str(env.d365) + str(env.campaign))


# ------------------------------------------------------------------------------ 2. confinement


def _config(project: Path, **overrides: Any) -> Path:
    """``project/mapsync.yaml`` with one environment; ``mappings`` or environment keys overridden."""
    (project / "mappings").mkdir(parents=True, exist_ok=True)
    env: dict[str, Any] = {"d365": {"url": "https://org.crm.dynamics.com", "tenant_id": "t", "client_id": "c",
                                    "client_secret": "${X_SECRET}"}}
    doc: dict[str, Any] = {"version": 1, "mappings": overrides.pop("mappings", "mappings"),
                           "environments": {"stage": {**env, **overrides}}}
    path = project / "mapsync.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(("override", "setting"), [
    ({"mappings": "../elsewhere"}, "mappings"),
    ({"mappings": "mappings/../../elsewhere"}, "mappings"),
    ({"state": "sqlite:///../../outside.sqlite"}, "environments.stage.state"),
    ({"state": "sqlite:///.mapsync/../../outside.sqlite"}, "environments.stage.state"),
    ({"ca_file": "../ca.pem"}, "environments.stage.ca_file"),
])
def test_config_paths_cannot_climb_out_of_the_project(tmp_path: Path, override: dict[str, str], setting: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "ca.pem").write_text("not a CA")
    (tmp_path / "elsewhere").mkdir()
    path = _config(project, **override)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"X_SECRET": "s"})
    assert setting in str(caught.value)
    assert not (tmp_path / "outside.sqlite").exists()


def test_a_run_with_a_state_path_outside_the_project_writes_nothing_there(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    path = _config(project, state="sqlite:///../outside.sqlite")
    done = subprocess.run([*MAPSYNC, "--config", str(path), "status", "--env", "stage"], cwd=project,
                          env={**os.environ, "X_SECRET": "s"}, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert "environments.stage.state" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outside.sqlite").exists()


@pytest.mark.parametrize("target", ["../outside.map", "sub/../../outside.map", "{abs}"])
def test_mapping_imports_are_confined_to_the_mapping_root(tmp_path: Path, target: str) -> None:
    root = tmp_path / "mappings"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside.map"
    # Not valid mapping text: had it been read, a syntax error in it would be reported.
    outside.write_text("this is not @@ a mapping {{{\n", encoding="utf-8")
    target = str(outside) if target == "{abs}" else target
    (root / "main.map").write_text(f'import "{target}"\n', encoding="utf-8")
    _, diagnostics = load_project([root], root=root)
    codes = [d.code for d in diagnostics]
    assert "E011" in codes, [str(d.message) for d in diagnostics]
    assert all(str(outside) not in str(d.span.file) for d in diagnostics), diagnostics  # never parsed


# ------------------------------------------------------------------------------ 3. filters keep their shape


# Values people type into CRMs, plus the characters that matter to OData and URLs.
FILTER_VALUES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="'\"&#%+=?/\\() ,;$@:eqorand", max_size=30),
    st.sampled_from(["' or 1 eq 1 or name eq '", "x') or (true", "a&$top=1", "a#frag", "%27", "a'';--",
                     "x eq 'y'", "null", "true", "00000000-0000-0000-0000-000000000000 or statecode eq 0"]),
)


def _compares_to(node: Any, column: str, value: str) -> bool:
    if not (isinstance(node, Compare) and node.op == "eq" and node.left == Prop(column)):
        return False
    right = node.right
    if not isinstance(right, Literal):
        return False
    if right.kind == "guid":
        return str(right.value).lower() == value.lower()
    return right.kind == "string" and right.value == value


@settings(max_examples=300)
@given(FILTER_VALUES)
def test_an_odata_literal_is_one_value_whatever_it_contains(value: str) -> None:
    node = parse_filter(f"emailaddress1 eq {literal(value)}")
    assert _compares_to(node, "emailaddress1", value), node


@settings(max_examples=150)
@given(FILTER_VALUES, FILTER_VALUES)
def test_two_literals_joined_by_or_stay_two_comparisons(a: str, b: str) -> None:
    # The shape the opt-out sync builds: ``key eq 'a' or key eq 'b'``.
    node = parse_filter(f"contactid eq {literal(a)} or contactid eq {literal(b)}")
    assert type(node).__name__ == "Or"
    assert _compares_to(node.left, "contactid", a) and _compares_to(node.right, "contactid", b)  # type: ignore[union-attr]


class _StaticToken:
    async def token(self, *, stale: str | None = None) -> str:
        return "t"


def _capture(reply: dict[str, Any]) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=reply)

    return seen, httpx.MockTransport(handler)


def _d365(transport: httpx.MockTransport) -> D365Connector:
    limits = ServiceLimits(max_retries=0)
    settings_ = D365Settings(url="https://org.example", tenant_id="t", client_id="c", client_secret=Secret("x"),
                             limits=limits)
    http = HttpClient("d365", limits, _StaticToken(), transport=transport, base_url=settings_.api_base)
    return D365Connector(settings_, http, load_catalog())


def _filter_of(request: httpx.Request) -> Any:
    return parse_filter(request.url.params["$filter"])


@settings(max_examples=150)
@given(FILTER_VALUES)
def test_a_pushed_down_read_carries_exactly_its_select_and_filter(value: str) -> None:
    seen, transport = _capture({"value": []})

    async def read() -> None:
        conn = _d365(transport)
        async for _ in conn.read("contact", ["contactid"], f"emailaddress1 eq {literal(value)}"):
            pass
        await conn.http.aclose()

    asyncio.run(read())
    (request,) = seen
    assert set(request.url.params.keys()) == {"$select", "$filter"}
    assert request.url.path == "/api/data/v9.2/contacts" and not request.url.fragment
    assert _compares_to(_filter_of(request), "emailaddress1", value)


@settings(max_examples=150)
@given(FILTER_VALUES)
def test_a_lookup_by_alternate_key_carries_exactly_its_select_and_filter(value: str) -> None:
    seen, transport = _capture({"value": []})

    async def find() -> None:
        conn = _d365(transport)
        await conn._find_by_key("acs_emailsend", ("acs_eventid", value))  # the create-recovery lookup
        await conn.http.aclose()

    asyncio.run(find())
    (request,) = seen
    assert set(request.url.params.keys()) == {"$select", "$filter"} and not request.url.fragment
    assert _compares_to(_filter_of(request), "acs_eventid", value)


@settings(max_examples=150)
@given(FILTER_VALUES)
def test_a_campaign_lookup_carries_exactly_its_filter_parameter(value: str) -> None:
    seen, transport = _capture({"content": []})
    limits = ServiceLimits(max_retries=0)
    settings_ = CampaignSettings(organization="org", client_id="c", client_secret=Secret("x"), limits=limits)

    http = HttpClient("campaign", limits, _StaticToken(), transport=transport, base_url=settings_.api_base)
    conn = CampaignConnector(settings_, http, load_catalog())
    filter_name, parameter = conn._filter_for("profile", "externalId")

    async def find() -> None:
        await conn.find("profile", "externalId", value)
        await http.aclose()

    asyncio.run(find())
    (request,) = seen
    assert list(request.url.params.multi_items()) == [(parameter, value)]
    assert request.url.path == f"{httpx.URL(settings_.api_base).path}{conn.path('profile')}/{filter_name}"
    assert not request.url.fragment

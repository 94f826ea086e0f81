"""load_config and URLs: a state store's password is lifted out wherever the URL carries it, and service URLs
are checked (host, port, no credentials) when the config loads — including URLs brought in by ${VAR}."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mapsync.engine.config import load_config
from mapsync.engine.errors import ConfigError


def _load(tmp_path: Path, state: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    (tmp_path / "mapsync.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        environments:
          prod: {{state: "{state}"}}
    """), encoding="utf-8")
    return load_config(tmp_path / "mapsync.yaml", environ=environ or {}).environment("prod")


def test_a_password_in_the_query_is_lifted_out_like_one_in_the_user_info(tmp_path: Path) -> None:
    env = _load(tmp_path, "postgresql://u@db:5432/state?sslmode=require&password=pa%40ss&application_name=x")
    assert env.state_url == "postgresql://u@db:5432/state?sslmode=require&application_name=x"
    assert env.state_password is not None and env.state_password.reveal() == "pa@ss"


def test_a_query_password_from_a_variable_is_taken_as_it_is(tmp_path: Path) -> None:
    env = _load(tmp_path, "postgresql://u@db/state?password=${PG_PW}", {"PG_PW": "a%b&c"})
    assert env.state_url == "postgresql://u@db/state"
    assert env.state_password is not None and env.state_password.reveal() == "a%b&c"
    assert repr(env.state_password) == "Secret('${PG_PW}')"


def test_a_password_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "postgresql://u:one@db/state?password=two")
    assert "environments.prod.state" in str(info.value) and "more than once" in str(info.value)
    assert "one" not in str(info.value).split("state:")[-1] and "two" not in str(info.value)


def test_other_credentials_stay_in_the_url_for_the_driver(tmp_path: Path) -> None:
    env = _load(tmp_path, "postgresql://u@db/state?sslpassword=key-pw")
    assert env.state_url == "postgresql://u@db/state?sslpassword=key-pw"  # shown only through redact_url


def test_an_unparsable_state_url_is_one_problem_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "postgresql://u:Zq7pw@[::1/state")
    assert "environments.prod.state" in str(info.value) and "Zq7pw" not in str(info.value)

"""load_config: schema checks with key paths, ${ENV} secrets, paths kept inside the project, no secret leaks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.engine.config import Config, Secret, ServiceLimits, load_config
from mapsync.engine.errors import ConfigError

FULL = """\
version: 1
mappings: maps
environments:
  stage:
    d365: {url: "https://org.crm4.dynamics.com/", tenant_id: "tid", client_id: "cid", client_secret: "${D365_SECRET}",
           authority_host: "https://login.example.test",
           limits: {concurrency: 16, requests_per_window: 6000, window_seconds: 300, batch_size: 100}}
    campaign: {organization: "acme", client_id: "acs-id", client_secret: "${ACS_SECRET}",
               ims_url: "https://ims.example.test", base_url: "https://mc.example.test", limits: {concurrency: 4}}
    events: {journal_url: "https://events.adobe.io/events/organizations/o/integrations/i/r", page_size: 50}
    state: "sqlite:///state/stage.sqlite"
    ca_file: certs/ca.pem
  prod:
    d365: {url: "https://prod.crm.dynamics.com", tenant_id: "t", client_id: "c", client_secret: "${D365_PROD}"}
    state: "postgresql://mapsync:${PG_PASSWORD}@db.internal:5432/mapsync?sslmode=require"
"""

CA_PEM = trustme.CA().cert_pem.bytes()  # ca_file must hold a real PEM certificate

ENV = {"D365_SECRET": "d365-s3cret-value", "ACS_SECRET": "acs-s3cret-value", "D365_PROD": "prod-s3cret", "PG_PASSWORD": "p@ss/w:rd%"}


def write(folder: Path, text: str, name: str = "mapsync.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_bytes(CA_PEM)  # ca_file must be a real PEM
    return tmp_path


def load_error(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV if environ is None else environ)
    return info.value


def test_full_config_loads_into_typed_settings(project: Path) -> None:
    config = load_config(write(project, FULL), environ=ENV)
    assert isinstance(config, Config)
    assert config.path == project / "mapsync.yaml"
    assert config.mappings == project / "maps"
    stage = config.environment("stage")
    assert stage.d365 is not None and stage.campaign is not None and stage.events is not None
    assert stage.d365.url == "https://org.crm4.dynamics.com"  # trailing slash dropped: api_base adds its own
    assert stage.d365.api_base == "https://org.crm4.dynamics.com/api/data/v9.2/"
    assert stage.d365.authority_host == "https://login.example.test"
    assert stage.d365.client_secret.reveal() == "d365-s3cret-value"
    assert stage.d365.limits == ServiceLimits(concurrency=16, requests_per_window=6000, window_seconds=300, batch_size=100)
    assert stage.campaign.api_base == "https://mc.example.test/acme/campaign/"
    assert stage.campaign.limits.concurrency == 4 and stage.campaign.limits.max_retries == ServiceLimits().max_retries
    assert stage.events.page_size == 50
    assert stage.state_url == f"sqlite:///{project}/state/stage.sqlite"
    assert stage.ca_file == project / "certs" / "ca.pem"
    prod = config.environment("prod")
    assert prod.campaign is None and prod.events is None and prod.ca_file is None


def test_defaults_for_optional_keys(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        environments:
          dev:
            events: {journal_url: "https://events.adobe.io/x"}
    """)
    config = load_config(path, environ={})
    dev = config.environment("dev")
    assert config.mappings == tmp_path / "mappings"
    assert dev.state_url == f"sqlite:///{tmp_path}/.mapsync/dev.sqlite"
    assert dev.d365 is None and dev.events is not None and dev.events.page_size == 100


def test_postgres_password_is_lifted_out_of_the_url(project: Path) -> None:
    prod = load_config(write(project, FULL), environ=ENV).environment("prod")
    assert prod.state_url == "postgresql://mapsync@db.internal:5432/mapsync?sslmode=require"
    assert prod.state_password is not None and prod.state_password.reveal() == "p@ss/w:rd%"
    assert repr(prod.state_password) == "Secret('${PG_PASSWORD}')"


def test_literal_postgres_password_is_percent_decoded_and_hidden(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        environments:
          prod: {state: "postgresql://u:pa%40ss@h/db"}
    """)
    prod = load_config(path, environ={}).environment("prod")
    assert prod.state_url == "postgresql://u@h/db"
    assert prod.state_password is not None and prod.state_password.reveal() == "pa@ss"
    assert "pa@ss" not in repr(prod) and "pa%40ss" not in repr(prod)


def test_unknown_environment_lists_the_known_ones(project: Path) -> None:
    config = load_config(write(project, FULL), environ=ENV)
    with pytest.raises(ConfigError, match=r"no environment 'staging'; known environments: prod, stage"):
        config.environment("staging")


def test_schema_problems_are_reported_all_at_once_with_key_paths(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        mapings: x
        environments:
          stage:
            d365: {url: "ftp://x", tenant_id: "", client_id: 3, client_secret: "${S}", limits: {concurrency: 0}}
            campaign: {organization: "o", client_id: "c"}
            state: "mysql://u@h/db"
    """)
    error = load_error(path)
    text = str(error)
    assert "environments.stage.d365.url: 'ftp://x' is not an https URL" in text
    assert "environments.stage.d365.tenant_id: must not be empty" in text
    assert "environments.stage.d365.client_id: expected a string, got a number" in text
    assert "environments.stage.d365.limits.concurrency: 0 is less than the minimum of 1" in text
    assert "environments.stage.campaign: missing required key 'client_secret'" in text
    assert "environments.stage.state: 'mysql://u@h/db' is not a state store URL" in text
    assert "mapings: unknown key (did you mean 'mappings'?)" in text
    assert text.startswith(f"{path}: 7 problems:")
    assert error.setting is not None


def test_schema_is_checked_before_secrets_are_looked_up(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        environments:
          stage: {d365: {url: "http://plain", tenant_id: t, client_id: c, client_secret: "${UNSET}"}}
    """)
    assert "is not an https URL" in str(load_error(path, environ={}))


def test_wrong_version_and_empty_file(tmp_path: Path) -> None:
    assert "version: 2 is not a configuration version" in str(
        load_error(write(tmp_path, "version: 2\nenvironments: {a: {}}\n"))
    )
    assert "the file is empty" in str(load_error(write(tmp_path, "")))
    assert "define at least one environment" in str(load_error(write(tmp_path, "version: 1\nenvironments: {}\n")))
    assert "(top level): expected a mapping, got a list" in str(load_error(write(tmp_path, "- 1\n")))


def test_all_missing_env_vars_in_one_error(project: Path) -> None:
    error = load_error(write(project, FULL), environ={"ACS_SECRET": "x", "D365_PROD": ""})
    text = str(error)
    assert "missing secrets: D365_SECRET (for environments.stage.d365.client_secret), " in text
    assert "D365_PROD (for environments.prod.d365.client_secret)" in text  # empty counts as missing
    assert "PG_PASSWORD (for environments.prod.state)" in text
    assert "ACS_SECRET" not in text
    assert error.setting == "environments.stage.d365.client_secret"


def test_env_reference_in_a_url_is_checked_after_resolution(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        environments:
          stage: {events: {journal_url: "${JOURNAL}"}}
    """)
    assert load_config(path, environ={"JOURNAL": "https://j.example/x"}).environment("stage").events.journal_url == (
        "https://j.example/x"
    )
    assert "environments.stage.events.journal_url: 'ftp://j' is not an https URL" in str(
        load_error(path, environ={"JOURNAL": "ftp://j"})
    )


@pytest.mark.parametrize(
    ("line", "setting"),
    [
        ("mappings: ../elsewhere", "mappings"),
        ("mappings: maps/../../elsewhere", "mappings"),
    ],
)
def test_mappings_folder_must_stay_inside_the_project(tmp_path: Path, line: str, setting: str) -> None:
    path = write(tmp_path, f"version: 1\n{line}\nenvironments: {{dev: {{}}}}\n")
    error = load_error(path)
    assert error.setting == setting
    assert "points outside the project folder" in str(error) and "absolute path" in str(error)


def test_state_and_ca_file_must_stay_inside_the_project(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        environments:
          dev: {state: "sqlite:///../x.sqlite", ca_file: "certs/../../ca.pem"}
    """)
    text = str(load_error(path))
    assert "environments.dev.state: '../x.sqlite' points outside the project folder" in text
    assert "environments.dev.ca_file: 'certs/../../ca.pem' points outside the project folder" in text


def test_absolute_paths_are_allowed_when_given_explicitly(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(CA_PEM)  # ca_file must be a real PEM certificate
    path = write(project, f"""\
        version: 1
        mappings: {tmp_path}/maps
        environments:
          dev: {{state: "sqlite:///{tmp_path}/state.sqlite", ca_file: "{ca}"}}
    """)
    config = load_config(path, environ={})
    assert config.mappings == tmp_path / "maps"
    assert config.environment("dev").state_url == f"sqlite:///{tmp_path}/state.sqlite"
    assert config.environment("dev").ca_file == ca


def test_missing_ca_file_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nenvironments: {dev: {ca_file: certs/none.pem}}\n")
    assert "environments.dev.ca_file: " in str(load_error(path)) and "does not exist" in str(load_error(path))


def test_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nenvironments:\n  stage: {d365: [\n")
    text = str(load_error(path))
    assert text.startswith(f"{path}:4:1: invalid YAML:")


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nenvironments:\n  dev: {}\n  dev: {}\n")
    assert f"{path}:4:3: invalid YAML:" in str(load_error(path)) and "duplicate key 'dev'" in str(load_error(path))


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    text = str(load_error(tmp_path / "mapsync.yaml"))
    assert "no such configuration file" in text and "mapsync emulate --write-config mapsync.yaml" in text
    assert "is a folder" in str(load_error(tmp_path))


# --- secrets never leak ---------------------------------------------------------------------------------

# The marker keeps a generated secret from being a word the file or the messages contain anyway ("environments").
SECRET_TEXT = st.text(alphabet="abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=8, max_size=24).map(
    lambda tail: "Zq7" + tail
)


@settings(max_examples=60)
@given(secret=SECRET_TEXT)
def test_no_secret_value_in_any_repr_or_message(tmp_path_factory: pytest.TempPathFactory, secret: str) -> None:
    folder = tmp_path_factory.mktemp("leak")
    environ = {"D365_SECRET": secret, "ACS_SECRET": secret + "a", "D365_PROD": secret + "b", "PG_PASSWORD": secret + "c"}
    (folder / "certs").mkdir()
    (folder / "certs" / "ca.pem").write_bytes(CA_PEM)
    config = load_config(write(folder, FULL), environ=environ)
    shown = [repr(config), str(config)]
    for env in config.environments.values():
        shown += [repr(env), str(env), env.state_url, repr(env.d365), str(env.state_password)]
    messages = []
    # Broken in ways that make mapsync talk about the values: wrong types, a bad URL holding the password,
    # YAML errors on the secret's line, other variables missing.
    for text in [
        FULL.replace('"${D365_SECRET}"', f"[{secret}]"),
        FULL.replace('"${D365_SECRET}"', f"{{x: {secret}}}"),
        FULL.replace("postgresql://mapsync:${PG_PASSWORD}@", f"mysql://mapsync:{secret}@"),
        FULL.replace('"${D365_SECRET}"', f'"{secret}" "oops"'),
        FULL.replace('"${D365_SECRET}"', f'"{secret}\\q"'),
        FULL.replace("certs/ca.pem", "../ca.pem").replace('"${D365_SECRET}"', secret),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(write(folder, text), environ=environ)
        messages.append(str(info.value))
    with pytest.raises(ConfigError) as info:
        load_config(write(folder, FULL), environ={"D365_SECRET": secret})
    messages.append(str(info.value))
    for text in shown + messages:
        assert secret not in text
    assert secret in str(config.environment("stage").d365.client_secret.reveal())  # still usable


def test_secret_repr_shows_only_the_variable_name() -> None:
    assert repr(Secret("v", "${X}")) == "Secret('${X}')" and str(Secret("v")) == "***" and repr(Secret("v")) == "Secret('***')"


def test_partial_reference_does_not_expose_literal_text(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        environments:
          dev: {campaign: {organization: o, client_id: c, client_secret: "prefix-literal-${REST}"}}
    """)
    secret = load_config(path, environ={"REST": "tail"}).environment("dev").campaign.client_secret
    assert secret.reveal() == "prefix-literal-tail"
    assert "prefix-literal" not in repr(secret)


# --- campaign.sftp and bulk -----------------------------------------------------------------------------------

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

SFTP = f"""\
version: 1
environments:
  stage:
    campaign:
      organization: acme
      client_id: acs-id
      client_secret: "${{ACS_SECRET}}"
      sftp: {{host: sftp.acme.test, port: 2222, username: mapsync, password: "${{SFTP_PASSWORD}}",
             host_key: "{HOST_KEY}"}}
    bulk:
      min_records: 500
      chunk_records: 1000
      signal_interval_seconds: 1
      workflows: {{profile: {{workflow: WKFIMPPROFILE, signal: signal1}}, cusVehicle: {{workflow: WKFIMPCUSVEHICLE}}}}
"""


def test_sftp_and_bulk_settings_are_typed_and_the_password_is_a_secret(project: Path) -> None:
    env = load_config(write(project, SFTP), environ={**ENV, "SFTP_PASSWORD": "sftp-s3cret"}).environment("stage")
    sftp = env.campaign.sftp
    assert sftp is not None and (sftp.host, sftp.port, sftp.username, sftp.host_key) == (
        "sftp.acme.test", 2222, "mapsync", HOST_KEY)
    assert isinstance(sftp.password, Secret) and sftp.password.reveal() == "sftp-s3cret"
    assert "sftp-s3cret" not in repr(env) and (sftp.incoming, sftp.outgoing) == ("/incoming", "/outgoing")
    assert (env.bulk.min_records, env.bulk.chunk_records, env.bulk.signal_interval_seconds) == (500, 1000, 1)
    assert env.bulk.workflows["cusVehicle"].workflow == "WKFIMPCUSVEHICLE"
    assert env.bulk.workflows["cusVehicle"].signal == "signal1"
    assert env.bulk.work_dir == project / ".mapsync" / "bulk"


def test_bulk_settings_default_when_absent(project: Path) -> None:
    env = load_config(write(project, FULL), environ=ENV).environment("stage")
    assert env.campaign.sftp is None and env.bulk.min_records == 20_000 and env.bulk.signal_interval_seconds == 600


@pytest.mark.parametrize(("change", "setting", "words"), [
    (lambda t: t.replace(f'host_key: "{HOST_KEY}"', 'host_key: "AAAA"'), "sftp.host_key", "not an SSH public host key"),
    (lambda t: t.replace(f'host_key: "{HOST_KEY}"', 'host_key: "ssh-ed25519 AAAAbroken"'), "sftp.host_key",
     "ssh-keyscan"),
    (lambda t: t.replace(f',\n             host_key: "{HOST_KEY}"', ""), "sftp", "missing required key 'host_key'"),
    (lambda t: t.replace('password: "${SFTP_PASSWORD}"', "private_key: keys/none"), "sftp.private_key",
     "is not a file"),
    (lambda t: t.replace('password: "${SFTP_PASSWORD}"', 'password: "${SFTP_PASSWORD}", private_key: k'), "sftp",
     "exactly one of"),
])
def test_sftp_mistakes_are_one_clear_line_naming_the_setting(project: Path, change, setting: str, words: str) -> None:
    error = load_error(write(project, change(SFTP)), {**ENV, "SFTP_PASSWORD": "sftp-s3cret"})
    assert setting in str(error) and words in str(error)
    assert "sftp-s3cret" not in str(error) and "Traceback" not in str(error)


def _key_pair(passphrase: str | None = None) -> tuple[str, str]:
    """A fresh ed25519 key: its private text (OpenSSH, encrypted with ``passphrase``) and public line."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_private_key("openssh", passphrase).decode(), key.export_public_key().decode().strip()


KEY_SETTING = 'private_key: "${SFTP_KEY}"'


def test_a_private_key_can_come_from_a_variable_and_stays_a_secret(project: Path) -> None:
    private, _ = _key_pair("key-pass")
    text = SFTP.replace('password: "${SFTP_PASSWORD}"', KEY_SETTING + ', passphrase: "${SFTP_PASSPHRASE}"')
    env = load_config(write(project, text), environ={**ENV, "SFTP_KEY": private, "SFTP_PASSPHRASE": "key-pass"}
                      ).environment("stage")
    sftp = env.campaign.sftp
    assert sftp is not None and sftp.password is None
    assert isinstance(sftp.private_key, Secret) and sftp.private_key.reveal() == private
    assert isinstance(sftp.passphrase, Secret) and sftp.passphrase.reveal() == "key-pass"
    assert "PRIVATE KEY" not in repr(env) and "key-pass" not in repr(env) and "${SFTP_KEY}" in repr(sftp)


def test_a_private_key_file_inside_the_project_is_a_path(project: Path) -> None:
    private, _ = _key_pair()
    (project / "keys").mkdir()
    (project / "keys" / "campaign_sftp").write_text(private)
    text = SFTP.replace('password: "${SFTP_PASSWORD}"', "private_key: keys/campaign_sftp")
    sftp = load_config(write(project, text), environ=ENV).environment("stage").campaign.sftp
    assert sftp is not None and sftp.private_key == project / "keys" / "campaign_sftp" and sftp.passphrase is None


@pytest.mark.parametrize(("key", "passphrase", "words"), [
    ("encrypted", None, "is encrypted: give `passphrase`"),
    ("encrypted", "wrong", "`passphrase` does not open it"),
    ("broken", None, "is not a private key asyncssh can read"),
])
def test_a_private_key_that_does_not_open_is_one_clear_line_without_the_key(project: Path, key: str,
                                                                            passphrase: str | None,
                                                                            words: str) -> None:
    private, _ = _key_pair("right")
    value = private if key == "encrypted" else "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n"
    setting = KEY_SETTING + (', passphrase: "${SFTP_PASSPHRASE}"' if passphrase else "")
    environ = {**ENV, "SFTP_KEY": value, **({"SFTP_PASSPHRASE": passphrase} if passphrase else {})}
    error = str(load_error(write(project, SFTP.replace('password: "${SFTP_PASSWORD}"', setting)), environ))
    assert "sftp.private_key" in error and words in error and "${SFTP_KEY}" in error
    assert "PRIVATE KEY" not in error and "bm90IGEga2V5" not in error and "Traceback" not in error
    assert "wrong" not in error and "right" not in error


def test_a_key_encrypted_with_a_dash_is_still_said_to_need_its_passphrase(project: Path) -> None:
    private, _ = _key_pair("-")  # the one passphrase the check itself tries
    error = str(load_error(write(project, SFTP.replace('password: "${SFTP_PASSWORD}"', KEY_SETTING)),
                           {**ENV, "SFTP_KEY": private}))
    assert "sftp.private_key" in error and "is encrypted: give `passphrase`" in error


def test_an_encrypted_key_is_opened_once_however_often_it_is_asked_for(project: Path) -> None:
    """Its KDF takes 0.1-1 s: the config load and every SFTP (re)connect share one opening."""
    from mapsync.engine.config import _open_key, load_private_key

    private, _ = _key_pair("key-pass")
    text = SFTP.replace('password: "${SFTP_PASSWORD}"', KEY_SETTING + ', passphrase: "${SFTP_PASSPHRASE}"')
    environ = {**ENV, "SFTP_KEY": private, "SFTP_PASSPHRASE": "key-pass"}
    before = _open_key.cache_info().misses
    sftp = load_config(write(project, text), environ=environ).environment("stage").campaign.sftp
    assert sftp is not None and sftp.private_key is not None
    first = load_private_key(sftp.private_key, sftp.passphrase)
    assert load_private_key(sftp.private_key, sftp.passphrase) is first
    assert _open_key.cache_info().misses == before + 1

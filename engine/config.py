"""Typed settings of one environment (`mapsync.yaml`): what connectors, auth and the state store are given.

``load_config`` reads the file, checks it against ``schemas/config.schema.json`` (every problem at once,
each named by its key path), resolves ``${ENV_VAR}`` references (every missing variable at once), resolves
relative paths against the config file's folder and refuses paths that climb out of it, and checks what
a schema cannot: service URLs (a host, a port from 1 to 65535, no credentials or query), a ``ca_file``
holding PEM certificates. A state store's password is lifted out of its URL. Secrets are held
in ``Secret``, whose repr and str never show the value; no message built here ever contains one.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml

from mapsync import resources
from mapsync.dsl.schema import DEFAULT_ROOT, project_snapshot_root
from mapsync.engine.errors import ConfigError
from mapsync.engine.redact import is_sensitive_parameter, redact_url, redact_urls

__all__ = [
    "BulkSettings",
    "BulkWorkflow",
    "CampaignSettings",
    "Config",
    "D365Settings",
    "Environment",
    "EventsSettings",
    "Secret",
    "ServiceLimits",
    "SftpSettings",
    "load_config",
    "load_private_key",
    "private_key_problem",
]

CONFIG_VERSION = 1
_SCHEMA_PATH = resources.config_schema()
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class Secret:
    """A credential. Shows as ``***`` everywhere; ``reveal()`` is the one way to read it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source  # where it came from, e.g. "${D365_CLIENT_SECRET}"; safe to print

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source or '***'!r})" if self.source else "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """How hard mapsync may push one service. ``concurrency`` is the ceiling the adaptive limiter climbs to."""

    concurrency: int = 8
    requests_per_window: int | None = None  # e.g. Dataverse: 6000 per 300 s per user
    window_seconds: float = 300.0
    timeout_seconds: float = 60.0
    max_retries: int = 8
    batch_size: int = 100  # Dataverse $batch parts per request (<= 1000)
    outage_seconds: float = 60.0  # unreachable this long: every flow using the service stops (circuit breaker)


@dataclass(frozen=True, slots=True)
class D365Settings:
    url: str  # https://<org>.crm.dynamics.com (no trailing /api/data)
    tenant_id: str
    client_id: str
    client_secret: Secret
    authority_host: str = "https://login.microsoftonline.com"  # the emulator's Entra ID for tests and the demo
    api_version: str = "9.2"
    limits: ServiceLimits = field(default_factory=ServiceLimits)

    @property
    def api_base(self) -> str:
        return f"{self.url.rstrip('/')}/api/data/v{self.api_version}/"

    @property
    def scope(self) -> str:
        return f"{self.url.rstrip('/')}/.default"


@dataclass(frozen=True, slots=True)
class SftpSettings:
    """The Campaign instance's SFTP storage. ``host_key`` is the server's public key line, pinned: a server
    that shows another key is refused (there is no "accept any")."""

    host: str
    username: str
    host_key: str  # OpenSSH one-line public key: "ssh-ed25519 AAAA..." (a trailing comment is allowed)
    port: int = 22
    password: Secret | None = None
    # A key file (relative paths resolved against the config file's folder), or the key's own text from a
    # ${VAR} (so a key need not be a file beside the project, where it could be committed by mistake).
    private_key: Path | Secret | None = None
    passphrase: Secret | None = None  # for an encrypted private key
    incoming: str = "/incoming"  # where mapsync uploads import files
    outgoing: str = "/outgoing"  # where the import workflow writes its rejects and completion markers


@dataclass(frozen=True, slots=True)
class BulkWorkflow:
    """The Campaign import workflow of one resource and the name of its External signal activity."""

    workflow: str
    signal: str = "signal1"


@dataclass(frozen=True, slots=True)
class BulkSettings:
    """When and how a full read goes to Campaign through file import instead of one REST call per record."""

    min_records: int = 20_000  # a full read planning more writes than this takes the bulk path
    chunk_records: int = 100_000  # rows per file
    signal_interval_seconds: float = 600.0  # Adobe: one signal per workflow at most every 10 minutes
    poll_seconds: float = 5.0
    timeout_seconds: float = 6 * 3600.0  # how long to wait for an import before stopping (resumable)
    work_dir: Path = Path(".mapsync/bulk")  # where the files are written before upload (a config file: beside it)
    workflows: Mapping[str, BulkWorkflow] = field(default_factory=dict)  # Campaign resource -> its workflow


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    organization: str
    client_id: str
    client_secret: Secret
    ims_url: str = "https://ims-na1.adobelogin.com"
    base_url: str = "https://mc.adobe.io"
    scopes: tuple[str, ...] = ("openid", "AdobeID", "campaign_sdk", "additional_info.projectedProductContext")
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    sftp: SftpSettings | None = None  # without it, bulk loads are unavailable

    @property
    def api_base(self) -> str:
        return f"{self.base_url.rstrip('/')}/{self.organization}/campaign/"


@dataclass(frozen=True, slots=True)
class EventsSettings:
    journal_url: str  # https://events.adobe.io/events/organizations/<org>/integrations/<int>/<registration>
    page_size: int = 100
    limits: ServiceLimits = field(default_factory=ServiceLimits)


@dataclass(frozen=True, slots=True)
class Environment:
    name: str
    d365: D365Settings | None
    campaign: CampaignSettings | None
    events: EventsSettings | None
    state_url: str  # sqlite:////abs/path/file.sqlite or postgresql://user@host/db (never holds a password)
    ca_file: Path | None = None  # extra CA bundle to trust (the emulator's test CA)
    # The state URL's password, lifted out of the URL so the URL can be printed; give it to open_store.
    state_password: Secret | None = None
    bulk: BulkSettings = field(default_factory=BulkSettings)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    mappings: Path
    environments: dict[str, Environment]
    # The schema snapshots the mappings are checked against: `snapshots:` in the file, else the project's
    # own schemas/snapshots, else the built-in ones.
    snapshots: Path = DEFAULT_ROOT

    def environment(self, name: str) -> Environment:
        """The environment called ``name``; an unknown name is a ``ConfigError`` listing the known ones."""
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "(none)"
            raise ConfigError(
                f"{self.path}: no environment {name!r}; known environments: {known}", setting="environments"
            ) from None


# ---------------------------------------------------------------------------------------------------------
# Loading


def load_config(path: Path, *, environ: Mapping[str, str] = os.environ, only: str | None = None) -> Config:
    """Read ``mapsync.yaml`` at ``path`` into a ``Config``; any problem a user can fix is a ``ConfigError``.

    ``only`` keeps one environment: a runner for ``stage`` is not asked for ``prod``'s secrets."""
    path = Path(path)
    raw = _read_yaml(path)
    problems = _schema_problems(raw)
    if problems:
        raise _problems_error(path, problems)
    if only is not None:
        raw = {**raw, "environments": {only: _one_environment(path, raw["environments"], only)}}
    resolved = _resolve_references(path, raw, environ)
    # A ${VAR} may have stood in for a URL: check the values the variables brought in against the schema too.
    problems = _schema_problems(resolved) or _url_problems(resolved)
    if problems:
        raise _problems_error(path, problems)
    return _build(path, raw, resolved, environ)


def _one_environment(path: Path, environments: dict[str, Any], name: str) -> Any:
    if name not in environments:
        known = ", ".join(sorted(environments)) or "(none)"
        raise ConfigError(f"{path}: no such environment {name!r}; known environments: {known}",
                          setting="environments")
    return environments[name]


def snapshot_root(path: Path) -> Path:
    """The snapshots of the project whose configuration file is ``path``, for the commands that need no
    environment (validate, test, compile, schema pull): they must work in CI without the secrets
    ``load_config`` resolves, so only the ``snapshots`` setting is read here, and a file that is missing or
    does not parse leaves the project's own ``schemas/snapshots`` (or the built-in ones)."""
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raw = None
    setting = raw.get("snapshots") if isinstance(raw, dict) else None
    if isinstance(setting, str) and setting:
        problems: list[_Problem] = []
        chosen = _inside(folder, setting, "snapshots", problems)
        if problems or chosen is None or not chosen.is_dir():
            raise ConfigError(f"{path}: snapshots: {setting!r} is not a folder of schema snapshots inside the "
                              "project", setting="snapshots")
        return chosen
    return project_snapshot_root(folder)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such configuration file. Write one (see the operations guide), or for a local try "
            f"against the emulators run `mapsync emulate --write-config {path.name}`."
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a configuration file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        # problem/context only: str(exc) would quote the file's text, which may hold a secret.
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"{where}: invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {type(exc).__name__}") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML would silently keep the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# --- schema -----------------------------------------------------------------------------------------------


@cache
def _validator() -> Any:
    import jsonschema  # imported here: only loading a config needs it

    schema = json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


@dataclass(frozen=True, slots=True, order=True)
class _Problem:
    setting: str  # key path, e.g. environments.stage.d365.url ("" for the top level)
    message: str

    def __str__(self) -> str:
        return f"{self.setting or '(top level)'}: {self.message}"


def _dotted(parts: Iterator[Any] | list[Any] | tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _schema_problems(doc: Any) -> list[_Problem]:
    if doc is None:
        return [_Problem("", "the file is empty; it needs at least `version: 1` and `environments:`")]
    problems = {_describe(error) for error in _validator().iter_errors(doc)}
    return sorted(problems)


def _describe(error: Any) -> _Problem:
    """Turn one jsonschema error into a message naming the key path, never echoing a secret."""
    where = list(error.absolute_path)
    setting = _dotted(where)
    schema, kind, value = error.schema, error.validator, error.instance
    secret = isinstance(schema, dict) and schema.get("x-secret", False)
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        name = next((k for k in missing if repr(k) in error.message), missing[0] if missing else "?")
        return _Problem(setting, f"missing required key {name!r}")
    if kind == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extra = sorted(str(k) for k in value if k not in schema.get("properties", {}))
        key = extra[0] if extra else "?"
        hint = difflib.get_close_matches(key, known, n=1)
        also = f" (did you mean {hint[0]!r}?)" if hint else f" (expected one of: {', '.join(known)})"
        return _Problem(_dotted([*where, key]), f"unknown key{also}")
    if kind == "minProperties" and setting == "environments":
        return _Problem(setting, "define at least one environment (e.g. `stage:`)")
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        got = "nothing" if value is None else _yaml_type(value)
        return _Problem(setting, f"expected {_article(expected)}, got {got}")
    if kind == "minLength":
        return _Problem(setting, "must not be empty")
    if secret:
        return _Problem(setting, "is not a valid secret value")
    if isinstance(schema, dict) and "x-message" in schema:
        return _Problem(setting, f"{_show(value)} {schema['x-message']}")
    if kind in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems"}:
        return _Problem(setting, error.message)
    return _Problem(setting, f"{_show(value)} is not allowed here ({kind})")


def _article(word: str) -> str:
    return {"object": "a mapping", "array": "a list", "integer": "an integer"}.get(word, f"a {word}")


def _yaml_type(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A value for a message: URLs lose their credentials, long values are cut."""
    if isinstance(value, str):
        value = redact_url(value) if "://" in value else value
        return repr(value if len(value) <= 120 else value[:117] + "...")
    return repr(value)


# --- service URLs ---------------------------------------------------------------------------------------------

# The https URLs of a service block; each is joined with API paths, so it is a bare origin (and path).
_SERVICE_URLS = {"d365": ("url", "authority_host"), "campaign": ("ims_url", "base_url"), "events": ("journal_url",)}


def _url_problems(doc: dict[str, Any]) -> list[_Problem]:
    """What the schema's pattern cannot see in the service URLs (after ${VAR} resolution): host, port, extras."""
    problems: list[_Problem] = []
    for name, env in doc["environments"].items():
        for service, keys in _SERVICE_URLS.items():
            block = env.get(service) or {}
            for key in keys:
                if key in block:
                    problem = _url_problem(block[key])
                    if problem:
                        problems.append(_Problem(f"environments.{name}.{service}.{key}", problem))
    return sorted(problems)


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be used as a service URL, or None; the message never shows a credential."""
    import httpx  # imported here: only a config with service URLs needs it

    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"the URL cannot be parsed ({exc}); write it as https://host[:port][/path]"
    shown = _show(url)
    if not parts.hostname:
        return f"{shown} has no host name"
    try:
        port = parts.port
    except ValueError:
        given = parts.netloc.rsplit("@", 1)[-1].rpartition(":")[2]
        return f"{shown} has an invalid port {given[:20]!r}: a port is a number from 1 to 65535"
    if port == 0:
        return f"{shown} has port 0: a port is a number from 1 to 65535"
    if parts.username is not None or parts.password is not None:
        return f"{shown} holds a user name or password; credentials belong in client_secret, not in a URL"
    if parts.query or parts.fragment:
        sensitive = any(is_sensitive_parameter(item.partition("=")[0]) for item in parts.query.split("&"))
        what = "a credential in its query string" if sensitive else "a query string or fragment"
        return f"{shown} has {what}; give the service's base URL (https://host[:port][/path]) only"
    try:
        _ = httpx.URL(url).host  # the host is decoded (IDNA) only when asked for
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:  # idna's errors are UnicodeErrors
        return f"{shown} is not a valid URL ({redact_urls(str(exc))[:80]})"
    return None


# --- the CA bundle ---------------------------------------------------------------------------------------------

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def _ca_problem(file: Path) -> str | None:
    """Why ``file`` cannot be a CA bundle (PEM certificates), or None; never quotes the file's content."""
    shown = repr(str(file))
    if not file.is_file():
        return f"{shown} does not exist" if not file.exists() else f"{shown} is not a file"
    try:
        data = file.read_bytes()
    except OSError as exc:
        return f"{shown} cannot be read: {exc.strerror}"
    if _PEM_CERTIFICATE not in data:
        return f"{shown} is not a PEM certificate file (no '-----BEGIN CERTIFICATE-----' block)"
    try:
        ssl.create_default_context().load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError, ValueError):
        return f"{shown} holds a certificate block that cannot be read; give the CA bundle in PEM form"
    return None


def _problems_error(path: Path, problems: list[_Problem]) -> ConfigError:
    if len(problems) == 1:
        message = f"{path}: {problems[0]}"
    else:
        lines = "\n".join(f"  {p}" for p in problems)
        message = f"{path}: {len(problems)} problems:\n{lines}"
    return ConfigError(message, setting=problems[0].setting or None)


# --- ${ENV} references --------------------------------------------------------------------------------------


def _resolve_references(path: Path, raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``raw`` with every ``${VAR}`` replaced; all unset (or empty) variables reported at once."""
    missing: list[tuple[str, str]] = []

    def walk(node: Any, where: list[Any]) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, [*where, k]) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, [*where, i]) for i, v in enumerate(node)]
        if isinstance(node, str):
            for name in _ENV_REF.findall(node):
                if not environ.get(name):
                    missing.append((name, _dotted(where)))
            return _ENV_REF.sub(lambda m: environ.get(m.group(1), ""), node)
        return node

    resolved = walk(raw, [])
    if missing:
        listed = ", ".join(f"{name} (for {setting})" for name, setting in missing)
        noun = "secret" if len(missing) == 1 else "secrets"
        raise ConfigError(
            f"{path}: missing {noun}: {listed}. Set these environment variables (unset and empty both count as "
            "missing).",
            setting=missing[0][1],
        )
    return resolved


def _secret(raw: str, resolved: str) -> Secret:
    whole = _WHOLE_REF.match(raw)
    # The source is shown in reprs, so it may only ever be the variable's name, never literal text.
    return Secret(resolved, f"${{{whole.group(1)}}}" if whole else "")


# --- building the typed settings ---------------------------------------------------------------------------


def _build(path: Path, raw: dict[str, Any], doc: dict[str, Any], environ: Mapping[str, str]) -> Config:
    root = Path(os.path.abspath(path)).parent
    problems: list[_Problem] = []
    mappings = _inside(root, doc.get("mappings", "mappings"), "mappings", problems)
    snapshots = project_snapshot_root(root)
    if "snapshots" in doc:
        snapshots = _inside(root, doc["snapshots"], "snapshots", problems) or snapshots
        if not snapshots.is_dir():
            problems.append(_Problem("snapshots", f"{str(snapshots)!r} is not a folder of schema snapshots"))
    environments: dict[str, Environment] = {}
    for name, env in doc["environments"].items():
        raw_env = raw["environments"][name]
        where = f"environments.{name}"
        ca_file = None
        if "ca_file" in env:
            ca_file = _inside(root, env["ca_file"], f"{where}.ca_file", problems)
            problem = _ca_problem(ca_file) if ca_file is not None else None
            if problem:
                problems.append(_Problem(f"{where}.ca_file", problem))
        state_raw = raw_env.get("state", f"sqlite:///.mapsync/{name}.sqlite")
        state_url, state_password = _state_url(root, state_raw, environ, where, problems)
        campaign = None
        if "campaign" in env:
            sftp = _sftp(root, env["campaign"].get("sftp"), raw_env["campaign"].get("sftp"),
                         f"{where}.campaign.sftp", problems)
            campaign = _campaign(env["campaign"], raw_env["campaign"], sftp)
        environments[name] = Environment(
            name=name,
            d365=_d365(env["d365"], raw_env["d365"]) if "d365" in env else None,
            campaign=campaign,
            events=_events(env["events"]) if "events" in env else None,
            state_url=state_url,
            ca_file=ca_file,
            state_password=state_password,
            bulk=_bulk(root, env.get("bulk") or {}, f"{where}.bulk", problems),
        )
    if problems:
        raise _problems_error(path, sorted(problems))
    return Config(path=Path(os.path.abspath(path)), mappings=mappings or root, environments=environments,
                  snapshots=snapshots)


def _inside(root: Path, value: str, setting: str, problems: list[_Problem]) -> Path | None:
    """``value`` as an absolute path; a relative one must not climb out of the project folder."""
    given = Path(value)
    if given.is_absolute():
        return Path(os.path.normpath(given))
    # Lexical check (normpath, not resolve): a symlink the user made on purpose is theirs to keep.
    candidate = Path(os.path.normpath(root / given))
    if not candidate.is_relative_to(root):
        problems.append(
            _Problem(
                setting,
                f"{value!r} points outside the project folder {str(root)!r}; keep it inside, or give an "
                "absolute path if that is really meant",
            )
        )
        return None
    return candidate


def _state_url(
    root: Path, raw: str, environ: Mapping[str, str], where: str, problems: list[_Problem]
) -> tuple[str, Secret | None]:
    def sub(text: str) -> str:
        return _ENV_REF.sub(lambda m: environ.get(m.group(1), ""), text)

    setting = f"{where}.state"
    resolved = sub(raw)
    if resolved.startswith("sqlite:///"):
        rest = resolved[len("sqlite:///") :]
        if rest == ":memory:":
            return resolved, None
        file = _inside(root, rest, setting, problems)
        return (f"sqlite:///{file}" if file else resolved), None
    # postgresql: split before substituting (a variable's value may hold '@' or '/'), and lift the password
    # out of the user-info and the query so the URL itself can be shown anywhere.
    try:
        parts = urlsplit(raw)
    except ValueError as exc:
        problems.append(_Problem(setting, f"the URL cannot be parsed ({exc})"))
        return "postgresql://", None
    netloc, raw_password = sub(parts.netloc), ""
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, _, raw_password = userinfo.partition(":")
        netloc = f"{sub(user)}@{sub(host)}"
    items = parts.query.split("&") if parts.query else []
    lifted = [item.partition("=")[2] for item in items if _is_password_parameter(item)]
    kept = [item for item in items if not _is_password_parameter(item)]
    if len(lifted) + bool(raw_password) > 1:
        problems.append(_Problem(setting, "gives the password more than once (in the user-info and the query); "
                                          "give it once"))
    raw_password = raw_password or (lifted[0] if lifted else "")
    url = urlunsplit(parts._replace(netloc=netloc, path=sub(parts.path), query=sub("&".join(kept))))
    if not raw_password:
        return url, None
    # Typed into the URL, a password is percent-encoded; brought in by a variable it is taken as it is.
    value = sub(raw_password) if _ENV_REF.search(raw_password) else unquote(raw_password)
    return url, _secret(raw_password, value)


def _is_password_parameter(item: str) -> bool:
    return unquote(item.partition("=")[0]).strip().lower() == "password"


def _limits(doc: Mapping[str, Any] | None) -> ServiceLimits:
    return ServiceLimits(**doc) if doc else ServiceLimits()


def _d365(doc: dict[str, Any], raw: dict[str, Any]) -> D365Settings:
    extra = {k: doc[k] for k in ("authority_host", "api_version") if k in doc}
    return D365Settings(
        url=doc["url"].rstrip("/"),
        tenant_id=doc["tenant_id"],
        client_id=doc["client_id"],
        client_secret=_secret(raw["client_secret"], doc["client_secret"]),
        limits=_limits(doc.get("limits")),
        **extra,
    )


def _campaign(doc: dict[str, Any], raw: dict[str, Any], sftp: SftpSettings | None = None) -> CampaignSettings:
    extra: dict[str, Any] = {k: doc[k] for k in ("ims_url", "base_url") if k in doc}
    if "scopes" in doc:
        extra["scopes"] = tuple(doc["scopes"])
    return CampaignSettings(
        organization=doc["organization"],
        client_id=doc["client_id"],
        client_secret=_secret(raw["client_secret"], doc["client_secret"]),
        limits=_limits(doc.get("limits")),
        sftp=sftp,
        **extra,
    )


def _sftp(root: Path, doc: dict[str, Any] | None, raw: dict[str, Any] | None, where: str,
          problems: list[_Problem]) -> SftpSettings | None:
    """``campaign.sftp``: exactly one of ``password`` and ``private_key``, a private key that opens (with its
    ``passphrase``), and a host key that really parses."""
    if doc is None or raw is None:
        return None
    if ("password" in doc) == ("private_key" in doc):
        problems.append(_Problem(where, "give exactly one of `password` (e.g. ${CAMPAIGN_SFTP_PASSWORD}) and "
                                        "`private_key` (a key file, or ${CAMPAIGN_SFTP_KEY} holding the key)"))
    passphrase = _secret(raw["passphrase"], doc["passphrase"]) if "passphrase" in doc else None
    private_key = _private_key(root, doc, raw, passphrase, f"{where}.private_key", problems)
    problem = _host_key_problem(doc["host_key"])
    if problem:
        problems.append(_Problem(f"{where}.host_key", problem))
    extra = {k: doc[k] for k in ("port", "incoming", "outgoing") if k in doc}
    return SftpSettings(
        host=doc["host"], username=doc["username"], host_key=doc["host_key"].strip(),
        password=_secret(raw["password"], doc["password"]) if "password" in doc else None,
        private_key=private_key, passphrase=passphrase, **extra)


def _private_key(root: Path, doc: dict[str, Any], raw: dict[str, Any], passphrase: Secret | None, where: str,
                 problems: list[_Problem]) -> Path | Secret | None:
    """The key's text (a value that is a key, e.g. from ${CAMPAIGN_SFTP_KEY}) or its file; either must open."""
    if "private_key" not in doc:
        return None
    value = doc["private_key"]
    if value.lstrip().startswith("-----BEGIN"):
        key: Path | Secret | None = _secret(raw["private_key"], value)
    else:
        key = _inside(root, value, where, problems)
        if key is not None and not key.is_file():
            problems.append(_Problem(where, f"{str(key)!r} is not a file"))
            return key
    if key is not None:
        problem = private_key_problem(key, passphrase)
        if problem:
            problems.append(_Problem(where, problem))
    return key


def load_private_key(key: Path | Secret, passphrase: Secret | None) -> Any:
    """The key as asyncssh holds it (``asyncssh.SSHKey``); raises ``asyncssh.KeyImportError`` and the like.
    Opened once per process: an encrypted key's KDF takes 0.1-1 s, and a run opens the key when its config
    loads and again at every SFTP (re)connect. A key file is opened again once it changes."""
    secret = passphrase.reveal() if passphrase is not None else None
    if isinstance(key, Path):
        return _open_key(str(key), key.stat().st_mtime_ns, None, secret)
    return _open_key(None, None, key.reveal(), secret)


@lru_cache(maxsize=8)
def _open_key(path: str | None, modified: int | None, text: str | None, passphrase: str | None) -> Any:
    import asyncssh  # imported here: only a config with SFTP settings needs it

    if path is not None:
        return asyncssh.read_private_key(path, passphrase)
    return asyncssh.import_private_key(text or "", passphrase)


def private_key_problem(key: Path | Secret, passphrase: Secret | None) -> str | None:
    """Why ``key`` does not open, in words that never quote the key or the passphrase (None: it opens)."""
    import asyncssh

    what = f"the key file {str(key)!r}" if isinstance(key, Path) else f"the key in {key.source or 'the setting'}"
    try:
        load_private_key(key, passphrase)
    except asyncssh.KeyEncryptionError:
        return f"{what} is encrypted and `passphrase` does not open it; check the passphrase"
    except asyncssh.KeyImportError:
        if passphrase is None:
            try:  # an encrypted key asks for a passphrase; any other failure is the key itself
                load_private_key(key, Secret("-"))
            except asyncssh.KeyEncryptionError:
                return f"{what} is encrypted: give `passphrase` (e.g. ${{CAMPAIGN_SFTP_PASSPHRASE}})"
            except (asyncssh.KeyImportError, ValueError, OSError):
                pass
            else:  # it opened with a passphrase only
                return f"{what} is encrypted: give `passphrase` (e.g. ${{CAMPAIGN_SFTP_PASSPHRASE}})"
        return (f"{what} is not a private key asyncssh can read (OpenSSH or PEM, e.g. from "
                "`ssh-keygen -t ed25519`)")
    except (ValueError, OSError) as exc:
        return f"{what} cannot be read ({type(exc).__name__})"
    return None


def _host_key_problem(line: str) -> str | None:
    import asyncssh  # imported here: only a config with SFTP settings needs it

    try:
        asyncssh.import_public_key(line.strip())
    except (asyncssh.KeyImportError, ValueError):
        return ("is not a public key asyncssh can read; copy the server's line from `ssh-keyscan -t ed25519 HOST` "
                "(without the host name)")
    return None


def _bulk(root: Path, doc: dict[str, Any], where: str, problems: list[_Problem]) -> BulkSettings:
    extra: dict[str, Any] = {k: doc[k] for k in ("min_records", "chunk_records", "signal_interval_seconds",
                                                 "poll_seconds", "timeout_seconds") if k in doc}
    if "work_dir" in doc:
        extra["work_dir"] = _inside(root, doc["work_dir"], f"{where}.work_dir", problems)
    else:
        extra["work_dir"] = root / ".mapsync" / "bulk"
    workflows = {name: BulkWorkflow(**spec) for name, spec in (doc.get("workflows") or {}).items()}
    return BulkSettings(workflows=workflows, **extra)


def _events(doc: dict[str, Any]) -> EventsSettings:
    extra = {"page_size": doc["page_size"]} if "page_size" in doc else {}
    return EventsSettings(journal_url=doc["journal_url"], limits=_limits(doc.get("limits")), **extra)

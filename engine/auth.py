"""Bearer tokens for the services: Entra ID (through MSAL) for Dataverse, Adobe IMS for Campaign and events.

Both providers implement ``mapsync.engine.http.TokenProvider``: ``await token()`` returns a cached token and renews
it ``REFRESH_MARGIN_SECONDS`` before it expires; ``await token(stale=t)`` is the one forced renewal after a
401 (several requests may report the same stale token at once: only the first renews).

Credentials that do not work are a configuration problem, not a crash: each failure becomes ONE
``ConfigError`` that names the setting to fix (``environments.stage.d365.client_secret``) and the
service's own error code (``AADSTS7000215``, IMS ``invalid_client``). No secret or token is ever part of a
message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from mapsync.engine.config import CampaignSettings, D365Settings
from mapsync.engine.errors import ConfigError, TransientError

__all__ = ["REFRESH_MARGIN_SECONDS", "EntraTokenProvider", "ImsTokenProvider", "TokenCache"]

# MSAL does not hand out a cached token with less than 300 s left; renewing our own copy at the same point
# keeps a long request from starting with a token that dies in flight.
REFRESH_MARGIN_SECONDS = 300.0
MICROSOFT_AUTHORITY_HOSTS = ("login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn",
                             "login.microsoftonline.de")

# AADSTS code -> (setting under .d365 to fix, what went wrong). Codes from Entra ID's error reference.
_AADSTS_SETTINGS: dict[str, tuple[str, str]] = {
    "7000215": ("client_secret", "Entra ID rejected the client secret"),
    "7000216": ("client_secret", "Entra ID got no client secret"),
    "7000222": ("client_secret", "the client secret has expired"),
    "700016": ("client_id", "Entra ID knows no application with this client id in the tenant"),
    "700024": ("client_id", "the client id is not valid for this tenant"),
    "90002": ("tenant_id", "Entra ID knows no such tenant"),
    "900023": ("tenant_id", "the tenant id is not a valid tenant name or GUID"),
    "1002012": ("url", "Entra ID rejected the scope derived from the url"),
    "500011": ("url", "Entra ID knows no resource (Dynamics 365 organization) at this url"),
    "70011": ("url", "Entra ID rejected the scope derived from the url"),
}
_AADSTS_RE = re.compile(r"AADSTS(\d+)")


def _verify_for_httpx(verify: bool | str | Path) -> bool | ssl.SSLContext:
    if isinstance(verify, bool):
        return verify
    return ssl.create_default_context(cafile=str(verify))


def _scrub(text: str, *secrets: str) -> str:
    """Belt and braces: a service echoing a credential back must not put it in our message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class TokenCache:
    """Tokens kept across runs of one process (``mapsync run --watch``), so each round does not ask Entra ID
    and IMS for a new one: keyed by issuer, client and scope; in memory only, never written anywhere."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}

    def get(self, key: tuple[str, ...], now: float) -> tuple[str, float] | None:
        found = self._tokens.get(key)
        return found if found is not None and found[1] - now >= REFRESH_MARGIN_SECONDS else None

    def put(self, key: tuple[str, ...], token: str, expires_at: float) -> None:
        self._tokens[key] = (token, expires_at)

    def __repr__(self) -> str:
        return f"TokenCache({len(self._tokens)} tokens)"


class _RenewingToken:
    """What both providers share: one token reused until shortly before it expires, renewed when a service
    refused it (401), and kept in a ``TokenCache`` across runs when one is given."""

    _clock: Callable[[], float]
    _cache: TokenCache | None
    _cache_key: tuple[str, ...]

    def _start_tokens(self, clock: Callable[[], float], cache: TokenCache | None, key: tuple[str, ...]) -> None:
        self._clock, self._cache, self._cache_key = clock, cache, key
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock: asyncio.Lock | None = None

    _prefix: str

    async def _fetch(self, force: bool) -> tuple[str, float]:
        raise NotImplementedError

    @property
    def credential_setting(self) -> str:
        """The setting to check when a service refuses even a freshly renewed token (``mapsync.engine.http``)."""
        return f"{self._prefix}.client_secret"

    async def token(self, *, stale: str | None = None) -> str:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            force = stale is not None and stale == self._token
            now = self._clock()
            if self._token is None and self._cache is not None:
                self._token, self._expires_at = self._cache.get(self._cache_key, now) or (None, 0.0)
            if force or self._token is None or self._expires_at - now < REFRESH_MARGIN_SECONDS:
                token, expires_in = await self._fetch(force)
                self._token, self._expires_at = token, self._clock() + expires_in
                if self._cache is not None:
                    self._cache.put(self._cache_key, token, self._expires_at)
            return self._token


class EntraTokenProvider(_RenewingToken):
    """Client-credentials tokens from Entra ID for one Dataverse organization, via MSAL."""

    def __init__(
        self,
        settings: D365Settings,
        *,
        setting_prefix: str = "d365",
        verify: bool | str | Path = True,
        clock: Callable[[], float] = time.time,
        http_client: Any = None,
        cache: TokenCache | None = None,
    ) -> None:
        self._settings = settings
        self._prefix = setting_prefix
        self._verify = verify if isinstance(verify, bool) else str(verify)
        self._http_client = http_client  # a requests-like session MSAL should use instead of its own
        self._app: Any = None
        self._start_tokens(clock, cache, ("entra", self.authority, settings.client_id, settings.scope))
        self.acquisitions = 0  # tokens fetched from Entra ID (not from a cache): for tests and stats

    @property
    def authority(self) -> str:
        return f"{self._settings.authority_host.rstrip('/')}/{self._settings.tenant_id}"

    def __repr__(self) -> str:
        return f"EntraTokenProvider(authority={self.authority!r}, client_id={self._settings.client_id!r})"

    async def _fetch(self, force: bool) -> tuple[str, float]:
        return await asyncio.to_thread(self._acquire, force)  # MSAL is synchronous

    async def aclose(self) -> None:
        """Close the session MSAL keeps open to Entra ID (not one the caller passed in): a kept-alive TLS
        connection left behind holds the server's graceful shutdown until its TLS close times out."""
        close = getattr(getattr(self._app, "http_client", None), "close", None)
        if self._http_client is None and close is not None:
            await asyncio.to_thread(close)

    # -- runs in a worker thread: MSAL is synchronous -----------------------------------------------

    def _build_app(self) -> Any:
        import msal  # imported here: only runs that talk to Dataverse pay for it
        import requests

        s = self._settings
        host = urlsplit(s.authority_host).hostname or s.authority_host
        microsoft = host in MICROSOFT_AUTHORITY_HOSTS
        kwargs: dict[str, Any] = {"verify": self._verify, "timeout": 30}
        if self._http_client is not None:
            kwargs["http_client"] = self._http_client
        elif not isinstance(self._verify, bool):
            kwargs["http_client"] = _pinned_session(self._verify)
        if not microsoft:  # the emulator (or a sovereign proxy): skip Microsoft's instance discovery
            kwargs.update(validate_authority=False, instance_discovery=False)
        try:
            return msal.ConfidentialClientApplication(
                s.client_id, client_credential=s.client_secret.reveal(), authority=self.authority, **kwargs
            )
        except ValueError as exc:  # tenant discovery failed: MSAL hides the reply in the exception chain
            raise self._discovery_error(exc) from None
        except requests.exceptions.SSLError:
            raise self._tls_error() from None
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None

    def _acquire(self, force: bool) -> tuple[str, float]:
        import requests

        if self._app is None:
            self._app = self._build_app()
        app = self._app
        if force:  # MSAL refuses force_refresh for client credentials: drop its cached access tokens instead
            cache = app.token_cache
            for item in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
                cache.remove_at(item)
        try:
            result = app.acquire_token_for_client(scopes=[self._settings.scope])
        except requests.exceptions.SSLError:
            raise self._tls_error() from None
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None
        if not result or "access_token" not in result:
            raise self._token_error(result or {})
        self.acquisitions += result.get("token_source") != "cache"
        return result["access_token"], float(result.get("expires_in") or 3599)

    # -- errors ------------------------------------------------------------------------------------

    def _config_error(self, setting: str, message: str) -> ConfigError:
        full = f"{self._prefix}.{setting}"
        text = _scrub(f"{full}: {message}", self._settings.client_secret.reveal())
        return ConfigError(text, setting=full)

    def _from_code(self, code: str, fallback: str) -> ConfigError:
        setting, what = _AADSTS_SETTINGS.get(code, ("client_id", fallback))
        s = self._settings
        detail = {
            "client_secret": f" (client id {s.client_id})",
            "client_id": f" '{s.client_id}' (tenant {s.tenant_id})",
            "tenant_id": f" '{s.tenant_id}'",
            "url": f" (scope {s.scope})",
        }[setting]
        return self._config_error(setting, f"{what}{detail} [AADSTS{code}]")

    def _token_error(self, result: dict[str, Any]) -> Exception:
        description = str(result.get("error_description") or "")
        codes = result.get("error_codes") or []
        match = _AADSTS_RE.search(description)
        code = str(codes[0]) if codes else (match.group(1) if match else None)
        if code is not None:
            first_sentence = description.split(". ", 1)[0].split(": ", 1)[-1]
            return self._from_code(code, f"Entra ID refused the token request: {first_sentence}")
        error = str(result.get("error") or "unknown_error")
        if error in ("temporarily_unavailable", "server_error"):
            return TransientError(f"entra: token request failed: {error}", service="entra", code=error)
        return self._config_error("client_id", f"Entra ID refused the token request [{error}]")

    def _discovery_error(self, exc: BaseException) -> Exception:
        chain = []
        cursor: BaseException | None = exc
        while cursor is not None:
            chain.append(str(cursor))
            cursor = cursor.__cause__ or cursor.__context__
        text = " ".join(chain)
        match = _AADSTS_RE.search(text)
        if match:
            return self._from_code(match.group(1), "Entra ID rejected the tenant")
        return self._config_error("tenant_id", f"no OpenID configuration for tenant '{self._settings.tenant_id}' "
                                               f"at {self._settings.authority_host}")

    def _unreachable(self, exc: BaseException) -> ConfigError:
        reason = type(exc).__name__
        return self._config_error("authority_host", f"cannot reach Entra ID at {self._settings.authority_host} ({reason})")

    def _tls_error(self) -> ConfigError:
        env_prefix = self._prefix.rsplit(".", 1)[0] if "." in self._prefix else "environment"
        full = f"{env_prefix}.ca_file"
        return ConfigError(
            f"{full}: the TLS certificate of {self._settings.authority_host} is not trusted; "
            "set ca_file to the CA bundle that signed it", setting=full)


class ImsTokenProvider(_RenewingToken):
    """OAuth server-to-server tokens from Adobe IMS (``POST {ims_url}/ims/token/v3``)."""

    def __init__(
        self,
        settings: CampaignSettings,
        *,
        setting_prefix: str = "campaign",
        verify: bool | str | Path = True,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
        cache: TokenCache | None = None,
    ) -> None:
        self._settings = settings
        self._prefix = setting_prefix
        self._client = httpx.AsyncClient(verify=_verify_for_httpx(verify), transport=transport,
                                         timeout=httpx.Timeout(timeout))
        self._start_tokens(clock, cache, ("ims", settings.ims_url, settings.client_id, ",".join(settings.scopes)))
        self.acquisitions = 0

    def __repr__(self) -> str:
        return f"ImsTokenProvider(ims_url={self._settings.ims_url!r}, client_id={self._settings.client_id!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _fetch(self, force: bool) -> tuple[str, float]:
        return await self._acquire()

    async def _acquire(self) -> tuple[str, float]:
        s = self._settings
        url = f"{s.ims_url.rstrip('/')}/ims/token/v3"
        form = {
            "grant_type": "client_credentials",
            "client_id": s.client_id,
            "client_secret": s.client_secret.reveal(),
            "scope": ",".join(s.scopes),
        }
        try:
            resp = await self._client.post(url, data=form)
        except httpx.ConnectError as exc:
            if _is_tls_failure(exc):
                full = f"{self._prefix.rsplit('.', 1)[0]}.ca_file" if "." in self._prefix else "ca_file"
                raise ConfigError(f"{full}: the TLS certificate of {s.ims_url} is not trusted; set ca_file to "
                                  "the CA bundle that signed it", setting=full) from None
            raise self._config_error("ims_url", f"cannot reach Adobe IMS at {s.ims_url} ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"ims: token request failed: {type(exc).__name__}", service="ims") from None
        if resp.status_code == 200:
            body = resp.json()
            self.acquisitions += 1
            return str(body["access_token"]), float(body.get("expires_in") or 86399)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        error = str(body.get("error") or body.get("error_code") or f"HTTP {resp.status_code}")
        description = str(body.get("error_description") or body.get("message") or "")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TransientError(f"ims: token request failed: HTTP {resp.status_code} [{error}]",
                                 service="ims", status=resp.status_code, code=error)
        if error == "invalid_scope":
            raise self._config_error("scopes", f"Adobe IMS rejected the scopes {','.join(s.scopes)} [{error}]")
        if "client_id" in description or (error == "invalid_request" and not s.client_id):
            raise self._config_error("client_id", f"Adobe IMS knows no client '{s.client_id}' [{error}: {description}]")
        if error == "invalid_client":
            raise self._config_error("client_secret", f"Adobe IMS rejected the client secret (client id "
                                                      f"{s.client_id}) [{error}: {description}]")
        raise self._config_error("client_id", f"Adobe IMS refused the token request [{error}: {description}]")

    def _config_error(self, setting: str, message: str) -> ConfigError:
        full = f"{self._prefix}.{setting}"
        return ConfigError(_scrub(f"{full}: {message}", self._settings.client_secret.reveal()), setting=full)


def _pinned_session(ca_file: str) -> Any:
    """A requests session that trusts ``ca_file`` even when REQUESTS_CA_BUNDLE is set.

    requests lets that environment variable override ``Session.verify``; only a per-request ``verify``
    wins over it, so every request of this session carries one.
    """
    import requests

    session = requests.Session()
    session.verify = ca_file
    session.request = functools.partial(session.request, verify=ca_file, timeout=30)  # type: ignore[method-assign]
    adapter = requests.adapters.HTTPAdapter(max_retries=1)  # what MSAL mounts on its own session
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _is_tls_failure(exc: BaseException) -> bool:
    cursor: BaseException | None = exc
    while cursor is not None:
        if isinstance(cursor, ssl.SSLError):
            return True
        cursor = cursor.__cause__ or cursor.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)

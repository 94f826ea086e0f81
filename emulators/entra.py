"""Microsoft Entra ID (Azure AD) v2.0 endpoints, as far as the client-credentials flow uses them.

Unmodified MSAL (``ConfidentialClientApplication(..., validate_authority=False,
instance_discovery=False)``) first GETs ``{authority}/v2.0/.well-known/openid-configuration`` and then POSTs
the form ``grant_type=client_credentials&client_id&client_secret&scope`` to the ``token_endpoint`` it
found there. Errors use the real AADSTS codes, HTTP statuses and body shape (``error``,
``error_description`` starting with ``AADSTS<code>:``, ``error_codes``, ``timestamp``, ``trace_id``,
``correlation_id``, ``error_uri``).
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mapsync.emulators.tokens import TokenIssuer

__all__ = ["aad_error", "entra_routes"]

# AADSTS code -> (OAuth error, HTTP status, description template). Statuses and texts as Entra ID sends them.
_AADSTS: dict[int, tuple[str, int, str]] = {
    7000215: (
        "invalid_client",
        401,
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
        "value, not the client secret ID, for a secret added to app '{client_id}'.",
    ),
    700016: (
        "unauthorized_client",
        400,
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen "
        "if the application has not been installed by the administrator of the tenant or consented to by any "
        "user in the tenant. You may have sent your authentication request to the wrong tenant.",
    ),
    90002: (
        "invalid_request",
        400,
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud. Check with your subscription administrator, this may happen if there are no active "
        "subscriptions for the tenant.",
    ),
    900144: ("invalid_request", 400, "The request body must contain the following parameter: '{param}'."),
    7000216: (
        "invalid_client",
        401,
        "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
    ),
    70003: ("unsupported_grant_type", 400, "The app requested an unsupported grant type '{grant}'."),
    1002012: (
        "invalid_scope",
        400,
        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
        "with /.default suffixed to the resource identifier (application ID URI).",
    ),
}


def aad_error(code: int, **fields: str) -> JSONResponse:
    """The Entra ID error response for an AADSTS code."""
    error, status, template = _AADSTS[code]
    now = datetime.now(UTC)
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    description = (
        f"AADSTS{code}: {template.format(**fields)} Trace ID: {trace_id} Correlation ID: {correlation_id} "
        f"Timestamp: {stamp}"
    )
    body = {
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store, no-cache"})


def _authority_base(request: Request, tenant: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/{tenant}"


def entra_routes(issuer: TokenIssuer) -> list[Route]:
    """Routes for ``/{tenant}/v2.0/.well-known/openid-configuration`` and ``/{tenant}/oauth2/v2.0/token``."""

    async def openid_configuration(request: Request) -> JSONResponse:
        tenant = request.path_params["tenant"]
        if not issuer.has_tenant(tenant):
            return aad_error(90002, tenant=tenant)
        base = _authority_base(request, tenant)
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            }
        )

    async def token(request: Request) -> JSONResponse:
        tenant = request.path_params["tenant"]
        if not issuer.has_tenant(tenant):
            return aad_error(90002, tenant=tenant)
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        client_id = fields.get("client_id", "")
        secret = fields.get("client_secret")
        basic = _basic_credentials(request.headers.get("authorization", ""))
        if basic is not None:  # client_secret_basic
            client_id, secret = client_id or basic[0], secret or basic[1]
        grant = fields.get("grant_type")
        if not grant:
            return aad_error(900144, param="grant_type")
        if grant != "client_credentials":
            return aad_error(70003, grant=grant)
        if not client_id:
            return aad_error(900144, param="client_id")
        scope = fields.get("scope", "")
        if not scope:
            return aad_error(900144, param="scope")
        check = issuer.check_client(tenant, client_id, secret or "")
        if check.outcome == "unknown_client":
            return aad_error(700016, client_id=client_id, tenant=tenant)
        if secret is None:
            return aad_error(7000216)
        if check.outcome == "bad_secret":
            return aad_error(7000215, client_id=client_id)
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return aad_error(1002012, scope=scope)
        access_token, expires_in = issuer.issue(client_id, scopes[0])
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": expires_in,
                "ext_expires_in": expires_in,
                "access_token": access_token,
            },
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    return [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
    ]


def _basic_credentials(header: str) -> tuple[str, str] | None:
    if not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (unquote(user), unquote(password)) if sep else None

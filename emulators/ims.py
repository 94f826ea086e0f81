"""Adobe IMS (OAuth server-to-server) and the Adobe I/O gateway check every IMS-protected API shares.

``POST /ims/token/v3`` takes the form ``grant_type=client_credentials&client_id&client_secret&scope``
(``client_id`` may also come in the query string, as Adobe's own curl samples send it) and answers
``{"access_token", "token_type": "bearer", "expires_in": 86399}``. Errors are OAuth-shaped:
``{"error": "invalid_client", "error_description": ...}`` with 401 for bad credentials (PROTOCOLS.md §3;
the description texts are IMS's as seen in the wild: "invalid client_id parameter" / "invalid
client_secret parameter").

``gateway_client(request, issuer)`` is what mc.adobe.io and events.adobe.io do before the service sees
a request: Bearer token, then X-Api-Key (which must be the client id the token was issued to).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mapsync.emulators.campaign.errors import CampaignApiError
from mapsync.emulators.tokens import TokenIssuer

__all__ = ["IMS_EXPIRES_IN", "IMS_ORG", "gateway_client", "ims_routes"]

IMS_EXPIRES_IN = 86399  # fact: IMS access tokens for server-to-server credentials last 24 h minus 1 s
IMS_ORG = "ims"  # the issuer's registry key for IMS clients (IMS does not take the org in the token call)


def _oauth_error(error: str, description: str, status: int) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def ims_routes(issuer: TokenIssuer) -> list[Route]:
    async def token(request: Request) -> Response:
        form = await request.form()
        values = {k: str(v) for k, v in form.items()}
        for key, value in request.query_params.items():
            values.setdefault(key, value)
        grant = values.get("grant_type", "")
        client_id = values.get("client_id", "")
        secret = values.get("client_secret", "")
        if not grant:
            return _oauth_error("invalid_request", "missing grant_type parameter", 400)
        if grant != "client_credentials":
            return _oauth_error("unsupported_grant_type", f"unsupported grant_type {grant}", 400)
        if not client_id:
            return _oauth_error("invalid_request", "missing client_id parameter", 400)
        check = issuer.check_client(IMS_ORG, client_id, secret)
        if check.outcome in ("unknown_client", "unknown_tenant"):
            return _oauth_error("invalid_client", "invalid client_id parameter", 401)
        if not secret or not check.ok:
            return _oauth_error("invalid_client", "invalid client_secret parameter", 401)
        access_token, lifetime = issuer.issue(client_id, values.get("scope", ""))
        return JSONResponse(
            {"access_token": access_token, "token_type": "bearer", "expires_in": lifetime},
            headers={"Cache-Control": "no-store"},
        )

    return [Route("/ims/token/v3", token, methods=["POST"])]


def gateway_client(request: Request, issuer: TokenIssuer) -> str:
    """The client id a request is authenticated as; raises the gateway's error reply otherwise."""
    authorization = request.headers.get("authorization")
    if not authorization:
        raise CampaignApiError("token_missing")
    scheme, _, token = authorization.partition(" ")
    client_id = issuer.validate(token.strip()) if scheme.lower() == "bearer" else None
    if client_id is None:
        raise CampaignApiError("token_invalid")
    api_key = request.headers.get("x-api-key")
    if not api_key:
        raise CampaignApiError("api_key_missing")
    if api_key != client_id:
        raise CampaignApiError("api_key_invalid")
    return client_id

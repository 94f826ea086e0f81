"""Error replies of the Adobe I/O gateway and of Campaign Standard, and every assumption about them.

Facts (Adobe's public docs; the gateway is shared by all ``*.adobe.io`` APIs):

    403 {"error_code": "403010", "message": "Oauth token is missing."}   no Authorization header
    401 {"error_code": "401013", "message": "Oauth token is not valid"}  bad or expired bearer token
    403 {"error_code": "403000", "message": "Api Key is required"}       no X-Api-Key header
    403 {"error_code": "403003", "message": "Api Key is invalid"}        X-Api-Key unknown / not the token's client

Everything else here is an *assumption* (no public source fixed the exact code strings); they are
kept in this one table so that a capture from a real tenant can correct them in one place. The body
shape ``{"error_code", "message"}`` is the gateway's, used for Campaign's own errors as well (assumed).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import JSONResponse

from mapsync.emulators.errors import EmulatorError

__all__ = [
    "ASSUMED",
    "GATEWAY",
    "CampaignApiError",
    "ErrorSpec",
    "error_response",
]


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    code: str
    message: str


# Documented gateway errors (facts).
GATEWAY: dict[str, ErrorSpec] = {
    "token_missing": ErrorSpec(403, "403010", "Oauth token is missing."),
    "token_invalid": ErrorSpec(401, "401013", "Oauth token is not valid"),
    "api_key_missing": ErrorSpec(403, "403000", "Api Key is required"),
    "api_key_invalid": ErrorSpec(403, "403003", "Api Key is invalid"),
}

# Assumed Campaign errors: the statuses are the HTTP meanings of each case, the code strings are ours.
ASSUMED: dict[str, ErrorSpec] = {
    "too_many_requests": ErrorSpec(429, "429050", "Too many requests"),
    "not_found": ErrorSpec(404, "404", "The requested resource was not found"),
    "unknown_resource": ErrorSpec(404, "404", "Unknown resource"),
    "bad_json": ErrorSpec(400, "400", "The request body is not a JSON object"),
    "unknown_field": ErrorSpec(400, "400", "Unknown field"),
    "too_long": ErrorSpec(400, "400", "Value too long"),
    "bad_type": ErrorSpec(400, "400", "Invalid value type"),
    "bad_enum": ErrorSpec(400, "400", "Value not in enumeration"),
    "bad_date": ErrorSpec(400, "400", "Invalid date"),
    "required": ErrorSpec(400, "400", "Missing mandatory field"),
    "bad_link": ErrorSpec(400, "400", "Link target does not exist"),
    "bad_parameter": ErrorSpec(400, "400", "Invalid parameter"),
    "method_not_allowed": ErrorSpec(405, "405", "Method not allowed"),
    "signal_rejected": ErrorSpec(400, "400", "The signal was not triggered"),
    "server_error": ErrorSpec(500, "500", "Internal server error"),
    "unavailable": ErrorSpec(503, "503", "Service unavailable"),
}

# Other assumptions kept here so they are easy to find and correct:
LINE_COUNT_DEFAULT = 25  # fact: "By default, 25 resources are loaded in a list."
BIG_TABLE_THRESHOLD = 100_000  # fact: XtkBigTableThreshold default; above it `next` needs _forcePagination
READ_ONLY_FIELDS_IGNORED = True  # assumed: writes to computed fields (PKey, created, ...) are ignored, not refused
BY_EMAIL_CASE_INSENSITIVE = True  # assumed: byEmail matches the address case-insensitively
RETRY_AFTER_SECONDS = 2  # assumed: what the gateway puts in Retry-After on a 429


class CampaignApiError(EmulatorError):
    """Raised inside the emulated Campaign API; the app turns it into the error reply."""

    def __init__(self, key: str, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        spec = GATEWAY.get(key) or ASSUMED[key]
        message = f"{spec.message}: {detail}" if detail else spec.message
        super().__init__(message)
        self.key = key
        self.status = spec.status
        self.code = spec.code
        self.message = message
        self.headers = headers or {}


def error_response(error: CampaignApiError) -> JSONResponse:
    return JSONResponse({"error_code": error.code, "message": error.message}, status_code=error.status,
                        headers=error.headers)

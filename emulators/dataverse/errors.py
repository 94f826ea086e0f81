"""Every error the Dataverse emulator returns, in ONE place: HTTP status, Dataverse error code and message.

Codes and messages come from Microsoft's documentation and from client code that matches on them
(quoted in the comments below). Entries marked ``assumed=True`` have no public source that fixes their exact
code, status or wording; correct them here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mapsync.emulators.errors import EmulatorError

__all__ = ["ERRORS", "DataverseError", "ErrorSpec", "error_body"]


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    code: str
    template: str
    assumed: bool = False


ERRORS: dict[str, ErrorSpec] = {
    # Documented in "Troubleshoot Dataverse Web API client errors".
    "segment_not_found": ErrorSpec(404, "0x8006088a", "Resource not found for the segment '{segment}'."),
    "no_property": ErrorSpec(400, "0x0", "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table}'."),
    "invalid_property": ErrorSpec(
        400,
        "0x0",
        "An error occurred while validating input parameters: Microsoft.Crm.CrmException: Invalid property "
        "'{name}' was found in entity 'Microsoft.Dynamics.CRM.{table}'. ---> Microsoft.OData.ODataException: "
        "Does not support untyped value in non-open type.",
    ),
    "bad_payload": ErrorSpec(
        400,
        "0x80048d19",
        "Error identified in Payload provided by the user for Entity :'{entity_set}'  ---->  InnerException : "
        "Microsoft.OData.ODataException: {detail}",
    ),
    "no_resource": ErrorSpec(404, "", "No HTTP resource was found that matches the request URI '{uri}'."),
    # "Execute batch operations using the Web API": over-long string.
    "max_length": ErrorSpec(
        400,
        "0x80044331",
        "A validation error occurred.  The length of the '{name}' attribute of the '{table}' entity exceeded "
        "the maximum allowed length of '{max_length}'.",
    ),
    # ObjectDoesNotExist, as the Web API reports a missing record (and a lookup to one).
    "not_found": ErrorSpec(404, "0x80040217", "{table} With Id = {id} Does Not Exist"),
    # "Perform conditional operations": If-None-Match: * against an existing record; duplicate primary key.
    "exists": ErrorSpec(412, "0x80040237", "A record with matching key values already exists."),
    # DuplicateRecordEntityKey: a create that violates an alternate key (412 + 0x80060892 per client code
    # and support threads; the wording is the platform's error-code text).
    "duplicate_key": ErrorSpec(
        412,
        "0x80060892",
        "A record that has the attribute values {values} already exists. The entity key {key} requires that "
        "this set of attributes contains unique values. Select unique values and try again.",
    ),
    # ConcurrencyVersionMismatch: If-Match with an outdated ETag.
    "etag_mismatch": ErrorSpec(
        412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."
    ),
    # ExpiredVersionStamp 0x80044352 (code and message documented; the HTTP status is assumed).
    "delta_expired": ErrorSpec(
        400, "0x80044352", "Version stamp associated with the client has expired. Please perform a full sync.",
        assumed=True,
    ),
    # "Use change tracking to synchronize data": the message is documented, status and code assumed.
    "track_changes_option": ErrorSpec(
        400, "0x80060888", 'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.',
        assumed=True,
    ),
    "track_changes_disabled": ErrorSpec(
        400, "0x80040203", "Entity '{table}' is not enabled for change tracking.", assumed=True
    ),
    # Microsoft.OData.UriParser messages surface with this code (assumed for the code).
    "query_syntax": ErrorSpec(400, "0x80060888", "{detail}", assumed=True),
    "query_type": ErrorSpec(
        400,
        "0x80060888",
        "A binary operator with incompatible types was detected. Found operand types '{left}' and '{right}' "
        "for operator kind '{op}'.",
        assumed=True,
    ),
    "bad_value": ErrorSpec(
        400,
        "0x0",
        "An error occurred while validating input parameters: Microsoft.OData.ODataException: Cannot convert "
        "the literal '{value}' to the expected type '{edm}'.",
    ),
    "option_out_of_range": ErrorSpec(
        400,
        "0x8004431a",
        "A validation error occurred. The value {value} of '{name}' on record of type '{table}' is outside the "
        "valid range. Accepted Values: {accepted}",
        assumed=True,
    ),
    "number_out_of_range": ErrorSpec(
        400,
        "0x80044331",
        "A validation error occurred. The value {value} of '{name}' on record of type '{table}' is outside the "
        "valid range.",
        assumed=True,
    ),
    "bad_bind": ErrorSpec(
        400, "0x80048d19",
        "Error identified in Payload provided by the user for Entity :'{entity_set}'  ---->  InnerException : "
        "Microsoft.OData.ODataException: An undeclared property '{name}' which only has property annotations "
        "in the payload but no property value was found in the payload.",
    ),
    "bad_key": ErrorSpec(400, "0x80060888", "Bad Request - Error in query syntax.", assumed=True),
    # RetrieveTotalRecordCount with a name that is no table (the metadata cache's wording; status assumed).
    "unknown_table": ErrorSpec(
        404, "0x80041102",
        "Could not find an entity with name {name} and with namemapping = 'Logical' in the MetadataCache.",
        assumed=True,
    ),
    "batch_too_large": ErrorSpec(
        400, "0x8005f20f", "The number of requests in a batch exceeds the limit of {limit}.", assumed=True
    ),
    "batch_malformed": ErrorSpec(400, "0x0", "{detail}", assumed=True),
    "content_id": ErrorSpec(400, "0x0", "Content-ID Reference: '{ref}' does not exist in the batch context."),
    "get_in_changeset": ErrorSpec(
        400, "0x0", "A GET request is not allowed in a change set.", assumed=True
    ),
    "odata_version": ErrorSpec(
        400, "0x0",
        "The value '{value}' of the OData-Version HTTP header is invalid. Only 'V4.0' and '4.0' are supported "
        "as values for the OData-Version header.",
        assumed=True,
    ),
    "method_not_allowed": ErrorSpec(405, "0x80060888", "The HTTP method '{method}' is not allowed here.", assumed=True),
    # The application user and its roles (docs/emulators.md, "Setup switches"). The missing-privilege message is
    # the one Dataverse answers (0x80040220, "Principal user ... is missing prv... privilege"), shortened; the
    # not-a-member and disabled-user wordings are seen in replies, their codes and the 403 status are assumed.
    "missing_privilege": ErrorSpec(
        403, "0x80040220",
        "Principal user (Id={user}, type=8, roleCount=1, privilegeCount={count}, accessMode=4), is missing "
        "{privilege} privilege on OTC=0 for entity '{table}'.",
    ),
    "not_a_member": ErrorSpec(403, "0x80072560", "The user is not a member of the organization.", assumed=True),
    "user_disabled": ErrorSpec(
        403, "0x8004ac7b",
        "The user with SystemUserId={user} in OrganizationContext={organization} is disabled. Disabled users "
        "cannot access the system. Consider enabling this user.", assumed=True,
    ),
    "unexpected": ErrorSpec(500, "0x80040216", "An unexpected error occurred."),
    # Bulk operation messages ("Use bulk operation messages"; emulators/dataverse/bulk.py). The update
    # message is the one Microsoft lists under "Troubleshooting common errors"; the rest are assumed.
    "bulk_no_targets": ErrorSpec(400, "0x80048d19", "The 'Targets' parameter is required and holds at least one record.",
                                 assumed=True),
    "bulk_odata_type": ErrorSpec(
        400, "0x80048d19", "Every item of 'Targets' must carry \"@odata.type\": \"{expected}\".", assumed=True
    ),
    "bulk_update_missing": ErrorSpec(404, "0x80040217", "{table} With Ids = {id} Do Not Exist"),
    "message_unavailable": ErrorSpec(
        400, "0x80040800",
        "The '{message}' method does not support entities of type '{table}'. MessageProcessorCache returned "
        "MessageProcessor.Empty.", assumed=True,
    ),
    # What a synchronous plug-in's InvalidPluginExecutionException answers (a row planted to fail by the setup
    # switch "reject_rows"); code documented, status and wording assumed.
    "plugin_refused": ErrorSpec(400, "0x80040265", "{message}", assumed=True),
    # Served by the gateway when the org is unavailable; body shape kept like every other error (assumed).
    "unavailable": ErrorSpec(503, "0x80040216", "The service is temporarily unavailable. Please try again later.",
                             assumed=True),
}


class DataverseError(EmulatorError):
    """An error answer of the emulated Web API: HTTP ``status`` and the body ``{"error":{code,message}}``."""

    def __init__(self, kind: str, *, headers: dict[str, str] | None = None, **fields: Any) -> None:
        spec = ERRORS[kind]
        self.kind = kind
        self.status = spec.status
        self.code = spec.code
        self.message = spec.template.format(**fields)
        self.headers = headers or {}
        super().__init__(self.message)

    @classmethod
    def raw(cls, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> DataverseError:
        err = cls.__new__(cls)
        err.kind, err.status, err.code, err.message, err.headers = "raw", status, code, message, headers or {}
        Exception.__init__(err, message)
        return err

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}

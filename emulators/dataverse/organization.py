"""``RetrieveCurrentOrganization``: the org the caller is connected to, in the Web API's documented shape.

``GET [org]/api/data/v9.2/RetrieveCurrentOrganization(AccessType=@p)?@p=Microsoft.Dynamics.CRM.EndpointAccessType'Default'``
answers a ``RetrieveCurrentOrganizationResponse`` whose ``Detail`` is an ``OrganizationDetail``: ids, names,
version, state and an ``EndpointCollection`` (``Count``, ``IsReadOnly``, ``Keys``, ``Values``, as the Web API
serialises collections of key/value pairs). ``OrganizationId`` is the one ``WhoAmI`` answers: both derive it
from the URL the emulator is reached at, so an emulator on another port is another org; ``EnvironmentId`` is
new for each emulated store, so a restarted emulator (new data) is another environment (docs/emulators.md).
``TenantId``, ``DatacenterId`` and ``Geo`` are not served: the emulated org knows no datacenter, and the
Dataverse half does not see the Entra ID tenant.
"""

from __future__ import annotations

import re
import uuid
import weakref
from typing import Any
from urllib.parse import urlsplit

__all__ = ["RETRIEVE_CURRENT_ORGANIZATION", "access_type", "current_organization", "organization_id"]

RETRIEVE_CURRENT_ORGANIZATION = re.compile(r"^RetrieveCurrentOrganization\(AccessType=([^)]*)\)$")
ACCESS_TYPES = ("Default", "Internet", "Intranet")  # the EndpointAccessType enum
_ENUM = re.compile(r"^(?:Microsoft\.Dynamics\.CRM\.)?EndpointAccessType'(\w+)'$")
ORGANIZATION_VERSION = "9.2.24101.00000"


# One id per emulated environment (its store): a restarted `mapsync emulate` holds new data, so it is a new
# environment even on the same port, while a server restarted over the same store is the same one.
_ENVIRONMENTS: weakref.WeakKeyDictionary[object, uuid.UUID] = weakref.WeakKeyDictionary()


def organization_id(root: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, root))


def environment_id(store: object, root: str) -> str:
    instance = _ENVIRONMENTS.setdefault(store, uuid.uuid4())
    return str(uuid.uuid5(instance, root))


def access_type(argument: str, params: dict[str, str]) -> str | None:
    """The AccessType enum member named by the argument (inline or a ``@p`` parameter alias), or None."""
    value = params.get(argument, "") if argument.startswith("@") else argument
    found = _ENUM.match(value.strip())
    return found.group(1) if found and found.group(1) in ACCESS_TYPES else None


def current_organization(api: str, root: str, store: object) -> dict[str, Any]:
    host = urlsplit(root).hostname or "localhost"
    url_name = host.split(".")[0] if not host.replace(".", "").isdigit() else "emulator"
    web = root.rstrip("/") + "/"
    return {
        "@odata.context": f"{api}/$metadata#Microsoft.Dynamics.CRM.RetrieveCurrentOrganizationResponse",
        "Detail": {
            "OrganizationId": organization_id(root),
            "FriendlyName": "mapsync emulator",
            "OrganizationVersion": ORGANIZATION_VERSION,
            "EnvironmentId": environment_id(store, root),
            "UrlName": url_name,
            "UniqueName": f"unq{uuid.uuid5(uuid.NAMESPACE_URL, root).hex[:24]}",
            "Endpoints": {
                "Count": 3,
                "IsReadOnly": False,
                "Keys": ["WebApplication", "OrganizationService", "OrganizationDataService"],
                "Values": [web, f"{web}XRMServices/2011/Organization.svc",
                           f"{web}XRMServices/2011/OrganizationData.svc"],
            },
            "State": "Enabled",
            "SchemaType": "Standard",
            "OrganizationType": "Customer",
        },
    }

"""WhoAmI and RetrieveCurrentOrganization: which org the caller reached, in the Web API's documented shapes."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_retrieve_current_organization_names_the_org_whoami_names(dv: httpx.AsyncClient) -> None:
    who = (await dv.get("WhoAmI")).json()
    r = await dv.get("RetrieveCurrentOrganization(AccessType=@p1)",
                     params={"@p1": "Microsoft.Dynamics.CRM.EndpointAccessType'Default'"})
    assert r.status_code == 200
    body = r.json()
    assert body["@odata.context"] == ("https://org.test/api/data/v9.2/$metadata"
                                      "#Microsoft.Dynamics.CRM.RetrieveCurrentOrganizationResponse")
    detail = body["Detail"]
    assert detail["OrganizationId"] == who["OrganizationId"]
    assert {"FriendlyName", "OrganizationVersion", "EnvironmentId", "UrlName", "UniqueName", "State",
            "OrganizationType", "SchemaType"} <= set(detail)
    endpoints = detail["Endpoints"]
    assert endpoints["Count"] == len(endpoints["Keys"]) == len(endpoints["Values"]) == 3
    assert dict(zip(endpoints["Keys"], endpoints["Values"], strict=True))["WebApplication"] == "https://org.test/"
    inline = await dv.get("RetrieveCurrentOrganization(AccessType=Microsoft.Dynamics.CRM.EndpointAccessType'Internet')")
    assert inline.status_code == 200 and inline.json()["Detail"]["OrganizationId"] == who["OrganizationId"]


async def test_retrieve_current_organization_needs_an_access_type(dv: httpx.AsyncClient) -> None:
    r = await dv.get("RetrieveCurrentOrganization(AccessType=@p1)", params={"@p1": "'Nowhere'"})
    assert r.status_code == 404

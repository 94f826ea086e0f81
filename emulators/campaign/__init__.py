"""Emulated Adobe Campaign Standard: resources from the snapshots, a compact store, the REST API, deliveries."""

from __future__ import annotations

from emulators.campaign.app import campaign_routes
from emulators.campaign.delivery import Campaign, DeliveryRates, DeliveryResult
from emulators.campaign.errors import CampaignApiError
from emulators.campaign.resources import ResourceSpec, load_resources
from emulators.campaign.store import CampaignStore

__all__ = [
    "Campaign",
    "CampaignApiError",
    "CampaignStore",
    "DeliveryRates",
    "DeliveryResult",
    "ResourceSpec",
    "campaign_routes",
    "load_resources",
]

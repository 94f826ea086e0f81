"""Emulated Adobe Campaign Standard: resources from the snapshots, a compact store, the REST API, deliveries."""

from __future__ import annotations

from mapsync.emulators.campaign.app import campaign_routes
from mapsync.emulators.campaign.delivery import Campaign, DeliveryRates, DeliveryResult
from mapsync.emulators.campaign.errors import CampaignApiError
from mapsync.emulators.campaign.resources import ResourceSpec, load_resources
from mapsync.emulators.campaign.store import CampaignStore

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

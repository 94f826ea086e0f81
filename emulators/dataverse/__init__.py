"""The Dataverse Web API emulator: store, OData query language, metadata, batch, and the Starlette app."""

from __future__ import annotations

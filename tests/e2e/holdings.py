"""What the emulated Campaign holds, by the flows' keys: for tests that count duplicates."""

from __future__ import annotations

from mapsync.emulators.server import Emulator

__all__ = ["KEYS", "duplicates", "held"]

KEYS = {"profile": "externalId", "cusVehicle": "cusExternalId"}  # resource -> the key the shipped flows write


def held(emulator: Emulator, resource: str) -> dict[str, list[str]]:
    """Key -> the PKeys of the records that carry it, for one Campaign resource."""
    store = emulator.adobe.store
    out: dict[str, list[str]] = {}
    for row_id, fields in store.rows_where(resource):
        if fields.get(KEYS[resource]):
            out.setdefault(fields[KEYS[resource]], []).append(store.pkey(resource, row_id))
    return out


def duplicates(emulator: Emulator) -> dict[str, int]:
    """``"<resource> <key>"`` -> how many records carry that key, for every key carried more than once."""
    return {f"{resource} {key}": len(pkeys) for resource in KEYS
            for key, pkeys in held(emulator, resource).items() if len(pkeys) > 1}

"""The root of the emulators' own errors: an emulated service refusing a request.

Deliberately outside mapsync's error tree (``mapsync/errors.py``): the emulators stand in for Dataverse
and Campaign, which know nothing of mapsync, so nothing the product catches as its own error can come
from them, and they never import the language to raise.
"""

from __future__ import annotations

__all__ = ["EmulatorError"]


class EmulatorError(Exception):
    """An emulated service refuses a request; its app turns the error into the service's error reply."""

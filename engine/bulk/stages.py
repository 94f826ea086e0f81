"""The stages of a bulk load and of each of its files, in order, with what each means for `mapsync status`."""

from __future__ import annotations

__all__ = ["CHUNK_STAGES", "LOAD_STAGES", "describe"]

# A load: writing (the read is still turning records into files) -> written (every file is on local disk,
# the read's cursor is recorded) -> uploaded -> signalled -> imported -> reconciled -> done (cursor committed).
LOAD_STAGES: dict[str, str] = {
    "writing": "writing files",
    "written": "files written, uploading",
    "uploaded": "uploaded, signalling the import workflow",
    "signalled": "importing",
    "imported": "imported, reconciling the key map",
    "reconciled": "reconciled, committing the cursor",
    "done": "done",
}

# A file: written -> uploaded -> signalled -> imported (its .done seen, rejects recorded) -> reconciled.
# "failed": the workflow stopped with an error before the file's .done: the next run signals it again.
CHUNK_STAGES = ("written", "uploaded", "signalled", "failed", "imported", "reconciled")


def describe(stage: str) -> str:
    return LOAD_STAGES.get(stage, stage)


def at_least(stage: str, wanted: str) -> bool:
    """Whether a file at ``stage`` has reached ``wanted`` (a failed import has reached "uploaded" only)."""
    order = {"written": 0, "uploaded": 1, "failed": 1, "signalled": 2, "imported": 3, "reconciled": 4}
    return order[stage] >= order[wanted]

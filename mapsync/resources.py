"""The data files mapsync ships (grammar, JSON Schemas, built-in schema snapshots, the starter project).

They are read through ``importlib.resources`` so that an installed wheel finds them exactly as a source
checkout does. mapsync needs them as real files (lark reads the grammar by path, snapshots are globbed),
so a zipped install is not supported and says so.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["ci_workflow", "config_schema", "schemas_dir", "snapshots_dir", "starter_mappings_dir"]


def _directory(*parts: str) -> Path:
    # In a source tree these are links from mapsync/ to the top-level folders (schemas/, mappings/, docs/ci/);
    # a wheel holds copies of them.
    path = Path(str(files("mapsync"))).joinpath(*parts).resolve()
    if not path.is_dir():  # pragma: no cover - only a zipped or damaged install gets here
        raise RuntimeError(f"mapsync's data folder {'/'.join(parts)} is missing from {path.parent}; "
                           "install mapsync from a wheel or a source tree, not a zip")
    return path


def schemas_dir() -> Path:
    """``schemas/``: the JSON Schemas of ``mapsync.yaml``, mapping tests and snapshots."""
    return _directory("schemas")


def snapshots_dir() -> Path:
    """The built-in schema snapshots (``schemas/snapshots/<system>/<name>.json``)."""
    return schemas_dir() / "snapshots"


def config_schema() -> Path:
    return schemas_dir() / "config.schema.json"


def starter_mappings_dir() -> Path:
    """The four shipped use cases, which ``mapsync init`` copies into a new project."""
    return _directory("starter", "mappings")


def ci_workflow() -> Path:
    """The CI workflow ``mapsync init`` writes (``docs/ci/mapsync.yml`` in the source tree)."""
    return _directory("starter", "ci") / "mapsync.yml"

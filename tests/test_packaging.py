"""The distribution installs every Python package of the repository's folders under `mapsync`: the list in
pyproject.toml is written by hand (the folders map onto `mapsync.*`), so a new sub-package must be added there."""

from __future__ import annotations

import tomllib

from tests.paths import ROOT

PREFIXES = {"mapsync": "mapsync", "dsl": "mapsync.dsl", "engine": "mapsync.engine", "emulators": "mapsync.emulators"}


def test_every_package_folder_is_in_the_distribution() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for folder, package in PREFIXES.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    for folder, package in PREFIXES.items():
        if folder != "mapsync":
            assert config["package-dir"][package] == folder

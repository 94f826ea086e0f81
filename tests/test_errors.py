"""One error tree: every error the product defines hangs under ``mapsync.errors.MapsyncError`` through a
phase class; the emulators raise errors of their own and never import the language or the engine; the
connectors raise no bare ``ValueError``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import mapsync
from mapsync import errors
from mapsync.emulators.errors import EmulatorError

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("mapsync.dsl", "mapsync.engine")
PHASES = {errors.DslError, errors.RecordError, errors.SyncError}
# The schema snapshot files are data both sides read: the emulators serve the tables they describe.
EMULATOR_MAY_IMPORT = {"mapsync.dsl.schema"}


def _product_modules() -> list[str]:
    names = ["mapsync.errors"]
    for package in PRODUCT_PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, package + ".")
                  if not info.name.endswith("__main__")]
    return names


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _product_modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return found


def test_every_product_error_derives_from_the_root_through_a_phase() -> None:
    classes = _exception_classes()
    assert len(classes) > 20  # the scan sees the tree
    outside = [name for name, cls in classes.items() if not issubclass(cls, errors.MapsyncError)]
    assert outside == []
    under_root = {cls for cls in classes.values() if errors.MapsyncError in cls.__bases__}
    assert under_root == PHASES, "only the phase classes hang directly under MapsyncError"


def test_the_re_exports_are_the_same_classes() -> None:
    from mapsync.dsl import errors as dsl_errors
    from mapsync.engine import errors as engine_errors

    for module in (dsl_errors, engine_errors):
        for name in module.__all__:
            assert getattr(module, name) is getattr(errors, name)


def _emulator_files() -> list[Path]:
    return sorted((ROOT / "emulators").rglob("*.py"))


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


@pytest.mark.parametrize("path", _emulator_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_emulators_import_neither_the_language_nor_the_engine(path: Path) -> None:
    product = {"mapsync.errors", "mapsync.dsl", "mapsync.engine"}
    bad = sorted(name for name in _imports(path)
                 if any(name == p or name.startswith(p + ".") for p in product)
                 and not any(name == ok or name.startswith(ok + ".") for ok in EMULATOR_MAY_IMPORT))
    assert bad == []


def test_emulator_errors_are_outside_the_product_tree() -> None:
    from mapsync.emulators import control
    from mapsync.emulators.campaign.errors import CampaignApiError
    from mapsync.emulators.dataverse.errors import DataverseError

    for cls in (CampaignApiError, DataverseError, control._Bad):
        assert issubclass(cls, EmulatorError) and not issubclass(cls, errors.MapsyncError)


def _bare_value_errors(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id == "ValueError":
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", sorted((ROOT / "engine" / "connectors").glob("*.py")), ids=lambda p: p.name)
def test_connectors_raise_no_bare_value_error(path: Path) -> None:
    assert _bare_value_errors(path) == []


def test_the_scan_finds_a_bare_value_error(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    raise ValueError('x')\n\ndef g():\n    raise ValueError\n", encoding="utf-8")
    assert _bare_value_errors(sample) == [2, 5]


def test_the_root_lives_at_the_top_of_the_package() -> None:
    assert errors.__name__ == "mapsync.errors" and Path(errors.__file__).parent == Path(mapsync.__file__).parent

"""mapsync as a consultant installs it: a wheel built from this repository, installed (not editable) into
a fresh virtual environment outside the repository, used from a folder that is not the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mapsync import __version__
from tests.paths import ROOT, copy_repository

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["NO_COLOR"] = "1"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv holding the wheel built from this repository, with its emulators."""
    base = tmp_path_factory.mktemp("wheel")
    source, dist = base / "source", base / "dist"
    copy_repository(source)  # a build leaves build/ and *.egg-info behind: not in the repository
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], cwd=base))
    wheels = list(dist.glob("mapsync-*.whl"))
    assert len(wheels) == 1, wheels
    _ok(_run([sys.executable, "-m", "venv", str(base / "venv")], cwd=base))
    bin_dir = base / "venv" / "bin"
    _ok(_run([str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{wheels[0]}[emulators]"], cwd=base, timeout=600))
    return bin_dir


def test_the_wheel_installs_one_package_and_finds_its_data(installed: Path, tmp_path: Path) -> None:
    assert _ok(_run([str(installed / "mapsync"), "--version"], cwd=tmp_path)).strip() == f"mapsync {__version__}"
    probe = _run([str(installed / "python"), "-c",
                  "import mapsync.resources as r, mapsync.engine.cli, mapsync.emulators.server;"
                  "print(r.snapshots_dir()); print(r.starter_mappings_dir())"], cwd=tmp_path)
    for line in _ok(probe).splitlines():
        assert "site-packages" in line and str(ROOT) not in line, line
    for top in ("engine", "dsl", "emulators"):  # nothing of ours under a name another distribution could use
        assert _run([str(installed / "python"), "-c", f"import {top}"], cwd=tmp_path).returncode != 0, top


def test_init_validate_test_demo_from_a_folder_that_is_not_the_repository(installed: Path, tmp_path: Path) -> None:
    mapsync = str(installed / "mapsync")
    _ok(_run([mapsync, "init", "project"], cwd=tmp_path))
    project = tmp_path / "project"
    assert "0 errors" in _ok(_run([mapsync, "validate"], cwd=project))
    assert " 0 failed" in _ok(_run([mapsync, "test"], cwd=project))
    assert "demo passed" in _ok(_run([mapsync, "demo", "--contacts", "60"], cwd=project))
    # A syntax error is reported from the installed grammar, not an internal error.
    (project / "mappings" / "broken.map").write_text("flow broken {\n  from d365.contact\n", encoding="utf-8")
    broken = _run([mapsync, "validate"], cwd=project)
    assert broken.returncode == 1 and "broken.map:" in broken.stdout + broken.stderr, broken.stdout + broken.stderr
    assert "internal error" not in broken.stderr


def test_without_the_emulators_extra_emulate_says_what_to_install(installed: Path, tmp_path: Path) -> None:
    venv = installed.parent
    bare = tmp_path / "bare"
    # A second environment that sees the first one's packages except the emulators' (a real `pip uninstall`
    # in a copy would cost another install): hide them by a sitecustomize that blocks their import.
    bare.mkdir()
    (bare / "sitecustomize.py").write_text(
        "import sys\nclass _Block:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn', 'trustme', 'multipart'):\n"
        "            raise ModuleNotFoundError(name)\n        return None\nsys.meta_path.insert(0, _Block())\n",
        encoding="utf-8")
    env_python = str(venv / "bin" / "python")
    done = subprocess.run([env_python, "-c", "import sys; from mapsync.engine.cli import main; sys.exit(main())",
                           "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(bare), "NO_COLOR": "1"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install 'mapsync[emulators]'" in done.stderr and "Traceback" not in done.stderr

"""A new integration project for a consultant, as ``mapsync init`` writes it.

The project is the consultant's own repository: ``mapsync.yaml`` (a ``stage`` and a ``prod`` environment
whose secrets are ``${ENV_VAR}`` references), the four use cases as a starting point with their tests,
the built-in schema snapshots (to be refreshed from the client's org with ``mapsync schema pull``), a CI
workflow, a ``.gitignore`` that keeps state and secrets out of git, and a README of the next steps.
Nothing existing is ever overwritten: every file is checked before the first one is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mapsync import __version__, resources
from mapsync.engine.errors import ConfigError

__all__ = ["PlannedFile", "plan_project", "write_project"]


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of the new project: where it goes, and either its text or the file it is copied from."""

    path: Path  # relative to the project folder
    text: str | None = None
    source: Path | None = None


CONFIG = """\
# mapsync.yaml: where the mappings live and how to reach each environment.
# Secrets are ${ENV_VAR} references, never values: set them in the shell, the service's unit file or the
# CI secret store. A command for one environment (`--env stage`) needs only that environment's variables.
version: 1
mappings: mappings
environments:
  stage:
    d365:
      url: "${D365_STAGE_URL}"                # e.g. https://contoso-stage.crm4.dynamics.com
      tenant_id: "${D365_TENANT_ID}"          # the Entra ID tenant (directory) id
      client_id: "${D365_STAGE_CLIENT_ID}"    # the app registration of the Dataverse application user
      client_secret: "${D365_STAGE_CLIENT_SECRET}"
    campaign:
      organization: "${ACS_STAGE_ORG}"        # the Campaign tenant, e.g. contoso-stage
      client_id: "${ACS_STAGE_CLIENT_ID}"     # the Adobe Developer Console project (OAuth server-to-server)
      client_secret: "${ACS_STAGE_CLIENT_SECRET}"
    events:
      journal_url: "${ACS_STAGE_JOURNAL_URL}" # the I/O Events journal of the Campaign email events
    state: "sqlite:///.mapsync/stage.sqlite"
  prod:
    d365:
      url: "${D365_PROD_URL}"
      tenant_id: "${D365_TENANT_ID}"
      client_id: "${D365_PROD_CLIENT_ID}"
      client_secret: "${D365_PROD_CLIENT_SECRET}"
    campaign:
      organization: "${ACS_PROD_ORG}"
      client_id: "${ACS_PROD_CLIENT_ID}"
      client_secret: "${ACS_PROD_CLIENT_SECRET}"
    events:
      journal_url: "${ACS_PROD_JOURNAL_URL}"
    # Several runners, or a runner on a host without a disk of its own: a PostgreSQL state store.
    state: "sqlite:///.mapsync/prod.sqlite"
"""

GITIGNORE = """\
# mapsync's state (key maps, cursors, dead letters) and the local emulator's files: never in git.
/.mapsync/
*.sqlite
*.sqlite-wal
*.sqlite-shm
# The configuration `mapsync emulate --write-config emulator.yaml` writes (throw-away emulator secrets).
/emulator.yaml
# Secrets belong in the environment or the CI secret store, never in a file of this repository.
.env
.env.*
"""

README = """\
# Dynamics 365 ↔ Adobe Campaign integration

Driven by mapsync {version} (`mapsync --version`). What is here:

| path | holds |
| --- | --- |
| `mapsync.yaml` | the `stage` and `prod` environments; secrets are `${{ENV_VAR}}` references |
| `mappings/` | the flows (`*.map`) and their test cases (`*.test.yaml`) |
| `schemas/snapshots/` | the tables and fields of both systems the mappings are checked against |
| `.github/workflows/mapsync.yml` | validate, format check and tests on every pull request |

## Next steps

1. Check and test the mappings, offline:

       mapsync validate
       mapsync test

2. See the whole sync work end to end on local emulators of both services (no account needed):

       mapsync demo

   or by hand: `mapsync emulate --write-config emulator.yaml` in one terminal, then
   `mapsync --config emulator.yaml run --env emulator` in another.

3. Point `mapsync.yaml` at the client's org: set the `D365_*` and `ACS_*` variables it names, then
   refresh the snapshots from the live services (and review the diff):

       mapsync schema pull --env stage
       mapsync validate --env stage

4. Adapt `mappings/` (a new custom table: `mapsync schema pull --env stage --table new_membership
   --resource cusMembership`, then a flow), run `mapsync test`, and look before you write:

       mapsync plan --env stage
       mapsync run --env stage
       mapsync status --env stage
"""


def plan_project() -> list[PlannedFile]:
    """Every file of a new project, in the order they are written."""
    planned = [PlannedFile(Path("mapsync.yaml"), text=CONFIG)]
    starter = resources.starter_mappings_dir()
    planned += [PlannedFile(Path("mappings") / p.name, source=p)
                for p in sorted(starter.iterdir()) if p.suffix == ".map" or p.name.endswith(".test.yaml")]
    snapshots = resources.snapshots_dir()
    planned += [PlannedFile(Path("schemas") / "snapshots" / p.relative_to(snapshots), source=p)
                for p in sorted(snapshots.glob("*/*.json"))]
    planned += [
        PlannedFile(Path(".github") / "workflows" / "mapsync.yml", source=resources.ci_workflow()),
        PlannedFile(Path(".gitignore"), text=GITIGNORE),
        PlannedFile(Path("README.md"), text=README.format(version=__version__)),
    ]
    return planned


def write_project(folder: Path) -> list[Path]:
    """Write a new project into ``folder`` (created if missing); returns the paths written.

    Refuses, writing nothing, when ``folder`` is a file or any of the files is already there."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: is a file; give a folder for the new project", setting="DIR")
    planned = plan_project()
    existing = [f.path for f in planned if (folder / f.path).exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise ConfigError(f"{folder}: {len(existing)} of the project's files already exist ({shown}); "
                          "mapsync init never overwrites a file. "
                          "Choose an empty folder, or move those files away first.", setting="DIR")
    written = []
    for item in planned:
        target = folder / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.source is not None:
            shutil.copyfile(item.source, target)
        else:
            target.write_text(item.text or "", encoding="utf-8")
        written.append(target)
    return written

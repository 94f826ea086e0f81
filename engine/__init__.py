"""The sync engine's front door: load a job (config + checked, compiled mappings) and run it.

    job = load_job(Path("mapsync.yaml"), "stage")
    report = run_sync(job)                # or: await run_job(job, only=["contacts"], dry_run=True)
"""

from __future__ import annotations

from mapsync.engine.runner import Job, RunReport, load_job, run_job, run_sync

__all__ = ["Job", "RunReport", "load_job", "run_job", "run_sync"]

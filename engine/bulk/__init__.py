"""Campaign bulk loads: a full read with many writes goes to Campaign as CSV files through its import workflow
instead of one REST call per record.

    plan (the same planner as the REST path) -> files (``files``, ``staging``) -> SFTP upload (``sftp``)
    -> one External signal (``workflow``) -> poll until each file's ``.done`` (``imports``: rejects become
    dead letters) -> key map from a paged read of Campaign (``reconcile``) -> cursor

``route`` decides which path a flow takes and drives these stages for the executor; ``stages`` names them.
Every stage is recorded in the state store (``bulk_loads``, ``bulk_chunks``), so a killed run resumes from
the stage it reached and no file is signalled twice unless its import failed.
"""

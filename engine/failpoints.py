"""Crash tests only: ``MAPSYNC_FAILPOINT=site:n`` kills this process (SIGKILL, no cleanup) the n-th time a
flow reaches ``site`` (before-write, after-write, after-ack; an opt-out rule's writes reach before-write too; a
Campaign bulk load's bulk-writing after each file written, bulk-written, bulk-uploaded after each file uploaded,
bulk-signalled, bulk-imported after each file imported, bulk-reconciling after each page of Campaign read,
bulk-reconciled). Read when a flow or an opt-out run starts, not at import."""

from __future__ import annotations

import os
import signal

__all__ = ["Failpoint"]


class Failpoint:
    def __init__(self, spec: str | None) -> None:
        site, _, count = (spec or "").partition(":")
        self.site = site or None
        self.left = int(count) if count.isdigit() else 1

    @classmethod
    def from_env(cls) -> Failpoint:
        return cls(os.environ.get("MAPSYNC_FAILPOINT"))

    def reach(self, site: str) -> None:
        """Unset, this costs one comparison."""
        if site != self.site:
            return
        self.left -= 1
        if self.left <= 0:
            os.kill(os.getpid(), signal.SIGKILL)

"""What a marketer does in Campaign: send a delivery (which fills the events journal) and opt people out.

``Campaign.send_delivery`` writes, for every addressable profile, a ``send`` event and then, decided
deterministically from (seed, delivery number, profile), some ``bounce`` (hard or soft), ``open`` and
``click`` events. Profiles on the deny list (``blackList``/``blackListEmail``) or without an email are
skipped, as Campaign's typology rules would. Event ids are UUIDs derived from the same inputs, so
they are unique and stable for a given seed.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mapsync.emulators.campaign.store import CampaignStore
from mapsync.emulators.journal import Journal, build_event

__all__ = ["OPT_OUT_FIELDS", "Campaign", "DeliveryRates", "DeliveryResult"]

OPT_OUT_FIELDS = {
    "email": "blackListEmail",
    "sms": "blackListMobile",
    "phone": "blackListPhone",
    "mail": "blackListPostalMail",
    "fax": "blackListFax",
    "all": "blackList",
}
_BOUNCE_REASONS = {
    "hard": ("User unknown", "Invalid domain", "Mailbox closed"),
    "soft": ("Mailbox full", "Unreachable", "Refused"),
}
_LINKS = ("https://www.example.com/offers", "https://www.example.com/service", "https://www.example.com/unsubscribe")


@dataclass(frozen=True, slots=True)
class DeliveryRates:
    """Shares of recipients (``open``/``click`` are among non-bounced / openers)."""

    bounce: float = 0.05
    hard_share: float = 0.6
    open: float = 0.35
    click: float = 0.3


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivery_id: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    first_position: str | None = None
    last_position: str | None = None


class _Draw:
    """Uniform numbers in [0, 1) from a hash: fast, deterministic, no shared RNG state."""

    def __init__(self, *parts: object) -> None:
        self._digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=32).digest()
        self._i = 0

    def next(self) -> float:
        chunk = self._digest[self._i : self._i + 4]
        self._i = (self._i + 4) % 32
        return int.from_bytes(chunk, "big") / 2**32


class Campaign:
    """The marketer's side of the emulated Campaign, on top of the store and the journal."""

    def __init__(self, store: CampaignStore, journal: Journal, *, seed: int = 0, rates: DeliveryRates | None = None) -> None:
        self.store = store
        self.journal = journal
        self.seed = seed
        self.rates = rates or DeliveryRates()
        self._deliveries = 0

    def reset(self) -> None:
        self._deliveries = 0

    def opt_out(self, pkey: str, channel: str = "email") -> dict[str, Any] | None:
        """Put a profile on a deny list as a Campaign user would; bumps lastModified. None if unknown."""
        field_name = OPT_OUT_FIELDS[channel]
        row_id = self.store.row_id("profile", pkey)
        if row_id is None:
            return None
        updated = self.store.update("profile", row_id, {field_name: True})
        return updated[1] if updated else None

    def send_delivery(
        self,
        profile_pkeys: Iterable[str],
        label: str,
        campaign: str,
        *,
        rates: DeliveryRates | None = None,
        chunk: int = 5000,
    ) -> DeliveryResult:
        rates = rates or self.rates
        self._deliveries += 1
        number = self._deliveries
        delivery = {
            "id": f"DM{number:06d}",
            "label": label,
            "campaign": campaign,
            "campaign_id": "OP" + hashlib.blake2b(campaign.encode(), digest_size=4).hexdigest().upper(),
        }
        now = self.journal.clock.now()
        start = now - timedelta(hours=1)
        counts = dict.fromkeys(("send", "open", "click", "bounce"), 0)
        skipped = 0
        first: str | None = None
        last: str | None = None
        pending: list[dict[str, Any]] = []
        later: list[dict[str, Any]] = []

        def flush(batch: list[dict[str, Any]]) -> None:
            nonlocal first, last
            if batch:
                positions = self.journal.extend(batch)
                first = first or positions[0]
                last = positions[-1]
                batch.clear()

        for index, pkey in enumerate(profile_pkeys):
            profile = self._profile(pkey)
            if profile is None or not profile.get("email") or profile.get("blackList") or profile.get("blackListEmail"):
                skipped += 1
                continue
            send, reactions = self._recipient(number, index, pkey, profile, delivery, start, rates)
            pending.append(send)
            counts["send"] += 1
            for reaction in reactions:
                counts[reaction["type"]] += 1
            later.extend(reactions)
            if len(pending) >= chunk:
                flush(pending)
        flush(pending)
        # Reactions arrive after the sends, in time order, as a real journal would show them.
        later.sort(key=lambda e: e["timestamp"])
        for part in _chunks(later, chunk):
            flush(part)
        return DeliveryResult(delivery["id"], counts, skipped, first, last)

    def _recipient(
        self,
        number: int,
        index: int,
        pkey: str,
        profile: dict[str, Any],
        delivery: dict[str, str],
        start: datetime,
        rates: DeliveryRates,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One recipient's send event and the reactions the seed decides for it."""
        draw = _Draw(self.seed, number, pkey)
        broadlog = f"BL{number:06d}{index:09d}"
        info = {**delivery, "broadlog_id": broadlog}
        sent_at = start + timedelta(seconds=index % 600)
        mirror = f"https://mirror.example.com/m/{broadlog}"

        def event(kind: str, offset: float, n: int = 0, **extra: Any) -> dict[str, Any]:
            digest = hashlib.blake2b(f"{self.seed}:{number}:{pkey}:{kind}:{n}".encode(), digest_size=16).digest()
            return build_event(kind, event_id=str(uuid.UUID(bytes=digest)), at=sent_at + timedelta(seconds=offset),
                               profile=profile, delivery=info, mirror_page_url=mirror, **extra)

        reactions: list[dict[str, Any]] = []
        if draw.next() < rates.bounce:
            kind = "hard" if draw.next() < rates.hard_share else "soft"
            reasons = _BOUNCE_REASONS[kind]
            reactions.append(event("bounce", 30 + draw.next() * 300, bounce_type=kind,
                                   bounce_reason=reasons[int(draw.next() * len(reasons))]))
        elif draw.next() < rates.open:
            opened = 60 + draw.next() * 1800
            reactions.append(event("open", opened))
            if draw.next() < rates.click:
                for n in range(1 + int(draw.next() * 2)):
                    url = _LINKS[int(draw.next() * len(_LINKS))]
                    reactions.append(event("click", opened + 5 + n * 20, n, url=url))
        return event("send", 0), reactions

    def _profile(self, pkey: str) -> dict[str, Any] | None:
        row_id = self.store.row_id("profile", pkey)
        data = self.store.get("profile", row_id) if row_id is not None else None
        return None if data is None else {**data, "PKey": pkey}

    def all_profile_pkeys(self) -> Iterator[str]:
        for row_id, _ in self.store.rows_where("profile"):
            yield self.store.pkey("profile", row_id)


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

"""Seeded demo data that looks like a real CRM export, deterministic by seed and sized by a flag.

Row ``i`` of every table is a pure function of ``(seed, table, i)``: a 64-byte BLAKE2b digest supplies
every choice, so nothing is generated until asked for, any row can be regenerated on its own (the
Dataverse store can keep only what changed), and 1,000,000 contacts cost CPU, not memory.

The mess real CRMs have, on purpose:

- names with accents (Zoë, François, Müller, Ñúñez), in Cyrillic, Greek, CJK and Arabic scripts;
- empty strings next to nulls; first names longer than Campaign's 30 characters;
- duplicate emails (the same person entered twice, with different case), invalid emails
  (``jean.dupont@``, ``n/a``, ``a b@example.com``), contacts with no email at all;
- every option-set value of the snapshot, inactive rows (``statecode`` 1 / ``statuscode`` 2);
- accounts that contacts' ``parentcustomerid`` points at, vehicles whose ``new_contactid`` points at
  contacts (some at none);
- Campaign profiles that mapsync did not create (no ``externalId``), some with a contact's email.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

from mapsync import resources

__all__ = ["SeedData", "account_id", "contact_id", "vehicle_id"]

_SNAPSHOTS = resources.snapshots_dir()
_EPOCH = datetime(2023, 1, 1, tzinfo=UTC)

# (first names, last names, cities with country, email-safe stems or None when the script is not Latin)
_LOCALES: tuple[dict[str, Any], ...] = (
    {"first": ("James", "Mary", "Robert", "Patricia", "Michael", "Jennifer", "William", "Linda", "Zoë", "Chloé"),
     "last": ("Smith", "Johnson", "Williams", "O'Brien", "Brown", "Jones", "Miller", "Davis", "Van der Berg", "MacDonald"),
     "city": (("London", "GB", "United Kingdom"), ("Manchester", "GB", "UK"), ("New York", "US", "United States"),
              ("Chicago", "US", "USA")), "lang": "en", "weight": 40},
    {"first": ("François", "Hélène", "Jérôme", "Amélie", "Benoît", "Cécile", "Loïc", "Inès"),
     "last": ("Dupont", "Lefèvre", "Girard", "Bérenger", "Moreau", "Fontaine", "D'Artagnan"),
     "city": (("Paris", "FR", "France"), ("Lyon", "FR", "France"), ("Montréal", "CA", "Canada")), "lang": "fr", "weight": 15},
    {"first": ("Jürgen", "Gerd", "Müller", "Bärbel", "Jörg", "Käthe", "Lukas", "Anna"),
     "last": ("Müller", "Schröder", "Weiß", "Groß", "Köhler", "Schmidt", "Bäcker"),
     "city": (("München", "DE", "Deutschland"), ("Köln", "DE", "Germany"), ("Wien", "AT", "Österreich")), "lang": "de", "weight": 12},
    {"first": ("José", "María", "Ñuño", "Begoña", "Íñigo", "Lucía"),
     "last": ("Núñez", "García", "Pérez", "Muñoz", "Fernández", "Ibáñez"),
     "city": (("Madrid", "ES", "España"), ("Sevilla", "ES", "Spain"), ("México", "MX", "Mexico")), "lang": "es", "weight": 10},
    {"first": ("Иван", "Ольга", "Сергей", "Наталья", "Дмитрий", "Анна"),
     "last": ("Иванов", "Смирнова", "Кузнецов", "Попова", "Соколов"),
     "city": (("Москва", "RU", "Россия"), ("Санкт-Петербург", "RU", "Russia")), "lang": "ru", "weight": 6},
    {"first": ("Γιώργος", "Μαρία", "Νίκος", "Ελένη", "Δημήτρης"),
     "last": ("Παπαδόπουλος", "Οικονόμου", "Γεωργίου", "Νικολάου"),
     "city": (("Αθήνα", "GR", "Ελλάδα"), ("Θεσσαλονίκη", "GR", "Greece")), "lang": "el", "weight": 4},
    {"first": ("太郎", "花子", "伟", "芳", "민준", "서연"),
     "last": ("山田", "佐藤", "王", "李", "김", "박"),
     "city": (("東京", "JP", "日本"), ("北京", "CN", "中国"), ("서울", "KR", "대한민국")), "lang": "ja", "weight": 7},
    {"first": ("محمد", "فاطمة", "أحمد", "مريم", "علي"),
     "last": ("العلي", "حسن", "الخطيب", "منصور"),
     "city": (("دبي", "AE", "الإمارات"), ("القاهرة", "EG", "Egypt"), ("الرياض", "SA", "Saudi Arabia")), "lang": "ar", "weight": 6},
)
_LOCALE_TABLE = tuple(i for i, loc in enumerate(_LOCALES) for _ in range(loc["weight"]))
_LONG_FIRST = ("Maria-Magdalena Josefina Alexandra", "Jean-Baptiste Emmanuel Zorg-Lévêque", "Anna-Katharina Friederike Luise")
_DOMAINS = ("example.com", "example.org", "mail.example.net", "contoso.example", "fabrikam.example")
_BAD_EMAILS = ("jean.dupont@", "n/a", "a b@example.com", "@example.com", "john..doe@example.com", "none", "test@localhost")
_COMPANIES = ("Contoso", "Fabrikam", "Northwind Traders", "Adventure Works", "Tailspin Toys", "Wide World Importers",
              "Müller Maschinenbau", "Société Générale d'Électricité", "株式会社山田商事", "ООО Ромашка", "Αφοί Παπαδόπουλοι")
_SUFFIXES = ("Ltd", "Inc.", "GmbH", "SARL", "S.A.", "", "LLC", "K.K.")
_MAKES = (("Volkswagen", ("Golf", "Passat", "ID.4")), ("Toyota", ("Corolla", "RAV4", "Yaris")), ("Škoda", ("Octavia", "Fabia")),
          ("Citroën", ("C3", "Berlingo")), ("Ford", ("Focus", "Fiesta", "Kuga")), ("BMW", ("320d", "X3")))
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e", "ê": "e", "ë": "e", "à": "a",
                           "â": "a", "ç": "c", "î": "i", "ï": "i", "ô": "o", "û": "u", "ù": "u", "ñ": "n", "í": "i",
                           "ó": "o", "ú": "u", "á": "a", "ø": "o", "'": "", " ": ""})


def _digest(seed: int, table: str, i: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{table}:{i}".encode(), digest_size=64).digest()


def _guid(seed: int, table: str, i: int) -> str:
    raw = bytearray(hashlib.blake2b(f"{seed}:{table}:id:{i}".encode(), digest_size=16).digest())
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4 layout, as Dataverse's GUIDs have
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def contact_id(seed: int, i: int) -> str:
    return _guid(seed, "contact", i)


def account_id(seed: int, i: int) -> str:
    return _guid(seed, "account", i)


def vehicle_id(seed: int, i: int) -> str:
    return _guid(seed, "new_vehicle", i)


class _Bytes:
    """Draws from a digest: ``byte()`` 0..255, ``chance(p)``, ``pick(seq)``, ``num(n)`` < n."""

    __slots__ = ("_d", "_i")

    def __init__(self, digest: bytes) -> None:
        self._d = digest
        self._i = 0

    def byte(self) -> int:
        b = self._d[self._i % 64]
        self._i += 1
        return b

    def num(self, n: int) -> int:
        return ((self.byte() << 16) | (self.byte() << 8) | self.byte()) % n

    def chance(self, p: float) -> bool:
        return ((self.byte() << 8) | self.byte()) < p * 65536

    def pick(self, seq: Any) -> Any:
        return seq[self.num(len(seq))]


@cache
def _options(system: str, table: str) -> dict[str, tuple[int, ...]]:
    path = _SNAPSHOTS / system / f"{table}.json"
    if not path.exists():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: tuple(o["value"] for o in spec["options"]) for name, spec in raw["fields"].items()
            if spec["type"] == "choice" and name not in ("statecode", "statuscode")}


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class SeedData:
    """The demo data set. Counts of accounts, vehicles and pre-existing profiles derive from ``contacts``."""

    seed: int = 42
    contacts: int = 1000

    @property
    def accounts(self) -> int:
        return max(1, self.contacts // 10)

    @property
    def vehicles(self) -> int:
        return self.contacts // 2

    @property
    def profiles(self) -> int:
        """Profiles that exist in Campaign before mapsync ever ran (no externalId)."""
        return max(1, self.contacts // 20)

    @property
    def _contact_options(self) -> dict[str, tuple[int, ...]]:
        return _options("d365", "contact")

    @property
    def _account_options(self) -> dict[str, tuple[int, ...]]:
        return _options("d365", "account")

    @property
    def _vehicle_options(self) -> dict[str, tuple[int, ...]]:
        return _options("d365", "new_vehicle")

    # ---- contacts -----------------------------------------------------------------------------
    def _person(self, r: _Bytes) -> tuple[dict[str, Any], str, str]:
        locale = _LOCALES[r.pick(_LOCALE_TABLE)]
        first = r.pick(locale["first"])
        last = r.pick(locale["last"])
        return locale, first, last

    def _email_for(self, first: str, last: str, i: int, r: _Bytes) -> str:
        stem = f"{first}.{last}".lower().translate(_TRANSLIT)
        if not stem.isascii() or not stem.replace(".", "").replace("-", "").isalnum():
            stem = "user"  # names in other scripts: CRMs hold whatever address the person gave
        return f"{stem}{i}@{r.pick(_DOMAINS)}"

    def contact(self, i: int) -> dict[str, Any]:
        """Contact ``i`` (0-based) as Dataverse stores it: logical names, lookups as GUID strings."""
        s = self.seed
        r = _Bytes(_digest(s, "contact", i))
        locale, first, last = self._person(r)
        if r.chance(0.03):
            first = r.pick(_LONG_FIRST)  # longer than Campaign's firstName (30)
        elif r.chance(0.02):
            first = ""
        elif r.chance(0.03):
            first = None  # type: ignore[assignment]
        email: str | None
        roll = r.num(1000)
        if roll < 50:
            email = None
        elif roll < 70:
            email = ""
        elif roll < 85:
            email = r.pick(_BAD_EMAILS)
        elif roll < 105 and i > 0:
            # The same person entered twice: the previous contact's name and address (in other case, at times).
            twin = self.contact(i - 1)
            first, last = twin["firstname"], twin["lastname"]
            prev = twin["emailaddress1"]
            email = prev.upper() if prev and r.chance(0.5) else prev
        else:
            email = self._email_for(first or "x", last, i, r)
            if r.chance(0.03):
                email = email.title()  # Jean.Dupont12@Example.Com
        city, country_code, country = r.pick(locale["city"])
        created = _EPOCH + timedelta(seconds=r.num(3 * 365 * 86400))
        modified = created + timedelta(seconds=r.num(180 * 86400))
        inactive = r.chance(0.05)
        row: dict[str, Any] = {
            "contactid": contact_id(s, i),
            "firstname": first,
            "lastname": last,
            "fullname": " ".join(p for p in (first, last) if p),
            "emailaddress1": email,
            "telephone1": None if r.chance(0.3) else f"+{r.num(90) + 10} {r.num(900) + 100} {r.num(900000) + 100000}",
            "mobilephone": "" if r.chance(0.2) else (None if r.chance(0.3) else f"+{r.num(90) + 10} 7{r.num(100000000):08d}"),
            "jobtitle": None if r.chance(0.5) else r.pick(("Purchasing Manager", "CEO", "Ingénieur", "Einkäufer", "")),
            "birthdate": None if r.chance(0.4) else (date(1940, 1, 1) + timedelta(days=r.num(65 * 365))).isoformat(),
            "gendercode": None if r.chance(0.25) else r.pick((1, 2)),
            "address1_line1": None if r.chance(0.3) else f"{r.num(200) + 1} {r.pick(('High Street', 'Rue de la Paix', 'Hauptstraße', 'Calle Mayor', 'ул. Ленина'))}",
            "address1_city": "" if r.chance(0.05) else city,
            "address1_postalcode": None if r.chance(0.2) else f"{r.num(90000) + 10000}",
            "address1_country": country,
            "donotbulkemail": r.chance(0.08),
            "donotemail": r.chance(0.03),
            "parentcustomerid": None if r.chance(0.3) else account_id(s, r.num(self.accounts)),
            "statecode": 1 if inactive else 0,
            "statuscode": 2 if inactive else 1,
            "createdon": _stamp(created),
            "modifiedon": _stamp(modified),
        }
        del country_code
        for name, values in self._contact_options.items():
            if name in row:
                continue
            # Cycling by index (offset per field) makes every value appear once there are enough rows.
            row[name] = None if r.chance(0.15) else values[(i + len(name)) % len(values)]
        return row

    def contact_email(self, i: int) -> str | None:
        return self.contact(i)["emailaddress1"]

    def iter_contacts(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        for i in range(start, self.contacts if stop is None else min(stop, self.contacts)):
            yield self.contact(i)

    # ---- accounts -----------------------------------------------------------------------------
    def account(self, i: int) -> dict[str, Any]:
        s = self.seed
        r = _Bytes(_digest(s, "account", i))
        locale = _LOCALES[r.pick(_LOCALE_TABLE)]
        city, _, country = r.pick(locale["city"])
        name = f"{r.pick(_COMPANIES)} {r.pick(_SUFFIXES)}".strip()
        created = _EPOCH + timedelta(seconds=r.num(3 * 365 * 86400))
        inactive = r.chance(0.05)
        row: dict[str, Any] = {
            "accountid": account_id(s, i),
            "name": f"{name} ({city})" if r.chance(0.5) else f"{name} #{i}",
            "accountnumber": None if r.chance(0.2) else f"ACC-{i:07d}",
            "emailaddress1": None if r.chance(0.3) else f"info{i}@{r.pick(_DOMAINS)}",
            "telephone1": None if r.chance(0.2) else f"+{r.num(90) + 10} {r.num(900) + 100} {r.num(9000) + 1000}",
            "address1_city": city,
            "address1_country": country,
            "numberofemployees": None if r.chance(0.3) else r.num(50000),
            "donotbulkemail": r.chance(0.1),
            "statecode": 1 if inactive else 0,
            "statuscode": 2 if inactive else 1,
            "createdon": _stamp(created),
            "modifiedon": _stamp(created + timedelta(seconds=r.num(90 * 86400))),
        }
        for name_, values in self._account_options.items():
            row[name_] = None if r.chance(0.2) else values[(i + len(name_)) % len(values)]
        return row

    def iter_accounts(self) -> Iterator[dict[str, Any]]:
        for i in range(self.accounts):
            yield self.account(i)

    # ---- vehicles -----------------------------------------------------------------------------
    def vehicle(self, i: int) -> dict[str, Any]:
        s = self.seed
        r = _Bytes(_digest(s, "new_vehicle", i))
        make, models = r.pick(_MAKES)
        model = r.pick(models)
        year = 1995 + r.num(30)
        vin = "".join(_VIN_CHARS[r.num(len(_VIN_CHARS))] for _ in range(17))
        if r.chance(0.03):
            vin = ""
        created = _EPOCH + timedelta(seconds=r.num(3 * 365 * 86400))
        inactive = r.chance(0.05)
        row: dict[str, Any] = {
            "new_vehicleid": vehicle_id(s, i),
            "new_name": f"{make} {model} {year}",
            "new_vin": vin,
            "new_make": make,
            "new_model": model,
            "new_year": year,
            "new_contactid": None if r.chance(0.05) else contact_id(s, r.num(max(1, self.contacts))),
            "statecode": 1 if inactive else 0,
            "statuscode": 2 if inactive else 1,
            "createdon": _stamp(created),
            "modifiedon": _stamp(created + timedelta(seconds=r.num(60 * 86400))),
        }
        for name, values in self._vehicle_options.items():
            row[name] = None if r.chance(0.1) else values[(i + len(name)) % len(values)]
        return row

    def iter_vehicles(self) -> Iterator[dict[str, Any]]:
        for i in range(self.vehicles):
            yield self.vehicle(i)

    # ---- Campaign profiles that were there before mapsync -------------------------------------
    def profile(self, i: int) -> dict[str, Any]:
        """A Campaign profile in the API's field names; never has an externalId."""
        r = _Bytes(_digest(self.seed, "profile", i))
        locale, first, last = self._person(r)
        email: str | None
        if r.chance(0.3) and self.contacts:
            # Someone a marketer imported by hand who is also a CRM contact: same address, maybe other case.
            email = self.contact_email(r.num(self.contacts))
            if email and r.chance(0.3):
                email = email.lower() if email != email.lower() else email.capitalize()
        else:
            email = self._email_for(first, last, 10_000_000 + i, r)
        city, country_code, _ = r.pick(locale["city"])
        row: dict[str, Any] = {
            "email": email or "",
            "firstName": first[:30],
            "lastName": last,
            "gender": r.pick(("male", "female", "unknown")),
            "preferredLanguage": locale["lang"],
            "location": {"city": city, "countryCode": country_code},
            "blackListEmail": r.chance(0.05),
        }
        if r.chance(0.6):
            row["birthDate"] = (date(1950, 1, 1) + timedelta(days=r.num(55 * 365))).isoformat()
        return row

    def iter_profiles(self) -> Iterator[dict[str, Any]]:
        for i in range(self.profiles):
            yield self.profile(i)

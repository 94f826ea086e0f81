"""mapsync.engine.redact: the one function that makes a URL printable."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapsync.engine.redact import redact_url, redact_urls

# A marker keeps a generated secret from being a word the URL holds anyway.
SECRETS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=24).map(
    lambda tail: "Zq7" + tail
)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:pw@db:5432/x", "postgresql://u:***@db:5432/x"),
    ("postgresql://u@db/x?password=pw&sslmode=require", "postgresql://u@db/x?password=***&sslmode=require"),
    ("postgresql://u@db/x?sslmode=require&sslpassword=k", "postgresql://u@db/x?sslmode=require&sslpassword=***"),
    ("https://acct.blob.core.windows.net/c?sv=2022&sig=abc%2F", "https://acct.blob.core.windows.net/c?sv=2022&sig=***"),
    ("https://h/p?access_token=t&token=u&api-key=k&client_secret=s&X-Amz-Signature=z",
     "https://h/p?access_token=***&token=***&api-key=***&client_secret=***&X-Amz-Signature=***"),
    ("https://h/cb#access_token=t&state=1", "https://h/cb#access_token=***&state=1"),
    ("postgresql://u@db/x", "postgresql://u@db/x"),
    ("https://org.crm.dynamics.com", "https://org.crm.dynamics.com"),
])
def test_credentials_are_masked_and_the_rest_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_an_unparsable_url_is_not_shown_at_all() -> None:
    assert redact_url("postgresql://u:pw@[::1/x") == "(unparsable URL)"


def test_every_url_in_a_text_is_redacted() -> None:
    text = "cannot connect to postgresql://u:pw1@db/x?password=pw2 nor https://h/?sig=pw3: refused"
    shown = redact_urls(text)
    assert not any(p in shown for p in ("pw1", "pw2", "pw3"))
    assert shown.startswith("cannot connect to postgresql://u:***@db/x?password=*** nor https://h/?sig=***")


@given(secret=SECRETS, where=st.sampled_from(["userinfo", "password", "sslpassword", "sig", "token", "key"]))
def test_a_planted_secret_never_survives(secret: str, where: str) -> None:
    encoded = quote(secret, safe="")
    if where == "userinfo":
        url = f"postgresql://mapsync:{encoded}@db.internal:5432/state?sslmode=require"
    else:
        url = f"postgresql://mapsync@db.internal:5432/state?sslmode=require&{where}={encoded}"
    shown = redact_url(url)
    assert secret not in shown and encoded not in shown
    assert "db.internal:5432/state" in shown and "sslmode=require" in shown

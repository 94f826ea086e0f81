"""Entra ID access tokens as Microsoft issues them for an application (client-credentials flow): RS256-signed
JWTs whose signing key is published in the tenant's JWKS (``discovery/keys``, ``discovery/v2.0/keys``).

Documented by Microsoft ("Access tokens", "Access token claims reference"): the header names the key with
``kid`` and ``x5t`` (the base64url SHA-1 thumbprint of the key's certificate); an app-only token carries
``aud`` (the resource the scope named, here the Dataverse URL), ``iss``, ``iat``/``nbf``/``exp``, ``appid`` and
``appidacr`` (v1.0 tokens), ``idp``, ``idtyp: "app"``, ``oid`` and ``sub`` (the service principal), ``tid``,
``uti``, ``ver``, and ``roles`` only when the application was granted app roles. Dataverse's resource accepts
v1.0 tokens, which is what Entra ID issues it, so ``iss`` is ``https://sts.windows.net/{tenant}/``.

Assumed: ``iat``/``nbf`` five minutes before issue (Entra's allowance for clock skew), the key and certificate
made fresh per process (a real tenant rotates its keys every few weeks).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = ["CLOCK_SKEW_SECONDS", "JwtSigner", "v1_issuer"]

CLOCK_SKEW_SECONDS = 300
_NS = uuid.UUID("3c1f5f0e-7a53-4b0b-9a8e-656e74726121")
_KEY_LOCK = threading.Lock()
_KEY: tuple[rsa.RSAPrivateKey, bytes] | None = None  # one key per process: RSA generation is slow


def v1_issuer(tenant: str) -> str:
    return f"https://sts.windows.net/{tenant}/"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _process_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    global _KEY
    with _KEY_LOCK:
        if _KEY is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.accesscontrol.windows.net")])
            now = datetime.now(UTC)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                    .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256()))
            _KEY = (key, cert.public_bytes(serialization.Encoding.DER))
        return _KEY


class JwtSigner:
    """Signs app-only access tokens and publishes the key that verifies them."""

    def __init__(self) -> None:
        self._key, self._cert_der = _process_key()
        self.kid = _b64url(hashlib.sha1(self._cert_der).digest())

    def access_token(self, *, tenant: str, client_id: str, scope: str, issued_at: float, expires_at: float,
                     roles: tuple[str, ...] = ()) -> str:
        principal = str(uuid.uuid5(_NS, f"{tenant}/{client_id}"))
        start = int(issued_at) - CLOCK_SKEW_SECONDS
        claims: dict[str, Any] = {
            "aud": scope.removesuffix("/.default"),
            "iss": v1_issuer(tenant),
            "iat": start,
            "nbf": start,
            "exp": int(expires_at),
            "appid": client_id,
            "appidacr": "1",
            "idp": v1_issuer(tenant),
            "idtyp": "app",
            "oid": principal,
            "sub": principal,
            "tid": tenant,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        if roles:
            claims["roles"] = list(roles)
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"typ": "JWT", "x5t": self.kid, "kid": self.kid})

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this signer made, checked for signature only (expiry is the caller's);
        None when it is not one."""
        try:
            claims = jwt.decode(token, self._key.public_key(), algorithms=["RS256"],
                                options={"verify_exp": False, "verify_nbf": False, "verify_aud": False})
        except jwt.PyJWTError:
            return None
        return claims

    def jwks(self, tenant: str) -> dict[str, Any]:
        """The tenant's JSON Web Key Set, in Entra ID's shape."""
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid, "n": _uint(numbers.n), "e": _uint(numbers.e),
            "x5c": [base64.b64encode(self._cert_der).decode()],
            "issuer": f"https://login.microsoftonline.com/{tenant}/v2.0",
        }]}

"""Salted secret hashes for recipient credentials: what is kept instead of a PIN or QR token.

The plain PIN and token leave the coordinator once, in the submit reply; the order store keeps
only `SecretHash` values (scrypt, salted, parameters embedded), so a leaked database opens no
compartment. A 6-digit PIN has little entropy, so it gets a deliberately slow scrypt; a random
QR token needs no key stretching, so it gets a cheap one. Issuing, signing, expiry and lockout
are the handoff's (`handoff_credentials`); this module is only the hash format both share.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PIN_DIGITS = 6


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost: n = 2**log2_n; memory is about 128 * r * n bytes."""

    log2_n: int = 14
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.log2_n <= 20 and 1 <= self.r <= 32 and 1 <= self.p <= 16):
            raise ValueError(f"scrypt parameters out of range: {self}")


# About 80 ms and 16 MiB per PIN here: slows offline guessing of 10**6 PINs to core-hours.
PIN_PARAMS = ScryptParams(log2_n=14, r=8, p=1)
# A 192-bit random token cannot be guessed; a salted hash is all it needs.
TOKEN_PARAMS = ScryptParams(log2_n=1, r=1, p=1)

_SALT_BYTES = 16
_DIGEST_BYTES = 32
_ENCODED = re.compile(
    r"^scrypt\$ln=(?P<ln>\d+),r=(?P<r>\d+),p=(?P<p>\d+)\$(?P<salt>[A-Za-z0-9_-]+)\$"
    r"(?P<digest>[A-Za-z0-9_-]+)$"
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, salt: bytes, params: ScryptParams) -> bytes:
    n = 2**params.log2_n
    return hashlib.scrypt(
        secret.encode("utf-8"),
        salt=salt,
        n=n,
        r=params.r,
        p=params.p,
        maxmem=256 * params.r * n * params.p + 2**20,
        dklen=_DIGEST_BYTES,
    )


@dataclass(frozen=True)
class SecretHash:
    """A salted scrypt hash in one self-describing string (`scrypt$ln=..,r=..,p=..$salt$hash`).

    A distinct type so the store's signature cannot be handed a plain PIN by mistake.
    """

    encoded: str

    def __post_init__(self) -> None:
        match = _ENCODED.match(self.encoded)
        if match is None or len(_unb64(match["digest"])) != _DIGEST_BYTES:
            raise ValueError("not an encoded scrypt hash")
        ScryptParams(int(match["ln"]), int(match["r"]), int(match["p"]))  # range check

    def __repr__(self) -> str:
        return "SecretHash(<redacted>)"

    def verify(self, secret: str) -> bool:
        """Constant-time check of a presented secret against this hash."""
        match = _ENCODED.match(self.encoded)
        assert match is not None  # checked in __post_init__
        params = ScryptParams(int(match["ln"]), int(match["r"]), int(match["p"]))
        expected = _unb64(match["digest"])
        actual = _scrypt(secret, _unb64(match["salt"]), params)
        return hmac.compare_digest(expected, actual)


def hash_secret(secret: str, params: ScryptParams = PIN_PARAMS) -> SecretHash:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(secret, salt, params)
    return SecretHash(
        f"scrypt$ln={params.log2_n},r={params.r},p={params.p}${_b64(salt)}${_b64(digest)}"
    )


def new_pin() -> str:
    return f"{secrets.randbelow(10**PIN_DIGITS):0{PIN_DIGITS}d}"

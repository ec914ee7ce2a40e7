"""Who is calling the shop API: bearer tokens per shop and for the operator, and rate limits.

Tokens are long random secrets (>= 128 bits), so a single SHA-256 is enough to store them
safely (slow password hashes guard low-entropy secrets; these are not), and it keeps each
request's check cheap. Config holds only the hashes: `hash_token()` makes them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

OPERATOR = "operator"
MIN_TOKEN_LENGTH = 22  # 22 url-safe base64 characters = 132 bits


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a shop (sees only its own orders) or the operator (all)."""

    name: str  # shop id, or OPERATOR

    @property
    def is_operator(self) -> bool:
        return self.name == OPERATOR

    def may_see(self, shop_id: str) -> bool:
        return self.is_operator or self.name == shop_id


class TokenRegistry:
    def __init__(self, shop_token_hashes: dict[str, str], operator_token_hash: str) -> None:
        entries = [*shop_token_hashes.items(), (OPERATOR, operator_token_hash)]
        problems = [f"{name}: token hash must look like 'sha256:<64 hex>'"
                    for name, digest in entries if not _valid_hash(digest)]
        if OPERATOR in shop_token_hashes:
            problems.append(f"'{OPERATOR}' cannot be a shop id")
        if problems:
            raise ValueError("bad API token config: " + "; ".join(problems))
        self._by_hash = {digest: name for name, digest in shop_token_hashes.items()}
        self._by_hash[operator_token_hash] = OPERATOR

    def authenticate(self, authorization_header: str | None) -> Caller | None:
        """The caller for an `Authorization: Bearer <token>` header, or None."""
        if not authorization_header:
            return None
        scheme, _, token = authorization_header.partition(" ")
        if scheme.lower() != "bearer" or len(token.strip()) < MIN_TOKEN_LENGTH:
            return None
        digest = hash_token(token.strip())
        for known, name in self._by_hash.items():  # constant time per entry, few entries
            if hmac.compare_digest(known, digest):
                return Caller(name)
        return None


def _valid_hash(digest: str) -> bool:
    prefix, _, hexdigest = digest.partition(":")
    return prefix == "sha256" and len(hexdigest) == 64 and all(
        c in "0123456789abcdef" for c in hexdigest)


@dataclass
class RateLimiter:
    """A token bucket per caller: `burst` requests at once, refilled at `per_second`."""

    per_second: float
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("rate limit needs per_second > 0 and burst >= 1")

    def allow(self, caller: str, now: float) -> float:
        """0.0 if the request may go ahead, else the seconds to wait before retrying."""
        tokens, last = self._buckets.get(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.per_second

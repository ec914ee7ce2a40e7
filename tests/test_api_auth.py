from __future__ import annotations

import pytest

from delivery_robot.api_auth import (
    OPERATOR,
    RateLimiter,
    TokenRegistry,
    hash_token,
    new_token,
)

BAKERY, PHARMACY, OPS = new_token(), new_token(), new_token()


@pytest.fixture
def registry() -> TokenRegistry:
    return TokenRegistry({"bakery": hash_token(BAKERY), "pharmacy": hash_token(PHARMACY)},
                         hash_token(OPS))


def test_each_token_maps_to_its_caller(registry: TokenRegistry) -> None:
    bakery = registry.authenticate(f"Bearer {BAKERY}")
    assert bakery is not None
    assert bakery.name == "bakery"
    assert bakery.may_see("bakery")
    assert not bakery.may_see("pharmacy")
    operator = registry.authenticate(f"bearer {OPS}")
    assert operator is not None
    assert operator.is_operator
    assert operator.may_see("pharmacy")


@pytest.mark.parametrize("header", [None, "", "Bearer", f"Basic {BAKERY}", "Bearer short",
                                    f"Bearer {BAKERY}x", f"Bearer {new_token()}"])
def test_anything_else_is_anonymous(registry: TokenRegistry, header: str | None) -> None:
    assert registry.authenticate(header) is None


def test_config_with_plain_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="bakery: token hash must look like"):
        TokenRegistry({"bakery": BAKERY}, hash_token(OPS))
    with pytest.raises(ValueError, match="cannot be a shop id"):
        TokenRegistry({OPERATOR: hash_token(BAKERY)}, hash_token(OPS))


def test_rate_limit_allows_a_burst_then_refills() -> None:
    limiter = RateLimiter(per_second=2.0, burst=3)
    assert [limiter.allow("bakery", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("bakery", 0.0) == pytest.approx(0.5)
    assert limiter.allow("pharmacy", 0.0) == 0.0  # buckets are per caller
    assert limiter.allow("bakery", 0.5) == 0.0
    assert limiter.allow("bakery", 0.5) > 0.0
    with pytest.raises(ValueError, match="rate limit"):
        RateLimiter(per_second=0.0, burst=1)

"""The shop API's config file: port, rate limit, and *hashes* of the shop and operator tokens.

Plain tokens never live in config (see `python -m delivery_robot.web.tokens new`); a config
with a bad hash or a bad number refuses to load instead of starting an API nobody can use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from delivery_robot.api_auth import RateLimiter, TokenRegistry


@dataclass(frozen=True)
class ShopEntry:
    shop_id: str
    name: str
    token_sha256: str  # "sha256:<64 hex>"


@dataclass(frozen=True)
class ApiConfig:
    shops: tuple[ShopEntry, ...]
    operator_token_sha256: str
    host: str = "0.0.0.0"
    port: int = 8080
    rate_per_second: float = 10.0
    rate_burst: int = 20
    demo_tokens: bool = False  # the hashes are of the public demo tokens (config/demo_tokens.yaml)

    def token_registry(self) -> TokenRegistry:
        return TokenRegistry({s.shop_id: s.token_sha256 for s in self.shops},
                             self.operator_token_sha256)

    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.rate_per_second, self.rate_burst)


def _digest(value: object, where: str) -> str:
    """Accept "sha256:<hex>" or bare hex (what `sha256sum` prints)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: token_sha256 must be a non-empty string")
    value = value.strip().lower()
    return value if value.startswith("sha256:") else "sha256:" + value


def parse_api_config(data: Mapping[str, Any], source: str = "<shop api config>") -> ApiConfig:
    try:
        raw_shops = data.get("shops") or {}
        if not isinstance(raw_shops, Mapping):
            raise ValueError("shops must be a mapping shop_id -> {name, token_sha256}")
        shops = []
        for shop_id, entry in raw_shops.items():
            if not isinstance(entry, Mapping):
                raise ValueError(f"shops.{shop_id} must be a mapping")
            shops.append(ShopEntry(str(shop_id), str(entry.get("name", shop_id)),
                                   _digest(entry.get("token_sha256"), f"shops.{shop_id}")))
        rate = data.get("rate_limit") or {}
        config = ApiConfig(
            shops=tuple(shops),
            operator_token_sha256=_digest(data.get("operator_token_sha256"),
                                          "operator_token_sha256"),
            host=str(data.get("host", "0.0.0.0")),
            port=int(data.get("port", 8080)),
            rate_per_second=float(rate.get("per_second", 10.0)),
            rate_burst=int(rate.get("burst", 20)),
            demo_tokens=bool(data.get("demo_tokens", False)),
        )
        if not 0 <= config.port <= 65535:
            raise ValueError(f"port {config.port} out of range")
        config.token_registry()  # validates the hashes
        config.rate_limiter()  # validates the numbers
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{source}: {error}") from None
    return config


def load_api_config(path: str | Path) -> ApiConfig:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return parse_api_config(data, str(path))

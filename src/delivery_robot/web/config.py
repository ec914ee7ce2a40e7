"""The shop API's config file: port, rate limit, and *hashes* of the shop and operator tokens;
the tablet pages' language and timeouts; the recipient's rate limits; the operator log.

Plain tokens never live in config (see `python -m delivery_robot.web.tokens new`); a config
with a bad hash or a bad number refuses to load instead of starting an API nobody can use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from delivery_robot.api_auth import RateLimiter, TokenRegistry


@dataclass(frozen=True)
class ShopEntry:
    shop_id: str
    name: str
    token_sha256: str  # "sha256:<64 hex>"


LANGUAGES = ("ko", "en")
MIN_IDLE_WARNING_S = 20.0  # WCAG 2.2.1: at least 20 s to ask for more time


@dataclass(frozen=True)
class TabletSettings:
    """The pages' behaviour (config key `tablet`) and the recipient endpoint's limits."""

    default_language: str = "ko"
    shop_idle_timeout_s: float = 900.0  # a shared shop tablet signs out when left alone
    ops_idle_timeout_s: float = 1800.0
    handoff_idle_timeout_s: float = 120.0  # the robot's screen forgets a half-typed PIN
    idle_warning_s: float = 60.0  # warned this long before, with a button for more time
    loaded_order_stuck_after_s: float = 900.0  # loaded and unchanged this long: ops alert
    # Token buckets (per_second, burst) for the recipient's endpoints, which need no token.
    # The robot itself locks an order out after 5 wrong tries; these keep a script from
    # hammering the robots' verify services through the coordinator.
    handoff_per_order: tuple[float, int] = (0.2, 10)
    handoff_per_client: tuple[float, int] = (2.0, 60)
    operator_log_path: str = ""  # JSON Lines record of e-stops and resumes; "" = memory only

    def __post_init__(self) -> None:
        if self.default_language not in LANGUAGES:
            raise ValueError(f"tablet.default_language must be one of {LANGUAGES}")
        if self.idle_warning_s < MIN_IDLE_WARNING_S:
            raise ValueError(f"tablet.idle_warning_s must be >= {MIN_IDLE_WARNING_S:g}")
        for name in ("shop_idle_timeout_s", "ops_idle_timeout_s", "handoff_idle_timeout_s"):
            if not getattr(self, name) > self.idle_warning_s:
                raise ValueError(f"tablet.idle_timeout_s: {name.split('_')[0]} must be "
                                 "longer than idle_warning_s")
        if not self.loaded_order_stuck_after_s > 0:
            raise ValueError("tablet.loaded_order_stuck_after_s must be > 0")
        for rate, burst in (self.handoff_per_order, self.handoff_per_client):
            if not rate > 0 or burst < 1:
                raise ValueError("handoff_rate_limit needs per_second > 0 and burst >= 1")


@dataclass(frozen=True)
class ApiConfig:
    shops: tuple[ShopEntry, ...]
    operator_token_sha256: str
    host: str = "0.0.0.0"
    port: int = 8080
    rate_per_second: float = 10.0
    rate_burst: int = 20
    demo_tokens: bool = False  # the hashes are of the public demo tokens (config/demo_tokens.yaml)
    tablet: TabletSettings = field(default_factory=TabletSettings)

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
        tablet = _tablet_settings(data)
        config = ApiConfig(
            shops=tuple(shops),
            operator_token_sha256=_digest(data.get("operator_token_sha256"),
                                          "operator_token_sha256"),
            host=str(data.get("host", "0.0.0.0")),
            port=int(data.get("port", 8080)),
            rate_per_second=float(rate.get("per_second", 10.0)),
            rate_burst=int(rate.get("burst", 20)),
            demo_tokens=bool(data.get("demo_tokens", False)),
            tablet=tablet,
        )
        if not 0 <= config.port <= 65535:
            raise ValueError(f"port {config.port} out of range")
        config.token_registry()  # validates the hashes
        config.rate_limiter()  # validates the numbers
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{source}: {error}") from None
    return config


def _bucket(data: Mapping[str, Any], key: str, default: tuple[float, int]) -> tuple[float, int]:
    entry = data.get(key) or {}
    if not isinstance(entry, Mapping):
        raise ValueError(f"handoff_rate_limit.{key} must be a mapping {{per_second, burst}}")
    return (float(entry.get("per_second", default[0])), int(entry.get("burst", default[1])))


def _tablet_settings(data: Mapping[str, Any]) -> TabletSettings:
    base = TabletSettings()
    tablet = data.get("tablet") or {}
    limits = data.get("handoff_rate_limit") or {}
    if not isinstance(tablet, Mapping) or not isinstance(limits, Mapping):
        raise ValueError("tablet and handoff_rate_limit must be mappings")
    idle = tablet.get("idle_timeout_s") or {}
    if not isinstance(idle, Mapping):
        raise ValueError("tablet.idle_timeout_s must be a mapping {shop, ops, handoff}")
    unknown = set(idle) - {"shop", "ops", "handoff"}
    if unknown:
        raise ValueError(f"tablet.idle_timeout_s: unknown pages {sorted(unknown)}")
    return TabletSettings(
        default_language=str(tablet.get("default_language", base.default_language)),
        shop_idle_timeout_s=float(idle.get("shop", base.shop_idle_timeout_s)),
        ops_idle_timeout_s=float(idle.get("ops", base.ops_idle_timeout_s)),
        handoff_idle_timeout_s=float(idle.get("handoff", base.handoff_idle_timeout_s)),
        idle_warning_s=float(tablet.get("idle_warning_s", base.idle_warning_s)),
        loaded_order_stuck_after_s=float(tablet.get("loaded_order_stuck_after_s",
                                                    base.loaded_order_stuck_after_s)),
        handoff_per_order=_bucket(limits, "per_order", base.handoff_per_order),
        handoff_per_client=_bucket(limits, "per_client", base.handoff_per_client),
        operator_log_path=str(data.get("operator_log") or ""),
    )


def load_api_config(path: str | Path) -> ApiConfig:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return parse_api_config(data, str(path))

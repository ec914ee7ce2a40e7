"""Simulated shop demand: when each shop asks for a delivery, and to which door.

Each shop's requests are a non-homogeneous Poisson process: a base rate per hour, raised
around the lunch and dinner peaks (Gaussian bumps on the clock of the simulated day), drawn by
thinning. Every shop has a random generator of its own, seeded from the run's seed and the
shop id, so the same seed gives the same stream, and one shop's orders never shift another's.
Dropoffs are drawn from the world's dropoff waypoints that the shop can reach on the route
graph (the coordinator refuses the others). Nothing here knows ROS or the coordinator: the
simulated shop owners submit what `OrderGenerator.orders()` lists, at its sim times.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "DemandConfig",
    "OrderArrival",
    "OrderGenerator",
    "Peak",
    "parse_clock",
]

# Order sizes as Order.SIZE_* (0 small, 1 medium, 2 large) with their default shares.
DEFAULT_SIZE_WEIGHTS: tuple[float, float, float] = (0.6, 0.3, 0.1)
_TWO_PI_SQRT = math.sqrt(2.0 * math.pi)


def parse_clock(text: str) -> float:
    """Hours since midnight of "HH:MM" (or "HH"), e.g. "11:30" -> 11.5."""
    parts = text.strip().split(":")
    try:
        if len(parts) > 2:
            raise ValueError
        hours = int(parts[0])
        minutes = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise ValueError(f"clock time must look like 11:30, got {text!r}") from None
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise ValueError(f"clock time must be 00:00..23:59, got {text!r}")
    return hours + minutes / 60.0


@dataclass(frozen=True)
class Peak:
    """A rush: the rate is multiplied by 1 + factor * exp(-((h - centre_h) / width_h)^2 / 2)."""

    name: str
    centre_h: float  # clock hour of the peak, e.g. 12.0
    width_h: float  # standard deviation in hours
    factor: float  # extra rate at the peak, as a multiple of the base rate

    def __post_init__(self) -> None:
        if self.width_h <= 0.0 or self.factor < 0.0:
            raise ValueError(f"peak {self.name!r}: width_h must be > 0 and factor >= 0")

    def lift(self, hour: float) -> float:
        return self.factor * math.exp(-0.5 * ((hour - self.centre_h) / self.width_h) ** 2)


LUNCH = Peak("lunch", 12.25, 0.75, 2.0)
DINNER = Peak("dinner", 18.5, 1.0, 2.5)


@dataclass(frozen=True)
class DemandConfig:
    """How much each shop orders. Defaults: an 8-hour day in town (3 shops) from 10:00 gives
    about 150 orders."""

    orders_per_shop_hour: float = 3.6  # base rate of every shop
    shop_rates: Mapping[str, float] = field(default_factory=dict)  # per shop id, overrides
    peaks: tuple[Peak, ...] = (LUNCH, DINNER)
    day_start_h: float = 11.5  # clock hour at sim time 0
    size_weights: tuple[float, ...] = DEFAULT_SIZE_WEIGHTS  # shares of SIZE_SMALL, ...
    weight_kg: tuple[float, float] = (0.3, 5.0)  # uniform range of a parcel's weight

    def __post_init__(self) -> None:
        rates = [self.orders_per_shop_hour, *self.shop_rates.values()]
        if min(rates) < 0.0 or not all(math.isfinite(r) for r in rates):
            raise ValueError("order rates must be finite and >= 0 per shop and hour")
        if not 0.0 <= self.day_start_h < 24.0:
            raise ValueError(f"day_start_h must be in [0, 24), got {self.day_start_h}")
        if not self.size_weights or min(self.size_weights) < 0 or sum(self.size_weights) <= 0:
            raise ValueError("size_weights must be >= 0 with a positive sum")
        low, high = self.weight_kg
        if not 0.0 < low <= high:
            raise ValueError(f"weight_kg must be a range 0 < low <= high, got {self.weight_kg}")

    def base_rate(self, shop_id: str) -> float:
        return float(self.shop_rates.get(shop_id, self.orders_per_shop_hour))

    def rate(self, shop_id: str, sim_s: float) -> float:
        """Orders per hour of one shop at sim time `sim_s`."""
        hour = self.day_start_h + sim_s / 3600.0
        return self.base_rate(shop_id) * (1.0 + sum(p.lift(hour) for p in self.peaks))

    def expected_orders(self, shop_id: str, duration_s: float) -> float:
        """The mean number of orders of one shop in [0, duration_s) (closed form)."""
        start = self.day_start_h
        end = start + duration_s / 3600.0
        total = end - start
        for p in self.peaks:
            a = (start - p.centre_h) / (p.width_h * math.sqrt(2.0))
            b = (end - p.centre_h) / (p.width_h * math.sqrt(2.0))
            total += p.factor * p.width_h * _TWO_PI_SQRT * 0.5 * (math.erf(b) - math.erf(a))
        return self.base_rate(shop_id) * total


@dataclass(frozen=True)
class OrderArrival:
    """One order a shop will submit, `at_s` seconds of sim time after the start."""

    index: int  # position in the whole stream (0, 1, ...)
    at_s: float
    shop_id: str
    pickup_waypoint: str
    dropoff_waypoint: str
    size: int  # Order.SIZE_*
    weight_kg: float
    key: str  # idempotency key: the same seed and shop give the same keys

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "at_s": self.at_s, "shop_id": self.shop_id,
                "pickup_waypoint": self.pickup_waypoint,
                "dropoff_waypoint": self.dropoff_waypoint, "size": self.size,
                "weight_kg": self.weight_kg, "key": self.key}


class _World(Protocol):
    """What the generator needs of a route graph (`route_graph.RouteGraph` has it)."""

    @property
    def shops(self) -> Sequence[Any]: ...  # .shop_id, .waypoint

    @property
    def dropoffs(self) -> Sequence[Any]: ...  # .name

    def travel_time(self, start: str, end: str) -> float | None: ...


class OrderGenerator:
    """The seeded order stream of one run.

    `shops` maps shop id -> pickup waypoint; `dropoffs` maps shop id -> the dropoff waypoints
    that shop may send to (all reachable from it).
    """

    def __init__(
        self,
        shops: Mapping[str, str],
        dropoffs: Mapping[str, Sequence[str]],
        config: DemandConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or DemandConfig()
        self.seed = seed
        if not shops:
            raise ValueError("the world has no shops to order from")
        unknown = sorted(set(self.config.shop_rates) - set(shops))
        if unknown:
            raise ValueError(f"shop_rates name unknown shops {unknown}; known: {sorted(shops)}")
        for shop_id in shops:
            if not dropoffs.get(shop_id):
                raise ValueError(f"shop {shop_id!r} can reach no dropoff waypoint")
        self.shops = dict(sorted(shops.items()))
        self.dropoffs = {s: tuple(sorted(dropoffs[s])) for s in self.shops}

    @classmethod
    def from_route_graph(
        cls, route: _World, config: DemandConfig | None = None, seed: int = 0
    ) -> OrderGenerator:
        shops = {s.shop_id: s.waypoint for s in route.shops}
        names = [w.name for w in route.dropoffs]
        reachable = {shop_id: [d for d in names if route.travel_time(wp, d) is not None]
                     for shop_id, wp in shops.items()}
        return cls(shops, reachable, config, seed)

    def orders(self, duration_s: float) -> list[OrderArrival]:
        """Every order in [0, duration_s), by time (ties by shop id)."""
        if not duration_s >= 0.0 or not math.isfinite(duration_s):
            raise ValueError(f"duration_s must be finite and >= 0, got {duration_s}")
        stream: list[tuple[float, str, int, str, int, float]] = []
        for shop_id in self.shops:
            rng = random.Random(f"delivery-sim:{self.seed}:{shop_id}")
            bound = self.config.base_rate(shop_id) * (
                1.0 + sum(p.factor for p in self.config.peaks)) / 3600.0  # per second
            if bound <= 0.0:
                continue
            t, n = 0.0, 0
            while True:
                t += rng.expovariate(bound)
                if t >= duration_s:
                    break
                accept = rng.random() * bound <= self.config.rate(shop_id, t) / 3600.0
                # Draw the order's details either way, so thinning never shifts later draws
                # of the same candidate slot differently between configs of equal bound.
                dropoff = rng.choice(self.dropoffs[shop_id])
                size = rng.choices(range(len(self.config.size_weights)),
                                   weights=self.config.size_weights)[0]
                low, high = self.config.weight_kg
                weight = round(rng.uniform(low, high), 2)
                if accept:
                    stream.append((round(t, 3), shop_id, n, dropoff, size, weight))
                    n += 1
        stream.sort(key=lambda item: (item[0], item[1]))
        return [
            OrderArrival(index=i, at_s=at, shop_id=shop, pickup_waypoint=self.shops[shop],
                         dropoff_waypoint=dropoff, size=size, weight_kg=weight,
                         key=f"sim{self.seed}-{shop}-{n}")
            for i, (at, shop, n, dropoff, size, weight) in enumerate(stream)
        ]

    def expected_orders(self, duration_s: float) -> float:
        return sum(self.config.expected_orders(s, duration_s) for s in self.shops)

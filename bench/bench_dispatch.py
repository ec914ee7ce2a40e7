"""Online dispatch: time to decide one new order, on town's route graph.

Issue 3's keys: p95 per decision with 10 robots / 100 open orders and 50 robots / 1000 open
orders (the open orders sit in the robots' plans, two stops each). Baseline: the greedy
nearest-idle dispatcher on the same fleet and orders, in the same run. Travel times come from
the real route graph through the dispatcher's RouteCache, cold at the start of each scenario.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

from delivery_robot.dispatch import (
    BatteryModel,
    DispatchOrder,
    GreedyNearestIdleDispatcher,
    PlannedStop,
    RobotSnapshot,
    RouteCache,
    ServiceTimes,
    TimeToFinishDispatcher,
)
from delivery_robot.order_intake import SizeClass
from delivery_robot.route_graph import load_route_graph

ROOT = Path(__file__).resolve().parents[1]
DECISIONS = 200


def p95_ms(samples: list[float]) -> float:
    return round(statistics.quantiles(samples, n=20)[-1] * 1000, 3)


def scenario(robots: int, open_orders: int, seed: int) -> tuple[float, float]:
    route = load_route_graph(ROOT / "config/worlds/town.yaml")
    shops = [w.name for w in route.shop_waypoints]
    dropoffs = [w.name for w in route.dropoffs]
    chargers = tuple(w.name for w in route.chargers)
    rng = random.Random(seed)
    stops_per_robot = 2 * open_orders // robots
    fleet = []
    for n in range(robots):
        eta, stops = 0.0, []
        for index in range(stops_per_robot):
            eta += rng.uniform(60.0, 400.0)
            place = rng.choice(shops) if index % 2 == 0 else rng.choice(dropoffs)
            stops.append(PlannedStop(place, eta, 60.0))
            eta += 60.0
        fleet.append(RobotSnapshot(f"robot{n}", rng.choice(dropoffs), battery=1.0,
                                   size_class=SizeClass.LARGE, max_payload_kg=30.0,
                                   plan=tuple(stops)))
    orders = [DispatchOrder(f"ord_{i}", rng.choice(shops), rng.choice(dropoffs),
                            SizeClass.SMALL, 1.0) for i in range(DECISIONS)]
    service = ServiceTimes(load_s=60.0, handoff_s=120.0)
    battery = BatteryModel(chargers=chargers, reserve=0.15)
    results = []
    for dispatcher in (TimeToFinishDispatcher(RouteCache(route.travel_time), battery, service),
                       GreedyNearestIdleDispatcher(RouteCache(route.travel_time), service)):
        samples = []
        for order in orders:
            start = time.perf_counter()
            dispatcher.assign(order, fleet)
            samples.append(time.perf_counter() - start)
        results.append(p95_ms(samples))
    return results[0], results[1]


def run() -> dict[str, Any]:
    small, small_greedy = scenario(10, 100, seed=1)
    large, large_greedy = scenario(50, 1000, seed=2)
    return {"name": "dispatch", "metrics": {
        "dispatch_p95_ms_10x100": {"value": small, "unit": "ms", "baseline": small_greedy,
                                   "target": "<= 50"},
        "dispatch_p95_ms_50x1000": {"value": large, "unit": "ms", "baseline": large_greedy,
                                    "target": "<= 250"},
    }}

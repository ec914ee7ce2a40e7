"""The simulated shops' order stream: seeded, Poisson with lunch and dinner peaks, dropoffs the
shop can reach."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from delivery_robot.order_generator import (
    DemandConfig,
    OrderGenerator,
    Peak,
    parse_clock,
)
from delivery_robot.route_graph import WaypointKind, load_route_graph

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0


@pytest.fixture(scope="module")
def town() -> object:
    return load_route_graph(ROOT / "config" / "worlds" / "town.yaml", validate=False)


def test_same_seed_same_stream_other_seed_other_stream(town: object) -> None:
    config = DemandConfig(day_start_h=10.0)
    first = OrderGenerator.from_route_graph(town, config, seed=7).orders(8 * HOUR)
    again = OrderGenerator.from_route_graph(town, config, seed=7).orders(8 * HOUR)
    other = OrderGenerator.from_route_graph(town, config, seed=8).orders(8 * HOUR)
    assert first == again
    assert [o.at_s for o in first] != [o.at_s for o in other]


def test_a_shorter_window_is_a_prefix_of_the_longer_one(town: object) -> None:
    generator = OrderGenerator.from_route_graph(town, DemandConfig(), seed=3)
    day = generator.orders(4 * HOUR)
    hour = generator.orders(HOUR)
    assert hour == [o for o in day if o.at_s < HOUR]


def test_orders_are_sorted_unique_and_go_to_reachable_dropoffs(town: object) -> None:
    orders = OrderGenerator.from_route_graph(town, DemandConfig(day_start_h=10.0),
                                             seed=1).orders(8 * HOUR)
    assert [o.at_s for o in orders] == sorted(o.at_s for o in orders)
    assert [o.index for o in orders] == list(range(len(orders)))
    assert len({o.key for o in orders}) == len(orders)
    shops = {s.shop_id: s.waypoint for s in town.shops}
    assert {o.shop_id for o in orders} == set(shops)
    for order in orders:
        assert 0.0 <= order.at_s < 8 * HOUR
        assert order.pickup_waypoint == shops[order.shop_id]
        assert town.waypoint(order.dropoff_waypoint).kind is WaypointKind.DROPOFF
        assert town.travel_time(order.pickup_waypoint, order.dropoff_waypoint) is not None
        assert order.size in (0, 1, 2)
        assert 0.3 <= order.weight_kg <= 5.0
    # Every dropoff of the world gets orders over a day.
    assert {o.dropoff_waypoint for o in orders} == {w.name for w in town.dropoffs}


def test_an_eight_hour_day_in_town_gives_about_150_orders(town: object) -> None:
    config = DemandConfig(day_start_h=10.0)
    counts = [len(OrderGenerator.from_route_graph(town, config, seed=s).orders(8 * HOUR))
              for s in range(30)]
    expected = OrderGenerator.from_route_graph(town, config).expected_orders(8 * HOUR)
    assert 140 <= expected <= 160
    # Poisson: the mean of 30 days is within 3 standard errors of the expectation.
    assert abs(statistics.fmean(counts) - expected) < 3 * math.sqrt(expected / 30)


def test_peaks_raise_the_rate_around_lunch_and_dinner() -> None:
    config = DemandConfig(orders_per_shop_hour=4.0, day_start_h=0.0)
    assert config.rate("any", 12.25 * HOUR) == pytest.approx(4.0 * (1 + 2.0), rel=0.01)
    assert config.rate("any", 18.5 * HOUR) == pytest.approx(4.0 * (1 + 2.5), rel=0.01)
    assert config.rate("any", 15.5 * HOUR) < 1.2 * 4.0  # afternoon lull: about the base


def test_lunch_hour_has_more_orders_than_the_quiet_afternoon(town: object) -> None:
    config = DemandConfig(day_start_h=11.0)  # sim 0 = 11:00
    lunch = afternoon = 0
    for seed in range(20):
        orders = OrderGenerator.from_route_graph(town, config, seed=seed).orders(6 * HOUR)
        lunch += sum(1 for o in orders if 0.75 * HOUR <= o.at_s < 1.75 * HOUR)  # 11:45-12:45
        afternoon += sum(1 for o in orders if 4.0 * HOUR <= o.at_s < 5.0 * HOUR)  # 15:00-16:00
    assert lunch > 2 * afternoon


def test_per_shop_rates_and_no_orders_at_rate_zero(town: object) -> None:
    config = DemandConfig(orders_per_shop_hour=0.0, shop_rates={"bakery": 20.0}, peaks=())
    orders = OrderGenerator.from_route_graph(town, config, seed=2).orders(2 * HOUR)
    assert orders
    assert {o.shop_id for o in orders} == {"bakery"}
    assert 20 <= len(orders) <= 60  # mean 40


def test_expected_orders_matches_the_integral_of_the_rate() -> None:
    config = DemandConfig(orders_per_shop_hour=3.0, day_start_h=9.0)
    steps = 20_000
    span = 10 * HOUR
    numeric = sum(config.rate("s", (k + 0.5) * span / steps) for k in range(steps)) \
        * (span / steps) / HOUR
    assert config.expected_orders("s", span) == pytest.approx(numeric, rel=1e-4)


def test_bad_input_is_refused_clearly(town: object) -> None:
    with pytest.raises(ValueError, match="rates must be finite"):
        DemandConfig(orders_per_shop_hour=-1.0)
    with pytest.raises(ValueError, match="day_start_h"):
        DemandConfig(day_start_h=25.0)
    with pytest.raises(ValueError, match="width_h"):
        Peak("lunch", 12.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="unknown shops"):
        OrderGenerator.from_route_graph(town, DemandConfig(shop_rates={"nope": 1.0}))
    with pytest.raises(ValueError, match="no shops"):
        OrderGenerator({}, {})
    with pytest.raises(ValueError, match="can reach no dropoff"):
        OrderGenerator({"bakery": "shop_bakery"}, {"bakery": []})
    with pytest.raises(ValueError, match="duration_s"):
        OrderGenerator.from_route_graph(town).orders(math.inf)


def test_parse_clock() -> None:
    assert parse_clock("11:30") == 11.5
    assert parse_clock("7") == 7.0
    for bad in ("24:00", "11:60", "noon", "1:2:3", ""):
        with pytest.raises(ValueError, match="clock time"):
            parse_clock(bad)

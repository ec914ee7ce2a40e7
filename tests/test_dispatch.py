"""Dispatch: soonest finish within capacity and battery, a stated reason when queued, baseline."""

from __future__ import annotations

import random

import pytest

from delivery_robot.dispatch import (
    Assignment,
    BatteryModel,
    DispatchOrder,
    GreedyNearestIdleDispatcher,
    PlannedStop,
    Queued,
    QueueReason,
    RobotSnapshot,
    RouteCache,
    ServiceTimes,
    TimeToFinishDispatcher,
    with_order_appended,
)
from delivery_robot.order_intake import SizeClass

# Waypoints on a straight street, positions in metres; driving at 1 m/s, so seconds == metres.
POSITION = {"chg": 0.0, "shop": 100.0, "near": 120.0, "gate": 300.0, "mid": 500.0, "far": 900.0}
ISLAND = "island"  # a waypoint with no lanes to or from it
SERVICE = ServiceTimes(load_s=60.0, handoff_s=120.0)
BATTERY = BatteryModel(chargers=("chg",), reserve=0.2, per_m=0.0001, per_s=0.0)
TIGHT = BatteryModel(chargers=("chg",), reserve=0.2, per_m=0.001, per_s=0.0)  # 1 km a charge


def travel_time(start: str, goal: str) -> float | None:
    if start == ISLAND or goal == ISLAND:
        return None
    return abs(POSITION[start] - POSITION[goal])


def routes() -> RouteCache:
    return RouteCache(travel_time, cruise_speed_mps=1.0)


def order(
    size: SizeClass = SizeClass.SMALL, weight_kg: float = 2.0, dropoff: str = "gate"
) -> DispatchOrder:
    return DispatchOrder("ord_1", "shop", dropoff, size, weight_kg)


def robot(
    robot_id: str,
    waypoint: str,
    battery: float = 1.0,
    size: SizeClass = SizeClass.LARGE,
    payload: float = 30.0,
    plan: tuple[PlannedStop, ...] = (),
    available: bool = True,
) -> RobotSnapshot:
    return RobotSnapshot(robot_id, waypoint, battery, size, payload, plan, available)


def dispatcher(battery: BatteryModel = BATTERY) -> TimeToFinishDispatcher:
    return TimeToFinishDispatcher(routes(), battery, SERVICE)


def assigned(decision: Assignment | Queued) -> Assignment:
    assert isinstance(decision, Assignment), f"expected an assignment, got {decision}"
    return decision


def queued(decision: Assignment | Queued) -> Queued:
    assert isinstance(decision, Queued), f"expected to be queued, got {decision}"
    return decision


def test_chooses_the_robot_that_finishes_soonest() -> None:
    fleet = [robot("robot_far", "far"), robot("robot_near", "near"), robot("robot_mid", "mid")]

    choice = assigned(dispatcher().assign(order(), fleet))

    assert choice.robot_id == "robot_near"
    assert choice.pickup_eta_s == 20.0
    assert choice.dropoff_eta_s == 20.0 + 60.0 + 200.0
    assert choice.finish_s == 20.0 + 60.0 + 200.0 + 120.0
    assert choice.charger == "chg"


def test_counts_what_each_robot_still_has_to_do() -> None:
    # robot_busy is close but has 10 minutes of work ending at the gate; robot_idle is farther.
    busy_plan = (PlannedStop("gate", eta_s=480.0, service_s=120.0),)
    fleet = [robot("robot_busy", "near", plan=busy_plan), robot("robot_idle", "mid")]

    choice = assigned(dispatcher().assign(order(), fleet))

    assert choice.robot_id == "robot_idle"
    assert choice.finish_s == 400.0 + 60.0 + 200.0 + 120.0


def test_a_robot_almost_done_next_door_beats_an_idle_one_far_away() -> None:
    short_plan = (PlannedStop("shop", eta_s=5.0, service_s=5.0),)
    fleet = [robot("robot_busy", "near", plan=short_plan), robot("robot_idle", "far")]

    choice = assigned(dispatcher().assign(order(), fleet))

    assert choice.robot_id == "robot_busy"
    assert choice.pickup_eta_s == 10.0


def test_keeps_the_battery_reserve_to_the_nearest_charger() -> None:
    # near -> shop 20 m, shop -> gate 200 m, gate -> chg 300 m: 520 m = 0.52 of a charge.
    # robot_low would arrive with 0.19 < 0.2; robot_full drives 100 + 200 + 300 m = 0.6.
    fleet = [robot("robot_low", "near", battery=0.71), robot("robot_full", "chg", battery=1.0)]

    choice = assigned(dispatcher(TIGHT).assign(order(), fleet))

    assert choice.robot_id == "robot_full"
    assert choice.battery_at_charger == pytest.approx(0.4)
    assert "robot_low" not in choice.robot_id


def test_battery_use_counts_time_and_the_current_plan() -> None:
    model = BatteryModel(chargers=("chg",), reserve=0.2, per_m=0.001, per_s=0.0001)
    # robot2 first drives near -> far -> near (1560 m, 1560 s) and ends where robot1 is.
    plan = (PlannedStop("far", eta_s=780.0), PlannedStop("near", eta_s=1560.0))
    fleet = [robot("robot1", "near", battery=0.9), robot("robot2", "near", battery=1.0, plan=plan)]

    choice = assigned(TimeToFinishDispatcher(routes(), model, SERVICE).assign(order(), fleet))

    # robot1: 520 m and 400 s + 300 s to the charger.
    assert choice.robot_id == "robot1"
    assert choice.battery_at_charger == pytest.approx(0.9 - 0.52 - 0.07)
    # robot2 alone: (1560 + 520) m and (1560 + 700) s = 2.306 of a charge: low battery, which
    # only the plan's metres make it (without them 0.746 would leave 0.254).
    alone = queued(TimeToFinishDispatcher(routes(), model, SERVICE).assign(order(), fleet[1:]))
    assert alone.reason == QueueReason.LOW_BATTERY
    assert "robot2" in alone.message


def test_uses_the_charger_nearest_to_the_dropoff() -> None:
    positions = {**POSITION, "chg2": 350.0}
    model = BatteryModel(chargers=("chg", "chg2"), reserve=0.2, per_m=0.001, per_s=0.0)

    def with_second_charger(start: str, goal: str) -> float | None:
        return abs(positions[start] - positions[goal])

    # near: 20 + 200 + 50 m (gate -> chg2) = 0.27 of a charge; 0.5 leaves 0.23.
    dispatch = TimeToFinishDispatcher(
        RouteCache(with_second_charger, cruise_speed_mps=1.0), model, SERVICE
    )
    choice = assigned(dispatch.assign(order(), [robot("robot1", "near", battery=0.5)]))

    assert choice.charger == "chg2"
    assert choice.battery_at_charger == pytest.approx(0.23)


@pytest.mark.parametrize(
    ("size", "weight", "chosen"),
    [
        (SizeClass.SMALL, 2.0, "robot_small"),
        (SizeClass.MEDIUM, 2.0, "robot_medium"),
        (SizeClass.SMALL, 12.0, "robot_medium"),
        (SizeClass.LARGE, 2.0, "robot_large"),
    ],
)
def test_respects_compartment_size_and_payload(size: SizeClass, weight: float, chosen: str) -> None:
    fleet = [
        robot("robot_small", "near", size=SizeClass.SMALL, payload=10.0),
        robot("robot_medium", "gate", size=SizeClass.MEDIUM, payload=15.0),
        robot("robot_large", "far", size=SizeClass.LARGE, payload=30.0),
    ]

    assert assigned(dispatcher().assign(order(size, weight), fleet)).robot_id == chosen


def test_skips_unavailable_robots_and_robots_that_cannot_reach_the_shop() -> None:
    fleet = [
        robot("robot_offline", "near", available=False),
        robot("robot_stranded", ISLAND),
        robot("robot_ok", "far"),
    ]

    assert assigned(dispatcher().assign(order(), fleet)).robot_id == "robot_ok"


@pytest.mark.parametrize(
    ("fleet", "the_order", "reason"),
    [
        ([], order(), QueueReason.NO_ROBOTS),
        ([robot("robot1", "near", available=False)], order(), QueueReason.UNAVAILABLE),
        (
            [robot("robot1", "near", size=SizeClass.SMALL)],
            order(SizeClass.MEDIUM),
            QueueReason.NO_CAPACITY,
        ),
        ([robot("robot1", "near", payload=5.0)], order(weight_kg=6.0), QueueReason.NO_CAPACITY),
        ([robot("robot1", "near")], order(dropoff=ISLAND), QueueReason.UNREACHABLE),
        ([robot("robot1", "near", battery=0.22)], order(), QueueReason.LOW_BATTERY),
        # The most telling reason wins: charging will free robot2, robot1 is just off.
        (
            [robot("robot1", "near", available=False), robot("robot2", "mid", battery=0.25)],
            order(),
            QueueReason.LOW_BATTERY,
        ),
    ],
    ids=["empty", "unavailable", "too_small", "too_heavy", "unreachable", "battery", "mixed"],
)
def test_queues_with_a_stated_reason_when_no_robot_fits(
    fleet: list[RobotSnapshot], the_order: DispatchOrder, reason: QueueReason
) -> None:
    decision = queued(dispatcher().assign(the_order, fleet))

    assert decision.reason == reason
    assert decision.order_id == "ord_1"
    assert reason.value in decision.message
    assert set(decision.excluded) == {r.robot_id for r in fleet}


def test_equal_costs_are_broken_by_robot_id() -> None:
    fleet = [robot("robot_b", "near"), robot("robot_a", "near")]

    assert assigned(dispatcher().assign(order(), fleet)).robot_id == "robot_a"


def test_travel_times_are_computed_once_per_pair_across_orders() -> None:
    calls: list[tuple[str, str]] = []

    def counting(start: str, goal: str) -> float | None:
        calls.append((start, goal))
        return travel_time(start, goal)

    dispatch = TimeToFinishDispatcher(RouteCache(counting), BATTERY, SERVICE)
    fleet = [robot("robot1", "near"), robot("robot2", "mid"), robot("robot3", "far")]
    for _ in range(5):
        dispatch.assign(order(), fleet)

    assert len(calls) == len(set(calls))


def test_appending_an_assignment_makes_the_robot_busy_for_the_next_order() -> None:
    fleet = [robot("robot1", "near"), robot("robot2", "mid")]
    dispatch = dispatcher()
    first = assigned(dispatch.assign(order(), fleet))
    assert first.robot_id == "robot1"

    fleet[0] = with_order_appended(fleet[0], first, order(), SERVICE)
    second = assigned(
        dispatch.assign(DispatchOrder("ord_2", "shop", "gate", SizeClass.SMALL, 1.0), fleet)
    )

    assert [s.waypoint for s in fleet[0].plan] == ["shop", "gate"]
    assert fleet[0].plan[-1].done_s == first.finish_s
    # robot1 would start at 400 s from the gate (200 s back): 600 s; robot2 idle: 400 s.
    assert second.robot_id == "robot2"


def test_greedy_baseline_takes_the_nearest_idle_robot_and_ignores_plans() -> None:
    short_plan = (PlannedStop("shop", eta_s=5.0, service_s=5.0),)
    fleet = [
        robot("robot_busy", "near", plan=short_plan),
        robot("robot_far", "far"),
        robot("robot_mid", "mid"),
    ]
    greedy = GreedyNearestIdleDispatcher(routes(), SERVICE)

    choice = assigned(greedy.assign(order(), fleet))

    assert choice.robot_id == "robot_mid"
    assert choice.finish_s == 400.0 + 60.0 + 200.0 + 120.0
    assert choice.battery_at_charger is None
    # The real dispatcher takes the almost-done robot instead: that is what we measure.
    assert assigned(dispatcher().assign(order(), fleet)).robot_id == "robot_busy"


def test_greedy_baseline_ignores_battery_but_not_the_compartment() -> None:
    greedy = GreedyNearestIdleDispatcher(routes(), SERVICE)
    fleet = [
        robot("robot_low", "near", battery=0.05),
        robot("robot_small", "shop", size=SizeClass.SMALL),
    ]

    choice = assigned(greedy.assign(order(SizeClass.MEDIUM), fleet))

    assert choice.robot_id == "robot_low"


def test_greedy_baseline_queues_when_every_robot_is_busy() -> None:
    plan = (PlannedStop("gate", eta_s=100.0),)
    greedy = GreedyNearestIdleDispatcher(routes(), SERVICE)

    decision = queued(greedy.assign(order(), [robot("robot1", "near", plan=plan)]))

    assert decision.reason == QueueReason.NOT_IDLE


def test_battery_model_needs_a_charger() -> None:
    with pytest.raises(ValueError, match="charger"):
        BatteryModel(chargers=())


def test_decisions_with_50_robots_and_1000_open_orders_run_the_whole_cost_model() -> None:
    """Speed is measured by bench/bench_dispatch.py; this checks the big case decides."""
    rng = random.Random(7)
    grid = [f"w{x}_{y}" for x in range(20) for y in range(20)]

    def manhattan(start: str, goal: str) -> float | None:
        (x1, y1), (x2, y2) = (map(int, w[1:].split("_")) for w in (start, goal))
        return 25.0 * (abs(x1 - x2) + abs(y1 - y2))

    chargers = tuple(grid[:4])
    model = BatteryModel(chargers=chargers, reserve=0.15, per_m=1 / 200_000, per_s=1 / 360_000)
    fleet = []
    for n in range(50):  # 20 open orders per robot: 1000 in all, two stops each
        stops = []
        eta = 0.0
        for _ in range(40):
            eta += rng.uniform(60.0, 400.0)
            stops.append(PlannedStop(rng.choice(grid), eta, 60.0))
            eta += 60.0
        fleet.append(robot(f"robot{n}", rng.choice(grid), battery=1.0, plan=tuple(stops)))
    dispatch = TimeToFinishDispatcher(RouteCache(manhattan), model, SERVICE)

    for n in range(20):
        new = DispatchOrder(f"ord_{n}", rng.choice(grid), rng.choice(grid), SizeClass.SMALL, 1.0)
        assigned(dispatch.assign(new, fleet))  # the whole cost model ran, not an early exit

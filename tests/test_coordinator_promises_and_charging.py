"""Coordinator policies added with the re-optimiser: promised delivery times and the on-time
KPI, retry counts that survive a restart, a cancel at the shop that hands the goods back, and
charging low robots."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from delivery_robot.credentials import ScryptParams
from delivery_robot.demo_map import DemoMap
from delivery_robot.fleet_coordinator import (
    Alert,
    AlertKind,
    CancelMission,
    CoordinatorPolicy,
    CoordinatorWorld,
    Effect,
    FleetCoordinator,
    MissionOutcome,
    OpenCompartment,
    RobotMode,
    RobotSample,
    SendMission,
)
from delivery_robot.handoff_credentials import CredentialPolicy, HandoffCredentials
from delivery_robot.mission_legs import Leg, MissionKind
from delivery_robot.order_intake import OrderRequest, RobotCapacity, SizeClass
from delivery_robot.order_lifecycle import OrderState
from delivery_robot.order_store import SCHEMA_VERSION, OrderStore
from delivery_robot.web.metrics import fleet_kpis, order_kpis, prometheus_text

S = OrderState
FAST = ScryptParams(log2_n=1, r=1, p=1)
DEMO = DemoMap(
    waypoints={"depot": (0.0, 0.0), "bakery": (30.0, 0.0), "pharmacy": (0.0, 30.0),
               "house_1": (60.0, 0.0), "house_2": (30.0, 30.0)},
    shops={"bakery": "bakery", "pharmacy": "pharmacy"},
    depot="depot",
)
POLICY = CoordinatorPolicy(one_robot_per_waypoint=False, heartbeat_timeout_s=1e6,
                           navigation_retries=2, replan_period_s=0.0,
                           promise_margin_s=300.0, promise_queued_s=1200.0,
                           charge_below=0.3, charge_until=0.8)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


Factory = Callable[..., FleetCoordinator]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "h9_policies.db"


@pytest.fixture
def make(db: Path, clock: Clock) -> Iterator[Factory]:
    """Coordinators on one database file (a second one = a restart)."""
    stores: list[OrderStore] = []

    def factory(**kwargs: object) -> FleetCoordinator:
        store = OrderStore(db, clock=clock)
        stores.append(store)
        credentials = HandoffCredentials(CredentialPolicy(secret_key=b"k" * 32,
                                                          pin_hash_cost=FAST))
        options: dict[str, object] = {"fleet": [RobotCapacity(SizeClass.LARGE, 20.0)],
                                      "policy": POLICY, "now": clock.t}
        options.update(kwargs)
        return FleetCoordinator(store, CoordinatorWorld.from_demo_map(DEMO), credentials,
                                **options)  # type: ignore[arg-type]

    yield factory
    for store in stores:
        store.close()


def state(robot: str, mode: RobotMode = RobotMode.IDLE, waypoint: str = "depot",
          mission: str = "", battery: float = 1.0) -> RobotSample:
    return RobotSample(robot_id=robot, mode=mode, current_waypoint=waypoint,
                       mission_id=mission, battery=battery)


def request(shop: str = "bakery", dropoff: str = "house_1") -> OrderRequest:
    return OrderRequest(shop, dropoff, size=1, weight_kg=2.0)


def missions(effects: Sequence[Effect]) -> list[SendMission]:
    return [e for e in effects if isinstance(e, SendMission)]


def submitted(core: FleetCoordinator, clock: Clock) -> tuple[str, SendMission]:
    reply = core.submit_order(request(), clock.t)
    assert reply.accepted, reply.message
    assert reply.order is not None
    (goal,) = missions(reply.effects)
    return reply.order.order_id, goal


def deliver(core: FleetCoordinator, clock: Clock, order_id: str, goal: SendMission) -> None:
    robot, mission = goal.robot_id, goal.mission_id
    for leg in (Leg.TO_PICKUP, Leg.AWAITING_LOAD):
        core.on_mission_feedback(robot, mission, leg, clock.t)
    assert core.confirm_loaded(order_id, "bakery", clock.t).accepted
    for leg in (Leg.TO_DROPOFF, Leg.HANDOFF, Leg.RETURNING):
        core.on_mission_feedback(robot, mission, leg, clock.t)
    core.on_mission_result(robot, mission, MissionOutcome.SUCCEEDED, clock.t,
                           delivered_order_ids=[order_id])
    order = core.get_order(order_id)
    assert order is not None
    assert order.state is S.DELIVERED


# ---- promised delivery time and the on-time rate -----------------------------------------


def test_an_order_is_promised_the_dispatch_estimate_plus_the_margin(
        make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    reply = core.submit_order(request(), clock.t)
    assert reply.order is not None
    # depot -> bakery 20 s, loading 60 s, bakery -> house_1 20 s, handoff 120 s = 220 s.
    assert reply.order.promised_by == pytest.approx(clock.t + 220.0 + 300.0)
    # Queued (the only robot is busy): the drive, both services and the queue allowance.
    queued = core.submit_order(request(), clock.t)
    assert queued.order is not None
    assert queued.order.state is S.REQUESTED
    assert queued.order.promised_by == pytest.approx(clock.t + 20 + 60 + 120 + 1200 + 300)
    # A time the shop asked for is kept as given, and survives a restart.
    asked = core.submit_order(request(), clock.t, promised_by=clock.t + 5000.0)
    assert asked.order is not None
    restarted = make()
    again = restarted.get_order(asked.order.order_id)
    assert again is not None
    assert again.promised_by == clock.t + 5000.0
    refused = core.submit_order(request(), clock.t, promised_by=float("nan"))
    assert (refused.accepted, refused.error_code) == (False, "invalid_promise")


def test_on_time_rate_and_delivery_kpis(make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    first, goal = submitted(core, clock)
    clock.t += 100.0  # well within its promise (520 s)
    deliver(core, clock, first, goal)
    core.on_robot_state(state("r1"), clock.t)
    second, goal = submitted(core, clock)
    clock.t += 2000.0  # late
    deliver(core, clock, second, goal)

    kpis = [order_kpis(o, core.history(o.order_id))
            for o in core.list_orders(state=S.DELIVERED)]
    assert [k.on_time for k in kpis] == [True, False]
    assert kpis[0].to_delivered_s == pytest.approx(100.0)
    assert kpis[0].to_assigned_s == pytest.approx(0.0)
    fleet = fleet_kpis(kpis, 1, clock.t)
    assert fleet.on_time_rate == pytest.approx(0.5)
    assert (fleet.delivered_on_time, fleet.delivered_late) == (1, 1)
    assert fleet.deliveries_per_robot_hour == pytest.approx(2 / (2100.0 / 3600.0))
    text = prometheus_text(kpis, fleet, 1)
    assert "delivery_on_time_rate 0.5\n" in text
    assert 'delivery_deliveries_by_promise{on_time="false"} 1\n' in text
    assert "delivery_deliveries_per_robot_hour " in text


def test_a_version_1_database_gets_the_new_column_and_keeps_its_orders(
        make: Factory, clock: Clock, db: Path) -> None:
    core = make()
    reply = core.submit_order(request(), clock.t)
    assert reply.order is not None
    core._store.close()
    raw = sqlite3.connect(db)  # turn it back into what version 1 wrote
    raw.execute("ALTER TABLE orders DROP COLUMN promised_by")
    raw.execute("DROP TABLE mission_attempts")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with OrderStore(db, clock=clock) as store:
        order = store.get(reply.order.order_id)
        assert order.promised_by is None
        assert order.state is S.REQUESTED
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        store.record_mission_attempts("m", 2)
        assert store.mission_attempts("m") == 2
    with OrderStore(db, clock=clock) as store:  # and opens again as the new version
        assert store.mission_attempts("m") == 2


# ---- navigation retries survive a restart ----------------------------------------------------


def retry_alerts(effects: Sequence[Effect]) -> list[str]:
    return [e.message for e in effects
            if isinstance(e, Alert) and e.kind is AlertKind.NAVIGATION_RETRY]


def test_the_navigation_retry_count_survives_a_coordinator_restart(
        make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    mission = goal.mission_id
    core.on_robot_state(state("r1", RobotMode.TO_PICKUP, "depot", mission), clock.t)
    effects = core.on_mission_result("r1", mission, MissionOutcome.FAILED, clock.t)
    assert [m.mission_id for m in missions(effects)] == [mission]
    assert "retry 1 of 2" in retry_alerts(effects)[0]

    restarted = make()  # SIGKILL and start again: the retry budget is in the store
    restarted.on_robot_state(state("r1", RobotMode.TO_PICKUP, "depot", mission), clock.t)
    effects = restarted.on_mission_result("r1", mission, MissionOutcome.FAILED, clock.t)
    assert "retry 2 of 2" in retry_alerts(effects)[0]
    effects = restarted.on_mission_result("r1", mission, MissionOutcome.FAILED, clock.t)
    assert retry_alerts(effects) == []
    assert missions(effects) == []  # given up: not sent to r1 again
    order = restarted.get_order(order_id)
    assert order is not None
    assert order.state is S.REQUESTED
    assert "navigation failed after 2 retries" in order.reason


# ---- cancel while the robot waits at the shop ------------------------------------------------


def test_a_cancel_at_the_shop_opens_the_compartment_to_take_the_goods_back(
        make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    for leg in (Leg.TO_PICKUP, Leg.AWAITING_LOAD):
        core.on_mission_feedback("r1", goal.mission_id, leg, clock.t)
    # The shop put the goods in and closed the lid, then cancelled before confirming.
    reply = core.cancel_order(order_id, "bakery", "customer called", clock.t)
    assert reply.accepted
    assert reply.order is not None
    assert reply.order.state is S.CANCELLED
    assert CancelMission("r1", goal.mission_id) in reply.effects
    assert OpenCompartment("r1", order_id, "unloading") in reply.effects
    # Before the shop: nothing to unload, no compartment opened.
    core.on_mission_result("r1", goal.mission_id, MissionOutcome.CANCELED, clock.t)
    core.on_robot_state(state("r1", waypoint="bakery"), clock.t)
    early, goal = submitted(core, clock)
    reply = core.cancel_order(early, "bakery", "", clock.t)
    assert not [e for e in reply.effects if isinstance(e, OpenCompartment)]


# ---- charging ------------------------------------------------------------------------------


def test_a_low_free_robot_is_sent_to_charge_and_waits_until_charged(
        make: Factory, clock: Clock) -> None:
    core = make()
    effects = core.on_robot_state(state("r1", waypoint="house_1", battery=0.25), clock.t)
    (charge,) = missions(effects)
    assert (charge.kind, charge.robot_id, charge.return_waypoint) == (
        MissionKind.CHARGE, "r1", "depot")
    reply = core.submit_order(request(), clock.t)
    assert reply.order is not None
    assert reply.order.state is S.REQUESTED  # not dispatched while low
    mid = state("r1", RobotMode.CHARGING, "depot", charge.mission_id, battery=0.5)
    assert core.on_robot_state(mid, clock.t) == []  # ours: not cancelled, nothing dispatched
    core.on_mission_result("r1", charge.mission_id, MissionOutcome.SUCCEEDED, clock.t)
    effects = core.on_robot_state(state("r1", battery=0.6), clock.t)
    assert missions(effects) == []  # above charge_below, below charge_until: still waits
    effects = core.on_robot_state(state("r1", battery=0.85), clock.t)
    (goal,) = missions(effects)
    assert (goal.kind, goal.orders[0].order_id) == (MissionKind.DELIVERY, reply.order.order_id)


def test_a_low_robot_at_a_charger_gets_no_mission_and_a_failed_charge_alerts(
        make: Factory, clock: Clock) -> None:
    core = make()
    assert core.on_robot_state(state("r1", battery=0.1), clock.t) == []  # at the charger
    assert missions(core.on_robot_state(state("r2", waypoint="bakery", battery=0.1),
                                        clock.t))
    reply = core.submit_order(request(), clock.t)
    assert reply.order is not None
    assert reply.order.state is S.REQUESTED
    off = make(policy=replace(POLICY, charge_below=0.0))  # charging off: dispatched as before
    (goal,) = missions(off.on_robot_state(state("r9", waypoint="bakery", battery=0.25),
                                         clock.t))
    assert (goal.kind, goal.orders[0].order_id) == (MissionKind.DELIVERY, reply.order.order_id)
    (sent,) = missions(core.on_robot_state(state("r3", waypoint="bakery", battery=0.1),
                                           clock.t))
    effects = core.on_mission_result("r3", sent.mission_id, MissionOutcome.FAILED, clock.t,
                                     message="not charging")
    assert [a.kind for a in effects if isinstance(a, Alert)] == [AlertKind.CHARGE_FAILED]
    assert missions(core.on_robot_state(state("r3", waypoint="bakery", battery=0.1),
                                        clock.t)) == []  # asked again only after a pause

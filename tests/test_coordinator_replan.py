"""The coordinator with the OR-Tools re-optimiser: it beats greedy dispatch, ignores stale
plans and never moves an order whose goods may be in the robot."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from delivery_robot.credentials import ScryptParams
from delivery_robot.demo_map import DemoMap
from delivery_robot.fleet_coordinator import (
    CancelMission,
    CoordinatorPolicy,
    CoordinatorWorld,
    Effect,
    FleetCoordinator,
    RobotMode,
    RobotSample,
    SendMission,
)
from delivery_robot.handoff_credentials import CredentialPolicy, HandoffCredentials
from delivery_robot.mission_legs import Leg
from delivery_robot.order_intake import OrderRequest, RobotCapacity, SizeClass
from delivery_robot.order_lifecycle import OrderState
from delivery_robot.order_store import OrderStore

S = OrderState
FAST = ScryptParams(log2_n=1, r=1, p=1)
# Long distances, so a bad assignment costs far more than the replanner's minimum gain.
WORLD = DemoMap(
    waypoints={"depot": (0.0, 0.0), "bakery": (1500.0, 0.0), "house_1": (1500.0, 300.0),
               "pharmacy": (3000.0, 0.0), "house_2": (3000.0, 300.0), "far": (-1500.0, 0.0)},
    shops={"bakery": "bakery", "pharmacy": "pharmacy"},
    depot="depot",
)
# Replans only when a test asks (tick never reaches the period unless it moves the clock).
POLICY = CoordinatorPolicy(one_robot_per_waypoint=False, replan_period_s=15.0,
                           replan_when_requested=0, charge_below=0.0)

Factory = Callable[..., FleetCoordinator]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Factory]:
    stores: list[OrderStore] = []

    def factory(**kwargs: object) -> FleetCoordinator:
        store = OrderStore(tmp_path / "h9_replan.db", clock=lambda: 1000.0)
        stores.append(store)
        credentials = HandoffCredentials(CredentialPolicy(secret_key=b"k" * 32,
                                                          pin_hash_cost=FAST))
        options: dict[str, object] = {"fleet": [RobotCapacity(SizeClass.LARGE, 20.0)],
                                      "policy": POLICY, "now": 0.0}
        options.update(kwargs)
        return FleetCoordinator(store, CoordinatorWorld.from_demo_map(WORLD), credentials,
                                **options)  # type: ignore[arg-type]

    yield factory
    for store in stores:
        store.close()


def idle(robot: str, waypoint: str) -> RobotSample:
    return RobotSample(robot_id=robot, mode=RobotMode.IDLE, current_waypoint=waypoint)


def submit(core: FleetCoordinator, dropoff: str, shop: str = "bakery") -> str:
    reply = core.submit_order(OrderRequest(shop, dropoff, size=1, weight_kg=2.0), 1.0)
    assert reply.accepted, reply.message
    assert reply.order is not None
    return reply.order.order_id


def sent(effects: Sequence[Effect]) -> list[SendMission]:
    return [e for e in effects if isinstance(e, SendMission)]


def greedy_beaten(core: FleetCoordinator) -> tuple[str, str]:
    """r1 (far away) gets bakery order A because it is the only robot; pharmacy order B waits;
    then r2 comes online at the pharmacy and takes B, and r3 at the bakery: A stays with r1,
    2000 s from the bakery, while r3 waits idle next to it."""
    core.on_robot_state(idle("r1", "far"), 1.0)
    a = submit(core, "house_1")
    b = submit(core, "house_2", "pharmacy")
    assert core.get_order(a).robot_id == "r1"  # type: ignore[union-attr]
    assert core.get_order(b).state is S.REQUESTED  # type: ignore[union-attr]
    core.on_robot_state(idle("r2", "pharmacy"), 2.0)
    core.on_robot_state(idle("r3", "bakery"), 2.0)
    assert core.get_order(b).robot_id == "r2"  # type: ignore[union-attr]
    assert core.get_order(a).robot_id == "r1"  # type: ignore[union-attr]
    return a, b


def test_the_replanner_moves_an_order_greedy_dispatch_left_on_a_far_robot(
        make: Factory) -> None:
    core = make()
    a, b = greedy_beaten(core)
    old_mission = core.get_order(a).mission_id  # type: ignore[union-attr]
    job = core.start_replan(3.0)
    assert job is not None
    assert {o.order_id for o in job.orders} == {a, b}
    assert core.start_replan(3.0) is None  # at most one run in flight
    result = core.run_replan(job)
    assert result.cost_after < result.cost_before - 1000  # ~2000 s of approach saved
    effects = core.finish_replan(job, result, 4.0)
    order = core.get_order(a)
    assert order is not None
    assert (order.state, order.robot_id) == (S.ASSIGNED, "r3")
    assert CancelMission("r1", old_mission) in effects  # type: ignore[arg-type]
    (goal,) = sent(effects)
    assert (goal.robot_id, goal.orders[0].order_id) == ("r3", a)
    reasons = [e.reason for e in core.history(a)]
    assert "re-planned to r3" in reasons
    assert core.get_order(b).robot_id == "r2"  # type: ignore[union-attr]
    assert core.replans_applied == 1
    # r1 is not handed another order before it reports the old mission gone.
    assert not next(v for v in core.robots() if v.robot_id == "r1").free


def test_tick_runs_the_replanner_every_period_through_the_runner(make: Factory) -> None:
    ran: list[str] = []

    def runner(work: Callable[[], None]) -> None:
        ran.append("run")
        work()  # synchronous here; the node passes its worker pool

    core = make(replan_runner=runner, policy=replace(POLICY, heartbeat_timeout_s=100.0))
    a, _ = greedy_beaten(core)
    core.tick(5.0)
    assert ran == []  # before the period
    core.tick(15.0)
    assert ran == ["run"]
    assert core.get_order(a).robot_id == "r3"  # type: ignore[union-attr]


def test_a_stale_plan_is_ignored_when_the_order_reached_the_shop(make: Factory) -> None:
    core = make()
    a, _ = greedy_beaten(core)
    job = core.start_replan(3.0)
    assert job is not None
    result = core.run_replan(job)
    assert [m.order_id for m in result.moves] == [a]
    # Meanwhile r1 got to the shop: the goods may go in now, so the order stays put.
    mission = core.get_order(a).mission_id  # type: ignore[union-attr]
    assert mission is not None
    core.on_mission_feedback("r1", mission, Leg.TO_PICKUP, 3.5)
    core.on_mission_feedback("r1", mission, Leg.AWAITING_LOAD, 3.6)
    effects = core.finish_replan(job, result, 4.0)
    order = core.get_order(a)
    assert order is not None
    assert (order.state, order.robot_id, order.mission_id) == (S.AWAITING_LOAD, "r1", mission)
    assert not [e for e in effects if isinstance(e, (CancelMission, SendMission))]
    assert core.replans_applied == 0
    assert not core._replan_running  # the run is over: another may start


def test_a_move_to_a_robot_that_became_busy_is_skipped(make: Factory) -> None:
    core = make()
    a, _ = greedy_beaten(core)
    job = core.start_replan(3.0)
    assert job is not None
    result = core.run_replan(job)
    # r3 is e-stopped before the plan is applied: not free, so the move is dropped.
    core.on_robot_state(RobotSample("r3", RobotMode.ESTOP, current_waypoint="bakery"), 3.5)
    core.finish_replan(job, result, 4.0)
    assert core.get_order(a).robot_id == "r1"  # type: ignore[union-attr]


def test_an_order_waiting_for_loading_is_never_planned(make: Factory) -> None:
    core = make()
    core.on_robot_state(idle("r1", "far"), 1.0)
    a = submit(core, "house_1")
    mission = core.get_order(a).mission_id  # type: ignore[union-attr]
    assert mission is not None
    core.on_mission_feedback("r1", mission, Leg.TO_PICKUP, 1.5)
    core.on_mission_feedback("r1", mission, Leg.AWAITING_LOAD, 1.6)
    b, c = submit(core, "house_2", "pharmacy"), submit(core, "house_1")
    core.on_robot_state(idle("r2", "pharmacy"), 2.0)
    core.on_robot_state(idle("r3", "bakery"), 2.0)
    core.on_robot_state(idle("r4", "bakery"), 2.0)
    job = core.start_replan(3.0)
    assert job is not None
    assert a not in {o.order_id for o in job.orders}
    assert {o.order_id for o in job.orders} == {b, c}
    r1 = next(r for r in job.robots if r.robot_id == "r1")
    assert [s.waypoint for s in r1.plan] == ["bakery", "house_1"]  # committed, not movable
    core.finish_replan(job, core.run_replan(job), 4.0)
    order = core.get_order(a)
    assert order is not None
    assert (order.state, order.robot_id, order.mission_id) == (S.AWAITING_LOAD, "r1", mission)

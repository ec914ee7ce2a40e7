"""The coordinator core: lifecycle through a mission, failure policies, offline robots, restart."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from delivery_robot.credentials import ScryptParams
from delivery_robot.demo_map import DemoMap
from delivery_robot.fleet_coordinator import (
    Alert,
    AlertKind,
    Announce,
    Audience,
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
from delivery_robot.order_store import OrderStore

S = OrderState
FAST = ScryptParams(log2_n=1, r=1, p=1)
DEMO = DemoMap(
    waypoints={"depot": (0.0, 0.0), "bakery": (30.0, 0.0), "pharmacy": (0.0, 30.0),
               "house_1": (60.0, 0.0), "house_2": (30.0, 30.0)},
    shops={"bakery": "bakery", "pharmacy": "pharmacy"},
    depot="depot",
)
# Most tests send two robots to one shop at once; one_robot_per_waypoint has its own test.
POLICY = CoordinatorPolicy(one_robot_per_waypoint=False, heartbeat_timeout_s=5.0,
                           navigation_retries=2, recipient_reminder_after_s=60.0)


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
def make(tmp_path: Path, clock: Clock) -> Iterator[Factory]:
    """Coordinators on one database file (a second one = a restart)."""
    stores: list[OrderStore] = []

    def factory(**kwargs: object) -> FleetCoordinator:
        store = OrderStore(tmp_path / "orders.db", clock=clock)
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
          mission: str = "", **kw: object) -> RobotSample:
    return RobotSample(robot_id=robot, mode=mode, current_waypoint=waypoint,
                       mission_id=mission, **kw)  # type: ignore[arg-type]


def request(shop: str = "bakery", dropoff: str = "house_1", **kw: object) -> OrderRequest:
    fields: dict[str, object] = {"size": 1, "weight_kg": 2.0}
    fields.update(kw)
    return OrderRequest(shop, dropoff, **fields)  # type: ignore[arg-type]


def states(effects: Sequence[Effect], order_id: str | None = None) -> list[OrderState]:
    return [e.event.state for e in effects
            if isinstance(e, Announce) and (order_id is None or e.event.order_id == order_id)]


def missions(effects: Sequence[Effect]) -> list[SendMission]:
    return [e for e in effects if isinstance(e, SendMission)]


def alerts(effects: Sequence[Effect]) -> list[Alert]:
    return [e for e in effects if isinstance(e, Alert)]


def submitted(core: FleetCoordinator, clock: Clock, **kw: object) -> tuple[str, SendMission]:
    reply = core.submit_order(request(**kw), clock.t)
    assert reply.accepted, reply.message
    assert reply.order is not None
    sent = missions(reply.effects)
    assert len(sent) == 1
    return reply.order.order_id, sent[0]


def load(core: FleetCoordinator, clock: Clock, order_id: str, mission: SendMission) -> None:
    core.on_mission_feedback(mission.robot_id, mission.mission_id, Leg.TO_PICKUP, clock.t)
    core.on_mission_feedback(mission.robot_id, mission.mission_id, Leg.AWAITING_LOAD, clock.t)
    assert core.confirm_loaded(order_id, "bakery", clock.t).accepted


def test_an_order_goes_through_its_mission_to_delivered(make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    reply = core.submit_order(request(), clock.t)
    assert reply.accepted
    assert reply.error_code == ""
    assert reply.credentials is not None
    assert len(reply.credentials.pin) == 6
    assert reply.order is not None
    order_id = reply.order.order_id
    # Dispatch is immediate: no auction window.
    assert states(reply.effects) == [S.REQUESTED, S.ASSIGNED]
    (goal,) = missions(reply.effects)
    assert (goal.robot_id, goal.kind, goal.pickup_waypoint, goal.dropoff_waypoint,
            goal.return_waypoint) == ("r1", MissionKind.DELIVERY, "bakery", "house_1", "depot")
    seen = []
    for leg in (Leg.TO_PICKUP, Leg.AWAITING_LOAD, Leg.TO_DROPOFF, Leg.HANDOFF, Leg.RETURNING):
        seen += states(core.on_mission_feedback("r1", goal.mission_id, leg, clock.t))
    assert seen == [S.TO_PICKUP, S.AWAITING_LOAD, S.IN_TRANSIT, S.AWAITING_RECIPIENT,
                    S.DELIVERED]
    done = core.on_mission_result("r1", goal.mission_id, MissionOutcome.SUCCEEDED, clock.t,
                                  delivered_order_ids=[order_id])
    assert states(done) == []
    history = core.history(order_id)
    assert [e.sequence for e in history] == list(range(1, 8))
    assert history[-1].state is S.DELIVERED


def test_every_announcement_is_already_in_the_store(make: Factory, clock: Clock) -> None:
    seen: list[tuple[OrderState, OrderState]] = []
    holder: list[FleetCoordinator] = []

    def sink(effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Announce):
                stored = holder[0].history(effect.event.order_id)[effect.event.sequence - 1]
                seen.append((effect.event.state, stored.state))

    core = make(effect_sink=sink)
    holder.append(core)
    core.on_robot_state(state("r1"), clock.t)
    submitted(core, clock)
    assert seen == [(S.REQUESTED, S.REQUESTED), (S.ASSIGNED, S.ASSIGNED)]


def test_queued_with_a_reason_then_dispatched_when_a_robot_appears(
    make: Factory, clock: Clock
) -> None:
    core = make()
    reply = core.submit_order(request(), clock.t)
    assert reply.accepted
    assert reply.order is not None
    assert states(reply.effects) == [S.REQUESTED]
    assert "no_robots" in reply.message
    assert core.queue_reason(reply.order.order_id)
    effects = core.on_robot_state(state("r1"), clock.t)
    assert states(effects) == [S.ASSIGNED]
    assert missions(effects)[0].robot_id == "r1"


def test_busy_robot_is_not_sent_a_second_mission(make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    submitted(core, clock)
    second = core.submit_order(request(dropoff="house_2"), clock.t)
    assert states(second.effects) == [S.REQUESTED]
    assert not missions(second.effects)


def test_a_robot_with_goods_still_in_its_compartment_gets_no_new_mission(
    make: Factory, clock: Clock
) -> None:
    """Goods brought back to the shop stay in the compartment until the shop takes them out:
    the robot reports idle with no mission, but driving off would strand them on board."""
    core = make()
    core.on_robot_state(state("r1", waypoint="bakery", compartment_busy=True), clock.t)
    reply = core.submit_order(request(), clock.t)
    assert reply.accepted
    assert states(reply.effects) == [S.REQUESTED]
    assert not missions(reply.effects)
    effects = core.on_robot_state(state("r1", waypoint="bakery"), clock.t)
    assert states(effects) == [S.ASSIGNED]
    assert missions(effects)[0].robot_id == "r1"


def test_one_robot_at_a_time_per_shop_and_dropoff(make: Factory, clock: Clock) -> None:
    """A second order of the same shop waits while the first robot is on its way there or
    loading, even with a free robot; it goes once that robot has left loaded. The same holds
    for a dropoff while a loaded robot drives to it or waits for the recipient."""
    from dataclasses import replace as with_

    core = make(policy=with_(POLICY, one_robot_per_waypoint=True))
    core.on_robot_state(state("r1"), clock.t)
    core.on_robot_state(state("r2"), clock.t)
    first, goal = submitted(core, clock)
    second = core.submit_order(request(dropoff="house_2"), clock.t)
    assert second.order is not None
    assert states(second.effects) == [S.REQUESTED]
    assert "waypoint_busy" in core.queue_reason(second.order.order_id)
    assert "r1 is at or on its way to bakery" in core.queue_reason(second.order.order_id)
    load(core, clock, first, goal)
    core.on_mission_feedback("r1", goal.mission_id, Leg.TO_DROPOFF, clock.t)
    effects = core.tick(clock.t)  # the queue is tried every tick (and on every robot_state)
    assert states(effects, second.order.order_id) == [S.ASSIGNED]
    assert missions(effects)[0].robot_id == "r2"
    # house_1 is r1's dropoff now: an order to it waits, one elsewhere goes.
    third = core.submit_order(request(shop="pharmacy", dropoff="house_1"), clock.t)
    assert third.order is not None
    assert "r1 is at or on its way to house_1" in core.queue_reason(third.order.order_id)


def test_orders_of_one_shop_waiting_together_go_one_at_a_time(make: Factory,
                                                               clock: Clock) -> None:
    """Two orders of one shop queued before any robot reports: when two robots appear, only
    one is sent to the shop (one dispatch round must not send both)."""
    from dataclasses import replace as with_

    core = make(policy=with_(POLICY, one_robot_per_waypoint=True))
    a = core.submit_order(request(), clock.t)
    b = core.submit_order(request(dropoff="house_2"), clock.t)
    assert a.order is not None
    assert b.order is not None
    core.on_robot_state(state("r1"), clock.t)
    core.on_robot_state(state("r2"), clock.t)
    core.tick(clock.t)
    assigned = [o for o in (a.order.order_id, b.order.order_id)
                if core.history(o)[-1].state is S.ASSIGNED]
    assert len(assigned) == 1


@pytest.mark.parametrize(
    ("req", "code"),
    [
        (request(shop="nobody"), "unknown_shop"),
        (request(dropoff="moon"), "unknown_dropoff"),
        (request(dropoff="pharmacy"), "unknown_dropoff"),
        (request(weight_kg=50.0), "too_heavy"),
        (request(size=7), "invalid_field"),
        (request(note="x" * 281), "note_too_long"),
    ],
)
def test_bad_input_gets_a_stable_code_and_writes_nothing(
    make: Factory, clock: Clock, req: OrderRequest, code: str
) -> None:
    core = make()
    reply = core.submit_order(req, clock.t)
    assert (reply.accepted, reply.error_code) == (False, code)
    assert reply.message
    assert reply.effects == ()
    assert core.list_orders() == []


def test_a_retried_submit_returns_the_same_order_once(make: Factory, clock: Clock) -> None:
    core = make()
    first = core.submit_order(request(idempotency_key="k1"), clock.t)
    again = core.submit_order(request(idempotency_key="k1"), clock.t)
    assert first.order is not None
    assert again.order is not None
    assert again.accepted
    assert again.order.order_id == first.order.order_id
    assert again.credentials is None
    assert again.effects == ()
    conflict = core.submit_order(request(idempotency_key="k1", weight_kg=3.0), clock.t)
    assert conflict.error_code == "idempotency_conflict"
    assert len(core.list_orders()) == 1


def test_cancel_before_loading_cancels_and_stops_the_robot(make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    assert core.cancel_order(order_id, "pharmacy", "", clock.t).error_code == "unknown_order"
    reply = core.cancel_order(order_id, "bakery", "customer changed mind", clock.t)
    assert reply.accepted
    assert states(reply.effects) == [S.CANCELLED]
    assert CancelMission("r1", goal.mission_id) in reply.effects
    after = core.on_mission_result("r1", goal.mission_id, MissionOutcome.CANCELED, clock.t)
    assert states(after) == []
    assert core.cancel_order(order_id, "bakery", "", clock.t).error_code == "not_cancellable"


def test_cancel_after_loading_brings_the_goods_back_then_cancels(
    make: Factory, clock: Clock
) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    load(core, clock, order_id, goal)
    reply = core.cancel_order(order_id, "operator", "address wrong", clock.t)
    assert states(reply.effects) == [S.RETURNING]
    assert CancelMission("r1", goal.mission_id) in reply.effects
    assert not missions(reply.effects)  # the return goes out once the delivery stopped
    stopped = core.on_mission_result("r1", goal.mission_id, MissionOutcome.CANCELED, clock.t)
    (back,) = missions(stopped)
    assert (back.kind, back.return_waypoint) == (MissionKind.RETURN, "bakery")
    home = core.on_mission_result("r1", back.mission_id, MissionOutcome.SUCCEEDED, clock.t)
    assert states(home) == [S.CANCELLED]
    assert any(a.kind is AlertKind.GOODS_BACK_AT_SHOP and a.audience is Audience.SHOP
               for a in alerts(home))


def test_navigation_failure_retries_then_requeues_an_unloaded_order(
    make: Factory, clock: Clock
) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    core.on_robot_state(state("r2", waypoint="house_2"), clock.t)
    order_id, goal = submitted(core, clock)
    for attempt in range(POLICY.navigation_retries):
        effects = core.on_mission_result(goal.robot_id, goal.mission_id, MissionOutcome.FAILED,
                                         clock.t, message="blocked")
        (again,) = missions(effects)
        assert (again.mission_id, again.robot_id) == (goal.mission_id, goal.robot_id), attempt
        assert states(effects) == []
    effects = core.on_mission_result(goal.robot_id, goal.mission_id, MissionOutcome.FAILED,
                                     clock.t, message="blocked")
    assert states(effects, order_id) == [S.REQUESTED, S.ASSIGNED]
    (other,) = missions(effects)
    assert other.robot_id != goal.robot_id
    assert other.mission_id.endswith("-m2")


def test_navigation_failure_with_goods_brings_them_back_and_tells_the_shop(
    make: Factory, clock: Clock
) -> None:
    core = make(policy=CoordinatorPolicy(navigation_retries=1))
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    load(core, clock, order_id, goal)
    retry = core.on_mission_result("r1", goal.mission_id, MissionOutcome.FAILED, clock.t)
    (again,) = missions(retry)
    assert again.orders[0].state is S.IN_TRANSIT  # the executor resumes at the dropoff leg
    given_up = core.on_mission_result("r1", goal.mission_id, MissionOutcome.FAILED, clock.t)
    assert states(given_up) == [S.RETURNING]
    (back,) = missions(given_up)
    assert back.kind is MissionKind.RETURN
    assert back.return_waypoint == "bakery"
    assert any(a.kind is AlertKind.GOODS_RETURNING and a.shop_id == "bakery"
               for a in alerts(given_up))
    home = core.on_mission_result("r1", back.mission_id, MissionOutcome.SUCCEEDED, clock.t)
    assert states(home) == [S.FAILED]
    assert "navigation" in core.history(order_id)[-1].reason


def test_recipient_no_show_reminds_then_returns_goods_locked(make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    load(core, clock, order_id, goal)
    core.on_mission_feedback("r1", goal.mission_id, Leg.HANDOFF, clock.t)
    assert core.tick(clock.t) == []
    clock.t += 61.0
    core.on_robot_state(state("r1", RobotMode.AWAITING_RECIPIENT, "house_1", goal.mission_id),
                        clock.t)
    reminder = core.tick(clock.t)
    assert [a.kind for a in alerts(reminder)] == [AlertKind.RECIPIENT_REMINDER]
    assert core.tick(clock.t + 1) == []  # once
    no_show = core.on_mission_result("r1", goal.mission_id, MissionOutcome.NO_SHOW, clock.t)
    assert states(no_show) == [S.RETURNING]
    (back,) = missions(no_show)
    home = core.on_mission_result("r1", back.mission_id, MissionOutcome.SUCCEEDED, clock.t)
    assert states(home) == [S.FAILED]
    assert "no_show" in core.history(order_id)[-1].reason


def test_load_timeout_fails_the_order_and_tells_the_shop(make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    _, goal = submitted(core, clock)
    effects = core.on_mission_result("r1", goal.mission_id, MissionOutcome.NOT_LOADED, clock.t)
    assert states(effects) == [S.FAILED]
    assert alerts(effects)[0].kind is AlertKind.NOT_LOADED


def test_offline_robot_unloaded_order_is_redispatched(make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    core.on_robot_state(state("r2", waypoint="house_2"), clock.t)
    clock.t += 4.0
    core.on_robot_state(state("r2", waypoint="house_2"), clock.t)
    clock.t += 2.0
    effects = core.tick(clock.t)
    assert AlertKind.ROBOT_OFFLINE in [a.kind for a in alerts(effects)]
    assert CancelMission("r1", goal.mission_id) in effects
    assert states(effects, order_id) == [S.REQUESTED, S.ASSIGNED]
    assert missions(effects)[0].robot_id == "r2"
    # r1 comes back still running the old mission: it is stopped, nothing goes out twice.
    back = core.on_robot_state(state("r1", RobotMode.TO_PICKUP, "", goal.mission_id), clock.t)
    assert CancelMission("r1", goal.mission_id) in back
    assert states(back) == []
    assert core.get_order(order_id).robot_id == "r2"  # type: ignore[union-attr]


def test_offline_robot_with_goods_is_flagged_never_reassigned(
    make: Factory, clock: Clock
) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    load(core, clock, order_id, goal)
    core.on_robot_state(state("r2"), clock.t + 5.0)
    effects = core.tick(clock.t + 6.0)
    kinds = [a.kind for a in alerts(effects)]
    assert AlertKind.ROBOT_OFFLINE in kinds
    assert AlertKind.GOODS_ON_OFFLINE_ROBOT in kinds
    flag = next(a for a in alerts(effects) if a.kind is AlertKind.GOODS_ON_OFFLINE_ROBOT)
    assert (flag.audience, flag.order_id, flag.shop_id) == (Audience.BOTH, order_id, "bakery")
    assert states(effects) == []
    assert not missions(effects)
    order = core.get_order(order_id)
    assert order is not None
    assert (order.state, order.robot_id) == (S.IN_TRANSIT, "r1")
    assert core.tick(clock.t + 7.0) == []  # flagged once


@pytest.mark.parametrize(("mode", "kind"), [(RobotMode.ESTOP, AlertKind.ROBOT_ESTOP),
                                            (RobotMode.FAULT, AlertKind.ROBOT_FAULT)])
def test_estop_or_fault_alerts_the_operator_once(
    make: Factory, clock: Clock, mode: RobotMode, kind: AlertKind
) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    effects = core.on_robot_state(state("r1", mode, faults=("motor_overcurrent",)), clock.t)
    (alert,) = alerts(effects)
    assert (alert.kind, alert.audience, alert.robot_id) == (kind, Audience.OPERATOR, "r1")
    assert core.on_robot_state(state("r1", mode), clock.t) == []
    queued = core.submit_order(request(), clock.t)  # a stopped robot gets no mission
    assert states(queued.effects) == [S.REQUESTED]


def test_restart_keeps_a_running_mission_and_delivers_once(make: Factory, clock: Clock) -> None:
    first = make()
    first.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(first, clock)
    load(first, clock, order_id, goal)
    # crash: a new coordinator on the same file
    second = make()
    assert [o.order_id for o in second.list_orders()] == [order_id]
    running = second.on_robot_state(state("r1", RobotMode.TO_DROPOFF, "", goal.mission_id),
                                    clock.t)
    assert not missions(running)
    assert states(running) == []
    waiting = second.on_robot_state(
        state("r1", RobotMode.AWAITING_RECIPIENT, "house_1", goal.mission_id), clock.t)
    assert states(waiting) == [S.AWAITING_RECIPIENT]
    returning = second.on_robot_state(
        state("r1", RobotMode.RETURNING, "house_1", goal.mission_id), clock.t)
    assert states(returning) == [S.DELIVERED]
    idle = second.on_robot_state(state("r1"), clock.t)
    assert states(idle) == []
    assert not missions(idle)
    history = [e.state for e in second.history(order_id)]
    assert history.count(S.DELIVERED) == 1
    assert history.count(S.ASSIGNED) == 1


def test_restart_redispatches_an_assigned_order_whose_robot_is_idle(
    make: Factory, clock: Clock
) -> None:
    first = make()
    first.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(first, clock)
    second = make()
    effects = second.on_robot_state(state("r1"), clock.t)
    assert states(effects, order_id) == [S.REQUESTED, S.ASSIGNED]
    (again,) = missions(effects)
    assert again.mission_id != goal.mission_id


def test_restart_with_a_silent_robot_requeues_unloaded_and_flags_loaded(
    make: Factory, clock: Clock
) -> None:
    first = make()
    first.on_robot_state(state("r1"), clock.t)
    first.on_robot_state(state("r2", waypoint="house_2"), clock.t)
    unloaded, _ = submitted(first, clock)
    loaded, goal2 = submitted(first, clock, dropoff="house_2")
    load(first, clock, loaded, goal2)
    second = make()
    clock.t += 6.0
    effects = second.tick(clock.t)
    assert states(effects, unloaded) == [S.REQUESTED]
    assert states(effects, loaded) == []
    assert any(a.kind is AlertKind.GOODS_ON_OFFLINE_ROBOT and a.order_id == loaded
               for a in alerts(effects))
    assert {o.order_id for o in second.list_orders()} == {unloaded, loaded}


def test_a_restart_resumes_a_return_to_the_shop(make: Factory, clock: Clock) -> None:
    first = make()
    first.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(first, clock)
    load(first, clock, order_id, goal)
    first.on_mission_result("r1", goal.mission_id, MissionOutcome.NO_SHOW, clock.t)
    second = make()
    # Robot reports the return mission: adopted, and when it is back at the shop: failed.
    second.on_robot_state(state("r1", RobotMode.RETURNING, "", goal.mission_id + "-return"),
                          clock.t)
    done = second.on_robot_state(state("r1", RobotMode.IDLE, "bakery"), clock.t)
    assert states(done) == [S.FAILED]


# ---- the mission executor's side of the contract ------------------------------------------


def test_a_delivery_goal_carries_the_orders_credential_record(make: Factory,
                                                              clock: Clock) -> None:
    from delivery_robot.handoff_record import record_from_json

    core = make()
    core.on_robot_state(state("r1"), clock.t)
    reply = core.submit_order(request(), clock.t)
    assert reply.credentials is not None
    (goal,) = missions(reply.effects)
    (text,) = goal.handoff_records
    record = record_from_json(text)
    assert record.order_id == goal.orders[0].order_id
    assert reply.credentials.pin not in text
    robot_book = HandoffCredentials(CredentialPolicy(secret_key=b"k" * 32, pin_hash_cost=FAST))
    robot_book.add(record)
    assert robot_book.verify(record.order_id, 0, reply.credentials.pin, clock.t).granted


def test_the_shop_and_returned_goods_get_the_compartment_opened(make: Factory,
                                                                clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    effects = core.on_robot_state(state("r1", RobotMode.AWAITING_LOAD, "bakery",
                                        goal.mission_id), clock.t)
    assert states(effects) == [S.TO_PICKUP, S.AWAITING_LOAD]
    assert OpenCompartment("r1", order_id, "loading") in effects
    assert core.confirm_loaded(order_id, "bakery", clock.t).accepted
    core.cancel_order(order_id, "bakery", "", clock.t)
    stopped = core.on_mission_result("r1", goal.mission_id, MissionOutcome.CANCELED, clock.t)
    (back,) = missions(stopped)
    home = core.on_mission_result("r1", back.mission_id, MissionOutcome.SUCCEEDED, clock.t)
    assert OpenCompartment("r1", order_id, "unloading") in home


def test_a_resumed_mission_that_ends_without_a_result_is_decided_after_the_grace(
    make: Factory, clock: Clock
) -> None:
    """The executor restarted mid-delivery and resumed without the goal handle: the robot
    reports the mission, ends it (no-show at the dropoff) and goes idle, and no result comes."""
    core = make(policy=replace(POLICY, result_grace_s=3.0))
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    assert core.on_robot_state(state("r1"), clock.t) == []  # not started yet: nothing ends
    load(core, clock, order_id, goal)
    core.on_robot_state(state("r1", RobotMode.AWAITING_RECIPIENT, "house_1", goal.mission_id,
                              order_ids=(order_id,)), clock.t)
    idle = core.on_robot_state(state("r1", waypoint="house_1"), clock.t + 1.0)
    assert states(idle) == []
    assert core.tick(clock.t + 2.0) == []  # the result may still come
    decided = core.tick(clock.t + 4.0)
    assert states(decided) == [S.RETURNING]
    (back,) = missions(decided)
    assert (back.kind, back.return_waypoint) == (MissionKind.RETURN, "bakery")
    # The old goal's result, if it ever arrives, changes nothing.
    late = core.on_mission_result("r1", goal.mission_id, MissionOutcome.NO_SHOW, clock.t + 5.0)
    assert states(late) == []
    assert not missions(late)


def test_a_result_within_the_grace_is_applied_once(make: Factory, clock: Clock) -> None:
    core = make()
    core.on_robot_state(state("r1"), clock.t)
    order_id, goal = submitted(core, clock)
    core.on_robot_state(state("r1", RobotMode.TO_PICKUP, "", goal.mission_id), clock.t)
    core.on_robot_state(state("r1"), clock.t + 0.5)
    failed = core.on_mission_result("r1", goal.mission_id, MissionOutcome.NOT_LOADED, clock.t)
    assert states(failed) == [S.FAILED]
    assert states(core.tick(clock.t + 10.0), order_id) == []


def test_a_robot_busy_at_a_dropoff_keeps_others_away(
    make: Factory, clock: Clock
) -> None:
    """r2 is still busy at house_2 (its mission runs there): an order to house_2 waits, as r1
    would meet r2 in the dead end; once r2 is free it goes."""
    from dataclasses import replace as with_

    core = make(policy=with_(POLICY, one_robot_per_waypoint=True))
    core.on_robot_state(state("r1"), clock.t)
    core.on_robot_state(state("r2", mode=RobotMode.TO_DROPOFF, waypoint="house_2",
                              mission="m-old"), clock.t)
    reply = core.submit_order(request(dropoff="house_2"), clock.t)
    assert reply.order is not None
    assert not missions(reply.effects)
    assert "r2 is at or on its way to house_2" in core.queue_reason(reply.order.order_id)
    effects = core.on_robot_state(state("r2", waypoint="house_2"), clock.t)
    assert len(missions(effects)) == 1


def test_a_robot_left_free_away_from_home_is_sent_home(make: Factory, clock: Clock) -> None:
    """A cancelled or re-planned mission leaves a robot standing where it was (maybe in a
    lane): after return_home_after_s free there it gets a return mission home; at home, or
    with an order to do, it does not."""
    from dataclasses import replace as with_

    core = make(policy=with_(POLICY, return_home_after_s=10.0))
    t0 = clock.t

    def report(at: float, r1_waypoint: str = "bakery") -> None:  # each robot's heartbeat
        core.on_robot_state(state("r1", waypoint=r1_waypoint), at)
        core.on_robot_state(state("r2"), at)  # at the depot: home

    report(t0)
    report(t0 + 5.0)
    assert not missions(core.tick(t0 + 5.0))
    report(t0 + 11.0)
    (home,) = missions(core.tick(t0 + 11.0))
    assert (home.robot_id, home.kind, home.return_waypoint) == ("r1", MissionKind.RETURN,
                                                                 "depot")
    core.on_robot_state(state("r1", mode=RobotMode.RETURNING, waypoint="",
                              mission=home.mission_id), t0 + 12.0)
    assert not missions(core.tick(t0 + 12.0))  # r1 is busy now; r2 is home
    core.on_mission_result("r1", home.mission_id, MissionOutcome.SUCCEEDED, t0 + 40.0)
    report(t0 + 40.0, r1_waypoint="depot")
    report(t0 + 60.0, r1_waypoint="depot")
    assert not missions(core.tick(t0 + 60.0))

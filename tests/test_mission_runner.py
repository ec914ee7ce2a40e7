"""The mission executor's core: every leg transition, cancels at each leg, timeouts, retries,
resume decisions after a restart, and the checkpoint's JSON round trip."""

from __future__ import annotations

from dataclasses import replace

import pytest

from delivery_robot.compartment_handoff import HandoffState, LockState, Occupancy
from delivery_robot.mission_legs import Leg, MissionKind, RobotMode
from delivery_robot.mission_runner import (
    AssignCompartment,
    BatterySeen,
    CancelRequested,
    Checkpoint,
    CompartmentSeen,
    DriveTo,
    HandoffAssigned,
    HandoffEventSeen,
    MissionRejected,
    MissionRunner,
    MissionSpec,
    NavigationEnded,
    OrderStatusSeen,
    OrderTask,
    Outcome,
    RunnerConfig,
    Stage,
    Step,
    StopNavigation,
    Tick,
    plan_stages,
)
from delivery_robot.order_lifecycle import OrderState
from delivery_robot.route_planner import NavCode

S = OrderState
CONFIG = RunnerConfig(nav_retries=2, nav_retry_delay_s=2.0, handoff_grace_s=30.0,
                      charge_target=0.8, charge_start_timeout_s=20.0, max_orders=2)
SHOP, HOUSE, HOUSE2, DEPOT = "shop_bakery", "house_n1", "house_n2", "depot"
EMPTY_LOCKED = CompartmentSeen(HandoffState.LOCKED_EMPTY, LockState.LOCKED, True, Occupancy.EMPTY)
LOADED = CompartmentSeen(HandoffState.LOCKED_LOADED, LockState.LOCKED, True, Occupancy.OCCUPIED,
                         "o1")
OPEN_FOR_LOADING = CompartmentSeen(HandoffState.OPEN_FOR_LOADING, LockState.UNLOCKED, True,
                                   Occupancy.EMPTY, "o1")
DOOR_OPEN = CompartmentSeen(HandoffState.DOOR_OPEN, LockState.UNLOCKED, False,
                            Occupancy.OCCUPIED, "o1")


def order(order_id: str = "o1", dropoff: str = HOUSE, state: OrderState = S.ASSIGNED
          ) -> OrderTask:
    return OrderTask(order_id, SHOP, dropoff, state, record='{"v":1}')


def delivery(*orders: OrderTask, return_to: str = DEPOT) -> MissionSpec:
    return MissionSpec("m1", MissionKind.DELIVERY, orders or (order(),), SHOP, HOUSE, return_to,
                       load_timeout_s=100.0, handoff_timeout_s=60.0)


class Run:
    """Drives one runner and keeps its steps."""

    def __init__(self, spec: MissionSpec, now: float = 0.0, config: RunnerConfig = CONFIG
                 ) -> None:
        self.now = now
        self.runner, first = MissionRunner.start(spec, config, now)
        self.steps = [first]

    def feed(self, event: object, dt: float = 0.0) -> Step:
        self.now += dt
        step = self.runner.handle(event, self.now)  # type: ignore[arg-type]
        self.steps.append(step)
        return step

    @property
    def last(self) -> Step:
        return self.steps[-1]

    def nav(self) -> DriveTo:
        goals = [c for s in self.steps for c in s.commands if isinstance(c, DriveTo)]
        assert goals, "no navigate goal sent"
        return goals[-1]

    def arrive(self, dt: float = 10.0) -> Step:
        return self.feed(NavigationEnded(self.nav().goal, NavCode.SUCCEEDED), dt)

    def load(self) -> None:
        """At the shop: the shop confirms and the handoff node locks the goods in."""
        self.feed(CompartmentSeen(HandoffState.OPEN_FOR_LOADING, LockState.UNLOCKED, True,
                                  Occupancy.EMPTY, "o1"))
        self.feed(OrderStatusSeen("o1", S.IN_TRANSIT))
        assert self.runner.leg is Leg.AWAITING_LOAD  # not without the lock
        self.feed(LOADED)


def commands(step: Step, kind: type) -> list[object]:
    return [c for c in step.commands if isinstance(c, kind)]


# ---- planning -------------------------------------------------------------------------------


def test_delivery_plan_and_resume_point_from_the_orders_states() -> None:
    legs = [(s.leg, s.waypoint) for s in plan_stages(delivery(), CONFIG)]
    assert legs == [(Leg.TO_PICKUP, SHOP), (Leg.AWAITING_LOAD, SHOP), (Leg.TO_DROPOFF, HOUSE),
                    (Leg.HANDOFF, HOUSE), (Leg.RETURNING, DEPOT)]
    loaded = plan_stages(delivery(order(state=S.IN_TRANSIT)), CONFIG)
    assert [s.leg for s in loaded] == [Leg.TO_DROPOFF, Leg.HANDOFF, Leg.RETURNING]
    two = plan_stages(delivery(order("a"), order("b", HOUSE2)), CONFIG)
    assert [(s.leg, s.waypoint, s.order_index) for s in two[2:6]] == [
        (Leg.TO_DROPOFF, HOUSE, 0), (Leg.HANDOFF, HOUSE, 0), (Leg.TO_DROPOFF, HOUSE2, 1),
        (Leg.HANDOFF, HOUSE2, 1)]
    charge = MissionSpec("c1", MissionKind.CHARGE, (), "", "", "charger_1", 0.0, 0.0)
    assert [s.leg for s in plan_stages(charge, CONFIG)] == [Leg.RETURNING, Leg.CHARGING]


@pytest.mark.parametrize(("spec", "why"), [
    (delivery(order("a"), order("b"), order("c")), "at most 2"),
    (replace(delivery(), pickup=""), "pickup"),
    (delivery(order(state=S.CANCELLED)), "already finished"),
    (delivery(order(state=S.RETURNING)), "return mission"),
    (delivery(order("a", state=S.IN_TRANSIT), order("b")), "some orders are loaded"),
    (delivery(OrderTask("o1", "shop_other", HOUSE, S.ASSIGNED)), "picked up at"),
    (MissionSpec("r", MissionKind.RETURN, (), "", "", "", 0.0, 0.0), "return waypoint"),
    (replace(delivery(), orders=()), "at least one order"),
])
def test_missions_it_cannot_run_are_rejected_with_a_reason(spec: MissionSpec, why: str) -> None:
    with pytest.raises(MissionRejected, match=why):
        MissionRunner.start(spec, CONFIG, 0.0)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="nav_retries"):
        RunnerConfig(nav_retries=-1)
    with pytest.raises(ValueError, match="charge_target"):
        RunnerConfig(charge_target=1.5)


# ---- a delivery, leg by leg -------------------------------------------------------------------


def test_full_delivery_runs_every_leg_and_journals_each_change() -> None:
    run = Run(delivery())
    first = run.steps[0]
    assert first.journal
    assert commands(first, AssignCompartment) == [AssignCompartment("o1", SHOP, HOUSE, '{"v":1}')]
    assert commands(first, DriveTo) == [DriveTo(1, SHOP)]
    assert (run.runner.leg, run.runner.mode) == (Leg.TO_PICKUP, RobotMode.TO_PICKUP)
    assert run.runner.order_ids == ["o1"]
    run.feed(HandoffAssigned("o1", True))
    arrived = run.arrive()
    assert arrived.journal
    assert (run.runner.leg, run.runner.current_waypoint) == (Leg.AWAITING_LOAD, SHOP)
    # Confirmation alone, or the lock alone, is not enough.
    run.feed(OrderStatusSeen("o1", S.IN_TRANSIT))
    assert run.runner.leg is Leg.AWAITING_LOAD
    left = run.feed(LOADED)
    assert left.journal
    assert run.runner.leg is Leg.TO_DROPOFF
    assert commands(left, DriveTo) == [DriveTo(2, HOUSE)]
    assert run.runner.current_waypoint == ""  # between waypoints
    run.arrive()
    assert (run.runner.leg, run.runner.mode) == (Leg.HANDOFF, RobotMode.AWAITING_RECIPIENT)
    assert run.feed(HandoffEventSeen("delivered", "other-order")).journal is False
    done = run.feed(HandoffEventSeen("delivered", "o1"), 5.0)
    assert done.journal
    assert (run.runner.leg, run.runner.mode) == (Leg.RETURNING, RobotMode.RETURNING)
    assert run.runner.order_ids == []  # delivered: nothing on board
    assert commands(done, DriveTo) == [DriveTo(3, DEPOT)]
    end = run.arrive()
    assert end.finished is not None
    assert (end.finished.outcome, end.finished.delivered) == (Outcome.SUCCEEDED, ("o1",))
    assert run.runner.mode is RobotMode.IDLE
    assert run.runner.checkpoint.outcome is Outcome.SUCCEEDED
    assert run.feed(Tick(), 1.0) == Step()  # finished: nothing more


def test_a_delivery_without_return_waypoint_ends_after_the_handoff() -> None:
    run = Run(delivery(return_to=""))
    run.arrive()
    run.load()
    run.arrive()
    end = run.feed(HandoffEventSeen("delivered", "o1"))
    assert end.finished is not None
    assert end.finished.outcome is Outcome.SUCCEEDED


def test_two_orders_from_one_shop_are_handed_over_in_order() -> None:
    run = Run(delivery(order("a"), order("b", HOUSE2)))
    assert commands(run.steps[0], AssignCompartment)[0].order_id == "a"  # type: ignore[attr-defined]
    run.feed(HandoffAssigned("a", True))
    run.arrive()
    run.feed(OrderStatusSeen("a", S.IN_TRANSIT))
    run.feed(OrderStatusSeen("b", S.IN_TRANSIT))
    run.feed(replace(LOADED, order_id="a"))
    run.arrive()
    assert run.runner.order_ids == ["a", "b"]
    step = run.feed(HandoffEventSeen("delivered", "a"))
    assert run.runner.stage == Stage(Leg.TO_DROPOFF, HOUSE2, 1)
    assert commands(step, AssignCompartment)[0].order_id == "b"  # type: ignore[attr-defined]
    assert run.runner.order_ids == ["b"]
    run.arrive()
    run.feed(HandoffEventSeen("delivered", "b"))
    end = run.arrive()
    assert end.finished is not None
    assert end.finished.delivered == ("a", "b")


def test_the_robot_does_not_drive_off_with_the_door_open() -> None:
    run = Run(delivery())
    run.arrive()
    run.feed(OrderStatusSeen("o1", S.IN_TRANSIT))
    run.feed(DOOR_OPEN)
    assert run.runner.leg is Leg.AWAITING_LOAD
    # Even if the next leg is reached (resent mission), the door holds the robot.
    run2 = Run(delivery(order(state=S.IN_TRANSIT)))
    assert commands(run2.steps[0], DriveTo)
    run3 = Run(delivery(order(state=S.IN_TRANSIT)))
    run3.feed(DOOR_OPEN)
    run3.feed(NavigationEnded(run3.nav().goal, NavCode.BLOCKED), 1.0)
    assert not commands(run3.feed(Tick(), 5.0), DriveTo)  # retry held while the door is open
    assert commands(run3.feed(LOADED, 0.1), DriveTo)


# ---- timeouts -------------------------------------------------------------------------------


def test_load_timeout_is_not_loaded_and_says_what_was_missing() -> None:
    run = Run(delivery())
    run.arrive(dt=10.0)
    run.feed(OrderStatusSeen("o1", S.IN_TRANSIT))
    assert run.feed(Tick(), 99.0).finished is None
    end = run.feed(Tick(), 1.0)
    assert end.finished is not None
    assert end.finished.outcome is Outcome.NOT_LOADED
    assert end.finished.failed_leg is Leg.AWAITING_LOAD
    assert "not locked" in end.finished.message
    assert "did not confirm" not in end.finished.message


def test_handoff_timeout_is_a_no_show_at_the_dropoff_with_goods_locked() -> None:
    run = Run(delivery(order(state=S.IN_TRANSIT)))
    run.feed(LOADED)
    run.arrive(dt=0.0)
    assert run.feed(Tick(), 59.0).finished is None
    end = run.feed(Tick(), 1.0)
    assert end.finished is not None
    assert (end.finished.outcome, end.finished.failed_leg) == (Outcome.NO_SHOW, Leg.HANDOFF)
    assert "goods locked at house_n1" in end.finished.message
    assert not commands(end, DriveTo)  # stays at the dropoff


def test_no_show_waits_while_the_recipient_has_the_door_open() -> None:
    run = Run(delivery(order(state=S.IN_TRANSIT)))
    run.arrive()
    run.feed(DOOR_OPEN)
    assert run.feed(Tick(), 61.0).finished is None  # grace: the door is open
    done = run.feed(HandoffEventSeen("delivered", "o1"), 5.0)
    assert run.runner.leg is Leg.RETURNING
    assert done.journal
    # Without a delivery the grace runs out: no-show, saying the lock is not confirmed.
    run2 = Run(delivery(order(state=S.IN_TRANSIT)))
    run2.arrive()
    run2.feed(DOOR_OPEN)
    end = run2.feed(Tick(), 60.0 + 30.0)
    assert end.finished is not None
    assert end.finished.outcome is Outcome.NO_SHOW
    assert "not confirmed locked" in end.finished.message


# ---- navigation failures ----------------------------------------------------------------------


def test_navigation_failures_are_retried_then_fail_the_mission() -> None:
    run = Run(delivery())
    for attempt in (1, 2):
        step = run.feed(NavigationEnded(run.nav().goal, NavCode.BLOCKED, "lane blocked"), 1.0)
        assert step.finished is None
        assert not commands(step, DriveTo)  # waits nav_retry_delay_s
        assert not commands(run.feed(Tick(), 1.0), DriveTo)
        again = run.feed(Tick(), 1.0)
        assert commands(again, DriveTo) == [DriveTo(attempt + 1, SHOP)]
    end = run.feed(NavigationEnded(run.nav().goal, NavCode.TIMEOUT, "too slow"), 1.0)
    assert end.finished is not None
    assert end.finished.outcome is Outcome.FAILED
    assert end.finished.failed_leg is Leg.TO_PICKUP
    assert "after 3 attempts" in end.finished.message
    assert "TIMEOUT: too slow" in end.finished.message


def test_no_path_after_a_blocked_try_is_retried() -> None:
    """Navigation closes a blocked lane for a while: the next try's NO_PATH is that closure."""
    run = Run(delivery())
    run.feed(NavigationEnded(run.nav().goal, NavCode.BLOCKED, "no other route"), 1.0)
    assert commands(run.feed(Tick(), 2.0), DriveTo)
    step = run.feed(NavigationEnded(run.nav().goal, NavCode.NO_PATH, "lane closed"), 1.0)
    assert step.finished is None
    assert commands(run.feed(Tick(), 2.0), DriveTo)


def test_what_was_heard_before_the_mission_counts_at_its_start() -> None:
    _, cancelled = MissionRunner.start(delivery(), CONFIG, 0.0, known=[
        OrderStatusSeen("o1", S.CANCELLED, "shop")])
    assert cancelled.finished is not None
    assert cancelled.finished.outcome is Outcome.CANCELED
    _, held = MissionRunner.start(delivery(order(state=S.IN_TRANSIT)), CONFIG, 0.0,
                                  known=[DOOR_OPEN])
    assert not commands(held, DriveTo)  # the door is open: not yet


def test_stale_results_are_ignored_and_no_path_ends_it_after_the_retries() -> None:
    run = Run(delivery())
    assert run.feed(NavigationEnded(99, NavCode.NO_PATH)).finished is None  # not our goal
    for _ in range(2):
        assert run.feed(NavigationEnded(run.nav().goal, NavCode.NO_PATH, "unknown")
                        ).finished is None
        run.feed(Tick(), 2.0)
    end = run.feed(NavigationEnded(run.nav().goal, NavCode.NO_PATH, "unknown waypoint"))
    assert end.finished is not None
    assert end.finished.outcome is Outcome.FAILED
    assert "NO_PATH: unknown waypoint" in end.finished.message


# ---- cancel at each leg -----------------------------------------------------------------------


def test_cancel_before_loading_stops_the_robot() -> None:
    for legs_done in (0, 1):  # during to_pickup, during awaiting_load (nothing inside)
        run = Run(delivery())
        if legs_done:
            run.arrive()
            run.feed(OPEN_FOR_LOADING)
        goal = run.nav().goal
        end = run.feed(CancelRequested("shop cancelled"))
        assert end.finished is not None
        assert end.finished.outcome is Outcome.CANCELED
        assert "shop cancelled" in end.finished.message
        assert (StopNavigation(goal) in end.commands) == (legs_done == 0)
        assert not commands(end, DriveTo)


def test_cancel_with_goods_inside_at_the_shop_ends_there() -> None:
    run = Run(delivery())
    run.arrive()
    run.feed(CompartmentSeen(HandoffState.LOCKED_LOADED, LockState.LOCKED, True,
                             Occupancy.OCCUPIED, "o1"))  # loaded, not yet confirmed
    end = run.feed(CancelRequested("operator"))
    assert end.finished is not None
    assert end.finished.outcome is Outcome.CANCELED
    assert "robot is at the shop (shop_bakery)" in end.finished.message
    assert not commands(end, DriveTo)


@pytest.mark.parametrize("leg", [Leg.TO_DROPOFF, Leg.HANDOFF])
def test_cancel_with_goods_on_board_drives_back_to_the_shop(leg: Leg) -> None:
    run = Run(delivery())
    run.arrive()
    run.load()
    if leg is Leg.HANDOFF:
        run.arrive()
    driving = run.runner.leg is Leg.TO_DROPOFF
    goal = run.nav().goal
    step = run.feed(CancelRequested("address wrong"))
    assert step.journal
    assert step.finished is None
    assert (StopNavigation(goal) in step.commands) == driving
    back = commands(step, DriveTo)
    assert back == [DriveTo(goal + 1, SHOP)]
    assert (run.runner.leg, run.runner.mode) == (Leg.RETURNING, RobotMode.RETURNING)
    assert run.runner.order_ids == ["o1"]  # the goods are still on board
    assert run.feed(CancelRequested("again")).commands == ()  # one cancel is enough
    end = run.arrive()
    assert end.finished is not None
    assert end.finished.outcome is Outcome.CANCELED
    assert "back at the shop (shop_bakery), locked" in end.finished.message
    assert end.finished.delivered == ()


def test_cancel_after_delivery_or_of_a_charge_just_stops() -> None:
    run = Run(delivery(order(state=S.IN_TRANSIT)))
    run.arrive()
    run.feed(HandoffEventSeen("delivered", "o1"))
    end = run.feed(CancelRequested())
    assert end.finished is not None
    assert (end.finished.outcome, end.finished.delivered) == (Outcome.CANCELED, ("o1",))
    assert not commands(end, DriveTo)


def test_the_coordinator_giving_up_on_the_order_counts_as_a_cancel() -> None:
    run = Run(delivery())
    run.arrive()
    run.load()
    step = run.feed(OrderStatusSeen("o1", S.RETURNING, "no_show"))
    assert commands(step, DriveTo)[-1] == DriveTo(run.nav().goal, SHOP)
    assert run.runner.cancelling
    run2 = Run(delivery())
    end = run2.feed(OrderStatusSeen("o1", S.CANCELLED, "by bakery"))
    assert end.finished is not None
    assert "o1 is cancelled on the coordinator: by bakery" in end.finished.message
    assert Run(delivery()).feed(OrderStatusSeen("other", S.CANCELLED)).finished is None


def test_failed_drive_back_to_the_shop_is_still_a_cancel_with_a_reason() -> None:
    run = Run(delivery(order(state=S.IN_TRANSIT)), config=replace(CONFIG, nav_retries=0))
    run.feed(CancelRequested("operator"))
    end = run.feed(NavigationEnded(run.nav().goal, NavCode.NO_PATH, "closed"))
    assert end.finished is not None
    assert end.finished.outcome is Outcome.CANCELED
    assert "could not get the goods back" in end.finished.message


# ---- the compartment's order ------------------------------------------------------------------


def test_handoff_assignment_is_retried_when_unavailable_and_fails_when_refused() -> None:
    run = Run(delivery())
    run.feed(HandoffAssigned("o1", False, "unavailable", "no handoff/assign service"))
    assert not commands(run.feed(Tick(), 1.0), AssignCompartment)
    assert commands(run.feed(Tick(), 1.0), AssignCompartment)
    end = run.feed(HandoffAssigned("o1", False, "goods_on_board", "order o9 inside"))
    assert end.finished is not None
    assert end.finished.outcome is Outcome.FAILED
    assert "goods_on_board" in end.finished.message


# ---- return and charge missions ---------------------------------------------------------------


def test_return_mission_drives_back_with_its_goods_and_at_the_goal_ends_at_once() -> None:
    spec = MissionSpec("m1-return", MissionKind.RETURN, (order(state=S.RETURNING),), "", "",
                       SHOP, 0.0, 0.0)
    run = Run(spec)
    assert commands(run.steps[0], AssignCompartment)[0].shop_waypoint == SHOP  # type: ignore
    assert run.runner.order_ids == ["o1"]
    assert run.runner.mode is RobotMode.RETURNING
    end = run.arrive()
    assert end.finished is not None
    assert end.finished.outcome is Outcome.SUCCEEDED
    # Sent while already at the shop (a cancelled delivery ended there): done at once.
    _, step = MissionRunner.start(spec, CONFIG, 50.0, current_waypoint=SHOP)
    assert step.finished is not None
    assert step.finished.outcome is Outcome.SUCCEEDED
    assert not commands(step, DriveTo)


def test_charge_mission_waits_for_the_target_level() -> None:
    spec = MissionSpec("c1", MissionKind.CHARGE, (), "", "", "charger_1", 0.0, 0.0)
    run = Run(spec)
    assert not commands(run.steps[0], AssignCompartment)
    run.arrive()
    assert run.runner.mode is RobotMode.CHARGING
    run.feed(BatterySeen(0.5, True), 30.0)  # charging: no start timeout
    assert run.runner.finished is None
    end = run.feed(BatterySeen(0.8, True), 100.0)
    assert end.finished is not None
    assert end.finished.outcome is Outcome.SUCCEEDED


def test_charge_mission_fails_when_not_charging() -> None:
    run = Run(MissionSpec("c1", MissionKind.CHARGE, (), "", "", "charger_1", 0.0, 0.0))
    run.arrive()
    run.feed(BatterySeen(0.3, False), 19.0)
    end = run.feed(Tick(), 1.0)
    assert end.finished is not None
    assert end.finished.outcome is Outcome.FAILED
    assert "not charging at charger_1" in end.finished.message


# ---- restart: journal checkpoint and resume decisions ----------------------------------------


def checkpoint_at(leg: Leg, *, now: float = 0.0, **events: object) -> Checkpoint:
    """The checkpoint of a delivery that has just entered `leg`."""
    run = Run(delivery(), now=now)
    if leg is Leg.TO_PICKUP:
        return run.runner.checkpoint
    run.arrive(dt=0.0)
    if leg is Leg.AWAITING_LOAD:
        return run.runner.checkpoint
    run.load()
    if leg is Leg.TO_DROPOFF:
        return run.runner.checkpoint
    run.arrive(dt=0.0)
    if leg is Leg.HANDOFF:
        return run.runner.checkpoint
    run.feed(HandoffEventSeen("delivered", "o1"))
    return run.runner.checkpoint


def test_checkpoint_round_trips_through_json() -> None:
    cp = checkpoint_at(Leg.HANDOFF)
    assert Checkpoint.from_json(cp.to_json()) == cp
    cancelled = replace(cp, cancel_reason="x", outcome=Outcome.NO_SHOW, message="m")
    assert Checkpoint.from_json(cancelled.to_json()) == cancelled
    with pytest.raises(ValueError, match="not a mission checkpoint"):
        Checkpoint.from_json('{"spec": 1}')


@pytest.mark.parametrize("leg", [Leg.TO_PICKUP, Leg.AWAITING_LOAD, Leg.TO_DROPOFF, Leg.HANDOFF,
                                 Leg.RETURNING])
def test_resume_goes_on_in_the_journalled_leg(leg: Leg) -> None:
    cp = checkpoint_at(leg)
    compartment = LOADED if leg in (Leg.TO_DROPOFF, Leg.HANDOFF) else EMPTY_LOCKED
    runner, step = MissionRunner.resume(cp, CONFIG, 5.0, compartment=compartment)
    assert step.journal
    assert runner.leg is leg
    assert runner.finished is None
    navigates = commands(step, DriveTo)
    if leg in (Leg.TO_PICKUP, Leg.TO_DROPOFF, Leg.RETURNING):
        assert navigates  # drives again from wherever it is
        assert runner.current_waypoint == ""
    else:
        assert not navigates
        assert runner.current_waypoint == cp.stages[cp.index].waypoint
    assigned = [c.order_id for c in commands(step, AssignCompartment)]  # type: ignore[attr-defined]
    assert assigned == ([] if leg is Leg.RETURNING else ["o1"])


def test_resume_with_goods_inside_never_goes_back_to_the_pickup() -> None:
    runner, step = MissionRunner.resume(checkpoint_at(Leg.TO_PICKUP), CONFIG, 5.0,
                                        compartment=LOADED)
    assert runner.leg is Leg.AWAITING_LOAD
    assert not commands(step, DriveTo)
    # The shop's confirmation, if it came while we were down, lets it go on at once.
    step = runner.handle(OrderStatusSeen("o1", S.IN_TRANSIT), 6.0)
    assert runner.leg is Leg.TO_DROPOFF
    assert commands(step, DriveTo)[0].waypoint == HOUSE  # type: ignore[attr-defined]


def test_resume_at_the_handoff_after_a_delivery_while_down_returns() -> None:
    cp = checkpoint_at(Leg.HANDOFF)
    runner, step = MissionRunner.resume(cp, CONFIG, 5.0, compartment=EMPTY_LOCKED,
                                        delivered_events={"o1"})
    assert runner.leg is Leg.RETURNING
    assert runner.checkpoint.delivered == ("o1",)
    assert commands(step, DriveTo)[0].waypoint == DEPOT  # type: ignore[attr-defined]
    # Even when the event has left the history, an emptied compartment means taken.
    runner2, _ = MissionRunner.resume(cp, CONFIG, 5.0, compartment=EMPTY_LOCKED)
    assert runner2.leg is Leg.RETURNING


def test_resume_before_the_dropoff_with_an_empty_compartment_fails() -> None:
    runner, step = MissionRunner.resume(checkpoint_at(Leg.TO_DROPOFF), CONFIG, 5.0,
                                        compartment=EMPTY_LOCKED)
    assert step.finished is not None
    assert step.finished.outcome is Outcome.FAILED
    assert "goods are missing" in step.finished.message


def test_resume_keeps_deadlines_and_cancel_plans() -> None:
    cp = checkpoint_at(Leg.HANDOFF, now=100.0)
    runner, _ = MissionRunner.resume(cp, CONFIG, 150.0, compartment=LOADED)
    assert runner.deadline() == pytest.approx(cp.stage_started_at + 60.0)
    end = runner.handle(Tick(), cp.stage_started_at + 60.0)
    assert end.finished is not None
    assert end.finished.outcome is Outcome.NO_SHOW
    # A cancel with goods on board is in the checkpoint: a restart keeps driving back.
    run = Run(delivery(order(state=S.IN_TRANSIT)))
    run.feed(CancelRequested("operator"))
    resumed, step = MissionRunner.resume(run.runner.checkpoint, CONFIG, 9.0, compartment=LOADED)
    assert resumed.cancelling
    assert commands(step, DriveTo)[0].waypoint == SHOP  # type: ignore[attr-defined]
    end = resumed.handle(NavigationEnded(commands(step, DriveTo)[0].goal,  # type: ignore
                                         NavCode.SUCCEEDED), 20.0)
    assert end.finished is not None
    assert end.finished.outcome is Outcome.CANCELED


def test_a_finished_checkpoint_cannot_be_resumed() -> None:
    cp = replace(checkpoint_at(Leg.TO_PICKUP), outcome=Outcome.SUCCEEDED)
    with pytest.raises(ValueError, match="already finished"):
        MissionRunner.resume(cp, CONFIG, 0.0, compartment=None)


def test_time_never_runs_backwards_inside_the_runner() -> None:
    run = Run(delivery(), now=50.0)
    run.arrive(dt=0.0)
    run.runner.handle(Tick(), 10.0)  # an older clock is ignored
    assert run.runner.handle(Tick(), float("nan")).finished is None
    assert run.runner.handle(Tick(), 149.9).finished is None
    assert run.runner.handle(Tick(), 150.0).finished is not None

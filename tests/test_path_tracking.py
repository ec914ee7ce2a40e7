"""The built-in navigator on the town world: a unicycle integrated here stands in for the robot.

No simulator and no sleeps: each test steps `Navigator.step(pose, t)` at 20 Hz on a simulated
clock and integrates the returned (v, w) into the next pose, so runs are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from shapely.geometry import LineString, Point

from delivery_robot.path_tracking import (
    STOP,
    Navigator,
    NavigatorParams,
    NavStep,
    Phase,
    ProgressMonitor,
    TrackerParams,
    signal_crossing_allowed,
    wrap_angle,
)
from delivery_robot.route_graph import RouteGraph, load_route_graph
from delivery_robot.route_planner import NavCode, Plan, Pose2D, RoutePlanner

TOWN = Path(__file__).resolve().parents[1] / "config" / "worlds" / "town.yaml"
DT = 0.05
CROSSWALK = "main_street_crosswalk"


@dataclass(frozen=True)
class Tick:
    t: float
    pose: Pose2D  # where the robot was when the command was computed
    step: NavStep


@pytest.fixture(scope="module")
def route() -> RouteGraph:
    return load_route_graph(TOWN)


@pytest.fixture
def planner(route: RouteGraph) -> RoutePlanner:
    return RoutePlanner(route)  # fresh per test: closures must not leak between tests


def drive(
    nav: Navigator,
    pose: Pose2D,
    t: float,
    *,
    until: float = 400.0,
    blocked: Callable[[Pose2D], bool] | None = None,
    teleport: Callable[[float, Pose2D], Pose2D] | None = None,
    dt: float = DT,
) -> tuple[list[Tick], Pose2D]:
    """Step the navigator and a unicycle until done; `blocked(p)` keeps the robot out of p."""
    ticks: list[Tick] = []
    while nav.active and t < until:
        if teleport is not None:
            pose = teleport(t, pose)
        step = nav.step(pose, t)
        ticks.append(Tick(t, pose, step))
        v, w = step.cmd
        x, y, yaw = pose
        nxt = Pose2D(x + v * math.cos(yaw) * dt, y + v * math.sin(yaw) * dt,
                     wrap_angle(yaw + w * dt))
        if blocked is not None and blocked(nxt):
            nxt = Pose2D(x, y, nxt.yaw)  # pushing against an obstacle: only turning works
        pose = nxt
        t += dt
    return ticks, pose


def at(route: RouteGraph, name: str, yaw: float | None = None) -> Pose2D:
    w = route.waypoint(name)
    heading = w.yaw if yaw is None else yaw
    return Pose2D(w.x, w.y, 0.0 if heading is None else heading)


def segment_limit(plan: Plan, tick: Tick) -> float:
    s = plan.length - tick.step.feedback.distance_remaining
    return plan.segments[plan.segment_at(s)].speed_limit


# -- a full delivery leg -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def delivery(route: RouteGraph) -> tuple[Navigator, list[Tick], Pose2D]:
    """depot -> house_s3 across Main street at the default signal (red from t = 25 s to 60 s)."""
    nav = Navigator(RoutePlanner(route))
    status = nav.start("house_s3", at(route, "depot"), 0.0)
    assert status.code is None
    ticks, pose = drive(nav, at(route, "depot"), 0.0)
    return nav, ticks, pose


def test_delivery_reaches_the_goal_within_tolerance(
    route: RouteGraph, delivery: tuple[Navigator, list[Tick], Pose2D]
) -> None:
    nav, ticks, pose = delivery
    assert nav.status.code is NavCode.SUCCEEDED, nav.status
    assert ticks[-1].step.cmd == STOP
    goal = route.waypoint("house_s3")
    assert goal.yaw is not None
    assert math.hypot(pose.x - goal.x, pose.y - goal.y) <= 0.15
    assert abs(wrap_angle(pose.yaw - goal.yaw)) <= 0.2
    plan = nav.plan
    assert plan is not None
    assert nav.feedback.distance_travelled == pytest.approx(plan.length, rel=0.05)
    assert nav.feedback.eta_s == 0.0
    # driving time plus the wait at the red light, not much more
    assert ticks[-1].t < plan.eta_s + 35.0 + 15.0


def test_delivery_tracks_the_lanes_closely(
    route: RouteGraph, delivery: tuple[Navigator, list[Tick], Pose2D]
) -> None:
    nav, ticks, _ = delivery
    plan = nav.plan
    assert plan is not None
    lanes = LineString([plan.start] + [pt for seg in plan.segments for pt in seg.points[1:]])
    moving = [tick for tick in ticks if tick.step.cmd.linear > 0.05]
    errors = sorted(lanes.distance(Point(tick.pose.x, tick.pose.y)) for tick in moving)
    assert errors[int(0.95 * len(errors))] <= 0.06
    # corners are rounded within corner_deviation (0.1 m), not cut by the lookahead
    assert errors[-1] <= nav.tracker.params.corner_deviation + 0.03
    fence = route.geofence.buffer(0.05)
    assert all(fence.covers(Point(tick.pose.x, tick.pose.y)) for tick in ticks)


def test_delivery_respects_speed_and_acceleration_limits(
    delivery: tuple[Navigator, list[Tick], Pose2D],
) -> None:
    nav, ticks, _ = delivery
    plan = nav.plan
    assert plan is not None
    p = nav.tracker.params
    running = [tick for tick in ticks if not tick.step.status.done]
    for tick in running:
        v, w = tick.step.cmd
        assert 0.0 <= v <= segment_limit(plan, tick) + 0.02, (tick.t, v)
        assert abs(w) <= p.max_angular_speed + 1e-9
    assert max(tick.step.cmd.linear for tick in running) == pytest.approx(1.5)
    for a, b in zip(running, running[1:], strict=False):
        dv = b.step.cmd.linear - a.step.cmd.linear
        dw = b.step.cmd.angular - a.step.cmd.angular
        assert -p.max_linear_decel * DT - 1e-9 <= dv <= p.max_linear_accel * DT + 1e-9, b.t
        assert abs(dw) <= p.max_angular_accel * DT + 1e-9, b.t


def test_delivery_slows_into_corners_and_the_goal(
    route: RouteGraph, delivery: tuple[Navigator, list[Tick], Pose2D]
) -> None:
    nav, ticks, _ = delivery
    p = nav.tracker.params
    corner = route.waypoint("walk_s_house_s3")  # 90 degrees from the sidewalk into the spur
    apex = min(ticks, key=lambda t: math.hypot(t.pose.x - corner.x, t.pose.y - corner.y))
    assert apex.step.cmd.linear <= 0.35  # on the corner's arc, from 1.5 m/s on the sidewalk
    for tick in ticks:
        remaining = tick.step.feedback.distance_remaining
        if remaining < 1.0:  # a braking profile into the goal, 75 % of the deceleration limit
            profile = math.sqrt(2.0 * 0.75 * p.max_linear_decel * remaining)
            assert tick.step.cmd.linear <= max(profile, p.min_approach_speed) + 1e-9, tick.t
        if remaining < 0.1:
            assert tick.step.cmd.linear <= 0.45, (tick.t, remaining)
    assert ticks[-2].step.cmd.linear <= p.min_approach_speed + 1e-9


def test_delivery_feedback(delivery: tuple[Navigator, list[Tick], Pose2D]) -> None:
    nav, ticks, _ = delivery
    plan = nav.plan
    assert plan is not None
    remaining = [tick.step.feedback.distance_remaining for tick in ticks]
    assert remaining[0] == pytest.approx(plan.length, abs=0.01)
    assert all(b <= a + 0.05 for a, b in zip(remaining, remaining[1:], strict=False))
    lanes: list[str] = []
    for tick in ticks[:-1]:
        lane = tick.step.feedback.current_lane
        if not lanes or lanes[-1] != lane:
            lanes.append(lane)
    assert lanes == [seg.lane_name for seg in plan.segments]
    # the first ETA already counts the red light ahead, and it stays close to the truth
    first = ticks[0].step.feedback.eta_s
    assert ticks[-1].t - 10.0 < first < ticks[-1].t
    mid = next(tick for tick in ticks if tick.t >= 30.0)  # red light ahead until t = 60 s
    assert mid.step.feedback.eta_s == pytest.approx(ticks[-1].t - mid.t, rel=0.12)


# -- crosswalk -------------------------------------------------------------------------------
def test_waits_at_the_kerb_on_red_and_never_stops_on_the_crossing(
    route: RouteGraph, planner: RoutePlanner
) -> None:
    """Green only for 2 s at t = 40 s: the robot waits at the kerb, goes, and keeps going
    when the light turns red behind it."""
    asked: list[str] = []

    def gate(zone: str, now: float) -> bool:
        asked.append(zone)
        return 40.0 <= now < 42.0

    nav = Navigator(planner, crossing_allowed=gate)
    start = Pose2D(-8.0, 5.5, 0.0)
    nav.start("house_s4", start, 0.0)
    ticks, _ = drive(nav, start, 0.0)
    assert nav.status.code is NavCode.SUCCEEDED, nav.status
    assert set(asked) == {CROSSWALK}
    zebra = next(z for z in route.zones if z.name == CROSSWALK).polygon
    kerb = route.waypoint("walk_n_crosswalk")
    waiting = [tick for tick in ticks if tick.step.status.phase is Phase.WAITING_AT_KERB]
    assert waiting
    assert waiting[0].t < 10.0
    assert waiting[-1].t == pytest.approx(40.0, abs=DT + 1e-6)  # until the light changed
    for tick in waiting:
        if tick.t > waiting[0].t + 0.2:  # arrives at creep speed, then stands still
            assert tick.step.cmd == STOP
        assert tick.step.feedback.waiting_for == CROSSWALK
        assert math.hypot(tick.pose.x - kerb.x, tick.pose.y - kerb.y) < 0.5
    on_zebra = [tick for tick in ticks if zebra.covers(Point(tick.pose.x, tick.pose.y))]
    assert on_zebra
    assert on_zebra[0].t >= 40.0  # not a centimetre onto the road before green
    assert on_zebra[-1].t > 45.0  # still crossing long after the light turned red again
    assert min(tick.step.cmd.linear for tick in on_zebra) > 0.3
    assert all(tick.step.status.code is None for tick in ticks[:-1])  # no BLOCKED while waiting


def test_signal_gate_follows_the_cycle(route: RouteGraph) -> None:
    gate = signal_crossing_allowed(route)  # town: 25 s green, 35 s red, from t = 0
    assert [gate(CROSSWALK, t) for t in (0.0, 24.9, 25.0, 59.9, 60.0)] == [
        True, True, False, False, True]
    careful = signal_crossing_allowed(route, min_green_remaining_s=10.0)
    assert careful(CROSSWALK, 14.0)
    assert not careful(CROSSWALK, 16.0)
    assert gate("an_unsignalled_crossing", 30.0)


# -- blocked, replanning, timeout ------------------------------------------------------------
def test_held_in_place_reports_blocked_on_the_current_lane(
    route: RouteGraph, planner: RoutePlanner
) -> None:
    nav = Navigator(planner, NavigatorParams(replan_on_blocked=False))
    start = Pose2D(-40.0, 5.5, 0.0)
    nav.start("shop_chicken", start, 0.0)
    ticks, _ = drive(nav, start, 0.0, blocked=lambda p: p.x > -30.0)
    assert nav.status.code is NavCode.BLOCKED
    assert nav.status.blocked_lane == "walk_n_depot_out->walk_n_bakery"
    assert "no progress of 0.5 m in 10 s on lane walk_n_depot_out->walk_n_bakery" in (
        nav.status.message)
    stuck = next(tick.t for tick in ticks if tick.pose.x > -30.0 - 0.1)
    assert stuck + 9.0 < ticks[-1].t <= stuck + 10.5
    assert ticks[-1].step.cmd == STOP
    assert planner.closures(ticks[-1].t) == []  # the caller decides what to close


def test_blocked_lane_is_closed_and_the_robot_takes_another_way(
    route: RouteGraph, planner: RoutePlanner
) -> None:
    """Blocked between the depot doors on the sidewalk: back round through the depot."""
    nav = Navigator(planner)
    start = at(route, "walk_n_depot_in", yaw=0.0)
    nav.start("shop_bakery", start, 0.0)
    plan = nav.plan
    assert plan is not None
    assert plan.waypoints[:2] == ("walk_n_depot_in", "walk_n_depot_out")

    def obstacle(p: Pose2D) -> bool:
        return -49.0 <= p.x <= -47.0 and 4.0 <= p.y <= 7.0

    ticks, pose = drive(nav, start, 0.0, blocked=obstacle)
    assert nav.status.code is NavCode.SUCCEEDED, nav.status
    assert nav.status.replans == 1
    assert nav.status.blocked_lane == "walk_n_depot_in->walk_n_depot_out"
    assert planner.is_closed("walk_n_depot_out", "walk_n_depot_in", ticks[-1].t)
    replanned = nav.plan
    assert replanned is not None
    assert "depot" in replanned.waypoints
    assert any(math.hypot(t.pose.x + 48.0, t.pose.y - 16.0) < 1.0 for t in ticks)
    goal = route.waypoint("shop_bakery")
    assert math.hypot(pose.x - goal.x, pose.y - goal.y) <= 0.15


def test_blocked_with_no_other_way_is_blocked(route: RouteGraph, planner: RoutePlanner) -> None:
    nav = Navigator(planner)
    start = Pose2D(20.0, 5.5, 0.0)
    nav.start("house_n2", start, 0.0)
    ticks, _ = drive(nav, start, 0.0, blocked=lambda p: p.x > 35.0)
    assert nav.status.code is NavCode.BLOCKED
    assert "no other route" in nav.status.message
    assert nav.status.blocked_lane == "walk_n_house_n1->walk_n_house_n2"
    assert planner.is_closed("walk_n_house_n1", "walk_n_house_n2", ticks[-1].t)


def test_blocked_off_the_graph_closes_nothing(route: RouteGraph, planner: RoutePlanner) -> None:
    nav = Navigator(planner)
    start = Pose2D(-20.0, 8.0, -math.pi / 2)  # 2.5 m north of the sidewalk lane
    nav.start("shop_chicken", start, 0.0)
    plan = nav.plan
    assert plan is not None
    assert plan.segments[0].lane is None
    ticks, _ = drive(nav, start, 0.0, blocked=lambda p: p.y < 7.0)
    assert nav.status.code is NavCode.BLOCKED
    assert "on the way to or from the route graph" in nav.status.message
    assert (nav.status.blocked_lane, nav.status.replans) == ("", 0)
    assert planner.closures(ticks[-1].t) == []


def test_overall_timeout(route: RouteGraph, planner: RoutePlanner) -> None:
    nav = Navigator(planner)
    nav.start("house_s8", at(route, "depot"), 100.0, timeout_s=20.0)
    ticks, _ = drive(nav, at(route, "depot"), 100.0)
    assert nav.status.code is NavCode.TIMEOUT
    assert "after 20 s" in nav.status.message
    assert ticks[-1].t == pytest.approx(120.0, abs=DT + 1e-6)
    assert ticks[-1].step.cmd == STOP


def test_automatic_deadline_from_the_eta(route: RouteGraph, planner: RoutePlanner) -> None:
    """With the progress monitor out of the way, a robot that never arrives still times out."""
    params = NavigatorParams(progress_timeout_s=1e6, timeout_factor=1.0, timeout_margin_s=10.0)
    nav = Navigator(planner, params)
    start = Pose2D(-40.0, 5.5, 0.0)
    nav.start("shop_bakery", start, 0.0)
    plan = nav.plan
    assert plan is not None
    ticks, _ = drive(nav, start, 0.0, blocked=lambda p: True)
    assert nav.status.code is NavCode.TIMEOUT
    assert ticks[-1].t == pytest.approx(plan.eta_s + 10.0, abs=0.1)


# -- starting and finishing ------------------------------------------------------------------
def test_rotates_in_place_when_facing_away(route: RouteGraph, planner: RoutePlanner) -> None:
    nav = Navigator(planner)
    start = Pose2D(-20.0, 5.5, math.pi)  # the route runs east
    nav.start("shop_chicken", start, 0.0)
    ticks, _ = drive(nav, start, 0.0)
    assert nav.status.code is NavCode.SUCCEEDED
    turning = [tick for tick in ticks if tick.step.status.phase is Phase.ROTATING]
    assert turning[0].t == 0.0
    assert len(turning) > 20
    for tick in turning:
        assert tick.step.cmd.linear == 0.0
        assert math.hypot(tick.pose.x + 20.0, tick.pose.y - 5.5) < 1e-9
    assert abs(wrap_angle(turning[-1].pose.yaw)) < 0.785


def test_turns_to_the_goal_heading_after_arriving(
    route: RouteGraph, planner: RoutePlanner
) -> None:
    nav = Navigator(planner)
    start = Pose2D(-20.0, 5.5, 0.0)
    nav.start((-12.5, 5.8, math.pi), start, 0.0)
    ticks, pose = drive(nav, start, 0.0)
    assert nav.status.code is NavCode.SUCCEEDED
    assert any(tick.step.status.phase is Phase.ALIGNING for tick in ticks)
    assert math.hypot(pose.x + 12.5, pose.y - 5.8) <= 0.15
    assert abs(wrap_angle(pose.yaw - math.pi)) <= 0.2


def test_goal_max_speed_caps_every_command(route: RouteGraph, planner: RoutePlanner) -> None:
    nav = Navigator(planner)
    start = Pose2D(-40.0, 5.5, 0.0)
    nav.start("shop_pharmacy", start, 0.0, max_speed=0.8)
    ticks, _ = drive(nav, start, 0.0)
    assert nav.status.code is NavCode.SUCCEEDED
    assert max(tick.step.cmd.linear for tick in ticks) == pytest.approx(0.8)


def test_knocked_off_the_plan_replans(route: RouteGraph, planner: RoutePlanner) -> None:
    nav = Navigator(planner)
    start = Pose2D(-40.0, 5.5, 0.0)
    nav.start("shop_pharmacy", start, 0.0)

    def shove(t: float, p: Pose2D) -> Pose2D:
        return Pose2D(p.x, 8.0, p.yaw) if abs(t - 5.0) < DT / 2 else p

    ticks, pose = drive(nav, start, 0.0, teleport=shove)
    assert nav.status.code is NavCode.SUCCEEDED
    assert nav.status.replans == 1
    replan = next(tick for tick in ticks if tick.step.status.replans == 1)
    assert replan.t == pytest.approx(5.0, abs=1e-6)
    assert "2.5 m off the plan; replanned" in replan.step.status.message
    assert replan.step.cmd == STOP
    goal = route.waypoint("shop_pharmacy")
    assert math.hypot(pose.x - goal.x, pose.y - goal.y) <= 0.15


def test_no_path_and_cancel(route: RouteGraph, planner: RoutePlanner) -> None:
    nav = Navigator(planner)
    status = nav.start("nowhere", at(route, "depot"), 0.0)
    assert (status.code, status.done) == (NavCode.NO_PATH, True)
    assert "no waypoint 'nowhere'" in status.message
    assert nav.step(at(route, "depot"), 0.1).cmd == STOP
    assert nav.start((20.0, 0.0), at(route, "depot"), 0.0).code is NavCode.NO_PATH

    nav.start("house_s8", at(route, "depot"), 0.0)
    ticks, _ = drive(nav, at(route, "depot"), 0.0, until=5.0)
    assert nav.active
    assert ticks[-1].step.cmd != STOP
    assert nav.cancel().code is NavCode.CANCELED
    after = nav.step(at(route, "depot"), 5.05)
    assert (after.cmd, after.status.code) == (STOP, NavCode.CANCELED)
    assert nav.cancel().code is NavCode.CANCELED  # idempotent
    assert nav.tracker.last_cmd == STOP  # a new goal starts from standstill


def test_lost_localisation_fails(route: RouteGraph, planner: RoutePlanner) -> None:
    nav = Navigator(planner)
    nav.start("house_s8", at(route, "depot"), 0.0)
    step = nav.step(Pose2D(math.nan, 0.0, 0.0), 0.05)
    assert (step.cmd, step.status.code) == (STOP, NavCode.FAILED)


# -- building blocks -------------------------------------------------------------------------
def test_progress_monitor() -> None:
    monitor = ProgressMonitor(distance=0.5, timeout_s=10.0)
    monitor.reset(0.0, 0.0)
    assert not monitor.stalled(0.4, 9.0)
    assert not monitor.stalled(0.6, 9.5)  # progress: the clock restarts
    assert not monitor.stalled(1.0, 19.5)
    assert monitor.stalled(1.0, 19.6)
    with pytest.raises(ValueError, match="must be > 0"):
        ProgressMonitor(0.0, 1.0)


def test_tracker_params_are_checked() -> None:
    with pytest.raises(ValueError, match="max_linear_accel"):
        TrackerParams(max_linear_accel=0.0)
    with pytest.raises(ValueError, match="min_lookahead"):
        TrackerParams(min_lookahead=3.0)



def test_corner_deviation_bounds_how_far_a_corner_is_rounded(
    route: RouteGraph, planner: RoutePlanner
) -> None:
    """The sidewalk into the chicken shop's 2.5 m spur is a 90-degree corner: the robot stays
    within corner_deviation of the lanes there, and a wider arc lets it through faster."""
    results = {}
    for deviation in (0.05, 0.25):
        nav = Navigator(planner, tracker_params=TrackerParams(corner_deviation=deviation))
        start = Pose2D(-20.0, 5.5, 0.0)
        nav.start("shop_chicken", start, 0.0)
        plan = nav.plan
        assert plan is not None
        lanes = LineString([plan.start] + [pt for seg in plan.segments for pt in seg.points[1:]])
        ticks, pose = drive(nav, start, 0.0)
        assert nav.status.code is NavCode.SUCCEEDED
        worst = max(lanes.distance(Point(t.pose.x, t.pose.y)) for t in ticks)
        assert worst <= deviation + 0.02, (deviation, worst)
        corner = route.waypoint("walk_n_chicken")
        at_corner = [t for t in ticks if math.hypot(t.pose.x - corner.x,
                                                    t.pose.y - corner.y) < 1.0]
        results[deviation] = (worst, ticks[-1].t, min(t.step.cmd.linear for t in at_corner))
    (tight, tight_t, tight_v), (wide, wide_t, wide_v) = results[0.05], results[0.25]
    assert wide > 2.0 * tight  # the arc really is the parameter's
    assert wide_v > tight_v
    assert wide_t < tight_t

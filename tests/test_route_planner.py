"""Route planning: fastest routes, one-way lanes, closures, geofence, crosswalks, pose goals.

The mini world (metres, built in memory, no SDF needed for planning):

    n1 (0,10) ====== 2.0 (slow zone 1.0 for x 5..15) ====== n2 (20,10)    d (30,10) -x-> e (36,10)
     |2.0                                                    |2.0  ^ one-way   lane d->e leaves
    a (0,0) ------- 0.5 [crosswalk x 8..12] ------------- b (20,0) -> c (30,0) -- f (36,0)   the
     ^ one-way from spur (-1,5)                   island (10,5): no lanes     fence (slot x 31..32,
                                                                                y >= 2); f -> out
The geofence is x -2..42, y -2..12 minus a slot x 31..32, y 2..12. (50,0) is outside it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from shapely.geometry import LineString

from delivery_robot.route_graph import (
    RouteGraph,
    check_route_graph,
    load_route_graph,
    parse_route_graph,
)
from delivery_robot.route_planner import (
    NavCode,
    NoPath,
    Plan,
    PlannerParams,
    Pose2D,
    RoutePlanner,
)

TOWN = Path(__file__).resolve().parents[1] / "config" / "worlds" / "town.yaml"


def mini_data() -> dict[str, Any]:
    wp = [("a", 0, 0), ("b", 20, 0), ("c", 30, 0), ("d", 30, 10), ("n1", 0, 10), ("n2", 20, 10),
          ("e", 36, 10), ("f", 36, 0), ("island", 10, 5), ("spur", -1, 5), ("out", 50, 0)]
    lanes = [
        ("a", "b", 0.5, False), ("a", "n1", 2.0, False), ("n1", "n2", 2.0, False),
        ("n2", "b", 2.0, False), ("b", "c", 1.0, True), ("c", "d", 1.0, True),
        ("d", "n2", 1.0, True), ("c", "f", 1.0, False), ("f", "e", 1.0, False),
        ("d", "e", 4.0, False), ("spur", "a", 1.0, True), ("f", "out", 1.0, False),
    ]
    return {
        "world": "mini",
        "sdf": "mini.sdf",
        "waypoints": [{"name": n, "kind": "depot" if n == "a" else "junction", "x": x, "y": y}
                      for n, x, y in wp],
        "lanes": [{"from": a, "to": b, "speed_limit": v, "one_way": ow} for a, b, v, ow in lanes],
        "zones": [
            {"name": "fence", "kind": "geofence",
             "polygon": [[-2, -2], [42, -2], [42, 12], [32, 12], [32, 2], [31, 2], [31, 12],
                         [-2, 12]]},
            {"name": "zebra", "kind": "crosswalk", "polygon": [[8, -1], [12, -1], [12, 1], [8, 1]],
             "speed_limit": 0.5, "green_s": 20.0, "red_s": 40.0, "offset_s": 0.0},
            {"name": "market", "kind": "slow_zone",
             "polygon": [[5, 9], [15, 9], [15, 11], [5, 11]], "speed_limit": 1.0},
        ],
    }


def make_route(data: dict[str, Any] | None = None) -> RouteGraph:
    route, problems = parse_route_graph(data or mini_data(), source="mini")
    assert route is not None
    assert problems == []
    return route


@pytest.fixture
def planner() -> RoutePlanner:
    return RoutePlanner(make_route())


def ok(result: Plan | NoPath) -> Plan:
    assert isinstance(result, Plan), result
    return result


def no_path(result: Plan | NoPath) -> NoPath:
    assert isinstance(result, NoPath), result
    assert result.code is NavCode.NO_PATH
    return result


def assert_consistent(plan: Plan, route: RouteGraph) -> None:
    """Segments are contiguous, lengths add up, and nothing leaves the geofence."""
    fence = route.geofence
    s = 0.0
    for prev, seg in zip((None, *plan.segments), plan.segments, strict=False):
        if prev is not None:
            assert prev.points[-1] == pytest.approx(seg.points[0])
        assert seg.s_start == pytest.approx(s)
        assert LineString(seg.points).length == pytest.approx(seg.length)
        assert fence.covers(LineString(seg.points)), seg
        s += seg.length
    assert plan.length == pytest.approx(s)
    assert plan.eta_s == pytest.approx(sum(seg.length / seg.speed_limit for seg in plan.segments))
    if plan.segments:
        assert plan.segments[0].points[0] == pytest.approx(plan.start)
        assert plan.segments[-1].points[-1] == pytest.approx(plan.goal)


def point_at(plan: Plan, s: float) -> tuple[float, float]:
    seg = plan.segments[plan.segment_at(s)]
    (ax, ay), (bx, by) = seg.points
    t = (s - seg.s_start) / seg.length
    return ax + t * (bx - ax), ay + t * (by - ay)


# -- fastest route ---------------------------------------------------------------------------
def test_fastest_route_beats_the_shorter_slow_lane(planner: RoutePlanner) -> None:
    plan = ok(planner.plan("a", "b", 0.0))
    assert plan.waypoints == ("a", "n1", "n2", "b")
    assert plan.length == pytest.approx(40.0)  # the direct lane is 20 m, but at 0.5 m/s
    # n1 -> n2 runs through the 1.0 m/s slow zone: 5 s + 20 s + 5 s instead of 40 s direct
    assert [seg.speed_limit for seg in plan.segments] == [2.0, 1.0, 2.0]
    assert plan.eta_s == pytest.approx(30.0)
    assert [seg.lane for seg in plan.segments] == [("a", "n1"), ("n1", "n2"), ("n2", "b")]
    assert plan.segments[1].lane_name == "n1->n2"
    assert plan.goal_name == "b"
    assert_consistent(plan, planner.route)


def test_a_zone_cap_can_make_the_direct_lane_faster() -> None:
    data = mini_data()
    data["zones"][2]["speed_limit"] = 0.4  # 5 + 50 + 5 s around, 40 s direct
    plan = ok(RoutePlanner(make_route(data)).plan("a", "b", 0.0))
    assert plan.waypoints == ("a", "b")
    assert plan.eta_s == pytest.approx(40.0)


def test_same_start_and_goal_is_an_empty_plan(planner: RoutePlanner) -> None:
    plan = ok(planner.plan("b", "b", 0.0))
    assert plan.segments == ()
    assert plan.length == 0.0
    assert plan.goal == (20.0, 0.0)


def test_waypoint_plans_are_cached_until_closures_change(planner: RoutePlanner) -> None:
    first = planner.plan("a", "b", 0.0)
    assert planner.plan("a", "b", 1.0) is first
    planner.close_lane("n1", "n2", 2.0, reopen_after_s=10.0)
    assert planner.plan("a", "b", 3.0) is not first


# -- one-way lanes ---------------------------------------------------------------------------
def test_one_way_lanes_are_honoured(planner: RoutePlanner) -> None:
    assert ok(planner.plan("b", "c", 0.0)).waypoints == ("b", "c")
    back = ok(planner.plan("c", "b", 0.0))  # b -> c is one-way: round by d and n2
    assert back.waypoints == ("c", "d", "n2", "b")
    assert_consistent(back, planner.route)


def test_a_waypoint_behind_one_way_lanes_is_no_path(planner: RoutePlanner) -> None:
    assert ok(planner.plan("spur", "a", 0.0)).waypoints == ("spur", "a")
    result = no_path(planner.plan("a", "spur", 0.0))
    assert "no route from 'a' to 'spur'" in result.message
    assert "one-way" in result.message


# -- closures --------------------------------------------------------------------------------
def test_a_closed_lane_is_avoided_and_reopens_after_the_timeout(planner: RoutePlanner) -> None:
    closure = planner.close_lane("n1", "n2", now=100.0, reopen_after_s=60.0)
    assert (closure.name, closure.reopen_at) == ("n1->n2", 160.0)
    assert ok(planner.plan("a", "b", 110.0)).waypoints == ("a", "b")  # the slow lane now
    # a two-way lane closes both ways: the obstruction is physical
    assert "n2" not in ok(planner.plan("b", "a", 110.0)).waypoints
    assert planner.is_closed("n2", "n1", 159.9)
    assert [c.name for c in planner.closures(159.9)] == ["n1->n2"]
    assert ok(planner.plan("a", "b", 160.0)).waypoints == ("a", "n1", "n2", "b")
    assert planner.closures(160.0) == []
    assert not planner.is_closed("n1", "n2", 160.0)


def test_reopen_lane_by_hand(planner: RoutePlanner) -> None:
    planner.close_lane("a", "n1", 0.0)  # default duration from the params
    assert planner.closures(0.0)[0].reopen_at == PlannerParams().reopen_after_s
    assert "n1" not in ok(planner.plan("a", "b", 1.0)).waypoints
    assert planner.reopen_lane("n1", "a")  # either direction names the lane
    assert not planner.reopen_lane("n1", "a")
    assert ok(planner.plan("a", "b", 2.0)).waypoints == ("a", "n1", "n2", "b")


def test_closing_an_unknown_lane_is_a_caller_error(planner: RoutePlanner) -> None:
    with pytest.raises(KeyError, match="no lane 'a' -> 'c'"):
        planner.close_lane("a", "c", 0.0)
    with pytest.raises(ValueError, match="reopen_after_s"):
        planner.close_lane("a", "b", 0.0, reopen_after_s=0.0)


def test_no_route_while_closed_names_the_closures(planner: RoutePlanner) -> None:
    planner.close_lane("b", "c", 0.0, reopen_after_s=30.0)
    result = no_path(planner.plan("a", "c", 10.0))
    assert "b->c (until t=30 s)" in result.message
    assert ok(planner.plan("a", "c", 30.0)).waypoints[-2:] == ("b", "c")


def test_a_pose_goal_on_a_closed_lane_joins_the_next_nearest_lane(planner: RoutePlanner) -> None:
    """(18.3, 9.6) is 0.4 m from n1-n2 and 1.7 m from n2-b: with n1-n2 closed it joins n2-b."""
    assert ok(planner.plan("a", (18.3, 9.6), 0.0)).segments[-1].points[0] == (18.3, 10.0)
    planner.close_lane("n1", "n2", 0.0)
    plan = ok(planner.plan("a", (18.3, 9.6), 1.0))
    assert plan.segments[-1].points == ((20.0, 9.6), (18.3, 9.6))
    assert plan.waypoints == ("a", "b")
    # nothing else within max_join_distance (5 m) of (10, 10.3): no way there while closed
    result = no_path(planner.plan("a", (10.0, 10.3), 1.0))
    assert "while these lanes are closed: n1->n2" in result.message


def test_a_robot_on_a_closed_lane_may_turn_back(planner: RoutePlanner) -> None:
    """Blocked half-way n1 -> n2: the replan leaves the lane back towards n1, not onwards."""
    planner.close_lane("n1", "n2", 0.0)
    plan = ok(planner.plan(Pose2D(10.0, 10.0, 0.0), "b", 1.0))
    assert plan.segments[0].lane == ("n2", "n1")
    assert plan.waypoints == ("n1", "a", "b")
    assert_consistent(plan, planner.route)


# -- geofence --------------------------------------------------------------------------------
def test_a_lane_leaving_the_geofence_is_never_used(planner: RoutePlanner) -> None:
    route = planner.route
    assert route.shortest_path("d", "e") == ["d", "e"]  # the raw graph would cut the slot
    assert planner.refused_lanes == [("d", "e"), ("e", "d"), ("f", "out"), ("out", "f")]
    plan = ok(planner.plan("d", "e", 0.0))
    assert plan.waypoints == ("d", "n2", "b", "c", "f", "e")
    assert_consistent(plan, route)


def test_waypoint_outside_the_geofence_is_no_path(planner: RoutePlanner) -> None:
    assert "outside the geofence" in no_path(planner.plan("a", "out", 0.0)).message
    assert "outside the geofence" in no_path(planner.plan("out", "a", 0.0)).message


def test_pose_goal_outside_the_geofence_is_no_path(planner: RoutePlanner) -> None:
    for goal in [(31.5, 5.0), (20.0, 13.0), (45.0, 0.0)]:
        result = no_path(planner.plan("a", goal, 0.0))
        assert "outside the geofence" in result.message


def test_a_pose_joins_the_graph_only_inside_the_fence(planner: RoutePlanner) -> None:
    """(32.5, 7) is 2.5 m from lane c-d, but across the slot: it joins f-e (3.5 m) instead."""
    plan = ok(planner.plan("a", (32.5, 7.0), 0.0))
    leave = plan.segments[-1]
    assert leave.lane is None
    assert leave.points == ((36.0, 7.0), (32.5, 7.0))
    assert leave.speed_limit == PlannerParams().off_graph_speed
    assert_consistent(plan, planner.route)


def test_start_slightly_outside_the_fence_is_tolerated(planner: RoutePlanner) -> None:
    plan = ok(planner.plan((-2.3, 0.0), "b", 0.0))  # 0.3 m out: localisation noise
    assert plan.start == (-2.3, 0.0)
    result = no_path(planner.plan((-3.0, 0.0), "b", 0.0))
    assert "robot at (-3.00, 0.00) is outside the geofence" in result.message


# -- crosswalks ------------------------------------------------------------------------------
def test_crosswalk_is_flagged_with_a_kerb_stop_before_it(planner: RoutePlanner) -> None:
    planner.close_lane("n1", "n2", 0.0)
    plan = ok(planner.plan("a", "b", 1.0))
    assert plan.waypoints == ("a", "b")
    (seg,) = plan.segments
    assert seg.crosswalk == "zebra"
    (crossing,) = plan.crossings
    assert crossing.zone == "zebra"
    assert crossing.signal is not None
    assert crossing.signal.red_s == 40.0
    assert (crossing.entry_s, crossing.exit_s) == pytest.approx((8.0, 12.0))
    # kerb_stop_margin (2 m) before the zebra, which starts 8 m into the lane
    assert crossing.stop_s == pytest.approx(6.0)
    assert crossing.segment == 0


def test_a_pose_goal_inside_a_crosswalk_is_no_path(planner: RoutePlanner) -> None:
    result = no_path(planner.plan("a", (10.0, 0.5), 0.0))
    assert "inside crosswalk 'zebra'" in result.message


def test_a_robot_starting_on_the_crosswalk_is_not_gated(planner: RoutePlanner) -> None:
    planner.close_lane("n1", "n2", 0.0)
    plan = ok(planner.plan(Pose2D(10.0, 0.0, 0.0), "b", 1.0))
    assert plan.crossings == ()
    assert plan.waypoints == ("b",)


# -- pose goals and starts -------------------------------------------------------------------
def test_pose_to_pose_on_the_same_lane(planner: RoutePlanner) -> None:
    plan = ok(planner.plan(Pose2D(5.0, 0.2, 0.0), (15.0, 0.3, 1.0), 0.0))
    assert plan.waypoints == ()
    assert [seg.lane for seg in plan.segments] == [None, ("a", "b"), None]
    assert plan.segments[1].points == ((5.0, 0.0), (15.0, 0.0))
    assert [seg.start for seg in plan.segments] == ["start", "", ""]
    assert plan.segments[-1].end == "goal"
    assert plan.goal_yaw == 1.0
    assert plan.goal_name == ""
    (crossing,) = plan.crossings  # entered 3 m into the partial lane: stop 1 m into it
    assert point_at(plan, crossing.stop_s) == pytest.approx((6.0, 0.0))
    assert point_at(plan, crossing.entry_s) == pytest.approx((8.0, 0.0))
    assert_consistent(plan, planner.route)


def test_pose_goal_joins_at_the_nearest_lane(planner: RoutePlanner) -> None:
    plan = ok(planner.plan("a", (10.0, 10.8), 0.0))
    assert plan.waypoints == ("a", "n1")
    assert plan.segments[-2].points == ((0.0, 10.0), (10.0, 10.0))
    assert plan.segments[-1].points == ((10.0, 10.0), (10.0, 10.8))
    # the slow zone caps the off-graph join too (0.5 m/s off-graph is already lower)
    assert plan.segments[-1].speed_limit == 0.5
    assert plan.goal_yaw is None
    assert_consistent(plan, planner.route)


def test_a_pose_on_a_waypoint_adds_no_empty_segments(planner: RoutePlanner) -> None:
    plan = ok(planner.plan(Pose2D(0.0, 0.0, 0.0), (20.0, 10.0), 0.0))
    assert plan.waypoints == ("a", "n1", "n2")
    assert all(seg.length > 0.0 for seg in plan.segments)
    assert len(plan.segments) == 2


def test_goal_waypoint_heading_is_carried(planner: RoutePlanner) -> None:
    route = load_route_graph(TOWN)
    town = RoutePlanner(route)
    plan = ok(town.plan("shop_bakery", "house_s3", 0.0))
    assert plan.goal_yaw == route.waypoint("house_s3").yaw


@pytest.mark.parametrize(
    ("start", "goal", "expected"),
    [
        ("a", "nowhere", "goal: no waypoint 'nowhere' in world 'mini'"),
        ("nowhere", "a", "start: no waypoint 'nowhere'"),
        ("a", "island", "no route from 'a' to 'island'"),
        ("a", (math.nan, 1.0), "not a finite"),
        ((math.inf, 0.0), "a", "not a finite"),
        ("a", (1.0, 2.0, 3.0, 4.0), "not a finite"),
    ],
)
def test_no_path_cases_are_typed_results(
    planner: RoutePlanner, start: Any, goal: Any, expected: str
) -> None:
    assert expected in no_path(planner.plan(start, goal, 0.0)).message


def test_a_pose_too_far_from_the_graph_is_no_path() -> None:
    planner = RoutePlanner(make_route(), PlannerParams(max_join_distance=1.0))
    result = no_path(planner.plan("a", (10.0, 11.9), 0.0))
    assert "1.9 m from the nearest lane" in result.message
    ok(planner.plan("a", (10.0, 10.9), 0.0))


def test_a_graph_without_geofence_is_refused() -> None:
    data = mini_data()
    data["zones"] = [z for z in data["zones"] if z["kind"] != "geofence"]
    with pytest.raises(ValueError, match="no geofence"):
        RoutePlanner(make_route(data))


# -- the town world ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def town() -> RoutePlanner:
    return RoutePlanner(load_route_graph(TOWN))


def test_town_delivery_crosses_at_the_signal_and_stops_at_the_kerb(town: RoutePlanner) -> None:
    plan = ok(town.plan("depot", "house_s3", 0.0))
    assert plan.waypoints[:3] == ("depot", "depot_exit_door", "walk_n_depot_out")  # one-way out
    (crossing,) = plan.crossings
    assert crossing.zone == "main_street_crosswalk"
    seg = plan.segments[crossing.segment]
    assert seg.lane == ("walk_n_crosswalk", "walk_s_crosswalk")
    assert seg.speed_limit == 1.2
    assert point_at(plan, crossing.stop_s) == pytest.approx((0.0, 5.5))  # the kerb junction
    assert point_at(plan, crossing.entry_s) == pytest.approx((0.0, 4.0))
    assert point_at(plan, crossing.exit_s) == pytest.approx((0.0, -4.0))
    back = ok(town.plan("house_s3", "depot", 0.0))
    assert back.waypoints[-3:] == ("walk_n_depot_in", "depot_entry_door", "depot")  # one-way in
    assert_consistent(plan, town.route)


def test_town_closed_crosswalk_cuts_the_south_side_off(town: RoutePlanner) -> None:
    town.close_lane("walk_n_crosswalk", "walk_s_crosswalk", 1000.0, reopen_after_s=120.0)
    try:
        result = no_path(town.plan("depot", "house_s3", 1010.0))
        assert "walk_n_crosswalk->walk_s_crosswalk" in result.message
        ok(town.plan("depot", "shop_chicken", 1010.0))  # the north side is still served
        ok(town.plan("depot", "house_s3", 1120.0))
    finally:
        town.reopen_lane("walk_n_crosswalk", "walk_s_crosswalk")


def test_town_pose_goals(town: RoutePlanner) -> None:
    plan = ok(town.plan(Pose2D(-10.0, -6.0, 0.0), (20.0, 6.0, 1.57), 0.0))
    assert "walk_s_crosswalk" in plan.waypoints
    assert len(plan.crossings) == 1
    assert_consistent(plan, town.route)
    assert "inside crosswalk" in no_path(town.plan("depot", (0.0, 0.0), 0.0)).message
    assert "outside the geofence" in no_path(town.plan("depot", (20.0, 0.0), 0.0)).message


def test_nav_codes_match_the_navigate_action() -> None:
    from delivery_interfaces.action import Navigate

    wire = {name.removeprefix("CODE_"): value
            for name, value in vars(Navigate.Result).items() if name.startswith("CODE_")}
    assert wire == {code.name: code.value for code in NavCode}


def test_planner_does_not_touch_the_shared_graph(planner: RoutePlanner) -> None:
    graph = planner.route.graph
    before = (set(graph.nodes), set(graph.edges))
    planner.close_lane("a", "n1", 0.0)
    ok(planner.plan(Pose2D(5.0, 0.2, 0.0), (15.0, 10.3), 1.0))
    ok(planner.plan(Pose2D(5.0, 0.2, 0.0), "n2", 1.0))
    assert (set(graph.nodes), set(graph.edges)) == before


# -- caches and the search against networkx ------------------------------------------------------
def test_closures_are_honoured_after_caching(planner: RoutePlanner) -> None:
    """Cached plans and cached landmark bounds never let a plan use a lane closed later, and
    a reopened lane is used again at once."""
    fast = ("a", "n1", "n2", "b")
    assert ok(planner.plan("a", "b", 0.0)).waypoints == fast  # plan and bounds for b cached
    assert ok(planner.plan("n1", "b", 0.0)).waypoints == ("n1", "n2", "b")
    planner.close_lane("n2", "b", 1.0, reopen_after_s=10.0)
    for start in ("a", "n1"):  # a cached plan (a), cached bounds with a new start (n1)
        plan = ok(planner.plan(start, "b", 2.0))
        assert ("n2", "b") not in [seg.lane for seg in plan.segments], plan.waypoints
    pose = ok(planner.plan(Pose2D(10.0, 10.2, 0.0), "b", 2.0))
    assert ("n2", "b") not in [seg.lane for seg in pose.segments]
    assert planner.reopen_lane("b", "n2")
    assert ok(planner.plan("a", "b", 3.0)).waypoints == fast
    planner.close_lane("n2", "b", 4.0, reopen_after_s=10.0)
    assert ok(planner.plan("a", "b", 13.9)).waypoints == ("a", "b")
    assert ok(planner.plan("a", "b", 14.0)).waypoints == fast  # reopened by the clock


def test_a_pose_on_a_waypoint_plans_like_the_waypoint(planner: RoutePlanner) -> None:
    for name in ("a", "c", "n2"):
        w = planner.route.waypoint(name)
        for goal in ("b", "e", "n1"):
            if goal == name:
                continue
            by_name = ok(planner.plan(name, goal, 0.0))
            by_pose = ok(planner.plan(Pose2D(w.x, w.y, 0.0), goal, 0.0))
            assert by_pose.eta_s == pytest.approx(by_name.eta_s, abs=1e-9)
            assert by_pose.waypoints == by_name.waypoints


def test_plans_are_as_fast_as_networkx_on_a_generated_city() -> None:
    """A 20 x 20 city of the benchmark (one-way streets, zones, a notched fence) with lanes
    closing and reopening: every plan's travel time equals networkx's Dijkstra on a graph built
    independently from the same data, NO_PATH exactly when networkx finds no route, and every
    plan drives only open lanes inside the fence."""
    import random
    import sys

    import networkx as nx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.bench_route_planning import city, effective_graph

    route = city(seed=11, side=20)
    planner = RoutePlanner(route)
    graph = effective_graph(route)
    fence = route.geofence
    rng = random.Random(4)
    names = sorted(route.waypoints)
    lanes = [(lane.start, lane.end) for lane in route.lanes]
    closed: dict[tuple[str, str], float] = {}
    compared = no_route = 0
    for k in range(300):
        now = float(k)
        if k % 10 == 0:  # close a lane for 25 s
            start, end = rng.choice(lanes)
            planner.close_lane(start, end, now, reopen_after_s=25.0)
            closed[start, end] = now + 25.0
        closed = {lane: until for lane, until in closed.items() if until > now}
        shut = set(closed) | {(end, start) for start, end in closed}

        def weight(u: str, v: str, data: dict[str, float]) -> float | None:
            return None if (u, v) in shut else data["t"]  # noqa: B023 (called right here)

        a, b = rng.choice(names), rng.choice(names)
        if a == b:
            continue
        result = planner.plan(a, b, now)
        try:
            expected: float | None = nx.dijkstra_path_length(graph, a, b, weight=weight)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            expected = None
        if expected is None:
            no_route += 1
            assert isinstance(result, NoPath), (a, b, result)
            continue
        plan = ok(result)
        compared += 1
        assert plan.eta_s == pytest.approx(expected, rel=1e-9), (a, b)
        for seg in plan.segments:
            assert seg.lane is not None
            assert graph.has_edge(*seg.lane), (a, b, seg.lane)
            assert seg.lane not in shut, (a, b, seg.lane)
            assert fence.covers(LineString(seg.points))
    assert compared > 200
    assert no_route > 5  # the notch in the fence and the closures do cut some routes


# ---- keep right ---------------------------------------------------------------------------


def town_kept_right(tmp_path: Path, keep_right: float, spur: float | None = None) -> Path:
    """Town's route graph with a world keep_right (and one for its 2 m spurs), in tmp_path."""
    data = yaml.safe_load(TOWN.read_text())
    data["sdf"] = str(TOWN.parents[2] / "gazebo_worlds" / "town.sdf")
    data["keep_right"] = keep_right
    for lane in data["lanes"]:
        if spur is not None and lane.get("width") == 2.0:
            lane["keep_right"] = spur
    path = tmp_path / "town.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_keep_right_moves_two_way_lanes_right_and_keeps_start_goal_and_crossings(
    tmp_path: Path,
) -> None:
    """Robots meeting head-on on a sidewalk pass each other: each drives keep_right m right
    of a two-way lane's centre line (never nearer its edge than the margin); one-way lanes, the
    start and the goal stay where they are, and the crosswalk keeps its kerb stop."""
    route = load_route_graph(town_kept_right(tmp_path, 0.5, spur=0.4), validate=False)
    centre = RoutePlanner(load_route_graph(TOWN, validate=False)).plan("depot", "house_s4", 0.0)
    right = RoutePlanner(route).plan("depot", "house_s4", 0.0)
    assert isinstance(centre, Plan)
    assert isinstance(right, Plan)
    assert right.segments[0].points[0] == centre.segments[0].points[0]
    assert right.segments[-1].points[-1] == centre.segments[-1].points[-1]
    by_lane = {seg.lane_name: seg for seg in right.segments}
    assert by_lane["depot->depot_exit_door"].points == \
        next(s for s in centre.segments if s.lane_name == "depot->depot_exit_door").points
    # East along the north sidewalk (y = 5.5, 3 m wide): 0.5 m to the right is y = 5.0.
    assert all(y == pytest.approx(5.0) for _, y in by_lane["walk_n_bakery->walk_n_pharmacy"].points)
    # South over the crosswalk (x = 0): right is west.
    assert all(x == pytest.approx(-0.5)
               for x, _ in by_lane["walk_n_crosswalk->walk_s_crosswalk"].points)
    # A lane's own keep_right wins over the world's: 0.4 m on the 2 m spur.
    back = RoutePlanner(route).plan("shop_bakery", "depot", 0.0)
    assert isinstance(back, Plan)
    spur = next(s for s in back.segments if s.lane_name == "shop_bakery->walk_n_bakery")
    assert min(abs(x - (-28.0)) for x, _ in spur.points[1:]) == pytest.approx(0.4)
    # Connected, measured, and the crossing is still on the crosswalk lane.
    for a, b in zip(right.segments, right.segments[1:], strict=False):
        assert a.points[-1] == pytest.approx(b.points[0])
        assert b.s_start == pytest.approx(a.s_end)
    assert right.length == pytest.approx(sum(s.length for s in right.segments))
    (crossing,) = right.crossings
    lane = by_lane["walk_n_crosswalk->walk_s_crosswalk"]
    assert crossing.stop_s <= crossing.entry_s < crossing.exit_s <= lane.s_end + 1e-6
    assert crossing.entry_s >= lane.s_start - 1e-6
    # Westbound on the same sidewalk: the other side of the centre line (y = 6.0).
    west = RoutePlanner(route).plan("house_s4", "depot", 0.0)
    assert isinstance(west, Plan)
    lane_w = next(s for s in west.segments if s.lane_name == "walk_n_pharmacy->walk_n_bakery")
    assert all(y == pytest.approx(6.0) for _, y in lane_w.points)
    # Turned off in the planner: the centre lines again.
    off = RoutePlanner(route, PlannerParams(keep_right=False)).plan("depot", "house_s4", 0.0)
    assert isinstance(off, Plan)
    assert [seg.points for seg in off.segments] == [seg.points for seg in centre.segments]


def test_the_validator_checks_kept_right_lines_against_width_and_obstacles(
    tmp_path: Path,
) -> None:
    """Town's sidewalks have trees on their kerb side: keeping 0.5 m right runs eastbound
    robots into them, and 1.5 m charger lanes have no room for it; the validator says so,
    naming the lane, the direction and the obstacle."""
    problems = [p.message for p in check_route_graph(town_kept_right(tmp_path, 0.5))]
    assert any("'depot' -> 'charger_1': keeping 0.5 m right puts the robot outside" in m
               for m in problems)
    assert any("'walk_n_bakery' -> 'walk_n_pharmacy' kept 0.5 m right" in m and "tree_north_3"
               in m for m in problems)
    assert not any("'walk_n_pharmacy' -> 'walk_n_bakery' kept" in m for m in problems)
    assert check_route_graph(town_kept_right(tmp_path, 0.0)) == []

"""Route graph loading, routing and the validator, on a small hand-made world in tmp_path.

The mini world (metres):            y
                                     8 +-------------- geofence ---------------+
    j_north (5, 7) <-- home_1 (10, 6)  |   one-way lanes home_1 -> j_north -> depot
                                       |        [wall x 4.5..5.5, y 1..5]   o post (8, 3) r 0.3
    charger (0, 2)                     |
    depot (0, 0) -- j_south (5, 0) -- shop_a (10, 0)                          island (11, 7.5)
                                    -1 +---------------------------------------+ x 12
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery_robot.route_graph import (
    MAX_SPEED_LIMIT,
    PARK_SPEED_LIMIT,
    ProblemKind,
    RouteGraph,
    RouteGraphError,
    SignalCycle,
    WaypointKind,
    ZoneKind,
    check_route_graph,
    load_route_graph,
)

SDF = """<?xml version="1.0"?>
<sdf version="1.9"><world name="mini">
  <model name="ground_plane"><static>true</static><link name="link"><collision name="c">
    <geometry><plane><normal>0 0 1</normal></plane></geometry></collision></link></model>
  <model name="wall"><static>true</static><pose>5 3 1 0 0 0</pose><link name="link">
    <collision name="c"><geometry><box><size>1 4 2</size></box></geometry></collision>
  </link></model>
  <model name="post"><static>true</static><pose>8 3 1 0 0 0</pose><link name="link">
    <collision name="c"><geometry><cylinder><radius>0.3</radius><length>2</length></cylinder>
    </geometry></collision></link></model>
</world></sdf>
"""


def base_graph() -> dict[str, Any]:
    return {
        "world": "mini",
        "sdf": "mini.sdf",
        "waypoints": [
            {"name": "depot", "kind": "depot", "x": 0.0, "y": 0.0},
            {"name": "charger", "kind": "charger", "x": 0.0, "y": 2.0, "yaw": 1.5708,
             "dock_marker": 1},
            {"name": "j_south", "kind": "junction", "x": 5.0, "y": 0.0},
            {"name": "shop_a", "kind": "shop", "x": 10.0, "y": 0.0, "dock_marker": 10,
             "shop_id": "a"},
            {"name": "home_1", "kind": "dropoff", "x": 10.0, "y": 6.0, "label": "집 1"},
            {"name": "j_north", "kind": "junction", "x": 5.0, "y": 7.0},
            {"name": "island", "kind": "junction", "x": 11.0, "y": 7.5},
        ],
        "lanes": [
            {"from": "depot", "to": "charger", "speed_limit": 0.5, "one_way": False},
            {"from": "depot", "to": "j_south", "speed_limit": 1.0, "one_way": False,
             "width": 2.0},
            {"from": "j_south", "to": "shop_a", "speed_limit": 1.0, "one_way": False},
            {"from": "shop_a", "to": "home_1", "speed_limit": 0.5, "one_way": False},
            {"from": "home_1", "to": "j_north", "speed_limit": 1.0, "one_way": True},
            {"from": "j_north", "to": "depot", "speed_limit": 2.0, "one_way": True},
        ],
        "zones": [
            {"name": "area", "kind": "geofence",
             "polygon": [[-1, -1], [12, -1], [12, 8], [-1, 8]]},
            {"name": "crossing", "kind": "crosswalk",
             "polygon": [[6, -1], [8, -1], [8, 1], [6, 1]], "speed_limit": 1.0,
             "green_s": 20.0, "red_s": 40.0, "offset_s": 5.0},
            {"name": "garden", "kind": "park", "polygon": [[9, 2], [11, 2], [11, 5], [9, 5]]},
            {"name": "yard", "kind": "slow_zone", "polygon": [[-1, 1], [0.5, 1], [0.5, 3], [-1, 3]],
             "speed_limit": 0.5},
        ],
        "shops": [{"shop_id": "a", "name": "Shop A", "waypoint": "shop_a"}],
    }


def write_world(tmp_path: Path, graph: dict[str, Any], sdf: str = SDF) -> Path:
    (tmp_path / "mini.sdf").write_text(sdf, encoding="utf-8")
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(graph, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def waypoint(g: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(w for w in g["waypoints"] if w["name"] == name)
    return found


@pytest.fixture
def route(tmp_path: Path) -> RouteGraph:
    return load_route_graph(write_world(tmp_path, base_graph()))


# == loading and the API ======================================================================
def test_the_mini_world_is_clean(tmp_path: Path) -> None:
    assert check_route_graph(write_world(tmp_path, base_graph())) == []


def test_typed_api(route: RouteGraph) -> None:
    assert route.world == "mini"
    assert [w.name for w in route.dropoffs] == ["home_1"]
    assert route.waypoint("home_1").label == "집 1"
    assert [w.name for w in route.waypoints_of_kind("charger")] == ["charger"]
    assert route.waypoint("charger").dock_marker == 1
    assert route.waypoint("charger").yaw == pytest.approx(1.5708)
    assert route.shop("a").waypoint == "shop_a"
    assert route.waypoint("shop_a").kind is WaypointKind.SHOP
    with pytest.raises(KeyError, match="nowhere"):
        route.waypoint("nowhere")
    assert route.geofence.covers(route.waypoint("home_1").point)
    (crossing,) = route.zones_of_kind(ZoneKind.CROSSWALK)
    assert crossing.polygon.area == pytest.approx(4.0)
    assert crossing.signal == SignalCycle(20.0, 40.0, 5.0)
    assert route.speed_limit_at(7.0, 0.0) == pytest.approx(1.0)
    assert route.speed_limit_at(0.0, 2.0) == pytest.approx(0.5)
    assert route.speed_limit_at(10.0, 3.0) == pytest.approx(PARK_SPEED_LIMIT)  # park default
    assert route.speed_limit_at(3.0, 4.0) is None
    assert route.nearest_waypoint(9.0, 5.5).name == "home_1"
    edge = route.graph.edges["depot", "j_south"]
    assert edge["length"] == pytest.approx(5.0)
    assert edge["travel_time"] == pytest.approx(5.0)
    assert route.graph.has_edge("j_north", "depot")
    assert not route.graph.has_edge("depot", "j_north")


def test_signal_cycle() -> None:
    s = SignalCycle(green_s=20.0, red_s=40.0, offset_s=5.0)
    assert not s.is_green(4.9)
    assert s.is_green(5.0)
    assert s.is_green(24.9)
    assert not s.is_green(25.0)
    assert s.seconds_until_green(10.0) == 0.0
    assert s.seconds_until_green(25.0) == pytest.approx(40.0)
    assert s.is_green(65.0)  # one full cycle later


def test_travel_time_uses_length_over_speed_limit(route: RouteGraph) -> None:
    assert route.travel_time("depot", "j_south") == pytest.approx(5.0 / 1.0)
    assert route.travel_time("depot", "charger") == pytest.approx(2.0 / 0.5)
    assert route.travel_time("depot", "depot") == 0.0


def test_travel_time_honours_one_way_lanes(route: RouteGraph) -> None:
    # Out: depot -> j_south -> shop_a -> home_1 (the one-way lanes cannot be used backwards).
    assert route.shortest_path("depot", "home_1") == ["depot", "j_south", "shop_a", "home_1"]
    assert route.travel_time("depot", "home_1") == pytest.approx(5.0 + 5.0 + 6.0 / 0.5)
    # Back: the faster one-way loop home_1 -> j_north -> depot.
    back = math.hypot(5.0, 1.0) / 1.0 + math.hypot(5.0, 7.0) / 2.0
    assert route.shortest_path("home_1", "depot") == ["home_1", "j_north", "depot"]
    assert route.travel_time("home_1", "depot") == pytest.approx(back)
    assert route.path_length(["home_1", "j_north", "depot"]) == pytest.approx(
        math.hypot(5.0, 1.0) + math.hypot(5.0, 7.0)
    )
    with pytest.raises(KeyError):
        route.path_length(["depot", "j_north"])


def test_a_slower_lane_changes_the_fastest_route(tmp_path: Path) -> None:
    g = base_graph()
    g["lanes"][5]["speed_limit"] = 0.1  # j_north -> depot crawls: going back round is faster
    route = load_route_graph(write_world(tmp_path, g))
    assert route.shortest_path("home_1", "depot") == ["home_1", "shop_a", "j_south", "depot"]
    assert route.travel_time("home_1", "depot") == pytest.approx(12.0 + 5.0 + 5.0)


def test_unreachable_gives_none(route: RouteGraph) -> None:
    assert route.travel_time("depot", "island") is None
    assert route.shortest_path("island", "depot") is None
    with pytest.raises(KeyError):
        route.travel_time("depot", "atlantis")


# == the validator: one error kind at a time ==================================================
Mutation = Callable[[dict[str, Any]], None]


def _set(section: str, index: int, **fields: Any) -> Mutation:
    def mutate(g: dict[str, Any]) -> None:
        g[section][index].update(fields)

    return mutate


def _append(section: str, item: dict[str, Any]) -> Mutation:
    def mutate(g: dict[str, Any]) -> None:
        g[section].append(item)

    return mutate


def _drop_zone(kind: str) -> Mutation:
    def mutate(g: dict[str, Any]) -> None:
        g["zones"] = [z for z in g["zones"] if z["kind"] != kind]

    return mutate


def _both(first: Mutation, second: Mutation) -> Mutation:
    def mutate(g: dict[str, Any]) -> None:
        first(g)
        second(g)

    return mutate


def _del(section: str, index: int, key: str) -> Mutation:
    def mutate(g: dict[str, Any]) -> None:
        del g[section][index][key]

    return mutate


CASES: list[tuple[str, Mutation, ProblemKind, str]] = [
    ("missing coordinate", _del("waypoints", 4, "y"), ProblemKind.SCHEMA,
     "waypoint 'home_1': y is missing"),
    ("misspelt field", _append("lanes", {"from": "depot", "to": "island", "speed": 1.0}),
     ProblemKind.SCHEMA, "unknown field(s) speed"),
    ("non-identifier name", _set("waypoints", 6, name="is land"), ProblemKind.SCHEMA,
     "must be an identifier"),
    ("string coordinate", _set("waypoints", 6, x="11"), ProblemKind.SCHEMA,
     "x must be a number"),
    ("duplicate waypoint", _append("waypoints", {"name": "depot", "kind": "junction", "x": 1,
                                                 "y": 1}),
     ProblemKind.DUPLICATE_NAME, "waypoint 'depot' is declared more than once"),
    ("duplicate zone", _append("zones", {"name": "yard", "kind": "slow_zone", "speed_limit": 1.0,
                                         "polygon": [[0, 0], [1, 0], [1, 1]]}),
     ProblemKind.DUPLICATE_NAME, "zone 'yard'"),
    ("lane to nowhere", _append("lanes", {"from": "depot", "to": "nowhere", "speed_limit": 1.0}),
     ProblemKind.UNKNOWN_WAYPOINT, "no waypoint 'nowhere'"),
    ("shop at nowhere", _set("shops", 0, waypoint="nowhere"), ProblemKind.UNKNOWN_WAYPOINT,
     "shop 'a': no waypoint 'nowhere'"),
    ("waypoint kind", _set("waypoints", 6, kind="toilet"), ProblemKind.BAD_KIND,
     "kind 'toilet' is not one of shop, dropoff, charger, depot, junction"),
    ("zone kind", _set("zones", 3, kind="lake"), ProblemKind.BAD_KIND, "kind 'lake'"),
    ("zero speed", _set("lanes", 1, speed_limit=0.0), ProblemKind.BAD_SPEED_LIMIT,
     "lane 'depot' -> 'j_south': speed_limit 0.0 m/s"),
    ("over the legal cap", _set("lanes", 1, speed_limit=MAX_SPEED_LIMIT + 0.5),
     ProblemKind.BAD_SPEED_LIMIT, "is not in (0, 4.17]"),
    ("slow zone without limit", _del("zones", 3, "speed_limit"), ProblemKind.BAD_SPEED_LIMIT,
     "zone 'yard': a slow_zone needs speed_limit"),
    ("fast park", _set("zones", 2, speed_limit=3.0), ProblemKind.BAD_SPEED_LIMIT,
     "(0, 1.39] for a park"),
    ("lane faster than its park", _set("lanes", 3, speed_limit=2.0), ProblemKind.BAD_SPEED_LIMIT,
     "lane 'shop_a' -> 'home_1': speed_limit 2.0 m/s exceeds the 1.39 m/s of park 'garden'"),
    ("lane faster than a crosswalk", _set("lanes", 2, speed_limit=1.5),
     ProblemKind.BAD_SPEED_LIMIT, "exceeds the 1.00 m/s of crosswalk 'crossing' it runs through"),
    ("self loop", _append("lanes", {"from": "island", "to": "island", "speed_limit": 1.0}),
     ProblemKind.BAD_LANE, "must join two waypoints"),
    ("duplicate lane", _append("lanes", {"from": "j_south", "to": "depot", "speed_limit": 1.0,
                                         "one_way": True}),
     ProblemKind.BAD_LANE, "duplicates lane 'depot' -> 'j_south'"),
    ("narrow lane", _set("lanes", 1, width=0.5), ProblemKind.BAD_LANE,
     "narrower than the robot"),
    ("bow-tie polygon", _set("zones", 3, polygon=[[0, 0], [1, 1], [1, 0], [0, 1]]),
     ProblemKind.BAD_ZONE, "zone 'yard': polygon is not a simple area"),
    ("two-point polygon", _set("zones", 3, polygon=[[0, 0], [1, 1]]), ProblemKind.BAD_ZONE,
     ">= 3 [x, y] points"),
    ("half a signal", _del("zones", 1, "red_s"), ProblemKind.BAD_ZONE,
     "signal cycle lacks red_s"),
    ("signal on a slow zone", _set("zones", 3, green_s=10.0), ProblemKind.BAD_ZONE,
     "only crosswalks have a signal cycle"),
    ("shop entry on a dropoff", _set("shops", 0, waypoint="home_1"), ProblemKind.BAD_SHOP,
     "waypoint 'home_1' is a dropoff"),
    ("shop waypoint without shop", _set("shops", 0, shop_id="b"), ProblemKind.BAD_SHOP,
     "says it belongs to shop 'a'"),
    ("shop_id on a dropoff", _set("waypoints", 4, shop_id="a"), ProblemKind.BAD_SHOP,
     "shop_id on a dropoff"),
    ("marker reused", _set("waypoints", 3, dock_marker=1), ProblemKind.BAD_DOCK_MARKER,
     "dock_marker 1 is already used by 'charger'"),
    ("marker on a dropoff", _set("waypoints", 4, dock_marker=7), ProblemKind.BAD_DOCK_MARKER,
     "dock_marker on a dropoff"),
    ("no depot", _set("waypoints", 0, kind="junction"), ProblemKind.MISSING,
     "no waypoint of kind depot"),
    ("no geofence", _drop_zone("geofence"), ProblemKind.MISSING, "no zone of kind geofence"),
    ("lane through a wall", _append("lanes", {"from": "charger", "to": "home_1",
                                              "speed_limit": 1.0}),
     ProblemKind.LANE_THROUGH_OBSTACLE,
     "lane 'charger' -> 'home_1' passes through obstacle 'wall::link::c'"),
    ("lane through a post", _append("lanes", {"from": "j_north", "to": "shop_a",
                                              "speed_limit": 1.0, "one_way": True}),
     ProblemKind.LANE_THROUGH_OBSTACLE, "passes through obstacle 'post::link::c'"),
    ("waypoint in a wall", _append("waypoints", {"name": "in_wall", "kind": "junction", "x": 5.0,
                                                 "y": 3.0}),
     ProblemKind.WAYPOINT_IN_OBSTACLE, "waypoint 'in_wall' is inside obstacle 'wall::link::c'"),
    ("waypoint next to a post", _set("waypoints", 6, x=8.5, y=3.0),
     ProblemKind.WAYPOINT_IN_OBSTACLE, "m from obstacle 'post::link::c' (the robot needs 0.35 m)"),
    ("dropoff with no way back",
     _both(_set("lanes", 4, to="island"), _set("lanes", 3, one_way=True)),
     ProblemKind.UNREACHABLE, "no depot can be reached from dropoff 'home_1'"),
    ("dropoff with no way there", _set("lanes", 3, one_way=True, **{"from": "home_1",
                                                                    "to": "shop_a"}),
     ProblemKind.UNREACHABLE, "dropoff 'home_1' cannot be reached from a depot"),
    ("point outside", _set("waypoints", 6, x=20.0), ProblemKind.OUTSIDE_GEOFENCE,
     "waypoint 'island' at (20.00, 7.50) is outside the geofence"),
    ("lane cutting a notch", _set("zones", 0, polygon=[[-1, -1], [12, -1], [12, 8], [4, 8],
                                                       [4, 5], [1, 5], [1, 8], [-1, 8]]),
     ProblemKind.LANE_OUTSIDE_GEOFENCE, "lane 'j_north' -> 'depot' leaves the geofence"),
    ("sdf missing", lambda g: g.update(sdf="nope.sdf"), ProblemKind.SDF, "'nope.sdf' not found"),
    ("other world", lambda g: g.update(world="maxi"), ProblemKind.SDF,
     "the SDF's world is named 'mini'"),
]


@pytest.mark.parametrize(("mutate", "kind", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_problem_kind_is_reported(
    tmp_path: Path, mutate: Mutation, kind: ProblemKind, fragment: str
) -> None:
    g = copy.deepcopy(base_graph())
    mutate(g)
    problems = check_route_graph(write_world(tmp_path, g))
    matching = [p for p in problems if p.kind is kind and fragment in p.message]
    assert matching, "\n".join(map(str, problems)) or "no problems reported"


def test_every_problem_kind_has_a_case() -> None:
    assert {c[2] for c in CASES} == set(ProblemKind)


def test_a_lane_within_the_robot_half_width_of_a_post(tmp_path: Path) -> None:
    g = base_graph()
    g["waypoints"] += [{"name": "p1", "kind": "junction", "x": 8.5, "y": 6.0},
                       {"name": "p2", "kind": "junction", "x": 8.5, "y": 1.0}]
    g["lanes"] += [{"from": "p1", "to": "p2", "speed_limit": 1.0}]  # 0.2 m from the post's rim
    problems = check_route_graph(write_world(tmp_path, g))
    assert [p.kind for p in problems] == [ProblemKind.LANE_THROUGH_OBSTACLE]
    assert "is 0.20 m from obstacle 'post::link::c'" in problems[0].message
    # A thinner robot fits.
    assert check_route_graph(tmp_path / "mini.yaml", robot_half_width=0.15) == []


def test_low_and_high_shapes_do_not_block_lanes(tmp_path: Path) -> None:
    """A 2 cm lip and a 3 m high sign over the path are not in the robot's way."""
    sdf = SDF.replace("</world>", """
      <model name="lip"><static>true</static><pose>2.5 0 0.01 0 0 0</pose><link name="l">
        <collision name="c"><geometry><box><size>0.3 3 0.02</size></box></geometry></collision>
      </link></model>
      <model name="sign"><static>true</static><pose>7.5 0 3 0 0 0</pose><link name="l">
        <collision name="c"><geometry><box><size>0.3 3 0.5</size></box></geometry></collision>
      </link></model>
      <model name="kerb"><static>true</static><pose>2.5 -0.3 0.075 0 0 0</pose><link name="l">
        <collision name="c"><geometry><box><size>0.2 0.3 0.15</size></box></geometry></collision>
      </link></model></world>""")
    problems = check_route_graph(write_world(tmp_path, base_graph(), sdf))
    assert [p.message for p in problems] == [
        "lane 'depot' -> 'j_south' is 0.15 m from obstacle 'kerb::l::c' (the robot needs 0.35 m)"
    ]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    g = base_graph()
    waypoint(g, "island")["kind"] = "toilet"  # bad kind
    waypoint(g, "home_1")["x"] = 30.0  # outside the geofence (and its lanes leave it)
    g["waypoints"].append({"name": "depot", "kind": "junction", "x": 1, "y": 1})  # duplicate
    g["waypoints"].append({"name": "in_wall", "kind": "junction", "x": 5.0, "y": 3.0})
    g["lanes"].append({"from": "depot", "to": "nowhere", "speed_limit": 1.0})  # unknown
    g["lanes"].append({"from": "charger", "to": "shop_a", "speed_limit": 9.0})  # fast, wall
    g["lanes"][0]["one_way"] = "yes"  # schema
    g["shops"][0]["waypoint"] = "j_south"  # not a shop waypoint
    path = write_world(tmp_path, g)
    with pytest.raises(RouteGraphError) as err:
        load_route_graph(path)
    kinds = {p.kind for p in err.value.problems}
    assert kinds >= {
        ProblemKind.BAD_KIND, ProblemKind.OUTSIDE_GEOFENCE, ProblemKind.LANE_OUTSIDE_GEOFENCE,
        ProblemKind.DUPLICATE_NAME, ProblemKind.WAYPOINT_IN_OBSTACLE,
        ProblemKind.UNKNOWN_WAYPOINT, ProblemKind.BAD_SPEED_LIMIT,
        ProblemKind.LANE_THROUGH_OBSTACLE, ProblemKind.SCHEMA, ProblemKind.BAD_SHOP,
    }
    text = str(err.value)
    assert text.startswith(f"{path}: {len(err.value.problems)} problem(s)")
    for p in err.value.problems:
        assert str(p) in text
    assert err.value.problems == check_route_graph(path)


def test_bad_sdf_problems_come_with_the_graph_problems(tmp_path: Path) -> None:
    g = base_graph()
    g["lanes"][1]["speed_limit"] = -1.0
    sdf = SDF.replace("<cylinder><radius>0.3</radius><length>2</length></cylinder>",
                      "<mesh><uri>post.dae</uri></mesh>")
    problems = check_route_graph(write_world(tmp_path, g, sdf))
    assert {p.kind for p in problems} == {ProblemKind.SDF, ProblemKind.BAD_SPEED_LIMIT}
    assert any("post::link::c: <mesh>" in p.message for p in problems)


def test_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("waypoints: [unclosed", encoding="utf-8")
    with pytest.raises(RouteGraphError, match=r"\[schema\] not valid YAML"):
        load_route_graph(bad)
    bad.write_text("- just a list\n", encoding="utf-8")
    assert [p.kind for p in check_route_graph(bad)] == [ProblemKind.SCHEMA]


def test_without_validation_only_the_file_itself_is_checked(tmp_path: Path) -> None:
    g = base_graph()
    g["sdf"] = "missing.sdf"
    g["lanes"].append({"from": "charger", "to": "home_1", "speed_limit": 1.0})  # through a wall
    route = load_route_graph(write_world(tmp_path, g), validate=False)
    assert route.lane("home_1", "charger") is not None
    assert route.sdf_path is None

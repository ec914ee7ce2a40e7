"""The shipped worlds (gazebo_worlds/*.sdf + config/worlds/*.yaml) and the SDF footprint reader.

The SDF files are checked with the real SDFormat parser (`ign sdf -k`, Debian packages
ignition-tools + libsdformat-dev, see tools/apt-packages.txt) and, because `ign sdf -k` accepts
misspelt elements silently, also against the element tree of the SDFormat spec it prints.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from delivery_robot.route_graph import (
    RouteGraph,
    WaypointKind,
    ZoneKind,
    check_route_graph,
    load_route_graph,
)
from delivery_robot.world_geometry import (
    WorldGeometry,
    WorldGeometryError,
    load_world_geometry,
    parse_world_geometry,
)

ROOT = Path(__file__).resolve().parents[1]
WORLDS = ["town", "apartment"]
SDF_VERSION = "1.9"  # the newest SDFormat 12 (Debian 12) validates; Gazebo Harmonic reads it


def sdf_path(world: str) -> Path:
    return ROOT / "gazebo_worlds" / f"{world}.sdf"


def yaml_path(world: str) -> Path:
    return ROOT / "config" / "worlds" / f"{world}.yaml"


def sdf_tool() -> str:
    """`ign` (SDFormat 12, Debian) or `gz` (Gazebo Harmonic); failing, not skipping, if absent."""
    for name in ("ign", "gz"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "neither `ign` nor `gz` is installed: install the Debian packages in "
        "tools/apt-packages.txt (ignition-tools libsdformat-dev), e.g. with `make setup`"
    )


@pytest.fixture(scope="module")
def routes() -> dict[str, RouteGraph]:
    return {w: load_route_graph(yaml_path(w)) for w in WORLDS}


@pytest.fixture(scope="module")
def geometries() -> dict[str, WorldGeometry]:
    return {w: load_world_geometry(sdf_path(w)) for w in WORLDS}


# == the SDF files ============================================================================
@pytest.mark.parametrize("world", WORLDS)
def test_sdf_passes_the_sdformat_parser(world: str) -> None:
    result = subprocess.run(
        [sdf_tool(), "sdf", "-k", str(sdf_path(world))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Valid." in result.stdout, output
    # SDFormat logs conversion and element errors but may still say "Valid." (e.g. for 1.10).
    assert "Error" not in output, output


@pytest.fixture(scope="module")
def sdf_spec() -> ET.Element:
    result = subprocess.run(
        [sdf_tool(), "sdf", "-d", SDF_VERSION],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return ET.fromstring(result.stdout)


def _spec_mismatches(spec: ET.Element, doc: ET.Element, refs: dict[str, ET.Element],
                     where: str) -> list[str]:
    """Elements and attributes of `doc` that the spec element `spec` does not define."""
    children: dict[str, ET.Element] = {}
    free_form = False
    for c in spec.findall("element"):
        if c.get("copy_data") == "true":
            free_form = True  # <plugin> contents belong to the plugin
        elif c.get("ref"):
            children[c.get("ref", "")] = refs[c.get("ref", "")]
        else:
            children[c.get("name", "")] = c
    attributes = {a.get("name") for a in spec.findall("attribute")}
    bad = [f"{where}: attribute {a!r}" for a in doc.attrib if a not in attributes]
    for child in doc:
        if child.tag in children:
            bad += _spec_mismatches(children[child.tag], child, refs, f"{where}/{child.tag}")
        elif not free_form:
            bad.append(f"{where}: element <{child.tag}>")
    return bad


@pytest.mark.parametrize("world", WORLDS)
def test_sdf_uses_only_elements_of_the_spec(world: str, sdf_spec: ET.Element) -> None:
    doc = ET.parse(sdf_path(world)).getroot()
    assert doc.get("version") == SDF_VERSION
    refs = {e.get("name", ""): e for e in sdf_spec.findall("element")}
    assert _spec_mismatches(sdf_spec, doc, refs, "sdf") == []


def test_the_spec_check_catches_a_misspelt_element(sdf_spec: ET.Element) -> None:
    doc = ET.fromstring(
        '<sdf version="1.9"><world name="w"><model name="m"><static>true</static>'
        '<link name="l"><collision name="c"><geometry><box><sizee>1 1 1</sizee></box>'
        "</geometry></collision></link></model></world></sdf>"
    )
    refs = {e.get("name", ""): e for e in sdf_spec.findall("element")}
    assert _spec_mismatches(sdf_spec, doc, refs, "sdf") == [
        "sdf/world/model/link/collision/geometry/box: element <sizee>"
    ]


@pytest.mark.parametrize("world", WORLDS)
def test_sdf_is_self_contained(world: str) -> None:
    text = sdf_path(world).read_text(encoding="utf-8")
    for external in ("model://", "http://", "https://", "file://", "<uri", "<include", "<mesh"):
        assert external not in text, f"{world}.sdf refers to something outside it: {external}"


@pytest.mark.parametrize("world", WORLDS)
def test_sdf_declares_what_a_gazebo_harmonic_world_needs(world: str) -> None:
    w = ET.parse(sdf_path(world)).getroot().find("world")
    assert w is not None
    assert w.get("name") == world
    plugins = {p.get("filename"): p for p in w.findall("plugin")}
    for needed in ("gz-sim-physics-system", "gz-sim-user-commands-system",
                   "gz-sim-scene-broadcaster-system", "gz-sim-sensors-system"):
        assert needed in plugins, needed
    assert plugins["gz-sim-sensors-system"].findtext("render_engine") == "ogre2"
    assert w.find("physics") is not None
    assert w.find("scene") is not None
    sun = w.find("light[@name='sun']")
    assert sun is not None
    assert sun.get("type") == "directional"
    ground = w.find("model[@name='ground_plane']")
    assert ground is not None
    assert ground.find(".//collision/geometry/plane") is not None
    models = w.findall("model")
    assert all(m.findtext("static") == "true" for m in models), "every world model is static"


@pytest.mark.parametrize("world", WORLDS)
def test_obstacle_footprints_are_plausible(
    world: str, geometries: dict[str, WorldGeometry]
) -> None:
    geo = geometries[world]
    assert geo.world_name == world
    assert len(geo.boxes) >= 30
    assert len(geo.circle_shapes) >= 20
    assert geo.segments.shape == (4 * len(geo.boxes), 4)
    assert geo.circles.shape == (len(geo.circle_shapes), 3)
    x0, y0, x1, y1 = geo.bounds
    assert 100 <= x1 - x0 <= 160
    assert 60 <= y1 - y0 <= 130
    # Names say what things are.
    names = " ".join(b.name for b in geo.boxes)
    for word in ("depot_building", "charger_1", "parked_car", "bench"):
        assert word in names


# == the route graphs =========================================================================
@pytest.mark.parametrize("world", WORLDS)
def test_route_graph_validates_clean_against_its_world(world: str) -> None:
    assert check_route_graph(yaml_path(world)) == []


@pytest.mark.parametrize("world", WORLDS)
def test_route_graph_names_its_world(world: str, routes: dict[str, RouteGraph]) -> None:
    route = routes[world]
    assert route.world == world
    assert route.sdf_path is not None
    assert route.sdf_path.resolve() == sdf_path(world).resolve()


@pytest.mark.parametrize("world", WORLDS)
def test_every_dropoff_round_trip_from_the_depot(world: str, routes: dict[str, RouteGraph]) -> None:
    route = routes[world]
    depot = route.depots[0].name
    for w in route.dropoffs + route.shop_waypoints + route.chargers:
        there, back = route.travel_time(depot, w.name), route.travel_time(w.name, depot)
        # Minutes, not hours, at these speeds; and both ways (one-way lanes included).
        assert there is not None, w.name
        assert back is not None, w.name
        assert 0 < there < 600, w.name
        assert 0 < back < 600, w.name


@pytest.mark.parametrize("world", WORLDS)
def test_dock_markers_are_in_the_world(world: str, routes: dict[str, RouteGraph]) -> None:
    """Perception docks on ArUco ids: each id in the graph has a marker plate in the SDF."""
    text = sdf_path(world).read_text(encoding="utf-8")
    docking = [w for w in routes[world].waypoints.values() if w.dock_marker is not None]
    assert {w.kind for w in docking} == {WaypointKind.SHOP, WaypointKind.CHARGER}
    for w in docking:
        assert f'dock_marker_{w.dock_marker}_visual"' in text, w.name


def test_town_has_what_the_design_asks_for(
    routes: dict[str, RouteGraph], geometries: dict[str, WorldGeometry]
) -> None:
    route = routes["town"]
    assert len(route.shops) == 3
    assert len(route.shop_waypoints) == 3
    assert len(route.dropoffs) >= 8
    assert len(route.depots) == 1
    assert len(route.chargers) == 2
    crosswalks = [z for z in route.zones_of_kind(ZoneKind.CROSSWALK) if z.signal is not None]
    assert crosswalks, "town needs a signalled crosswalk"
    crossing_lanes = [
        lane for lane in route.lanes
        if crosswalks[0].polygon.intersects(_line(route, lane.start, lane.end))
    ]
    assert crossing_lanes, "some lane must use the crosswalk"
    # The dropoffs on the far side of Main street are only reachable over the crosswalk.
    path = route.shortest_path(route.depots[0].name, "house_s1")
    assert path is not None
    assert "walk_n_crosswalk" in path
    assert "walk_s_crosswalk" in path
    names = {b.name.split("::")[0] for b in geometries["town"].boxes}
    assert sum(n.startswith("house_") and n.count("_") == 1 for n in names) >= 8
    assert sum(n.startswith("shop_") and n.endswith("_building") for n in names) == 3


def test_apartment_has_what_the_design_asks_for(
    routes: dict[str, RouteGraph], geometries: dict[str, WorldGeometry]
) -> None:
    route, geo = routes["apartment"], geometries["apartment"]
    buildings = {
        b.name.split("::")[0]: b for b in geo.boxes
        if b.name.startswith("apartment_building_") and b.name.endswith("::slab_collision")
    }
    assert len(buildings) >= 4, "several apartment buildings (동)"
    for name, slab in buildings.items():
        near = [w for w in route.dropoffs if _distance_to_box(w.x, w.y, slab.corners()) < 3.0]
        assert len(near) >= 1, f"{name} has no entrance dropoff"
    arcade = [b for b in geo.boxes if b.name.startswith("shopping_arcade::")]
    assert arcade, "a shopping arcade (상가)"
    shops_at_arcade = [
        w for w in route.shop_waypoints if _distance_to_box(w.x, w.y, arcade[0].corners()) < 3.0
    ]
    assert len(shops_at_arcade) >= 3
    assert len(route.shops) == len(route.shop_waypoints)
    assert route.depots
    assert route.chargers
    text = sdf_path("apartment").read_text(encoding="utf-8")
    assert 'name="internal_roads"' in text
    assert route.zones_of_kind(ZoneKind.PARK)
    assert route.zones_of_kind(ZoneKind.CROSSWALK)
    assert any(lane.one_way for lane in route.lanes)


def _line(route: RouteGraph, a: str, b: str) -> object:
    from shapely.geometry import LineString

    wa, wb = route.waypoint(a), route.waypoint(b)
    return LineString([(wa.x, wa.y), (wb.x, wb.y)])


def _distance_to_box(x: float, y: float, corners: np.ndarray) -> float:
    from shapely.geometry import Point, Polygon

    return float(Polygon(corners).distance(Point(x, y)))


# == world_geometry on hand-written SDF =======================================================
def _sdf(models: str) -> str:
    return f'<sdf version="1.9"><world name="w">{models}</world></sdf>'


def test_box_footprint_composes_model_link_and_collision_poses() -> None:
    geo = parse_world_geometry(_sdf(
        '<model name="wall"><static>true</static><pose>10 0 0 0 0 1.5707963267948966</pose>'
        '<link name="l"><pose>1 0 0 0 0 0</pose>'
        '<collision name="c"><pose>0 2 0.5 0 0 0</pose>'
        "<geometry><box><size>4 1 1</size></box></geometry></collision>"
        '<visual name="v"><geometry><box><size>99 99 99</size></box></geometry></visual>'
        "</link></model>"
    ))
    (box,) = geo.boxes
    # link origin at (10, 1); the collision 2 m along the link's y axis = world -x.
    assert (box.cx, box.cy) == pytest.approx((8.0, 1.0))
    assert box.yaw == pytest.approx(math.pi / 2)
    assert (box.z_min, box.z_max) == pytest.approx((0.0, 1.0))
    xs, ys = box.corners()[:, 0], box.corners()[:, 1]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((7.5, 8.5, -1.0, 3.0))
    assert box.name == "wall::l::c"
    assert geo.segments.shape == (4, 4)
    # The four segments form the closed outline: each ends where the next starts.
    seg = geo.segments
    assert np.allclose(seg[:, 2:], np.roll(seg[:, :2], -1, axis=0))
    assert not geo.segments.flags.writeable


def test_cylinders_spheres_and_capsules_become_circles() -> None:
    geo = parse_world_geometry(_sdf(
        '<model name="m"><static>true</static><pose>1 2 0 0 0 0</pose><link name="l">'
        '<collision name="pole"><pose>0 0 1.5 0 0 0</pose>'
        "<geometry><cylinder><radius>0.1</radius><length>3</length></cylinder></geometry>"
        "</collision>"
        '<collision name="ball"><pose>3 0 1 0 0 0</pose>'
        "<geometry><sphere><radius>0.5</radius></sphere></geometry></collision>"
        '<collision name="cap"><pose>0 -3 1 0 0 0</pose>'
        "<geometry><capsule><radius>0.2</radius><length>1</length></capsule></geometry>"
        "</collision></link></model>"
    ))
    assert np.allclose(geo.circles, [[1, 2, 0.1], [4, 2, 0.5], [1, -1, 0.2]])
    heights = [(c.z_min, c.z_max) for c in geo.circle_shapes]
    assert np.allclose(heights, [(0.0, 3.0), (0.5, 1.5), (0.3, 1.7)])
    assert geo.segments.shape == (0, 4)


def test_nested_models_dynamic_models_planes_and_height_bands() -> None:
    geo = parse_world_geometry(_sdf(
        '<model name="outer"><static>true</static><pose>5 0 0 0 0 3.141592653589793</pose>'
        '<model name="inner"><pose>1 0 0 0 0 0</pose><link name="l"><collision name="c">'
        "<geometry><box><size>1 1 0.1</size></box></geometry></collision></link></model>"
        "</model>"
        '<model name="robot"><link name="l"><collision name="c">'
        "<geometry><box><size>1 1 1</size></box></geometry></collision></link></model>"
        '<model name="ground_plane"><static>true</static><link name="l"><collision name="c">'
        "<geometry><plane><normal>0 0 1</normal></plane></geometry></collision></link></model>"
    ))
    assert [b.name for b in geo.boxes] == ["outer::inner::l::c"]  # the dynamic robot is not
    assert (geo.boxes[0].cx, geo.boxes[0].cy) == pytest.approx((4.0, 0.0))
    assert geo.in_height_band(0.3, 1.2).boxes == ()  # z in [-0.05, 0.05]: under a 0.3 m lidar
    assert len(geo.in_height_band(0.0, 1.2).boxes) == 1
    with_dynamic = parse_world_geometry(
        _sdf('<model name="robot"><link name="l"><collision name="c"><geometry><box>'
             "<size>1 1 1</size></box></geometry></collision></link></model>"),
        include_dynamic=True,
    )
    assert len(with_dynamic.boxes) == 1


def test_degrees_and_quaternion_poses() -> None:
    geo = parse_world_geometry(_sdf(
        '<model name="a"><static>true</static><pose degrees="true">0 0 0 0 0 90</pose>'
        '<link name="l"><collision name="c"><pose>1 0 0 0 0 0</pose>'
        "<geometry><box><size>1 1 1</size></box></geometry></collision></link></model>"
        '<model name="b"><static>true</static>'
        '<pose rotation_format="quat_xyzw">0 0 0 0 0 0.7071067811865476 0.7071067811865476</pose>'
        '<link name="l"><collision name="c"><pose>2 0 0 0 0 0</pose>'
        "<geometry><box><size>1 1 1</size></box></geometry></collision></link></model>"
    ))
    assert [(b.cx, b.cy) for b in geo.boxes] == [pytest.approx((0, 1)), pytest.approx((0, 2))]


def test_unsupported_sdf_is_reported_all_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.sdf"
    path.write_text(_sdf(
        '<include><uri>model://tree</uri></include>'
        '<model name="statue"><static>true</static><link name="l"><collision name="c">'
        "<geometry><mesh><uri>statue.dae</uri></mesh></geometry></collision></link></model>"
        '<model name="ramp"><static>true</static><pose>0 0 0 0 0.3 0</pose><link name="l">'
        '<collision name="c"><geometry><box><size>1 1 1</size></box></geometry></collision>'
        "</link></model>"
        '<model name="odd"><static>true</static><link name="l">'
        '<collision name="c"><pose relative_to="x">0 0 0 0 0 0</pose>'
        "<geometry><box><size>1 0 1</size></box></geometry></collision></link></model>"
    ))
    with pytest.raises(WorldGeometryError) as err:
        load_world_geometry(path)
    text = "\n".join(err.value.problems)
    assert len(err.value.problems) == 5, text
    for fragment in ("<include>", "statue::l::c: <mesh>", "ramp: roll/pitch", "relative_to",
                     "sizes must be > 0"):
        assert fragment in text
    assert str(path) in str(err.value)


def test_not_an_sdf_world() -> None:
    with pytest.raises(WorldGeometryError, match="not well-formed"):
        parse_world_geometry("<sdf><world")
    with pytest.raises(WorldGeometryError, match="no <world>"):
        parse_world_geometry('<sdf version="1.9"><model name="m"/></sdf>')

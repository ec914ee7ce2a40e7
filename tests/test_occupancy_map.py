"""Nav2 maps (config/maps) generated from the worlds' SDF: byte-identical regeneration, the
rasteriser's geometry, the map_server file format, and agreement with the route graphs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from delivery_robot.occupancy_map import (
    FREE,
    OCCUPIED,
    MapError,
    OccupancyMap,
    rasterize,
    read_map,
    stale_maps,
    world_maps,
)
from delivery_robot.route_graph import load_route_graph
from delivery_robot.world_geometry import parse_world_geometry

ROOT = Path(__file__).resolve().parents[1]
WORLDS = ["town", "apartment"]


def _world(models: str) -> str:
    return f'<sdf version="1.9"><world name="w">{models}</world></sdf>'


def _box(name: str, x: float, y: float, yaw: float, sx: float, sy: float, sz: float = 1.0,
         z: float = 0.5) -> str:
    return (f'<model name="{name}"><static>true</static><pose>{x} {y} {z} 0 0 {yaw}</pose>'
            f'<link name="l"><collision name="c"><geometry><box><size>{sx} {sy} {sz}</size>'
            "</box></geometry></collision></link></model>")


def _cells(grid: OccupancyMap) -> set[tuple[int, int]]:
    iy, ix = np.nonzero(grid.occupied)
    return {(int(x), int(y)) for x, y in zip(ix, iy, strict=True)}


# == the committed maps ========================================================================


def test_committed_maps_are_what_the_worlds_give_byte_for_byte() -> None:
    """A world edit without `tools/make_nav2_maps.py` fails here: map and world cannot drift."""
    assert stale_maps(ROOT) == []
    assert sorted(world_maps(ROOT)) == sorted(WORLDS)


def test_regenerating_twice_gives_identical_bytes() -> None:
    first, second = world_maps(ROOT), world_maps(ROOT)
    assert first == second


def test_a_changed_world_makes_the_map_stale(tmp_path: Path) -> None:
    (tmp_path / "gazebo_worlds").mkdir()
    (tmp_path / "config" / "maps").mkdir(parents=True)
    sdf = (ROOT / "gazebo_worlds" / "town.sdf").read_text(encoding="utf-8")
    (tmp_path / "gazebo_worlds" / "town.sdf").write_text(sdf, encoding="utf-8")
    for suffix in (".pgm", ".yaml"):
        name = f"town{suffix}"
        (tmp_path / "config" / "maps" / name).write_bytes(
            (ROOT / "config" / "maps" / name).read_bytes())
    assert stale_maps(tmp_path) == []
    moved = sdf.replace("</world>", _box("new_wall", 0.0, 30.0, 0.0, 4.0, 0.2) + "</world>")
    (tmp_path / "gazebo_worlds" / "town.sdf").write_text(moved, encoding="utf-8")
    assert stale_maps(tmp_path) == ["config/maps/town.pgm: differs from what "
                                    "gazebo_worlds/town.sdf gives"]


@pytest.mark.parametrize("world", WORLDS)
def test_map_yaml_follows_the_map_server_format(world: str) -> None:
    meta = yaml.safe_load((ROOT / "config" / "maps" / f"{world}.yaml").read_text())
    assert meta["image"] == f"{world}.pgm"
    assert meta["mode"] == "trinary"
    assert meta["resolution"] == pytest.approx(0.1)
    assert len(meta["origin"]) == 3
    assert meta["origin"][2] == 0.0
    assert meta["negate"] == 0
    assert 0 < meta["free_thresh"] < meta["occupied_thresh"] < 1
    data = (ROOT / "config" / "maps" / f"{world}.pgm").read_bytes()
    header = data.split(b"\n", 3)
    assert header[0] == b"P5"
    width, height = (int(v) for v in header[1].split())
    assert header[2] == b"255"
    assert len(header[3]) == width * height
    assert set(np.frombuffer(header[3], dtype=np.uint8).tolist()) == {OCCUPIED, FREE}


@pytest.mark.parametrize("world", WORLDS)
def test_route_graph_waypoints_and_lanes_are_free_in_the_map(world: str) -> None:
    """The route graph is validated clear of the same SDF obstacles, so every waypoint and
    every lane's centreline must be free map cells: Nav2 can drive our routes."""
    grid = read_map(ROOT / "config" / "maps" / f"{world}.yaml")
    route = load_route_graph(ROOT / "config" / "worlds" / f"{world}.yaml", validate=False)
    blocked = [w.name for w in route.waypoints.values() if grid.is_occupied(w.x, w.y)]
    assert blocked == []
    for lane in route.lanes:
        a, b = route.waypoint(lane.start), route.waypoint(lane.end)
        steps = max(2, math.ceil(math.hypot(b.x - a.x, b.y - a.y) / 0.05))
        for t in np.linspace(0.0, 1.0, steps):
            x, y = a.x + t * (b.x - a.x), a.y + t * (b.y - a.y)
            assert not grid.is_occupied(x, y), f"lane {lane.start}->{lane.end} at ({x}, {y})"


def test_buildings_are_occupied_in_the_town_map() -> None:
    grid = read_map(ROOT / "config" / "maps" / "town.yaml")
    route = load_route_graph(ROOT / "config" / "worlds" / "town.yaml", validate=False)
    # A house door is 1 m behind its dropoff waypoint, which faces it: 2 m in is a wall/room.
    for w in route.dropoffs:
        inside_x = w.x + 3.0 * math.cos(w.yaw or 0.0)
        inside_y = w.y + 3.0 * math.sin(w.yaw or 0.0)
        assert grid.is_occupied(inside_x, inside_y), w.name


# == the rasteriser ============================================================================


def test_an_axis_aligned_box_occupies_exactly_the_cells_it_overlaps() -> None:
    geo = parse_world_geometry(_world(_box("b", 1.0, 1.0, 0.0, 1.0, 0.4)))
    grid = rasterize(geo, resolution=0.1, margin=0.5)
    # x 0.5..1.5, y 0.8..1.2: edges on cell boundaries touch, they do not occupy.
    assert (grid.origin_x, grid.origin_y) == pytest.approx((0.0, 0.3))
    assert grid.occupied.sum() == 10 * 4
    assert grid.is_occupied(0.55, 0.85)
    assert grid.is_occupied(1.45, 1.15)
    assert not grid.is_occupied(0.45, 1.0)
    assert not grid.is_occupied(1.0, 1.25)


def test_a_wall_thinner_than_a_cell_is_not_lost() -> None:
    geo = parse_world_geometry(_world(_box("w", 0.0, 0.03, 0.0, 2.0, 0.02)))
    grid = rasterize(geo, resolution=0.1, margin=0.2)
    assert grid.is_occupied(0.0, 0.03)
    assert len({iy for _, iy in _cells(grid)}) == 1  # one row, not smeared over two


def test_a_rotated_box_is_rasterised_by_its_true_outline() -> None:
    geo = parse_world_geometry(_world(_box("r", 0.0, 0.0, math.pi / 4, 2.0, 0.2)))
    grid = rasterize(geo, resolution=0.05, margin=0.1)
    c = math.sqrt(0.5)
    assert grid.is_occupied(0.9 * c, 0.9 * c)  # along the box's long axis
    assert not grid.is_occupied(0.6, -0.6)  # across it, beyond its 0.1 m half width
    assert not grid.is_occupied(0.6, 0.0)  # inside its bounding box, outside the box
    assert grid.cell_of(0.6, 0.0) is not None


def test_circles_occupy_cells_they_overlap_only() -> None:
    geo = parse_world_geometry(_world(
        '<model name="pole"><static>true</static><pose>0 0 1 0 0 0</pose><link name="l">'
        '<collision name="c"><geometry><cylinder><radius>0.3</radius><length>2</length>'
        "</cylinder></geometry></collision></link></model>"))
    grid = rasterize(geo, resolution=0.1, margin=0.2)
    assert grid.is_occupied(0.0, 0.0)
    assert grid.is_occupied(0.25, 0.0)
    assert grid.is_occupied(0.25, 0.25)  # cell (0.2..0.3)^2: its near corner is 0.28 m away
    assert not grid.is_occupied(0.35, 0.15)  # cell (0.3..0.4)x(0.1..0.2): 0.32 m away
    assert not grid.is_occupied(0.35, 0.05)  # cell (0.3..0.4)x(0..0.1): exactly 0.3 m, touches


def test_only_the_robots_height_band_is_mapped() -> None:
    geo = parse_world_geometry(_world(
        _box("paint", 0.0, 0.0, 0.0, 1.0, 1.0, sz=0.01, z=0.005)  # road paint: under the band
        + _box("awning", 3.0, 0.0, 0.0, 1.0, 1.0, sz=0.1, z=2.5)  # above the robot
        + _box("kerb", 6.0, 0.0, 0.0, 1.0, 0.2, sz=0.15, z=0.075)  # the robot cannot climb
        + _box("wall", -1.0, 0.0, 0.0, 0.2, 0.2)))
    grid = rasterize(geo, resolution=0.1, margin=0.5)
    assert grid.cell_of(0.0, 0.0) is not None
    assert grid.cell_of(3.0, 0.0) is not None
    assert not grid.is_occupied(0.0, 0.0)
    assert not grid.is_occupied(3.0, 0.0)
    assert grid.is_occupied(6.0, 0.0)


def test_pgm_and_yaml_round_trip(tmp_path: Path) -> None:
    geo = parse_world_geometry(_world(_box("b", 2.0, -1.0, 0.3, 1.0, 0.5)))
    grid = rasterize(geo, resolution=0.05, margin=0.3)
    (tmp_path / "m.pgm").write_bytes(grid.pgm_bytes())
    (tmp_path / "m.yaml").write_text(grid.yaml_text("m.pgm", "test"), encoding="utf-8")
    back = read_map(tmp_path / "m.yaml")
    assert np.array_equal(back.occupied, grid.occupied)
    assert (back.resolution, back.origin_x, back.origin_y) == pytest.approx(
        (grid.resolution, grid.origin_x, grid.origin_y))
    # Row 0 of the image is the top: the highest occupied row in the grid is the first black
    # row in the file.
    pixels = np.frombuffer(grid.pgm_bytes()[-grid.width * grid.height:], np.uint8).reshape(
        grid.height, grid.width)
    top_black_row = int(np.nonzero((pixels == OCCUPIED).any(axis=1))[0][0])
    assert top_black_row == grid.height - 1 - int(np.nonzero(grid.occupied.any(axis=1))[0][-1])


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    geo = parse_world_geometry(_world(_box("b", 0.0, 0.0, 0.0, 1.0, 1.0)))
    with pytest.raises(MapError, match="resolution"):
        rasterize(geo, resolution=0.0)
    with pytest.raises(MapError, match="nothing to map"):
        rasterize(parse_world_geometry(_world("")))
    (tmp_path / "bad.yaml").write_text("image: bad.pgm\nresolution: 0.1\norigin: [0, 0, 0]\n")
    (tmp_path / "bad.pgm").write_bytes(b"P2\n2 2\n255\n0 0 0 0\n")
    with pytest.raises(MapError, match="not a binary PGM"):
        read_map(tmp_path / "bad.yaml")

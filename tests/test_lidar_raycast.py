"""Ray casting against known geometry, and the vectorised caster against the per-ray loop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from delivery_robot.lidar_raycast import (
    BeamPattern,
    Raycaster,
    raycast,
    raycast_dense,
    raycast_reference,
)
from delivery_robot.world_geometry import BoxFootprint, WorldGeometry, load_world_geometry

ROOT = Path(__file__).resolve().parents[1]
FULL = BeamPattern.centred(360)
NO_CIRCLES = np.zeros((0, 3))
NO_SEGMENTS = np.zeros((0, 4))
Array = npt.NDArray[np.float64]


def beam_index(beams: BeamPattern, angle: float) -> int:
    """The beam pointing at `angle` (sensor frame)."""
    return int(round((angle - beams.angle_min) / beams.angle_increment)) % beams.count


def cast_one(segments: Array, circles: Array, x: float = 0.0, y: float = 0.0,
             yaw: float = 0.0, range_max: float = 30.0) -> Array:
    ranges = raycast(np.array([[x, y]]), np.array([yaw]), FULL, segments, circles, range_max)
    row: Array = ranges[0]
    return row


def assert_same_scan(fast: Array, slow: Array) -> None:
    """Same beams hit (finite), and where they hit, the same distance within 1e-9 m."""
    assert np.array_equal(np.isfinite(fast), np.isfinite(slow))
    hit = np.isfinite(slow)
    assert hit.any()
    np.testing.assert_allclose(fast[hit], slow[hit], rtol=0.0, atol=1e-9)


# -- known geometry --------------------------------------------------------------------------
def test_beam_pattern_full_circle_and_partial() -> None:
    assert FULL.angle_min == pytest.approx(-math.pi)
    assert FULL.angle_increment == pytest.approx(math.radians(1.0))
    assert FULL.full_circle
    assert FULL.angle_max == pytest.approx(math.pi - math.radians(1.0))
    front = BeamPattern.centred(271, math.radians(270.0))
    assert not front.full_circle
    assert front.angle_min == pytest.approx(-math.radians(135.0))
    assert front.angle_max == pytest.approx(math.radians(135.0))
    with pytest.raises(ValueError, match="overlap"):
        BeamPattern(angle_min=0.0, angle_increment=0.1, count=100)


def test_wall_at_known_distance() -> None:
    wall = np.array([[5.0, -10.0, 5.0, 10.0]])  # x = 5 m, 20 m long
    ranges = cast_one(wall, NO_CIRCLES)
    assert ranges[beam_index(FULL, 0.0)] == pytest.approx(5.0, abs=1e-12)
    angles = FULL.angles()
    facing = np.abs(angles) < math.atan2(10.0, 5.0) - 1e-6
    np.testing.assert_allclose(ranges[facing], 5.0 / np.cos(angles[facing]), rtol=1e-12)
    beyond = np.abs(angles) > math.atan2(10.0, 5.0) + 1e-6
    assert np.isinf(ranges[beyond]).all()


def test_wall_seen_from_a_turned_and_moved_sensor() -> None:
    wall = np.array([[-3.0, 7.0, 3.0, 7.0]])  # y = 7, seen from (1, 2) facing north
    ranges = cast_one(wall, NO_CIRCLES, x=1.0, y=2.0, yaw=math.pi / 2)
    assert ranges[beam_index(FULL, 0.0)] == pytest.approx(5.0, abs=1e-12)
    assert math.isinf(ranges[beam_index(FULL, math.pi)])  # behind the sensor


def test_circle_at_known_distance() -> None:
    post = np.array([[4.0, 0.0, 1.0]])
    ranges = cast_one(NO_SEGMENTS, post)
    assert ranges[beam_index(FULL, 0.0)] == pytest.approx(3.0, abs=1e-12)
    theta = math.radians(10.0)  # inside the circle's half-angle asin(1/4) = 14.5 deg
    expected = 4.0 * math.cos(theta) - math.sqrt(1.0 - (4.0 * math.sin(theta)) ** 2)
    assert ranges[beam_index(FULL, theta)] == pytest.approx(expected, abs=1e-12)
    assert math.isinf(ranges[beam_index(FULL, math.radians(20.0))])


def test_nothing_in_range_is_inf() -> None:
    assert np.isinf(cast_one(NO_SEGMENTS, NO_CIRCLES)).all()
    far_wall = np.array([[15.0, -50.0, 15.0, 50.0]])
    assert np.isinf(cast_one(far_wall, NO_CIRCLES, range_max=12.0)).all()
    assert np.isfinite(cast_one(far_wall, NO_CIRCLES, range_max=16.0)).any()


def test_hit_exactly_at_range_max_counts_and_beyond_does_not() -> None:
    wall = np.array([[12.0, -1.0, 12.0, 1.0]])
    ranges = cast_one(wall, NO_CIRCLES, range_max=12.0)
    assert ranges[beam_index(FULL, 0.0)] == 12.0
    assert math.isinf(ranges[beam_index(FULL, math.radians(3.0))])  # 12 / cos(3 deg) > 12


def test_sensor_inside_a_circle_sees_its_edge() -> None:
    ranges = cast_one(NO_SEGMENTS, np.array([[0.5, 0.0, 2.0]]))  # leaves at x = 2.5 and -1.5
    assert ranges[beam_index(FULL, 0.0)] == pytest.approx(2.5, abs=1e-12)
    assert ranges[beam_index(FULL, math.pi)] == pytest.approx(1.5, abs=1e-12)
    assert np.isfinite(ranges).all()


def test_nearest_of_several_shapes_wins() -> None:
    walls = np.array([[8.0, -1.0, 8.0, 1.0], [6.0, -1.0, 6.0, 1.0]])
    posts = np.array([[3.0, 0.0, 0.5]])
    assert cast_one(walls, posts)[beam_index(FULL, 0.0)] == pytest.approx(2.5, abs=1e-12)
    assert cast_one(walls, NO_CIRCLES)[beam_index(FULL, 0.0)] == pytest.approx(6.0)


def test_excluded_circle_is_invisible_to_its_sensor_only() -> None:
    bodies = np.array([[0.0, 0.0, 0.35], [3.0, 0.0, 0.35]])  # sensor 0 sits in body 0
    origins = np.array([[0.0, 0.0], [3.0, 0.0]])
    yaws = np.array([0.0, math.pi])
    ranges = raycast(origins, yaws, FULL, NO_SEGMENTS, bodies, 20.0, np.array([0, 1]))
    ahead = beam_index(FULL, 0.0)
    assert ranges[0, ahead] == pytest.approx(2.65, abs=1e-12)  # sees the other body
    assert ranges[1, ahead] == pytest.approx(2.65, abs=1e-12)
    assert math.isinf(ranges[0, beam_index(FULL, math.pi)])  # not its own body behind it


def test_parallel_and_degenerate_segments_do_not_hit() -> None:
    along = np.array([[1.0, 0.0, 5.0, 0.0], [2.0, 3.0, 2.0, 3.0]])  # on the beam, a point
    ranges = cast_one(along, NO_CIRCLES)
    reference = raycast_reference(np.zeros((1, 2)), np.zeros(1), FULL, along, NO_CIRCLES, 30.0)
    assert math.isinf(ranges[beam_index(FULL, 0.0)])
    assert np.array_equal(np.isinf(ranges), np.isinf(reference[0]))


# -- vectorised against the per-ray loop ------------------------------------------------------
def random_scene(seed: int) -> tuple[Array, Array, Array, Array]:
    rng = np.random.default_rng(seed)
    segments = rng.uniform(-10.0, 10.0, (40, 4))
    circles = np.column_stack([rng.uniform(-10.0, 10.0, (25, 2)), rng.uniform(0.1, 1.5, 25)])
    origins = rng.uniform(-9.0, 9.0, (5, 2))
    yaws = rng.uniform(-4.0, 4.0, 5)
    return segments, circles, origins, yaws


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "beams", [FULL, BeamPattern.centred(200, math.radians(270.0)), BeamPattern(0.3, 0.01, 50)],
    ids=["360", "270deg", "narrow"],
)
def test_vectorised_equals_reference_on_a_random_scene(seed: int, beams: BeamPattern) -> None:
    segments, circles, origins, yaws = random_scene(seed)
    exclude = np.array([3, -1, 0, 7, -1])
    slow = raycast_reference(origins, yaws, beams, segments, circles, 8.0, exclude)
    fast = raycast(origins, yaws, beams, segments, circles, 8.0, exclude)
    dense = raycast_dense(origins, yaws, beams, segments, circles, 8.0, exclude)
    assert_same_scan(fast, slow)
    assert_same_scan(dense, slow)


def test_raycaster_with_moving_circles_equals_reference() -> None:
    segments, circles, origins, yaws = random_scene(4)
    static, moving = circles[:15], circles[15:]
    caster = Raycaster(FULL, segments, static, 9.0)
    exclude = np.array([0, 1, 2, -1, 9])  # indices into the moving circles
    fast = caster.cast(origins, yaws, moving, exclude)
    slow = raycast_reference(origins, yaws, FULL, segments, circles, 9.0,
                             np.where(exclude >= 0, exclude + len(static), -1))
    assert_same_scan(fast, slow)


def test_one_sided_boxes_from_a_world_equal_reference() -> None:
    boxes = tuple(
        BoxFootprint(f"b{i}", cx, cy, yaw, 2.0, 1.0, 0.0, 2.0)
        for i, (cx, cy, yaw) in enumerate([(4.0, 1.0, 0.3), (-3.0, 4.0, 1.2), (0.0, -5.0, 0.0)])
    )
    world = WorldGeometry("boxes", boxes, ())
    origins = np.array([[0.0, 0.0], [1.0, 3.0], [-4.0, -2.0]])
    yaws = np.array([0.2, -1.0, 2.5])
    slow = raycast_reference(origins, yaws, FULL, world.segments, NO_CIRCLES, 12.0)
    fast = raycast(origins, yaws, FULL, world.segments, NO_CIRCLES, 12.0, one_sided=True)
    assert_same_scan(fast, slow)


def test_town_scene_equals_reference() -> None:
    plane = load_world_geometry(ROOT / "gazebo_worlds" / "town.sdf").in_height_band(0.3, 0.3)
    origins = np.array([[-28.0, 6.0], [0.0, -5.5]])  # in front of the bakery, at a kerb
    yaws = np.array([1.2, -0.4])
    slow = raycast_reference(origins, yaws, FULL, plane.segments, plane.circles, 12.0)
    fast = Raycaster(FULL, plane.segments, plane.circles, 12.0, one_sided=True).cast(
        origins, yaws)
    assert_same_scan(fast, slow)

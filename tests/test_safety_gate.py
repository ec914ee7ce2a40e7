"""The safety gate (delivery_robot.safety_gate): every rule it enforces, and can fail.

Scans are made by ray casting round obstacles (pedestrians, posts) from the scanner, so the
geometry is known exactly. The scanner sits at base_link's origin unless a test says so.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest

from delivery_robot.safety_gate import (
    KMH,
    FloatArray,
    GateOutput,
    LaserScanData,
    Pose2D,
    SafetyConfig,
    SafetyConfigError,
    SafetyGate,
    SafetyLimit,
    VelocityCommand,
    load_params_file,
    mass_class_speed_cap,
    points_in_polygon,
    scan_to_base_points,
)

ROOT = Path(__file__).resolve().parents[1]
BEAMS = 360
ANGLE_MIN = -math.pi
INCREMENT = 2 * math.pi / BEAMS

# A 0.7 m x 0.6 m robot with base_link in the middle of the axle, 0.05 m behind its centre.
FOOTPRINT = ((0.4, 0.3), (-0.3, 0.3), (-0.3, -0.3), (0.4, -0.3))
STOP_ZONE = ((0.7, 0.35), (-0.3, 0.35), (-0.3, -0.35), (0.7, -0.35))
SLOWDOWN_ZONE = ((1.5, 0.5), (-0.3, 0.5), (-0.3, -0.5), (1.5, -0.5))
Circle = tuple[float, float, float]  # x, y, radius in base_link


def make_config(**overrides: Any) -> SafetyConfig:
    params: dict[str, Any] = {
        "total_mass_kg": 60.0,
        "footprint": FOOTPRINT,
        "stop_zone": STOP_ZONE,
        "slowdown_zone": SLOWDOWN_ZONE,
        "slowdown_scale": 0.5,
        "time_before_collision": 1.5,
        "max_linear_accel": 100.0,  # out of the way unless a test is about it
        "max_angular_accel": 100.0,
        "command_timeout": 0.5,
        "scan_timeout": 0.5,
    }
    params.update(overrides)
    return SafetyConfig(**params)


def cast_ranges(
    circles: Sequence[Circle], beams: int = BEAMS, origin: Pose2D | None = None
) -> FloatArray:
    """Ranges of a full-circle scan from `origin` (scanner pose) to the given circles."""
    o = origin or Pose2D()
    angles = o.yaw + ANGLE_MIN + (2 * math.pi / beams) * np.arange(beams)
    dx, dy = np.cos(angles), np.sin(angles)
    ranges = np.full(beams, np.inf)
    for cx, cy, r in circles:  # a handful of obstacles, each cast against every beam at once
        mx, my = o.x - cx, o.y - cy
        b = mx * dx + my * dy
        disc = b * b - (mx * mx + my * my - r * r)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        ranges = np.where((disc >= 0) & (t > 0), np.minimum(ranges, t), ranges)
    return ranges


def make_scan(circles: Sequence[Circle], stamp: float, beams: int = BEAMS) -> LaserScanData:
    return LaserScanData(
        ranges=cast_ranges(circles, beams),
        angle_min=ANGLE_MIN,
        angle_increment=2 * math.pi / beams,
        range_min=0.05,
        range_max=30.0,
        stamp=stamp,
    )


def drive(
    gate: SafetyGate,
    linear: float,
    angular: float = 0.0,
    circles: Sequence[Circle] = (),
    steps: int = 5,
    dt: float = 0.1,
    start: float = 0.0,
) -> GateOutput:
    """Feed a fresh command and scan every dt for `steps` steps; the last output."""
    out: GateOutput | None = None
    for i in range(steps):
        now = start + i * dt
        gate.update_scan(make_scan(circles, now))
        gate.update_command(VelocityCommand(linear, angular, now))
        out = gate.step(now)
    assert out is not None
    return out


# ---- contract with the message ---------------------------------------------------------------


def test_limit_bits_equal_safety_state_message_constants() -> None:
    from delivery_interfaces.msg import SafetyState

    message_limits = {
        name.removeprefix("LIMIT_"): getattr(SafetyState, name)
        for name in dir(SafetyState)
        if name.startswith("LIMIT_")
    }
    ours = {member.name: int(member) for member in SafetyLimit}
    ours["NONE"] = int(SafetyLimit.NONE)
    assert ours == message_limits


def test_status_maps_onto_safety_state_message() -> None:
    from delivery_interfaces.msg import SafetyState
    from geometry_msgs.msg import Point

    gate = SafetyGate(make_config())
    status = drive(gate, 1.0, circles=[(0.6, 0.0, 0.1)]).status
    msg = SafetyState()
    for name, value in status.message_fields().items():
        setattr(
            msg,
            name,
            Point(x=value[0], y=value[1], z=value[2]) if name == "nearest_obstacle" else value,
        )
    assert msg.active_limits & SafetyState.LIMIT_STOP_ZONE
    assert msg.nearest_obstacle.x == pytest.approx(0.5, abs=1e-6)
    assert msg.interventions == 5  # every command of the five was stopped
    empty = SafetyGate(make_config())
    msg.nearest_obstacle_distance = drive(empty, 0.5).status.message_fields()[
        "nearest_obstacle_distance"
    ]
    assert math.isinf(msg.nearest_obstacle_distance)
    expected = {f for f in SafetyState.get_fields_and_field_types() if f != "header"}
    assert set(status.message_fields()) == expected


# ---- geometry -------------------------------------------------------------------------------


def _inside_reference(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    inside = False
    for i in range(len(polygon)):
        (x1, y1), (x2, y2) = polygon[i], polygon[(i + 1) % len(polygon)]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def test_point_in_polygon_matches_a_plain_reference_on_a_concave_polygon() -> None:
    polygon = ((0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (1.0, 0.7), (0.0, 2.0))  # an arrow notch
    rng = np.random.default_rng(7)
    points = rng.uniform(-0.5, 2.5, size=(2000, 2))
    expected = [_inside_reference(float(x), float(y), polygon) for x, y in points]
    got = points_in_polygon(points, polygon)
    assert got.tolist() == expected
    assert 200 < int(got.sum()) < 1800  # both outcomes exercised
    assert not points_in_polygon(np.array([[1.0, 1.5]]), polygon)[0]  # in the notch


@pytest.mark.parametrize("clockwise", [False, True])
def test_convex_polygon_fast_path_matches_reference_either_orientation(clockwise: bool) -> None:
    hexagon = tuple((math.cos(a) * 1.2 + 0.3, math.sin(a) * 0.8) for a in np.arange(6) * 1.047)
    polygon = hexagon[::-1] if clockwise else hexagon
    rng = np.random.default_rng(5)
    points = rng.uniform(-1.5, 1.8, size=(2000, 2))
    expected = [_inside_reference(float(x), float(y), polygon) for x, y in points]
    assert points_in_polygon(points, polygon).tolist() == expected
    assert 300 < sum(expected) < 1700


def test_scan_points_use_mount_pose_and_rep117_invalid_ranges() -> None:
    ranges = np.array([1.0, np.nan, np.inf, -np.inf, 0.01, 40.0])
    scan = LaserScanData(ranges, 0.0, math.pi / 2, 0.05, 30.0, 0.0)
    # Scanner 0.3 m ahead of base_link, looking backwards.
    points, valid = scan_to_base_points(scan, Pose2D(0.3, 0.0, math.pi))
    assert valid.tolist() == [True, False, False, True, False, False]
    assert points[0] == pytest.approx([-0.7, 0.0])
    # -inf is "too close to measure": an obstacle at range_min, beam 3 at 3*pi/2 (-> +y).
    assert points[3] == pytest.approx([0.3, 0.05])


# ---- zones ------------------------------------------------------------------------------------


def test_pedestrian_stepping_into_stop_zone_stops_robot_at_once() -> None:
    gate = SafetyGate(make_config(max_linear_accel=1.0))
    out = drive(gate, 1.0, steps=15)
    assert out.linear == pytest.approx(1.0)
    assert out.status.active_limits == SafetyLimit.NONE
    # The pedestrian appears 0.6 m ahead: zero in the same step, no deceleration ramp.
    out = drive(gate, 1.0, circles=[(0.8, 0.0, 0.2)], steps=1, start=1.5)
    assert (out.linear, out.angular) == (0.0, 0.0)
    assert SafetyLimit.STOP_ZONE in out.status.active_limits
    assert out.status.speed_scale == 0.0
    assert out.status.max_speed == 0.0
    assert out.status.nearest_obstacle_distance == pytest.approx(0.6, abs=1e-6)
    assert out.status.nearest_obstacle[:2] == pytest.approx((0.6, 0.0), abs=1e-6)


def test_obstacle_in_the_swept_circle_stops_rotation_in_place() -> None:
    gate = SafetyGate(make_config())  # circumradius 0.5 m + rotation_clearance 0.05 m
    out = drive(gate, 0.0, 0.5, circles=[(0.5, 0.0, 0.03)])  # nearest point 0.47 m away
    assert out.angular == 0.0
    assert SafetyLimit.STOP_ZONE in out.status.active_limits
    # Beside the robot, outside every zone polygon's reach forward, but inside the circle.
    out = drive(gate, 0.0, -0.5, circles=[(-0.2, -0.45, 0.02)], start=1.0)
    assert out.angular == 0.0
    assert SafetyLimit.STOP_ZONE in out.status.active_limits


def test_obstacle_ahead_in_the_stop_zone_stops_driving_but_not_turning_away() -> None:
    post = [(0.68, 0.0, 0.03)]  # 0.65 m ahead: in the stop zone, outside the swept circle
    gate = SafetyGate(make_config())
    forward = drive(gate, 0.5, 0.0, circles=post)
    assert (forward.linear, forward.angular) == (0.0, 0.0)
    assert SafetyLimit.STOP_ZONE in forward.status.active_limits
    arc = drive(gate, 0.2, 0.8, circles=post, start=1.0)  # any forward motion: zone rules
    assert (arc.linear, arc.angular) == (0.0, 0.0)
    turn = drive(gate, 0.0, 0.8, circles=post, start=2.0)
    assert turn.linear == 0.0
    assert turn.angular == pytest.approx(0.8)
    assert turn.status.active_limits == SafetyLimit.NONE


def test_turn_in_place_keeps_estop_timeouts_and_angular_acceleration() -> None:
    post = [(0.68, 0.0, 0.03)]
    gate = SafetyGate(make_config(max_angular_accel=1.0))
    first = drive(gate, 0.0, 0.8, circles=post, steps=1)
    assert first.angular == 0.0  # the first step has dt = 0: no speed-up yet
    ramp = drive(gate, 0.0, 0.8, circles=post, steps=1, start=0.1)
    assert ramp.angular == pytest.approx(0.1)
    assert SafetyLimit.ACCELERATION in ramp.status.active_limits
    gate.update_command(VelocityCommand(0.0, 0.8, 0.2))
    gate.update_scan(make_scan(post, 0.2))
    assert gate.step(1.0).angular == 0.0  # command and scan stale
    gate.set_remote_estop(True)
    out = drive(gate, 0.0, 0.8, circles=post, start=2.0)
    assert out.angular == 0.0
    assert SafetyLimit.ESTOP_REMOTE in out.status.active_limits


def test_rotation_clearance_must_be_a_distance() -> None:
    with pytest.raises(SafetyConfigError, match="rotation_clearance"):
        make_config(rotation_clearance=-0.1)
    wide = SafetyGate(make_config(rotation_clearance=0.3))  # 0.8 m circle holds the post
    out = drive(wide, 0.0, 0.8, circles=[(0.68, 0.0, 0.03)])
    assert out.angular == 0.0


def test_slowdown_zone_scales_linear_and_angular_alike() -> None:
    gate = SafetyGate(make_config())
    # A post 1.0 m ahead and 0.45 m to the side: in the slowdown zone, clear of the path.
    out = drive(gate, 1.0, 0.02, circles=[(1.0, 0.47, 0.02)])
    assert out.linear == pytest.approx(0.5)
    assert out.angular == pytest.approx(0.01)
    assert out.status.active_limits == SafetyLimit.SLOWDOWN_ZONE
    assert out.status.speed_scale == pytest.approx(0.5)


def test_min_points_ignores_a_single_noise_return() -> None:
    gate = SafetyGate(make_config(min_points=3))
    ranges = cast_ranges([])
    ranges[180] = 0.5  # one spurious return straight ahead
    gate.update_scan(LaserScanData(ranges, ANGLE_MIN, INCREMENT, 0.05, 30.0, 0.0))
    gate.update_command(VelocityCommand(0.5, 0.0, 0.0))
    gate.step(0.0)
    assert SafetyLimit.STOP_ZONE not in gate.step(0.05).status.active_limits
    strict = SafetyGate(make_config(min_points=1))
    strict.update_scan(LaserScanData(ranges, ANGLE_MIN, INCREMENT, 0.05, 30.0, 0.0))
    strict.update_command(VelocityCommand(0.5, 0.0, 0.0))
    assert SafetyLimit.STOP_ZONE in strict.step(0.0).status.active_limits


# ---- approach ---------------------------------------------------------------------------------


def test_approach_slows_for_obstacle_ahead_to_keep_time_to_collision() -> None:
    gate = SafetyGate(make_config())
    # Pedestrian 2.5 m ahead (surface at 2.3 m), footprint front at 0.4 m: 1.9 m to contact.
    out = drive(gate, 2.0, circles=[(2.5, 0.0, 0.2)])
    assert out.status.active_limits == SafetyLimit.APPROACH
    ttc_at_command = 1.9 / 2.0
    assert out.status.speed_scale == pytest.approx(ttc_at_command / 1.5, abs=0.02)
    assert out.linear == pytest.approx(1.9 / 1.5, abs=0.04)  # TTC at the output is 1.5 s
    assert out.status.max_speed == pytest.approx(out.linear, abs=1e-9)


def test_approach_ignores_obstacle_beside_the_path() -> None:
    gate = SafetyGate(make_config())
    out = drive(gate, 2.0, circles=[(2.5, 0.8, 0.2)])  # 0.6 m beside the footprint's edge
    assert out.linear == pytest.approx(2.0)
    assert out.status.active_limits == SafetyLimit.NONE


def test_approach_follows_the_commanded_arc() -> None:
    # A post on the circle of radius 2 m the robot drives with v = 1.5, w = 0.75.
    post = (2 * math.sin(math.pi / 3), 2 * (1 - math.cos(math.pi / 3)), 0.05)
    turning = drive(SafetyGate(make_config()), 1.5, 0.75, circles=[post])
    assert turning.status.active_limits == SafetyLimit.APPROACH
    assert turning.linear < 1.4
    assert turning.angular / turning.linear == pytest.approx(0.5)  # same arc, only slower
    straight = drive(SafetyGate(make_config()), 1.5, 0.0, circles=[post])
    assert straight.status.active_limits == SafetyLimit.NONE


@pytest.mark.parametrize(
    ("linear", "angular", "post"),
    [
        (1.5, 0.0, (2.0, 0.27)),  # straight, grazing the left edge (half-width 0.3 m)
        (1.5, 0.0, (2.0, -0.27)),
        (-1.5, 0.0, (-1.8, 0.27)),  # reversing, grazing behind
        (1.5, 0.75, (2 * math.sin(1.0) + 0.27 * math.sin(1.0), 2 - 2.27 * math.cos(1.0))),
        # Beyond where base_link's origin gets in the horizon (2.25 m of arc), not the front.
        (1.5, 0.3, (5 * math.sin(0.5), 5 * (1 - math.cos(0.5)))),
    ],
)
def test_approach_sees_obstacles_grazing_the_footprint_edge(
    linear: float, angular: float, post: tuple[float, float]
) -> None:
    """Points near the swept edge must survive the broad phase (a 6 cm post)."""
    gate = SafetyGate(make_config())
    gate.update_scan(make_scan([(post[0], post[1], 0.03)], 0.0))
    assert gate.time_to_collision(linear, angular) < 1.5
    assert gate.time_to_collision(linear, angular) == pytest.approx(
        _brute_force_ttc(gate, linear, angular, [(post[0], post[1], 0.03)]), abs=0.05
    )


def test_time_to_collision_matches_brute_force_sweep() -> None:
    """The broad phase must never drop a point the footprint would hit."""
    gate = SafetyGate(make_config(approach_linear_resolution=0.02))
    rng = np.random.default_rng(3)
    for _ in range(5):
        circles = [(float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3)), 0.1) for _ in range(12)]
        circles = [c for c in circles if math.hypot(c[0], c[1]) > 0.8]
        gate.update_scan(make_scan(circles, 0.0))
        for v, w in [(1.5, 0.0), (1.5, 0.6), (-1.0, -0.8), (2.0, -1.5)]:
            ttc = gate.time_to_collision(v, w)
            expected = _brute_force_ttc(gate, v, w, circles)
            assert ttc == pytest.approx(expected, abs=0.05) or (
                math.isinf(ttc) and math.isinf(expected)
            )


def _brute_force_ttc(gate: SafetyGate, v: float, w: float, circles: list[Circle]) -> float:
    points, valid = scan_to_base_points(make_scan(circles, 0.0), Pose2D())
    pts = points[valid]
    for t in np.linspace(0.0, 1.5, 301):  # a pose at a time, every point, no broad phase
        yaw = w * t
        x, y = (v / w * math.sin(yaw), v / w * (1 - math.cos(yaw))) if w else (v * t, 0.0)
        dx, dy = pts[:, 0] - x, pts[:, 1] - y
        local = np.column_stack(
            (math.cos(yaw) * dx + math.sin(yaw) * dy, -math.sin(yaw) * dx + math.cos(yaw) * dy)
        )
        if points_in_polygon(local, FOOTPRINT).any():
            return float(t)
    return math.inf


def test_approach_uses_obstacle_velocity_when_enabled() -> None:
    # A pedestrian 4 m ahead walking towards the robot at 1.5 m/s: static TTC is 3.4 s at
    # 1 m/s, but the gap closes at 2.5 m/s.
    circles = [(4.0, 0.0, 0.2)]
    scan = make_scan(circles, 0.0)
    velocities = np.where(np.isfinite(scan.ranges)[:, None], [[-1.5, 0.0]], 0.0)
    for enabled, expect_limit in [(False, False), (True, True)]:
        gate = SafetyGate(make_config(approach_use_obstacle_velocity=enabled))
        gate.update_command(VelocityCommand(1.0, 0.0, 0.0))
        gate.step(0.0)
        gate.update_scan(scan, point_velocities=velocities)
        gate.update_command(VelocityCommand(1.0, 0.0, 0.05))
        out = gate.step(0.05)
        assert (SafetyLimit.APPROACH in out.status.active_limits) is expect_limit
        if expect_limit:
            assert out.linear < 1.0


# ---- reverse ------------------------------------------------------------------------------------


def test_reverse_checks_behind_the_robot() -> None:
    behind = [(-0.6, 0.0, 0.1)]  # 0.2 m behind the rear edge
    back = drive(SafetyGate(make_config()), -0.5, circles=behind)
    assert back.linear == 0.0
    assert SafetyLimit.STOP_ZONE in back.status.active_limits
    forward = drive(SafetyGate(make_config()), 0.5, circles=behind)
    assert forward.linear == pytest.approx(0.5)
    assert forward.status.active_limits == SafetyLimit.NONE


def test_reverse_approach_looks_behind() -> None:
    far_behind = [(-2.3, 0.0, 0.1)]  # 1.9 m behind the rear edge
    back = drive(SafetyGate(make_config()), -1.5, circles=far_behind)
    assert back.status.active_limits == SafetyLimit.APPROACH
    assert -1.5 < back.linear < 0.0
    forward = drive(SafetyGate(make_config()), 1.5, circles=far_behind)
    assert forward.status.active_limits == SafetyLimit.NONE


def test_explicit_reverse_zone_overrides_the_mirror() -> None:
    tiny = ((-0.31, 0.1), (-0.35, 0.1), (-0.35, -0.1), (-0.31, -0.1))
    gate = SafetyGate(make_config(stop_zone_reverse=tiny))
    back = drive(gate, -0.3, circles=[(-0.6, 0.0, 0.1)])
    assert SafetyLimit.STOP_ZONE not in back.status.active_limits


# ---- speed caps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mass_kg", "cap_kmh"),
    [(30.0, 15.0), (100.0, 15.0), (100.01, 10.0), (230.0, 10.0), (230.01, 5.0), (400.0, 5.0)],
)
def test_over_speed_is_clipped_to_mass_class(mass_kg: float, cap_kmh: float) -> None:
    assert mass_class_speed_cap(mass_kg) == pytest.approx(cap_kmh / 3.6)
    gate = SafetyGate(make_config(total_mass_kg=mass_kg, approach_enabled=False))
    out = drive(gate, 10.0, 1.0)
    assert out.linear == pytest.approx(cap_kmh * KMH)
    assert out.angular == pytest.approx(0.1 * cap_kmh * KMH)  # the arc is kept
    assert out.status.active_limits == SafetyLimit.SPEED_CAP
    assert out.status.max_speed == pytest.approx(cap_kmh * KMH)
    # A command under the cap passes unchanged.
    assert drive(gate, 1.0, start=1.0).linear == pytest.approx(1.0)


def test_zone_cap_clips_below_mass_cap_and_clears_when_leaving() -> None:
    gate = SafetyGate(make_config(approach_enabled=False))
    gate.set_zone_speed_cap(5.0 * KMH)  # crosswalk / park
    out = drive(gate, 2.0)
    assert out.linear == pytest.approx(5.0 / 3.6)
    assert out.status.active_limits == SafetyLimit.ZONE_CAP
    out = drive(gate, 10.0, start=1.0)
    assert out.linear == pytest.approx(5.0 / 3.6)
    assert out.status.active_limits == SafetyLimit.ZONE_CAP | SafetyLimit.SPEED_CAP
    gate.set_zone_speed_cap(None)
    out = drive(gate, 2.0, start=2.0)
    assert out.linear == pytest.approx(2.0)
    with pytest.raises(ValueError, match="zone speed cap"):
        gate.set_zone_speed_cap(-1.0)


# ---- acceleration -----------------------------------------------------------------------------


def test_acceleration_limits_speeding_up_but_not_slowing_down() -> None:
    gate = SafetyGate(make_config(max_linear_accel=1.0, max_angular_accel=1.0))
    speeds = []
    for i in range(6):
        out = drive(gate, 1.0, steps=1, start=i * 0.1)
        speeds.append(out.linear)
        if i:
            assert SafetyLimit.ACCELERATION in out.status.active_limits
    assert speeds == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    # Slowing down is immediate.
    out = drive(gate, 0.1, steps=1, start=0.6)
    assert out.linear == pytest.approx(0.1)
    assert out.status.active_limits == SafetyLimit.NONE
    # A change of direction passes through zero: at most one step's worth backwards.
    out = drive(gate, -1.0, steps=1, start=0.7)
    assert out.linear == pytest.approx(-0.1)


def test_angular_acceleration_keeps_the_arc() -> None:
    gate = SafetyGate(make_config(max_linear_accel=100.0, max_angular_accel=1.0))
    drive(gate, 0.0, steps=1)
    out = drive(gate, 0.5, 1.0, steps=1, start=0.1)
    assert out.angular == pytest.approx(0.1)
    assert out.linear == pytest.approx(0.05)
    assert SafetyLimit.ACCELERATION in out.status.active_limits


# ---- watchdogs ------------------------------------------------------------------------------


def test_command_timeout_stops() -> None:
    gate = SafetyGate(make_config())
    gate.update_scan(make_scan([], 0.0))
    assert SafetyLimit.COMMAND_TIMEOUT in gate.step(0.0).status.active_limits  # none yet
    drive(gate, 1.0, steps=3)
    gate.update_scan(make_scan([], 0.6))
    out = gate.step(0.6)  # the last command is from 0.2 s: 0.4 s old, still fresh
    assert out.linear == pytest.approx(1.0)
    gate.update_scan(make_scan([], 0.75))
    out = gate.step(0.75)  # 0.55 s old
    assert out.linear == 0.0
    assert out.status.active_limits == SafetyLimit.COMMAND_TIMEOUT


def test_scan_timeout_stops() -> None:
    gate = SafetyGate(make_config())
    gate.update_command(VelocityCommand(1.0, 0.0, 0.0))
    out = gate.step(0.0)
    assert out.linear == 0.0
    assert out.status.active_limits == SafetyLimit.SCAN_TIMEOUT  # no scan yet
    drive(gate, 1.0, steps=3)
    gate.update_command(VelocityCommand(1.0, 0.0, 0.75))
    out = gate.step(0.75)  # the last scan is from 0.2 s
    assert out.linear == 0.0
    assert out.status.active_limits == SafetyLimit.SCAN_TIMEOUT


def test_non_finite_command_stops() -> None:
    gate = SafetyGate(make_config())
    drive(gate, 1.0)
    gate.update_command(VelocityCommand(math.nan, 0.0, 0.45))
    out = gate.step(0.45)
    assert (out.linear, out.angular) == (0.0, 0.0)
    assert out.status.interventions == 2  # the first (accel-limited) command and this one


# ---- e-stop -----------------------------------------------------------------------------------


def test_remote_estop_latches_until_reset_and_a_fresh_command() -> None:
    gate = SafetyGate(make_config())
    drive(gate, 1.0)
    gate.set_remote_estop(True)
    out = drive(gate, 1.0, steps=1, start=0.5)
    assert out.linear == 0.0
    assert out.status.estop_remote
    assert out.status.active_limits == SafetyLimit.ESTOP_REMOTE
    gate.set_remote_estop(False)  # the operator's button goes up: still latched
    out = drive(gate, 1.0, steps=3, start=0.6)
    assert out.linear == 0.0
    assert out.status.estop_remote
    assert gate.reset(now=0.85).accepted
    gate.update_scan(make_scan([], 0.9))
    out = gate.step(0.9)  # the command from before the reset is not resumed
    assert out.linear == 0.0
    assert out.status.active_limits == SafetyLimit.COMMAND_TIMEOUT
    assert not out.status.estop_remote
    out = drive(gate, 1.0, steps=2, start=1.0)
    assert out.linear == pytest.approx(1.0)


def test_hardware_estop_follows_button_but_needs_reset_after_release() -> None:
    gate = SafetyGate(make_config())
    drive(gate, 1.0)
    gate.set_hardware_estop(True)
    out = drive(gate, 1.0, steps=1, start=0.5)
    assert out.linear == 0.0
    assert out.status.estop_hardware
    assert out.status.active_limits == SafetyLimit.ESTOP_HARDWARE
    refused = gate.reset(now=0.6)
    assert not refused.accepted
    assert "pressed" in refused.reason
    gate.set_hardware_estop(False)
    out = drive(gate, 1.0, steps=2, start=0.7)
    assert out.linear == 0.0  # released but not reset
    assert out.status.estop_hardware
    assert gate.reset(now=0.85).accepted
    out = drive(gate, 1.0, steps=2, start=0.9)
    assert out.linear == pytest.approx(1.0)
    assert not out.status.estop_hardware


def test_reset_refused_while_remote_estop_still_asserted() -> None:
    gate = SafetyGate(make_config())
    gate.set_remote_estop(True)
    assert not gate.reset(now=0.0).accepted
    gate.set_remote_estop(False)
    assert gate.reset(now=0.0).accepted


# ---- interventions --------------------------------------------------------------------------


def test_interventions_count_each_changed_command_once() -> None:
    gate = SafetyGate(make_config())
    drive(gate, 1.0, steps=1)  # first command: nothing to accelerate from yet -> changed
    assert gate.interventions == 1
    drive(gate, 1.0, steps=4, start=0.1)  # passed unchanged
    assert gate.interventions == 1
    gate.update_scan(make_scan([(0.6, 0.0, 0.1)], 0.5))
    gate.update_command(VelocityCommand(1.0, 0.0, 0.5))
    for k in range(5):  # the same changed command, stepped repeatedly (watchdog timer)
        out = gate.step(0.5 + 0.01 * k)
    assert out.status.interventions == 2
    out = drive(gate, 1.0, circles=[(0.6, 0.0, 0.1)], steps=3, start=0.6)
    assert out.status.interventions == 5
    out = drive(gate, 0.0, circles=[(0.6, 0.0, 0.1)], steps=3, start=1.0)
    assert out.status.interventions == 5  # a zero command is not changed by stopping


# ---- vectorised -----------------------------------------------------------------------------


def _count_lines_in_gate(gate: SafetyGate, scan: LaserScanData, now: float) -> int:
    """Python lines executed inside safety_gate.py for one scan + step."""
    count = 0
    target = Path(sys.modules[SafetyGate.__module__].__file__ or "").resolve().name

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if Path(frame.f_code.co_filename).name != target:
            return None
        if event == "line":
            count += 1
        return tracer

    gate.update_command(VelocityCommand(1.5, 0.3, now))
    gate.update_scan(scan)  # warm the beam-angle cache for this scan size
    sys.settrace(tracer)
    try:
        gate.update_scan(scan)
        gate.step(now)
    finally:
        sys.settrace(None)
    return count


def test_scan_of_360_and_3600_points_same_decision_and_no_per_point_python_loop() -> None:
    circles = [(2.0, 0.3, 0.3), (1.0, -0.45, 0.05), (-1.0, 1.0, 0.5), (3.0, -2.0, 1.0)]
    results = {}
    lines = {}
    for beams in (360, 3600):
        gate = SafetyGate(make_config())
        drive(gate, 1.5, 0.3, circles=circles, steps=3)
        scan = make_scan(circles, 0.3, beams=beams)
        lines[beams] = _count_lines_in_gate(gate, scan, 0.3)
        gate.update_command(VelocityCommand(1.5, 0.3, 0.3))
        gate.update_scan(scan)
        results[beams] = gate.step(0.3)
    a, b = results[360], results[3600]
    assert a.status.active_limits == b.status.active_limits
    assert SafetyLimit.APPROACH in a.status.active_limits
    assert a.linear == pytest.approx(b.linear, abs=0.05)
    # Ten times the points, the same number of Python lines run: the work is all in numpy.
    assert lines[360] == lines[3600]
    assert lines[360] < 300


# ---- configuration --------------------------------------------------------------------------


def test_example_params_file_builds_the_config() -> None:
    params = load_params_file(ROOT / "config" / "safety.yaml")
    config = SafetyConfig.from_params(params)
    assert config.speed_cap == pytest.approx(15.0 / 3.6)
    assert len(config.footprint) == 4
    assert config.laser_pose == Pose2D(0.55, 0.0, 0.0)
    assert config.approach_use_obstacle_velocity is True
    # The stop zone holds the whole footprint, forwards and mirrored for reverse.
    fp = np.array(config.footprint)
    assert points_in_polygon(fp * 0.999, config.stop_zone).all()
    mid = config.footprint_mid_x
    assert points_in_polygon((fp - [mid, 0]) * 0.999 + [mid, 0], config.stop_zone_behind).all()
    gate = SafetyGate(config)
    assert drive(gate, 1.0, steps=12).linear == pytest.approx(1.0)  # 1 m/s² ramp


def _valid_params() -> dict[str, Any]:
    return {
        "total_mass_kg": 60.0,
        "footprint": [0.4, 0.3, -0.3, 0.3, -0.3, -0.3, 0.4, -0.3],
        "stop_zone": [0.7, 0.35, -0.3, 0.35, -0.3, -0.35, 0.7, -0.35],
        "slowdown_zone": [1.5, 0.5, -0.3, 0.5, -0.3, -0.5, 1.5, -0.5],
        "command_timeout": 1,  # an int where a float is expected is fine
        "use_sim_time": True,
        "tracking_alpha": 0.4,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"total_mass_kg": None}, "total_mass_kg: required"),
        ({"total_mass_kg": -5.0}, "total_mass_kg"),
        ({"stop_zone": [0.7, 0.35, -0.3]}, "stop_zone: a flat polygon"),
        ({"stop_zone": [0.0, 0.0, 1.0, 1.0]}, "stop_zone: a polygon needs at least 3"),
        ({"footprint": [0, 0, 1, 1, 2, 2]}, "footprint: polygon has no area"),
        ({"slowdown_scale": 1.5}, "slowdown_scale"),
        ({"scan_timeout": 0.0}, "scan_timeout"),
        ({"command_timeout": True}, "command_timeout: expected a number"),
        ({"approach_enabled": "yes"}, "approach_enabled: expected true or false"),
        ({"min_points": 1.5}, "min_points: expected an integer"),
        ({"laser_pose": [0.1, 0.2]}, "laser_pose: expected 3 numbers"),
        ({"stop_zone_typo": 1.0}, "unknown safety parameter"),
    ],
)
def test_bad_params_are_rejected_with_the_key_named(change: dict[str, Any], message: str) -> None:
    params = _valid_params()
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    with pytest.raises(SafetyConfigError, match=message):
        SafetyConfig.from_params(params)


def test_valid_flat_params_build_polygons() -> None:
    config = SafetyConfig.from_params(_valid_params())
    assert config.stop_zone[0] == (0.7, 0.35)
    assert config.command_timeout == 1.0
    assert config.stop_zone_behind[0] == pytest.approx((-0.6, -0.35))  # mirrored about 0.05

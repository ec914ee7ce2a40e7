"""Diff-drive kinematics and encoder odometry: exact inverses, arc-preserving limits, wrapping
counters, reboots, and a pose that closes on a full circle."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery_robot.diff_drive import (
    DiffDriveGeometry,
    OdometryIntegrator,
    integrate_arc,
    normalize_angle,
)

GEOMETRY = DiffDriveGeometry(wheel_radius=0.1, track_width=0.5, ticks_per_rev=4096,
                             max_wheel_speed=40.0)
TICKS_PER_M = 4096 / (2 * math.pi * 0.1)


def test_twist_to_wheels_follows_rep_103() -> None:
    assert GEOMETRY.wheel_speeds(1.0, 0.0) == pytest.approx((10.0, 10.0))
    left, right = GEOMETRY.wheel_speeds(0.0, 1.0)  # counter-clockwise: right wheel forward
    assert (left, right) == pytest.approx((-2.5, 2.5))


@given(st.floats(-3.0, 3.0), st.floats(-6.0, 6.0))
def test_wheel_speeds_and_body_twist_are_inverse_within_limits(linear: float,
                                                                angular: float) -> None:
    left, right = GEOMETRY.wheel_speeds(linear, angular)
    assert max(abs(left), abs(right)) <= 40.0 + 1e-9
    v, w = GEOMETRY.body_twist(left, right)
    if max(abs(left), abs(right)) < 40.0 - 1e-9:  # not limited: exact inverse
        assert (v, w) == pytest.approx((linear, angular), abs=1e-9)
    else:  # limited: same arc (curvature), slower
        assert v * angular == pytest.approx(w * linear, abs=1e-9)


def test_limit_scales_both_wheels_keeping_the_arc() -> None:
    left, right = GEOMETRY.wheel_speeds(5.0, 2.0)  # 50 and 55 rad/s asked
    assert right == pytest.approx(40.0)
    assert left / right == pytest.approx((5.0 - 0.5) / (5.0 + 0.5))


def test_bad_geometry_and_twist_are_refused() -> None:
    with pytest.raises(ValueError, match="wheel_radius"):
        DiffDriveGeometry(wheel_radius=0.0, track_width=0.5, ticks_per_rev=10)
    with pytest.raises(ValueError, match="ticks_per_rev"):
        DiffDriveGeometry(wheel_radius=0.1, track_width=0.5, ticks_per_rev=0)
    with pytest.raises(ValueError, match="finite"):
        GEOMETRY.wheel_speeds(math.nan, 0.0)


def test_straight_line_distance_and_speed_from_ticks() -> None:
    odometry = OdometryIntegrator(GEOMETRY)
    odometry.update(0, 0, 0)
    ticks = round(0.02 * TICKS_PER_M)  # 1 m/s for 20 ms per step
    for step in range(1, 51):
        estimate = odometry.update(step * 20_000, step * ticks, step * ticks)
    assert estimate.x == pytest.approx(50 * ticks / TICKS_PER_M)
    assert estimate.y == pytest.approx(0.0)
    assert estimate.linear == pytest.approx(ticks / TICKS_PER_M / 0.02)
    assert estimate.angular == pytest.approx(0.0)
    assert estimate.distance == pytest.approx(estimate.x)


def test_a_full_circle_closes() -> None:
    odometry = OdometryIntegrator(GEOMETRY)
    radius, steps = 1.0, 400
    left_arc = 2 * math.pi * (radius - 0.25) / steps  # metres per step on each wheel
    right_arc = 2 * math.pi * (radius + 0.25) / steps
    left = right = 0
    odometry.update(0, 0, 0)
    for step in range(1, steps + 1):
        left, right = round(step * left_arc * TICKS_PER_M), round(step * right_arc * TICKS_PER_M)
        estimate = odometry.update(step * 20_000, left, right)
    assert (estimate.x, estimate.y) == pytest.approx((0.0, 0.0), abs=2e-3)
    assert abs(normalize_angle(estimate.yaw)) < 2e-3
    halfway = integrate_arc(0.0, 0.0, 0.0, math.pi * radius, math.pi)
    assert halfway == pytest.approx((0.0, 2 * radius, math.pi), abs=1e-9)


def test_counters_and_clock_wrap_exactly() -> None:
    odometry = OdometryIntegrator(GEOMETRY)
    start_ticks = (1 << 31) - 100  # int32 counter about to wrap
    start_time = (1 << 32) - 10_000  # uint32 microseconds about to wrap
    odometry.update(start_time, start_ticks, -start_ticks - 1)
    estimate = odometry.update(10_000, -(1 << 31) + 100, (1 << 31) - 101)  # +200 / -200 ticks
    assert estimate.distance == pytest.approx(0.0)
    assert estimate.angular == pytest.approx(-400 / TICKS_PER_M / 0.5 / 0.02)


def test_a_controller_reboot_rebaselines_instead_of_jumping() -> None:
    odometry = OdometryIntegrator(GEOMETRY)
    odometry.update(5_000_000, 1_000_000, 1_000_000)
    odometry.update(5_020_000, 1_000_100, 1_000_100)
    x_before = odometry.x
    odometry.update(20_000, 0, 0)  # the clock went back: rebooted
    estimate = odometry.update(40_000, 100, 100)
    assert odometry.resets == 1
    assert estimate.x == pytest.approx(x_before + 100 / TICKS_PER_M)
    odometry.update(60_000, 10_000_000, 100)  # impossible in 20 ms: a reset too
    assert odometry.resets == 2
    assert odometry.x == pytest.approx(x_before + 100 / TICKS_PER_M)


def test_rebaseline_ignores_the_gap() -> None:
    odometry = OdometryIntegrator(GEOMETRY)
    odometry.update(0, 0, 0)
    odometry.rebaseline()
    assert odometry.update(20_000, 500, 500).x == 0.0
    assert odometry.update(40_000, 600, 600).x == pytest.approx(100 / TICKS_PER_M)

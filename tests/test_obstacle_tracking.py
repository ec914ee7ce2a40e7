"""Obstacle tracking (delivery_robot.obstacle_tracking): clusters, ids, velocities.

Scenes are ray cast in the fixed frame (odom) from the scanner of a moving robot, so the
true positions and velocities are known; range noise comes from a seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from delivery_robot.obstacle_tracking import (
    ObstacleTracker,
    TrackerConfig,
    TrackerConfigError,
    TrackingResult,
    cluster_scan,
)
from delivery_robot.safety_gate import (
    LaserScanData,
    Pose2D,
    SafetyConfig,
    SafetyGate,
    SafetyLimit,
    VelocityCommand,
    scan_to_base_points,
)

BEAMS = 360
ANGLE_MIN = -math.pi
INCREMENT = 2 * math.pi / BEAMS
Circle = tuple[float, float, float]  # x, y, radius in odom


def cast_scan(
    robot: Pose2D,
    circles: Sequence[Circle],
    stamp: float,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> LaserScanData:
    """A full-circle scan from a scanner at base_link of `robot` (odom pose)."""
    angles = robot.yaw + ANGLE_MIN + INCREMENT * np.arange(BEAMS)
    dx, dy = np.cos(angles), np.sin(angles)
    ranges = np.full(BEAMS, np.inf)
    for cx, cy, r in circles:
        mx, my = robot.x - cx, robot.y - cy
        b = mx * dx + my * dy
        disc = b * b - (mx * mx + my * my - r * r)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        ranges = np.where((disc >= 0) & (t > 0), np.minimum(ranges, t), ranges)
    if noise and rng is not None:
        ranges = ranges + rng.normal(0.0, noise, BEAMS)
    return LaserScanData(ranges, ANGLE_MIN, INCREMENT, 0.05, 30.0, stamp)


def track_of_cluster_near(result: TrackingResult, odom_xy: tuple[float, float]) -> int:
    """The track id of the cluster whose odom centroid is nearest `odom_xy`."""
    pose = result.robot_pose
    c = result.clusters.centroids
    wx = pose.x + math.cos(pose.yaw) * c[:, 0] - math.sin(pose.yaw) * c[:, 1]
    wy = pose.y + math.sin(pose.yaw) * c[:, 0] + math.cos(pose.yaw) * c[:, 1]
    nearest = int(np.argmin(np.hypot(wx - odom_xy[0], wy - odom_xy[1])))
    return result.cluster_track_ids[nearest]


def test_moving_and_static_obstacles_while_the_robot_drives_and_turns() -> None:
    rng = np.random.default_rng(11)
    tracker = ObstacleTracker()
    dt = 0.1
    walker_v = (0.8, -0.6)
    ids_walker: list[int] = []
    ids_post: list[int] = []
    result: TrackingResult | None = None
    for k in range(25):
        t = k * dt
        # The robot drives at 1 m/s while turning at 0.2 rad/s.
        yaw = 0.2 * t
        robot = Pose2D(5.0 * math.sin(yaw), 5.0 * (1 - math.cos(yaw)), yaw)
        walker = (3.0 + walker_v[0] * t, 2.5 + walker_v[1] * t, 0.25)
        post = (4.0, -1.5, 0.15)
        result = tracker.update(cast_scan(robot, [walker, post], t, 0.01, rng), robot)
        ids_walker.append(track_of_cluster_near(result, walker[:2]))
        ids_post.append(track_of_cluster_near(result, post[:2]))
    assert result is not None
    assert len(set(ids_walker)) == 1
    assert len(set(ids_post)) == 1
    assert ids_walker[0] > 0
    assert ids_post[0] > 0
    assert ids_walker[0] != ids_post[0]
    walker_track = result.track(ids_walker[0])
    post_track = result.track(ids_post[0])
    assert walker_track is not None
    assert post_track is not None
    assert walker_track.velocity == pytest.approx(walker_v, abs=0.15)
    assert post_track.speed < 0.1  # the robot's own motion is not obstacle motion
    assert walker_track.hits == 25
    assert 0.1 < walker_track.radius < 0.3


def test_velocities_in_base_link_axes_per_beam() -> None:
    tracker = ObstacleTracker()
    robot = Pose2D(1.0, 2.0, math.pi / 2)  # facing odom +y
    result = None
    for k in range(16):
        t = k * 0.1
        obstacle = (1.0 + 0.5 * t, 5.0, 0.2)  # 3 m ahead, moving along odom +x
        result = tracker.update(cast_scan(robot, [obstacle], t), robot)
    assert result is not None
    velocities = result.point_velocities_base()
    assert velocities.shape == (BEAMS, 2)
    hit = np.isfinite(cast_scan(robot, [(1.0 + 0.5 * 1.5, 5.0, 0.2)], 1.5).ranges)
    # odom +x is base_link -y for a robot facing odom +y.
    # (Beams entering and leaving the cluster make the centroid jitter by about a centimetre,
    # hence the tolerance.)
    assert velocities[hit] == pytest.approx(np.tile([0.0, -0.5], (int(hit.sum()), 1)), abs=0.1)
    assert not velocities[~hit].any()


def test_velocity_only_after_min_hits() -> None:
    tracker = ObstacleTracker(TrackerConfig(min_hits_for_velocity=3))
    robot = Pose2D()
    first = tracker.update(cast_scan(robot, [(3.0, 0.0, 0.2)], 0.0), robot)
    second = tracker.update(cast_scan(robot, [(3.1, 0.0, 0.2)], 0.1), robot)
    assert not first.point_velocities_base().any()
    assert not second.point_velocities_base().any()  # one difference is not yet a velocity
    third = tracker.update(cast_scan(robot, [(3.2, 0.0, 0.2)], 0.2), robot)
    assert third.point_velocities_base().any()


def test_clusters_split_on_gaps_and_join_across_the_scan_seam() -> None:
    robot = Pose2D()
    # Two people 0.6 m apart at 3 m, and a post right behind the robot, where the scan's
    # first and last beams meet (angle -pi / +pi).
    scan = cast_scan(robot, [(3.0, 0.3, 0.2), (3.0, -0.5, 0.2), (-2.0, 0.0, 0.2)], 0.0)
    points, valid = scan_to_base_points(scan, Pose2D())
    clusters = cluster_scan(points, valid, scan.ranges, scan.angle_increment, TrackerConfig())
    assert clusters.centroids.shape == (3, 2)
    behind = int(np.argmin(clusters.centroids[:, 0]))
    assert clusters.centroids[behind] == pytest.approx([-1.85, 0.0], abs=0.05)
    labels = clusters.beam_labels
    assert labels[0] == labels[-1] == behind  # one cluster across the seam
    assert np.count_nonzero(labels >= 0) == int(clusters.counts.sum())


def test_wide_structure_is_clustered_but_not_tracked_and_noise_is_dropped() -> None:
    robot = Pose2D()
    ranges = np.full(BEAMS, np.inf)
    angles = ANGLE_MIN + INCREMENT * np.arange(BEAMS)
    wall = np.abs(angles - math.pi / 2) < math.radians(50)  # a wall 2 m to the left
    ranges[wall] = 2.0 / np.sin(angles[wall])
    ranges[180] = 1.0  # a lone return: noise
    scan = LaserScanData(ranges, ANGLE_MIN, INCREMENT, 0.05, 30.0, 0.0)
    result = ObstacleTracker().update(scan, robot)
    assert result.clusters.centroids.shape == (1, 2)
    assert result.clusters.radii[0] > 1.0
    assert result.cluster_track_ids == (-1,)
    assert result.tracks == ()
    assert result.clusters.beam_labels[180] == -1


def test_lost_track_is_dropped_and_a_far_reappearance_gets_a_new_id() -> None:
    tracker = ObstacleTracker(TrackerConfig(max_missed=2))
    robot = Pose2D()
    first = tracker.update(cast_scan(robot, [(3.0, 0.0, 0.2)], 0.0), robot)
    (track,) = first.tracks
    for k in range(1, 4):
        tracker.update(cast_scan(robot, [], 0.1 * k), robot)
    later = tracker.update(cast_scan(robot, [(3.0, 0.0, 0.2)], 0.5), robot)
    assert [t.track_id for t in later.tracks] == [track.track_id + 1]
    jumped = tracker.update(cast_scan(robot, [(3.0, 2.0, 0.2)], 0.6), robot)
    assert track.track_id + 1 not in jumped.cluster_track_ids  # beyond the gate


def test_tracked_velocity_makes_the_gate_slow_for_an_oncoming_pedestrian() -> None:
    footprint = ((0.4, 0.3), (-0.3, 0.3), (-0.3, -0.3), (0.4, -0.3))
    config = SafetyConfig(
        total_mass_kg=60.0,
        footprint=footprint,
        stop_zone=((0.7, 0.35), (-0.3, 0.35), (-0.3, -0.35), (0.7, -0.35)),
        slowdown_zone=((1.5, 0.5), (-0.3, 0.5), (-0.3, -0.5), (1.5, -0.5)),
        approach_use_obstacle_velocity=True,
        max_linear_accel=100.0,
    )
    gate = SafetyGate(config)
    tracker = ObstacleTracker()
    out = None
    for k in range(6):
        t = k * 0.1
        robot = Pose2D(1.0 * t, 0.0, 0.0)
        pedestrian = (5.0 - 1.5 * t, 0.0, 0.25)  # walking straight at the robot
        scan = cast_scan(robot, [pedestrian], t)
        result = tracker.update(scan, robot)
        gate.update_scan(scan, point_velocities=result.point_velocities_base())
        gate.update_command(VelocityCommand(1.0, 0.0, t))
        out = gate.step(t)
    assert out is not None
    # At 0.5 s: pedestrian surface at 4.0 m, robot front at 0.9 m: a 3.1 m gap. Static, the
    # TTC is 3.1 s (no limit); closing at 2.5 m/s it is 1.24 s < 1.5 s.
    assert SafetyLimit.APPROACH in out.status.active_limits
    assert out.linear < 0.9


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tracking_alpha": 0.0}, "tracking_alpha"),
        ({"tracking_gate_distance": -1.0}, "tracking_gate_distance"),
        ({"tracking_max_missed": 1.5}, "tracking_max_missed: expected an integer"),
        ({"tracking_alpha": True}, "tracking_alpha: expected a number"),
        ({"tracking_typo": 1.0}, "unknown tracking parameter"),
    ],
)
def test_bad_tracking_params_are_rejected(params: dict[str, Any], message: str) -> None:
    with pytest.raises(TrackerConfigError, match=message):
        TrackerConfig.from_params(params)


def test_tracking_params_from_the_flat_dict() -> None:
    config = TrackerConfig.from_params(
        {"tracking_alpha": 0.4, "tracking_max_missed": 3, "total_mass_kg": 60.0}
    )
    assert config.alpha == 0.4
    assert config.max_missed == 3

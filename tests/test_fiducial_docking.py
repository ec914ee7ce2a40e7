"""Fiducial docking: marker detection and tracking, pose accuracy on synthetic frames with known
ground truth, frame conventions, and the final-alignment controller in a kinematic loop."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from delivery_robot import synthetic_scenes as ss
from delivery_robot.fiducial_docking import (
    CameraModel,
    DetectorConfig,
    DockFinder,
    DockFinderConfig,
    DockingConfig,
    DockingController,
    DockingStatus,
    MarkerTracker,
    PlanarPose,
    RigidTransform,
    alignment_errors,
    camera_mount,
    dock_in_base,
    quaternion_from_rotation,
    rotation_angle,
    rotation_from_rpy,
)

CAMERA = ss.DEFAULT_CAMERA
LENGTH = 0.20


def gray(frame: ss.MarkerFrame) -> np.ndarray:
    return cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)


def pose_errors(finder: DockFinder, frame: ss.MarkerFrame) -> tuple[float, float]:
    """(position error m, rotation error deg) of the nearest marker found; inf if none."""
    poses = finder.find(gray(frame))
    if not poses:
        return math.inf, math.inf
    truth = frame.markers[0].camera_from_marker
    found = poses[0].camera_from_marker
    return (float(np.linalg.norm(found.translation - truth.translation)),
            math.degrees(rotation_angle(found.rotation, truth.rotation)))


# ---- pose accuracy -----------------------------------------------------------------------------


def test_dock_pose_within_1cm_1deg_at_half_to_two_metres() -> None:
    frames = ss.dock_trials(16, seed=101)
    finder = DockFinder(DockFinderConfig(DetectorConfig(track=False)), CAMERA)
    errors = [pose_errors(finder, f) for f in frames]
    assert all(0.5 <= f.markers[0].distance_m <= 2.0 for f in frames)
    within = [e < 0.01 and a < 1.0 for e, a in errors]
    assert sum(within) >= 15, errors
    # And well inside the tolerance typically, not just under it.
    assert np.median([e for e, _ in errors]) < 0.003


def test_edge_refinement_is_what_makes_the_pose_accurate() -> None:
    frames = ss.dock_trials(12, seed=102)
    edges = DockFinder(DockFinderConfig(DetectorConfig(track=False)), CAMERA)
    plain = DockFinder(DockFinderConfig(DetectorConfig(track=False, refine="none")), CAMERA)
    err_edges = np.median([pose_errors(edges, f)[0] for f in frames])
    err_plain = np.median([pose_errors(plain, f)[0] for f in frames])
    assert err_edges * 3 < err_plain


def test_lens_distortion_from_camera_info_is_undone() -> None:
    distorted = CameraModel(640, 480, CAMERA.k, (-0.28, 0.09, 0.001, -0.0005, 0.0))
    rng = np.random.default_rng(5)
    pose = ss.facing_pose(0.25, 0.12, 1.2, yaw=0.3)  # off-centre, where distortion bends most
    frame = ss.render_markers(distorted, [ss.PlacedMarker(7, LENGTH, pose)],
                              ss.Photometry(noise_sigma=1.0), rng)
    knows = DockFinder(DockFinderConfig(DetectorConfig(track=False)), distorted)
    ignores = DockFinder(DockFinderConfig(DetectorConfig(track=False)),
                         replace(distorted, d=(0.0,) * 5))
    position, angle = pose_errors(knows, frame)
    assert position < 0.005
    assert angle < 1.0
    assert pose_errors(ignores, frame)[0] > 0.02


def test_srgb_camera_needs_its_tone_curve_for_exact_distances() -> None:
    rng = np.random.default_rng(8)
    frames = [ss.render_markers(CAMERA, [ss.PlacedMarker(
        7, LENGTH, ss.random_dock_pose(rng, CAMERA, LENGTH, (1.2, 2.0)))],
        replace(ss.random_photometry(rng, 0.5, gamma=2.2), blur_sigma=0.9), rng)
        for _ in range(6)]
    linear = DockFinder(DockFinderConfig(DetectorConfig(track=False)), CAMERA)
    srgb = DockFinder(DockFinderConfig(DetectorConfig(track=False, tone_gamma=2.2)), CAMERA)
    assert max(pose_errors(srgb, f)[0] for f in frames) < 0.004
    assert np.median([pose_errors(linear, f)[0] for f in frames]) > 0.004


def test_wider_camera_measures_the_same() -> None:
    camera = ss.default_camera(1280, 720)
    frames = ss.dock_trials(6, seed=103, camera=camera)
    finder = DockFinder(DockFinderConfig(DetectorConfig(track=False)), camera)
    assert all(e < 0.01 and a < 1.0 for e, a in (pose_errors(finder, f) for f in frames))


# ---- detection and tracking --------------------------------------------------------------------


@pytest.mark.slow
def test_tracking_searches_around_the_marker_and_recovers_after_occlusion() -> None:
    frames = ss.approach_sequence(7, frames=40, occluded_frames=3)
    tracker = MarkerTracker(DetectorConfig(), CAMERA)
    default = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50))
    tracked_hits = default_hits = 0
    for frame in frames:
        g = gray(frame)
        found = tracker.detect(g)
        truth = frame.markers[0]
        if truth.occluded_fraction > 0.5:
            assert not found
            continue
        _, ids, _ = default.detectMarkers(g)
        default_hits += ids is not None and 7 in ids.ravel()
        if found:
            tracked_hits += 1
            assert found[0].marker_id == 7
            assert np.abs(found[0].corners - truth.corners).max() < 0.2
    assert tracked_hits >= default_hits >= len(frames) - 5
    stats = tracker.stats
    assert stats.roi_hits >= len(frames) * 0.7  # most frames needed only the small region
    assert 2 <= stats.full_searches <= 10  # the first frame, the occlusion, little else


def test_colour_frames_give_the_same_poses_as_grey_ones() -> None:
    frames = ss.approach_sequence(8, frames=12, occluded_frames=0)
    grey = DockFinder(DockFinderConfig(), CAMERA)
    colour = DockFinder(DockFinderConfig(), CAMERA)
    for frame in frames:
        a, b = grey.find(gray(frame)), colour.find(frame.image)
        assert [p.marker_id for p in a] == [p.marker_id for p in b]
        for p, q in zip(a, b, strict=True):
            np.testing.assert_allclose(p.corners, q.corners, atol=1e-6)
    assert colour.tracker.stats.roi_hits >= 10


def test_only_the_configured_markers_are_docks() -> None:
    rng = np.random.default_rng(11)
    markers = [ss.PlacedMarker(3, LENGTH, ss.facing_pose(-0.3, 0.0, 1.5)),
               ss.PlacedMarker(7, LENGTH, ss.facing_pose(0.3, 0.0, 1.6))]
    frame = ss.render_markers(CAMERA, markers, ss.Photometry(noise_sigma=1.0), rng)
    everything = DockFinder(DockFinderConfig(DetectorConfig(track=False)), CAMERA).find(
        gray(frame))
    assert sorted(p.marker_id for p in everything) == [3, 7]
    assert everything[0].marker_id == 3  # nearest first
    docks = DockFinder(DockFinderConfig(DetectorConfig(track=False, marker_ids=(7,))),
                       CAMERA).find(gray(frame))
    assert [p.marker_id for p in docks] == [7]


def test_bad_inputs_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="non-positive focal"):
        CameraModel(640, 480, (0.0,) * 9)
    with pytest.raises(ValueError, match="not supported"):
        CameraModel(640, 480, CAMERA.k, (), "fisheye_magic")
    with pytest.raises(ValueError, match="unknown dictionary"):
        DetectorConfig(dictionary="DICT_9X9")
    with pytest.raises(ValueError, match="refine must be"):
        DetectorConfig(refine="magic")
    finder = DockFinder(DockFinderConfig(), CAMERA)
    with pytest.raises(ValueError, match="frame is 320x240"):
        finder.find(np.zeros((240, 320), np.uint8))
    with pytest.raises(ValueError, match="grey or BGR uint8"):
        finder.tracker.detect(np.zeros((480, 640, 4), np.uint8))


def test_camera_model_round_trips_points_through_distortion() -> None:
    for camera in (CameraModel(640, 480, CAMERA.k, (-0.3, 0.1, 0.002, 0.001, -0.02)),
                   CameraModel(640, 480, CAMERA.k, (0.05, -0.01, 0.002, -0.001),
                               "equidistant")):
        pixels = np.array([[10.0, 12.0], [320.0, 240.0], [600.0, 450.0], [100.0, 400.0]])
        back = camera.distort(camera.undistort(pixels))
        np.testing.assert_allclose(back, pixels, atol=1e-3)
    half = CAMERA.scaled(320, 240)
    assert half.k[0] == pytest.approx(262.5)
    assert half.k[2] == pytest.approx(159.5)  # pixel centres: (319.5 + 0.5) / 2 - 0.5


# ---- frames ------------------------------------------------------------------------------------


def test_dock_frame_in_base_link_for_a_marker_straight_ahead() -> None:
    mount = camera_mount(0.3, 0.0, 0.45, 0.0, 0.0, 0.0)
    marker = ss.facing_pose(0.0, 0.0, 1.0)  # 1 m ahead of the camera, facing it
    dock = dock_in_base(marker, mount)
    np.testing.assert_allclose(dock.translation, [1.3, 0.0, 0.45], atol=1e-9)
    # x into the dock face = the robot's forward direction; z up.
    np.testing.assert_allclose(dock.rotation, np.eye(3), atol=1e-9)
    planar = PlanarPose.from_transform(dock)
    assert (planar.x, planar.y, planar.yaw) == pytest.approx((1.3, 0.0, 0.0))


def test_dock_yaw_sign_follows_the_marker_turn() -> None:
    mount = camera_mount(0.3, 0.0, 0.45, 0.0, 0.0, 0.0)
    # Marker 2 m ahead and 0.5 m to the left of the robot, its face turned towards the robot's
    # path; the dock axis then points ahead and to the left: positive yaw in base_link.
    yaw = 0.2
    in_camera = ss.facing_pose(-0.5, 0.0, 2.0, yaw=yaw)
    planar = PlanarPose.from_transform(dock_in_base(in_camera, mount))
    assert planar.x == pytest.approx(2.3)
    assert planar.y == pytest.approx(0.5)
    assert planar.yaw == pytest.approx(yaw)


def test_rotation_helpers_agree() -> None:
    rotation = rotation_from_rpy(0.1, -0.2, 0.3)
    x, y, z, w = quaternion_from_rotation(rotation)
    back = RigidTransform(rotation).quaternion()
    assert back == pytest.approx((x, y, z, w))
    rvec, _ = cv2.Rodrigues(rotation)
    angle = float(np.linalg.norm(rvec))
    assert 2 * math.acos(w) == pytest.approx(angle)
    assert rotation_angle(rotation, rotation) == pytest.approx(0.0, abs=1e-7)


# ---- final alignment ---------------------------------------------------------------------------


def simulate(controller: DockingController, start: tuple[float, float, float],
             dock: tuple[float, float, float] = (3.0, 1.0, 0.4), seconds: float = 60.0,
             dt: float = 0.05, noise: float = 0.0, seed: int = 0,
             blind_after: float | None = None) -> tuple[list[tuple[float, float, float]],
                                                          list[object]]:
    """A unicycle robot in a world with the dock at `dock` (x, y, heading into its face);
    the controller sees the dock in base_link (with noise), every control period."""
    rng = np.random.default_rng(seed)
    x, y, heading = start
    poses, commands = [], []
    for step in range(int(seconds / dt)):
        t = step * dt
        dx, dy = dock[0] - x, dock[1] - y
        c, s = math.cos(heading), math.sin(heading)
        seen = PlanarPose(c * dx + s * dy + rng.normal(0, noise),
                          -s * dx + c * dy + rng.normal(0, noise),
                          dock[2] - heading + rng.normal(0, noise))
        visible = blind_after is None or t < blind_after
        command = controller.update(seen if visible else None, t)
        commands.append(command)
        if command.done:
            break
        x += command.linear * math.cos(heading) * dt
        y += command.linear * math.sin(heading) * dt
        heading += command.angular * dt
        poses.append((x, y, heading))
    return poses, commands


@pytest.mark.parametrize("start", [(1.8, 0.0, 0.2), (1.9, 0.6, 0.6), (1.6, 1.5, 0.0),
                                   (2.2, 1.05, 0.4)])
def test_controller_docks_within_tolerance(start: tuple[float, float, float]) -> None:
    config = DockingConfig()
    controller = DockingController(config)
    dock = (3.0, 1.0, 0.4)
    _, commands = simulate(controller, start, dock, noise=0.0005, seed=3)
    final = commands[-1]
    assert final.status is DockingStatus.DOCKED  # type: ignore[attr-defined]
    assert abs(final.distance_error) <= config.distance_tolerance_m + 0.002  # type: ignore
    assert abs(final.lateral_error) <= config.lateral_tolerance_m + 0.002  # type: ignore
    assert abs(final.yaw_error) <= config.yaw_tolerance_rad + 0.002  # type: ignore
    for command in commands:
        assert abs(command.linear) <= config.max_linear_speed + 1e-9  # type: ignore
        assert abs(command.angular) <= config.max_angular_speed + 1e-9  # type: ignore


def test_controller_backs_off_when_too_close_to_fix_the_offset() -> None:
    controller = DockingController(DockingConfig())
    # 10 cm beyond the standoff but 15 cm to the side: cannot be fixed by driving on.
    dock = (3.0, 1.0, 0.0)
    start = (3.0 - 0.35 - 0.10, 1.15, 0.0)
    _, commands = simulate(controller, start, dock)
    statuses = [c.status for c in commands]  # type: ignore[attr-defined]
    assert DockingStatus.BACKING_OFF in statuses
    assert any(c.linear < 0 for c in commands)  # type: ignore[attr-defined]
    assert statuses[-1] is DockingStatus.DOCKED
    assert controller.retries >= 1


def test_controller_stops_when_the_dock_is_lost_and_resumes() -> None:
    controller = DockingController(DockingConfig(pose_timeout_s=0.5))
    first = controller.update(PlanarPose(1.5, 0.0, 0.0), 0.0)
    assert first.status is DockingStatus.APPROACHING
    assert first.linear > 0
    held = controller.update(None, 0.3)
    assert held.linear > 0  # a pose 0.3 s old is still used
    lost = controller.update(None, 0.6)
    assert (lost.status, lost.linear, lost.angular) == (DockingStatus.LOST, 0.0, 0.0)
    again = controller.update(PlanarPose(1.4, 0.0, 0.0), 0.7)
    assert again.status is DockingStatus.APPROACHING
    assert again.linear > 0
    assert DockingController(DockingConfig()).update(None, 0.0).status is DockingStatus.LOST


def test_controller_gives_up_after_its_retries() -> None:
    controller = DockingController(DockingConfig(max_retries=0))
    command = controller.update(PlanarPose(0.40, 0.2, 0.0), 0.0)  # at standoff, 20 cm off
    assert command.status is DockingStatus.FAILED
    assert command.done
    assert controller.update(PlanarPose(1.0, 0.0, 0.0), 0.1).linear == 0.0
    controller.reset()
    assert controller.update(PlanarPose(1.0, 0.0, 0.0), 0.2).linear > 0


def test_alignment_errors_and_config_checks() -> None:
    # Dock 1 m ahead, 0.1 m to the left, turned by 0.1 rad; standoff 0.35 m.
    distance, lateral, yaw = alignment_errors(PlanarPose(1.0, 0.1, 0.1), 0.35)
    c, s = math.cos(0.1), math.sin(0.1)
    assert distance == pytest.approx(c * 1.0 + s * 0.1 - 0.35)
    assert lateral == pytest.approx(s * 1.0 - c * 0.1)
    assert yaw == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="min_linear_speed must be <="):
        DockingConfig(min_linear_speed=0.5, max_linear_speed=0.1)
    with pytest.raises(ValueError, match="max_approach_angle_rad"):
        DockingConfig(max_approach_angle_rad=2.0)

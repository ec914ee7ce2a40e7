"""The generated test data: deterministic for a seed, and its ground truth is where the
rendered things really are (otherwise perception would be judged against wrong answers)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from delivery_robot import synthetic_scenes as ss
from delivery_robot.fiducial_docking import CameraModel, RigidTransform
from delivery_robot.handoff_credentials import make_qr_token

CAMERA = ss.DEFAULT_CAMERA
TOKEN = make_qr_token(b"k" * 32, "order-7", 1_900_000_000, b"n" * 12)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b = ss.dock_trials(2, seed=4), ss.dock_trials(2, seed=4)
    c = ss.dock_trials(2, seed=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.markers[0].corners, y.markers[0].corners)
    assert not np.array_equal(a[0].image, c[0].image)
    q1 = ss.awaiting_sequence(2, TOKEN, frames=6)
    q2 = ss.awaiting_sequence(2, TOKEN, frames=6)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(q1, q2, strict=True))
    layout = ss.CompartmentLayout()
    np.testing.assert_array_equal(ss.compartment_frame(layout, 3, True).image,
                                  ss.compartment_frame(layout, 3, True).image)


def test_rendering_is_exact_to_a_fraction_of_a_pixel() -> None:
    """A white square on black: its rendered area and centroid are those of its projection."""
    canvas = np.zeros((CAMERA.height, CAMERA.width, 3), np.float32)
    side = 0.2
    pose = ss.facing_pose(0.0513, -0.0271, 1.137, yaw=0.31, pitch=-0.12)
    texture = np.full((64, 64), 255, np.uint8)
    ss.render_plane(canvas, texture, (side, side), CAMERA, pose)
    image = canvas[:, :, 0] / 255.0
    h = side / 2
    corners = CAMERA.project(np.array([[-h, h, 0], [h, h, 0], [h, -h, 0], [-h, -h, 0.0]]), pose)
    x, y = corners[:, 0], corners[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert image.sum() == pytest.approx(area, rel=2e-4)
    ys, xs = np.mgrid[0:CAMERA.height, 0:CAMERA.width]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    cx = float(np.sum((x + np.roll(x, -1)) * cross) / (6 * area * np.sign(cross.sum())))
    cy = float(np.sum((y + np.roll(y, -1)) * cross) / (6 * area * np.sign(cross.sum())))
    assert float((image * xs).sum() / image.sum()) == pytest.approx(cx, abs=0.01)
    assert float((image * ys).sum() / image.sum()) == pytest.approx(cy, abs=0.01)


def test_marker_truth_matches_what_a_detector_finds() -> None:
    frame = ss.dock_trials(1, seed=12, strength=0.3)[0]
    truth = frame.markers[0]
    assert truth.in_view
    assert truth.occluded_fraction == 0.0
    assert 0.5 <= truth.distance_m <= 2.0
    detector = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50))
    corners, ids, _ = detector.detectMarkers(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY))
    assert ids is not None
    assert list(ids.ravel()) == [7]
    assert np.abs(corners[0].reshape(4, 2) - truth.corners).max() < 1.5  # integer corners


def test_distorted_cameras_bend_the_rendering_like_their_model() -> None:
    camera = CameraModel(640, 480, CAMERA.k, (-0.3, 0.1, 0.0, 0.0, 0.0))
    rng = np.random.default_rng(3)
    pose = ss.facing_pose(0.3, 0.2, 1.0)
    frame = ss.render_markers(camera, [ss.PlacedMarker(7, 0.2, pose)], ss.Photometry(), rng)
    detector = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50))
    gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
    corners, ids, _ = detector.detectMarkers(gray)
    found = corners[0].reshape(4, 2)
    cv2.cornerSubPix(gray, found, (4, 4), (-1, -1),
                     (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 0.001))
    truth = frame.markers[0].corners
    straight = CAMERA.project(np.array([[-0.1, 0.1, 0], [0.1, 0.1, 0], [0.1, -0.1, 0],
                                        [-0.1, -0.1, 0.0]]), pose)
    assert np.abs(found - truth).max() < 0.6
    assert np.abs(truth - straight).max() > 5  # the distortion is really there


def test_occlusion_truth() -> None:
    frames = ss.approach_sequence(2, frames=30, occluded_frames=3)
    occluded = [f for f in frames if f.markers[0].occluded_fraction > 0]
    assert len(occluded) == 3
    assert all(f.markers[0].occluded_fraction == 1.0 for f in occluded)
    assert frames[0].markers[0].distance_m > frames[-1].markers[0].distance_m + 1.5


@pytest.mark.slow
def test_qr_frames_carry_a_readable_code_where_the_truth_says() -> None:
    frames = [f for f in ss.awaiting_sequence(6, TOKEN, frames=30) if f.codes]
    assert frames
    assert all(f.codes[0].payload == TOKEN for f in frames)
    decoder = cv2.QRCodeDetector()
    read = 0
    for frame in frames:
        code = frame.codes[0]
        if not code.in_view or code.module_px < 2.8 or frame.photometry.motion_blur_px > 0:
            continue
        side = 180
        target = np.float32([[18, 18], [162, 18], [162, 162], [18, 162]])
        warp = cv2.getPerspectiveTransform(code.corners.astype(np.float32), target)
        upright = cv2.warpPerspective(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY), warp,
                                      (side, side))
        text, _ = decoder.decode(upright, target.reshape(1, 4, 2))
        read += text == TOKEN
    assert read >= 3


def test_empty_person_frames_come_first_then_the_phone() -> None:
    frames = ss.awaiting_sequence(1, TOKEN, frames=20, phone_share=0.5)
    shown = [bool(f.codes) for f in frames]
    assert shown == [False] * 10 + [True] * 10


def test_compartment_frames() -> None:
    layout = ss.CompartmentLayout()
    reference = ss.compartment_reference(layout)
    assert reference.shape == (layout.height, layout.width, 3)
    empty = ss.compartment_frame(layout, 1, False)
    assert not empty.occupied
    assert empty.object_fraction == 0.0
    full = ss.compartment_frame(layout, 2, True, area=(0.2, 0.25))
    assert full.occupied
    assert full.object_fraction >= 0.1
    flat = ss.apply_photometry(layout.reflectance(), ss.Photometry(), np.random.default_rng(0))
    np.testing.assert_allclose(flat.astype(float), np.clip(layout.reflectance() + 0.5, 0, 255)
                               .astype(np.uint8).astype(float), atol=0)


def test_photometry_does_what_it_says() -> None:
    canvas = np.full((40, 60, 3), 100.0, np.float32)
    rng = np.random.default_rng(0)
    assert ss.apply_photometry(canvas, ss.Photometry(gain=0.5), rng).mean() == pytest.approx(50)
    assert ss.apply_photometry(canvas, ss.Photometry(offset=10), rng).mean() == pytest.approx(110)
    noisy = ss.apply_photometry(canvas, ss.Photometry(noise_sigma=5), rng).astype(float)
    assert 4 < noisy.std() < 6
    ramp = ss.apply_photometry(canvas, ss.Photometry(gradient=0.5), rng).astype(float)
    assert ramp[:, -1].mean() > ramp[:, 0].mean() + 30  # brighter towards +x


def test_no_pose_in_view_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no dock pose in view"):
        ss.random_dock_pose(np.random.default_rng(0), CAMERA, 5.0, (0.5, 0.6))
    assert RigidTransform().apply(np.zeros((1, 3))).shape == (1, 3)

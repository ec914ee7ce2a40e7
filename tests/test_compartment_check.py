"""Compartment check: empty or occupied against an empty reference, under changing light,
with thresholds calibrated on generated data and judged on other generated data."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from delivery_robot import synthetic_scenes as ss
from delivery_robot.compartment_check import (
    CompartmentCheckConfig,
    CompartmentChecker,
    OccupancyFilter,
    calibrate,
    calibrate_threshold,
)
from delivery_robot.compartment_handoff import Occupancy

LAYOUT = ss.CompartmentLayout()
REFERENCE = ss.compartment_reference(LAYOUT)
X0, Y0, X1, Y1 = LAYOUT.floor
REGION = ((X0 + 6) / LAYOUT.width, (Y0 + 6) / LAYOUT.height, (X1 - 6) / LAYOUT.width,
          (Y1 - 6) / LAYOUT.height)
CONFIG = CompartmentCheckConfig(region=REGION)


def verdicts(checker: CompartmentChecker, first_seed: int, count: int, occupied: bool,
             **kwargs: object) -> list[tuple[ss.CompartmentFrame, object]]:
    out = []
    for k in range(count):
        frame = ss.compartment_frame(LAYOUT, first_seed + k, occupied, **kwargs)  # type: ignore
        out.append((frame, checker.check(frame.image)))
    return out


@pytest.mark.slow
def test_calibrated_on_one_set_right_on_another() -> None:
    checker = CompartmentChecker(REFERENCE, CONFIG)
    train_empty = [v for _, v in verdicts(checker, 20_000, 60, False)]
    train_occupied = [v for _, v in verdicts(checker, 30_000, 60, True)]
    calibration = calibrate(train_empty, train_occupied)  # type: ignore[arg-type]
    assert calibration.area.separated
    tuned = CompartmentChecker(REFERENCE, replace(
        CONFIG, area_fraction=calibration.area_fraction,
        edge_fraction=calibration.edge_fraction))
    wrong = unknown = 0
    for occupied, seed in ((False, 40_000), (True, 50_000)):
        for _, verdict in verdicts(tuned, seed, 60, occupied):
            if verdict.occupancy is Occupancy.UNKNOWN:  # type: ignore[attr-defined]
                unknown += 1
            else:
                wrong += (verdict.occupancy is Occupancy.OCCUPIED) != occupied  # type: ignore
    assert unknown <= 3
    assert wrong <= 2  # of 120, on examples the calibration never saw


def test_default_thresholds_judge_everyday_light_right() -> None:
    checker = CompartmentChecker(REFERENCE, CONFIG)
    for frame, verdict in verdicts(checker, 60_000, 12, False) + verdicts(
            checker, 61_000, 12, True):
        if verdict.occupancy is Occupancy.UNKNOWN:  # type: ignore[attr-defined]
            continue
        assert (verdict.occupancy is Occupancy.OCCUPIED) == frame.occupied, (  # type: ignore
            frame.photometry, verdict)


def test_harsh_light_changes_do_not_look_like_goods() -> None:
    checker = CompartmentChecker(REFERENCE, CONFIG)
    canvas = LAYOUT.reflectance()
    rng = np.random.default_rng(1)
    for light in (ss.Photometry(gain=0.35, noise_sigma=2.0),  # much darker
                  ss.Photometry(gain=1.1, colour_gain=(0.8, 1.0, 1.1), noise_sigma=2.0),
                  ss.Photometry(gradient=0.6, gradient_angle=0.7, vignette=0.4),
                  ss.Photometry(gamma=1.3, shift_px=(1.0, -1.0)),  # tone curve, camera shake
                  ss.Photometry(gamma=0.8, blur_sigma=0.8, noise_sigma=3.0)):
        verdict = checker.check(ss.apply_photometry(canvas, light, rng))
        assert verdict.occupancy is Occupancy.EMPTY, (light, verdict)


def test_goods_close_to_the_floor_colour_and_goods_filling_the_view_are_seen() -> None:
    checker = CompartmentChecker(REFERENCE, CONFIG)
    envelopes = verdicts(checker, 70_000, 6, True, kinds=("envelope",), area=(0.03, 0.1))
    big = verdicts(checker, 71_000, 4, True, kinds=("box",), area=(0.8, 0.95))
    for frame, verdict in envelopes + big:
        assert verdict.occupancy is Occupancy.OCCUPIED, (frame.object_fraction, verdict)


def test_what_cannot_be_judged_is_unknown() -> None:
    checker = CompartmentChecker(REFERENCE, CONFIG)
    rng = np.random.default_rng(2)
    dark = ss.apply_photometry(LAYOUT.reflectance(), ss.Photometry(gain=0.03), rng)
    verdict = checker.check(dark)
    assert verdict.occupancy is Occupancy.UNKNOWN
    assert "too dark" in verdict.reason
    blown = ss.apply_photometry(LAYOUT.reflectance(), ss.Photometry(gain=3.0), rng)
    verdict = checker.check(blown)
    assert verdict.occupancy is Occupancy.UNKNOWN
    assert "too bright" in verdict.reason
    with pytest.raises(ValueError, match="another view"):
        checker.check(np.zeros((100, 320, 3), np.uint8))
    with pytest.raises(ValueError, match="does not match the reference"):
        checker.check(np.zeros((240, 320), np.uint8))
    with pytest.raises(ValueError, match="region"):
        CompartmentCheckConfig(region=(0.5, 0.0, 0.4, 1.0))


def test_a_mono_camera_works_the_same() -> None:
    checker = CompartmentChecker(cv2.cvtColor(REFERENCE, cv2.COLOR_BGR2GRAY), CONFIG)
    for occupied, seed in ((False, 80_000), (True, 80_001), (True, 80_002)):
        frame = ss.compartment_frame(LAYOUT, seed, occupied, strength=0.6)
        verdict = checker.check(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY))
        assert (verdict.occupancy is Occupancy.OCCUPIED) == occupied, verdict
    # A larger frame of the same view is compared at the working size.
    big = cv2.resize(cv2.cvtColor(REFERENCE, cv2.COLOR_BGR2GRAY), (640, 480))
    assert checker.check(big).occupancy is Occupancy.EMPTY


def test_threshold_calibration() -> None:
    separated = calibrate_threshold([0.001, 0.004], [0.016, 0.2])
    assert separated.separated
    assert separated.threshold == pytest.approx(0.008)
    assert (separated.false_empty, separated.false_occupied) == (0, 0)
    overlapping = calibrate_threshold([0.001, 0.01, 0.03], [0.02, 0.05, 0.06])
    assert not overlapping.separated
    assert overlapping.false_empty + overlapping.false_occupied == 1
    assert overlapping.threshold == pytest.approx(0.01)  # tie goes to the lower threshold
    with pytest.raises(ValueError, match="both"):
        calibrate_threshold([], [0.1])


def test_occupancy_filter_waits_for_agreement() -> None:
    filter_ = OccupancyFilter(frames=2)
    assert filter_.update(Occupancy.EMPTY) is Occupancy.UNKNOWN
    assert filter_.update(Occupancy.EMPTY) is Occupancy.EMPTY
    assert filter_.update(Occupancy.OCCUPIED) is Occupancy.EMPTY  # a hand passing by
    assert filter_.update(Occupancy.EMPTY) is Occupancy.EMPTY
    assert filter_.update(Occupancy.OCCUPIED) is Occupancy.EMPTY
    assert filter_.update(Occupancy.OCCUPIED) is Occupancy.OCCUPIED
    assert filter_.update(Occupancy.UNKNOWN) is Occupancy.UNKNOWN  # cannot judge: at once

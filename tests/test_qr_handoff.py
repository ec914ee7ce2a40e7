"""QR handoff: the scanner reads coordinator tokens from synthetic recipient frames, cheaply,
and the token gate keeps handoff/verify from being asked twice about one token."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from delivery_robot import synthetic_scenes as ss
from delivery_robot.handoff_credentials import make_qr_token
from delivery_robot.qr_handoff import (
    QrScanConfig,
    QrScanner,
    Region,
    TokenGate,
    TokenState,
    looks_like_token,
)

KEY = b"k" * 32
TOKEN = make_qr_token(KEY, "order-000123", 1_900_000_000, b"n" * 12)


def gray(frame: ss.QrFrame) -> np.ndarray:
    return cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)


def test_tokens_are_told_from_other_codes() -> None:
    assert looks_like_token(TOKEN)
    assert not looks_like_token("https://example.com/menu")
    assert not looks_like_token("h1.a.b.c")  # too few parts
    assert not looks_like_token("h1.a.notdigits.c.d")
    assert not looks_like_token("h2." + TOKEN[3:])


@pytest.mark.slow
def test_scanner_reads_the_token_when_the_phone_is_shown() -> None:
    frames = ss.awaiting_sequence(3, TOKEN, frames=50)
    scanner = QrScanner()
    read = shown = 0
    first_read = None
    for k, frame in enumerate(frames):
        scan = scanner.scan(gray(frame), now=k / 15)
        visible = bool(frame.codes) and frame.codes[0].in_view
        assert set(scan.payloads) <= {TOKEN}  # never a wrong payload
        if not frame.codes:
            assert not scan.payloads  # nothing read from a frame without a code
        shown += visible
        if TOKEN in scan.payloads:
            read += visible
            first_read = k if first_read is None else first_read
    first_shown = next(k for k, f in enumerate(frames) if f.codes)
    assert first_read is not None
    assert first_read <= first_shown + 3
    assert read >= 0.4 * shown
    # The same code in the same place is decoded once, then recognised.
    assert scanner.decodes < 0.6 * shown


@pytest.mark.slow
def test_full_frame_decode_is_the_weaker_baseline() -> None:
    """What the scanner is measured against: cv2.QRCodeDetector on every whole frame."""
    frames = [f for f in ss.awaiting_sequence(4, TOKEN, frames=40) if f.codes]
    detector = cv2.QRCodeDetector()
    baseline = sum(detector.detectAndDecode(gray(f))[0] == TOKEN for f in frames)
    scanner = QrScanner(QrScanConfig(reuse_s=0.0))  # decode every frame: a fair comparison
    ours = sum(TOKEN in scanner.scan(gray(f), k * 1.0).payloads for k, f in enumerate(frames))
    assert ours > baseline


def test_a_code_outside_the_middle_is_found_by_the_periodic_full_scan() -> None:
    rng = np.random.default_rng(9)
    camera = ss.DEFAULT_CAMERA
    background = ss.street_background(rng, camera.width, camera.height)
    # Phone held at the left edge of the view, 0.22 m from the camera.
    pose = ss.facing_pose(-0.11, 0.02, 0.22, yaw=0.1)
    frame = ss.render_phones(camera, [ss.PlacedPhone(TOKEN, pose)],
                             ss.Photometry(noise_sigma=1.5), rng, background)
    # Left of the middle region (half the width, from x = 160).
    assert frame.codes[0].in_view
    assert frame.codes[0].corners[:, 0].max() < 150
    scanner = QrScanner(QrScanConfig(roi_width=0.5, full_frame_every=4))
    regions = []
    for k in range(4):
        scan = scanner.scan(gray(frame), k * 0.1)
        regions.append(scan.region)
        if scan.payloads:
            break
    assert regions[-1] is Region.FULL
    assert scan.payloads == (TOKEN,)
    assert regions[:-1] == [Region.MIDDLE] * 3
    assert scanner.scan(gray(frame), 1.0).region is Region.TRACKED  # then it is followed


def test_scanner_rejects_colour_input_and_bad_config() -> None:
    with pytest.raises(ValueError, match="grey uint8"):
        QrScanner().scan(np.zeros((48, 64, 3), np.uint8), 0.0)
    with pytest.raises(ValueError, match="roi_width"):
        QrScanConfig(roi_width=0.0)


# ---- token gate ---------------------------------------------------------------------------------


def test_gate_sends_a_token_once_while_pending_and_never_after_acceptance() -> None:
    gate = TokenGate(refused_retry_s=5.0, pending_timeout_s=3.0)
    assert gate.should_send(TOKEN, 0.0)
    gate.sent(TOKEN, 0.0)
    assert gate.state(TOKEN) is TokenState.PENDING
    assert not gate.should_send(TOKEN, 1.0)
    gate.answered(TOKEN, True, 1.2)
    assert not gate.should_send(TOKEN, 100.0)


def test_gate_holds_back_a_refused_token_for_the_retry_window() -> None:
    gate = TokenGate(refused_retry_s=5.0)
    gate.sent(TOKEN, 0.0)
    gate.answered(TOKEN, False, 0.5)
    assert not gate.should_send(TOKEN, 5.4)
    assert gate.should_send(TOKEN, 5.5)
    assert gate.should_send("h1.other.1.2.3", 0.6)  # another token is not held back


def test_gate_retries_a_call_that_was_lost_or_never_answered() -> None:
    gate = TokenGate(pending_timeout_s=3.0)
    gate.sent(TOKEN, 0.0)
    assert not gate.should_send(TOKEN, 2.9)
    assert gate.should_send(TOKEN, 3.0)  # no answer: lost
    gate.sent(TOKEN, 3.0)
    gate.lost(TOKEN, 3.1)
    assert gate.should_send(TOKEN, 3.1)
    with pytest.raises(ValueError, match="pending_timeout_s > 0"):
        TokenGate(pending_timeout_s=0.0)


def test_gate_forgets_old_tokens_but_not_pending_ones() -> None:
    gate = TokenGate(max_tokens=2)
    gate.sent("a", 0.0)
    gate.sent("b", 1.0)
    gate.answered("b", False, 1.5)
    gate.sent("c", 2.0)
    assert gate.state("a") is TokenState.PENDING
    assert gate.state("b") is None
    assert gate.pending() == 2

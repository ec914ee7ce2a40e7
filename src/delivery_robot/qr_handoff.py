"""QR handoff: read the recipient's QR token from the front camera, cheaply, while one is awaited.

The perception node runs `QrScanner.scan` only while `robot_state` says MODE_AWAITING_RECIPIENT,
and passes new tokens through `TokenGate` to the handoff node's `handoff/verify`.

Why not `cv2.QRCodeDetector.detectAndDecode` on every frame: it costs ~10 ms on a 640x480
frame whether a code is there or not (it enlarges images to at least 512 px and searches them
in full), and decodes poorly when the code is small. Measured on the synthetic set
(bench/bench_perception.py), so the scanner works in three steps instead:
1. Locate: `cv2.QRCodeDetectorAruco.detect` (finder patterns by contours, with one adaptive
   threshold window instead of three) on a region of interest: around the code found last
   (downscaled so the code is about `track_code_px` wide), else the middle of the frame, where
   the robot's prompt asks recipients to hold their phone (downscaled to at most
   `max_search_px`), and every `full_frame_every`-th empty scan the whole frame.
2. Decode: the located code is warped to an upright image of `decode_side_px` and decoded with
   `QRCodeDetector.decode` and the known corners (~3 ms instead of ~10 ms on the frame).
3. Reuse: a code followed from frame to frame (tracked without a miss) since it was decoded,
   within `reuse_s`, is the same code and is not decoded again (the node would not re-send it
   anyway); nor is it one that was located where the last one was decoded. A code that would
   not decode is tried again every other frame, not every frame.
`cv2.wechat_qrcode` is in the wheel but without its CNN models (not shipped); its plain path
costs 25-50 ms per frame here, so it is not used.

Tokens are the coordinator's signed `h1.` tokens (`handoff_credentials.make_qr_token`); other
QR codes (a poster, a payment code) are skipped before any service call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

from delivery_robot.handoff_credentials import MAX_CREDENTIAL_CHARS, TOKEN_PREFIX

FloatArray = npt.NDArray[np.float64]
GrayImage = npt.NDArray[np.uint8]


def looks_like_token(text: str) -> bool:
    """The shape of a handoff token (`h1.<order>.<expiry>.<nonce>.<mac>`); the signature is the
    handoff node's to check."""
    parts = text.split(".")
    return (len(text) <= MAX_CREDENTIAL_CHARS and len(parts) == 5 and parts[0] == TOKEN_PREFIX
            and all(parts[1:]) and parts[2].isdigit())


@dataclass(frozen=True)
class QrScanConfig:
    roi_width: float = 0.7  # middle region searched without a tracked code, share of width
    roi_height: float = 0.9  # ... and of height
    max_search_px: int = 480  # a search region larger than this is downscaled to it
    full_frame_every: int = 10  # every n-th scan without a code searches the whole frame
    track_margin: float = 0.6  # tracked region = last code box grown by this many code sides
    track_code_px: int = 120  # a tracked code larger than this is searched downscaled
    lost_after: int = 3  # scans without the tracked code before the middle region is searched
    threshold_window: int = 7  # adaptive threshold window of the finder-pattern search, px
    decode_side_px: int = 180  # the located code is warped upright to this size to decode
    reuse_s: float = 1.0  # a decoded code followed or seen in place is the same this long

    def __post_init__(self) -> None:
        problems = []
        if not (0.1 <= self.roi_width <= 1.0 and 0.1 <= self.roi_height <= 1.0):
            problems.append("roi_width and roi_height must be in [0.1, 1]")
        if self.max_search_px < 64 or self.track_code_px < 32 or self.decode_side_px < 64:
            problems.append("max_search_px >= 64, track_code_px >= 32, decode_side_px >= 64")
        if self.full_frame_every < 0 or self.lost_after < 1:
            problems.append("full_frame_every must be >= 0 and lost_after >= 1")
        if not 0.0 <= self.track_margin <= 5.0:
            problems.append("track_margin must be in [0, 5]")
        if self.threshold_window < 3:
            problems.append("threshold_window must be >= 3")
        if not self.reuse_s >= 0:
            problems.append("reuse_s must be >= 0")
        if problems:
            raise ValueError("QR scanner: " + "; ".join(problems))


class Region(StrEnum):
    TRACKED = "tracked"
    MIDDLE = "middle"
    FULL = "full"


@dataclass(frozen=True)
class QrScan:
    payloads: tuple[str, ...]  # what the code in view says (decoded now or reused)
    corners: FloatArray | None  # the located code (4 x 2 px), None if none was located
    region: Region  # where this scan looked
    decoded: bool  # a decode ran on this frame (the expensive step)


def _box_overlap(a: FloatArray, b: FloatArray) -> float:
    """Intersection over union of the axis-aligned boxes of two quadrilaterals."""
    ax0, ay0 = a.min(axis=0)
    ax1, ay1 = a.max(axis=0)
    bx0, by0 = b.min(axis=0)
    bx1, by1 = b.max(axis=0)
    iw = max(0.0, float(min(ax1, bx1) - max(ax0, bx0)))
    ih = max(0.0, float(min(ay1, by1) - max(ay0, by0)))
    inter = iw * ih
    union = float((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0)) - inter
    return inter / union if union > 0 else 0.0


class QrScanner:
    """Locates and decodes QR codes in grey frames of one camera stream. Not thread-safe."""

    def __init__(self, config: QrScanConfig | None = None) -> None:
        self.config = config or QrScanConfig()
        self._locator = cv2.QRCodeDetectorAruco()
        params = self._locator.getArucoParameters()
        params.adaptiveThreshWinSizeMin = self.config.threshold_window
        params.adaptiveThreshWinSizeMax = self.config.threshold_window
        self._locator.setArucoParameters(params)
        self._decoder = cv2.QRCodeDetector()
        self.reset()

    def reset(self) -> None:
        """Forget the tracked code and the last payload (a new recipient)."""
        self._tracked: FloatArray | None = None
        self._misses = 0
        self._empty_scans = 0
        self._last: tuple[FloatArray, str, float] | None = None  # corners, payload, time
        self._followed = False  # the code in view has been tracked since it was decoded
        self._failed = False  # the last decode attempt (on the code in view) failed
        self.decodes = 0
        self.scans = 0

    def scan(self, gray: GrayImage, now: float) -> QrScan:
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"QR scanning needs a grey uint8 image, got {gray.dtype} "
                             f"{gray.shape}")
        self.scans += 1
        corners, region = self._locate(gray)
        if corners is None:
            self._followed = self._failed = False
            return QrScan((), None, region, False)
        followed = self._followed and region is Region.TRACKED
        last = self._last
        if last is not None and now - last[2] <= self.config.reuse_s and (
                followed or _box_overlap(corners, last[0]) > 0.5):
            self._followed = True
            return QrScan((last[1],), corners, region, False)
        if self._failed and region is Region.TRACKED:
            self._failed = False  # an unreadable code: try again on the next frame
            return QrScan((), corners, region, False)
        payload = self._decode(gray, corners)
        self.decodes += 1
        self._failed = not payload
        self._followed = bool(payload)
        if payload:
            self._last = (corners, payload, now)
            return QrScan((payload,), corners, region, True)
        return QrScan((), corners, region, True)

    # ---- locating --------------------------------------------------------------------------

    def _locate(self, gray: GrayImage) -> tuple[FloatArray | None, Region]:
        cfg = self.config
        height, width = gray.shape
        if self._tracked is not None:
            side = float(np.linalg.norm(self._tracked[0] - self._tracked[1]))
            margin = cfg.track_margin * side + 8.0
            box = (self._tracked[:, 0].min() - margin, self._tracked[:, 1].min() - margin,
                   self._tracked[:, 0].max() + margin, self._tracked[:, 1].max() + margin)
            scale = min(1.0, cfg.track_code_px / max(side, 1.0))
            found = self._search(gray, box, scale)
            if found is not None:
                self._tracked, self._misses = found, 0
                return found, Region.TRACKED
            self._misses += 1
            if self._misses < cfg.lost_after:
                return None, Region.TRACKED
            self._tracked = None
        self._empty_scans += 1
        if cfg.full_frame_every and self._empty_scans % cfg.full_frame_every == 0:
            box = (0.0, 0.0, float(width), float(height))
            region = Region.FULL
        else:
            mx = width * (1 - cfg.roi_width) / 2
            my = height * (1 - cfg.roi_height) / 2
            box = (mx, my, width - mx, height - my)
            region = Region.MIDDLE
        scale = min(1.0, cfg.max_search_px / max(box[2] - box[0], box[3] - box[1]))
        found = self._search(gray, box, scale)
        if found is not None:
            self._tracked, self._misses, self._empty_scans = found, 0, 0
        return found, region

    def _search(self, gray: GrayImage, box: tuple[float, float, float, float],
                scale: float) -> FloatArray | None:
        height, width = gray.shape
        x0, y0 = int(max(0, math.floor(box[0]))), int(max(0, math.floor(box[1])))
        x1, y1 = int(min(width, math.ceil(box[2]))), int(min(height, math.ceil(box[3])))
        if x1 - x0 < 21 or y1 - y0 < 21:
            return None
        region: GrayImage = gray[y0:y1, x0:x1]
        if scale < 0.95:
            region = np.asarray(cv2.resize(region, (max(21, round((x1 - x0) * scale)),
                                                    max(21, round((y1 - y0) * scale))),
                                           interpolation=cv2.INTER_AREA), dtype=np.uint8)
            sx, sy = (x1 - x0) / region.shape[1], (y1 - y0) / region.shape[0]
        else:
            sx = sy = 1.0
        ok, points = self._locator.detect(region)
        if not ok or points is None:
            return None
        quad = np.asarray(points, dtype=np.float64).reshape(-1, 2)[:4]
        # Pixel centres: a downscaled pixel i covers original pixels s*i .. s*(i+1).
        return np.asarray((quad + 0.5) * np.array([sx, sy]) - 0.5 + np.array([x0, y0]),
                          dtype=np.float64)

    # ---- decoding --------------------------------------------------------------------------

    def _decode(self, gray: GrayImage, corners: FloatArray) -> str:
        side = self.config.decode_side_px
        margin = side * 0.1
        target = np.array([[margin, margin], [side - margin, margin],
                           [side - margin, side - margin], [margin, side - margin]],
                          dtype=np.float32)
        transform = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
        upright = cv2.warpPerspective(gray, transform, (side, side), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
        try:
            text, _ = self._decoder.decode(upright, target.reshape(1, 4, 2))
        except cv2.error:
            return ""
        return str(text) if text else ""


# ---- which tokens go to handoff/verify --------------------------------------------------------


class TokenState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REFUSED = "refused"


class TokenGate:
    """Decides which decoded tokens are sent to `handoff/verify`: never one whose call is still
    pending, never one that was accepted, and one that was refused only again after
    `refused_retry_s` (the refusal may have been for a reason that passes, such as credentials
    not yet loaded; a genuinely wrong code must not burn an attempt per camera frame). A call
    with no answer after `pending_timeout_s` counts as lost."""

    def __init__(self, refused_retry_s: float = 5.0, pending_timeout_s: float = 5.0,
                 max_tokens: int = 32) -> None:
        if not refused_retry_s >= 0 or not pending_timeout_s > 0 or max_tokens < 1:
            raise ValueError("refused_retry_s >= 0, pending_timeout_s > 0, max_tokens >= 1")
        self.refused_retry_s = refused_retry_s
        self.pending_timeout_s = pending_timeout_s
        self.max_tokens = max_tokens
        self._tokens: dict[str, tuple[TokenState, float]] = {}

    def reset(self) -> None:
        self._tokens.clear()

    def state(self, token: str) -> TokenState | None:
        entry = self._tokens.get(token)
        return entry[0] if entry else None

    def pending(self) -> int:
        return sum(1 for state, _ in self._tokens.values() if state is TokenState.PENDING)

    def should_send(self, token: str, now: float) -> bool:
        entry = self._tokens.get(token)
        if entry is None:
            return True
        state, since = entry
        if state is TokenState.PENDING:
            return now - since >= self.pending_timeout_s
        if state is TokenState.REFUSED:
            return now - since >= self.refused_retry_s
        return False  # accepted: the compartment is open for it already

    def sent(self, token: str, now: float) -> None:
        self._tokens[token] = (TokenState.PENDING, now)
        if len(self._tokens) > self.max_tokens:  # forget the oldest settled ones
            settled = sorted((since, t) for t, (state, since) in self._tokens.items()
                             if state is not TokenState.PENDING)
            for _, old in settled[:len(self._tokens) - self.max_tokens]:
                del self._tokens[old]

    def answered(self, token: str, granted: bool, now: float) -> None:
        self._tokens[token] = (TokenState.ACCEPTED if granted else TokenState.REFUSED, now)

    def lost(self, token: str, now: float) -> None:
        """The call failed without an answer (service gone): the token may be sent again."""
        self._tokens.pop(token, None)

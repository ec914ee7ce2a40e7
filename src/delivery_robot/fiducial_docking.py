"""Fiducial docking: find a dock's ArUco marker, measure its pose, and drive the last metre.

Chargers and shop pickup points carry a square marker (ArUco `DICT_4X4_50` by default, 0.20 m,
printable on A4). The perception node runs `DockFinder.find` on camera frames and publishes
the dock pose; navigation hands the final alignment to `DockingController`.

Detection (`MarkerTracker`)
- `cv2.aruco.ArucoDetector`; full-frame searches use the ArUco3 options (detect on an image
  scaled so that the smallest marker of interest, `min_marker_fraction` of the larger image
  side, is `canonical_side_px` wide), which is where most of the time goes otherwise.
- ROI tracking: once markers were found, the next frame is searched only around them (their
  bounding box grown by `roi_margin` marker sides), shrunk by a whole factor so the marker is
  about `roi_marker_px` wide, with one adaptive-threshold window. If the ROI holds no accepted
  marker, the same frame is searched in full at once (and, for a marker running off the
  image border, its ROI once more unshrunk), so a lost marker costs extra searches, never a
  missed frame. A BGR frame is made grey only where it is searched.
- Corner refinement by edges (`refine="edges"`): the detector's corners are off by a pixel or
  more (several from a shrunk ROI); the pose of a 0.2 m marker at 2 m needs hundredths (1
  degree of yaw moves a far edge by 0.05 px). Each of the four outer edges is sampled across
  at up to 32 points; the sub-pixel edge position is the first moment of the profile's step
  (exact for any symmetric blur, in linear light: see `tone_gamma`), found in one window or,
  when the corners may be further off than a cell allows, a coarse and a fine pass. The points
  are undistorted and a line is fitted to each edge; corners are the line intersections.
  Lens distortion is handled there, so the pose is solved on ideal points.

Pose: `cv2.solvePnPGeneric(..., SOLVEPNP_IPPE_SQUARE)` on the undistorted corners (from
`CameraInfo` K and D: plumb_bob, rational_polynomial or equidistant), both candidate poses
polished with `solvePnPRefineVVS` when they fit alike (near-frontal views, where IPPE alone is
off by a degree), giving the marker in the camera's optical frame (x right, y down, z
forward). A marker's own frame is OpenCV's: x right and y up as seen when facing it, z out of
its face.

Dock frame: origin at the marker centre, x pointing into the dock face (the heading a robot
has when docked forwards), z up, y left; for an upright marker this is the marker frame turned
so that x = -z_marker, y = -x_marker, z = y_marker. `dock/pose` carries this frame in
base_link, through the configured camera mount (`camera_mount`).

Final alignment (`DockingController`): a line-following law on the dock axis, which brings
base_link to `standoff_m` in front of the marker with lateral and yaw tolerances, backs off and
retries when it arrives misaligned, and stops when the dock pose goes stale.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

from delivery_robot.camera_calibration import CameraCalibration

FloatArray = npt.NDArray[np.float64]
GrayImage = npt.NDArray[np.uint8]

DICTIONARIES: dict[str, int] = {
    name: int(getattr(cv2.aruco, name))
    for name in (
        "DICT_4X4_50", "DICT_4X4_100", "DICT_4X4_250", "DICT_5X5_50", "DICT_5X5_100",
        "DICT_6X6_50", "DICT_6X6_250", "DICT_ARUCO_ORIGINAL", "DICT_APRILTAG_16h5",
        "DICT_APRILTAG_25h9", "DICT_APRILTAG_36h10", "DICT_APRILTAG_36h11",
    )
}
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
REFINE_METHODS = ("edges", "subpix", "none")

# Optical frame (x right, y down, z forward) in the camera body frame (x forward, y left, z up).
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
# Dock frame (x into the dock face, y left, z up) in the marker frame (x right, y up, z out).
MARKER_FROM_DOCK = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])


def dictionary(name: str) -> cv2.aruco.Dictionary:
    try:
        return cv2.aruco.getPredefinedDictionary(DICTIONARIES[name])
    except KeyError:
        raise ValueError(f"unknown marker dictionary {name!r}; known: {sorted(DICTIONARIES)}"
                         ) from None


# ---- geometry ---------------------------------------------------------------------------------


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> FloatArray:
    """R = Rz(yaw) Ry(pitch) Rx(roll), as in tf2 / URDF."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def quaternion_from_rotation(rotation: FloatArray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix, w >= 0."""
    m = rotation
    trace = float(m[0, 0] + m[1, 1] + m[2, 2])
    if trace > 0.0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = (s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s)
    x, y, z, w = (float(v) for v in q)
    if w < 0:
        x, y, z, w = -x, -y, -z, -w
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    return x / norm, y / norm, z / norm, w / norm


def rotation_angle(a: FloatArray, b: FloatArray) -> float:
    """The angle (rad) of the rotation that takes `a` to `b`."""
    cosine = (float(np.trace(a.T @ b)) - 1.0) / 2.0
    return math.acos(max(-1.0, min(1.0, cosine)))


@dataclass(frozen=True)
class RigidTransform:
    """`parent_from_child`: maps points in the child frame into the parent frame."""

    rotation: FloatArray = field(default_factory=lambda: np.eye(3))
    translation: FloatArray = field(default_factory=lambda: np.zeros(3))

    @classmethod
    def from_xyz_rpy(cls, x: float, y: float, z: float, roll: float, pitch: float,
                     yaw: float) -> RigidTransform:
        return cls(rotation_from_rpy(roll, pitch, yaw), np.array([x, y, z], dtype=np.float64))

    def __matmul__(self, other: RigidTransform) -> RigidTransform:
        return RigidTransform(self.rotation @ other.rotation,
                              self.rotation @ other.translation + self.translation)

    def inverse(self) -> RigidTransform:
        return RigidTransform(self.rotation.T, -self.rotation.T @ self.translation)

    def apply(self, points: FloatArray) -> FloatArray:
        """Points (N x 3) in the child frame -> parent frame."""
        return np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def quaternion(self) -> tuple[float, float, float, float]:
        return quaternion_from_rotation(self.rotation)


@dataclass(frozen=True)
class PlanarPose:
    """x, y (m) and yaw (rad) in a plane, e.g. the dock in base_link."""

    x: float
    y: float
    yaw: float

    @classmethod
    def from_transform(cls, transform: RigidTransform) -> PlanarPose:
        """The ground-plane projection: position x, y and the heading of the frame's x axis."""
        heading = transform.rotation[:, 0]
        return cls(float(transform.translation[0]), float(transform.translation[1]),
                   math.atan2(float(heading[1]), float(heading[0])))


def camera_mount(x: float, y: float, z: float, roll: float, pitch: float,
                 yaw: float) -> RigidTransform:
    """base_link <- camera optical frame, for a camera body (x forward, REP-103) mounted at
    (x, y, z, roll, pitch, yaw) in base_link."""
    body = RigidTransform.from_xyz_rpy(x, y, z, roll, pitch, yaw)
    return body @ RigidTransform(BODY_FROM_OPTICAL.copy(), np.zeros(3))


def dock_in_base(camera_from_marker: RigidTransform,
                 base_from_camera: RigidTransform) -> RigidTransform:
    """The dock frame (x into the dock face, z up) in base_link."""
    return base_from_camera @ camera_from_marker @ RigidTransform(MARKER_FROM_DOCK.copy(),
                                                                  np.zeros(3))


# ---- camera -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraModel:
    """The intrinsics of sensor_msgs/CameraInfo: K (row-major 3x3) and D of `distortion_model`
    for images of `width` x `height`."""

    width: int
    height: int
    k: tuple[float, ...]
    d: tuple[float, ...] = ()
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        problems = []
        if self.width <= 0 or self.height <= 0:
            problems.append(f"image size must be positive, got {self.width}x{self.height}")
        if len(self.k) != 9 or not all(math.isfinite(v) for v in self.k):
            problems.append(f"K needs 9 finite numbers, got {len(self.k)}")
        elif self.k[0] <= 0 or self.k[4] <= 0:
            problems.append(f"K has non-positive focal lengths {self.k[0]}, {self.k[4]} "
                            "(an uncalibrated camera?)")
        if self.distortion_model not in DISTORTION_MODELS:
            problems.append(f"distortion model {self.distortion_model!r} is not supported "
                            f"({', '.join(DISTORTION_MODELS)})")
        elif self.distortion_model == "equidistant" and len(self.d) not in (0, 4):
            problems.append(f"equidistant D needs 4 values, got {len(self.d)}")
        elif len(self.d) not in (0, 4, 5, 8, 12, 14):
            problems.append(f"D has {len(self.d)} values (expected 0, 4, 5, 8, 12 or 14)")
        if not all(math.isfinite(v) for v in self.d):
            problems.append("D has non-finite values")
        if problems:
            raise ValueError("camera model: " + "; ".join(problems))

    @classmethod
    def from_calibration(cls, calibration: CameraCalibration) -> CameraModel:
        return cls(calibration.width, calibration.height, tuple(calibration.k),
                   tuple(calibration.d), calibration.distortion_model)

    @property
    def matrix(self) -> FloatArray:
        return np.array(self.k, dtype=np.float64).reshape(3, 3)

    @property
    def distortion(self) -> FloatArray:
        return np.array(self.d, dtype=np.float64)

    @property
    def fx(self) -> float:
        return self.k[0]

    @property
    def has_distortion(self) -> bool:
        return any(v != 0.0 for v in self.d)

    def scaled(self, width: int, height: int) -> CameraModel:
        """The same camera at another resolution (pixel-centre convention of OpenCV)."""
        sx, sy = width / self.width, height / self.height
        k = list(self.k)
        k[0], k[1], k[4] = k[0] * sx, k[1] * sx, k[4] * sy
        k[2], k[5] = (k[2] + 0.5) * sx - 0.5, (k[5] + 0.5) * sy - 0.5
        return CameraModel(width, height, tuple(k), self.d, self.distortion_model)

    def undistort(self, pixels: FloatArray) -> FloatArray:
        """Pixel coordinates (N x 2) -> ideal normalised image coordinates (x/z, y/z)."""
        points = np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
        if self.distortion_model == "equidistant":
            d = self.distortion if len(self.d) == 4 else np.zeros(4)
            out = cv2.fisheye.undistortPoints(points, self.matrix, d)
        elif self.has_distortion:
            out = cv2.undistortPointsIter(
                points, self.matrix, self.distortion, np.eye(3), np.eye(3),
                (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10))
        else:
            k = self.k
            out = np.empty_like(points)
            out[..., 1] = (points[..., 1] - k[5]) / k[4]
            out[..., 0] = (points[..., 0] - k[2] - k[1] * out[..., 1]) / k[0]
        return np.asarray(out, dtype=np.float64).reshape(-1, 2)

    def distort(self, normalized: FloatArray) -> FloatArray:
        """Ideal normalised coordinates (N x 2) -> pixel coordinates."""
        points = np.asarray(normalized, dtype=np.float64).reshape(-1, 2)
        if not self.has_distortion and self.distortion_model != "equidistant":
            k = self.k
            return np.column_stack([k[0] * points[:, 0] + k[1] * points[:, 1] + k[2],
                                    k[4] * points[:, 1] + k[5]])
        homogeneous = np.column_stack([points, np.ones(len(points))]).reshape(-1, 1, 3)
        return self.project(homogeneous.reshape(-1, 3), RigidTransform())

    def project(self, points: FloatArray, camera_from_points: RigidTransform) -> FloatArray:
        """3-D points (N x 3) in a frame -> pixel coordinates (N x 2), distortion included."""
        rvec, _ = cv2.Rodrigues(camera_from_points.rotation)
        tvec = camera_from_points.translation.reshape(3, 1)
        object_points = np.asarray(points, dtype=np.float64).reshape(-1, 1, 3)
        if self.distortion_model == "equidistant":
            d = self.distortion if len(self.d) == 4 else np.zeros(4)
            pixels, _ = cv2.fisheye.projectPoints(object_points, rvec, tvec, self.matrix, d)
        else:
            pixels, _ = cv2.projectPoints(object_points, rvec, tvec, self.matrix,
                                          self.distortion if self.d else None)
        return np.asarray(pixels, dtype=np.float64).reshape(-1, 2)


# ---- detection --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorConfig:
    dictionary: str = "DICT_4X4_50"
    marker_ids: tuple[int, ...] = ()  # accepted markers; empty: every marker of the dictionary
    aruco3: bool = True  # full-frame searches on a scaled image (ArUco3)
    min_marker_fraction: float = 0.06  # smallest marker side / larger image side, ArUco3
    canonical_side_px: int = 20  # ... is searched at this many pixels (minSideLengthCanonicalImg)
    track: bool = True  # search around the last detections first
    roi_margin: float = 0.5  # ROI = marker boxes grown by this many marker sides (+ 8 px)
    roi_marker_px: int = 28  # a tracked marker is searched in its ROI shrunk to about this
    refine: str = "edges"  # "edges" (line fit), "subpix" (cornerSubPix) or "none"
    # The camera's tone curve: grey = 255 (light / 255) ** (1 / tone_gamma). 1.0 for a linear
    # (machine vision) camera, about 2.2 for sRGB output. The edge fit needs linear light: an
    # edge blurred over a few pixels is only symmetric there.
    tone_gamma: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.dictionary not in DICTIONARIES:
            problems.append(f"unknown dictionary {self.dictionary!r}")
        if not 0.0 < self.min_marker_fraction < 1.0:
            problems.append("min_marker_fraction must be in (0, 1)")
        if not 8 <= self.canonical_side_px <= 512 or not 16 <= self.roi_marker_px <= 512:
            problems.append("canonical_side_px must be in [8, 512], roi_marker_px in [16, 512]")
        if not 0.5 <= self.tone_gamma <= 3.0:
            problems.append("tone_gamma must be in [0.5, 3]")
        if not 0.1 <= self.roi_margin <= 10.0:
            problems.append("roi_margin must be in [0.1, 10] marker sides")
        if self.refine not in REFINE_METHODS:
            problems.append(f"refine must be one of {REFINE_METHODS}")
        if any(i < 0 for i in self.marker_ids):
            problems.append("marker ids must be >= 0")
        if problems:
            raise ValueError("marker detector: " + "; ".join(problems))


@dataclass(frozen=True)
class MarkerDetection:
    marker_id: int
    corners: FloatArray  # 4 x 2 pixels: top-left, top-right, bottom-right, bottom-left
    normalized: FloatArray | None = None  # the same corners undistorted (x/z, y/z), if refined
    refined: bool = False  # corners from the edge line fit

    @functools.cached_property
    def side_px(self) -> float:
        d = self.corners[[1, 2, 3, 0]] - self.corners
        return float(np.sqrt((d * d).sum(axis=1)).mean())


@dataclass
class TrackerStats:
    frames: int = 0
    roi_searches: int = 0
    roi_hits: int = 0
    full_searches: int = 0


def aruco3_ratio(min_side_px: float, canonical_px: int, image_side_px: int) -> float:
    """minMarkerLengthRatioOriginalImg for finding markers of `min_side_px` and larger.

    ArUco3 scales the image by c / (c + ratio * image_side) and then keeps only contours of at
    least 4 c pixels (c = minSideLengthCanonicalImg), so the smallest marker it finds has a side
    of c + ratio * image_side in the original image."""
    return max(0.0, (min_side_px - canonical_px) / image_side_px)


def _parameters(aruco3: bool, ratio: float, canonical: int) -> cv2.aruco.DetectorParameters:
    params = cv2.aruco.DetectorParameters()
    params.useAruco3Detection = aruco3
    params.minMarkerLengthRatioOriginalImg = float(ratio) if aruco3 else 0.0
    params.minSideLengthCanonicalImg = int(canonical) if aruco3 else 0
    # Corners are refined afterwards, on the full-resolution image (see refine_corners); with
    # ArUco3 OpenCV refines them with cornerSubPix on its pyramid anyway.
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_NONE
    return params


class Frame:
    """A grey or BGR uint8 frame, turned grey only where it is looked at (a tracked marker's
    region is a small part of the frame)."""

    def __init__(self, image: npt.NDArray[np.uint8]) -> None:
        colour = image.ndim == 3 and image.shape[2] == 3
        if image.dtype != np.uint8 or not (image.ndim == 2 or colour):
            raise ValueError(f"marker detection needs a grey or BGR uint8 image, got "
                             f"{image.dtype} {image.shape}")
        self.image = image
        self.shape: tuple[int, int] = (int(image.shape[0]), int(image.shape[1]))
        self._gray: GrayImage | None = None if colour else image

    def gray(self) -> GrayImage:
        if self._gray is None:
            self._gray = np.asarray(cv2.cvtColor(self.image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
        return self._gray

    def region(self, x0: int, y0: int, x1: int, y1: int) -> GrayImage:
        if self._gray is not None:
            return self._gray[y0:y1, x0:x1]
        return np.asarray(cv2.cvtColor(self.image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY),
                          dtype=np.uint8)


class MarkerTracker:
    """Finds the accepted markers of one dictionary in grey frames of a stream.

    Not thread-safe: one stream, one caller."""

    def __init__(self, config: DetectorConfig, camera: CameraModel | None = None) -> None:
        self.config = config
        self.camera = camera
        self._dictionary = dictionary(config.dictionary)
        self._full_params = _parameters(config.aruco3, 0.0, config.canonical_side_px)
        self._full = cv2.aruco.ArucoDetector(self._dictionary, self._full_params)
        self._full_size = (0, 0)
        # The ROI is scaled so the marker is ~roi_marker_px wide: one adaptive threshold
        # window (instead of 3, 13 and 23) binarises its border and cells.
        roi_params = _parameters(False, 0.0, 0)
        roi_params.adaptiveThreshWinSizeMin = roi_params.adaptiveThreshWinSizeMax = 13
        self._roi = cv2.aruco.ArucoDetector(self._dictionary, roi_params)
        self._plain = cv2.aruco.ArucoDetector(self._dictionary, _parameters(False, 0.0, 0))
        self._accepted = frozenset(config.marker_ids)
        self._corner_error = 2.0  # how far off the last search's corners may be, px
        self._source: tuple[GrayImage, tuple[int, int]] = (np.zeros((1, 1), np.uint8), (0, 0))
        levels = np.arange(256, dtype=np.float64) / 255.0
        self._linear = (255.0 * levels ** config.tone_gamma).astype(np.float32)
        self._last: list[MarkerDetection] = []
        self.stats = TrackerStats()
        self.last_search = "none"

    def reset(self) -> None:
        """Forget the tracked markers (the next frame is searched in full)."""
        self._last = []

    def detect(self, image: GrayImage | npt.NDArray[np.uint8]) -> list[MarkerDetection]:
        """Markers in a grey or BGR uint8 frame (a BGR frame is converted to grey only where
        it is searched)."""
        frame = Frame(image)
        self.stats.frames += 1
        found: list[MarkerDetection] = []
        if self.config.track and self._last:
            found = self._search_roi(frame) or self._search_full(frame)
            if not found:
                # A marker running off the image border keeps only a sliver of its white
                # margin, which vanishes in a scaled image: look once more, unscaled.
                found = self._search_roi(frame, shrink=False)
        else:
            found = self._search_full(frame)
        found = [self._refine(d) for d in found]
        self._last = found
        return found

    def _accept(self, corners: Sequence[cv2.typing.MatLike], ids: cv2.typing.MatLike | None,
                offset: tuple[float, float]) -> list[MarkerDetection]:
        if ids is None:
            return []
        out = []
        for quad, marker_id in zip(corners, np.asarray(ids).ravel(), strict=True):
            if self._accepted and int(marker_id) not in self._accepted:
                continue
            pts = np.asarray(quad, dtype=np.float64).reshape(4, 2) + np.array(offset)
            out.append(MarkerDetection(int(marker_id), pts))
        return out

    def _search_full(self, frame: Frame) -> list[MarkerDetection]:
        self.stats.full_searches += 1
        self.last_search = "full"
        gray = frame.gray()
        self._source = (gray, (0, 0))
        if self.config.aruco3 and gray.shape != self._full_size:
            side = max(gray.shape)
            self._full_params.minMarkerLengthRatioOriginalImg = aruco3_ratio(
                self.config.min_marker_fraction * side, self.config.canonical_side_px, side)
            self._full.setDetectorParameters(self._full_params)
            self._full_size = gray.shape
        corners, ids, _ = self._full.detectMarkers(gray)
        # ArUco3 refines its corners back up from the scaled image: good to a pixel or two.
        self._corner_error = 2.0 if self.config.aruco3 else 1.0
        return self._accept(corners, ids, (0.0, 0.0))

    def _search_roi(self, frame: Frame, shrink: bool = True) -> list[MarkerDetection]:
        boxes = np.concatenate([d.corners for d in self._last])
        side = max(d.side_px for d in self._last)
        smallest = min(d.side_px for d in self._last)
        margin = self.config.roi_margin * side + 8.0
        height, width = frame.shape
        x0 = int(max(0.0, math.floor(boxes[:, 0].min() - margin)))
        y0 = int(max(0.0, math.floor(boxes[:, 1].min() - margin)))
        x1 = int(min(float(width), math.ceil(boxes[:, 0].max() + margin + 1)))
        y1 = int(min(float(height), math.ceil(boxes[:, 1].max() + margin + 1)))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return []
        self.stats.roi_searches += 1
        self.last_search = "roi"
        roi = frame.region(x0, y0, x1, y1)
        self._source = (roi, (x0, y0))
        # Shrunk by a whole factor k so the smallest tracked marker is about roi_marker_px
        # wide (a whole factor keeps INTER_AREA on its fast path). Not ArUco3 here: its
        # corners, refined back up from a scaled ROI, are often several pixels off, more than
        # the edge fit can pull in.
        k = max(1, int(smallest / self.config.roi_marker_px)) if shrink else 1
        if k > 1:
            w, h = (x1 - x0) // k, (y1 - y0) // k
            if w < 16 or h < 16:
                return []
            roi = np.asarray(cv2.resize(roi[:h * k, :w * k], (w, h),
                                        interpolation=cv2.INTER_AREA), dtype=np.uint8)
        detector = self._roi if shrink else self._plain
        corners, ids, _ = detector.detectMarkers(roi)
        self._corner_error = 1.25 * k + 1.0  # contour corners of a k-times shrunk image
        # Pixel centres: shrunk pixel i spans original pixels k*i .. k*(i+1).
        found = [MarkerDetection(d.marker_id, (d.corners + 0.5) * k - 0.5
                                 + np.array([x0, y0]))
                 for d in self._accept(corners, ids, (0.0, 0.0))]
        if found:
            self.stats.roi_hits += 1
        return found

    def _refine(self, detection: MarkerDetection) -> MarkerDetection:
        method = self.config.refine
        cells = self._dictionary.markerSize + 2
        gray, origin = self._source  # where the marker was found, grey
        if method == "edges":
            refined = refine_corners(gray, detection.corners, detection.side_px / cells,
                                     self.camera, self._corner_error, self._linear, origin)
            if refined is not None:
                pixels, normalized = refined
                return MarkerDetection(detection.marker_id, pixels, normalized, True)
            method = "subpix"  # an edge could not be fitted (occluded, clipped): fall back
        if method == "subpix":
            window = int(max(2, min(6, detection.side_px / cells / 2)))
            pts = (detection.corners - np.array(origin)).astype(np.float32).reshape(-1, 1, 2)
            cv2.cornerSubPix(gray, pts, (window, window), (-1, -1),
                             (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
            return MarkerDetection(detection.marker_id,
                                   pts.reshape(4, 2).astype(np.float64) + np.array(origin))
        return detection


def _bilinear(image: npt.NDArray[np.float32], x: FloatArray, y: FloatArray) -> FloatArray:
    """Image values at real-valued positions (clamped to the image).

    (cv2.remap quantises positions to 1/32 px, too coarse for the edge fit.)"""
    height, width = image.shape
    x = np.clip(x, 0.0, width - 1.001)
    y = np.clip(y, 0.0, height - 1.001)
    xi = x.astype(np.intp)  # floor: x >= 0
    yi = y.astype(np.intp)
    fx = (x - xi).astype(np.float32)
    fy = (y - yi).astype(np.float32)
    flat = image.ravel()
    index = yi * width + xi
    top = flat[index] + fx * (flat[index + 1] - flat[index])
    bottom = flat[index + width] + fx * (flat[index + width + 1] - flat[index + width])
    return np.asarray(top + fy * (bottom - top), dtype=np.float64)


EDGE_MIN_CONTRAST = 12.0  # grey levels between the two sides of an edge sample
EDGE_MIN_SAMPLES = 6
EDGE_SAMPLES = 32  # per side, at most
FINE_WINDOW = 2.5  # px either side of the edge, beyond the corners' error: the blurred step
MAX_EDGE_WINDOW = 12.0


def _edge_positions(patch: npt.NDArray[np.float32], centres: FloatArray, normal: FloatArray,
                    window: float, step: float) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Sub-pixel edge positions across each sample point (4 sides x n points): the first
    moment of the step, i.e. the area between the profile and its far plateau divided by the
    contrast; exact wherever the window holds the whole transition and a plateau at each end.
    Returns (position along the normal relative to the sample point, usable)."""
    offsets = np.arange(-window, window + 1e-9, step)
    xs = centres[:, :, 0:1] + offsets * normal[:, 0:1, None]  # (4, n, offsets)
    ys = centres[:, :, 1:2] + offsets * normal[:, 1:2, None]
    profile = _bilinear(patch, xs, ys)
    start = 0.5 * (profile[..., 0] + profile[..., 1])
    end = 0.5 * (profile[..., -1] + profile[..., -2])
    contrast = start - end
    valid = np.abs(contrast) > EDGE_MIN_CONTRAST
    span = float(offsets[-1] - offsets[0])
    area = step * (profile.sum(axis=-1) - 0.5 * (profile[..., 0] + profile[..., -1])) \
        - end * span
    position = area / np.where(valid, contrast, 1.0) + float(offsets[0])
    valid &= np.abs(position) < window
    return position, valid


def refine_corners(gray: GrayImage, corners: FloatArray, cell_px: float,
                   camera: CameraModel | None = None, error_px: float = 2.0,
                   linear: npt.NDArray[np.float32] | None = None,
                   origin: tuple[int, int] = (0, 0)
                   ) -> tuple[FloatArray, FloatArray | None] | None:
    """Corners from lines fitted to the marker's four outer edges, or None when an edge has too
    few usable samples. Returns (pixels, normalised corners or None without a camera).

    Each side is sampled across at up to EDGE_SAMPLES points, over a window wide enough for
    the given corners' error (`error_px`) and the edge's blur, yet within one marker cell (no
    second edge in it); lines are total-least-squares fits, all four sides at once.
    `linear` (256 values) maps grey levels to linear light first. `gray` may be a region of
    the frame whose top-left pixel is `origin`; corners are in frame pixels either way."""
    height, width = gray.shape
    quad = np.asarray(corners, dtype=np.float64).reshape(4, 2) - np.array(origin)
    # The window must hold the blurred step wherever the corners' error put it, but stay
    # inside one cell (the next edge is a cell away).
    limit = min(max(FINE_WINDOW, 0.45 * cell_px), MAX_EDGE_WINDOW)
    window = error_px + FINE_WINDOW
    two_pass = window > limit
    window = min(window, limit)
    margin = window + FINE_WINDOW + 2
    x0 = int(max(0, math.floor(quad[:, 0].min() - margin)))
    y0 = int(max(0, math.floor(quad[:, 1].min() - margin)))
    x1 = int(min(width, math.ceil(quad[:, 0].max() + margin + 1)))
    y1 = int(min(height, math.ceil(quad[:, 1].max() + margin + 1)))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    patch = (gray[y0:y1, x0:x1].astype(np.float32) if linear is None
             else linear[gray[y0:y1, x0:x1]])
    direction = quad[[1, 2, 3, 0]] - quad
    length = np.sqrt((direction * direction).sum(axis=1))
    if float(length.min()) < 4.0:
        return None
    normal = np.column_stack([-direction[:, 1], direction[:, 0]]) / length[:, None]  # (4, 2)
    count = int(max(8, min(EDGE_SAMPLES, float(length.min()))))
    t = np.linspace(0.12, 0.88, count)
    along = quad[:, None, :] + t[None, :, None] * direction[:, None, :] - np.array([x0, y0])
    if two_pass:
        # Too far off for one window: every third sample over the widest window first; a
        # straight line through those edge positions per side (the corners' errors shift a
        # side's samples linearly) then centres the fine window on the edge.
        sub = slice(None, None, 3)
        coarse, ok = _edge_positions(patch, along[:, sub], normal, window, 0.5)
        w = ok.astype(np.float64)
        ts = t[sub][None, :]
        sw, st, stt = w.sum(axis=1), (w * ts).sum(axis=1), (w * ts * ts).sum(axis=1)
        sp, stp = (w * coarse).sum(axis=1), (w * ts * coarse).sum(axis=1)
        det = sw * stt - st * st
        if float(sw.min()) < 3 or float(np.abs(det).min()) < 1e-9:
            return None
        shift = ((stt * sp - st * stp) / det)[:, None] + ((sw * stp - st * sp) / det)[:, None] * t
        along = along + shift[:, :, None] * normal[:, None, :]
        window = FINE_WINDOW
    position, valid = _edge_positions(patch, along, normal, window, 0.25)
    if int(valid.sum(axis=1).min()) < EDGE_MIN_SAMPLES:
        return None
    points = (along + position[:, :, None] * normal[:, None, :]
              + np.array([x0 + origin[0], y0 + origin[1]]))
    if camera is not None:
        points = camera.undistort(points.reshape(-1, 2)).reshape(4, count, 2)
    # Weighted total least squares per side (weight 0 for the unusable samples).
    weight = valid.astype(np.float64)
    total = weight.sum(axis=1)
    mean = (weight[:, :, None] * points).sum(axis=1) / total[:, None]
    d = points - mean[:, None, :]
    sxx = (weight * d[..., 0] * d[..., 0]).sum(axis=1)
    syy = (weight * d[..., 1] * d[..., 1]).sum(axis=1)
    sxy = (weight * d[..., 0] * d[..., 1]).sum(axis=1)
    theta = 0.5 * np.arctan2(2.0 * sxy, sxx - syy)  # direction of each line
    nx, ny = -np.sin(theta), np.cos(theta)
    c = nx * mean[:, 0] + ny * mean[:, 1]
    # Corner i is where side i-1 meets side i.
    previous = [3, 0, 1, 2]
    px, py, pc = nx[previous], ny[previous], c[previous]
    det = px * ny - py * nx
    if float(np.abs(det).min()) < 1e-9:
        return None
    out = np.column_stack([(pc * ny - c * py) / det, (px * c - nx * pc) / det])
    if camera is None:
        return out, None
    return camera.distort(out), out


# ---- pose -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarkerPose:
    marker_id: int
    camera_from_marker: RigidTransform
    reprojection_error_px: float
    corners: FloatArray  # 4 x 2 pixels
    distance_m: float


IDENTITY = np.eye(3)  # PnP runs on undistorted, normalised points
AMBIGUITY_RATIO = 4.0  # IPPE's second pose is polished too unless it fits this much worse


def marker_object_points(length: float) -> FloatArray:
    """The corners in the marker frame, in detection order (SOLVEPNP_IPPE_SQUARE's order)."""
    h = length / 2.0
    return np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]])


def estimate_pose(detection: MarkerDetection, camera: CameraModel,
                  marker_length: float) -> MarkerPose | None:
    """The marker in the camera's optical frame, from its four corners; None if PnP fails."""
    if detection.normalized is not None:
        image_points = detection.normalized
    else:
        image_points = camera.undistort(detection.corners)
    objects = marker_object_points(marker_length)
    points = image_points.reshape(-1, 1, 2)
    # IPPE gives the two poses a square can have, best fit first. Near a frontal view they fit
    # about equally well and neither is the reprojection optimum (IPPE solves a homography),
    # so both are polished by virtual visual servoing (Gauss-Newton on the reprojection
    # error) and the better fit wins; a clearly worse second pose is not polished.
    count, rvecs, tvecs, errors = cv2.solvePnPGeneric(objects, points, IDENTITY, None,
                                                      flags=cv2.SOLVEPNP_IPPE_SQUARE)
    fits = np.asarray(errors, dtype=np.float64).ravel()
    keep = 1 if count > 1 and fits[1] > AMBIGUITY_RATIO * fits[0] + 0.5 / camera.fx else count
    best: tuple[float, FloatArray, FloatArray] | None = None
    for rvec, tvec in zip(rvecs[:keep], tvecs[:keep], strict=True):
        rvec, tvec = cv2.solvePnPRefineVVS(objects, points, IDENTITY, None, rvec.copy(),
                                           tvec.copy())
        rotation = np.asarray(cv2.Rodrigues(rvec)[0], dtype=np.float64)
        translation = np.asarray(tvec, dtype=np.float64).reshape(3)
        if translation[2] <= 0:
            continue
        projected = objects @ rotation.T + translation
        residual = projected[:, :2] / projected[:, 2:] - image_points
        error = float(np.sqrt((residual * residual).sum() / 4))
        if best is None or error < best[0]:
            best = (error, rotation, translation)
    if best is None:
        return None
    error, rotation, translation = best
    return MarkerPose(detection.marker_id, RigidTransform(rotation, translation),
                      error * camera.fx, detection.corners, float(np.linalg.norm(translation)))


@dataclass(frozen=True)
class DockFinderConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    marker_length_m: float = 0.20
    max_reprojection_error_px: float = 2.0  # worse fits are dropped (a warped or torn marker)

    def __post_init__(self) -> None:
        if not 0.01 <= self.marker_length_m <= 5.0:
            raise ValueError(f"marker_length_m must be in [0.01, 5] m, got "
                             f"{self.marker_length_m}")
        if not self.max_reprojection_error_px > 0:
            raise ValueError("max_reprojection_error_px must be > 0")


class DockFinder:
    """Grey frame -> poses of the accepted markers, nearest first. The camera model can change
    (a new CameraInfo); tracking carries on."""

    def __init__(self, config: DockFinderConfig, camera: CameraModel) -> None:
        self.config = config
        self.tracker = MarkerTracker(config.detector, camera)
        self.camera = camera
        self.rejected_fits = 0

    def set_camera(self, camera: CameraModel) -> None:
        if camera != self.camera:
            self.camera = camera
            self.tracker.camera = camera

    def find(self, image: GrayImage | npt.NDArray[np.uint8]) -> list[MarkerPose]:
        """Poses of the accepted markers in a grey or BGR frame, nearest first."""
        if image.shape[:2] != (self.camera.height, self.camera.width):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]} but the camera model "
                             f"is {self.camera.width}x{self.camera.height}")
        poses = []
        for detection in self.tracker.detect(image):
            pose = estimate_pose(detection, self.camera, self.config.marker_length_m)
            if pose is None or pose.reprojection_error_px > self.config.max_reprojection_error_px:
                self.rejected_fits += 1
                continue
            poses.append(pose)
        return sorted(poses, key=lambda p: p.distance_m)


# ---- final alignment --------------------------------------------------------------------------


class DockingStatus(StrEnum):
    APPROACHING = "approaching"  # driving along the dock axis towards the standoff
    ALIGNING = "aligning"  # at the standoff, turning on the spot to the dock's heading
    BACKING_OFF = "backing_off"  # arrived misaligned: reversing to retry_distance_m
    DOCKED = "docked"  # within tolerance; stays docked until reset()
    LOST = "lost"  # no fresh dock pose: stopped
    FAILED = "failed"  # max_retries used up: stopped, needs reset()


@dataclass(frozen=True)
class DockingConfig:
    standoff_m: float = 0.35  # base_link origin to the marker plane when docked
    distance_tolerance_m: float = 0.01
    lateral_tolerance_m: float = 0.015
    yaw_tolerance_rad: float = math.radians(1.5)
    max_linear_speed: float = 0.15  # m/s
    min_linear_speed: float = 0.02  # m/s, so the last centimetres do not take forever
    max_angular_speed: float = 0.5  # rad/s
    linear_gain: float = 0.6  # 1/s: speed = gain * distance left (clamped)
    heading_gain: float = 2.0  # 1/s: turn rate per rad of heading error
    lateral_gain: float = 4.0  # 1/m: approach angle = atan(gain * lateral error)
    max_approach_angle_rad: float = math.radians(35.0)
    retry_distance_m: float = 0.45  # back off to this distance from the standoff point to retry
    max_retries: int = 3
    pose_timeout_s: float = 0.5  # no dock pose for this long: stop (LOST)

    def __post_init__(self) -> None:
        positive = ("distance_tolerance_m", "lateral_tolerance_m", "yaw_tolerance_rad",
                    "max_linear_speed", "min_linear_speed", "max_angular_speed", "linear_gain",
                    "heading_gain", "lateral_gain", "max_approach_angle_rad",
                    "retry_distance_m", "pose_timeout_s")
        problems = [f"{name} must be > 0" for name in positive if not getattr(self, name) > 0]
        if not self.standoff_m >= 0:
            problems.append("standoff_m must be >= 0")
        if self.min_linear_speed > self.max_linear_speed:
            problems.append("min_linear_speed must be <= max_linear_speed")
        if self.max_approach_angle_rad >= math.pi / 2:
            problems.append("max_approach_angle_rad must be < pi/2")
        if self.max_retries < 0:
            problems.append("max_retries must be >= 0")
        if problems:
            raise ValueError("docking: " + "; ".join(problems))


@dataclass(frozen=True)
class DockingCommand:
    linear: float  # m/s
    angular: float  # rad/s
    status: DockingStatus
    distance_error: float  # m still to drive along the dock axis (negative: overshot)
    lateral_error: float  # m, base_link's offset from the dock axis (positive: to the left)
    yaw_error: float  # rad, robot heading minus dock heading

    @property
    def done(self) -> bool:
        return self.status in (DockingStatus.DOCKED, DockingStatus.FAILED)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _clamp(value: float, limit: float) -> float:
    return max(-limit, min(limit, value))


def alignment_errors(dock: PlanarPose, standoff: float) -> tuple[float, float, float]:
    """(distance along the dock axis to the standoff point, lateral offset, yaw error) of
    base_link, for the dock pose seen from base_link."""
    c, s = math.cos(dock.yaw), math.sin(dock.yaw)
    # base_link's origin in the dock frame (x into the dock face, y left).
    bx = -(c * dock.x + s * dock.y)
    by = -(-s * dock.x + c * dock.y)
    return -standoff - bx, by, _wrap(-dock.yaw)


class DockingController:
    """Final alignment on a dock seen by the camera: call `update` at the control rate with the
    newest dock pose in base_link (or None when there is none) and send the command."""

    def __init__(self, config: DockingConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._status = DockingStatus.APPROACHING
        self._retries = 0
        self._pose: PlanarPose | None = None
        self._pose_time = -math.inf
        self._resume = DockingStatus.APPROACHING  # the state a LOST controller goes back to
        self._backoff_to = self.config.retry_distance_m

    @property
    def status(self) -> DockingStatus:
        return self._status

    @property
    def retries(self) -> int:
        return self._retries

    def update(self, dock: PlanarPose | None, now: float, pose_time: float | None = None
               ) -> DockingCommand:
        """`dock`: the dock frame in base_link, measured at `pose_time` (default `now`)."""
        cfg = self.config
        if dock is not None:
            self._pose = dock
            self._pose_time = now if pose_time is None else pose_time
        if self._pose is None:
            return DockingCommand(0.0, 0.0, DockingStatus.LOST, math.nan, math.nan, math.nan)
        distance, lateral, yaw = alignment_errors(self._pose, cfg.standoff_m)
        if self._status in (DockingStatus.DOCKED, DockingStatus.FAILED):
            return DockingCommand(0.0, 0.0, self._status, distance, lateral, yaw)
        if now - self._pose_time > cfg.pose_timeout_s:
            if self._status is not DockingStatus.LOST:
                self._resume = self._status
            self._status = DockingStatus.LOST
            return DockingCommand(0.0, 0.0, DockingStatus.LOST, distance, lateral, yaw)
        if self._status is DockingStatus.LOST:
            self._status = self._resume
        linear, angular = self._control(distance, lateral, yaw)
        return DockingCommand(linear, angular, self._status, distance, lateral, yaw)

    def _control(self, distance: float, lateral: float, yaw: float) -> tuple[float, float]:
        cfg = self.config
        in_lateral = abs(lateral) <= cfg.lateral_tolerance_m
        in_yaw = abs(yaw) <= cfg.yaw_tolerance_rad
        at_standoff = abs(distance) <= cfg.distance_tolerance_m
        if self._status is DockingStatus.BACKING_OFF:
            if distance < self._backoff_to:
                # Reverse straight back, levelling the heading with the dock axis.
                speed = -max(cfg.min_linear_speed,
                             min(cfg.max_linear_speed,
                                 cfg.linear_gain * (self._backoff_to - distance)))
                return speed, _clamp(-cfg.heading_gain * yaw, cfg.max_angular_speed)
            self._status = DockingStatus.APPROACHING
        if at_standoff and in_lateral:
            if in_yaw:
                self._status = DockingStatus.DOCKED
                return 0.0, 0.0
            self._status = DockingStatus.ALIGNING
            turn = _clamp(-cfg.heading_gain * yaw, cfg.max_angular_speed)
            minimum = 0.05 * cfg.max_angular_speed  # enough to overcome static friction
            return 0.0, math.copysign(max(abs(turn), minimum), turn)
        # Driving on at the steepest approach angle cannot close the lateral error before the
        # standoff (or the robot overshot it): back off and retry.
        needed = self._run_up(lateral)
        if (not in_lateral and distance < needed) or distance < -3 * cfg.distance_tolerance_m:
            if self._retries >= cfg.max_retries:
                self._status = DockingStatus.FAILED
                return 0.0, 0.0
            self._retries += 1
            self._status = DockingStatus.BACKING_OFF
            self._backoff_to = max(cfg.retry_distance_m, needed + 0.1)
            return self._control(distance, lateral, yaw)
        self._status = DockingStatus.APPROACHING
        if distance < 0:  # slightly past the standoff: creep back, heading levelled
            return -cfg.min_linear_speed, _clamp(-cfg.heading_gain * yaw, cfg.max_angular_speed)
        speed = max(cfg.min_linear_speed, min(cfg.max_linear_speed, cfg.linear_gain * distance))
        # Steer onto the dock axis: aim at a heading that closes the lateral error.
        approach = _clamp(-math.atan(cfg.lateral_gain * lateral), cfg.max_approach_angle_rad)
        turn = _clamp(cfg.heading_gain * (approach - yaw), cfg.max_angular_speed)
        # Turning hard: slow down so the arc stays tight.
        speed *= max(0.25, 1.0 - 0.75 * abs(turn) / cfg.max_angular_speed)
        return speed, turn

    def _run_up(self, lateral: float) -> float:
        """Distance along the axis needed to close `lateral` at the steepest approach angle."""
        return abs(lateral) * 1.5 / math.tan(self.config.max_approach_angle_rad) + 0.02

"""Test data made by code: camera frames with markers and QR codes at known poses, and
compartment views, each with its ground truth, the same for the same seed.

Why generated: perception is judged on how far its answers are from the truth (a pose within
1 cm and 1 degree, a QR payload, empty or occupied), which needs exactly known truth in
conditions chosen on purpose (distance, viewing angle, blur, noise, lighting, occlusion).

Rendering is exact to a few thousandths of a pixel, so the measured errors are perception's:
a planar texture (marker, phone screen) is warped with bilinear sampling into a 4x
supersampled patch and area-averaged, which is what a sensor pixel integrates; with lens
distortion every supersampled pixel is undistorted and looked up instead. Corners are the
projections of the physical corners (OpenCV pixel centres: pixel (0, 0) spans -0.5..0.5).

Frames are BGR uint8 (as `bgr8` images). All randomness comes from `numpy.random.Generator`s
seeded by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import numpy.typing as npt
import segno

from delivery_robot.fiducial_docking import (
    CameraModel,
    RigidTransform,
    dictionary,
    rotation_from_rpy,
)

FloatArray = npt.NDArray[np.float64]
Image = npt.NDArray[np.uint8]
Canvas = npt.NDArray[np.float32]  # H x W x 3, linear 0..255 while a frame is composed

SUPERSAMPLE = 4
# Printed paper and ink reflect about 90 % and 8 % of the light: on a frame exposed so white
# paper is not clipped they are these grey levels.
PAPER = 230
INK = 20
# The marker's frame as seen by a camera looking straight at it: marker x = camera x,
# marker y (up) = -camera y, marker z (out of the face) = -camera z.
FACING_CAMERA = np.diag([1.0, -1.0, -1.0])
DEFAULT_CAMERA = CameraModel(640, 480, (525.0, 0.0, 319.5, 0.0, 525.0, 239.5, 0.0, 0.0, 1.0),
                             (0.0, 0.0, 0.0, 0.0, 0.0))


def default_camera(width: int = 640, height: int = 480) -> CameraModel:
    """The front camera of config/camera_calibration.yaml (62 degrees across), at a size."""
    if (width, height) == (640, 480):
        return DEFAULT_CAMERA
    fx = 525.0 * width / 640.0
    return CameraModel(width, height, (fx, 0.0, (width - 1) / 2, 0.0, fx, (height - 1) / 2,
                                       0.0, 0.0, 1.0), (0.0,) * 5)


# ---- photometry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Photometry:
    """What light, optics and sensor do to a frame, applied in that order."""

    gain: float = 1.0  # exposure
    offset: float = 0.0  # grey levels added (flare, black level)
    gamma: float = 1.0
    colour_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # B, G, R white balance
    gradient: float = 0.0  # illumination ramp: 1 - g .. 1 + g across the frame
    gradient_angle: float = 0.0  # rad, direction of the ramp in the image
    vignette: float = 0.0  # fraction of light lost in the corners
    blur_sigma: float = 0.0  # defocus, px
    motion_blur_px: float = 0.0  # length of a straight motion streak, px
    motion_angle: float = 0.0  # rad
    noise_sigma: float = 0.0  # sensor noise, grey levels
    shift_px: tuple[float, float] = (0.0, 0.0)  # whole-frame sub-pixel shift (vibration)


def random_photometry(rng: np.random.Generator, strength: float = 1.0,
                      gamma: float = 1.0) -> Photometry:
    """Everyday variation, scaled by `strength` (0: none, 1: typical, 2: harsh), for a camera
    whose tone curve is `gamma` (1: linear output, 2.2: sRGB-like); the tone curve is the
    camera's, so it does not vary from frame to frame."""
    s = strength
    return Photometry(
        gain=float(np.exp(rng.uniform(-0.6, 0.0) * s)),  # auto exposure keeps white unclipped
        offset=float(rng.uniform(-3, 3) * s),
        gamma=gamma,
        colour_gain=tuple(float(np.exp(rng.uniform(-0.06, 0.06) * s))  # type: ignore[arg-type]
                          for _ in range(3)),
        gradient=float(rng.uniform(0, 0.3) * s),
        gradient_angle=float(rng.uniform(0, 2 * math.pi)),
        vignette=float(rng.uniform(0, 0.3) * s),
        blur_sigma=float(rng.uniform(0, 0.8) * s),
        noise_sigma=float(rng.uniform(1.0, 3.5) * s),
    )


def apply_photometry(canvas: Canvas, photometry: Photometry, rng: np.random.Generator) -> Image:
    """A composed scene (linear radiance, 0..255) -> the sensor's BGR uint8 frame."""
    p = photometry
    image = canvas.astype(np.float32, copy=True)
    height, width = image.shape[:2]
    if p.shift_px != (0.0, 0.0):
        matrix = np.array([[1, 0, p.shift_px[0]], [0, 1, p.shift_px[1]]], dtype=np.float64)
        image = np.asarray(cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REFLECT), dtype=np.float32)
    if p.blur_sigma > 0.05:
        image = np.asarray(cv2.GaussianBlur(image, (0, 0), p.blur_sigma), dtype=np.float32)
    if p.motion_blur_px >= 1.0:
        length = int(math.ceil(p.motion_blur_px)) | 1
        kernel = np.zeros((length, length), np.float32)
        c = length // 2
        dx, dy = math.cos(p.motion_angle) * c, math.sin(p.motion_angle) * c
        cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
        kernel += kernel[::-1, ::-1].copy()  # symmetric: the truth is the mid-exposure pose
        image = np.asarray(cv2.filter2D(image, -1, kernel / kernel.sum()), dtype=np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (xs - width / 2) / (width / 2)
    v = (ys - height / 2) / (height / 2)
    light = np.ones((height, width), np.float32)
    if p.gradient:
        light *= 1.0 + p.gradient * (u * math.cos(p.gradient_angle)
                                     + v * math.sin(p.gradient_angle)) / math.sqrt(2)
    if p.vignette:
        light *= 1.0 - p.vignette * (u * u + v * v) / 2
    image *= (light * p.gain)[:, :, None]
    image *= np.array(p.colour_gain, np.float32)[None, None, :]
    image = 255.0 * np.power(np.clip(image / 255.0, 0.0, None), 1.0 / p.gamma) + p.offset
    if p.noise_sigma > 0:
        image += rng.normal(0.0, p.noise_sigma, image.shape).astype(np.float32)
    return np.asarray(np.clip(image + 0.5, 0, 255), dtype=np.uint8)


# ---- planar textures --------------------------------------------------------------------------


def _plane_to_texture(size_m: tuple[float, float], texture_shape: tuple[int, int]) -> FloatArray:
    """Texture pixel (u, v, 1) -> plane point (X, Y, 1); the texture's centre is the origin,
    X right, Y up, texture pixel (0, 0) spans -0.5..0.5."""
    width_m, height_m = size_m
    rows, cols = texture_shape
    sx, sy = width_m / cols, height_m / rows
    return np.array([[sx, 0.0, -width_m / 2 + 0.5 * sx], [0.0, -sy, height_m / 2 - 0.5 * sy],
                     [0.0, 0.0, 1.0]])


def render_plane(canvas: Canvas, texture: Image, size_m: tuple[float, float],
                 camera: CameraModel, camera_from_plane: RigidTransform,
                 supersample: int = SUPERSAMPLE) -> npt.NDArray[np.float32]:
    """Draw a flat rectangular `texture` of `size_m` (width, height) lying in the plane's x-y
    (z towards the viewer) onto `canvas`; returns the coverage (0..1) it drew with."""
    height, width = canvas.shape[:2]
    coverage_full = np.zeros((height, width), np.float32)
    rot = camera_from_plane.rotation
    if texture.ndim == 2:
        texture = np.repeat(texture[:, :, None], 3, axis=2)
    rows, cols = texture.shape[:2]
    a = _plane_to_texture(size_m, (rows, cols))
    # The outline, densely, for the bounding box (distortion bends the edges).
    s = np.linspace(0.0, 1.0, 17)
    w2, h2 = size_m[0] / 2, size_m[1] / 2
    outline = np.concatenate([
        np.column_stack([-w2 + 2 * w2 * s, np.full_like(s, h2)]),
        np.column_stack([np.full_like(s, w2), h2 - 2 * h2 * s]),
        np.column_stack([w2 - 2 * w2 * s, np.full_like(s, -h2)]),
        np.column_stack([np.full_like(s, -w2), -h2 + 2 * h2 * s]),
    ])
    outline3 = np.column_stack([outline, np.zeros(len(outline))])
    depth = camera_from_plane.apply(outline3)[:, 2]
    if np.any(depth <= 0.01):
        return coverage_full  # (partly) behind the camera: not drawn
    pixels = camera.project(outline3, camera_from_plane)
    x0 = int(max(0, math.floor(pixels[:, 0].min()) - 2))
    y0 = int(max(0, math.floor(pixels[:, 1].min()) - 2))
    x1 = int(min(width, math.ceil(pixels[:, 0].max()) + 3))
    y1 = int(min(height, math.ceil(pixels[:, 1].max()) + 3))
    if x1 <= x0 or y1 <= y0:
        return coverage_full
    ss = supersample
    hw, hh = (x1 - x0) * ss, (y1 - y0) * ss
    plane_h = np.column_stack([rot[:, 0], rot[:, 1], camera_from_plane.translation]) @ a
    solid = np.full((rows, cols), 255, np.uint8)
    if not camera.has_distortion:
        to_hi = np.array([[ss, 0, (ss - 1) / 2 - ss * x0], [0, ss, (ss - 1) / 2 - ss * y0],
                          [0, 0, 1.0]])
        homography = to_hi @ camera.matrix @ plane_h
        colour = cv2.warpPerspective(texture, homography, (hw, hh), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = cv2.warpPerspective(solid, homography, (hw, hh), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        ys, xs = np.mgrid[0:hh, 0:hw].astype(np.float64)
        px = x0 + (xs - (ss - 1) / 2) / ss
        py = y0 + (ys - (ss - 1) / 2) / ss
        normalized = camera.undistort(np.column_stack([px.ravel(), py.ravel()]))
        inverse = np.linalg.inv(plane_h)
        uvw = np.column_stack([normalized, np.ones(len(normalized))]) @ inverse.T
        w = uvw[:, 2]
        ok = w > 1e-12
        map_x = np.where(ok, uvw[:, 0] / np.where(ok, w, 1.0), -10.0).reshape(hh, hw)
        map_y = np.where(ok, uvw[:, 1] / np.where(ok, w, 1.0), -10.0).reshape(hh, hw)
        map_x32, map_y32 = map_x.astype(np.float32), map_y.astype(np.float32)
        colour = cv2.remap(texture, map_x32, map_y32, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = cv2.remap(solid, map_x32, map_y32, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    size = (x1 - x0, y1 - y0)
    colour_f = cv2.resize(colour.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    coverage = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) / 255.0
    region = canvas[y0:y1, x0:x1]
    # The warped colour is already weighted by coverage (black outside the texture).
    region *= (1.0 - coverage[:, :, None]).astype(np.float32)
    region += colour_f.reshape(region.shape)
    coverage_full[y0:y1, x0:x1] = coverage
    return coverage_full


def _print(binary: Image) -> Image:
    """A black-and-white design (0/255) as printed: ink and paper grey levels."""
    return np.where(binary > 127, PAPER, INK).astype(np.uint8)


def marker_texture(dictionary_name: str, marker_id: int, cell_px: int = 32,
                   quiet_cells: int = 1) -> Image:
    """The printed marker with a white quiet zone of `quiet_cells` around its black border."""
    d = dictionary(dictionary_name)
    cells = d.markerSize + 2
    marker = cv2.aruco.generateImageMarker(d, marker_id, cells * cell_px, borderBits=1)
    side = (cells + 2 * quiet_cells) * cell_px
    texture = np.full((side, side), 255, np.uint8)
    q = quiet_cells * cell_px
    texture[q:q + cells * cell_px, q:q + cells * cell_px] = marker
    return _print(texture)


def marker_cells(dictionary_name: str) -> int:
    """Cells across a marker, black border included."""
    return int(dictionary(dictionary_name).markerSize) + 2


def qr_matrix(payload: str, error: str = "m") -> npt.NDArray[np.uint8]:
    """The QR symbol's modules (1 = dark), without quiet zone, as the coordinator's tablet
    and the recipient's phone show it (segno, error correction `error`)."""
    code = segno.make_qr(payload, error=error, boost_error=False)
    return np.array([[1 if bit else 0 for bit in row] for row in code.matrix], dtype=np.uint8)


def qr_texture(payload: str, module_px: int = 8, quiet_modules: int = 4,
               error: str = "m") -> tuple[Image, int]:
    """A QR code with its quiet zone as a grey texture, and the symbol's width in modules."""
    modules = qr_matrix(payload, error)
    n = modules.shape[0]
    side = (n + 2 * quiet_modules) * module_px
    texture = np.full((side, side), 255, np.uint8)
    q = quiet_modules * module_px
    texture[q:q + n * module_px, q:q + n * module_px] = np.kron(
        1 - modules, np.ones((module_px, module_px), np.uint8)) * 255
    return _print(texture), n


# ---- backgrounds ------------------------------------------------------------------------------


def street_background(rng: np.random.Generator, width: int, height: int) -> Canvas:
    """A busy scene: walls, windows, signs, text-like rows and square distractors (the things
    a marker detector has to look at and reject)."""
    top, bottom = rng.uniform(60, 200, 3), rng.uniform(40, 180, 3)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    canvas = (top * (1 - t) + bottom * t).astype(np.float32) * np.ones((1, width, 1), np.float32)
    canvas = np.ascontiguousarray(canvas)
    scale = width / 640.0
    for _ in range(int(rng.integers(18, 30))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(20, 180) * scale), int(rng.integers(20, 140) * scale)
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, -1)
        if rng.random() < 0.5:
            edge = tuple(float(c) for c in rng.uniform(0, 80, 3))
            cv2.rectangle(canvas, (x, y), (x + w, y + h), edge, max(1, int(2 * scale)))
    for _ in range(int(rng.integers(5, 10))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(10, 80) * scale), int(rng.integers(10, 80) * scale))
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    for _ in range(int(rng.integers(3, 7))):  # lines of "text"
        x, y = int(rng.integers(0, width - 100)), int(rng.integers(0, height - 20))
        glyph = int(rng.integers(4, 9) * scale) + 1
        ink = tuple(float(c) for c in rng.uniform(0, 60, 3))
        for k in range(int(rng.integers(6, 20))):
            if rng.random() < 0.8:
                gx = x + k * (glyph + 2)
                cv2.rectangle(canvas, (gx, y), (gx + glyph, y + int(glyph * 1.4)), ink, -1)
    for _ in range(int(rng.integers(4, 9))):  # square frames that look like marker borders
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        side = int(rng.integers(14, 60) * scale)
        cv2.rectangle(canvas, (x, y), (x + side, y + side), (20.0, 20.0, 20.0), -1)
        inner = max(2, side // 5)
        cv2.rectangle(canvas, (x + inner, y + inner), (x + side - inner, y + side - inner),
                      (230.0, 230.0, 230.0), -1)
    texture = cv2.resize(rng.normal(0, 12, (height // 8 + 1, width // 8 + 1, 3)).astype(
        np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    canvas += texture
    canvas = np.asarray(cv2.GaussianBlur(canvas, (0, 0), 0.6), dtype=np.float32)
    return np.clip(canvas, 0, 255).astype(np.float32)


# ---- markers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlacedMarker:
    marker_id: int
    length_m: float  # side of the black square
    camera_from_marker: RigidTransform
    occluders: tuple[Occluder, ...] = ()


@dataclass(frozen=True)
class Occluder:
    """A flat rectangle (a hand, a strap) lying on the marker: centre and size in the marker's
    x-y plane (m), turned by `angle` (rad), of one colour (BGR)."""

    centre: tuple[float, float]
    size: tuple[float, float]
    angle: float = 0.0
    colour: tuple[float, float, float] = (90.0, 120.0, 170.0)


@dataclass(frozen=True)
class MarkerTruth:
    marker_id: int
    length_m: float
    camera_from_marker: RigidTransform
    corners: FloatArray  # 4 x 2 px: top-left, top-right, bottom-right, bottom-left
    in_view: bool  # whole marker inside the frame (2 px margin) and in front of the camera
    occluded_fraction: float  # share of the marker's area covered by occluders

    @property
    def distance_m(self) -> float:
        return float(np.linalg.norm(self.camera_from_marker.translation))

    @property
    def side_px(self) -> float:
        return float(np.mean(np.linalg.norm(self.corners - np.roll(self.corners, 1, 0), axis=1)))


@dataclass(frozen=True)
class MarkerFrame:
    image: Image  # BGR
    camera: CameraModel
    markers: tuple[MarkerTruth, ...]
    photometry: Photometry
    dictionary: str


def _occluded_fraction(length: float, occluders: Sequence[Occluder]) -> float:
    if not occluders:
        return 0.0
    g = (np.arange(40) + 0.5) / 40 * length - length / 2
    xs, ys = np.meshgrid(g, g)
    covered = np.zeros(xs.shape, dtype=bool)
    for o in occluders:
        c, s = math.cos(o.angle), math.sin(o.angle)
        dx, dy = xs - o.centre[0], ys - o.centre[1]
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        covered |= (np.abs(lx) <= o.size[0] / 2) & (np.abs(ly) <= o.size[1] / 2)
    return float(covered.mean())


def _in_view(corners: FloatArray, camera: CameraModel, margin: float = 2.0) -> bool:
    return bool(np.all(corners[:, 0] >= margin) and np.all(corners[:, 1] >= margin)
                and np.all(corners[:, 0] <= camera.width - 1 - margin)
                and np.all(corners[:, 1] <= camera.height - 1 - margin))


def draw_marker(canvas: Canvas, camera: CameraModel, marker: PlacedMarker,
                dictionary_name: str) -> MarkerTruth:
    cells = marker_cells(dictionary_name)
    texture = marker_texture(dictionary_name, marker.marker_id)
    patch = marker.length_m * (cells + 2) / cells  # with the one-cell quiet zone
    render_plane(canvas, texture, (patch, patch), camera, marker.camera_from_marker)
    for o in marker.occluders:
        local = RigidTransform.from_xyz_rpy(o.centre[0], o.centre[1], 0.0, 0.0, 0.0, o.angle)
        block = np.full((8, 8, 3), o.colour, np.float32).astype(np.uint8)
        render_plane(canvas, block, o.size, camera, marker.camera_from_marker @ local)
    h = marker.length_m / 2
    corners3 = np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]])
    depth = marker.camera_from_marker.apply(corners3)[:, 2]
    corners = camera.project(corners3, marker.camera_from_marker)
    visible = bool(np.all(depth > 0.05)) and _in_view(corners, camera)
    return MarkerTruth(marker.marker_id, marker.length_m, marker.camera_from_marker, corners,
                       visible, _occluded_fraction(marker.length_m, marker.occluders))


def render_markers(camera: CameraModel, markers: Sequence[PlacedMarker],
                   photometry: Photometry, rng: np.random.Generator,
                   background: Canvas | None = None,
                   dictionary_name: str = "DICT_4X4_50") -> MarkerFrame:
    canvas = (street_background(rng, camera.width, camera.height) if background is None
              else background.copy())
    truths = tuple(draw_marker(canvas, camera, m, dictionary_name) for m in markers)
    return MarkerFrame(apply_photometry(canvas, photometry, rng), camera, truths, photometry,
                       dictionary_name)


def facing_pose(x: float, y: float, z: float, yaw: float = 0.0, pitch: float = 0.0,
                roll: float = 0.0) -> RigidTransform:
    """camera <- marker for a marker at (x, y, z) in the optical frame, facing the camera and
    then turned about its own up axis by `yaw` (and its x axis by `pitch`, z axis by `roll`)."""
    turn = rotation_from_rpy(pitch, yaw, roll)  # Rz(roll) Ry(yaw) Rx(pitch), marker axes
    return RigidTransform(FACING_CAMERA @ turn, np.array([x, y, z], dtype=np.float64))


def random_dock_pose(rng: np.random.Generator, camera: CameraModel, length: float,
                     distance: tuple[float, float] = (0.5, 2.0),
                     max_view_angle: float = math.radians(35.0)) -> RigidTransform:
    """A dock marker somewhere in view at a distance in `distance` (m, camera to centre),
    seen at up to `max_view_angle` off its face normal; its mount tilted by up to 2 degrees."""
    half_fov_x = math.atan2(camera.width / 2, camera.k[0])
    half_fov_y = math.atan2(camera.height / 2, camera.k[4])
    for _ in range(100):
        r = rng.uniform(*distance)
        reach = math.atan2(length * 0.75, r)  # keep the whole marker inside
        bearing = rng.uniform(-1, 1) * max(0.0, half_fov_x - reach - 0.03)
        elevation = rng.uniform(-1, 1) * max(0.0, min(half_fov_y - reach - 0.03, 0.2))
        direction = np.array([math.tan(bearing), math.tan(elevation), 1.0])
        position = direction / np.linalg.norm(direction) * r
        view = rng.uniform(-1, 1) * max_view_angle
        pose = facing_pose(float(position[0]), float(position[1]), float(position[2]),
                           yaw=view + bearing, pitch=rng.uniform(-1, 1) * math.radians(2.0)
                           - elevation, roll=rng.uniform(-1, 1) * math.radians(2.0))
        h = length / 2
        corners = camera.project(np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0],
                                           [-h, -h, 0.0]]), pose)
        if _in_view(corners, camera, margin=6.0):
            return pose
    raise ValueError("no dock pose in view for this camera and distance range")


def dock_trials(count: int, seed: int, camera: CameraModel = DEFAULT_CAMERA,
                length: float = 0.20, distance: tuple[float, float] = (0.5, 2.0),
                marker_id: int = 7, strength: float = 1.0,
                dictionary_name: str = "DICT_4X4_50") -> list[MarkerFrame]:
    """`count` frames, each one dock marker at a random pose in `distance` with everyday
    lighting, blur and noise (`strength`)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        pose = random_dock_pose(rng, camera, length, distance)
        frames.append(render_markers(camera, [PlacedMarker(marker_id, length, pose)],
                                     random_photometry(rng, strength), rng,
                                     dictionary_name=dictionary_name))
    return frames


def approach_sequence(seed: int, camera: CameraModel = DEFAULT_CAMERA, frames: int = 60,
                      length: float = 0.20, marker_id: int = 7, start_distance: float = 2.4,
                      end_distance: float = 0.5, occluded_frames: int = 4,
                      dictionary_name: str = "DICT_4X4_50") -> list[MarkerFrame]:
    """A robot driving up to a dock: the camera closes in from `start_distance` to
    `end_distance` while its lateral offset and heading error shrink; one static scene, noise
    and exposure drifting frame to frame; for `occluded_frames` frames in the middle a passer-by
    hides the marker (a full occlusion: the tracker has to find it again)."""
    rng = np.random.default_rng(seed)
    background = street_background(rng, camera.width, camera.height)
    lateral0 = rng.uniform(-0.35, 0.35)
    heading0 = rng.uniform(-0.15, 0.15)
    height = rng.uniform(-0.08, 0.08)
    base = random_photometry(rng, 0.7)
    hidden_from = int(rng.integers(frames // 3, max(frames // 3 + 1, 2 * frames // 3)))
    out = []
    for k in range(frames):
        f = k / max(1, frames - 1)
        s = f * f * (3 - 2 * f)  # ease in and out
        distance = start_distance + (end_distance - start_distance) * s
        lateral = lateral0 * (1 - s)
        heading = heading0 * (1 - s) + 0.02 * math.sin(7 * f)
        # The dock sits at the origin facing -x (the robot); the camera at (-d, lateral).
        c, si = math.cos(heading), math.sin(heading)
        rel = np.array([distance, -lateral])  # dock centre relative to the camera, ground
        forward = c * rel[0] + si * rel[1]
        left = -si * rel[0] + c * rel[1]
        pose = facing_pose(-left, height, forward, yaw=heading)
        occluders: tuple[Occluder, ...] = ()
        if hidden_from <= k < hidden_from + occluded_frames:
            occluders = (Occluder((0.0, 0.0), (length * 1.6, length * 1.6), 0.2,
                                  (60.0, 70.0, 90.0)),)
        photometry = replace(base, gain=base.gain * float(np.exp(rng.normal(0, 0.03))),
                             motion_blur_px=float(rng.uniform(0, 1.5)),
                             motion_angle=float(rng.uniform(0, math.pi)))
        out.append(render_markers(camera, [PlacedMarker(marker_id, length, pose, occluders)],
                                  photometry, rng, background, dictionary_name))
    return out


# ---- QR codes ---------------------------------------------------------------------------------

PHONE_SIZE_M = (0.072, 0.150)
PHONE_QR_SIDE_M = 0.052  # the symbol with its quiet zone on the phone's screen


@dataclass(frozen=True)
class QrTruth:
    payload: str
    corners: FloatArray  # 4 x 2 px of the symbol (without quiet zone): tl, tr, br, bl
    in_view: bool
    module_px: float  # mean size of one module in the frame
    occluded_fraction: float


@dataclass(frozen=True)
class QrFrame:
    image: Image
    camera: CameraModel
    codes: tuple[QrTruth, ...]
    photometry: Photometry


@dataclass(frozen=True)
class PlacedPhone:
    payload: str
    camera_from_phone: RigidTransform  # the screen's centre; x right, y up, z out of the screen
    thumb: Occluder | None = None  # in screen coordinates (m)
    screen_brightness: float = 1.0


def phone_texture(payload: str, brightness: float = 1.0) -> tuple[Image, float, int]:
    """A phone showing the QR code: black body, white screen, the code in the middle.
    Returns the texture, the symbol's side (without quiet zone) in m, and its modules."""
    module_px = 6
    code, modules = qr_texture(payload, module_px)
    px_per_m = code.shape[0] / PHONE_QR_SIDE_M
    width, height = (int(round(s * px_per_m)) for s in PHONE_SIZE_M)
    texture = np.full((height, width), 25, np.uint8)
    bezel = int(0.004 * px_per_m)
    screen = int(round(255 * min(1.0, brightness)))
    texture[bezel:height - bezel, bezel:width - bezel] = screen
    y = (height - code.shape[0]) // 2
    x = (width - code.shape[1]) // 2
    texture[y:y + code.shape[0], x:x + code.shape[1]] = (code.astype(np.float32)
                                                         * (screen / 255.0)).astype(np.uint8)
    # Exact placement of the symbol relative to the texture centre (rounding above).
    symbol_side = modules * module_px / px_per_m
    return texture, symbol_side, modules


def draw_phone(canvas: Canvas, camera: CameraModel, phone: PlacedPhone) -> QrTruth:
    texture, symbol_side, modules = phone_texture(phone.payload, phone.screen_brightness)
    rows, cols = texture.shape
    code_px = (modules + 8) * 6
    px_per_m = code_px / PHONE_QR_SIDE_M
    size = (cols / px_per_m, rows / px_per_m)
    render_plane(canvas, texture, size, camera, phone.camera_from_phone)
    # Where the symbol landed on the texture (integer offsets), in plane coordinates.
    x = (cols - code_px) // 2 + 4 * 6
    y = (rows - code_px) // 2 + 4 * 6
    left = -size[0] / 2 + x / px_per_m
    top = size[1] / 2 - y / px_per_m
    corners3 = np.array([[left, top, 0.0], [left + symbol_side, top, 0.0],
                         [left + symbol_side, top - symbol_side, 0.0],
                         [left, top - symbol_side, 0.0]])
    occluded = 0.0
    if phone.thumb is not None:
        o = phone.thumb
        local = RigidTransform.from_xyz_rpy(o.centre[0], o.centre[1], 0.001, 0.0, 0.0, o.angle)
        block = np.full((8, 8, 3), o.colour, np.float32).astype(np.uint8)
        render_plane(canvas, block, o.size, camera, phone.camera_from_phone @ local)
        centre = (o.centre[0] - (left + symbol_side / 2), o.centre[1] - (top - symbol_side / 2))
        occluded = _occluded_fraction(symbol_side, [replace(o, centre=centre)])
    corners = camera.project(corners3, phone.camera_from_phone)
    depth = phone.camera_from_phone.apply(corners3)[:, 2]
    side = float(np.mean(np.linalg.norm(corners - np.roll(corners, 1, 0), axis=1)))
    return QrTruth(phone.payload, corners, bool(np.all(depth > 0.05)) and _in_view(corners, camera),
                   side / modules, occluded)


def render_phones(camera: CameraModel, phones: Sequence[PlacedPhone], photometry: Photometry,
                  rng: np.random.Generator, background: Canvas | None = None) -> QrFrame:
    canvas = (street_background(rng, camera.width, camera.height) if background is None
              else background.copy())
    truths = tuple(draw_phone(canvas, camera, p) for p in phones)
    return QrFrame(apply_photometry(canvas, photometry, rng), camera, truths, photometry)


def _person(rng: np.random.Generator, canvas: Canvas, reach: float) -> None:
    """A person standing in front of the robot: torso and head blobs (no code)."""
    height, width = canvas.shape[:2]
    cx = int(width * (0.5 + rng.uniform(-0.2, 0.2)))
    torso = tuple(float(c) for c in rng.uniform(20, 200, 3))
    w = int(width * 0.25 * reach)
    cv2.rectangle(canvas, (cx - w, int(height * (0.75 - 0.4 * reach))), (cx + w, height),
                  torso, -1)
    cv2.circle(canvas, (cx, int(height * (0.55 - 0.45 * reach))), int(w * 0.55),
               (110.0, 140.0, 190.0), -1)


def awaiting_sequence(seed: int, payload: str, camera: CameraModel = DEFAULT_CAMERA,
                      frames: int = 90, phone_share: float = 0.6,
                      distance: tuple[float, float] = (0.14, 0.32)) -> list[QrFrame]:
    """A recipient at the robot: first only the person is in view, then they hold up the phone
    (about `phone_share` of the frames) at `distance` (m), mostly near the middle of the view,
    tilted, sometimes moving (motion blur) or with a thumb on the screen's edge."""
    rng = np.random.default_rng(seed)
    background = street_background(rng, camera.width, camera.height)
    _person(rng, background, float(rng.uniform(0.6, 1.0)))
    base = random_photometry(rng, 0.7)
    first = int(round(frames * (1 - phone_share)))
    out = []
    x = y = 0.0
    for k in range(frames):
        photometry = replace(base, gain=base.gain * float(np.exp(rng.normal(0, 0.05))),
                             noise_sigma=float(rng.uniform(1.0, 3.0)))
        if k < first:
            out.append(render_phones(camera, [], photometry, rng, background))
            continue
        z = float(rng.uniform(*distance))
        if k == first or rng.random() < 0.15:  # a new hold position now and then
            spread = 0.35 if rng.random() < 0.85 else 0.9
            x = float(rng.uniform(-1, 1) * spread)
            y = float(rng.uniform(-1, 1) * spread * 0.8)
        half_x = camera.width / 2 / camera.k[0] * z * 0.75
        half_y = camera.height / 2 / camera.k[4] * z * 0.55
        pose = facing_pose(x * half_x, y * half_y, z,
                           yaw=float(rng.uniform(-0.45, 0.45)),
                           pitch=float(rng.uniform(-0.4, 0.4)),
                           roll=float(rng.uniform(-0.5, 0.5)))
        moving = rng.random() < 0.25
        photometry = replace(photometry,
                             motion_blur_px=float(rng.uniform(2, 6)) if moving else 0.0,
                             motion_angle=float(rng.uniform(0, math.pi)))
        thumb = None
        if rng.random() < 0.3:
            side = float(rng.choice([-1.0, 1.0]))
            thumb = Occluder((side * 0.03, float(rng.uniform(-0.04, 0.0))), (0.02, 0.05),
                             float(rng.uniform(-0.4, 0.4)), (120.0, 150.0, 200.0))
        phone = PlacedPhone(payload, pose, thumb, float(rng.uniform(0.75, 1.0)))
        out.append(render_phones(camera, [phone], photometry, rng, background))
    return out


# ---- compartment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompartmentFrame:
    image: Image
    occupied: bool
    object_fraction: float  # share of the floor covered by goods
    photometry: Photometry


@dataclass(frozen=True)
class CompartmentLayout:
    """The inside of one robot's compartment as its fixed camera sees it (from above)."""

    width: int = 320
    height: int = 240
    seed: int = 0
    floor: tuple[int, int, int, int] = field(default=(40, 30, 280, 210))  # x0, y0, x1, y1

    def reflectance(self) -> Canvas:
        """The empty compartment under even light: walls, floor with wear and a label."""
        rng = np.random.default_rng(self.seed)
        w, h = self.width, self.height
        canvas = np.zeros((h, w, 3), np.float32)
        wall = rng.uniform(90, 130, 3).astype(np.float32)
        canvas[:] = wall
        x0, y0, x1, y1 = self.floor
        # Side walls as trapezoids, shaded differently.
        for poly, shade in [([(0, 0), (x0, y0), (x0, y1), (0, h)], 0.8),
                            ([(w, 0), (x1, y0), (x1, y1), (w, h)], 0.9),
                            ([(0, 0), (w, 0), (x1, y0), (x0, y0)], 1.1),
                            ([(0, h), (w, h), (x1, y1), (x0, y1)], 0.7)]:
            cv2.fillConvexPoly(canvas, np.array(poly, np.int32),
                               tuple(float(c) for c in wall * shade))
        floor = rng.uniform(150, 185, 3).astype(np.float32)
        canvas[y0:y1, x0:x1] = floor
        texture = cv2.resize(rng.normal(0, 6, (h // 6 + 1, w // 6 + 1, 3)).astype(np.float32),
                             (w, h), interpolation=cv2.INTER_CUBIC)
        canvas[y0:y1, x0:x1] += texture[y0:y1, x0:x1]
        for _ in range(6):  # scuffs
            p = (int(rng.integers(x0, x1)), int(rng.integers(y0, y1)))
            q = (p[0] + int(rng.integers(-30, 30)), p[1] + int(rng.integers(-10, 10)))
            cv2.line(canvas, p, q, tuple(float(c) for c in floor * 0.85), 1)
        cv2.rectangle(canvas, (x0 + 8, y1 - 26), (x0 + 60, y1 - 8), (235.0, 235.0, 235.0), -1)
        cv2.rectangle(canvas, (x0 + 12, y1 - 21), (x0 + 40, y1 - 17), (40.0, 40.0, 40.0), -1)
        for cx, cy in [(x0 + 6, y0 + 6), (x1 - 6, y0 + 6), (x0 + 6, y1 - 6), (x1 - 6, y1 - 6)]:
            cv2.circle(canvas, (cx, cy), 3, (70.0, 70.0, 70.0), -1)
        return np.asarray(cv2.GaussianBlur(canvas, (0, 0), 0.5), dtype=np.float32)


OBJECT_KINDS = ("box", "bag", "envelope", "bottle", "pouch")


def _draw_goods(rng: np.random.Generator, canvas: Canvas, layout: CompartmentLayout,
                kind: str, area: float) -> npt.NDArray[np.bool_]:
    """One item on the floor, with its soft shadow; returns its footprint."""
    x0, y0, x1, y1 = layout.floor
    fw, fh = x1 - x0, y1 - y0
    side = math.sqrt(area * fw * fh)
    aspect = float(rng.uniform(0.6, 1.6))
    w = max(6, int(side * math.sqrt(aspect)))
    h = max(6, int(side / math.sqrt(aspect)))
    cx = int(rng.integers(x0 + w // 2 + 2, max(x0 + w // 2 + 3, x1 - w // 2 - 2)))
    cy = int(rng.integers(y0 + h // 2 + 2, max(y0 + h // 2 + 3, y1 - h // 2 - 2)))
    angle = float(rng.uniform(-30, 30))
    footprint = np.zeros(canvas.shape[:2], np.uint8)
    box = cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.int32)
    if kind in ("bag", "pouch"):
        pts = []
        for k in range(10):
            a = 2 * math.pi * k / 10
            r = float(rng.uniform(0.75, 1.0))
            pts.append((cx + r * w / 2 * math.cos(a), cy + r * h / 2 * math.sin(a)))
        polygon = np.array(pts, np.int32)
    elif kind == "bottle":
        polygon = np.asarray(cv2.ellipse2Poly((cx, cy), (w // 2, w // 2), 0, 0, 360, 10),
                             dtype=np.int32)
    else:
        polygon = box
    cv2.fillPoly(footprint, [polygon], 255)
    # Soft shadow, offset away from the light.
    shadow = cv2.GaussianBlur(np.roll(footprint, (3, 3), axis=(0, 1)).astype(np.float32),
                              (0, 0), 3.0) / 255.0
    canvas *= np.asarray(1.0 - 0.35 * shadow, dtype=np.float32)[:, :, None]
    floor_colour = canvas[y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3).mean(axis=0)
    if kind == "box":
        colour = np.array(rng.uniform([70, 110, 150], [110, 150, 200]), np.float32)  # cardboard
    elif kind == "envelope":  # close to the floor's colour: the hard case
        colour = (floor_colour * rng.uniform(1.06, 1.18, 3)).astype(np.float32)
    elif kind == "bag":
        colour = np.array(rng.uniform(170, 245, 3), np.float32)
    elif kind == "bottle":
        colour = np.array(rng.uniform(30, 200, 3), np.float32)
    else:
        colour = np.array(rng.uniform(20, 90, 3), np.float32)
    item = np.ones(canvas.shape, np.float32) * colour
    ys, xs = np.mgrid[0:canvas.shape[0], 0:canvas.shape[1]].astype(np.float32)
    shade = 1.0 + 0.12 * ((xs - cx) / max(w, 1) - (ys - cy) / max(h, 1))  # curved or creased
    item *= shade[:, :, None]
    if kind == "box":  # tape across the lid
        tape = np.zeros(canvas.shape[:2], np.uint8)
        cv2.line(tape, (cx - w, cy), (cx + w, cy), 255, max(2, h // 8))
        item[tape > 0] = item[tape > 0] * 1.25
    if kind == "bag":  # wrinkles
        wrinkles = cv2.resize(rng.normal(0, 14, (8, 8)).astype(np.float32),
                              (canvas.shape[1], canvas.shape[0]), interpolation=cv2.INTER_CUBIC)
        item += wrinkles[:, :, None]
    mask = np.asarray(cv2.GaussianBlur(footprint.astype(np.float32), (0, 0), 0.7),
                      dtype=np.float32)[:, :, None] / np.float32(255.0)
    canvas *= 1.0 - mask
    canvas += item * mask
    if kind in ("box", "envelope"):  # the item's outline (a box edge, an envelope seam)
        cv2.polylines(canvas, [polygon], True, tuple(float(c) for c in colour * 0.8), 1)
    return footprint > 0


def compartment_lighting(rng: np.random.Generator, strength: float = 1.0) -> Photometry:
    """The compartment's own LED light, with what changes it: exposure, white balance,
    gradients from light leaking in, lens shading, noise and vibration of the camera."""
    s = strength
    return Photometry(
        gain=float(np.exp(rng.uniform(-1.0, 0.15) * s)),  # auto exposure: the floor unclipped
        offset=float(rng.uniform(-3, 6) * s),
        gamma=float(np.exp(rng.uniform(-0.2, 0.2) * s)),
        colour_gain=tuple(float(np.exp(rng.uniform(-0.12, 0.12) * s))  # type: ignore[arg-type]
                          for _ in range(3)),
        gradient=float(rng.uniform(0, 0.5) * s),
        gradient_angle=float(rng.uniform(0, 2 * math.pi)),
        vignette=float(rng.uniform(0, 0.35) * s),
        blur_sigma=float(rng.uniform(0, 0.7) * s),
        noise_sigma=float(rng.uniform(1.0, 4.0) * s),
        shift_px=(float(rng.uniform(-1, 1) * s), float(rng.uniform(-1, 1) * s)),
    )


def compartment_reference(layout: CompartmentLayout, seed: int = 0) -> Image:
    """The empty compartment under its nominal light (what an operator captures once)."""
    rng = np.random.default_rng(seed)
    return apply_photometry(layout.reflectance(), Photometry(noise_sigma=1.5), rng)


def compartment_frame(layout: CompartmentLayout, seed: int, occupied: bool,
                      strength: float = 1.0, kinds: Sequence[str] = OBJECT_KINDS,
                      area: tuple[float, float] = (0.02, 0.3)) -> CompartmentFrame:
    """The compartment under a random lighting; if `occupied`, with 1-3 items (the first of
    `area` share of the floor, chosen among `kinds`)."""
    rng = np.random.default_rng(seed)
    canvas = layout.reflectance()
    footprint = np.zeros(canvas.shape[:2], dtype=bool)
    if occupied:
        for index in range(int(rng.integers(1, 4))):
            kind = str(rng.choice(list(kinds)))
            share = float(rng.uniform(*area)) if index == 0 else float(rng.uniform(0.01, 0.08))
            footprint |= _draw_goods(rng, canvas, layout, kind, share)
    x0, y0, x1, y1 = layout.floor
    fraction = float(footprint[y0:y1, x0:x1].mean())
    lighting = compartment_lighting(rng, strength)
    return CompartmentFrame(apply_photometry(canvas, lighting, rng), occupied, fraction, lighting)

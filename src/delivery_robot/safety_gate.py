"""The safety gate: the last check between navigation's velocity command and the wheels.

Pure numpy core of the `safety_monitor` node (no rclpy here). The node feeds it the latest laser
scan, the commanded velocity, the e-stop inputs and the route-graph zone cap, calls `step(now)`
at the command rate (and on a watchdog timer), publishes the safe command on `cmd_vel_safe` and
the `SafetyStatus` on `safety/state` (`delivery_interfaces/SafetyState`, field for field).

Rules, in the order they apply (all of them can only lower the speed):
- e-stop: hardware and remote, both latching until `reset()`;
- command timeout (no fresh command -> stop) and scan timeout (stale or missing scan -> stop);
- stop zone (obstacle in the stop polygon -> stop), slowdown zone (-> `slowdown_scale`);
- approach: time to collision of the footprint swept along the commanded (v, w) arc kept
  >= `time_before_collision`;
- legal speed cap of the mass class and the route-graph zone cap;
- acceleration limit (speeding up only: slowing down is always allowed at once).

Every rule scales linear and angular velocity by the same factor, so the gate never bends the
commanded arc: the path the approach check simulated is the path the robot drives.

Turning on the spot (|v| ~ 0, w != 0) replaces the zone and approach rules with one check: the
robot's swept circle (footprint circumradius about base_link's origin, the drive axle, plus
`rotation_clearance`) must hold fewer than `min_points` scan points, else STOP_ZONE. A robot
with an obstacle ahead in its stop zone can so turn around to escape; e-stops, watchdogs and
the angular acceleration limit still apply, and any forward or backward motion keeps the
zone rules.

Zones follow the direction of travel: the configured polygons are for driving forwards;
reversing uses `*_reverse` polygons (by default the forward ones mirrored about the
footprint's mid-length), and turning on the spot or standing uses both.

Approach model: the footprint is placed at sampled poses along the commanded arc for
`time_before_collision` seconds (at the commanded speed) and the first pose that contains
`min_points` scan points gives the time to collision; the command is scaled by
ttc / time_before_collision, which makes the time to collision at the output speed equal the
threshold (obstacles are static, so scaling the speed scales the time). With obstacle
velocities from the tracker (`approach_use_obstacle_velocity`), moving points are also
predicted along their velocity and the earlier hit counts; the same ratio is then a
heuristic, as a scaled robot no longer scales the time exactly.

Status: a limit bit is set while the rule holds the robot back: stop/slowdown zones when
occupied (for the current direction), approach when its scale is below 1, caps and
acceleration when they clipped the command, e-stops and watchdogs while in force.
`max_speed` is the linear speed allowed now (0 while stopped); the nearest obstacle is the
nearest scan point to base_link's origin (+inf when there is none; kept from the last scan
while the scan is stale, with SCAN_TIMEOUT set).

Units follow REP-103 (m, rad, s, m/s); km/h appears only in names that say so. Times are
seconds on whatever clock the node uses (ROS time), the same clock for stamps and `now`.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntFlag
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.intp]
ComplexArray = npt.NDArray[np.complex128]

KMH = 1.0 / 3.6  # m/s per km/h

# Legal speed caps by total mass (Korea's outdoor mobile robot certification, 2023).
MASS_CLASS_LIGHT_MAX_KG = 100.0
MASS_CLASS_MEDIUM_MAX_KG = 230.0
SPEED_CAP_LIGHT_KMH = 15.0
SPEED_CAP_MEDIUM_KMH = 10.0
SPEED_CAP_HEAVY_KMH = 5.0

# Upper bound on (poses x candidate points) evaluated at once in the approach check, so a
# dense scan near the path cannot allocate unbounded temporaries.
_APPROACH_CHUNK_ELEMENTS = 200_000
_EPS = 1e-9


class SafetyLimit(IntFlag):
    """Why the gate limited a command: the `LIMIT_*` bits of `delivery_interfaces/SafetyState`.

    The values are the message's constants; a test (tests/test_safety_gate.py) keeps the two
    equal, so `int(limits)` goes straight into `SafetyState.active_limits`.
    """

    NONE = 0
    STOP_ZONE = 1
    SLOWDOWN_ZONE = 2
    APPROACH = 4
    SPEED_CAP = 8
    ZONE_CAP = 16
    ACCELERATION = 32
    ESTOP_HARDWARE = 64
    ESTOP_REMOTE = 128
    COMMAND_TIMEOUT = 256
    SCAN_TIMEOUT = 512


def mass_class_speed_cap(total_mass_kg: float) -> float:
    """Legal speed cap in m/s for a robot of this total mass (<=100 kg, <=230 kg, heavier)."""
    if not math.isfinite(total_mass_kg) or total_mass_kg <= 0.0:
        raise ValueError(f"total mass must be a positive number of kg, got {total_mass_kg!r}")
    if total_mass_kg <= MASS_CLASS_LIGHT_MAX_KG:
        return SPEED_CAP_LIGHT_KMH * KMH
    if total_mass_kg <= MASS_CLASS_MEDIUM_MAX_KG:
        return SPEED_CAP_MEDIUM_KMH * KMH
    return SPEED_CAP_HEAVY_KMH * KMH


# --------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class Pose2D:
    """A planar pose (x, y in m, yaw in rad), e.g. the scanner's mount pose in base_link."""

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0


Polygon = tuple[tuple[float, float], ...]


class PolygonTest:
    """Vectorised point-in-polygon for one polygon, edges precomputed.

    Convex polygons (footprints and zones usually are) use half-plane tests: a point is
    inside when it is left of every counter-clockwise edge, three array operations in all.
    Other simple polygons use the crossing number, after a bounding-box check. Points exactly
    on an edge may fall either way, which is fine for zones with centimetre margins.
    Points are complex numbers x + iy, so one multiplication rotates and translates them.
    """

    def __init__(self, vertices: Polygon | FloatArray) -> None:
        v = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
        self.vertices: FloatArray = v
        z = v[:, 0] + 1j * v[:, 1]
        edges = np.roll(z, -1) - z
        turns = (edges.conj() * np.roll(edges, -1)).imag
        area2 = float((z.conj() * np.roll(z, -1)).imag.sum())
        orientation = 1.0 if area2 >= 0.0 else -1.0
        self.convex = bool(np.all(turns * orientation >= -1e-12))
        if orientation < 0.0:  # make it counter-clockwise
            z = z[::-1]
            edges = np.roll(z, -1) - z
        self._edge_conj: ComplexArray = edges.conj()
        self._edge_offset: FloatArray = (edges.conj() * z).imag
        self._x1: FloatArray = v[:, 0].copy()
        self._y1: FloatArray = v[:, 1].copy()
        self._y2: FloatArray = np.roll(v[:, 1], -1)
        dx = np.roll(v[:, 0], -1) - v[:, 0]
        dy = self._y2 - self._y1
        flat = dy == 0.0  # horizontal edges never satisfy the crossing condition
        self._slope: FloatArray = np.where(flat, 0.0, dx / np.where(flat, 1.0, dy))
        self.x_min = float(v[:, 0].min())
        self.x_max = float(v[:, 0].max())
        self.y_min = float(v[:, 1].min())
        self.y_max = float(v[:, 1].max())

    def contains_z(self, z: ComplexArray) -> BoolArray:
        """Inside mask for complex points z = x + iy of any shape."""
        if self.convex:
            # Edges on the first axis: the reduction then runs over whole contiguous blocks.
            shape = (-1,) + (1,) * z.ndim
            left = (self._edge_conj.reshape(shape) * z).imag >= self._edge_offset.reshape(shape)
            left_of_all: BoolArray = np.logical_and.reduce(left, axis=0)
            return left_of_all
        return self._crossing(z.real, z.imag)

    def contains_in_frames(self, rel: ComplexArray, to_frame: ComplexArray) -> BoolArray:
        """`contains_z(rel * to_frame)`, with the rotation folded into the edges when convex.

        `rel` (poses, points) are offsets from each pose, `to_frame` (poses, 1) unit complex
        rotations into each pose's frame: one multiplication fewer on the big array.
        """
        if not self.convex:
            return self.contains_z(rel * to_frame)
        edges = self._edge_conj[:, None, None] * to_frame  # (edges, poses, 1)
        left = (edges * rel).imag >= self._edge_offset[:, None, None]
        inside: BoolArray = np.logical_and.reduce(left, axis=0)
        return inside

    def contains(self, x: FloatArray, y: FloatArray) -> BoolArray:
        """Inside mask for points (x, y) of any (equal) shape."""
        if self.convex:
            return self.contains_z(np.asarray(x) + 1j * np.asarray(y))
        return self._crossing(x, y)

    def _crossing(self, x: FloatArray, y: FloatArray) -> BoolArray:
        inside = np.zeros(x.shape, dtype=np.bool_)
        in_box = (x >= self.x_min) & (x <= self.x_max) & (y >= self.y_min) & (y <= self.y_max)
        idx = np.flatnonzero(in_box)
        if idx.size == 0:
            return inside
        px = x.ravel()[idx][:, None]
        py = y.ravel()[idx][:, None]
        crosses = (self._y1 > py) != (self._y2 > py)
        x_cross = self._x1 + (py - self._y1) * self._slope
        odd = (np.count_nonzero(crosses & (px < x_cross), axis=1) & 1).astype(np.bool_)
        inside.ravel()[idx] = odd
        return inside


def points_in_polygon(points: FloatArray, polygon: Polygon | FloatArray) -> BoolArray:
    """Inside mask of an (N, 2) point array for one polygon (convenience wrapper)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return PolygonTest(polygon).contains(pts[:, 0], pts[:, 1])


def as_complex(points: FloatArray) -> ComplexArray:
    """(N, 2) x, y -> (N,) x + iy, without copying when the array is contiguous."""
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 2)
    z: ComplexArray = pts.view(np.complex128).reshape(-1)
    return z


@functools.lru_cache(maxsize=16)
def _beam_directions(count: int, angle_min: float, increment: float, yaw: float) -> ComplexArray:
    """Unit vector of every beam in base_link; cached because a scanner's geometry is fixed."""
    angles = yaw + angle_min + increment * np.arange(count, dtype=np.float64)
    directions: ComplexArray = np.cos(angles) + 1j * np.sin(angles)
    directions.flags.writeable = False
    return directions


@dataclass(frozen=True, eq=False)
class LaserScanData:
    """The fields of a sensor_msgs/LaserScan the gate uses; `stamp` in s.

    `mount` is the scanner's pose in base_link (from TF); None means the configured
    `laser_pose`.
    """

    ranges: FloatArray
    angle_min: float
    angle_increment: float
    range_min: float
    range_max: float
    stamp: float
    mount: Pose2D | None = None


def _scan_ranges(scan: LaserScanData) -> tuple[FloatArray, BoolArray]:
    """Ranges with REP-117 applied, and the mask of beams that hit something.

    NaN and +inf are "no return"; -inf means "too close to measure", which a safety gate must
    treat as an obstacle, so it becomes `range_min`. Finite ranges outside
    [range_min, range_max] are invalid.
    """
    ranges = np.asarray(scan.ranges, dtype=np.float64).reshape(-1)
    valid = (ranges >= scan.range_min) & (ranges <= scan.range_max)  # False for NaN
    too_close = ranges == -np.inf
    if too_close.any():
        valid |= too_close
        ranges = np.where(too_close, scan.range_min, ranges)
    return ranges, valid


def _directions(scan: LaserScanData, count: int, mount: Pose2D) -> ComplexArray:
    return _beam_directions(
        count, float(scan.angle_min), float(scan.angle_increment), float(mount.yaw)
    )


def scan_to_base_points(scan: LaserScanData, mount: Pose2D) -> tuple[FloatArray, BoolArray]:
    """Every beam as a point in base_link, (N, 2), plus the mask of beams that hit something.

    Invalid beams are at the mount position; see `_scan_ranges` for the REP-117 rules.
    """
    ranges, valid = _scan_ranges(scan)
    z = np.where(valid, ranges, 0.0) * _directions(scan, ranges.size, mount)
    z += complex(mount.x, mount.y)
    return z.view(np.float64).reshape(-1, 2), valid


def _arc_poses_z(
    linear: float, angular: float, times: FloatArray
) -> tuple[ComplexArray, ComplexArray]:
    """Positions (complex) and headings (unit complex) along the (v, w) arc at `times`."""
    heading = np.exp(1j * (angular * times))
    if abs(angular) > _EPS:
        return (-1j * linear / angular) * (heading - 1.0), heading
    return (linear * times).astype(np.complex128), heading


def _near_path(
    z: ComplexArray,
    linear: float,
    angular: float,
    horizon: float,
    margin: float | FloatArray,
) -> BoolArray:
    """Points within `margin` of the path base_link's origin drives over `horizon` seconds.

    The broad phase of the approach check: the footprint never reaches further than its
    circumradius from that path. For an arc the test is a cheap superset: the ring round the
    whole turning circle, cut to the disc that holds the arc.
    """
    if abs(linear) <= _EPS:
        near: BoolArray = np.abs(z) <= margin
        return near
    length = linear * horizon
    if abs(angular * horizon) <= 1e-6:
        along = np.clip(z.real, min(0.0, length), max(0.0, length))
        near = np.abs(z - along) <= margin
        return near
    radius = linear / angular  # signed; the turning centre is (0, radius)
    on_ring = np.abs(np.abs(z - 1j * radius) - abs(radius)) <= margin
    near = on_ring & (np.abs(z) <= abs(length) + margin)
    return near


# --------------------------------------------------------------------------------------------
# Configuration


class SafetyConfigError(ValueError):
    """A safety parameter is missing, of the wrong type or out of range (names the key)."""


def _mirror_polygon(polygon: Polygon, x_mid: float) -> Polygon:
    """The polygon mirrored front-to-back about x = x_mid (for the zones used in reverse)."""
    return tuple((2.0 * x_mid - x, y) for x, y in reversed(polygon))


def _polygon_area(polygon: Polygon) -> float:
    xs = np.array([p[0] for p in polygon])
    ys = np.array([p[1] for p in polygon])
    return 0.5 * float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))


def _normalized_polygon(name: str, polygon: Any) -> Polygon:
    """Vertices as a tuple of (x, y) float pairs (from pairs or an (N, 2) array)."""
    try:
        pairs = np.asarray(polygon, dtype=np.float64)
    except (TypeError, ValueError):
        raise SafetyConfigError(f"{name}: expected (x, y) vertex pairs, got {polygon!r}") from None
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise SafetyConfigError(f"{name}: expected (x, y) vertex pairs, got shape {pairs.shape}")
    return tuple((float(x), float(y)) for x, y in pairs)


def _check_polygon(name: str, polygon: Polygon) -> None:
    if len(polygon) < 3:
        raise SafetyConfigError(f"{name}: a polygon needs at least 3 vertices, got {len(polygon)}")
    if not all(math.isfinite(c) for vertex in polygon for c in vertex):
        raise SafetyConfigError(f"{name}: vertices must be finite numbers")
    if abs(_polygon_area(polygon)) < 1e-6:
        raise SafetyConfigError(f"{name}: polygon has no area (collinear or repeated vertices)")


@dataclass(frozen=True)
class SafetyConfig:
    """Safety gate parameters (validated on construction). Polygons are in base_link, m.

    `stop_zone_reverse` / `slowdown_zone_reverse` are the zones used while reversing; when not
    given they are the forward zones mirrored about the footprint's mid-length, so reversing
    checks behind the robot.
    """

    total_mass_kg: float
    footprint: Polygon
    stop_zone: Polygon
    slowdown_zone: Polygon
    slowdown_scale: float = 0.5
    stop_zone_reverse: Polygon | None = None
    slowdown_zone_reverse: Polygon | None = None
    laser_pose: Pose2D = field(default_factory=Pose2D)
    min_points: int = 1
    approach_enabled: bool = True
    time_before_collision: float = 1.5
    approach_linear_resolution: float = 0.05
    approach_angular_resolution: float = 0.05
    approach_max_samples: int = 200
    approach_use_obstacle_velocity: bool = False
    max_linear_accel: float = 1.0
    max_angular_accel: float = 2.0
    command_timeout: float = 0.5
    scan_timeout: float = 0.5
    rotation_clearance: float = 0.05  # m beyond the footprint's circumradius, turns in place

    def __post_init__(self) -> None:
        try:
            mass_class_speed_cap(self.total_mass_kg)
        except ValueError as exc:
            raise SafetyConfigError(f"total_mass_kg: {exc}") from None
        for name in ("footprint", "stop_zone", "slowdown_zone"):
            object.__setattr__(self, name, _normalized_polygon(name, getattr(self, name)))
            _check_polygon(name, getattr(self, name))
        for name in ("stop_zone_reverse", "slowdown_zone_reverse"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _normalized_polygon(name, getattr(self, name)))
                _check_polygon(name, getattr(self, name))
        if not 0.0 <= self.slowdown_scale <= 1.0:
            raise SafetyConfigError(f"slowdown_scale: must be in [0, 1], got {self.slowdown_scale}")
        positive = (
            "time_before_collision",
            "approach_linear_resolution",
            "approach_angular_resolution",
            "max_linear_accel",
            "max_angular_accel",
            "command_timeout",
            "scan_timeout",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise SafetyConfigError(f"{name}: must be a positive finite number, got {value}")
        if not (math.isfinite(self.rotation_clearance) and self.rotation_clearance >= 0.0):
            raise SafetyConfigError(
                f"rotation_clearance: must be a finite number >= 0, got {self.rotation_clearance}"
            )
        if self.min_points < 1:
            raise SafetyConfigError(f"min_points: must be >= 1, got {self.min_points}")
        if self.approach_max_samples < 1:
            raise SafetyConfigError(
                f"approach_max_samples: must be >= 1, got {self.approach_max_samples}"
            )
        pose = self.laser_pose
        if not all(math.isfinite(c) for c in (pose.x, pose.y, pose.yaw)):
            raise SafetyConfigError("laser_pose: x, y, yaw must be finite")

    @property
    def speed_cap(self) -> float:
        """The mass class's legal speed cap, m/s."""
        return mass_class_speed_cap(self.total_mass_kg)

    @property
    def footprint_mid_x(self) -> float:
        xs = [x for x, _ in self.footprint]
        return 0.5 * (min(xs) + max(xs))

    @property
    def stop_zone_behind(self) -> Polygon:
        if self.stop_zone_reverse is not None:
            return self.stop_zone_reverse
        return _mirror_polygon(self.stop_zone, self.footprint_mid_x)

    @property
    def slowdown_zone_behind(self) -> Polygon:
        if self.slowdown_zone_reverse is not None:
            return self.slowdown_zone_reverse
        return _mirror_polygon(self.slowdown_zone, self.footprint_mid_x)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SafetyConfig:
        """Build from the node's flat parameter dict (the `ros__parameters` of safety.yaml).

        Polygons are flat lists [x1, y1, x2, y2, ...], `laser_pose` is [x, y, yaw]. Keys that
        start with `tracking_` belong to the obstacle tracker and `use_sim_time` to ROS; any
        other unknown key is an error, so a typo cannot silently drop a safety rule.
        """
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(
            k
            for k in params
            if k not in known and k != "use_sim_time" and not k.startswith("tracking_")
        )
        if unknown:
            raise SafetyConfigError(
                f"unknown safety parameter(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        for required in ("total_mass_kg", "footprint", "stop_zone", "slowdown_zone"):
            if required not in params:
                raise SafetyConfigError(f"{required}: required parameter is missing")
        kwargs: dict[str, Any] = {}
        for name, value in params.items():
            if name not in known:
                continue
            if name in ("footprint", "stop_zone", "slowdown_zone") or name.endswith("_reverse"):
                kwargs[name] = _param_polygon(name, value)
            elif name == "laser_pose":
                x, y, yaw = _param_floats(name, value, length=3)
                kwargs[name] = Pose2D(x, y, yaw)
            elif name in ("approach_enabled", "approach_use_obstacle_velocity"):
                kwargs[name] = _param_bool(name, value)
            elif name in ("min_points", "approach_max_samples"):
                kwargs[name] = _param_int(name, value)
            else:
                kwargs[name] = _param_float(name, value)
        return cls(**kwargs)


def _param_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SafetyConfigError(f"{name}: expected a number, got {value!r}")
    return float(value)


def _param_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SafetyConfigError(f"{name}: expected an integer, got {value!r}")
    return int(value)


def _param_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SafetyConfigError(f"{name}: expected true or false, got {value!r}")
    return value


def _param_floats(name: str, value: Any, length: int | None = None) -> list[float]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise SafetyConfigError(f"{name}: expected a list of numbers, got {value!r}")
    result = [_param_float(f"{name}[{i}]", item) for i, item in enumerate(value)]
    if length is not None and len(result) != length:
        raise SafetyConfigError(f"{name}: expected {length} numbers, got {len(result)}")
    return result


def _param_polygon(name: str, value: Any) -> Polygon:
    flat = _param_floats(name, value)
    if len(flat) % 2:
        raise SafetyConfigError(
            f"{name}: a flat polygon [x1, y1, x2, y2, ...] needs an even count, got {len(flat)}"
        )
    return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))


def load_params_file(path: str | Path, node_name: str = "safety_monitor") -> dict[str, Any]:
    """The flat `ros__parameters` dict for `node_name` from a ROS 2 params YAML file.

    Wildcard sections (`/**`) apply first, then the node's own section (either `node_name`
    or `/node_name`) overrides them, as ROS does.
    """
    import yaml

    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    if not isinstance(document, dict):
        raise SafetyConfigError(f"{path}: expected a mapping of node names to parameters")
    merged: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = document.get(key)
        if section is None:
            continue
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise SafetyConfigError(f"{path}: section {key!r} has no ros__parameters mapping")
        merged.update(params)
    return merged


# --------------------------------------------------------------------------------------------
# The gate


@dataclass(frozen=True)
class VelocityCommand:
    """Navigation's command: linear m/s (base_link x), angular rad/s (z), stamp in s."""

    linear: float
    angular: float
    stamp: float


@dataclass(frozen=True)
class SafetyStatus:
    """What the gate did, field for field the `delivery_interfaces/SafetyState` message."""

    stamp: float
    active_limits: SafetyLimit
    speed_scale: float
    max_speed: float
    nearest_obstacle_distance: float
    nearest_obstacle: tuple[float, float, float]
    estop_hardware: bool
    estop_remote: bool
    interventions: int

    def message_fields(self) -> dict[str, Any]:
        """The SafetyState fields (all but the header) with the message's names and types."""
        return {
            "active_limits": int(self.active_limits),
            "speed_scale": float(self.speed_scale),
            "max_speed": float(self.max_speed),
            "nearest_obstacle_distance": float(self.nearest_obstacle_distance),
            "nearest_obstacle": self.nearest_obstacle,
            "estop_hardware": self.estop_hardware,
            "estop_remote": self.estop_remote,
            "interventions": int(self.interventions),
        }


@dataclass(frozen=True)
class GateOutput:
    """The command for the base (m/s, rad/s) and why it is what it is."""

    linear: float
    angular: float
    status: SafetyStatus


@dataclass(frozen=True)
class ResetResult:
    accepted: bool
    reason: str


def _accel_scale(target: float, previous: float, max_step: float) -> float:
    """Largest factor in [0, 1] on `target` that grows |speed| by at most `max_step`.

    Slowing down is never limited; a change of direction must pass through zero.
    """
    if abs(target) <= _EPS:
        return 1.0
    allowed = max_step if previous * target < 0.0 else abs(previous) + max_step
    return 1.0 if abs(target) <= allowed else allowed / abs(target)


class SafetyGate:
    """Stateful gate: feed it inputs as they arrive, call `step(now)` for the safe command.

    E-stop semantics (both latch; `reset()` clears them):
    - remote: `set_remote_estop(True)` latches; `False` only lowers the input, the latch stays
      until `reset()`.
    - hardware: `set_hardware_estop(pressed)` follows the button (the motor power relay is
      the hardware's business), but the gate stays stopped after the button is released until
      `reset()`; a reset while the button is still pressed, or the remote input still
      asserted, is refused. `estop_hardware` in the status is the latch, i.e. true from press
      to reset.
    After a reset, commands stamped at or before the reset are ignored, so the robot never
    resumes a command that was sent before the e-stop; it waits for a fresh one.

    `interventions` counts commands whose output differed from the command (each command at
    most once, however often `step` runs while it is the latest).
    """

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self._footprint = PolygonTest(config.footprint)
        self._footprint_radius = float(np.max(np.hypot(*self._footprint.vertices.T)))
        self._swept_radius = self._footprint_radius + config.rotation_clearance
        self._zones = {
            "stop": (PolygonTest(config.stop_zone), PolygonTest(config.stop_zone_behind)),
            "slowdown": (
                PolygonTest(config.slowdown_zone),
                PolygonTest(config.slowdown_zone_behind),
            ),
        }
        self._speed_cap = config.speed_cap
        self._zone_cap: float | None = None

        self._z: ComplexArray = np.zeros(0, dtype=np.complex128)  # valid points, x + iy
        self._velocities: ComplexArray | None = None
        self._scan_stamp: float | None = None
        self._zone_counts: dict[tuple[str, int], int] = {}
        self._nearest = (math.inf, (0.0, 0.0, 0.0))

        self._command: VelocityCommand | None = None
        self._command_seq = 0
        self._counted_seq = 0

        self._hw_pressed = False
        self._hw_latched = False
        self._remote_input = False
        self._remote_latched = False
        self._reset_stamp = -math.inf

        self._last_output = (0.0, 0.0)
        self._last_step: float | None = None
        self._interventions = 0

    # ---- inputs ------------------------------------------------------------------------------

    def update_scan(self, scan: LaserScanData, point_velocities: FloatArray | None = None) -> None:
        """Take a new scan; `point_velocities` (N, 2) per beam, m/s in base_link axes, optional.

        Velocities (e.g. from `ObstacleTracker`) are used by approach mode only when
        `approach_use_obstacle_velocity` is set.
        """
        mount = scan.mount if scan.mount is not None else self.config.laser_pose
        ranges, valid = _scan_ranges(scan)
        self._z = ranges[valid] * _directions(scan, ranges.size, mount)[valid]
        self._z += complex(mount.x, mount.y)
        self._velocities = None
        if point_velocities is not None and self.config.approach_use_obstacle_velocity:
            vel = np.asarray(point_velocities, dtype=np.float64).reshape(-1, 2)
            if vel.shape[0] != valid.size:
                raise ValueError(
                    f"point_velocities has {vel.shape[0]} rows for a scan of {valid.size} beams"
                )
            vel = np.nan_to_num(vel[valid], nan=0.0, posinf=0.0, neginf=0.0)
            self._velocities = as_complex(vel)
        self._scan_stamp = float(scan.stamp)
        self._zone_counts = {}
        if self._z.size:
            dist = np.abs(self._z)
            i = int(np.argmin(dist))
            p = self._z[i]
            self._nearest = (float(dist[i]), (float(p.real), float(p.imag), 0.0))
        else:
            self._nearest = (math.inf, (0.0, 0.0, 0.0))

    @property
    def points(self) -> FloatArray:
        """The latest scan's obstacle points in base_link, (N, 2) (a copy)."""
        return self._z.view(np.float64).reshape(-1, 2).copy()

    def update_command(self, command: VelocityCommand) -> None:
        self._command = command
        self._command_seq += 1

    def set_zone_speed_cap(self, cap: float | None) -> None:
        """The route-graph zone's speed cap in m/s (e.g. 5 km/h in parks), None outside zones."""
        if cap is not None and not (math.isfinite(cap) and cap >= 0.0):
            raise ValueError(f"zone speed cap must be a finite m/s >= 0 or None, got {cap!r}")
        self._zone_cap = cap

    def set_hardware_estop(self, pressed: bool) -> None:
        self._hw_pressed = pressed
        if pressed:
            self._hw_latched = True

    def set_remote_estop(self, active: bool) -> None:
        self._remote_input = active
        if active:
            self._remote_latched = True

    def reset(self, now: float) -> ResetResult:
        """Clear the e-stop latches, unless an e-stop input is still asserted."""
        if self._hw_pressed:
            return ResetResult(False, "hardware e-stop is still pressed; release it first")
        if self._remote_input:
            return ResetResult(False, "remote e-stop is still asserted")
        self._hw_latched = False
        self._remote_latched = False
        self._reset_stamp = now
        return ResetResult(True, "e-stop reset; waiting for a fresh command")

    @property
    def interventions(self) -> int:
        return self._interventions

    # ---- the gate ----------------------------------------------------------------------------

    def step(self, now: float) -> GateOutput:
        """Decide the safe command for time `now` from the latest inputs."""
        cfg = self.config
        limits = 0  # SafetyLimit bits as a plain int: IntFlag arithmetic is slow
        stop = False
        scale = 1.0
        approach_speed = math.inf

        if self._hw_latched:
            limits |= SafetyLimit.ESTOP_HARDWARE.value
            stop = True
        if self._remote_latched:
            limits |= SafetyLimit.ESTOP_REMOTE.value
            stop = True

        cmd = self._command
        v = w = 0.0
        if (
            cmd is None
            or not self._fresh(cmd.stamp, now, cfg.command_timeout)
            or cmd.stamp <= self._reset_stamp
            or not (math.isfinite(cmd.linear) and math.isfinite(cmd.angular))
        ):
            limits |= SafetyLimit.COMMAND_TIMEOUT.value
            stop = True
        else:
            v, w = float(cmd.linear), float(cmd.angular)

        if self._scan_stamp is None or not self._fresh(self._scan_stamp, now, cfg.scan_timeout):
            limits |= SafetyLimit.SCAN_TIMEOUT.value
            stop = True
        elif abs(v) <= _EPS and abs(w) > _EPS:
            if self._swept_count() >= cfg.min_points:  # a turn in place hits only these
                limits |= SafetyLimit.STOP_ZONE.value
                stop = True
        else:
            if self._zone_count("stop", v) >= cfg.min_points:
                limits |= SafetyLimit.STOP_ZONE.value
                stop = True
            if self._zone_count("slowdown", v) >= cfg.min_points:
                limits |= SafetyLimit.SLOWDOWN_ZONE.value
                scale = min(scale, cfg.slowdown_scale)
            if cfg.approach_enabled and not stop and (abs(v) > _EPS or abs(w) > _EPS):
                ttc = self.time_to_collision(v, w)
                if ttc < cfg.time_before_collision:
                    limits |= SafetyLimit.APPROACH.value
                    approach_scale = ttc / cfg.time_before_collision
                    scale = min(scale, approach_scale)
                    if abs(v) > _EPS:
                        approach_speed = approach_scale * abs(v)

        cap = self._speed_cap
        if abs(v) * scale > self._speed_cap + _EPS:
            limits |= SafetyLimit.SPEED_CAP.value
        if self._zone_cap is not None:
            cap = min(cap, self._zone_cap)
            if abs(v) * scale > self._zone_cap + _EPS:
                limits |= SafetyLimit.ZONE_CAP.value
        if abs(v) * scale > cap:
            scale = cap / abs(v)

        if self._last_step is None:
            dt = 0.0
        else:
            dt = min(max(now - self._last_step, 0.0), cfg.command_timeout)
        if not stop:
            prev_v, prev_w = self._last_output
            accel = min(
                _accel_scale(v * scale, prev_v, cfg.max_linear_accel * dt),
                _accel_scale(w * scale, prev_w, cfg.max_angular_accel * dt),
            )
            if accel < 1.0:
                limits |= SafetyLimit.ACCELERATION.value
                scale *= accel

        if stop:
            scale = 0.0
        out_v = v * scale + 0.0  # + 0.0: no -0.0 on the wire
        out_w = w * scale + 0.0

        if (
            cmd is not None
            and self._counted_seq != self._command_seq
            and (
                abs(out_v - cmd.linear) > _EPS
                or abs(out_w - cmd.angular) > _EPS
                or not (math.isfinite(cmd.linear) and math.isfinite(cmd.angular))
            )
        ):
            self._interventions += 1
            self._counted_seq = self._command_seq

        self._last_output = (out_v, out_w)
        self._last_step = now
        status = SafetyStatus(
            stamp=now,
            active_limits=SafetyLimit(limits),
            speed_scale=scale,
            max_speed=0.0 if stop else min(cap, approach_speed),
            nearest_obstacle_distance=self._nearest[0],
            nearest_obstacle=self._nearest[1],
            estop_hardware=self._hw_latched,
            estop_remote=self._remote_latched,
            interventions=self._interventions,
        )
        return GateOutput(out_v, out_w, status)

    @staticmethod
    def _fresh(stamp: float, now: float, timeout: float) -> bool:
        """Fresh when at most `timeout` old; stamps that far in the future mean a clock fault."""
        age = now - stamp
        return -timeout <= age <= timeout

    def _swept_count(self) -> int:
        """Points within the circle the footprint sweeps turning about base_link's origin."""
        key = ("swept", 0)
        cached = self._zone_counts.get(key)
        if cached is None:
            cached = int(np.count_nonzero(np.abs(self._z) <= self._swept_radius))
            self._zone_counts[key] = cached
        return cached

    def _zone_count(self, zone: str, linear: float) -> int:
        """Points in the zone for the direction of travel (both zones when not translating)."""
        if linear > _EPS:
            sides: tuple[int, ...] = (0,)
        elif linear < -_EPS:
            sides = (1,)
        else:
            sides = (0, 1)
        key = (zone, sides[0] if len(sides) == 1 else 2)
        cached = self._zone_counts.get(key)
        if cached is not None:
            return cached
        inside = self._zones[zone][sides[0]].contains_z(self._z)
        if len(sides) == 2:
            inside |= self._zones[zone][1].contains_z(self._z)
        count = int(np.count_nonzero(inside))
        self._zone_counts[key] = count
        return count

    def time_to_collision(self, linear: float, angular: float) -> float:
        """Seconds until the footprint, driven along (v, w), first touches `min_points` points.

        The footprint is placed at sampled poses of the arc over `time_before_collision`
        (steps of at most `approach_linear_resolution` m and `approach_angular_resolution`
        rad, at most `approach_max_samples`), and every candidate point is tested against
        every pose in one array operation. +inf when nothing is hit within the horizon. With
        obstacle velocities each moving point is tested both where it is and where it will
        be, and the earlier hit counts.
        """
        cfg = self.config
        z = self._z
        if z.size == 0:
            return math.inf
        horizon = cfg.time_before_collision
        reach = self._footprint_radius + 1e-6
        index = np.flatnonzero(_near_path(z, linear, angular, horizon, reach))
        velocity: ComplexArray | None = None
        if self._velocities is not None:
            speed = np.abs(self._velocities)
            margin = reach + speed * horizon
            moving = np.flatnonzero(
                (speed > 1e-3) & _near_path(z, linear, angular, horizon, margin)
            )
            if moving.size:
                velocity = np.concatenate(
                    (np.zeros(index.size, dtype=np.complex128), self._velocities[moving])
                )
                index = np.concatenate((index, moving))
        if index.size == 0:
            return math.inf
        steps = max(
            abs(linear) * horizon / cfg.approach_linear_resolution,
            abs(angular) * horizon / cfg.approach_angular_resolution,
        )
        samples = int(min(max(math.ceil(steps), 1), cfg.approach_max_samples))
        times = np.arange(samples + 1, dtype=np.float64)
        times *= horizon / samples
        position, heading = _arc_poses_z(linear, angular, times)
        to_pose_frame = heading.conj()[:, None]
        position_col = position[:, None]
        k = cfg.min_points
        first_only = k == 1 and velocity is None  # then only the earliest pose with a hit counts
        earliest = math.inf
        hit_time = np.empty(index.size)
        chunk = max(1, _APPROACH_CHUNK_ELEMENTS // times.size)
        for lo in range(0, index.size, chunk):  # chunks of points, not one point at a time
            hi = lo + chunk
            rel = z[index[lo:hi]] - position_col
            if velocity is not None:
                rel += times[:, None] * velocity[lo:hi]
            inside = self._footprint.contains_in_frames(rel, to_pose_frame)  # (poses, points)
            if first_only:
                any_point: BoolArray = np.any(inside, axis=1)
                pose = int(np.argmax(any_point))
                if any_point[pose]:
                    earliest = min(earliest, float(times[pose]))
                continue
            first = np.argmax(inside, axis=0)
            hit = inside.any(axis=0)
            hit_time[lo:hi] = np.where(hit, times[first], math.inf)
        if first_only:
            return earliest
        if velocity is None:
            per_point = hit_time  # one entry per point
        else:
            per_point = np.full(z.size, math.inf)
            np.minimum.at(per_point, index, hit_time)
        if k == 1:
            return float(per_point.min())
        if np.count_nonzero(per_point < math.inf) < k:
            return math.inf
        return float(np.partition(per_point, k - 1)[k - 1])

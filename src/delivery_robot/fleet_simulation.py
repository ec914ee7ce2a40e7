"""The headless fleet simulator's core: N differential-drive robots in an SDF world, no ROS.

The `fleet_sim` node (and tests, benchmarks, `delivery-sim`) drive it the way Gazebo plus the
base driver would be driven: velocity commands and e-stops in, and out, per robot, what the
base driver and the Gazebo bridge publish (wheel odometry, lidar scans, battery, compartment
lock / door / occupancy, e-stop) plus ground truth for KPIs. It exists because the whole stack
must run faster than real time and repeatably on a laptop: every robot is one row of numpy
arrays, the lidar of all robots is one vectorised cast (`lidar_raycast`), and every random draw
comes from generators seeded from one seed, one per subsystem, so the same seed and the same
command sequence give bit-identical state (and switching the lidar off does not change the
trajectories).

Frames (REP-105) and units (REP-103): ground truth in `map` (the SDF world frame); each robot's
`odom` frame is its start pose, so odometry starts at (0, 0, 0) and drifts from there; twists
are in `base_link` (v forward in m/s, w counter-clockwise in rad/s); scans in the lidar's own
frame, REP-117 values (+inf: no return within range_max, -inf: closer than range_min).

Physics, kept to what a delivery stack can notice: acceleration and speed limits, a circular
footprint that stops at walls (the contact point is found by bisection, so a robot never passes
through a wall and ends up touching it) and does not move into other robots or pedestrians;
an e-stop brakes at the maximum deceleration; a command older than `command_timeout_s` is
dropped as the base's own watchdog would; an empty battery cuts the motors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from delivery_robot.compartment_handoff import LockState, Occupancy
from delivery_robot.lidar_raycast import BeamPattern, Raycaster
from delivery_robot.route_graph import (
    DEFAULT_ROBOT_HALF_WIDTH,
    DEFAULT_ROBOT_HEIGHT,
    MIN_OBSTACLE_HEIGHT,
    RouteGraph,
    SignalCycle,
    ZoneKind,
)
from delivery_robot.sim_pedestrians import PedestrianConfig, PedestrianCrowd
from delivery_robot.world_geometry import WorldGeometry, load_world_geometry

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ComplexArray = npt.NDArray[np.complex128]

__all__ = [
    "BatteryConfig",
    "BatteryReading",
    "Compartment",
    "CompartmentSnapshot",
    "EventKind",
    "FleetSimulation",
    "KinematicsConfig",
    "LidarConfig",
    "LockState",
    "Occupancy",
    "OdometryConfig",
    "PedestrianConfig",
    "Pose",
    "RobotOutput",
    "Scan",
    "SignalState",
    "SimConfig",
    "SimEvent",
    "SimWorld",
    "Twist",
    "spawn_poses",
]

TWO_PI = 2.0 * math.pi
_BISECTION_STEPS = 12  # contact point to 1/4096 of one step's travel (< 0.1 mm at 2 m/s)
_TIME_EPS = 1e-9
_NOISE_TABLE = 1 << 18  # pre-drawn lidar range noise samples (2 MiB)


# == configuration ==============================================================================
@dataclass(frozen=True)
class KinematicsConfig:
    """Limits of the base. Defaults: a ~60 kg sidewalk robot, well under the 15 km/h cap."""

    radius: float = DEFAULT_ROBOT_HALF_WIDTH  # m, the footprint the route graph validates for
    wheel_base: float = 0.5  # m, distance between the drive wheels
    max_speed: float = 2.0  # m/s forward
    max_reverse_speed: float = 0.5  # m/s
    max_yaw_rate: float = 2.0  # rad/s
    accel_limit: float = 1.0  # m/s^2 when speeding up
    decel_limit: float = 1.5  # m/s^2 when slowing down on command
    yaw_accel_limit: float = 3.0  # rad/s^2
    estop_decel: float = 3.0  # m/s^2, the most the base can brake
    estop_yaw_decel: float = 6.0  # rad/s^2
    command_timeout_s: float | None = 0.5  # the base stops a robot whose commands stop coming

    def __post_init__(self) -> None:
        values = (self.radius, self.wheel_base, self.max_speed, self.max_yaw_rate,
                  self.accel_limit, self.decel_limit, self.yaw_accel_limit, self.estop_decel,
                  self.estop_yaw_decel)
        if min(values) <= 0.0 or self.max_reverse_speed < 0.0:
            raise ValueError(f"kinematic limits must be > 0: {self}")


@dataclass(frozen=True)
class OdometryConfig:
    """How far wheel odometry is from the truth (all zero: odometry is exact).

    Noise: each wheel's travel gets a random error whose standard deviation grows with the
    square root of the distance (a random walk per metre, independent of the step size);
    a stopped robot does not drift. Drift: systematic errors of the wheel radii and of the
    wheel base the driver assumes, which bend a straight line into an arc.
    """

    wheel_noise: float = 0.005  # m / sqrt(m): std of one wheel's travel error after 1 m
    left_scale_error: float = 0.002  # fraction: the left wheel's radius is 0.2 % larger
    right_scale_error: float = -0.002
    wheel_base_error: float = 0.01  # fraction: the driver's wheel base is 1 % too long

    @property
    def exact(self) -> bool:
        return not (self.wheel_noise or self.left_scale_error or self.right_scale_error
                    or self.wheel_base_error)


@dataclass(frozen=True)
class LidarConfig:
    """A 2D lidar on every robot; defaults close to an RPLIDAR-class 360-degree scanner."""

    enabled: bool = True
    beams: int = 360
    fov: float = 2.0 * math.pi  # rad, centred on the lidar's x axis
    range_min: float = 0.15  # m
    range_max: float = 12.0  # m
    noise_std: float = 0.01  # m, Gaussian, on every return
    rate_hz: float = 10.0
    mount_x: float = 0.15  # m, lidar frame in base_link
    mount_y: float = 0.0
    mount_z: float = 0.3  # selects the SDF shapes the scan plane cuts (a 15 cm kerb: none)
    mount_yaw: float = 0.0

    def __post_init__(self) -> None:
        if self.beams < 1 or not 0.0 <= self.range_min < self.range_max or self.rate_hz <= 0:
            raise ValueError(f"invalid lidar config {self}")

    @property
    def pattern(self) -> BeamPattern:
        return BeamPattern.centred(self.beams, self.fov)


@dataclass(frozen=True)
class BatteryConfig:
    """State of charge as a fraction 0..1. Defaults: ~25 km per charge, ~2 h to charge."""

    initial: float = 1.0
    drain_per_m: float = 1.0 / 25_000.0  # fraction per metre driven
    drain_per_s: float = 1.0 / (12 * 3600.0)  # fraction per second, electronics and sensors
    charge_per_s: float = 1.0 / (2 * 3600.0)  # fraction per second on a charger
    charge_radius: float = 0.5  # m from a charger waypoint counts as docked
    stopped_speed: float = 0.01  # m/s (and rad/s) below which a robot counts as stopped
    full_voltage: float = 29.4  # V, a 7S Li-ion pack, for BatteryState.voltage
    empty_voltage: float = 21.0


@dataclass(frozen=True)
class SimConfig:
    kinematics: KinematicsConfig = field(default_factory=KinematicsConfig)
    odometry: OdometryConfig = field(default_factory=OdometryConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    battery: BatteryConfig = field(default_factory=BatteryConfig)
    pedestrians: PedestrianConfig = field(default_factory=PedestrianConfig)
    max_substep_s: float = 0.05  # step(dt) splits longer steps so nothing tunnels
    robot_height: float = DEFAULT_ROBOT_HEIGHT  # m, what the footprint collides with
    # Robots pass through each other and no lidar sees another robot: a run without robot-robot
    # traffic, to tell what traffic costs (never the default: robots do meet on sidewalks).
    ghost_robots: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.max_substep_s <= 0.5 * self.kinematics.radius / max(
                self.kinematics.max_speed, self.kinematics.max_reverse_speed):
            raise ValueError("max_substep_s must be > 0 and short enough that one substep "
                             "moves a robot at most half its radius (no tunnelling)")


# == the world ==================================================================================
@dataclass(frozen=True)
class SimWorld:
    """What the simulator needs of a world: obstacles, chargers, crossings, where people walk."""

    geometry: WorldGeometry  # every static shape; the simulator picks the height bands
    chargers: tuple[tuple[float, float], ...] = ()
    crossings: tuple[tuple[str, SignalCycle | None], ...] = ()  # crosswalk zone -> its signal
    walk_area: Any = None  # shapely geometry where pedestrians walk (e.g. the geofence)
    walk_paths: tuple[tuple[tuple[float, float], ...], ...] = ()  # or polylines to walk

    @classmethod
    def from_route_graph(
        cls, route: RouteGraph, geometry: WorldGeometry | None = None
    ) -> SimWorld:
        """The world of a loaded route graph (its SDF is read unless geometry is given)."""
        if geometry is None:
            if route.sdf_path is None:
                raise ValueError(f"route graph {route.world!r} has no resolved SDF path")
            geometry = load_world_geometry(route.sdf_path)
        return cls(
            geometry=geometry,
            chargers=tuple((w.x, w.y) for w in route.chargers),
            crossings=tuple((z.name, z.signal) for z in route.zones_of_kind(ZoneKind.CROSSWALK)),
            walk_area=route.geofence,
        )


# == outputs ====================================================================================
# LockState and Occupancy: one definition, in the compartment's own module.


class EventKind(StrEnum):
    COLLISION_STATIC = "collision_static"
    COLLISION_ROBOT = "collision_robot"
    COLLISION_PEDESTRIAN = "collision_pedestrian"
    ESTOP_PRESSED = "estop_pressed"
    ESTOP_RELEASED = "estop_released"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    LOCK_REFUSED = "lock_refused"  # lock asked with the door open
    LOCK_FAULT = "lock_fault"
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    LOADED = "loaded"
    UNLOADED = "unloaded"
    BATTERY_EMPTY = "battery_empty"


@dataclass(frozen=True)
class SimEvent:
    """Something a log or a KPI wants with its sim time (collisions, lid and e-stop events)."""

    time: float
    robot: int
    kind: EventKind
    detail: str = ""


@dataclass(frozen=True)
class Pose:
    x: float
    y: float
    yaw: float


@dataclass(frozen=True)
class Twist:
    linear: float  # m/s along base_link x
    angular: float  # rad/s about base_link z


@dataclass(frozen=True)
class BatteryReading:
    percentage: float  # 0..1, as sensor_msgs/BatteryState.percentage
    voltage: float  # V
    charging: bool  # docked at a charger and stopped


@dataclass(frozen=True)
class CompartmentSnapshot:
    lock_state: LockState
    door_closed: bool
    occupancy: Occupancy
    stuck_lock: bool  # the injected fault (not visible on a real robot; for tests and logs)


@dataclass(frozen=True)
class SignalState:
    zone: str
    green: bool
    seconds_to_change: float


@dataclass(frozen=True)
class Scan:
    """One sensor_msgs/LaserScan worth of data, in the lidar frame."""

    stamp: float
    angle_min: float
    angle_increment: float
    range_min: float
    range_max: float
    scan_time: float
    ranges: FloatArray  # read-only


@dataclass(frozen=True)
class RobotOutput:
    """Everything a node publishes for one robot, at one sim time."""

    stamp: float
    pose: Pose  # ground truth in map
    twist: Twist  # ground truth in base_link
    odom_pose: Pose  # wheel odometry in odom (the start pose)
    odom_twist: Twist  # as the wheels report it, in base_link
    battery: BatteryReading
    compartment: CompartmentSnapshot
    estop: bool
    collisions: int  # static + robot + pedestrian contacts so far


# == the compartment ============================================================================
class Compartment:
    """A lockable box with a door switch and an occupancy sensor, like the firmware's.

    The door opens only with the bolt retracted; locking with the door open is refused (the
    bolt would not catch); a stuck lock leaves the bolt where it is and reports FAULT until a
    command succeeds. Goods go in and out only through an open door.
    """

    def __init__(self) -> None:
        self.bolt_engaged = True
        self.lock_fault = False
        self.door_closed = True
        self.occupied = False
        self.stuck_lock = False

    @property
    def lock_state(self) -> LockState:
        if self.lock_fault:
            return LockState.FAULT
        return LockState.LOCKED if self.bolt_engaged else LockState.UNLOCKED

    def snapshot(self) -> CompartmentSnapshot:
        occupancy = Occupancy.OCCUPIED if self.occupied else Occupancy.EMPTY
        return CompartmentSnapshot(self.lock_state, self.door_closed, occupancy, self.stuck_lock)

    def set_lock(self, lock: bool) -> EventKind:
        """The base's lock command; returns what happened (LOCKED, UNLOCKED, or a refusal)."""
        if self.stuck_lock:
            self.lock_fault = True
            return EventKind.LOCK_FAULT
        if lock and not self.door_closed:
            return EventKind.LOCK_REFUSED
        self.bolt_engaged = lock
        self.lock_fault = False
        return EventKind.LOCKED if lock else EventKind.UNLOCKED

    def open_door(self) -> bool:
        """Someone pulls the door: it opens only if the bolt is retracted."""
        if self.bolt_engaged:
            return False
        self.door_closed = False
        return True

    def close_door(self) -> None:
        self.door_closed = True

    def load(self) -> bool:
        if self.door_closed:
            return False
        self.occupied = True
        return True

    def unload(self) -> bool:
        if self.door_closed:
            return False
        self.occupied = False
        return True


# == the simulator ==============================================================================
class FleetSimulation:
    """N robots, pedestrians and signals in one world, advanced by `step(dt)`.

    Robots are indexed 0..N-1 in spawn order. Inputs: `set_command(s)`, `set_estop`, the
    compartment inputs (`set_lock`, `open_door`, `close_door`, `load`, `unload`,
    `set_stuck_lock`). Outputs: `output(i)`, `scan(i)` and the array properties (one row per
    robot), `crossing_signals()`, `drain_events()`, `state_arrays()` (everything, for tests).

    Internally a position is a complex number x + iy: at ten robots numpy's per-call overhead
    is most of the cost, and complex arithmetic does a 2D vector operation in one call.
    """

    def __init__(
        self,
        world: SimWorld,
        spawns: Sequence[tuple[float, float, float]],
        config: SimConfig | None = None,
        seed: int = 0,
    ) -> None:
        self._config = cfg = config or SimConfig()
        self.world = world
        self.seed = seed
        n = len(spawns)
        if n == 0:
            raise ValueError("the simulation needs at least one robot")
        start = np.asarray(spawns, dtype=np.float64).reshape(n, 3)
        start[:, 2] = _wrap_array(start[:, 2])  # as reported; kept in [0, 2 pi) inside
        k = cfg.kinematics
        # One generator per subsystem, so e.g. lidar noise never shifts odometry noise.
        odom_seq, lidar_seq, people_seq = np.random.SeedSequence(seed).spawn(3)
        self._odom_rng = np.random.default_rng(odom_seq)
        self._lidar_rng = np.random.default_rng(lidar_seq)

        body = world.geometry.in_height_band(MIN_OBSTACLE_HEIGHT, cfg.robot_height)
        seg = body.segments
        self._wall_start = seg[:, 0] + 1j * seg[:, 1]
        self._wall_edge = (seg[:, 2] + 1j * seg[:, 3]) - self._wall_start
        self._wall_inv_len_sq = 1.0 / np.maximum(np.abs(self._wall_edge) ** 2, 1e-300)
        self._post_centre = body.circles[:, 0] + 1j * body.circles[:, 1]
        self._post_radius = body.circles[:, 2].copy()
        self._chargers = np.array([complex(x, y) for x, y in world.chargers], dtype=np.complex128)
        self._beams = cfg.lidar.pattern
        plane = world.geometry.in_height_band(cfg.lidar.mount_z, cfg.lidar.mount_z)
        self._caster = Raycaster(self._beams, plane.segments, plane.circles,
                                 cfg.lidar.range_max, one_sided=True)

        self._time = 0.0
        self.start_poses: FloatArray = start.copy()
        self._z = start[:, 0] + 1j * start[:, 1]
        self._yaw = np.mod(start[:, 2], TWO_PI)
        self._vel = np.zeros((2, n))  # rows: linear, angular
        self._cmd = np.zeros((2, n))
        self._cmd_time = np.full(n, -math.inf)
        self._estop = np.zeros(n, dtype=np.bool_)
        self._cmd_lo = np.array([[-k.max_reverse_speed], [-k.max_yaw_rate]])
        self._cmd_hi = np.array([[k.max_speed], [k.max_yaw_rate]])
        self._rate_up = np.array([[k.accel_limit], [k.yaw_accel_limit]])
        self._rate_down = np.array([[k.decel_limit], [k.yaw_accel_limit]])
        self._rate_estop = np.array([[k.estop_decel], [k.estop_yaw_decel]])
        self._odom_z = np.zeros(n, dtype=np.complex128)  # in each robot's odom frame
        self._odom_yaw = np.zeros(n)
        self._odom_twist = np.zeros((2, n))
        # Wheel odometry as matrices: (v dt, w dt) -> each wheel's travel, with the wheels'
        # scale errors; and back with the wheel base the driver believes in.
        o, half_base = cfg.odometry, 0.5 * k.wheel_base
        self._to_wheels = np.array([[1.0, -half_base], [1.0, half_base]]) * np.array(
            [[1.0 + o.left_scale_error], [1.0 + o.right_scale_error]])
        odom_base = k.wheel_base * (1.0 + o.wheel_base_error)
        self._from_wheels = np.array([[0.5, 0.5], [-1.0 / odom_base, 1.0 / odom_base]])
        self._soc = np.full(n, float(np.clip(cfg.battery.initial, 0.0, 1.0)))
        self._empty = self._soc <= 0.0
        self._charging = np.zeros(n, dtype=np.bool_)
        self._distance = np.zeros(n)
        self._contacts = np.zeros((3, n), dtype=np.bool_)  # static, robot, pedestrian
        self._collisions = np.zeros((3, n), dtype=np.int64)
        self._in_contact = False
        self._compartments = [Compartment() for _ in range(n)]
        self._events: list[SimEvent] = []

        clearance = self._clearance(self._z)
        if (clearance < k.radius).any():
            bad = np.flatnonzero(clearance < k.radius).tolist()
            raise ValueError(f"robots {bad} spawn inside or touching a static obstacle")
        gaps = np.abs(self._z[:, None] - self._z) + np.eye(n) * 1e9
        if (gaps < 2 * k.radius).any():
            raise ValueError("two robots spawn overlapping each other")
        # A robot within `_free_slack` of its anchor cannot touch anything: skip the check.
        self._anchor = self._z.copy()
        self._free_slack = clearance - k.radius

        self.pedestrians = PedestrianCrowd(
            cfg.pedestrians, np.random.default_rng(people_seq),
            area=world.walk_area, paths=world.walk_paths, obstacles=body,
            keep_clear=start[:, :2], keep_clear_radius=k.radius,
        )
        # Bodies a robot must not move into: the other robots (where they are and where they
        # go this step) and the pedestrians, with the centre distance that means touching.
        people = self.pedestrians.count
        self._touch = np.concatenate([np.full(2 * n, 2.0 * k.radius),
                                      np.full(people, k.radius + self.pedestrians.radius)])
        # A contact ends when the bodies are this far apart (beyond one step's creep).
        self._release = self._touch + (0.1 + k.max_speed * cfg.max_substep_s)
        self._not_self = np.ones((n, 2 * n + people), dtype=np.bool_)
        self._not_self[np.arange(n), np.arange(n)] = False
        self._not_self[np.arange(n), n + np.arange(n)] = False
        if cfg.ghost_robots:
            self._not_self[:, : 2 * n] = False  # robots never block each other
        self._body_radii = np.concatenate([np.full(n, k.radius),
                                           np.full(people, self.pedestrians.radius)])
        self._own_body = np.arange(n, dtype=np.int64)
        self._lidar_mount = complex(cfg.lidar.mount_x, cfg.lidar.mount_y)

        self._range_noise: FloatArray = np.zeros(0)
        if cfg.lidar.enabled and cfg.lidar.noise_std > 0.0:
            table = max(_NOISE_TABLE, 4 * n * self._beams.count)
            self._range_noise = cfg.lidar.noise_std * self._lidar_rng.standard_normal(table)
        self._scan: FloatArray = np.full((n, self._beams.count), np.inf)
        self._scan_stamp = 0.0
        self.scan_count = 0  # scans taken so far; a node publishes when this changes
        self._scan_period = 1.0 / cfg.lidar.rate_hz
        self._next_scan = 0.0
        if cfg.lidar.enabled:
            self._take_scan()

    # -- inputs ------------------------------------------------------------------------------
    @property
    def config(self) -> SimConfig:
        """Read-only: the simulator precomputes from it at construction."""
        return self._config

    @property
    def robot_count(self) -> int:
        return len(self._z)

    @property
    def time(self) -> float:
        """Sim time in seconds since the start (what /clock publishes)."""
        return self._time

    def set_command(self, robot: int, linear: float, angular: float) -> None:
        """A cmd_vel_safe (m/s, rad/s in base_link); clipped to the limits, held until the
        command timeout."""
        self._cmd[0, robot], self._cmd[1, robot] = linear, angular
        self._cmd_time[robot] = self._time

    def set_commands(self, linear: FloatArray, angular: FloatArray) -> None:
        """Commands for all robots at once (arrays of robot_count)."""
        self._cmd[0], self._cmd[1] = linear, angular
        self._cmd_time[:] = self._time

    def set_estop(self, robot: int, active: bool) -> None:
        if bool(self._estop[robot]) != active:
            self._estop[robot] = active
            kind = EventKind.ESTOP_PRESSED if active else EventKind.ESTOP_RELEASED
            self._event(robot, kind)

    def compartment(self, robot: int) -> CompartmentSnapshot:
        return self._compartments[robot].snapshot()

    def set_lock(self, robot: int, lock: bool) -> bool:
        """compartment/set_lock; False if refused (door open) or the lock is stuck."""
        outcome = self._compartments[robot].set_lock(lock)
        self._event(robot, outcome)
        return outcome in (EventKind.LOCKED, EventKind.UNLOCKED)

    def open_door(self, robot: int) -> bool:
        """A person pulls the door; False while the bolt is engaged."""
        c = self._compartments[robot]
        was_closed = c.door_closed
        opened = c.open_door()
        if opened and was_closed:
            self._event(robot, EventKind.DOOR_OPENED)
        return opened

    def close_door(self, robot: int) -> None:
        c = self._compartments[robot]
        if not c.door_closed:
            c.close_door()
            self._event(robot, EventKind.DOOR_CLOSED)

    def load(self, robot: int) -> bool:
        """A shop owner puts goods in (needs the door open)."""
        done = self._compartments[robot].load()
        if done:
            self._event(robot, EventKind.LOADED)
        return done

    def unload(self, robot: int) -> bool:
        """A recipient takes the goods out (needs the door open)."""
        done = self._compartments[robot].unload()
        if done:
            self._event(robot, EventKind.UNLOADED)
        return done

    def set_stuck_lock(self, robot: int, stuck: bool) -> None:
        """Fault injection: a jammed bolt that ignores lock commands."""
        self._compartments[robot].stuck_lock = stuck

    # -- time --------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance by dt seconds (split into substeps of at most config.max_substep_s)."""
        if dt < 0.0 or not math.isfinite(dt):
            raise ValueError(f"dt must be a finite number >= 0, got {dt}")
        if dt == 0.0:
            return
        substeps = max(1, math.ceil(dt / self.config.max_substep_s - _TIME_EPS))
        h = dt / substeps
        start = self._time
        for i in range(1, substeps + 1):
            # Times from the step's start, so substeps add no rounding drift to the clock.
            self._substep(h, start + dt if i == substeps else start + i * h)

    def _substep(self, h: float, t_end: float) -> None:
        cfg = self.config
        k = cfg.kinematics
        # 1. Wheel speeds: towards the command (or zero when stopped) within the limits.
        stop = self._estop | self._empty
        if k.command_timeout_s is not None:
            stop = stop | (self._cmd_time < self._time - k.command_timeout_s)
        target = np.minimum(np.maximum(self._cmd, self._cmd_lo), self._cmd_hi)
        if np.count_nonzero(stop):  # (count_nonzero: a third of .any()'s overhead)
            target[:, stop] = 0.0
        vel = self._vel
        change = target - vel
        rate = np.where(change * vel < 0.0, self._rate_down, self._rate_up)  # slowing down?
        if np.count_nonzero(self._estop):
            rate = np.where(self._estop, self._rate_estop, rate)
        limit = rate * h
        vel = vel + np.minimum(np.maximum(change, -limit), limit)
        steps = vel * h  # rows: metres forward, radians turned

        # 2. Motion, midpoint heading: exact on straight lines, second order on arcs.
        travel = steps[0] * np.exp(1j * (self._yaw + 0.5 * steps[1]))
        z_new = self._z + travel
        moved = steps[0] != 0.0
        # Only robots that leave their free circle can touch a wall: check just those.
        far = moved & (np.abs(z_new - self._anchor) > self._free_slack)
        fraction: FloatArray | None = None
        static_hit: BoolArray | None = None
        if np.count_nonzero(far):
            fraction, static_hit = self._resolve_static(np.flatnonzero(far), travel)
            z_new = self._z + fraction * travel
        blocks = self._dynamic_blocks(z_new, moved)
        if blocks is not None:
            blocked = blocks[0] | blocks[1]
            fraction = np.where(blocked, 0.0, 1.0 if fraction is None else fraction)
            z_new = np.where(blocked, self._z, z_new)
        hit_any = static_hit is not None and np.count_nonzero(static_hit) > 0
        if hit_any or blocks is not None or self._in_contact:
            hits = np.zeros((3, self.robot_count), dtype=np.bool_)  # static, robot, person
            near = np.zeros_like(hits)
            if static_hit is not None:
                hits[0] = static_hit
            if blocks is not None:
                hits[1], hits[2], near[1], near[2] = blocks
            self._count_contacts(hits, near)
            vel[0, hits.any(axis=0)] = 0.0  # a bump stops the wheels
        if fraction is not None:
            steps[0] *= fraction  # what the wheels really did

        self._z = z_new
        self._yaw = np.mod(self._yaw + steps[1], TWO_PI)
        self._vel = vel
        driven = np.abs(steps[0])
        self._distance += driven
        self._integrate_odometry(steps, h)
        self._update_battery(driven, vel, h)
        self.pedestrians.step(h, self._z, k.radius)
        self._time = t_end
        if cfg.lidar.enabled and self._time >= self._next_scan - _TIME_EPS:
            self._take_scan()

    def _resolve_static(
        self, idx: IntArray, travel: ComplexArray
    ) -> tuple[FloatArray, BoolArray]:
        """The largest free fraction of each robot's step (1 if free); True where it hit."""
        radius = self.config.kinematics.radius
        fraction = np.ones(len(travel))
        hit = np.zeros(len(travel), dtype=np.bool_)
        ends = self._z[idx] + travel[idx]
        clearance = self._clearance(ends)
        free = clearance >= radius
        # Free at the end: re-anchor the free circle there.
        self._anchor[idx[free]] = ends[free]
        self._free_slack[idx[free]] = clearance[free] - radius
        j = idx[~free]
        if len(j):
            # Already touching and pushing on: no step at all is free (saves the bisection).
            nudge = self._clearance(self._z[j] + travel[j] / 2**_BISECTION_STEPS) >= radius
            stuck = j[~nudge]
            hit[stuck] = True
            fraction[stuck] = 0.0
            self._free_slack[stuck] = 0.0
            self._anchor[stuck] = self._z[stuck]
            j = j[nudge]
        if len(j):
            lo, hi = np.zeros(len(j)), np.ones(len(j))
            for _ in range(_BISECTION_STEPS):
                mid = 0.5 * (lo + hi)
                ok = self._clearance(self._z[j] + mid * travel[j]) >= radius
                lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
            fraction[j] = lo
            hit[j] = True
            self._anchor[j] = self._z[j] + lo * travel[j]
            self._free_slack[j] = 0.0
        return fraction, hit

    def _dynamic_blocks(
        self, z_new: ComplexArray, moved: BoolArray
    ) -> tuple[BoolArray, BoolArray, BoolArray, BoolArray] | None:
        """Robots whose move closes in on a robot or a pedestrian it would overlap.

        Returns (robot hits, pedestrian hits, near a robot, near a pedestrian), "near" being
        within the contact release distance; None when no robot is near anything (the usual
        case). A blocked robot stays where it was, which is always free.
        """
        z_old, n = self._z, self.robot_count
        others = np.concatenate([z_old, z_new, self.pedestrians.z])  # now, next, people
        gap = np.abs(z_new[:, None] - others)
        close = (gap < self._release) & self._not_self
        if not np.count_nonzero(close):
            return None
        closing = close & (gap < self._touch) & (gap < np.abs(z_old[:, None] - others))
        robot_hit = moved & closing[:, : 2 * n].any(axis=1)
        people_hit = moved & closing[:, 2 * n:].any(axis=1) & ~robot_hit
        return robot_hit, people_hit, close[:, : 2 * n].any(axis=1), close[:, 2 * n:].any(axis=1)

    def _count_contacts(self, hits: BoolArray, near: BoolArray) -> None:
        """Count and log each contact (rows: static, robot, pedestrian) when it begins.

        A blocked robot stops up to one step short of the body it would have hit and may
        creep on; a contact with a robot or person therefore lasts until they are apart by
        the release distance, so one encounter counts once.
        """
        onset = hits & ~self._contacts
        hits = hits | (self._contacts & near)
        self._contacts = hits
        self._in_contact = bool(np.count_nonzero(hits))
        if np.count_nonzero(onset):
            self._collisions += onset
            for row, i in zip(*np.nonzero(onset), strict=True):
                self._event(int(i), _CONTACT_EVENTS[row])

    def _integrate_odometry(self, steps: FloatArray, h: float) -> None:
        """What the base driver computes from its encoders, errors included; `steps` (2, N):
        metres forward and radians turned this step."""
        o = self.config.odometry
        if not o.exact:
            wheels = self._to_wheels @ steps  # each wheel's travel
            if o.wheel_noise:
                noise = self._odom_rng.standard_normal(wheels.shape)
                wheels += o.wheel_noise * np.sqrt(np.abs(wheels)) * noise
            steps = self._from_wheels @ wheels
        self._odom_z = self._odom_z + steps[0] * np.exp(1j * (self._odom_yaw + 0.5 * steps[1]))
        self._odom_yaw = np.mod(self._odom_yaw + steps[1], TWO_PI)
        self._odom_twist = steps / h

    def _update_battery(self, driven: FloatArray, vel: FloatArray, h: float) -> None:
        """Docked and stopped charges; otherwise distance and time drain."""
        b = self.config.battery
        self._soc -= b.drain_per_m * driven + b.drain_per_s * h
        if len(self._chargers):
            stopped = np.abs(vel).max(axis=0) < b.stopped_speed
            if np.count_nonzero(stopped):
                docked = np.abs(self._z[:, None] - self._chargers).min(axis=1) <= b.charge_radius
                self._charging = stopped & docked
                if np.count_nonzero(self._charging):
                    lift = b.charge_per_s * h + b.drain_per_m * driven + b.drain_per_s * h
                    self._soc = np.minimum(self._soc + self._charging * lift, 1.0)
            elif np.count_nonzero(self._charging):
                self._charging = np.zeros_like(self._charging)
        if self._soc.min() <= 0.0:
            self._soc = np.maximum(self._soc, 0.0)
            for i in np.flatnonzero((self._soc <= 0.0) & ~self._empty):
                self._event(int(i), EventKind.BATTERY_EMPTY)
            self._empty = self._soc <= 0.0
        elif np.count_nonzero(self._empty):
            self._empty = self._soc <= 0.0

    def _take_scan(self) -> None:
        lidar = self.config.lidar
        if self.config.ghost_robots:  # only pedestrians are bodies to see
            n = self.robot_count
            bodies, radii, own = self.pedestrians.z, self._body_radii[n:], None
        else:
            bodies = np.concatenate([self._z, self.pedestrians.z])
            radii, own = self._body_radii, self._own_body  # a lidar misses its own robot
        ranges = self._caster.cast_complex(
            self._z + self._lidar_mount * np.exp(1j * self._yaw),
            self._yaw + lidar.mount_yaw, bodies, radii, own)
        if lidar.noise_std > 0.0:
            # A window of the pre-drawn noise table at a random offset: drawing 3600 fresh
            # Gaussians would cost as much as a quarter of the cast itself.
            start = int(self._lidar_rng.integers(len(self._range_noise) - ranges.size))
            ranges += self._range_noise[start:start + ranges.size].reshape(ranges.shape)
            ranges[ranges > lidar.range_max] = np.inf
        ranges[ranges < lidar.range_min] = -np.inf
        ranges.flags.writeable = False
        self._scan = ranges
        self._scan_stamp = self._time
        self.scan_count += 1
        self._next_scan += self._scan_period
        if self._next_scan <= self._time + _TIME_EPS:  # a step longer than the scan period
            self._next_scan = self._time + self._scan_period

    # -- static geometry -----------------------------------------------------------------------
    def _clearance(self, points: ComplexArray) -> FloatArray:
        """Distance from each point (complex x + iy) to the nearest static obstacle surface."""
        best = np.full(len(points), np.inf)
        if len(self._wall_start):
            rel = points[:, None] - self._wall_start
            along = (rel * self._wall_edge.conjugate()).real * self._wall_inv_len_sq
            foot = np.minimum(np.maximum(along, 0.0), 1.0) * self._wall_edge
            best = np.abs(rel - foot).min(axis=1)
        if len(self._post_centre):
            gap = np.abs(points[:, None] - self._post_centre) - self._post_radius
            best = np.minimum(best, gap.min(axis=1))
        return best

    # -- outputs -----------------------------------------------------------------------------
    @property
    def poses(self) -> FloatArray:
        """Ground truth (N, 3): x, y, yaw in map."""
        return np.column_stack([self._z.real, self._z.imag, _wrap_array(self._yaw)])

    @property
    def twists(self) -> FloatArray:
        """Ground truth (N, 2): linear, angular in base_link."""
        return self._vel.T.copy()

    @property
    def odom_poses(self) -> FloatArray:
        """Wheel odometry (N, 3) in each robot's odom frame (its start pose in map)."""
        return np.column_stack([self._odom_z.real, self._odom_z.imag,
                                _wrap_array(self._odom_yaw)])

    @property
    def odom_twists(self) -> FloatArray:
        """As the wheels report it (N, 2): linear, angular in base_link."""
        return self._odom_twist.T.copy()

    @property
    def battery_levels(self) -> FloatArray:
        return self._soc.copy()

    @property
    def charging(self) -> BoolArray:
        return self._charging.copy()

    @property
    def estops(self) -> BoolArray:
        return self._estop.copy()

    @property
    def distances(self) -> FloatArray:
        """Metres each robot has driven (ground truth)."""
        return self._distance.copy()

    @property
    def collision_counts(self) -> IntArray:
        """(3, N): contacts begun with static obstacles, robots, pedestrians."""
        return self._collisions.copy()

    @property
    def scans(self) -> FloatArray:
        """The latest scan of every robot (N, beams), read-only."""
        return self._scan

    @property
    def scan_stamp(self) -> float:
        return self._scan_stamp

    def scan(self, robot: int) -> Scan:
        lidar = self.config.lidar
        return Scan(
            stamp=self._scan_stamp,
            angle_min=self._beams.angle_min,
            angle_increment=self._beams.angle_increment,
            range_min=lidar.range_min,
            range_max=lidar.range_max,
            scan_time=self._scan_period,
            ranges=self._scan[robot],
        )

    def map_pose_of_odom(self, robot: int) -> Pose:
        """The odom frame in map (the start pose): a perfect-localisation map->odom transform."""
        x, y, yaw = (float(v) for v in self.start_poses[robot])
        return Pose(x, y, yaw)

    def output(self, robot: int) -> RobotOutput:
        i = robot
        b = self.config.battery
        soc = float(self._soc[i])
        z, oz = complex(self._z[i]), complex(self._odom_z[i])
        return RobotOutput(
            stamp=self._time,
            pose=Pose(z.real, z.imag, _wrap(float(self._yaw[i]))),
            twist=Twist(float(self._vel[0, i]), float(self._vel[1, i])),
            odom_pose=Pose(oz.real, oz.imag, _wrap(float(self._odom_yaw[i]))),
            odom_twist=Twist(float(self._odom_twist[0, i]), float(self._odom_twist[1, i])),
            battery=BatteryReading(
                percentage=soc,
                voltage=b.empty_voltage + (b.full_voltage - b.empty_voltage) * soc,
                charging=bool(self._charging[i]),
            ),
            compartment=self._compartments[i].snapshot(),
            estop=bool(self._estop[i]),
            collisions=int(self._collisions[:, i].sum()),
        )

    def crossing_signals(self) -> list[SignalState]:
        """The pedestrian signal of every signalled crosswalk at the current sim time."""
        out: list[SignalState] = []
        for zone, cycle in self.world.crossings:
            if cycle is None:
                continue
            phase = (self._time - cycle.offset_s) % cycle.cycle_s
            green = phase < cycle.green_s
            left = cycle.green_s - phase if green else cycle.cycle_s - phase
            out.append(SignalState(zone, green, left))
        return out

    def drain_events(self) -> list[SimEvent]:
        """Events since the last call (collisions, e-stops, lid and battery events)."""
        events, self._events = self._events, []
        return events

    def state_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """A copy of the whole state as arrays: equal arrays mean an identical simulation."""
        comp = np.array([[c.bolt_engaged, c.lock_fault, c.door_closed, c.occupied, c.stuck_lock]
                         for c in self._compartments])
        return {
            "time": np.array([self._time]),
            "pose": self.poses,
            "twist": self.twists,
            "odom_pose": self.odom_poses,
            "odom_twist": self.odom_twists,
            "battery": self.battery_levels,
            "charging": self.charging,
            "distance": self.distances,
            "collisions": self.collision_counts,
            "estop": self.estops,
            "compartment": comp,
            "scan": np.array(self._scan),
            "scan_stamp": np.array([self._scan_stamp]),
            "pedestrians": self.pedestrians.positions,
            "pedestrian_goals": self.pedestrians.goals.copy(),
        }

    def _event(self, robot: int, kind: EventKind, detail: str = "") -> None:
        self._events.append(SimEvent(self._time, robot, kind, detail))


# == where robots start ==========================================================================
def spawn_poses(
    route: RouteGraph,
    world: SimWorld,
    count: int,
    config: SimConfig | None = None,
    *,
    spacing: float = 2.0,
    lane_clearance: float = 2.5,
    max_join: float = 4.0,
    search_radius: float = 10.0,
) -> list[tuple[float, float, float]]:
    """Start poses (x, y, yaw in map) for `count` robots: the world's charger waypoints
    first, then parking spots near the depot. Never the depot waypoint itself: it is a
    through-point of the depot's circulation and where robots return to.

    A parking spot is a point of a 0.5 m grid within `search_radius` of the depot that keeps
    the footprint 0.3 m clear of static obstacles, stays `spacing` from every other robot and
    `lane_clearance` off every lane (a parked robot must not block traffic: the safety
    monitor's approach check sweeps well beyond a passing robot's footprint), and has a straight,
    obstacle-free join of at most `max_join` to a lane (navigation joins the graph from there).
    Nearest to the depot first; deterministic. Raises ValueError if the world has no room.
    """
    cfg = config or SimConfig()
    radius = cfg.kinematics.radius
    homes = route.depots or route.chargers
    if not homes:
        raise ValueError(f"world {route.world!r} has no depot or charger waypoint to start at")
    home = homes[0]
    poses = [(w.x, w.y, w.yaw or 0.0) for w in route.chargers][:count]
    if len(poses) == count:
        return poses
    probe = FleetSimulation(world, [(home.x, home.y, 0.0)], replace(
        cfg, lidar=replace(cfg.lidar, enabled=False), pedestrians=PedestrianConfig(count=0)))
    taken = [complex(x, y) for x, y, _ in poses] + [complex(home.x, home.y)]
    ends = [(route.waypoint(lane.start), route.waypoint(lane.end)) for lane in route.lanes]
    a = np.array([complex(p.x, p.y) for p, _ in ends])
    b = np.array([complex(q.x, q.y) for _, q in ends])
    span = b - a
    steps = np.arange(-search_radius, search_radius + 1e-9, 0.5)
    grid = (home.x + steps[:, None] + 1j * (home.y + steps[None, :])).ravel()
    grid = grid[np.argsort(np.abs(grid - complex(home.x, home.y)), kind="stable")]
    grid = grid[np.abs(grid - complex(home.x, home.y)) <= search_radius]
    grid = grid[probe._clearance(grid) >= radius + 0.3]
    for z in grid:
        if len(poses) == count:
            break
        if min(abs(z - t) for t in taken) < spacing:
            continue
        along = np.clip(((z - a) * span.conjugate()).real / np.maximum(np.abs(span) ** 2,
                                                                          1e-12), 0.0, 1.0)
        foot = a + along * span
        gap = np.abs(z - foot)
        if gap.min() < lane_clearance or gap.min() > max_join:
            continue
        join = foot[int(np.argmin(gap))]
        samples = z + (join - z) * np.linspace(0.0, 1.0, 12)
        if probe._clearance(samples).min() < radius:
            continue
        yaw = math.atan2((join - z).imag, (join - z).real)  # facing the lane it will join
        poses.append((float(z.real), float(z.imag), yaw))
        taken.append(z)
    if len(poses) < count:
        raise ValueError(f"world {route.world!r}: room to park only {len(poses)} robots near "
                         f"{home.name!r}, asked for {count}")
    return poses


_CONTACT_EVENTS = (EventKind.COLLISION_STATIC, EventKind.COLLISION_ROBOT,
                   EventKind.COLLISION_PEDESTRIAN)


def _wrap_array(angles: FloatArray) -> FloatArray:
    """Angles in [-pi, pi)."""
    out: FloatArray = np.mod(angles + math.pi, TWO_PI) - math.pi
    return out


def _wrap(angle: float) -> float:
    return (angle + math.pi) % TWO_PI - math.pi

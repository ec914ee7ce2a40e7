"""fleet_sim: the headless fleet simulator (`delivery_robot.fleet_simulation`) as one ROS node.

It stands in for Gazebo plus every robot's base driver, so the rest of the stack runs unchanged
on a laptop, faster than real time. Per robot namespace `/<id>/` it publishes what a base
driver and the Gazebo bridge publish on hardware (same names, types, frames and QoS):
`odom`, `scan`, `battery_state`, `compartment/state`, `estop`, plus `ground_truth/pose` (map
frame, for tests and visualisation); it consumes `cmd_vel_safe` and serves
`compartment/set_lock`. Simulated people act through `sim/open_door`, `sim/close_door`,
`sim/load`, `sim/unload` (std_srvs/Trigger), `sim/estop` and `sim/stuck_lock`
(std_srvs/SetBool).

Time: this node *is* the sim time source. It publishes `/clock` and therefore runs on wall
time itself (`use_sim_time` true is refused). The core is stepped by a dedicated thread, not
an executor timer, so a busy `/clock` never starves the executor (cf. ros2/rclpy#1452) and the
executor stays free for commands and services; rclpy publishers are thread-safe. The thread
paces sim time at `real_time_factor` x wall time (0 = as fast as possible). Every stamp is sim
time; the clock is `steps x step_s` computed from the step count, so it stays on the step grid
(in whole nanoseconds) however long a run lasts, and sim-time timers of the robots' nodes with
a period that is a multiple of `step_s` fire exactly once per period.

Lockstep (`lockstep: true`, what `delivery-sim` runs): as fast as possible would outrun the
robots' control loops, which run in other processes on the same clock, and their watchdogs
(scan and command timeouts, in sim time) would stop them. So the clock is held: it advances
from T only when every robot's `cmd_vel_safe` stamped at least T + step_s - `lockstep_lead_s`
has arrived (the safety monitor publishes one per control period, stamped with the /clock it
has seen, so its stamp says how far the robot has got). A lead of one step is strict lockstep
(what delivery-sim runs). A longer lead lets the simulator compute ahead, but the stamp only
says which /clock a robot has seen, not that it has processed every scan: a busy robot then
takes one scan per executor round while two arrive, its scan queue falls behind, and its
safety monitor stops it for stale scans. A robot that stays behind for `lockstep_grace_s` of
wall time is not waited for (counted in `lockstep_timeouts`) until it catches up. In lockstep
the sensor data of a step go out before its /clock, so a robot's control tick at T finds the
odometry of T. `hold(key)` / `release(key)` hold the clock for something in this process (a
simulated person at a service).

`start_paused: true` publishes /clock at the start time and steps only after `run()` or a call
of `/sim/run` (std_srvs/SetBool: true runs, false pauses): a launcher starts the robots' nodes
first and lets the clock go when all of them are up.

Threading: the core is not thread-safe, so one mutex guards it. The sim thread holds it only
while stepping and copying outputs (about a millisecond), never while publishing; executor
callbacks (services) hold it only to hand the core a value, so they never block for long.
Services answer from the core at once. Commands (`cmd_vel_safe`) are not executor callbacks:
the sim thread reads them itself (`TopicPoller`), since it needs them before every step and
rclpy's executor would spend a whole wait-set round in Python on each.

Cost per step is kept low: messages are built once and refilled, odometry and ground truth go
out at `odom_rate_hz` (sim), scans only when the core took a new one (its lidar rate), battery,
compartment and e-stop at 1 Hz (sim) and at once on a change. `drive_clock(node)` sets the sim
time of a node in the same process directly (no /clock subscription of its own).
`track_period_s` keeps every robot's ground truth for a run's record; `ghost_robots` (never on
by default) lets robots pass through each other unseen, to tell what traffic costs.
"""

from __future__ import annotations

import array
import math
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from delivery_interfaces.msg import CompartmentState
from delivery_interfaces.srv import SetLock
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.time_source import TimeSource
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import BatteryState, LaserScan
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger

from delivery_robot.fleet_simulation import (
    BatteryConfig,
    CompartmentSnapshot,
    FleetSimulation,
    KinematicsConfig,
    LidarConfig,
    OdometryConfig,
    PedestrianConfig,
    SimConfig,
    SimWorld,
)
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.paths import share_file
from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS
from delivery_robot.route_graph import (
    RouteGraph,
    WaypointKind,
    load_route_graph,
    resolve_sdf_path,
)

STATE_PERIOD_S = 1.0  # battery, compartment and e-stop at least this often (sim seconds)
PAUSED_CLOCK_PERIOD_S = 0.5  # wall: /clock is repeated this often while paused (late joiners)
ACK_TOLERANCE_NS = 1000  # a cmd_vel_safe stamp this close to the wanted time counts
CATCH_UP_LIMIT_S = 0.5  # real time: a pacing lag beyond this is dropped, not made up in a burst
START_KINDS = (WaypointKind.DEPOT, WaypointKind.CHARGER)

# The core's configuration groups, exposed as `<group>.<field>` parameters.
_CONFIG_GROUPS: dict[str, type[Any]] = {
    "kinematics": KinematicsConfig,
    "odometry": OdometryConfig,
    "lidar": LidarConfig,
    "battery": BatteryConfig,
    "pedestrians": PedestrianConfig,
}


def time_msg(seconds: float) -> TimeMsg:
    """builtin_interfaces/Time of a sim time in seconds (nanoseconds rounded, never 1e9)."""
    total = int(round(seconds * 1e9))
    return TimeMsg(sec=total // 1_000_000_000, nanosec=total % 1_000_000_000)


def _time_of_ns(total: int) -> TimeMsg:
    return TimeMsg(sec=total // 1_000_000_000, nanosec=total % 1_000_000_000)


def _set_yaw(orientation: Any, yaw: float) -> None:
    orientation.z, orientation.w = math.sin(0.5 * yaw), math.cos(0.5 * yaw)


@dataclass
class _Outputs:
    """What the sim thread copies out of the core under the mutex, to publish without it."""

    time: float
    odom: np.ndarray | None = None  # (N, 5): x, y, yaw, v, w in odom
    truth: np.ndarray | None = None  # (N, 3): x, y, yaw in map
    scans: np.ndarray | None = None  # (N, beams) float32
    scan_stamp: float = 0.0
    battery: list[tuple[float, float, bool]] | None = None


class _Robot:
    """One robot's publishers and reusable messages."""

    def __init__(self, node: FleetSimNode, index: int, robot_id: str, prefix: str) -> None:
        self.index = index
        self.id = robot_id
        ns = f"/{robot_id}/"
        self.odom_pub = node.create_publisher(Odometry, ns + "odom", SENSOR_QOS)
        self.scan_pub = node.create_publisher(LaserScan, ns + "scan", SENSOR_QOS)
        self.battery_pub = node.create_publisher(BatteryState, ns + "battery_state", SENSOR_QOS)
        self.compartment_pub = node.create_publisher(CompartmentState, ns + "compartment/state",
                                                     STATE_QOS)
        self.estop_pub = node.create_publisher(Bool, ns + "estop", STATE_QOS)
        self.truth_pub = node.create_publisher(PoseStamped, ns + "ground_truth/pose", SENSOR_QOS)
        self.odom = Odometry()
        self.odom.header.frame_id = prefix + "odom"
        self.odom.child_frame_id = prefix + "base_link"
        # Wheel odometry drifts: say so to anyone fusing it (x, y, yaw; vx, wz).
        pose_cov = [0.0] * 36
        pose_cov[0] = pose_cov[7] = 0.01
        pose_cov[35] = 0.01
        pose_cov[14] = pose_cov[21] = pose_cov[28] = 1e6  # z, roll, pitch: not measured
        self.odom.pose.covariance = pose_cov
        twist_cov = [0.0] * 36
        twist_cov[0] = twist_cov[35] = 1e-3
        twist_cov[7] = twist_cov[14] = twist_cov[21] = twist_cov[28] = 1e6
        self.odom.twist.covariance = twist_cov
        self.scan = LaserScan()
        self.scan.header.frame_id = prefix + "laser"
        self.truth = PoseStamped()
        self.truth.header.frame_id = "map"
        self.battery = BatteryState()
        self.battery.header.frame_id = prefix + "base_link"
        self.battery.present = True
        self.battery.power_supply_technology = BatteryState.POWER_SUPPLY_TECHNOLOGY_LION
        self.compartment_frame = prefix + "compartment"
        self.last_compartment: CompartmentSnapshot | None = None
        self.last_estop: bool | None = None


class TopicPoller:
    """Subscriptions read by a thread of one's own instead of the executor.

    A high-rate topic taken through rclpy's executor costs a full wait-set round in Python per
    message. Here the subscriptions belong to a helper node that no executor spins, and
    `read()` waits on them with one rcl wait set and takes everything queued. fleet_sim reads
    every robot's `cmd_vel_safe` this way in its sim thread (which needs them before each
    step anyway); `delivery-sim` reads the robots' safety states the same way. `wake()`
    (any thread) ends a wait early.
    """

    def __init__(self, context: Any, name: str, topics: list[tuple[Any, str, Any]]) -> None:
        """`topics`: (message type, absolute topic name, QoS) each."""
        self.context = context
        self.node = Node(name, context=context, start_parameter_services=False)
        quiet = SubscriptionEventCallbacks(use_default_callbacks=False)
        self.subs = [self.node.create_subscription(kind, topic, lambda _msg: None, qos,
                                                   event_callbacks=quiet)
                     for kind, topic, qos in topics]
        self._wake = self.node.create_guard_condition(lambda: None)

    def wake(self) -> None:
        self._wake.trigger()

    def read(self, timeout_s: float = 0.0) -> list[tuple[int, Any]]:
        """(topic index, message) of everything that arrived, in topic order, waiting up to
        timeout_s for something (0: take only what is there)."""
        out: list[tuple[int, Any]] = []
        with ExitStack() as stack:
            for sub in self.subs:
                stack.enter_context(sub.handle)
            stack.enter_context(self._wake.handle)
            stack.enter_context(self.context.handle)
            wait_set = _rclpy.WaitSet(len(self.subs), 1, 0, 0, 0, 0, self.context.handle)
            wait_set.clear_entities()
            for sub in self.subs:
                wait_set.add_subscription(sub.handle)
            wait_set.add_guard_condition(self._wake.handle)
            wait_set.wait(max(0, int(timeout_s * 1e9)))
            ready = wait_set.get_ready_entities("subscription")
            for index, sub in enumerate(self.subs):
                if sub.handle.pointer not in ready:
                    continue
                while (taken := sub.handle.take_message(sub.msg_type, False)) is not None:
                    out.append((index, taken[0]))
        return out

    def destroy(self) -> None:
        self.node.destroy_node()


class FleetSimNode(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("fleet_sim", **node_options)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._acks = threading.Lock()  # guards _holds and _stale_holds
        self._reader: TopicPoller | None = None
        self._time_source = TimeSource()  # drives the clocks of in-process nodes: drive_clock
        self._time_source.ros_time_is_active = True
        try:
            self._configure()
        except ValueError:
            self.destroy_node()  # a refused start must not leave a half-made node behind
            raise
        self._thread = threading.Thread(target=self._run, name="fleet-sim", daemon=True)
        self._thread.start()

    # ---- set-up ------------------------------------------------------------------------------

    def _configure(self) -> None:
        if self.get_parameter("use_sim_time").value:
            raise ValueError("use_sim_time must be false: fleet_sim publishes /clock itself")
        world = declare(self, "world", "town", "World name: share/config/worlds/<world>.yaml")
        route_file = declare(self, "route_graph_file", "", "Route graph YAML; overrides world")
        self.robot_ids: list[str] = list(declare(
            self, "robot_ids", ["robot1", "robot2", "robot3"],
            "Robot namespaces, one simulated robot each (index = spawn order)"))
        start_waypoints = self._declare_typed(
            "start_waypoints", Parameter.Type.STRING_ARRAY,
            "Start waypoint per robot; unset: the world's depot and charger waypoints in order")
        start_poses = self._declare_typed(
            "start_poses", Parameter.Type.DOUBLE_ARRAY,
            "Start poses [x1, y1, yaw1, x2, ...] in map; win over start_waypoints (tests)")
        self.seed = int(declare(self, "seed", 0, "Seed of every random draw in the simulator"))
        self.step_s = float(declare(self, "step_s", 0.05, "Sim seconds per step"))
        self.real_time_factor = float(declare(
            self, "real_time_factor", 0.0,
            "Sim seconds per wall second; 0 = as fast as possible, 1 = real time"))
        self.odom_rate_hz = float(declare(
            self, "odom_rate_hz", 20.0, "odom and ground_truth/pose rate, Hz of sim time"))
        self.frame_prefix = str(declare(
            self, "frame_prefix", "", "Prefix of odom/base_link/laser frames ('' as on hardware)"))
        max_sim_time = float(declare(self, "max_sim_time_s", 0.0,
                                     "Stop stepping at this sim time; 0 = never (benchmarks)"))
        self.lockstep = bool(declare(
            self, "lockstep", False,
            "Hold the clock until every robot's cmd_vel_safe has caught up (see lead, grace)"))
        self.lockstep_lead_s = float(declare(
            self, "lockstep_lead_s", 0.0,
            "Lockstep: how far the clock may run ahead of the slowest robot's cmd_vel_safe "
            "stamp, sim s; 0 = one step (strict lockstep)"))
        self.lockstep_grace_s = float(declare(
            self, "lockstep_grace_s", 2.0,
            "Lockstep: a robot behind for this many wall s is no longer waited for until it "
            "catches up"))
        lockstep_robots = self._declare_typed(
            "lockstep_robots", Parameter.Type.STRING_ARRAY,
            "Lockstep: the robots to wait for; unset: every robot of robot_ids")
        start_paused = bool(declare(self, "start_paused", False,
                                    "Publish /clock but step only after run() or /sim/run"))
        self.track_period_s = float(declare(
            self, "track_period_s", 0.0,
            "Keep every robot's ground-truth pose this often (sim s) in memory for a run's "
            "record (track()); 0 = off"))
        if not self.robot_ids or len(set(self.robot_ids)) != len(self.robot_ids):
            raise ValueError(f"robot_ids: must be unique and non-empty, got {self.robot_ids}")
        if self.step_s <= 0.0 or self.real_time_factor < 0.0 or self.odom_rate_hz <= 0.0:
            raise ValueError("step_s and odom_rate_hz must be > 0, real_time_factor >= 0")
        if self.lockstep_lead_s == 0.0:
            self.lockstep_lead_s = self.step_s
        if self.lockstep_lead_s < self.step_s - 1e-9 or self.lockstep_grace_s <= 0.0:
            raise ValueError("lockstep_lead_s must be 0 (one step) or >= step_s, and "
                             "lockstep_grace_s > 0")
        unknown = sorted(set(lockstep_robots) - set(self.robot_ids))
        if unknown:
            raise ValueError(f"lockstep_robots: {unknown} are not in robot_ids")
        self.step_ns = int(round(self.step_s * 1e9))
        self.max_sim_time = max_sim_time if max_sim_time > 0.0 else math.inf
        config = self._declare_core_config()

        path = Path(route_file) if route_file else share_file(f"config/worlds/{world}.yaml")
        self.route: RouteGraph = load_route_graph(path, validate=False)
        if self.route.sdf_path is None:  # only validation resolves it; the world needs it
            self.route.sdf_path = resolve_sdf_path(path, self.route.sdf)
        spawns = self._spawns(start_waypoints, start_poses)
        self.sim = FleetSimulation(SimWorld.from_route_graph(self.route), spawns, config,
                                   self.seed)
        self._lock = threading.Lock()  # guards self.sim and the pending inputs
        self._pending_cmds: dict[int, tuple[float, float]] = {}
        self.steps = 0
        self._track: list[tuple[float, list[float]]] = []  # (t, [x1, y1, yaw1, x2, ...])
        self._next_track = 0.0
        # Lockstep: the newest cmd_vel_safe stamp (ns) per robot index (sim thread only).
        self._acked = [-1] * len(self.robot_ids)
        self._absent: set[int] = set()  # behind for longer than the grace: not waited for
        self._holds: dict[str, int] = {}  # hold(key) counts: the clock waits while any is held
        self._stale_holds: set[str] = set()  # held longer than the grace: not waited for
        waited = lockstep_robots or self.robot_ids
        self._lockstep_indices = [self.robot_ids.index(r) for r in waited]
        self.lockstep_waits = 0  # steps that had to wait for a robot
        self.lockstep_wait_s = 0.0  # wall seconds spent waiting
        self.lockstep_timeouts: dict[str, int] = {}  # robot -> times its grace ran out
        self._running = threading.Event()
        if not start_paused:
            self._running.set()
        self.wall_start = time.monotonic()
        self.wall_stepping_s = 0.0  # wall time spent in the sim loop (speed-up denominator)

        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.robots = [_Robot(self, i, rid, self.frame_prefix)
                       for i, rid in enumerate(self.robot_ids)]
        self._reader = TopicPoller(
            self.context, f"{self.get_name()}_commands",
            [(TwistStamped, f"/{rid}/cmd_vel_safe", COMMAND_QOS) for rid in self.robot_ids])
        lidar = config.lidar
        for robot in self.robots:
            self._wire(robot)
            robot.scan.range_min, robot.scan.range_max = lidar.range_min, lidar.range_max
            robot.scan.scan_time = 1.0 / lidar.rate_hz
            pattern = lidar.pattern
            robot.scan.angle_min = pattern.angle_min
            robot.scan.angle_increment = pattern.angle_increment
            robot.scan.angle_max = pattern.angle_min + (pattern.count - 1) * pattern.angle_increment
        self.get_logger().info(
            f"fleet_sim: {len(self.robots)} robots in {self.route.world!r}, step "
            f"{self.step_s:g} s, real_time_factor {self.real_time_factor:g}, lidar "
            f"{'on' if lidar.enabled else 'off'}, {config.pedestrians.count} pedestrians")

    def _declare_typed(self, name: str, kind: Parameter.Type, description: str) -> list[Any]:
        """A list parameter with no default (rclpy cannot infer a type from [])."""
        value = self.declare_parameter(name, kind,
                                       ParameterDescriptor(description=description)).value
        return list(value) if value is not None else []

    def _declare_core_config(self) -> SimConfig:
        """`<group>.<field>` parameters for every core config value; the core validates them."""
        groups: dict[str, Any] = {}
        for group, cls in _CONFIG_GROUPS.items():
            defaults = cls()
            values: dict[str, Any] = {}
            for item in fields(cls):
                default = getattr(defaults, item.name)
                if default is None:  # command_timeout_s: None = no watchdog; 0 here
                    default = 0.0
                descriptor = ParameterDescriptor(
                    description=f"fleet_simulation.{cls.__name__}.{item.name}",
                    dynamic_typing=True, read_only=True)
                value = self.declare_parameter(f"{group}.{item.name}", default, descriptor).value
                if isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise ValueError(f"{group}.{item.name}: must be a bool, got {value!r}")
                elif isinstance(default, int | float):
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        raise ValueError(f"{group}.{item.name}: must be a number, got {value!r}")
                    value = type(default)(value)
                values[item.name] = value
            if group == "kinematics" and values["command_timeout_s"] <= 0.0:
                values["command_timeout_s"] = None
            groups[group] = replace(defaults, **values)
        ghost = bool(declare(self, "ghost_robots", False,
                             "Robots pass through each other and are invisible to each other's "
                             "lidar (a run without robot-robot traffic; never on hardware)"))
        return SimConfig(**groups, ghost_robots=ghost)

    def _spawns(self, waypoints: list[str], poses: list[float]) -> list[tuple[float, float,
                                                                                float]]:
        n = len(self.robot_ids)
        if poses:
            if len(poses) != 3 * n:
                raise ValueError(f"start_poses: need 3 numbers per robot ({3 * n}), "
                                 f"got {len(poses)}")
            return [(poses[3 * i], poses[3 * i + 1], poses[3 * i + 2]) for i in range(n)]
        if not waypoints:
            waypoints = [w.name for w in self.route.waypoints.values()
                         if w.kind in START_KINDS][:n]
        if len(waypoints) != n:
            raise ValueError(f"need a start waypoint for each of {n} robots, got {waypoints}")
        spawns = []
        for name in waypoints:
            try:
                w = self.route.waypoint(name)
            except KeyError:
                raise ValueError(f"start_waypoints: unknown waypoint {name!r}") from None
            spawns.append((w.x, w.y, w.yaw or 0.0))
        return spawns

    def _wire(self, robot: _Robot) -> None:
        ns = f"/{robot.id}/"
        self.create_service(SetLock, ns + "compartment/set_lock",
                            lambda req, res: self._on_set_lock(robot, req, res))
        actions = {"open_door": self.sim.open_door, "close_door": self.sim.close_door,
                   "load": self.sim.load, "unload": self.sim.unload}
        for name, act in actions.items():
            self.create_service(Trigger, ns + f"sim/{name}",
                                lambda req, res, act=act, name=name: self._on_person(
                                    robot, name, act, res))
        self.create_service(SetBool, ns + "sim/estop",
                            lambda req, res: self._on_estop(robot, req, res))
        self.create_service(SetBool, ns + "sim/stuck_lock",
                            lambda req, res: self._on_stuck_lock(robot, req, res))
        if robot.index == 0:
            self.create_service(SetBool, "/sim/run", self._on_run)

    # ---- inputs (executor thread) ------------------------------------------------------------

    def _take_commands(self, timeout_s: float = 0.0) -> None:
        """Sim thread: queue what arrived on cmd_vel_safe for the next step (the core's command
        timeout judges a command from then on) and note each robot's newest stamp."""
        assert self._reader is not None
        for index, msg in self._reader.read(timeout_s):
            self._pending_cmds[index] = (msg.twist.linear.x, msg.twist.angular.z)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if stamp > self._acked[index]:
                self._acked[index] = stamp

    def _on_run(self, request: Any, response: Any) -> Any:
        if request.data:
            self.run()
        else:
            self.pause()
        response.success = True
        response.message = "running" if request.data else "paused"
        return response

    def _on_set_lock(self, robot: _Robot, request: Any, response: Any) -> Any:
        with self._lock:
            done = self.sim.set_lock(robot.index, bool(request.lock))
            snapshot = self.sim.compartment(robot.index)
            response.state = self._publish_compartment(robot, snapshot, self.sim.time)
        verb = "lock" if request.lock else "unlock"
        response.success = done
        response.message = f"{verb}ed" if done else (
            "lock fault: the bolt did not move" if snapshot.stuck_lock
            else f"cannot {verb}: the door is open")
        who = request.requested_by or "unknown"
        self.get_logger().info(f"{robot.id}: {verb} by {who}: {response.message}")
        return response

    def _on_person(self, robot: _Robot, name: str, act: Any, response: Any) -> Any:
        with self._lock:
            result = act(robot.index)
            self._publish_compartment(robot, self.sim.compartment(robot.index), self.sim.time)
        response.success = result is None or bool(result)
        why = {"open_door": "the compartment is locked"}.get(name, "the door is closed")
        response.message = name.replace("_", " ") + (" done" if response.success
                                                     else f" refused: {why}")
        return response

    def _on_estop(self, robot: _Robot, request: Any, response: Any) -> Any:
        with self._lock:
            self.sim.set_estop(robot.index, bool(request.data))
            self._publish_estop(robot, bool(request.data))
        response.success = True
        response.message = "e-stop pressed" if request.data else "e-stop released"
        return response

    def _on_stuck_lock(self, robot: _Robot, request: Any, response: Any) -> Any:
        """Fault injection: a jammed bolt."""
        with self._lock:
            self.sim.set_stuck_lock(robot.index, bool(request.data))
        response.success = True
        response.message = "lock stuck" if request.data else "lock free"
        return response

    # ---- the sim thread ----------------------------------------------------------------------

    def _run(self) -> None:
        """Step, publish, pace; until the node is destroyed."""
        try:
            self._loop()
        except Exception as error:  # noqa: BLE001 - a dead sim thread must say why
            if not self._stop.is_set():
                self.get_logger().error(f"fleet_sim stopped: {error!r}")
                raise

    def _loop(self) -> None:
        rtf = self.real_time_factor
        odom_period = 1.0 / self.odom_rate_hz
        self._next_odom = self._next_state = 0.0
        self._last_scan = -1
        start_ns = int(round(self.sim.time * 1e9))
        with self._lock:
            first = self._outputs(force=True)
        self._publish(first, clock_last=self.lockstep)
        while not self._running.is_set():  # start_paused: hold the clock until run()
            if self._stop.wait(PAUSED_CLOCK_PERIOD_S):
                return
            # Everything again, for nodes that joined since: sensor topics are volatile, and a
            # robot that has never heard its battery must not report it empty.
            with self._lock:
                again = self._outputs(force=True)
            self._publish(again, clock_last=self.lockstep)
        self.wall_start = time.monotonic()
        pace_origin = (self.wall_start, self.sim.time)
        while not self._stop.is_set() and self.sim.time < self.max_sim_time - 1e-9:
            if not self._running.is_set():
                paused_at = time.monotonic()
                while not self._running.wait(PAUSED_CLOCK_PERIOD_S):
                    if self._stop.is_set():
                        return
                pace_origin = (pace_origin[0] + time.monotonic() - paused_at, pace_origin[1])
            started = time.monotonic()
            target_ns = start_ns + (self.steps + 1) * self.step_ns
            if self.lockstep:
                self._await_robots(target_ns)
            else:
                self._take_commands()
            with self._lock:
                for i, (v, w) in self._pending_cmds.items():
                    self.sim.set_command(i, v, w)
                self._pending_cmds.clear()
                # To the grid time computed from the step count: no drift over a long run.
                self.sim.step(max(target_ns * 1e-9 - self.sim.time, 0.0))
                out = self._outputs(odom_period=odom_period)
                if self.track_period_s > 0 and out.time >= self._next_track - 1e-9:
                    self._next_track += self.track_period_s
                    self._track.append((out.time, self.sim.poses.ravel().tolist()))
            self.steps += 1
            self._publish(out, clock_last=self.lockstep, clock_ns=target_ns)
            now = time.monotonic()
            self.wall_stepping_s += now - started
            if rtf > 0.0:
                due = pace_origin[0] + (out.time - pace_origin[1]) / rtf
                if now - due > CATCH_UP_LIMIT_S:  # fell behind (a slow machine): re-anchor
                    pace_origin = (now, out.time)
                elif due > now:
                    self._stop.wait(due - now)
            else:
                time.sleep(0)  # hand the GIL to the executor between steps

    def _outputs(self, odom_period: float = 0.0, force: bool = False) -> _Outputs:
        """Copy what is due for publishing out of the core (caller holds the mutex); `force`:
        everything, without moving the schedules (the start, a republish while paused)."""
        n = len(self.robots)
        out = _Outputs(self.sim.time)
        due = out.time >= self._next_odom - 1e-9
        if force or due:
            if due and not force:
                self._next_odom = max(self._next_odom + odom_period, out.time - 1e-9)
            out.odom = np.column_stack([self.sim.odom_poses, self.sim.odom_twists])
            out.truth = self.sim.poses
        if self.sim.config.lidar.enabled and (force or self.sim.scan_count != self._last_scan):
            self._last_scan = self.sim.scan_count
            out.scans = self.sim.scans.astype(np.float32)
            out.scan_stamp = self.sim.scan_stamp
        due = out.time >= self._next_state - 1e-9
        heartbeat = force or due
        if heartbeat:
            if due and not force:
                self._next_state = max(self._next_state + STATE_PERIOD_S, out.time - 1e-9)
            levels, charging = self.sim.battery_levels, self.sim.charging
            b = self.sim.config.battery
            out.battery = [(float(levels[i]), b.empty_voltage + (
                b.full_voltage - b.empty_voltage) * float(levels[i]),
                bool(charging[i])) for i in range(n)]
        # Under the mutex, so a service's newer state is never overwritten by ours.
        estops = self.sim.estops.tolist()
        for r in self.robots:
            snapshot = self.sim.compartment(r.index)
            if heartbeat or snapshot != r.last_compartment:
                self._publish_compartment(r, snapshot, out.time)
            if heartbeat or estops[r.index] != r.last_estop:
                self._publish_estop(r, estops[r.index])
        return out

    def _await_robots(self, target_ns: int) -> None:
        """Lockstep: take commands until every waited-for robot has acked target - lead and
        nothing is held (or the grace ran out). While waiting, /clock is repeated now and
        then: it is best effort, and a robot that missed it would otherwise never ack."""
        need = target_ns - int(round(self.lockstep_lead_s * 1e9)) - ACK_TOLERANCE_NS
        indices = self._lockstep_indices
        self._take_commands()

        def pending() -> tuple[list[int], list[str]]:
            for i in list(self._absent):
                if self._acked[i] >= need:  # caught up: waited for again
                    self._absent.discard(i)
            behind = [i for i in indices if self._acked[i] < need and i not in self._absent]
            with self._acks:
                held = [k for k in self._holds if k not in self._stale_holds]
            return behind, held

        behind, held = pending()
        if not behind and not held:
            return
        self.lockstep_waits += 1
        started = time.monotonic()
        deadline = started + self.lockstep_grace_s
        next_clock = started + 0.05
        while (behind or held) and not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                self._give_up_waiting(behind, held, target_ns)
                break
            if now >= next_clock:
                self._publish_clock(self.sim.time)
                next_clock = now + 0.1
            self._take_commands(min(deadline, next_clock) - now)
            behind, held = pending()
        self.lockstep_wait_s += time.monotonic() - started

    def _give_up_waiting(self, behind: list[int], held: list[str], target_ns: int) -> None:
        for i in behind:
            rid = self.robot_ids[i]
            self.lockstep_timeouts[rid] = self.lockstep_timeouts.get(rid, 0) + 1
            self._absent.add(i)
        with self._acks:
            for key in held:
                self.lockstep_timeouts[f"hold: {key}"] = 1
                self._stale_holds.add(key)
        who = [self.robot_ids[i] for i in behind] + [f"hold {k!r}" for k in held]
        self.get_logger().warning(
            f"lockstep: waited {self.lockstep_grace_s:g} s (wall) for {who} at sim "
            f"{target_ns * 1e-9:.2f} s; going on without them until they catch up")

    def hold(self, key: str) -> None:
        """Lockstep: keep the clock where it is until release(key) (e.g. a simulated person
        at a service); nested holds of one key count. Thread-safe."""
        with self._acks:
            self._holds[key] = self._holds.get(key, 0) + 1

    def release(self, key: str) -> None:
        with self._acks:
            left = self._holds.get(key, 0) - 1
            if left > 0:
                self._holds[key] = left
            else:
                self._holds.pop(key, None)
                self._stale_holds.discard(key)
        if self._reader is not None:
            self._reader.wake()

    def run(self) -> None:
        """Let the clock go (start_paused, or after pause())."""
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def _publish(self, out: _Outputs, clock_last: bool = False,
                 clock_ns: int | None = None) -> None:
        """Publish a step's outputs; /clock first, or (lockstep) last."""
        stamp = time_msg(out.time) if clock_ns is None else _time_of_ns(clock_ns)
        if not clock_last:
            self._send_clock(Clock(clock=stamp))
        for r in self.robots:
            i = r.index
            if out.odom is not None and out.truth is not None:
                x, y, yaw, v, w = out.odom[i].tolist()
                r.odom.header.stamp = stamp
                r.odom.pose.pose.position.x, r.odom.pose.pose.position.y = x, y
                _set_yaw(r.odom.pose.pose.orientation, yaw)
                r.odom.twist.twist.linear.x, r.odom.twist.twist.angular.z = v, w
                r.odom_pub.publish(r.odom)
                tx, ty, tyaw = out.truth[i].tolist()
                r.truth.header.stamp = stamp
                r.truth.pose.position.x, r.truth.pose.position.y = tx, ty
                _set_yaw(r.truth.pose.orientation, tyaw)
                r.truth_pub.publish(r.truth)
            if out.scans is not None:
                self._publish_scan(r, out.scans[i], out.scan_stamp)
            if out.battery is not None:
                level, voltage, charging = out.battery[i]
                r.battery.header.stamp = stamp
                r.battery.percentage, r.battery.voltage = level, voltage
                r.battery.power_supply_status = (
                    BatteryState.POWER_SUPPLY_STATUS_CHARGING if charging
                    else BatteryState.POWER_SUPPLY_STATUS_DISCHARGING)
                r.battery_pub.publish(r.battery)
        if clock_last:
            self._send_clock(Clock(clock=stamp))

    def _publish_clock(self, seconds: float) -> TimeMsg:
        stamp = time_msg(seconds)
        self._send_clock(Clock(clock=stamp))
        return stamp

    def _send_clock(self, clock: Clock) -> None:
        self.clock_pub.publish(clock)
        self._time_source.clock_callback(clock)

    def drive_clock(self, node: Node) -> None:
        """Set the sim time of a node in this process directly, instead of through its own
        /clock subscription (one executor callback less per step). The node must be on sim
        time (use_sim_time true); call before the clock starts."""
        if not node.get_parameter("use_sim_time").value:
            raise ValueError(f"{node.get_name()}: drive_clock needs use_sim_time true")
        node._time_source.detach_node()  # noqa: SLF001 - drops that node's /clock subscription
        self._time_source.attach_clock(node.get_clock())

    def _publish_scan(self, robot: _Robot, ranges: np.ndarray, stamp: float) -> None:
        scan = robot.scan
        scan.header.stamp = time_msg(stamp)
        scan.ranges = array.array("f", ranges.tobytes())
        robot.scan_pub.publish(scan)

    def _publish_compartment(self, robot: _Robot, snapshot: CompartmentSnapshot,
                             seconds: float) -> CompartmentState:
        msg = CompartmentState(lock_state=int(snapshot.lock_state),
                               door_closed=snapshot.door_closed,
                               occupancy=int(snapshot.occupancy))
        msg.header.stamp = time_msg(seconds)
        msg.header.frame_id = robot.compartment_frame
        robot.last_compartment = snapshot
        robot.compartment_pub.publish(msg)
        return msg

    def _publish_estop(self, robot: _Robot, pressed: bool) -> None:
        robot.last_estop = pressed
        robot.estop_pub.publish(Bool(data=pressed))

    # ---- status and shutdown -----------------------------------------------------------------

    def speedup(self) -> float:
        """Sim seconds per wall second of stepping so far."""
        return self.sim.time / self.wall_stepping_s if self.wall_stepping_s > 0 else 0.0

    def track(self) -> list[tuple[float, list[float]]]:
        """The recorded ground truth: (sim time, [x, y, yaw of robot 1, of robot 2, ...])."""
        with self._lock:
            return list(self._track)

    def lockstep_stats(self) -> dict[str, Any]:
        """How much the clock waited for the robots (wall seconds) and for whom it stopped."""
        return {"steps": self.steps, "waits": self.lockstep_waits,
                "wait_s": round(self.lockstep_wait_s, 2),
                "timeouts": dict(self.lockstep_timeouts)}

    def destroy_node(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        if self._reader is not None:
            self._reader.destroy()
            self._reader = None
        super().destroy_node()


def main() -> int:
    return run_node(FleetSimNode)


if __name__ == "__main__":
    raise SystemExit(main())

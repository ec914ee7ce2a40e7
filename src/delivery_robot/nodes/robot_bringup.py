"""delivery-robot: rehearse one robot's bring-up without hardware (`--emulate`).

    delivery-robot --emulate --robot-id robot1                  # until Ctrl-C
    delivery-robot --emulate --duration 60 --faults corrupt=0.001,unplug_every=20

It starts the firmware emulator (`delivery_robot.firmware_emulator`) on a pseudo-terminal and
then the per-robot nodes that `launch/robot.launch.py` starts on a real robot (`ROBOT_NODES`,
the one list a test compares with the launch file), each a process of its own in the robot's
namespace with its config/*.yaml parameters: base_driver on the emulator's pty, camera,
safety_monitor, navigation (builtin backend), handoff, and mission_executor and perception
where their modules exist (a missing one is a logged skip). base_driver is a lifecycle node:
this tool configures and activates it (lifecycle_msgs ChangeState) and says which transition
failed. It then shows which nodes are up (each node's first message on a topic it owns,
odometry flowing from the emulated encoders), a status line now and then, and on Ctrl-C or
SIGTERM shuts down in order: base_driver deactivated (wheels stopped, motors disabled,
compartment locked unless its door is open), the other nodes, base_driver, the emulator; the
emulated controller's final state is printed (and written with `--report`).

No lidar on the emulated robot: the safety monitor stops the robot without a fresh scan (its
scan watchdog), so by default this tool publishes an empty scan (`--scan clear`: no obstacle
anywhere, which lets the drive chain cmd_vel -> safety_monitor -> cmd_vel_safe -> base_driver
be rehearsed; it cannot rehearse obstacle stops). `--scan none` publishes nothing: the robot
is then held at zero, as a real robot whose lidar is down.

Without `--emulate` it runs the same nodes against a real controller on `--serial-port` (a
bench check; it publishes no scan and does not touch the DDS settings). The robot's bring-up on
hardware is `ros2 launch delivery_robot robot.launch.py robot_id:=robot1 serial_port:=...`.

With `--emulate`, DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; a
ROS_DOMAIN_ID of its own unless one is set). When stdin is a terminal, the emulator's console
commands work here (`estop on`, `door open`, `unplug`, ... `help`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

PACKAGE: Final = "delivery_robot"
HARDWARE_BRINGUP: Final = (
    "ros2 launch delivery_robot robot.launch.py robot_id:=robot1 serial_port:=/dev/ttyACM0")
SECRET_ENV: Final = "DELIVERY_ROBOT_HANDOFF_SECRET"  # as launch/robot.launch.py
TEST_PATTERN: Final = "test-pattern"


@dataclass(frozen=True)
class RobotNode:
    """One per-robot node as launch/robot.launch.py starts it (`name` is its executable and
    its node name); `ready_topic` is a topic it publishes once it works (None: being in the
    ROS graph is all this tool can check)."""

    name: str
    module: str
    params_file: str | None
    ready_topic: str | None = None
    ready_type: str | None = None  # "package/msg/Type"
    ready_qos: str = "sensor"  # "sensor" (best effort) or "state" (transient local)


# The robot's nodes, in start order: the one list; tests/test_robot_bringup.py checks it against
# the executables launch/robot.launch.py starts.
ROBOT_NODES: Final[tuple[RobotNode, ...]] = (
    RobotNode("base_driver", "delivery_robot.nodes.base_driver", "config/base_driver.yaml",
              "odom", "nav_msgs/msg/Odometry"),
    RobotNode("camera", "delivery_robot.nodes.camera", None,
              "camera/camera_info", "sensor_msgs/msg/CameraInfo"),
    RobotNode("safety_monitor", "delivery_robot.nodes.safety_monitor", "config/safety.yaml",
              "safety/state", "delivery_interfaces/msg/SafetyState", "state"),
    RobotNode("navigation", "delivery_robot.nodes.navigation", "config/navigation.yaml",
              "zone_speed_cap", "std_msgs/msg/Float32", "state"),
    RobotNode("handoff", "delivery_robot.nodes.handoff", "config/handoff.yaml",
              "handoff/state", "delivery_interfaces/msg/CompartmentState", "state"),
    RobotNode("mission_executor", "delivery_robot.nodes.mission_executor",
              "config/mission_executor.yaml",
              "robot_state", "delivery_interfaces/msg/RobotState", "state"),
    RobotNode("perception", "delivery_robot.nodes.perception", "config/perception.yaml"),
)
NODE_NAMES: Final = tuple(node.name for node in ROBOT_NODES)


# -- options --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmulatorFaults:
    """`--faults` for the emulated controller (both directions of the wire)."""

    corrupt: float = 0.0  # per-byte corruption rate
    drop: float = 0.0  # per-byte drop rate
    stuck_lock: bool = False
    seed: int = 0
    unplug_every: float = 0.0  # s between unplugs (the cable is out for UNPLUG_S); 0 = never

    def describe(self) -> str:
        parts = [f"corrupt={self.corrupt:g}" if self.corrupt else "",
                 f"drop={self.drop:g}" if self.drop else "",
                 "stuck_lock" if self.stuck_lock else "",
                 f"unplug_every={self.unplug_every:g}s" if self.unplug_every else ""]
        text = ", ".join(part for part in parts if part)
        return text or "none"


UNPLUG_S: Final = 0.5
FAULTS_HELP: Final = ("comma-separated: corrupt=RATE, drop=RATE (per byte, both ways), stuck_lock, "
                      "seed=N, unplug_every=SECONDS (cable out for 0.5 s each time); "
                      "e.g. corrupt=0.001,unplug_every=20")


def parse_faults(text: str) -> EmulatorFaults:
    """`--faults` text -> EmulatorFaults; ValueError says which item is wrong."""
    values: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        try:
            if key in ("corrupt", "drop"):
                rate = float(value)
                if not 0.0 <= rate <= 1.0:
                    raise ValueError
                values[key] = rate
            elif key == "stuck_lock" and value in ("", "1", "true", "yes"):
                values[key] = True
            elif key == "seed":
                values[key] = int(value)
            elif key == "unplug_every":
                seconds = float(value)
                if not (math.isfinite(seconds) and seconds > UNPLUG_S):
                    raise ValueError
                values[key] = seconds
            else:
                raise KeyError(key)
        except KeyError:
            raise ValueError(f"unknown fault {item!r}; {FAULTS_HELP}") from None
        except ValueError:
            limits = {"corrupt": "a rate in [0, 1]", "drop": "a rate in [0, 1]",
                      "seed": "an integer", "unplug_every": f"seconds > {UNPLUG_S:g}",
                      "stuck_lock": "no value"}
            raise ValueError(f"bad fault {item!r}: {key} takes {limits[key]}") from None
    return EmulatorFaults(**values)


@dataclass(frozen=True)
class BringupOptions:
    robot_id: str
    emulate: bool
    serial_port: str  # the emulator's link with --emulate
    camera: str  # TEST_PATTERN or a VideoCapture source
    world: str
    start_waypoint: str | None
    scan: str  # "clear" or "none"
    faults: EmulatorFaults
    skip: frozenset[str]
    duration: float | None
    ready_timeout: float
    status_period: float
    report: Path | None


def parse_args(argv: Sequence[str] | None) -> BringupOptions:
    parser = argparse.ArgumentParser(
        prog="delivery-robot", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot-id", default="robot1",
                        help="robot name: the namespace of its nodes (default robot1)")
    parser.add_argument("--emulate", action="store_true",
                        help="run the firmware emulator on a pty instead of a real controller")
    parser.add_argument("--serial-port",
                        help="the real controller's port (without --emulate)")
    parser.add_argument("--faults", action="append", default=[], metavar="SPEC",
                        help=f"emulator fault injection: {FAULTS_HELP}")
    parser.add_argument("--duration", type=float,
                        help="seconds to run once up, then shut down (default: until Ctrl-C)")
    parser.add_argument("--camera", default=None,
                        help="camera source: device index, video file or URL (default with "
                             f"--emulate: a generated {TEST_PATTERN} video; else config's 0)")
    parser.add_argument("--scan", choices=("clear", "none"), default=None,
                        help="with --emulate: publish an empty scan (clear, default) or none "
                             "(the safety monitor then holds the robot at zero)")
    parser.add_argument("--world", default="town", help="route graph of the area (town)")
    parser.add_argument("--start-waypoint",
                        help="where the robot stands (odom origin in map); default: the "
                             "world's first depot or charger")
    parser.add_argument("--skip", action="append", default=[], metavar="NODE",
                        help=f"leave a node out (repeatable, or comma-separated): "
                             f"{', '.join(n for n in NODE_NAMES if n != 'base_driver')}")
    parser.add_argument("--ready-timeout", type=float, default=90.0,
                        help="seconds to wait for every node to be up (default 90)")
    parser.add_argument("--status-period", type=float, default=10.0,
                        help="seconds between status lines once up; 0: none (default 10)")
    parser.add_argument("--report", type=Path,
                        help="write a JSON summary (nodes, final controller state) here")
    args = parser.parse_args(argv)

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", args.robot_id):
        parser.error(f"--robot-id must be a ROS name such as robot1, got {args.robot_id!r}")
    if not args.emulate:
        if not args.serial_port:
            parser.error("give --emulate to rehearse with the firmware emulator, or "
                         "--serial-port to check the nodes against a real controller; a "
                         f"robot's bring-up on hardware is: {HARDWARE_BRINGUP}")
        if args.faults or args.scan == "clear":
            parser.error("--faults and --scan clear need --emulate (they fake hardware)")
    elif args.serial_port:
        parser.error("--serial-port and --emulate exclude each other (the emulator makes "
                     "its own port)")
    try:
        faults = parse_faults(",".join(args.faults))
    except ValueError as error:
        parser.error(f"--faults: {error}")
    skip = frozenset(name.strip() for value in args.skip for name in value.split(",")
                     if name.strip())
    unknown = sorted(skip - set(NODE_NAMES))
    if unknown:
        parser.error(f"--skip: unknown node(s) {unknown}; nodes: {', '.join(NODE_NAMES)}")
    if "base_driver" in skip:
        parser.error("--skip base_driver: the bring-up is built around the base driver")
    if args.duration is not None and not args.duration > 0:
        parser.error("--duration must be > 0")
    if not args.ready_timeout > 0 or args.status_period < 0:
        parser.error("--ready-timeout must be > 0 and --status-period >= 0")
    camera = args.camera if args.camera is not None else (TEST_PATTERN if args.emulate else "0")
    return BringupOptions(
        robot_id=args.robot_id, emulate=args.emulate,
        serial_port=args.serial_port or "", camera=camera, world=args.world,
        start_waypoint=args.start_waypoint,
        scan=(args.scan or "clear") if args.emulate else "none",
        faults=faults, skip=skip, duration=args.duration, ready_timeout=args.ready_timeout,
        status_period=args.status_period, report=args.report)


# -- the plan: which processes, with which parameters ---------------------------------------------
@dataclass(frozen=True)
class PlannedNode:
    spec: RobotNode
    command: list[str]


@dataclass(frozen=True)
class SkippedNode:
    spec: RobotNode
    reason: str


def module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def config_path(relative: str) -> Path | None:
    """An installed share/ file, else the source tree's (a config added since the last
    colcon build), else None."""
    with contextlib.suppress(Exception):
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / relative
        if installed.exists():
            return installed
    source = Path(__file__).resolve().parents[3] / relative
    return source if source.exists() else None


@dataclass(frozen=True)
class StartPose:
    """Where the robot stands: a waypoint of the world and its map pose (odom's origin)."""

    waypoint: str
    x: float
    y: float
    yaw: float

    @property
    def odom_to_map(self) -> list[float]:
        return [self.x, self.y, self.yaw]


def start_pose(world: str, waypoint: str | None) -> StartPose:
    """The named waypoint, else the world's first depot or charger."""
    from delivery_robot.route_graph import load_route_graph

    path = config_path(f"config/worlds/{world}.yaml")
    if path is None:
        raise ValueError(f"no route graph for world {world!r} (config/worlds/{world}.yaml)")
    route = load_route_graph(path, validate=False)
    if waypoint is not None:
        try:
            chosen = route.waypoint(waypoint)
        except KeyError:
            raise ValueError(f"world {world!r} has no waypoint {waypoint!r}") from None
    else:
        candidates = route.depots or route.chargers
        if not candidates:
            raise ValueError(f"world {world!r} has no depot or charger: give --start-waypoint")
        chosen = candidates[0]
    return StartPose(chosen.name, chosen.x, chosen.y, chosen.yaw or 0.0)


def node_parameters(spec: RobotNode, options: BringupOptions, camera_source: str,
                    start: StartPose, workdir: Path) -> dict[str, Any]:
    """What this bring-up sets on top of the node's params file (as robot.launch.py does)."""
    if spec.name == "base_driver":
        # Not autostarted: this tool drives the lifecycle, so a failed transition is reported.
        return {"serial_port": options.serial_port, "autostart": False}
    if spec.name == "camera":
        return {"source": camera_source, "loop_file": options.camera == TEST_PATTERN}
    if spec.name == "navigation":
        return {"backend": "builtin", "world": options.world, "odom_to_map": start.odom_to_map}
    if spec.name == "mission_executor":
        # A journal of the rehearsal's own: it must not resume (or add to) a real robot's.
        return {"robot_id": options.robot_id, "odom_to_map": start.odom_to_map,
                "start_waypoint": start.waypoint, "journal_path": str(workdir / "missions.db")}
    if spec.name == "handoff":
        # Likewise the compartment's durable state: a rehearsal never inherits a locked order.
        return {"state_path": str(workdir / "handoff.db")}
    return {}


def plan_nodes(options: BringupOptions, extra_params_files: dict[str, Path], camera_source: str,
               start: StartPose, workdir: Path, exists: Callable[[str], bool] = module_exists,
               ) -> tuple[list[PlannedNode], list[SkippedNode]]:
    """The processes to start, and the nodes left out with the reason."""
    planned: list[PlannedNode] = []
    skipped: list[SkippedNode] = []
    for spec in ROBOT_NODES:
        if spec.name in options.skip:
            skipped.append(SkippedNode(spec, "left out with --skip"))
            continue
        if not exists(spec.module):
            skipped.append(SkippedNode(spec, f"module {spec.module} does not exist (yet)"))
            continue
        command = [sys.executable, "-m", spec.module, "--ros-args",
                   "-r", f"__node:={spec.name}", "-r", f"__ns:=/{options.robot_id}"]
        params_file = config_path(spec.params_file) if spec.params_file else None
        if params_file is not None:
            command += ["--params-file", str(params_file)]
        if spec.name in extra_params_files:
            command += ["--params-file", str(extra_params_files[spec.name])]
        for name, value in node_parameters(spec, options, camera_source, start,
                                           workdir).items():
            command += ["-p", f"{name}:={json.dumps(value)}"]
        planned.append(PlannedNode(spec, command))
    return planned, skipped


def write_test_pattern(path: Path, robot_id: str, frames: int = 40) -> None:
    """A short looping video (moving bar, frame number) for the camera node: VideoCapture
    reads it like any file, so the camera node runs unchanged."""
    import cv2
    import numpy as np

    width, height, fps = 320, 240, 10.0
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write the test pattern {path}")
    try:
        for index in range(frames):
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[:, :, 0] = np.linspace(40, 200, width, dtype=np.uint8)  # blue ramp
            x = int(index * width / frames)
            image[:, x:x + 16] = (255, 255, 255)
            cv2.putText(image, f"{robot_id} emulated", (10, 30), cv2.FONT_HERSHEY_SIMPLEX,
                        0.7, (0, 255, 255), 2)
            cv2.putText(image, f"frame {index:02d}", (10, height - 15),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
            writer.write(image)
    finally:
        writer.release()


def write_secret_params(path: Path, secret: str) -> None:
    """handoff's secret in a params file readable by this user only (not on a command line,
    where `ps` shows it)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"/**:\n  ros__parameters:\n    handoff_secret: {json.dumps(secret)}\n")


# -- processes ------------------------------------------------------------------------------------
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> Callable[[], None]:
    """preexec_fn: the child gets SIGTERM if this process dies without shutting it down (a
    SIGKILL), so no node outlives its bring-up. Children are started before any thread."""
    libc = ctypes.CDLL(None, use_errno=True)

    def set_death_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal


class NodeProcess:
    def __init__(self, planned: PlannedNode) -> None:
        self.spec = planned.spec
        self.command = planned.command
        self.process: subprocess.Popen[bytes] | None = None
        self.up_after: float | None = None
        self.interrupted = False

    def start(self, preexec: Callable[[], None]) -> None:
        # A process group of its own: a terminal's Ctrl-C reaches this tool only, which then
        # stops the nodes in order (base_driver last, while the controller still listens).
        self.process = subprocess.Popen(self.command, process_group=0, preexec_fn=preexec)

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def interrupt(self) -> None:
        """SIGINT once: the nodes' clean exit path (a second one could cut that path short)."""
        process = self.process
        if process is not None and not self.interrupted and process.poll() is None:
            self.interrupted = True
            process.send_signal(signal.SIGINT)

    def stop(self, timeout: float) -> str:
        """SIGINT, SIGKILL after `timeout`; how it ended."""
        process = self.process
        if process is None:
            return "not started"
        if process.poll() is not None and not self.interrupted:
            return f"had exited with code {process.returncode}"
        self.interrupt()
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return f"did not stop within {timeout:g} s: killed"
        return "stopped" if code == 0 else f"stopped with exit code {code}"


# -- the ROS side: readiness, lifecycle, the emulated scan, status --------------------------------
def _message_type(name: str) -> Any:
    package, _, type_name = name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), type_name)


@dataclass
class TopicSeen:
    count: int = 0
    first_at: float | None = None
    last: Any = None


@dataclass
class Status:
    """What the monitor saw; written on the executor thread, read on the main thread."""

    topics: dict[str, TopicSeen] = field(default_factory=dict)
    lock_state: int | None = None
    door_closed: bool | None = None
    estop: bool | None = None
    battery: float | None = None
    safety_limits: int | None = None
    odom: tuple[float, float, float] | None = None


def build_monitor(robot_id: str, nodes: Sequence[RobotNode], publish_scan: bool) -> Any:
    """The bring-up's own node (in this process): subscribes to each node's ready topic and to
    the robot's state, calls base_driver's lifecycle services, publishes the emulated scan."""
    from delivery_interfaces.msg import CompartmentState, SafetyState
    from lifecycle_msgs.srv import ChangeState, GetState
    from nav_msgs.msg import Odometry
    from rclpy.node import Node
    from sensor_msgs.msg import BatteryState, LaserScan
    from std_msgs.msg import Bool

    from delivery_robot.ros.qos import SENSOR_QOS, STATE_QOS

    class BringupMonitor(Node):
        def __init__(self) -> None:
            super().__init__("bringup_monitor", namespace=f"/{robot_id}")
            self.status = Status()
            self._lock = threading.Lock()
            for spec in nodes:
                if spec.ready_topic is None or spec.ready_type is None:
                    continue
                qos = STATE_QOS if spec.ready_qos == "state" else SENSOR_QOS
                self.status.topics[spec.ready_topic] = TopicSeen()
                self.create_subscription(_message_type(spec.ready_type), spec.ready_topic,
                                         self._seen_callback(spec.ready_topic), qos)
            self.create_subscription(CompartmentState, "compartment/state", self._compartment,
                                     STATE_QOS)
            self.create_subscription(Bool, "estop", self._estop, STATE_QOS)
            self.create_subscription(BatteryState, "battery_state", self._battery, SENSOR_QOS)
            if "safety/state" not in self.status.topics:
                self.create_subscription(SafetyState, "safety/state", self._safety, STATE_QOS)
            if "odom" not in self.status.topics:
                self.create_subscription(Odometry, "odom", self._odom, SENSOR_QOS)
            self.change_state = self.create_client(ChangeState, "base_driver/change_state")
            self.get_state = self.create_client(GetState, "base_driver/get_state")
            self.scans_published = 0
            if publish_scan:
                self._scan_publisher = self.create_publisher(LaserScan, "scan", SENSOR_QOS)
                self._scan = LaserScan(angle_min=-math.pi, angle_max=math.pi,
                                       angle_increment=2 * math.pi / 360, range_min=0.05,
                                       range_max=30.0, scan_time=0.1)
                self._scan.header.frame_id = "laser"
                self._scan.ranges = [math.inf] * 360  # REP-117: no return within range
                self.create_timer(0.1, self._publish_scan)

        def _seen_callback(self, topic: str) -> Callable[[Any], None]:
            def seen(message: Any) -> None:
                with self._lock:
                    record = self.status.topics[topic]
                    record.count += 1
                    record.last = message
                    if record.first_at is None:
                        record.first_at = time.monotonic()
                if topic == "odom":
                    self._odom(message)
                elif topic == "safety/state":
                    self._safety(message)
            return seen

        def _odom(self, message: Any) -> None:
            pose = message.pose.pose
            yaw = 2.0 * math.atan2(pose.orientation.z, pose.orientation.w)
            self.status.odom = (pose.position.x, pose.position.y, yaw)

        def _compartment(self, message: Any) -> None:
            self.status.lock_state = int(message.lock_state)
            self.status.door_closed = bool(message.door_closed)

        def _estop(self, message: Any) -> None:
            self.status.estop = bool(message.data)

        def _battery(self, message: Any) -> None:
            self.status.battery = float(message.percentage)

        def _safety(self, message: Any) -> None:
            self.status.safety_limits = int(message.active_limits)

        def _publish_scan(self) -> None:
            self._scan.header.stamp = self.get_clock().now().to_msg()
            self._scan_publisher.publish(self._scan)
            self.scans_published += 1

        def seen(self, topic: str) -> TopicSeen:
            with self._lock:
                record = self.status.topics.get(topic, TopicSeen())
                return TopicSeen(record.count, record.first_at, record.last)

    return BringupMonitor()


_LOCK_NAMES: Final = {0: "unknown", 1: "locked", 2: "unlocked", 3: "FAULT"}
_SAFETY_LIMITS: Final = {1: "stop zone", 2: "slowdown zone", 4: "approach", 8: "speed cap",
                         16: "zone cap", 32: "acceleration", 64: "hardware e-stop",
                         128: "remote e-stop", 256: "no command", 512: "no scan"}


def describe_safety(limits: int | None) -> str:
    if limits is None:
        return "unknown"
    names = [name for bit, name in _SAFETY_LIMITS.items() if limits & bit]
    return ", ".join(names) if names else "clear"


# -- the bring-up ---------------------------------------------------------------------------------
class StopRequested(Exception):
    """Ctrl-C / SIGTERM / a failed node while bringing up: go to the shutdown."""


class RobotBringup:
    """Starts, watches and stops one robot's nodes (and the emulator); see the module doc."""

    def __init__(self, options: BringupOptions) -> None:
        self.options = options
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.failed = False
        self.workdir = Path(tempfile.mkdtemp(prefix=f"delivery-robot-{options.robot_id}-"))
        self.emulator: Any = None
        self.processes: list[NodeProcess] = []
        self.skipped: list[SkippedNode] = []
        self.monitor: Any = None
        self.executor: Any = None
        self.spinner: threading.Thread | None = None
        self.base_active = False
        self.final: dict[str, Any] = {}
        self.shutdown_log: list[str] = []
        self.shutting_down = False
        self.faults_off = threading.Event()  # ends the unplug faults (plugged back in)
        self.unplug_thread: threading.Thread | None = None
        self.unplugs = 0

    # -- output ---------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[delivery-robot] {text}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def request_stop(self, reason: str, failed: bool = False) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
        self.failed = self.failed or failed
        self.stop_event.set()

    # -- start ----------------------------------------------------------------------------------
    def prepare(self) -> list[PlannedNode]:
        options = self.options
        if options.emulate:
            options = self._with_port(str(self.workdir / "ttyMCU"))
        camera = options.camera
        if camera == TEST_PATTERN:
            camera = str(self.workdir / "test_pattern.avi")
            write_test_pattern(Path(camera), options.robot_id)
        secret = os.environ.get(SECRET_ENV, "")
        if not secret:
            secret = secrets.token_hex(32)
            self.say(f"handoff: ${SECRET_ENV} is not set: a random rehearsal key (QR codes and "
                     "PINs of a coordinator will not verify on this robot)")
        secret_file = self.workdir / "handoff_secret.yaml"
        write_secret_params(secret_file, secret)
        start = start_pose(options.world, options.start_waypoint)
        self.say(f"standing at {start.waypoint} of {options.world} "
                 f"({start.x:g}, {start.y:g}, yaw {start.yaw:g})")
        planned, self.skipped = plan_nodes(options, {"handoff": secret_file}, camera, start,
                                           self.workdir)
        self.options = options
        return planned

    def _with_port(self, port: str) -> BringupOptions:
        return dataclasses.replace(self.options, serial_port=port)

    def start_processes(self, planned: list[PlannedNode]) -> None:
        preexec = _die_with_parent()
        for entry in planned:
            process = NodeProcess(entry)
            process.start(preexec)
            self.processes.append(process)

    def start_emulator(self) -> None:
        from delivery_robot.firmware_emulator import FirmwareEmulator

        faults = self.options.faults
        self.emulator = FirmwareEmulator(
            self.options.serial_port, seed=faults.seed, corrupt_rate=faults.corrupt,
            drop_rate=faults.drop, stuck_lock=faults.stuck_lock)
        self.emulator.start()
        self.say(f"firmware emulator: {self.options.serial_port} -> {self.emulator.port_path} "
                 f"(faults: {faults.describe()})")
        if faults.unplug_every:
            self.unplug_thread = threading.Thread(target=self._unplug_loop, name="unplug-faults",
                                                  daemon=True)
            self.unplug_thread.start()

    def _unplug_loop(self) -> None:
        period = self.options.faults.unplug_every
        while not self.faults_off.wait(period - UNPLUG_S):
            self.emulator.unplug()
            self.unplugs += 1
            self.say(f"fault: controller cable unplugged ({self.unplugs})")
            self.faults_off.wait(UNPLUG_S)
            self.emulator.replug()
            self.say("fault: controller cable plugged back in")

    def start_ros(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        # Our own SIGINT/SIGTERM handlers: rclpy's would shut the context down before the
        # base driver could be deactivated through it.
        rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
        nodes = [process.spec for process in self.processes]
        self.monitor = build_monitor(self.options.robot_id, nodes, self.options.scan == "clear")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.monitor)
        self.spinner = threading.Thread(target=self._spin, name="bringup-executor", daemon=True)
        self.spinner.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException):
            self.executor.spin()

    def start_console(self) -> None:
        """The emulator's console on this terminal (estop, door, unplug, ...)."""
        if not (self.options.emulate and sys.stdin.isatty()):
            return
        from delivery_robot.firmware_emulator import console_command

        def read() -> None:
            for line in sys.stdin:
                if self.stop_event.is_set():
                    return
                if not console_command(self.emulator, line):
                    self.request_stop("quit typed on the console")
                    return

        threading.Thread(target=read, name="emulator-console", daemon=True).start()
        self.say("emulator console: type 'help' for commands (estop on, door open, unplug, ...)")

    # -- waiting --------------------------------------------------------------------------------
    def _pause(self, seconds: float) -> None:
        """Wait, but wake for a stop; raise StopRequested then, or when a node died."""
        if self.stop_event.wait(seconds):
            raise StopRequested
        self.check_processes()
        if self.stop_event.is_set():
            raise StopRequested

    def check_processes(self) -> None:
        if self.shutting_down:
            return  # the shutdown reports how each one ended
        for process in self.processes:
            code = process.exit_code
            if code is not None and not self.stop_event.is_set():
                self.say(f"[failed] {process.spec.name} exited with code {code} (its log above "
                         "says why)")
                self.request_stop(f"{process.spec.name} exited with code {code}", failed=True)

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            self._pause(0.05)
        return True

    def call_lifecycle(self, transition: str, timeout: float = 10.0) -> tuple[bool, str]:
        """base_driver's ChangeState by label ("configure", ...): (success, what happened)."""
        from lifecycle_msgs.srv import ChangeState

        client = self.monitor.change_state
        if not self.wait_until(client.service_is_ready, timeout):
            return False, f"base_driver/change_state did not appear within {timeout:g} s"
        request = ChangeState.Request()
        request.transition.label = transition
        future = client.call_async(request)
        if not self.wait_until(future.done, timeout):
            return False, f"no answer to {transition} within {timeout:g} s"
        if future.result() is None:
            return False, f"{transition} call failed: {future.exception()!r}"
        if not future.result().success:
            return False, f"base_driver refused to {transition} (its log above says why)"
        return True, "ok"

    def bring_up(self) -> None:
        options = self.options
        self.say(f"bringing up {options.robot_id}: "
                 f"{', '.join(p.spec.name for p in self.processes)}")
        for skipped in self.skipped:
            self.say(f"[skipped] {skipped.spec.name}: {skipped.reason}")
        if options.scan == "clear":
            self.say("no lidar on the emulated robot: publishing an empty scan (no obstacles) "
                     "so the safety monitor lets commands through (--scan none: it holds the "
                     "robot at zero)")
        elif options.emulate:
            self.say("--scan none: the safety monitor holds the robot at zero (no scan)")

        ok, detail = self.call_lifecycle("configure", options.ready_timeout)
        if not ok:
            self.say(f"[failed] base_driver configure: {detail}")
            self.request_stop("base_driver did not configure", failed=True)
            raise StopRequested
        ok, detail = self.call_lifecycle("activate")
        if not ok:
            self.say(f"[failed] base_driver activate: {detail}")
            self.request_stop("base_driver did not activate", failed=True)
            raise StopRequested
        self.base_active = True
        self.say(f"base_driver configured and active ({self.elapsed():.1f} s)")

        pending = list(self.processes)
        deadline = self.started + options.ready_timeout
        while pending:
            names = self.monitor.get_node_names_and_namespaces()
            in_graph = {name for name, namespace in names
                        if namespace.rstrip("/") == f"/{options.robot_id}"}
            for process in list(pending):
                spec = process.spec
                topic = spec.ready_topic
                if spec.name not in in_graph or (
                        topic is not None and self.monitor.seen(topic).count == 0):
                    continue
                process.up_after = self.elapsed()
                what = f"{topic} flowing" if topic else "in the ROS graph"
                self.say(f"[up] {spec.name:<17} {what} ({process.up_after:.1f} s)")
                pending.remove(process)
            if not pending:
                break
            if time.monotonic() > deadline:
                for process in pending:
                    topic = process.spec.ready_topic
                    self.say(f"[not up] {process.spec.name}: "
                             + (f"nothing on {topic}" if topic else "not in the ROS graph")
                             + f" after {options.ready_timeout:g} s")
                self.request_stop("not every node came up", failed=True)
                raise StopRequested
            self._pause(0.1)

    def run(self) -> None:
        options = self.options
        ended = ("Ctrl-C stops" if options.duration is None
                 else f"stopping in {options.duration:g} s")
        self.say(f"ready: {options.robot_id} up in {self.elapsed():.1f} s "
                 f"({len(self.processes)} nodes); {ended} (wheels stopped, motors off, "
                 "compartment locked)")
        self.print_status()
        until = math.inf if options.duration is None else time.monotonic() + options.duration
        next_status = time.monotonic() + (options.status_period or math.inf)
        while True:
            now = time.monotonic()
            if now >= until:
                self.request_stop(f"--duration {options.duration:g} s elapsed")
                raise StopRequested
            if now >= next_status:
                self.print_status()
                next_status = now + options.status_period
            self._pause(min(0.2, max(0.0, until - now)))

    def print_status(self) -> None:
        status = self.monitor.status
        odom = self.monitor.seen("odom")
        parts = []
        if status.odom is not None:
            x, y, yaw = status.odom
            parts.append(f"odom x={x:.2f} y={y:.2f} yaw={math.degrees(yaw):.0f} deg "
                         f"({odom.count} msgs)")
        parts.append(f"battery {status.battery * 100:.0f} %" if status.battery is not None
                     else "battery ?")
        lock = _LOCK_NAMES.get(status.lock_state or 0, "?")
        door = {None: "?", True: "closed", False: "OPEN"}[status.door_closed]
        parts.append(f"compartment {lock}, door {door}")
        parts.append("E-STOP" if status.estop else "e-stop released")
        parts.append(f"safety: {describe_safety(status.safety_limits)}")
        self.say("status: " + " | ".join(parts))

    # -- stop -----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """In order: base deactivated (stop, disable, lock), the other nodes, base_driver, the
        emulator; each step bounded, so a wedged node cannot hold the robot unsecured."""
        log = self.shutdown_log
        self.shutting_down = True
        if self.stop_reason:
            self.say(f"shutting down: {self.stop_reason}")
        self.faults_off.set()  # the cable stays in: the exit path must reach the controller
        if self.unplug_thread is not None:
            self.unplug_thread.join(UNPLUG_S + 5.0)
        base = [p for p in self.processes if p.spec.name == "base_driver"]
        others = [p for p in self.processes if p.spec.name != "base_driver"]
        if self.base_active and any(p.exit_code is not None for p in base):
            entry = "base_driver had exited: not deactivated"
            log.append(entry)
            self.say(entry)
        elif self.base_active and self.monitor is not None:
            # (A second Ctrl-C sets the event again and skips this wait.)
            self.stop_event.clear()  # let the lifecycle call wait (the stop is under way)
            try:
                ok, detail = self.call_lifecycle("deactivate", 5.0)
            except StopRequested:
                ok, detail = False, "interrupted"
            self.stop_event.set()
            entry = ("base_driver deactivated: wheels stopped, motors disabled, compartment "
                     "locked unless its door is open" if ok
                     else f"base_driver deactivate failed ({detail}); its exit path secures it")
            log.append(entry)
            self.say(entry)
        for process in reversed(others):  # all at once: they stop in parallel
            process.interrupt()
        for process in reversed(others):
            entry = f"{process.spec.name}: {process.stop(10.0)}"
            log.append(entry)
            self.say(entry)
        for process in base:
            entry = f"base_driver: {process.stop(10.0)}"
            log.append(entry)
            self.say(entry)
        if self.emulator is not None:
            snapshot = self.emulator.snapshot()
            self.final = {
                "source": "emulator",
                "lock": snapshot.lock_status.name.lower(),
                "door_open": snapshot.door_open,
                "motors_enabled": snapshot.motors_enabled,
                "moving": snapshot.moving,
                "wheel_velocities": list(snapshot.wheel_velocities),
            }
            try:
                self.emulator.stop()
            except RuntimeError as error:
                self.say(f"emulator: {error}: {error.__cause__!r}")
                self.failed = True
            secure = (snapshot.lock_status.name == "LOCKED" or snapshot.door_open) and not (
                snapshot.motors_enabled or snapshot.moving)
            self.say(f"emulated controller at exit: compartment {self.final['lock']}"
                     f"{', door OPEN' if snapshot.door_open else ', door closed'}, motors "
                     f"{'ENABLED' if snapshot.motors_enabled else 'disabled'}, wheels "
                     f"{'MOVING' if snapshot.moving else 'stopped'}"
                     f"{'' if secure else '  <-- NOT SECURE'}")
            self.failed = self.failed or not secure
        elif self.monitor is not None:
            status = self.monitor.status
            self.final = {"source": "base_driver's last compartment/state",
                          "lock": _LOCK_NAMES.get(status.lock_state or 0, "unknown"),
                          "door_open": None if status.door_closed is None
                          else not status.door_closed}
            self.say(f"controller's last report: compartment {self.final['lock']}")
        self._stop_ros()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_ros(self) -> None:
        import rclpy

        if self.executor is not None:
            self.executor.shutdown(timeout_sec=2.0)
        if self.spinner is not None:
            self.spinner.join(5.0)
        if self.monitor is not None:
            self.monitor.destroy_node()
        rclpy.try_shutdown()

    def report(self) -> dict[str, Any]:
        nodes: dict[str, Any] = {}
        for process in self.processes:
            nodes[process.spec.name] = {
                "state": "up" if process.up_after is not None else "not up",
                "up_after_s": None if process.up_after is None else round(process.up_after, 2),
                "exit_code": process.exit_code,
            }
        for skipped in self.skipped:
            nodes[skipped.spec.name] = {"state": "skipped", "reason": skipped.reason}
        return {
            "robot_id": self.options.robot_id,
            "emulated": self.options.emulate,
            "serial_port": self.options.serial_port,
            "ros_domain_id": os.environ.get("ROS_DOMAIN_ID"),
            "nodes": nodes,
            "scans_published": getattr(self.monitor, "scans_published", 0),
            "unplugs": self.unplugs,
            "stop_reason": self.stop_reason,
            "shutdown": self.shutdown_log,
            "final": self.final,
            "ok": not self.failed,
        }


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.emulate:
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy
        os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    bringup = RobotBringup(options)
    dds = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "default")
    base = "emulated controller" if options.emulate else f"controller on {options.serial_port}"
    bringup.say(f"{options.robot_id} ({base}), ROS_DOMAIN_ID="
                f"{os.environ.get('ROS_DOMAIN_ID', '0')}, DDS discovery {dds}")
    try:
        planned = bringup.prepare()
    except (ValueError, RuntimeError, OSError) as error:
        print(f"delivery-robot: cannot start: {error}", file=sys.stderr)
        shutil.rmtree(bringup.workdir, ignore_errors=True)
        return 2

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        bringup.request_stop(f"{signal.Signals(signum).name} received")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bringup.start_processes(planned)  # first: no thread exists yet (preexec_fn)
        if options.emulate:
            bringup.start_emulator()
        bringup.start_ros()
        bringup.start_console()
        bringup.bring_up()
        bringup.run()
    except StopRequested:
        pass
    finally:
        bringup.stop_event.set()
        try:
            bringup.shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    result = bringup.report()
    if options.report is not None:
        options.report.write_text(json.dumps(result, indent=2) + "\n")
    bringup.say("done" if result["ok"] else "done, with failures (see above)")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

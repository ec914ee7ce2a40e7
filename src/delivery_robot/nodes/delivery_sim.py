"""delivery-sim: a simulated shop day of the whole stack, headless, faster than real time.

`make sim` runs it. Processes (all real rclpy nodes, DDS on loopback):
- this one: the fleet simulator (`fleet_sim`: robots, lidar, compartments, /clock), the
  simulated people (`sim_people`: shops ordering on a seeded Poisson stream with lunch and
  dinner peaks, shop owners loading, recipients showing a QR or entering a PIN, some not
  coming or mistyping) and an observer for the KPIs;
- the coordinator with the shop API and tablet (`coordinator`, its own process as on a server);
- one process per robot with its navigation, safety_monitor, handoff and mission_executor
  (`robot_stack`), every node on sim time.
The robots really drive: navigation plans on the route graph and tracks the path, the safety
monitor gates every command on the simulated lidar, the simulator moves the wheels.

Speed: the clock runs as fast as the robots' control loops keep up (fleet_sim's lockstep: it
advances a step only when every robot's safety monitor has answered the last one), or at real
time with --realtime, so a person can watch the tablet's live map. Progress lines show the sim
time, orders and the speed-up; the run ends with a KPI table and a JSON report (see
delivery_robot.sim_report for the definitions). Ctrl-C stops every process and still prints
the (partial) report. The same seed gives the same orders and people; see the README for how
close two runs of one seed come.

Defaults come from config/delivery_sim.yaml (the scenario); flags override them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import yaml

WORLDS = ("town", "apartment")
MAX_ROBOTS = 10
ROBOT_NODES = {  # name -> (module, class, params file)
    "navigation": ("delivery_robot.nodes.navigation", "NavigationNode", "navigation.yaml"),
    "safety_monitor": ("delivery_robot.nodes.safety_monitor", "SafetyMonitorNode",
                       "safety.yaml"),
    "handoff": ("delivery_robot.nodes.handoff", "HandoffNode", "handoff.yaml"),
    "mission_executor": ("delivery_robot.nodes.mission_executor", "MissionExecutorNode",
                         "mission_executor.yaml"),
}
MODE_NAMES = ["idle", "to_pickup", "awaiting_load", "to_dropoff", "awaiting_recipient",
              "returning", "charging", "docking", "estop", "fault"]
STATE_NAMES = ["requested", "assigned", "to_pickup", "awaiting_load", "in_transit",
               "awaiting_recipient", "delivered", "cancelled", "failed", "returning"]
# SafetyState.LIMIT_* bits: a stop for an obstacle or an e-stop; a stale scan (watchdog).
STOP_BITS = 1 | 64 | 128
WATCHDOG_BITS = 512
DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "delivery_robot_ros_domains"
STARTUP_TIMEOUT_S = 120.0


class UsageError(Exception):
    """A bad flag or scenario value: printed as one line, exit code 2."""


# ---- arguments ----------------------------------------------------------------------------


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str | float | int) -> float:
    """Seconds of "8h", "30m", "90s", "1h30m" or a plain number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _DURATION.match(str(text).strip().lower())
        if not match or not any(match.groups()):
            raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 8h, 1h30m)")
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        value = hours * 3600.0 + minutes * 60.0 + seconds
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a duration must be >= 0, got {text!r}")
    return value


def hms(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"


def config_file(name: str) -> Path:
    """An installed share file, or the source tree's copy (a file added since the build)."""
    from delivery_robot.ros.paths import share_file

    try:
        return share_file(f"config/{name}")
    except (FileNotFoundError, LookupError):
        source = Path(__file__).resolve().parents[3] / "config" / name
        if source.exists():
            return source
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="delivery-sim", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: delivery-sim --robots 5 --duration 8h --start 10:00 --report day.json")
    add = parser.add_argument
    add("--world", choices=WORLDS, help="world (default: the scenario's, town)")
    add("--robots", type=int, help=f"number of robots, 1..{MAX_ROBOTS} (default 3)")
    add("--duration", help="simulated time, e.g. 30m, 8h, 1h30m (default 30m)")
    add("--seed", type=int, help="seed of the orders and the people (default 1)")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--realtime", action="store_true",
                       help="run at real time (to watch the tablet's live map)")
    speed.add_argument("--speed", type=float, metavar="FACTOR",
                       help="at most FACTOR x real time (default: as fast as possible)")
    add("--port", type=int, help="shop API and tablet port (0 = off; default 8080)")
    add("--report", type=Path, metavar="FILE", help="also write the JSON report here")
    add("--start", metavar="HH:MM", help="clock time at the start (default 11:30)")
    add("--last-call", help="shops stop ordering this long before the end (default 10m)")
    add("--orders-per-hour", type=float, metavar="N",
        help="base orders per shop and hour (peaks add to it; default 3.6)")
    add("--no-show-rate", type=float, metavar="P", help="share of recipients who never come")
    add("--wrong-pin-rate", type=float, metavar="P",
        help="share of recipients who first enter wrong PINs")
    add("--ghost-robots", action="store_true",
        help="robots pass through each other unseen: a run without robot-robot traffic, to "
        "tell what traffic costs (compare with the same seed without it)")
    add("--scenario", type=Path, metavar="FILE",
        help="scenario YAML (default: the packaged config/delivery_sim.yaml)")
    add("--workdir", type=Path, metavar="DIR",
        help="where the order database, logs and report go (default: a new temp dir)")
    add("--set", action="append", default=[], metavar="KEY=VALUE",
        help="override one value of the scenario file, e.g. sim.step_s=0.05 or "
        "nodes.navigation.control_rate_hz=20 (repeatable; VALUE is YAML)")
    add("--verbose", action="store_true", help="print every order transition")
    add("--progress", type=float, default=3.0, metavar="S",
        help="wall seconds between progress lines (default 3)")
    add("--nodes", help=argparse.SUPPRESS)  # per-robot nodes, comma-separated (debugging)
    add("--profile", action="store_true", help=argparse.SUPPRESS)  # cProfile robots: workdir
    return parser


@dataclass
class Scenario:
    world: str
    robots: int
    duration_s: float
    last_call_s: float
    seed: int
    day_start: str
    promise_s: float
    port: int
    real_time_factor: float
    sim: dict[str, Any] = field(default_factory=dict)
    people: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    robot_nodes: tuple[str, ...] = tuple(ROBOT_NODES)

    @property
    def orders_until_s(self) -> float:
        return max(0.0, self.duration_s - self.last_call_s)


def make_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario file with the flags on top; raises UsageError for anything invalid."""
    from delivery_robot.order_generator import parse_clock

    path = args.scenario or config_file("delivery_sim.yaml")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read the scenario {path}: {error}") from None
    for item in args.set:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".", 1)
        if not sep or len(parts) < 2 or parts[0] not in ("scenario", "sim", "people", "nodes"):
            raise UsageError(f"--set {item!r}: use SECTION.KEY=VALUE with SECTION one of "
                             "scenario, sim, people, nodes (nodes.<node>.<parameter>)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UsageError(f"--set {item!r}: {error}") from None
        section = data.setdefault(parts[0], {}) or {}
        data[parts[0]] = section
        name = parts[1]
        if parts[0] == "nodes":
            node, dot, name = name.partition(".")
            if not dot or not name:
                raise UsageError(f"--set {item!r}: use nodes.<node>.<parameter>=VALUE")
            section = section.setdefault(node, {}) or {}
            data["nodes"][node] = section
        section[name] = value
    base = data.get("scenario", {}) or {}

    def pick(flag: Any, key: str, default: Any) -> Any:
        return flag if flag is not None else base.get(key, default)

    try:
        scenario = Scenario(
            world=str(pick(args.world, "world", "town")),
            robots=int(pick(args.robots, "robots", 3)),
            duration_s=parse_duration(pick(args.duration, "duration", "30m")),
            last_call_s=parse_duration(pick(args.last_call, "last_call", "10m")),
            seed=int(pick(args.seed, "seed", 1)),
            day_start=str(pick(args.start, "day_start", "11:30")),
            promise_s=parse_duration(base.get("promise", "45m")),
            port=int(pick(args.port, "port", 8080)),
            real_time_factor=1.0 if args.realtime else float(args.speed or 0.0),
            sim=dict(data.get("sim", {}) or {}),
            people=dict(data.get("people", {}) or {}),
            nodes={k: dict(v or {}) for k, v in (data.get("nodes", {}) or {}).items()},
        )
        parse_clock(scenario.day_start)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if scenario.world not in WORLDS:
        raise UsageError(f"--world must be one of {', '.join(WORLDS)}, got {scenario.world!r}")
    if not 1 <= scenario.robots <= MAX_ROBOTS:
        raise UsageError(f"--robots must be between 1 and {MAX_ROBOTS}")
    if not scenario.duration_s > 0:
        raise UsageError("--duration must be longer than 0 s")
    if args.speed is not None and not args.speed > 0:
        raise UsageError("--speed must be > 0")
    if not 0 <= scenario.port <= 65535:
        raise UsageError("--port must be 0..65535")
    if args.progress <= 0:
        raise UsageError("--progress must be > 0")
    if args.ghost_robots:
        scenario.sim["ghost_robots"] = True
    for flag, key in ((args.orders_per_hour, "orders_per_shop_hour"),
                      (args.no_show_rate, "people.no_show_rate"),
                      (args.wrong_pin_rate, "people.wrong_pin_rate")):
        if flag is not None:
            scenario.people[key] = float(flag)
    if not scenario.people.get("orders_per_shop_hour", 1.0) >= 0:
        raise UsageError("--orders-per-hour must be >= 0")
    for key in ("people.no_show_rate", "people.wrong_pin_rate"):
        if not 0.0 <= float(scenario.people.get(key, 0.0)) <= 1.0:
            raise UsageError(f"--{key.split('.')[1].replace('_', '-')} must be within 0..1")
    if args.nodes:
        names = tuple(n.strip() for n in args.nodes.split(",") if n.strip())
        unknown = sorted(set(names) - set(ROBOT_NODES))
        if unknown:
            raise UsageError(f"--nodes: unknown {unknown}; known: {sorted(ROBOT_NODES)}")
        scenario.robot_nodes = names
    return scenario


# ---- DDS domain -------------------------------------------------------------------------------


def claim_domain_id(wanted: str | None) -> tuple[int, IO[str] | None]:
    """A ROS domain id no other run or test on this machine holds (a file lock per id, the
    same as the test harness's). `wanted` (ROS_DOMAIN_ID) is used when it is free."""
    DOMAIN_LOCK_DIR.mkdir(exist_ok=True)
    candidates = list(range(1, 101))
    if wanted and wanted.isdigit() and 0 <= int(wanted) <= 232:
        candidates.insert(0, int(wanted))
    else:
        start = os.getpid() % 100
        candidates = candidates[start:] + candidates[:start]
    for domain in candidates:
        handle = open(DOMAIN_LOCK_DIR / f"{domain}.lock", "w")  # noqa: SIM115 - held to the end
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return domain, handle
    return int(wanted) if wanted and wanted.isdigit() else 1, None


# ---- child processes --------------------------------------------------------------------------


try:  # loaded here, before any thread exists: the forked child only calls into it
    _LIBC: Any = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """In the child: SIGTERM when delivery-sim dies, so no robot outlives the run."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])


def start_child(name: str, command: list[str], logs: Path) -> Child:
    log = logs / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=_die_with_parent)  # noqa: PLW1509
    return Child(name, process, log)


def stop_children(children: list[Child], timeout_s: float = 10.0) -> None:
    """SIGINT (a node's clean shutdown), then SIGTERM, then SIGKILL, each with a deadline."""
    for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 3.0),
                        (signal.SIGKILL, 3.0)):
        running = [c for c in children if c.alive()]
        if not running:
            return
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(sig)
        deadline = time.monotonic() + wait_s
        for child in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.0, deadline - time.monotonic()))


def ros_command(module: str, name: str, params_file: Path, params: dict[str, Any],
                log_level: str = "info") -> list[str]:
    command = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}",
               "--params-file", str(params_file), "--log-level", log_level]
    for key, value in params.items():
        command += ["-p", f"{key}:={json.dumps(value)}"]
    return command


# ---- the observer -----------------------------------------------------------------------------


class Observer:
    """Counts safety stops and keeps each robot's mode, read by polling from delivery-sim's
    main thread (fleet_sim.TopicPoller): safety states come at up to the control rate, and
    through the executor each would cost a wait-set round."""

    def __init__(self, context: Any, robot_ids: list[str]) -> None:
        from delivery_interfaces.msg import RobotState, SafetyState
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        from delivery_robot.nodes.fleet_sim import TopicPoller
        from delivery_robot.ros.qos import STATE_QOS

        # Every change counts (a stop may come and go between two polls): a deep queue.
        changes = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        self.robot_ids = robot_ids
        topics = [(SafetyState, f"/{r}/safety/state", changes) for r in robot_ids]
        topics += [(RobotState, f"/{r}/robot_state", STATE_QOS) for r in robot_ids]
        self.poller = TopicPoller(context, "sim_observer", topics)
        self.node = self.poller.node
        self.limits: dict[str, int | None] = dict.fromkeys(robot_ids)  # None: none heard yet
        self.modes: dict[str, int] = {}
        self.faults: dict[str, tuple[str, ...]] = {}
        self.safety_stops = 0
        self.watchdog_stops = 0

    def poll(self, timeout_s: float = 0.0) -> None:
        n = len(self.robot_ids)
        for index, msg in self.poller.read(timeout_s):
            if index < n:
                self._on_safety(self.robot_ids[index], msg)
            else:
                robot = self.robot_ids[index - n]
                self.modes[robot] = int(msg.mode)
                self.faults[robot] = tuple(msg.faults)

    def _on_safety(self, robot: str, msg: Any) -> None:
        before, now = self.limits[robot], int(msg.active_limits)
        self.limits[robot] = now
        if before is None:
            return  # the first state (before any scan: a stale scan) starts no stop
        self.safety_stops += bool(now & STOP_BITS and not before & STOP_BITS)
        self.watchdog_stops += bool(now & WATCHDOG_BITS and not before & WATCHDOG_BITS)

    def mode_line(self) -> str:
        names = {r: MODE_NAMES[m] if m < len(MODE_NAMES) else str(m)
                 for r, m in sorted(self.modes.items())}
        return ", ".join(f"{robot} {mode}" for robot, mode in names.items()) or "no robot_state yet"


# ---- the run ----------------------------------------------------------------------------------


class Run:
    def __init__(self, scenario: Scenario, args: argparse.Namespace) -> None:
        self.scenario = scenario
        self.args = args
        self.robot_ids = [f"robot{i}" for i in range(1, scenario.robots + 1)]
        self.children: list[Child] = []
        self.interrupted = False
        self.failure = ""
        self.wall_started = 0.0
        self.wall_ended = 0.0
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"delivery-sim-{stamp}-"))
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # Every node's files of its own (mission journals, handoff stores, ROS logs) go under
        # the run's work dir: a new run must never resume what an earlier one left behind.
        os.environ["ROS_HOME"] = str(self.workdir / "ros_home")
        self.secret = secrets.token_hex(32)  # signs QR tokens: coordinator and handoff nodes
        self.start_waypoints: dict[str, str] = {}
        self.cpu_at_start: dict[str, float] = {}
        self.dropped: list[tuple[Any, Any]] = []  # QoS event handlers out of the wait set
        self.sim: Any = None
        self.people: Any = None
        self.observer: Observer | None = None
        self.executor: Any = None
        self.spinner: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def route_file(self) -> Path:
        return config_file(f"worlds/{self.scenario.world}.yaml")

    def spawns(self) -> list[tuple[float, float, float]]:
        """Start poses (chargers, then parking spots at the depot) and, where a robot starts
        on a waypoint, its name (the mission executor's start_waypoint)."""
        from delivery_robot.fleet_simulation import SimWorld, spawn_poses
        from delivery_robot.route_graph import load_route_graph, resolve_sdf_path

        path = self.route_file()
        route = load_route_graph(path, validate=False)
        route.sdf_path = resolve_sdf_path(path, route.sdf)
        poses = spawn_poses(route, SimWorld.from_route_graph(route), len(self.robot_ids))
        for robot, (x, y, _) in zip(self.robot_ids, poses, strict=True):
            nearest = route.nearest_waypoint(x, y)
            if math.hypot(nearest.x - x, nearest.y - y) < 0.05:
                self.start_waypoints[robot] = nearest.name
        return poses

    def robot_spec(self, robot: str, pose: tuple[float, float, float]) -> dict[str, Any]:
        s = self.scenario
        route = str(self.route_file())
        common: dict[str, dict[str, Any]] = {
            "navigation": {"route_graph_file": route, "odom_to_map": list(pose)},
            "safety_monitor": {},
            "handoff": {"handoff_secret": self.secret,
                        "state_path": str(self.workdir / f"{robot}_handoff.db")},
            "mission_executor": {
                "robot_id": robot, "odom_to_map": list(pose),
                "start_waypoint": self.start_waypoints.get(robot, ""),
                "journal_path": str(self.workdir / f"{robot}_missions.db")},
        }
        nodes = []
        for name in s.robot_nodes:
            module, cls, params = ROBOT_NODES[name]
            parameters = {"use_sim_time": True, **common[name], **s.nodes.get(name, {})}
            nodes.append({"name": name, "module": module, "class": cls,
                          "params_file": str(config_file(params)), "parameters": parameters})
        return {"namespace": robot, "nodes": nodes}

    def start_coordinator(self) -> None:
        s = self.scenario
        coordinator = {
            "use_sim_time": True, "robot_ids": self.robot_ids,
            "route_graph_file": str(self.route_file()),
            "database_path": str(self.workdir / "orders.db"), "discover_robots": False,
            "http_port": s.port, "allow_demo_tokens": True, "handoff_secret": self.secret,
            **s.nodes.get("coordinator", {})}
        self.children.append(start_child("coordinator", ros_command(
            "delivery_robot.nodes.coordinator", "coordinator", config_file("coordinator.yaml"),
            coordinator), self.logs))

    def start_robots(self, spawns: list[tuple[float, float, float]]) -> None:
        for robot, pose in zip(self.robot_ids, spawns, strict=True):
            spec = self.workdir / f"{robot}_stack.json"
            spec.write_text(json.dumps(self.robot_spec(robot, pose), indent=2))
            profile = ["--profile", str(self.workdir / f"{robot}.prof")] if self.args.profile \
                else []
            self.children.append(start_child(robot, [
                sys.executable, "-m", "delivery_robot.nodes.robot_stack", "--spec", str(spec),
                *profile, "--ros-args", "--log-level", "warn"], self.logs))

    def start_local_nodes(self, spawns: list[tuple[float, float, float]]) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter

        from delivery_robot.nodes.fleet_sim import FleetSimNode
        from delivery_robot.nodes.robot_stack import node_parameters
        from delivery_robot.nodes.sim_people import SimPeopleNode

        s = self.scenario
        sim_values = node_parameters(config_file("fleet_sim.yaml"), "fleet_sim", "")
        sim_values.update({
            "route_graph_file": str(self.route_file()), "robot_ids": self.robot_ids,
            "start_poses": [c for pose in spawns for c in pose], "seed": s.seed,
            "real_time_factor": s.real_time_factor, "max_sim_time_s": s.duration_s,
            "start_paused": True, **s.sim})
        sim_values.pop("start_waypoints", None)
        # No parameter services: each costs the executor a wait-set entry on every spin.
        quiet = {"start_parameter_services": False}
        self.sim = FleetSimNode(parameter_overrides=[Parameter(k, value=v)
                                                     for k, v in sim_values.items()], **quiet)
        people_values = {
            "use_sim_time": True, "route_graph_file": str(self.route_file()), "seed": s.seed,
            "orders_until_s": s.orders_until_s, "day_start": s.day_start, **s.people}
        self.people = SimPeopleNode(parameter_overrides=[Parameter(k, value=v)
                                                         for k, v in people_values.items()],
                                    **quiet)
        if self.sim.lockstep:
            self.people.hold, self.people.release = self.sim.hold, self.sim.release
        self.sim.drive_clock(self.people)  # no /clock subscription needed in this process
        if not self.args.verbose:  # their info lines (every lock command) would drown the output
            from rclpy.logging import LoggingSeverity

            for node in (self.sim, self.people):
                node.get_logger().set_level(LoggingSeverity.WARN)
        if self.args.verbose:
            self.people.on_transition = self._print_transition
        self.observer = Observer(self.sim.context, self.robot_ids)
        self.executor = SingleThreadedExecutor()
        for node in (self.sim, self.people):
            self.executor.add_node(node)
        self.spinner = threading.Thread(target=self._spin, name="executor", daemon=True)
        self.spinner.start()

    def api_up(self, timeout_s: float = 10.0) -> bool:
        """Whether the coordinator's shop API answers on the scenario's port."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.scenario.port}/openapi.json"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1.0) as answer:  # noqa: S310 - local
                    return bool(answer.status == 200)
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        return False

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        profiler = None
        if self.args.profile:
            import cProfile

            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
        try:
            with contextlib.suppress(ExternalShutdownException):
                self.executor.spin()
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(self.workdir / "executor.prof")

    def _print_transition(self, status: Any) -> None:
        at = self.people.get_clock().now().nanoseconds * 1e-9
        name = STATE_NAMES[status.state] if status.state < len(STATE_NAMES) else status.state
        robot = f" {status.robot_id}" if status.robot_id else ""
        reason = f" ({status.reason})" if status.reason else ""
        print(f"    [{hms(at)}] {status.order_id} {name}{robot}{reason}", flush=True)

    def wait_until_up(self, coordinator: bool) -> None:
        """The robots up (each robot's mission action server, its safety monitor output and a
        robot_state that knows the battery) and, with `coordinator`, the coordinator's
        services. Raises RuntimeError with what is missing.

        The robots come first: the simulator republishes battery and compartment states while
        paused, and a coordinator that heard a robot before it knew its battery would send it
        to charge."""
        assert self.observer is not None
        node = self.observer.node
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        executor = "mission_executor" in self.scenario.robot_nodes
        while True:
            missing = []
            if coordinator and not self.people.submit_client.service_is_ready():
                missing.append("coordinator (/fleet/submit_order)")
            services = {name for name, _ in node.get_service_names_and_types()}
            for robot in self.robot_ids:
                if executor and f"/{robot}/execute_mission/_action/send_goal" not in services:
                    missing.append(f"{robot} (execute_mission)")
                elif node.count_publishers(f"/{robot}/cmd_vel_safe") < 1:
                    missing.append(f"{robot} (cmd_vel_safe)")
                elif executor and "battery_unknown" in self.observer.faults.get(
                        robot, ("battery_unknown",)):
                    missing.append(f"{robot} (robot_state with its battery)")
            dead = [c for c in self.children if not c.alive()]
            if dead:
                child = dead[0]
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode} "
                                   f"during start-up; its log ({child.log}):\n{child.tail()}")
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not up after {STARTUP_TIMEOUT_S:g} s: {', '.join(missing)}"
                                   f" (logs in {self.logs})")
            self.observer.poll(0.2)

    # -- running --------------------------------------------------------------------------------

    def run(self) -> None:
        from delivery_robot.nodes.robot_stack import drop_qos_event_handlers

        s = self.scenario
        assert self.observer is not None
        local = [self.sim, self.people]
        self.executor.create_task(lambda: self.dropped.extend(drop_qos_event_handlers(local)))
        self.cpu_at_start = self.cpu_seconds()
        self.sim.run()
        self.wall_started = time.monotonic()
        next_line = self.wall_started + self.args.progress
        while self.sim.sim.time < s.duration_s - 1e-6:
            self.observer.poll(0.1)
            dead = [c for c in self.children if not c.alive()]
            if dead:
                names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in dead)
                self.failure = f"stopped: {names} died; logs in {self.logs}"
                for child in dead:
                    print(f"error: {child.name} died; the end of {child.log}:\n{child.tail()}",
                          file=sys.stderr)
                break
            if time.monotonic() >= next_line:
                next_line += self.args.progress
                print(self.progress_line(), flush=True)
            if self.spinner is not None and not self.spinner.is_alive():
                self.failure = "the executor of delivery-sim stopped"
                break
        self.wall_ended = time.monotonic()
        self.sim.pause()

    def progress_line(self) -> str:
        assert self.observer is not None
        now = self.sim.sim.time
        wall = time.monotonic() - self.wall_started
        counts = self.people.counts()
        speed = now / wall if wall > 0 else 0.0
        return (f"  sim {hms(now)}/{hms(self.scenario.duration_s)}  x{speed:4.1f}  orders "
                f"{counts['submitted']}: {counts['delivered']} delivered, {counts['open']} open"
                f", {counts['failed']} failed | {self.observer.mode_line()}")

    # -- the report -----------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        from delivery_robot.sim_report import RunFacts, build_report

        assert self.observer is not None
        s = self.scenario
        wall = (self.wall_ended or time.monotonic()) - self.wall_started if self.wall_started \
            else 0.0
        sim = self.sim.sim
        people = self.people
        facts = RunFacts(
            world=s.world, robots=s.robots, seed=s.seed, sim_seconds=float(sim.time),
            wall_seconds=wall, distance_m=float(sim.distances.sum()),
            safety_stops=self.observer.safety_stops, watchdog_stops=self.observer.watchdog_stops,
            collisions=int(sim.collision_counts.sum()),
            submit_latencies_s=list(people.submit_latencies_s), refused=people.refused,
            refusals=dict(people.refusals), promise_s=s.promise_s,
            interrupted=self.interrupted or bool(self.failure),
            extra={
                "orders_planned": len(people.arrivals),
                "people": people.stats.to_dict(),
                "people_problems": people.stats.problems[:20],
                "distance_by_robot_m": {r: round(float(d), 1) for r, d in
                                        zip(self.robot_ids, sim.distances, strict=True)},
                "lockstep": self.sim.lockstep_stats(),
                "config": {"step_s": self.sim.step_s, "duration_s": s.duration_s,
                           "orders_until_s": s.orders_until_s, "day_start": s.day_start,
                           "real_time_factor": s.real_time_factor,
                           "ghost_robots": bool(s.sim.get("ghost_robots", False)),
                           "robot_nodes": list(s.robot_nodes)},
                "peak_rss_mb": self.peak_rss_mb(),
                "cpu_seconds_running": {
                    name: round(cpu - self.cpu_at_start.get(name, 0.0), 1)
                    for name, cpu in self.cpu_seconds().items()},
                "failure": self.failure,
                "workdir": str(self.workdir),
            })
        return build_report(people.traces(), facts)

    def write_trajectories(self, path: Path) -> None:
        """Every robot's ground-truth pose as fleet_sim recorded it (sim time, one row each)."""
        if self.sim is None:
            return
        lines = ["t," + ",".join(f"{r}_x,{r}_y,{r}_yaw" for r in self.robot_ids)]
        lines += [f"{t:.2f}," + ",".join(f"{v:.3f}" for v in row)
                  for t, row in self.sim.track()]
        path.write_text("\n".join(lines) + "\n")

    def processes(self) -> list[tuple[str, int]]:
        return [("delivery-sim", os.getpid())] + [
            (c.name, c.process.pid) for c in self.children if c.alive()]

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak resident memory (VmHWM) of every process of the run, and their sum."""
        peaks: dict[str, float] = {}
        for name, pid in self.processes():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[name] = round(int(line.split()[1]) / 1024.0, 1)
            except (OSError, ValueError, IndexError):
                continue
        peaks["total"] = round(sum(peaks.values()), 1)
        return peaks

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) each process has used so far, start-up included."""
        ticks = os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {}
        for name, pid in self.processes():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                used[name] = round((int(fields[11]) + int(fields[12])) / ticks, 1)
            except (OSError, IndexError, ValueError):
                continue
        return used

    # -- shutdown -------------------------------------------------------------------------------

    def close(self) -> None:
        if self.sim is not None:
            self.sim.pause()
        stop_children(self.children)
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=2.0)
        if self.spinner is not None:
            self.spinner.join(timeout=5.0)
        from delivery_robot.nodes.robot_stack import restore_qos_event_handlers

        restore_qos_event_handlers(self.dropped)
        if self.observer is not None:
            self.observer.poller.destroy()
        for node in (self.sim, self.people):
            if node is not None:
                with contextlib.suppress(Exception):
                    node.destroy_node()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        scenario = make_scenario(args)
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"delivery-sim: error: {error}", file=sys.stderr)
        return 2
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    domain, domain_lock = claim_domain_id(os.environ.get("ROS_DOMAIN_ID"))
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.signals import SignalHandlerOptions

    from delivery_robot.sim_report import format_table, to_json

    run = Run(scenario, args)
    s = scenario
    speed = ("real time" if s.real_time_factor == 1.0 else
             f"at most x{s.real_time_factor:g}" if s.real_time_factor else "as fast as possible")
    print(f"delivery-sim: {s.world}, {s.robots} robots, {hms(s.duration_s)} simulated from "
          f"{s.day_start} (orders until {hms(s.orders_until_s)}), seed {s.seed}, {speed}; "
          f"ROS_DOMAIN_ID={domain} on loopback", flush=True)
    print(f"  work dir (order database, logs, report): {run.workdir}", flush=True)
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    report: dict[str, Any] | None = None
    code = 0
    try:
        try:
            spawns = run.spawns()
        except ValueError as error:
            print(f"delivery-sim: error: {error}", file=sys.stderr)
            return 2
        try:
            run.start_local_nodes(spawns)
        except (ValueError, FileNotFoundError, ParameterException) as error:
            print(f"delivery-sim: error: {error}", file=sys.stderr)
            return 2
        if "mission_executor" in s.robot_nodes:
            try:
                __import__(ROBOT_NODES["mission_executor"][0])
            except ImportError:
                print("delivery-sim: error: the mission executor node "
                      f"({ROBOT_NODES['mission_executor'][0]}) is not installed",
                      file=sys.stderr)
                return 1
        print(f"[1/3] starting {s.robots} robot stacks (navigation, safety_monitor, handoff, "
              "mission_executor), then the coordinator ...", flush=True)
        started = time.monotonic()
        run.start_robots(spawns)
        run.wait_until_up(coordinator=False)
        run.start_coordinator()
        run.wait_until_up(coordinator=True)
        print(f"      up after {time.monotonic() - started:.1f} s; "
              f"{len(run.people.arrivals)} orders will come in", flush=True)
        if s.port and not run.api_up():
            print(f"      warning: nothing answers on port {s.port}: the shop API did not start "
                  f"(port in use? see {run.logs / 'coordinator.log'}; --port chooses another)",
                  flush=True)
        elif s.port:
            print(f"      tablet: http://localhost:{s.port}/shop (demo shop tokens: "
                  f"{config_file('demo_tokens.yaml')}; token hashes: "
                  f"{config_file('shop_api.yaml')}), operator view: "
                  f"http://localhost:{s.port}/ops", flush=True)
        print("[2/3] running (Ctrl-C stops and prints a partial report) ...", flush=True)
        run.run()
        if run.failure:
            code = 1
    except KeyboardInterrupt:
        run.interrupted = True
        run.wall_ended = run.wall_ended or time.monotonic()
        print("\ninterrupted: stopping every process ...", flush=True)
        code = 130
    except RuntimeError as error:
        run.failure = str(error)
        print(f"delivery-sim: error: {error}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        try:
            if run.wall_started:
                report = run.report()
        finally:
            run.close()
            rclpy.try_shutdown()
            if domain_lock is not None:
                domain_lock.close()
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if report is not None:
        print("[3/3] done\n")
        print(format_table(report))
        text = to_json(report)
        path = run.workdir / "report.json"
        path.write_text(text)
        run.write_trajectories(run.workdir / "trajectories.csv")
        if args.report:
            try:
                args.report.parent.mkdir(parents=True, exist_ok=True)
                args.report.write_text(text)
                path = args.report
            except OSError as error:
                print(f"delivery-sim: cannot write {args.report}: {error}", file=sys.stderr)
                code = code or 1
        print(f"\nJSON report: {path}\nlogs of every process: {run.logs}\norder database: "
              f"{run.workdir / 'orders.db'}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())

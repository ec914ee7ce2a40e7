#!/usr/bin/env python3
"""Static consistency checks of what only robots and Gazebo machines run (issue 9).

    tools/ros_env python tools/check_assets.py        # exit 0: no error (pending is fine)

`launch`, `launch_ros`, Gazebo and Nav2 do not install here, so nothing is launched. Instead:
- launch/*.launch.py: valid Python with generate_launch_description(), read with ast
  (delivery_robot.asset_checks); launch arguments have defaults and descriptions; every
  executable of ours is a console script in setup.py; every file it refers to in share/ exists;
  every argument passed to an included launch file of ours is declared there;
- every params file a launch file gives one of our nodes: rcl (real rclpy, a private context)
  applies a section of it to that node, and every key it applies, and every key of the launch
  file's parameter dicts, is a parameter the node declares. Declared parameters are listed by
  instantiating the real node class (delivery_robot.ros.node_introspection), so no table of
  names can drift from the code;
- Nav2: nav2_params.yaml parses in rcl with a section for every Nav2 node (and costmap) the
  launch file starts in a robot namespace; the lifecycle managers manage exactly those nodes;
- ros_gz_bridge configs: the bridge's YAML schema and Jazzy type pairs; each ROS topic is
  created by one of our nodes (again: the instantiated nodes' real publishers/subscriptions),
  with the right type and role, or read by a named third-party node (EXTERNAL_ENDPOINTS:
  Nav2 and robot_state_publisher cannot run here); each Gazebo topic is one the robot model
  (urdf/, namespaced as the launch file does) or the world publishes, and every topic of the
  model is bridged;
- robot geometry: URDF vs safety.yaml, fleet_sim.yaml, base_driver.yaml, nav2_params.yaml;
- gazebo_worlds/*.sdf pass `ign sdf -k`; the URDF passes `check_urdf`, converts to SDF and the
  result passes `ign sdf -k` with its sensors and plugins; config/maps match the worlds.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delivery_robot.asset_checks import (
    BridgeEntry,
    Finding,
    LaunchFile,
    check_launch_file,
    check_nav2_lifecycle,
    check_robot_geometry,
    console_scripts,
    expand_name,
    nav2_sections,
    read_bridge_config,
    read_launch_file,
    ros_parameters,
    share_to_repo,
)
from delivery_robot.launch_support import LaunchSetupError, gz_endpoints, namespaced_description
from delivery_robot.occupancy_map import stale_maps

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "delivery_robot"
ROBOT_NS = "/robot1"  # the namespace per-robot nodes are checked in (any robotN is the same)
URDF = "urdf/delivery_robot.urdf"
PLACEHOLDER = "<robot_namespace>"


@dataclass(frozen=True)
class Pending:
    """A node another task is writing: its launch entries are reported as pending until its
    console script lands (then this entry must go: the checker says so)."""

    params_file: str
    subscribes: tuple[str, ...] = ()  # relative topics it will read (bridge consumers)


PENDING: dict[str, Pending] = {}  # none today: every node the launch files name exists

# What a node needs to be instantiated in a test context: only values that keep it from
# touching hardware or the network; none of them changes which parameters it declares.
TEST_CONTEXT_OVERRIDES: dict[str, dict[str, Any]] = {
    "base_driver": {"autostart": False},  # do not open the serial port
    "camera": {"source": "/nonexistent/check_assets_camera.mp4"},  # no camera device here
    "handoff": {"handoff_secret": "check-assets-" + "x" * 32},  # real keys are never in config
    "coordinator": {"http_port": 0},  # no HTTP server
    "navigation": {"backend": "builtin"},  # nav2 imports nav2_simple_commander (absent here)
}
# Files a node writes: put into the check's temporary folder, never into ~/.ros or the cwd.
TEMP_PATH_PARAMETERS = {"coordinator": "database_path", "mission_executor": "journal_path",
                        "handoff": "state_path"}

# Third-party nodes of the Gazebo launch, which cannot run here: what they read or write in a
# robot's namespace (relative names), from their configuration (config/nav2_params.yaml,
# launch/gazebo_sim.launch.py remappings) and their documented interfaces.
EXTERNAL_ENDPOINTS: list[tuple[str, str, str, str]] = [
    ("tf", "tf2_msgs/msg/TFMessage", "subscription",
     "Nav2 (amcl, costmaps, bt_navigator, behaviors) and robot_state_publisher, /tf -> tf"),
    ("joint_states", "sensor_msgs/msg/JointState", "subscription", "robot_state_publisher"),
    ("odom", "nav_msgs/msg/Odometry", "subscription",
     "Nav2 bt_navigator, controller_server, velocity_smoother (odom_topic: odom)"),
    ("scan", "sensor_msgs/msg/LaserScan", "subscription", "Nav2 amcl and costmaps"),
    ("cmd_vel", "geometry_msgs/msg/TwistStamped", "publisher",
     "Nav2 velocity_smoother (cmd_vel_smoothed -> cmd_vel, enable_stamped_cmd_vel)"),
]
WORLD_GZ_TOPICS = {"/clock": "gz.msgs.Clock"}
NAV2_SUBNODES = {"controller_server": ("local_costmap", "local_costmap"),
                 "planner_server": ("global_costmap", "global_costmap")}


# == running ===================================================================================


def run_checks(root: Path = ROOT) -> list[Finding]:
    """Every check; findings in a stable order. Needs tools/ros_env (rclpy, our install)."""
    import rclpy
    from rclpy.context import Context

    findings: list[Finding] = []
    scripts = console_scripts(root / "setup.py")
    for name in sorted(PENDING.keys() & scripts.keys()):
        findings.append(Finding("error", "tools/check_assets.py", f"{name} has landed in "
                                "setup.py: remove it from PENDING"))
    launch_files = [read_launch_file(p) for p in sorted((root / "launch").glob("*.launch.py"))]
    pending = {name: p.params_file for name, p in PENDING.items()}
    for info in launch_files:
        findings += check_launch_file(info, scripts, root, PACKAGE, pending)

    context = Context()
    rclpy.init(context=context)
    try:
        with tempfile.TemporaryDirectory(prefix="delivery_robot_check_assets_") as tmp:
            checker = _RosChecks(root, scripts, context, Path(tmp))
            for info in launch_files:
                findings += checker.our_nodes(info)
            for info in launch_files:
                findings += checker.nav2(info)
            for info in launch_files:
                findings += checker.bridges(info)
            findings += checker.summary()
    finally:
        rclpy.shutdown(context=context)
    findings += geometry(root)
    findings += external_validators(root)
    findings += [Finding("error", "config/maps", p) for p in stale_maps(root)]
    return findings


class _RosChecks:
    """The checks that need rclpy: node parameters and topics, rcl params-file matching."""

    def __init__(self, root: Path, scripts: dict[str, str], context: Any, tmp: Path) -> None:
        self.root, self.scripts, self.context, self.tmp = root, scripts, context, tmp
        self.reports: dict[tuple[Any, ...], Any] = {}
        self.instantiated: set[str] = set()
        self.params_files_checked: set[str] = set()
        self.nav2_checked: set[str] = set()
        self.bridge_entries_checked = 0

    def where(self, info: LaunchFile, line: int) -> str:
        return f"{info.path.relative_to(self.root)}:{line}"

    def files(self, values: Iterable[str]) -> list[Path]:
        out = []
        for value in values:
            local = share_to_repo(value, self.root, PACKAGE)
            if local is not None and local.is_file():
                out.append(local)
        return out

    def applied(self, path: Path, name: str, namespace: str) -> frozenset[str] | str:
        from delivery_robot.ros.node_introspection import applied_parameters

        try:
            return applied_parameters(self.context, str(path), name=name, namespace=namespace)
        except Exception as error:  # noqa: BLE001 - rcl's parse error is the finding
            return f"rcl cannot load it: {error}"

    def our_nodes(self, info: LaunchFile) -> list[Finding]:
        from delivery_robot.ros.node_introspection import introspect_node, node_class

        out: list[Finding] = []
        for node in info.nodes:
            if node.package != PACKAGE or node.executable not in self.scripts:
                continue
            exe, at = str(node.executable), self.where(info, node.line)
            namespace = ROBOT_NS if node.namespaced else "/"
            name = node.name or exe
            files = [f for e in node.params if e.files for f in self.files(e.files)]
            for path in files:
                applied = self.applied(path, name, namespace)
                rel = path.relative_to(self.root)
                self.params_files_checked.add(str(rel))
                if isinstance(applied, str):
                    out.append(Finding("error", at, f"{rel}: {applied}"))
                elif not applied:
                    out.append(Finding("error", at, f"{rel} has no section rcl applies to "
                                       f"node {namespace.rstrip('/')}/{name}"))
            key = (exe, namespace, name, tuple(files))
            if key not in self.reports:
                overrides = dict(TEST_CONTEXT_OVERRIDES.get(exe, {}))
                if exe in TEMP_PATH_PARAMETERS:
                    overrides[TEMP_PATH_PARAMETERS[exe]] = str(
                        self.tmp / f"{exe}_{len(self.reports)}.db")
                if exe != "fleet_sim":  # fleet_sim publishes /clock and refuses sim time
                    overrides["use_sim_time"] = True
                try:
                    cls = node_class(self.scripts[exe])
                except (ImportError, LookupError) as error:
                    out.append(Finding("error", at, f"{exe}: {error}"))
                    continue
                self.reports[key] = introspect_node(
                    cls, self.context, name=name, namespace=namespace,
                    params_files=[str(f) for f in files], overrides=overrides)
                self.instantiated.add(exe)
            report = self.reports[key]
            if report.error:
                out.append(Finding("error", at, f"{exe} does not start with "
                                   f"{[str(f.relative_to(self.root)) for f in files]}: "
                                   f"{report.error}"))
                continue
            for path in files:
                applied = self.applied(path, name, namespace)
                if isinstance(applied, str):
                    continue
                for param in sorted(applied - report.declared):
                    out.append(Finding("error", at, f"{path.relative_to(self.root)} sets "
                                       f"{param!r}, which {exe} does not declare"))
            for entry in node.params:
                for param in sorted(set(entry.keys or ()) - report.declared):
                    out.append(Finding("error", at, f"parameter {param!r} given to {exe} is "
                                       "not declared by it"))
        return out

    def nav2(self, info: LaunchFile) -> list[Finding]:
        out: list[Finding] = []
        started: dict[Path, list[str]] = {}
        for node in info.nodes:
            if not (node.package or "").startswith("nav2_"):
                continue
            at, name = self.where(info, node.line), node.name or str(node.executable)
            namespace = ROBOT_NS if node.namespaced else "/"
            for entry in node.params:
                for path in self.files(entry.files or ()):
                    text = path.read_text(encoding="utf-8")
                    if PLACEHOLDER in text and not entry.placeholders:
                        out.append(Finding("error", at, f"{path.name} holds {PLACEHOLDER} but "
                                           f"{name} loads it without ReplaceString"))
                    local = self.tmp / f"{path.stem}{namespace.replace('/', '_')}.yaml"
                    local.write_text(text.replace(PLACEHOLDER, namespace.rstrip("/")),
                                     encoding="utf-8")
                    started.setdefault(path, []).append(name)
                    self.nav2_checked.add(name)
                    targets = [(name, namespace)]
                    if name in NAV2_SUBNODES:
                        sub_ns, sub_name = NAV2_SUBNODES[name]
                        targets.append((sub_name, f"{namespace.rstrip('/')}/{sub_ns}"))
                    applied_main: frozenset[str] = frozenset()
                    for target, target_ns in targets:
                        applied = self.applied(local, target, target_ns)
                        if isinstance(applied, str):
                            out.append(Finding("error", at, f"{path.name}: {applied}"))
                        elif not applied:
                            out.append(Finding("error", at, f"{path.name} has no section for "
                                               f"{target_ns.rstrip('/')}/{target}"))
                        elif target == name:
                            applied_main = applied
                    for dict_entry in node.params:
                        unknown = set(dict_entry.keys or ()) - applied_main - {"use_sim_time"}
                        for key in sorted(unknown):
                            out.append(Finding("error", at, f"{name} is given {key!r}, which "
                                               f"{path.name} does not define for it"))
        for path, names in started.items():
            out += check_nav2_lifecycle(nav2_sections(path), names,
                                        f"{info.path.relative_to(self.root)}")
        return out

    def bridges(self, info: LaunchFile) -> list[Finding]:
        out: list[Finding] = []
        for node in info.nodes:
            if (node.package, node.executable) != ("ros_gz_bridge", "parameter_bridge"):
                continue
            at = self.where(info, node.line)
            values = {k: v for e in node.params for k, v in e.values.items()}
            configs = self.files(values.get("config_file", ()))
            if not configs:
                out.append(Finding("error", at, "parameter_bridge without a config_file of "
                                   "ours"))
                continue
            expand = values.get("expand_gz_topic_names") == ("True",)
            namespace = ROBOT_NS if node.namespaced else "/"
            for path in configs:
                entries, problems = read_bridge_config(path)
                self.bridge_entries_checked += len(entries)
                out += [Finding(p.level, f"{path.relative_to(self.root)} ({at})",
                                p.message.removeprefix(f"{path.name}")) for p in problems]
                out += self.bridge_ros_side(entries, namespace, path)
                out += self.bridge_gz_side(entries, namespace, expand, path)
        return out

    def endpoints(self) -> list[tuple[str, str, str, str]]:
        """(topic, type, role, who) of our instantiated nodes and the declared externals."""
        ours = [(e.topic, e.msg_type, e.role, e.node) for r in self.reports.values()
                for e in r.endpoints]
        external = [(expand_name(t, ROBOT_NS), ty, role, who)
                    for t, ty, role, who in EXTERNAL_ENDPOINTS]
        return ours + external

    def bridge_ros_side(self, entries: Sequence[BridgeEntry], namespace: str,
                        path: Path) -> list[Finding]:
        out = []
        where = str(path.relative_to(self.root))
        pool = self.endpoints()
        for entry in entries:
            topic = expand_name(entry.ros_topic, namespace)
            want = ({"subscription"} if entry.direction == "GZ_TO_ROS" else {"publisher"}
                    if entry.direction == "ROS_TO_GZ" else {"publisher", "subscription"})
            users = [(ty, who) for t, ty, role, who in pool if t == topic and role in want]
            wrong = [(ty, who) for ty, who in users if ty != entry.ros_type]
            for ty, who in wrong:
                out.append(Finding("error", where, f"{topic}: bridged as {entry.ros_type}, "
                                   f"but {who} uses {ty}"))
            if users:
                continue
            pending = [name for name, p in PENDING.items()
                       if entry.ros_topic in p.subscribes and "subscription" in want]
            if pending:
                out.append(Finding("pending", where, f"{topic}: will be read by {pending} "
                                   "(being written); no node reads it yet"))
            else:
                role = " or ".join(sorted(want))
                out.append(Finding("error", where, f"{topic} ({entry.direction}): no node of "
                                   f"ours or declared external node has a {role} on it"))
        return out

    def bridge_gz_side(self, entries: Sequence[BridgeEntry], namespace: str, expand: bool,
                       path: Path) -> list[Finding]:
        where = str(path.relative_to(self.root))
        if namespace == "/":
            known = {t: (ty, "out") for t, ty in WORLD_GZ_TOPICS.items()}
        else:
            urdf = (self.root / URDF).read_text(encoding="utf-8")
            try:
                model = gz_endpoints(namespaced_description(urdf, namespace))
            except LaunchSetupError as error:
                return [Finding("error", URDF, str(error))]
            known = {e.topic: (e.gz_type, e.direction) for e in model}
        out = []
        bridged = set()
        for entry in entries:
            topic = expand_name(entry.gz_topic, namespace) if expand else entry.gz_topic
            bridged.add(topic)
            if topic not in known:
                out.append(Finding("error", where, f"Gazebo topic {topic} is not one the robot "
                                   "model or the world has"))
                continue
            gz_type, direction = known[topic]
            if gz_type != entry.gz_type:
                out.append(Finding("error", where, f"Gazebo topic {topic} is {gz_type}, "
                                   f"bridged as {entry.gz_type}"))
            expected = "GZ_TO_ROS" if direction == "out" else "ROS_TO_GZ"
            if entry.direction != expected:
                out.append(Finding("error", where, f"Gazebo topic {topic}: direction "
                                   f"{entry.direction}, expected {expected}"))
        for topic in sorted(known.keys() - bridged):
            out.append(Finding("error", where, f"Gazebo topic {topic} of the "
                               f"{'world' if namespace == '/' else 'robot model'} is not "
                               "bridged"))
        return out

    def summary(self) -> list[Finding]:
        return [
            Finding("info", "nodes", "instantiated with real rclpy: "
                    f"{', '.join(sorted(self.instantiated))}"),
            Finding("info", "params files", "applied by rcl and checked against the declared "
                    f"parameters: {', '.join(sorted(self.params_files_checked))}"),
            Finding("info", "nav2", f"sections and lifecycle checked for: "
                    f"{', '.join(sorted(self.nav2_checked))}"),
            Finding("info", "bridges", f"{self.bridge_entries_checked} bridge entries checked "
                    "on both sides"),
        ]


# == files checked without ROS =================================================================


def geometry(root: Path) -> list[Finding]:
    config = root / "config"
    try:
        return check_robot_geometry(
            (root / URDF).read_text(encoding="utf-8"), ros_parameters(config / "safety.yaml"),
            ros_parameters(config / "fleet_sim.yaml"), ros_parameters(config / "base_driver.yaml"),
            nav2_sections(config / "nav2_params.yaml"))
    except (OSError, ValueError, KeyError) as error:
        return [Finding("error", "robot geometry", f"cannot compare: {error}")]


def _run(command: Sequence[str], timeout: float = 120.0) -> tuple[int, str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            check=False)
    output = "\n".join(line for line in (result.stdout + result.stderr).splitlines()
                       if "libignition-tools-backward" not in line)
    return result.returncode, output


def external_validators(root: Path) -> list[Finding]:
    """The real parsers: SDFormat (`ign sdf`, or `gz sdf`) and urdfdom's `check_urdf`."""
    out: list[Finding] = []
    sdf_tool = shutil.which("ign") or shutil.which("gz")
    if sdf_tool is None or shutil.which("check_urdf") is None:
        return [Finding("error", "tools", "`ign` (ignition-tools, libsdformat-dev) and "
                        "`check_urdf` (liburdfdom-tools) are needed: see tools/apt-packages.txt")]
    for sdf in sorted((root / "gazebo_worlds").glob("*.sdf")):
        code, output = _run([sdf_tool, "sdf", "-k", str(sdf)])
        if code != 0 or "Valid." not in output or "Error" in output:
            out.append(Finding("error", str(sdf.relative_to(root)), f"ign sdf -k: {output}"))
    for urdf in sorted((root / "urdf").glob("*.urdf")):
        rel = str(urdf.relative_to(root))
        code, output = _run(["check_urdf", str(urdf)])
        if code != 0 or "Successfully Parsed XML" not in output:
            out.append(Finding("error", rel, f"check_urdf: {output}"))
        code, output = _run([sdf_tool, "sdf", "-k", str(urdf)])
        if code != 0 or "Valid." not in output or "Error" in output or "Warning" in output:
            out.append(Finding("error", rel, f"ign sdf -k (URDF -> SDF): {output}"))
        code, converted = _run([sdf_tool, "sdf", "-p", str(urdf)])
        if code != 0:
            out.append(Finding("error", rel, f"ign sdf -p: {converted}"))
            continue
        out += _check_converted(rel, converted, urdf.read_text(encoding="utf-8"))
    return out


def _check_converted(rel: str, converted: str, urdf: str) -> list[Finding]:
    """The URDF's sensors and plugins must survive the conversion Gazebo does when spawning."""
    import xml.etree.ElementTree as ET

    try:
        sdf = ET.fromstring(converted)
    except ET.ParseError as error:
        return [Finding("error", rel, f"converted SDF is not XML: {error}")]
    source = ET.fromstring(urdf)
    out = []
    for tag in ("sensor", "plugin"):
        wanted = {e.get("name") for e in source.iter(tag)}
        got = {e.get("name") for e in sdf.iter(tag)}
        for name in sorted(n for n in wanted - got if n):
            out.append(Finding("error", rel, f"{tag} {name!r} is lost in the URDF -> SDF "
                               "conversion"))
    return out


# == the command ===============================================================================


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository to check")
    args = parser.parse_args(argv)
    importlib.invalidate_caches()
    findings = run_checks(args.root.resolve())
    order = {"error": 0, "pending": 1, "info": 2}
    for finding in sorted(findings, key=lambda f: order[f.level]):
        print(finding)
    counts = {level: sum(f.level == level for f in findings) for level in order}
    print(f"check-assets: {counts['error']} error(s), {counts['pending']} pending (being "
          f"written elsewhere), {counts['info']} note(s)")
    return 1 if counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())

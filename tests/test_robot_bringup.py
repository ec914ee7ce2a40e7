"""delivery-robot --emulate: the robot's nodes on the firmware emulator, in separate processes.

The emulated bring-up comes up (base_driver configured and activated through its lifecycle
services, every node's first message seen), drives through the safety monitor (the empty
emulated scan) so odometry moves, acknowledges lock commands, and on Ctrl-C leaves the
emulated controller locked with its motors disabled. Its node list is the launch file's.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ros_harness import SpinningExecutor, wait_for

from delivery_robot.nodes.robot_bringup import (
    NODE_NAMES,
    PACKAGE,
    ROBOT_NODES,
    TEST_PATTERN,
    EmulatorFaults,
    StartPose,
    module_exists,
    parse_args,
    parse_faults,
    plan_nodes,
    start_pose,
    write_test_pattern,
)

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "robot.launch.py"


def launch_executables(path: Path) -> set[str]:
    """Executables of our package that `Node(package=..., executable=...)` calls in a launch
    file start, read with `ast` (the file is not run). Module-level string constants such as
    PACKAGE = "delivery_robot" are resolved; anything dynamic fails the test with its text."""
    tree = ast.parse(path.read_text(), str(path))
    constants: dict[str, str] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant) \
                and isinstance(statement.value.value, str):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = statement.value.value

    def resolve(expression: ast.expr | None) -> str | None:
        if isinstance(expression, ast.Constant) and isinstance(expression.value, str):
            return expression.value
        if isinstance(expression, ast.Name):
            return constants.get(expression.id)
        return None

    found: set[str] = set()
    unresolved: list[str] = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        keywords = {keyword.arg: keyword.value for keyword in call.keywords}
        if "executable" not in keywords:
            continue
        package = resolve(keywords.get("package"))
        executable = resolve(keywords["executable"])
        if package is None or executable is None:
            unresolved.append(ast.unparse(call)[:120])
        elif package == PACKAGE:
            found.add(executable)
    assert not unresolved, f"cannot read these launch actions statically: {unresolved}"
    return found


def test_node_list_matches_the_executables_robot_launch_starts() -> None:
    if not LAUNCH_FILE.exists():
        pytest.skip(f"{LAUNCH_FILE.relative_to(REPO)} does not exist yet (being written)")
    launched = launch_executables(LAUNCH_FILE)
    ours = set(NODE_NAMES)
    assert ours == launched, (
        f"only in robot_bringup.ROBOT_NODES: {sorted(ours - launched)}; "
        f"only in robot.launch.py: {sorted(launched - ours)}")


def test_plan_starts_each_node_in_the_namespace_and_skips_missing_modules(
    tmp_path: Path,
) -> None:
    options = parse_args(["--emulate", "--robot-id", "robot7", "--skip", "camera"])
    options = dataclasses.replace(options, serial_port="/tmp/x/ttyMCU")
    secret = tmp_path / "secret.yaml"
    missing = {"delivery_robot.nodes.perception"}
    start = StartPose("depot", 1.0, 2.0, 0.5)
    planned, skipped = plan_nodes(options, {"handoff": secret}, "video.avi", start, tmp_path,
                                  exists=lambda module: module not in missing)
    names = [entry.spec.name for entry in planned]
    assert names == [n for n in NODE_NAMES if n not in ("camera", "perception")]
    reasons = {entry.spec.name: entry.reason for entry in skipped}
    assert reasons == {"camera": "left out with --skip",
                       "perception": "module delivery_robot.nodes.perception does not exist (yet)"}
    commands = {entry.spec.name: entry.command for entry in planned}
    driver = commands["base_driver"]
    assert driver[:3] == [sys.executable, "-m", "delivery_robot.nodes.base_driver"]
    assert "__ns:=/robot7" in driver
    assert "__node:=base_driver" in driver
    assert 'serial_port:="/tmp/x/ttyMCU"' in driver
    assert "autostart:=false" in driver
    assert any(arg.endswith("config/base_driver.yaml") for arg in driver)
    assert str(secret) in commands["handoff"]
    assert "odom_to_map:=[1.0, 2.0, 0.5]" in commands["navigation"]
    assert 'backend:="builtin"' in commands["navigation"]
    executor = commands["mission_executor"]
    assert 'start_waypoint:="depot"' in executor
    assert "odom_to_map:=[1.0, 2.0, 0.5]" in executor
    assert f"journal_path:={json.dumps(str(tmp_path / 'missions.db'))}" in executor


def test_start_pose_is_the_worlds_depot() -> None:
    start = start_pose("town", None)
    assert start.waypoint == "depot"
    assert start.odom_to_map == pytest.approx([-48.0, 16.0, 1.5708])
    with pytest.raises(ValueError, match="no waypoint 'nowhere'"):
        start_pose("town", "nowhere")


def test_without_emulate_it_needs_a_port_and_names_the_hardware_launch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--robot-id", "robot1"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--emulate" in error
    assert "ros2 launch delivery_robot robot.launch.py" in error
    hardware = parse_args(["--serial-port", "/dev/ttyACM0"])
    assert (hardware.emulate, hardware.serial_port, hardware.scan) == (False, "/dev/ttyACM0",
                                                                       "none")
    assert hardware.camera == "0"


@pytest.mark.parametrize(("argv", "message"), [
    (["--emulate", "--serial-port", "/dev/ttyACM0"], "exclude each other"),
    (["--serial-port", "/dev/ttyACM0", "--faults", "corrupt=0.01"], "need --emulate"),
    (["--emulate", "--faults", "corrupt=2"], "corrupt takes a rate in [0, 1]"),
    (["--emulate", "--faults", "melt"], "unknown fault 'melt'"),
    (["--emulate", "--skip", "lidar"], "unknown node(s) ['lidar']"),
    (["--emulate", "--skip", "base_driver"], "built around the base driver"),
    (["--emulate", "--robot-id", "robot-1"], "must be a ROS name"),
    (["--emulate", "--duration", "0"], "--duration must be > 0"),
])
def test_bad_arguments_are_refused_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_faults_are_parsed() -> None:
    assert parse_faults("") == EmulatorFaults()
    faults = parse_faults("corrupt=0.001, drop=1e-4,stuck_lock,seed=7,unplug_every=20")
    assert faults == EmulatorFaults(0.001, 0.0001, True, 7, 20.0)
    assert faults.describe() == "corrupt=0.001, drop=0.0001, stuck_lock, unplug_every=20s"
    options = parse_args(["--emulate", "--faults", "corrupt=0.01", "--faults", "stuck_lock"])
    assert options.faults == EmulatorFaults(corrupt=0.01, stuck_lock=True)
    assert (options.camera, options.scan) == (TEST_PATTERN, "clear")


def test_test_pattern_is_a_video_opencv_reads(tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "pattern.avi"
    write_test_pattern(path, "robot1", frames=5)
    capture = cv2.VideoCapture(str(path))
    try:
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    assert len(frames) == 5
    assert frames[0].shape == (240, 320, 3)
    assert (frames[0] != frames[-1]).any()  # the bar moves


class Operator:
    """What an operator (or navigation) does to the rehearsed robot, from another process."""

    def __init__(self, ros_executor: SpinningExecutor, robot: str) -> None:
        from delivery_interfaces.msg import CompartmentState
        from delivery_interfaces.srv import SetLock
        from geometry_msgs.msg import TwistStamped
        from nav_msgs.msg import Odometry

        from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS

        self.node = ros_executor.node("rehearsal_operator", namespace=f"/{robot}")
        self.odom: list[Any] = []
        self.compartment: list[Any] = []
        self.node.create_subscription(Odometry, "odom", self.odom.append, SENSOR_QOS)
        self.node.create_subscription(CompartmentState, "compartment/state",
                                      self.compartment.append, STATE_QOS)
        self._publisher = self.node.create_publisher(TwistStamped, "cmd_vel", COMMAND_QOS)
        self._twist_type = TwistStamped
        self.twist: tuple[float, float] | None = None
        self.node.create_timer(0.05, self._publish)
        self.lock_client = self.node.create_client(SetLock, "compartment/set_lock")
        self._request = SetLock.Request

    def _publish(self) -> None:
        twist = self.twist
        if twist is None:
            return
        message = self._twist_type()
        message.header.stamp = self.node.get_clock().now().to_msg()
        message.header.frame_id = "base_link"
        message.twist.linear.x, message.twist.angular.z = twist
        self._publisher.publish(message)

    def set_lock(self, lock: bool) -> Any:
        assert self.lock_client.wait_for_service(timeout_sec=10.0)
        future = self.lock_client.call_async(self._request(lock=lock, requested_by="rehearsal"))
        wait_for(future.done, 10.0, "the set_lock answer")
        return future.result()


@pytest.mark.ros
@pytest.mark.slow
def test_emulated_bringup_drives_locks_and_shuts_down_secure(
    ros_executor: SpinningExecutor, tmp_path: Path
) -> None:
    robot = "rehearsal1"
    report = tmp_path / "report.json"
    log = tmp_path / "bringup.log"
    command = [sys.executable, "-m", "delivery_robot.nodes.robot_bringup", "--emulate",
               "--robot-id", robot, "--report", str(report), "--status-period", "0",
               "--duration", "150"]  # a bound if the test dies before its Ctrl-C
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env=os.environ.copy())
    try:
        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"bring-up exited with {process.returncode}:\n{log.read_text()}")
            return "] ready:" in log.read_text()

        wait_for(ready, 120.0, "every node of the emulated robot to be up")
        operator = Operator(ros_executor, robot)
        wait_for(lambda: len(operator.odom) > 5, 20.0, "odometry from the emulated encoders")
        start_x = operator.odom[-1].pose.pose.position.x

        # cmd_vel (what navigation publishes) -> safety_monitor -> cmd_vel_safe -> base_driver
        operator.twist = (0.3, 0.0)
        wait_for(lambda: operator.odom[-1].pose.pose.position.x > start_x + 0.2, 20.0,
                 "the robot to drive 0.2 m forward")
        assert operator.odom[-1].twist.twist.linear.x > 0.1
        operator.twist = None

        locked = operator.set_lock(True)
        assert locked.success, locked.message
        assert "acknowledged" in locked.message
        unlocked = operator.set_lock(False)
        assert unlocked.success, unlocked.message
        assert "acknowledged" in unlocked.message
        wait_for(lambda: any(m.lock_state == m.LOCK_UNLOCKED for m in operator.compartment),
                 10.0, "compartment/state to show the bolt unlocked")

        process.send_signal(signal.SIGINT)  # the operator's Ctrl-C
        assert process.wait(timeout=60.0) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    output = log.read_text()
    summary = json.loads(report.read_text())
    assert summary["ok"], output
    assert summary["stop_reason"] == "SIGINT received"
    for spec in ROBOT_NODES:
        node = summary["nodes"][spec.name]
        if module_exists(spec.module):
            assert node["state"] == "up", (spec.name, output)
            assert node["exit_code"] == 0, (spec.name, output)
        else:
            assert node == {"state": "skipped",
                            "reason": f"module {spec.module} does not exist (yet)"}
            assert f"[skipped] {spec.name}: module {spec.module}" in output
    assert summary["scans_published"] > 0
    assert summary["shutdown"][0].startswith("base_driver deactivated")
    assert summary["shutdown"][-1] == "base_driver: stopped"  # last: the controller listened
    final = summary["final"]
    assert final["source"] == "emulator"
    assert (final["lock"], final["door_open"]) == ("locked", False)
    assert (final["motors_enabled"], final["moving"]) == (False, False)
    assert "Traceback" not in output


@pytest.mark.ros
@pytest.mark.slow
def test_a_node_that_dies_ends_the_bringup_with_the_reason_and_a_secure_base(
    tmp_path: Path,
) -> None:
    report = tmp_path / "report.json"
    environment = {**os.environ, "DELIVERY_ROBOT_HANDOFF_SECRET": "too short"}  # refused
    command = [sys.executable, "-m", "delivery_robot.nodes.robot_bringup", "--emulate",
               "--robot-id", "rehearsal2", "--report", str(report), "--duration", "120",
               "--skip", "camera,navigation,mission_executor,perception"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment,
                            timeout=150)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "[failed] handoff exited with code 2" in output
    assert "handoff_secret: needs >= 32 characters" in output  # the node's own reason
    summary = json.loads(report.read_text())
    assert not summary["ok"]
    assert summary["stop_reason"] == "handoff exited with code 2"
    assert summary["nodes"]["handoff"]["exit_code"] == 2
    assert summary["nodes"]["navigation"] == {"state": "skipped", "reason": "left out with --skip"}
    final = summary["final"]
    assert (final["lock"], final["motors_enabled"], final["moving"]) == ("locked", False, False)

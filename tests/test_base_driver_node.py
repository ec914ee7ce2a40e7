"""base_driver with real rclpy against the firmware emulator on a pty: drive and odometry, the
lock service, e-stop, unplug/replug, a corrupted link, the lifecycle and the exit path."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ros_harness import SpinningExecutor, wait_for

from delivery_robot.firmware_emulator import CommandOutcome, FirmwareEmulator
from delivery_robot.serial_protocol import (
    LockCommand,
    LockStatus,
    MotorEnable,
    WheelVelocityCommand,
)

pytestmark = pytest.mark.ros

WHEEL_RADIUS = 0.12
TRACK_WIDTH = 0.48
TICKS_PER_M = 4096 / (2 * math.pi * WHEEL_RADIUS)


class Peer:
    """The rest of the robot as the driver sees it: a 50 Hz cmd_vel_safe source (a timer on
    the executor, so no test thread sleeps), subscribers and service clients."""

    def __init__(self, ros_executor: SpinningExecutor) -> None:
        from delivery_interfaces.msg import CompartmentState
        from delivery_interfaces.srv import SetLock
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import TwistStamped
        from lifecycle_msgs.srv import ChangeState
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import BatteryState
        from std_msgs.msg import Bool

        from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS

        self.node = ros_executor.node("robot_peer")
        self.odom: list[Any] = []
        self.battery: list[Any] = []
        self.compartment: list[Any] = []
        self.estop: list[bool] = []
        self.diagnostics: list[Any] = []
        node = self.node
        node.create_subscription(Odometry, "odom", self.odom.append, SENSOR_QOS)
        node.create_subscription(BatteryState, "battery_state", self.battery.append, SENSOR_QOS)
        node.create_subscription(CompartmentState, "compartment/state", self.compartment.append,
                                 STATE_QOS)
        node.create_subscription(Bool, "estop", lambda m: self.estop.append(m.data), STATE_QOS)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self._twist_type = TwistStamped
        self._publisher = node.create_publisher(TwistStamped, "cmd_vel_safe", COMMAND_QOS)
        self.twist: tuple[float, float] | None = None  # streamed while not None
        self.published: list[tuple[float, float]] = []
        node.create_timer(0.02, self._publish)
        self.lock_client = node.create_client(SetLock, "compartment/set_lock")
        self.lifecycle_client = node.create_client(ChangeState, "base_driver/change_state")
        self._set_lock = SetLock
        self._change_state = ChangeState

    def _publish(self) -> None:
        twist = self.twist  # read once: the test thread changes it
        if twist is None:
            return
        message = self._twist_type()
        message.header.stamp = self.node.get_clock().now().to_msg()
        message.twist.linear.x, message.twist.angular.z = twist
        self.published.append(twist)
        self._publisher.publish(message)

    def set_lock(self, lock: bool, timeout: float = 5.0) -> Any:
        assert self.lock_client.wait_for_service(timeout_sec=10.0)
        future = self.lock_client.call_async(self._set_lock.Request(lock=lock,
                                                                    requested_by="test"))
        wait_for(future.done, timeout, "the set_lock answer")
        return future.result()

    def change_state(self, transition: str) -> bool:
        assert self.lifecycle_client.wait_for_service(timeout_sec=10.0)
        request = self._change_state.Request()
        request.transition.label = transition
        future = self.lifecycle_client.call_async(request)
        wait_for(future.done, 10.0, f"the {transition} transition")
        return bool(future.result().success)


@pytest.fixture
def make_emulator(tmp_path: Path) -> Iterator[Callable[..., FirmwareEmulator]]:
    started: list[FirmwareEmulator] = []

    def make(**faults: Any) -> FirmwareEmulator:
        emulator = FirmwareEmulator(tmp_path / "dev" / "ttyMCU", seed=3, **faults)
        emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., FirmwareEmulator]) -> FirmwareEmulator:
    return make_emulator()


def start_driver(ros_executor: SpinningExecutor, emulator: FirmwareEmulator,
                 owned: bool = True, **overrides: Any) -> Any:
    """A base_driver on the emulator's port, spun by the test's executor (and destroyed by it
    unless `owned` is False: then the test destroys it)."""
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.base_driver import BaseDriverNode

    values = {"serial_port": str(emulator.link), "wheel_radius": WHEEL_RADIUS,
              "track_width": TRACK_WIDTH, "diagnostics_period_s": 0.2, **overrides}
    driver = BaseDriverNode(context=ros_executor.context,
                            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    if owned:
        return ros_executor.add(driver)
    ros_executor.executor.add_node(driver)
    return driver


@pytest.fixture
def peer(emulator: FirmwareEmulator, ros_executor: SpinningExecutor) -> Peer:
    """Depends on the emulator first, so teardown destroys the driver while the emulator still
    answers (the exit path's disable and lock are acknowledged, not timed out)."""
    return Peer(ros_executor)


def drive_until(peer: Peer, emulator: FirmwareEmulator, twist: tuple[float, float],
                condition: Callable[[], bool], timeout: float, what: str) -> None:
    peer.twist = twist
    wait_for(condition, timeout, what)


def wheel_travel(emulator: FirmwareEmulator) -> float:
    """Distance the emulated robot's centre moved, from its encoder counts."""
    left, right = emulator.snapshot().wheel_ticks
    return (left + right) / 2 / TICKS_PER_M


def on_the_wire(command: WheelVelocityCommand) -> WheelVelocityCommand:
    """The command as the firmware decodes it (rounded to the wire's 1 mrad/s)."""
    return WheelVelocityCommand.decode_payload(command.encode_payload())


def applied_velocities(emulator: FirmwareEmulator, after: float = 0.0) -> list[Any]:
    return [r for r in emulator.commands() if r.outcome is CommandOutcome.APPLIED
            and isinstance(r.message, WheelVelocityCommand) and r.at > after]


def test_drive_publishes_odometry_matching_the_encoders(
    emulator: FirmwareEmulator, peer: Peer, ros_executor: SpinningExecutor
) -> None:
    driver = start_driver(ros_executor, emulator)
    drive_until(peer, emulator, (0.6, 0.0),
                lambda: bool(peer.odom) and peer.odom[-1].pose.pose.position.x > 0.8,
                10.0, "odometry to pass 0.8 m")
    moving = peer.odom[-1]
    assert moving.header.frame_id == "odom"
    assert moving.child_frame_id == "base_link"
    assert moving.twist.twist.linear.x == pytest.approx(0.6, abs=0.02)
    assert emulator.snapshot().wheel_velocities == pytest.approx((5.0, 5.0), abs=1e-3)
    peer.twist = (0.0, 0.0)
    wait_for(lambda: not emulator.snapshot().moving, 5.0, "the robot to stop")
    ticks = emulator.snapshot().wheel_ticks
    wait_for(lambda: peer.odom[-1].twist.twist.linear.x == 0.0, 2.0, "odometry at rest")
    wait_for(lambda: abs(peer.odom[-1].pose.pose.position.x - wheel_travel(emulator)) < 1e-3,
             2.0, "odometry to reach the final encoder count")
    final = peer.odom[-1].pose.pose
    assert final.position.x == pytest.approx(sum(ticks) / 2 / TICKS_PER_M, abs=1e-3)
    assert abs(final.position.y) < 1e-6
    assert final.orientation.w == pytest.approx(1.0)
    # Turning on the spot: the right wheel forwards (REP-103, counter-clockwise positive).
    drive_until(peer, emulator, (0.0, 0.5),
                lambda: peer.odom[-1].twist.twist.angular.z > 0.45, 5.0, "a left turn")
    assert emulator.snapshot().wheel_velocities[1] > 0 > emulator.snapshot().wheel_velocities[0]
    wait_for(lambda: bool(peer.battery) and bool(peer.estop) and bool(peer.compartment), 5.0,
             "battery, e-stop and compartment state")
    assert 21.0 < peer.battery[-1].voltage < 29.4
    assert peer.estop[-1] is False
    status = driver.link_status()
    assert status is not None
    assert status.rtt_mean_ms is not None
    assert status.rtt_mean_ms < 50.0


def test_lock_service_is_acknowledged_and_refused_with_the_reason(
    emulator: FirmwareEmulator, peer: Peer, ros_executor: SpinningExecutor
) -> None:
    from delivery_interfaces.msg import CompartmentState

    start_driver(ros_executor, emulator)
    unlocked = peer.set_lock(False)
    assert unlocked.success, unlocked.message
    assert unlocked.state.lock_state == CompartmentState.LOCK_UNLOCKED
    assert unlocked.state.door_closed
    assert not emulator.snapshot().bolt_engaged
    assert emulator.open_door()
    wait_for(lambda: bool(peer.compartment) and not peer.compartment[-1].door_closed, 5.0,
             "compartment/state to show the door open")
    refused = peer.set_lock(True)
    assert not refused.success
    assert "door is open" in refused.message
    emulator.close_door()
    emulator.set_stuck_lock(True)
    jammed = peer.set_lock(True)
    assert not jammed.success
    assert "lock fault" in jammed.message
    assert jammed.state.lock_state == CompartmentState.LOCK_FAULT
    emulator.set_stuck_lock(False)
    locked = peer.set_lock(True)
    assert locked.success, locked.message
    assert locked.state.lock_state == CompartmentState.LOCK_LOCKED
    wait_for(lambda: peer.compartment[-1].lock_state == CompartmentState.LOCK_LOCKED, 5.0,
             "compartment/state locked")
    assert emulator.snapshot().lock_status is LockStatus.LOCKED


def test_lock_service_waits_without_blocking_the_executor_and_times_out(
    emulator: FirmwareEmulator, peer: Peer, ros_executor: SpinningExecutor
) -> None:
    driver = start_driver(ros_executor, emulator, lock_timeout_s=1.0)
    wait_for(lambda: bool(peer.estop), 5.0, "the driver to be up")
    emulator.unplug()
    wait_for(lambda: driver.link_status().state.value == "disconnected", 2.0, "the unplug")
    before = len(peer.diagnostics)
    started = time.monotonic()
    answer = peer.set_lock(False)
    elapsed = time.monotonic() - started
    assert not answer.success
    assert "link disconnected" in answer.message
    assert 0.9 < elapsed < 3.0
    assert len(peer.diagnostics) - before >= 3  # the executor kept running (0.2 s period)
    disconnected = [s for array in peer.diagnostics[before:] for s in array.status
                    if s.name == "base_driver: serial link" and s.message == "disconnected"]
    assert disconnected
    emulator.replug()
    assert peer.set_lock(False).success


def test_estop_is_reported_stops_the_wheels_and_needs_a_reactivation(
    emulator: FirmwareEmulator, peer: Peer, ros_executor: SpinningExecutor
) -> None:
    start_driver(ros_executor, emulator)
    drive_until(peer, emulator, (0.5, 0.0), lambda: emulator.snapshot().moving, 5.0, "driving")
    emulator.set_estop(True)
    wait_for(lambda: bool(peer.estop) and peer.estop[-1], 5.0, "estop true")
    assert not emulator.snapshot().moving
    wait_for(lambda: peer.odom[-1].twist.twist.linear.x == 0.0, 2.0, "odometry at rest")
    emulator.set_estop(False)
    wait_for(lambda: not peer.estop[-1], 5.0, "estop false")
    released = time.monotonic()
    wait_for(lambda: any(r.at > released for r in emulator.commands()), 2.0, "more commands")
    snapshot = emulator.snapshot()
    assert not snapshot.motors_enabled  # no automatic restart after an e-stop
    assert not snapshot.moving
    assert peer.change_state("deactivate")
    assert peer.change_state("activate")  # the deliberate reset
    wait_for(lambda: emulator.snapshot().moving, 5.0, "driving again after re-activation")


def test_unplug_and_replug_reconnects_and_control_comes_back(
    emulator: FirmwareEmulator, peer: Peer, ros_executor: SpinningExecutor
) -> None:
    driver = start_driver(ros_executor, emulator)
    drive_until(peer, emulator, (0.5, 0.0), lambda: emulator.snapshot().moving, 5.0, "driving")
    emulator.unplug()
    wait_for(lambda: not emulator.snapshot().moving, 2.0, "the firmware watchdog stop")
    wait_for(lambda: driver.link_status().state.value == "disconnected", 2.0,
             "the driver to notice the unplug")
    replugged = time.monotonic()
    emulator.replug()
    wait_for(lambda: bool(applied_velocities(emulator, after=replugged)), 2.0,
             "a velocity command applied after the replug")
    recovery = applied_velocities(emulator, after=replugged)[0].at - replugged
    assert recovery < 1.0
    wait_for(lambda: emulator.snapshot().moving, 2.0, "driving again")
    status = driver.link_status()
    assert status.connects == 2
    assert status.state.value == "ready"


@pytest.mark.slow
def test_a_corrupted_link_executes_no_wrong_command(
    make_emulator: Callable[..., FirmwareEmulator], ros_executor: SpinningExecutor
) -> None:
    from delivery_robot.diff_drive import DiffDriveGeometry

    emulator = make_emulator(corrupt_rate=1e-3)
    peer = Peer(ros_executor)
    driver = start_driver(ros_executor, emulator)
    geometry = DiffDriveGeometry(WHEEL_RADIUS, TRACK_WIDTH, 4096, 40.0)
    twists = iter((0.3 + index * 1e-3, 0.1) for index in range(100_000))
    peer.twist = next(twists)

    def vary() -> bool:
        peer.twist = next(twists)  # every command distinct, so a mix-up would show
        return len(peer.published) > 150

    wait_for(vary, 10.0, "150 distinct commands")
    for lock in (False, True, False, True):
        answer = peer.set_lock(lock)
        assert answer.success, answer.message
    peer.twist = None
    wanted = {on_the_wire(WheelVelocityCommand(*geometry.wheel_speeds(*t)))
              for t in peer.published}
    wanted.add(WheelVelocityCommand(0.0, 0.0))
    records = emulator.commands()
    velocities = [r.message for r in records if isinstance(r.message, WheelVelocityCommand)
                  and r.outcome is CommandOutcome.APPLIED]
    assert len(velocities) > 100
    assert set(velocities) <= wanted
    locks = [r.message.action.name for r in records if isinstance(r.message, LockCommand)
             and r.outcome is CommandOutcome.APPLIED]
    assert locks == ["UNLOCK", "LOCK", "UNLOCK", "LOCK"]
    snapshot = emulator.snapshot()
    assert snapshot.rx_corrupted_bytes + snapshot.tx_corrupted_bytes > 0
    status = driver.link_status()
    assert status.state.value == "ready"
    assert status.connects == 1  # damage never looked like an unplug
    wait_for(lambda: any(v.key == "crc errors" for a in peer.diagnostics for s in a.status
                         for v in s.values), 2.0, "link diagnostics")


def test_deactivate_stops_the_wheels_and_locks_and_commands_are_ignored(
    emulator: FirmwareEmulator, peer: Peer, ros_executor: SpinningExecutor
) -> None:
    driver = start_driver(ros_executor, emulator)
    assert peer.set_lock(False).success
    drive_until(peer, emulator, (0.5, 0.0), lambda: emulator.snapshot().moving, 5.0, "driving")
    assert peer.change_state("deactivate")
    wait_for(lambda: not emulator.snapshot().motors_enabled, 2.0, "motors disabled")
    snapshot = emulator.snapshot()
    assert not snapshot.moving
    wait_for(lambda: emulator.snapshot().lock_status is LockStatus.LOCKED, 2.0, "locked")
    ignored = driver.commands_ignored
    wait_for(lambda: driver.commands_ignored > ignored + 5, 2.0, "commands ignored while inactive")
    assert not emulator.snapshot().moving
    assert peer.change_state("activate")
    wait_for(lambda: emulator.snapshot().moving, 5.0, "driving after activation")


def test_manual_lifecycle_and_process_exit_secure_the_robot(
    emulator: FirmwareEmulator, peer: Peer, ros_executor: SpinningExecutor
) -> None:
    driver = start_driver(ros_executor, emulator, owned=False, autostart=False)
    assert driver.link_status() is None  # unconfigured: the port is not open
    assert not emulator.commands()
    answer = peer.set_lock(False)
    assert not answer.success
    assert "not configured" in answer.message
    assert peer.change_state("configure")
    assert peer.set_lock(False).success  # lock works while inactive
    assert not emulator.snapshot().motors_enabled
    assert peer.change_state("activate")
    drive_until(peer, emulator, (0.4, 0.0), lambda: emulator.snapshot().moving, 5.0, "driving")
    ros_executor.executor.remove_node(driver)
    driver.destroy_node()  # what run_node does on Ctrl-C / SIGTERM
    snapshot = emulator.snapshot()
    assert not snapshot.motors_enabled
    assert not snapshot.moving
    assert snapshot.lock_status is LockStatus.LOCKED
    assert not any(thread.name == "serial-port-worker" for thread in threading.enumerate())


def test_cleanup_closes_the_port_and_configure_reopens_it(
    emulator: FirmwareEmulator, peer: Peer, ros_executor: SpinningExecutor
) -> None:
    driver = start_driver(ros_executor, emulator)
    wait_for(lambda: driver.link_status().state.value == "ready", 5.0, "ready")
    assert peer.change_state("deactivate")
    assert peer.change_state("cleanup")
    assert driver.link_status() is None
    assert peer.change_state("configure")
    wait_for(lambda: driver.link_status().state.value == "ready", 5.0, "ready again")


def test_bad_parameters_are_refused(emulator: FirmwareEmulator,
                                    ros_executor: SpinningExecutor) -> None:
    with pytest.raises(ValueError, match="wheel_radius"):
        start_driver(ros_executor, emulator, wheel_radius=0.0)
    with pytest.raises(ValueError, match="control_rate_hz"):
        start_driver(ros_executor, emulator, control_rate_hz=0.0)


def test_params_file_matches_the_declared_parameters(emulator: FirmwareEmulator,
                                                     ros_executor: SpinningExecutor) -> None:
    import yaml

    config = Path(__file__).resolve().parents[1] / "config" / "base_driver.yaml"
    values = yaml.safe_load(config.read_text())["/**"]["ros__parameters"]
    driver = start_driver(ros_executor, emulator, autostart=False)
    rclpy_own = {"use_sim_time", "start_type_description_service"}
    declared = {name for name in driver._parameters if name not in rclpy_own}
    assert set(values) == declared
    for name, value in values.items():
        if name not in ("serial_port", "wheel_radius", "track_width", "diagnostics_period_s",
                        "autostart"):  # overridden by the test
            assert driver.get_parameter(name).value == value, name
        assert driver.describe_parameter(name).description, f"{name} has no description"


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_process_exit_disables_the_motors(emulator: FirmwareEmulator,
                                                 signal_name: str) -> None:
    """`base_driver` as `ros2 run` starts it (run_node, autostart), stopped by a signal: the
    exit path runs (locking on exit is checked in-process, where the test can unlock first)."""
    import os
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "delivery_robot.nodes.base_driver", "--ros-args",
         "-p", f"serial_port:={emulator.link}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        wait_for(lambda: emulator.snapshot().motors_enabled or process.poll() is not None,
                 20.0, "the driver process to enable the motors")
        assert process.poll() is None
        process.send_signal(getattr(signal, signal_name))
        output, _ = process.communicate(timeout=10.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    snapshot = emulator.snapshot()
    assert not snapshot.motors_enabled
    disables = [r for r in emulator.commands() if r.message == MotorEnable(False)]
    assert disables, output

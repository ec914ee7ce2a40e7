"""The safety_monitor node: the gate's rules through real rclpy topics, services and clocks.

A rig node stands in for navigation and the scanner (cmd_vel and scan from a 20 Hz timer,
optionally odom, estop, zone_speed_cap and /clock) and records what the monitor publishes.
Scans are ray cast against circles in the scanner frame, so the geometry is known. Unless a
test is about them, the watchdog timeouts are generous and acceleration is not limited, so a
loaded machine cannot make a test flaky.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ros_harness import SpinningExecutor, wait_for

from delivery_robot.safety_gate import KMH, load_params_file

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_params_file(ROOT / "config" / "safety.yaml")
BEAMS = 360
INCREMENT = 2 * math.pi / BEAMS
RIG_PERIOD_S = 0.05

Circle = tuple[float, float, float]  # centre x, y and radius in the scanner frame, m

LIMIT_STOP_ZONE = 1
LIMIT_SPEED_CAP = 8
LIMIT_ZONE_CAP = 16
LIMIT_ESTOP_HARDWARE = 64
LIMIT_ESTOP_REMOTE = 128
LIMIT_COMMAND_TIMEOUT = 256
LIMIT_SCAN_TIMEOUT = 512


def cast_ranges(circles: list[Circle]) -> list[float]:
    """Ranges of a 360-beam scan from -pi, +inf (no return) where no circle is hit."""
    angles = -math.pi + INCREMENT * np.arange(BEAMS)
    dx, dy = np.cos(angles), np.sin(angles)
    ranges = np.full(BEAMS, np.inf)
    for cx, cy, radius in circles:
        b = -(cx * dx + cy * dy)
        disc = b * b - (cx * cx + cy * cy - radius * radius)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        ranges = np.where((disc >= 0) & (t > 0), np.minimum(ranges, t), ranges)
    return [float(r) for r in ranges.astype(np.float32)]


class Rig:
    """Navigation, scanner and base stand-in; tests change its attributes while it runs."""

    def __init__(self, ros_executor: SpinningExecutor, command: tuple[float, float] | None,
                 circles: list[Circle] | Callable[[float], list[Circle]] | None = None,
                 scanning: bool = True, sim_start: float | None = None) -> None:
        from delivery_interfaces.msg import SafetyState
        from geometry_msgs.msg import TwistStamped
        from nav_msgs.msg import Odometry
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import LaserScan
        from std_msgs.msg import Bool, Float32
        from visualization_msgs.msg import MarkerArray

        from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS

        self.command = command
        self.circles = circles if circles is not None else []
        self.scanning = scanning
        self.odom_pose: tuple[float, float, float] | None = None
        self.sim_time = sim_start  # when set, the rig publishes /clock and stamps with it
        self.stamp_with_wall_clock = False
        self.scan_fields: dict[str, Any] = {}  # overrides of LaserScan fields (broken scans)
        self.outputs: list[Any] = []
        self.states: list[Any] = []
        self.markers: list[Any] = []
        self._lock = threading.Lock()
        self.node = ros_executor.node("safety_rig")
        self._start = self.node.get_clock().now().nanoseconds * 1e-9
        self._command_pub = self.node.create_publisher(TwistStamped, "cmd_vel", COMMAND_QOS)
        self._scan_pub = self.node.create_publisher(LaserScan, "scan", SENSOR_QOS)
        self._odom_pub = self.node.create_publisher(Odometry, "odom", SENSOR_QOS)
        self.estop_pub = self.node.create_publisher(Bool, "estop", STATE_QOS)
        self.zone_cap_pub = self.node.create_publisher(Float32, "zone_speed_cap", STATE_QOS)
        self._clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.node.create_subscription(TwistStamped, "cmd_vel_safe", self._record(self.outputs),
                                      COMMAND_QOS)
        self.node.create_subscription(SafetyState, "safety/state", self._record(self.states),
                                      STATE_QOS)
        self.node.create_subscription(MarkerArray, "safety/obstacles",
                                      self._record(self.markers), 10)
        self.node.create_timer(RIG_PERIOD_S, self._tick)

    def _record(self, into: list[Any]) -> Callable[[Any], None]:
        def append(message: Any) -> None:
            with self._lock:
                into.append(message)
        return append

    def _stamp(self) -> tuple[Any, float]:
        from rclpy.time import Time

        if self.sim_time is not None and not self.stamp_with_wall_clock:
            now = Time(nanoseconds=int(round(self.sim_time * 1e9)))
        else:
            now = self.node.get_clock().now()
        return now.to_msg(), now.nanoseconds * 1e-9

    def _tick(self) -> None:
        from geometry_msgs.msg import TwistStamped
        from nav_msgs.msg import Odometry
        from rclpy.time import Time
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import LaserScan

        if self.sim_time is not None:
            self.sim_time += RIG_PERIOD_S
            self._clock_pub.publish(
                Clock(clock=Time(nanoseconds=int(round(self.sim_time * 1e9))).to_msg()))
        stamp, seconds = self._stamp()
        if self.command is not None:
            command = TwistStamped()
            command.header.stamp = stamp
            command.header.frame_id = "base_link"
            command.twist.linear.x, command.twist.angular.z = self.command
            self._command_pub.publish(command)
        if self.odom_pose is not None:
            x, y, yaw = self.odom_pose
            odom = Odometry()
            odom.header.stamp, odom.header.frame_id = stamp, "odom"
            odom.child_frame_id = "base_link"
            odom.pose.pose.position.x, odom.pose.pose.position.y = x, y
            odom.pose.pose.orientation.z = math.sin(yaw / 2)
            odom.pose.pose.orientation.w = math.cos(yaw / 2)
            self._odom_pub.publish(odom)
        if self.scanning:
            circles = (self.circles(seconds - self._start) if callable(self.circles)
                       else self.circles)
            scan = LaserScan(angle_min=-math.pi, angle_max=math.pi - INCREMENT,
                             angle_increment=INCREMENT, range_min=0.05, range_max=30.0,
                             ranges=cast_ranges(circles))
            scan.header.stamp, scan.header.frame_id = stamp, "laser"
            for name, value in self.scan_fields.items():
                setattr(scan, name, value)
            self._scan_pub.publish(scan)

    # ---- what the monitor said ---------------------------------------------------------------

    def output(self) -> tuple[float, float] | None:
        with self._lock:
            if not self.outputs:
                return None
            twist = self.outputs[-1].twist
        return twist.linear.x, twist.angular.z

    def state(self) -> Any:
        with self._lock:
            return self.states[-1] if self.states else None

    def limits(self) -> int:
        state = self.state()
        return -1 if state is None else int(state.active_limits)

    def passes(self, linear: float, angular: float = 0.0, limits: int = 0) -> bool:
        out = self.output()
        return (out is not None and math.isclose(out[0], linear, abs_tol=1e-6)
                and math.isclose(out[1], angular, abs_tol=1e-6) and self.limits() == limits)

    def stopped_by(self, limit: int) -> bool:
        return self.output() == (0.0, 0.0) and self.limits() & limit == limit

    def outputs_after(self, count: int) -> list[tuple[float, float]]:
        with self._lock:
            return [(m.twist.linear.x, m.twist.angular.z) for m in self.outputs[count:]]


def params(**overrides: Any) -> list[Any]:
    from rclpy.parameter import Parameter

    values = {**CONFIG, "command_timeout": 1.0, "scan_timeout": 1.0,
              "max_linear_accel": 100.0, "max_angular_accel": 100.0, **overrides}
    return [Parameter(k, value=v) for k, v in values.items() if v is not None]


def start_monitor(ros_executor: SpinningExecutor, **overrides: Any) -> Any:
    from delivery_robot.nodes.safety_monitor import SafetyMonitorNode

    return ros_executor.add(SafetyMonitorNode(context=ros_executor.context,
                                              parameter_overrides=params(**overrides)))


def call(rig: Rig, service_type: Any, name: str, request: Any) -> Any:
    client = rig.node.create_client(service_type, name)
    wait_for(client.service_is_ready, 10.0, f"service {name}")
    future = client.call_async(request)
    wait_for(future.done, 10.0, f"reply from {name}")
    return future.result()


def estop_remote(rig: Rig, active: bool) -> Any:
    from std_srvs.srv import SetBool

    return call(rig, SetBool, "safety/remote_estop", SetBool.Request(data=active))


def reset(rig: Rig) -> Any:
    from std_srvs.srv import Trigger

    return call(rig, Trigger, "safety/reset", Trigger.Request())


def assert_stays_stopped(rig: Rig, limit: int, ticks: int = 5) -> None:
    """Zeros keep coming from the control timer (not one zero and then silence)."""
    count = len(rig.outputs)
    wait_for(lambda: len(rig.outputs) >= count + ticks, 5.0, f"{ticks} more cmd_vel_safe")
    assert set(rig.outputs_after(count)) == {(0.0, 0.0)}
    assert rig.limits() & limit == limit


# ---- tests ---------------------------------------------------------------------------------


def test_clear_command_passes_through(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, command=(0.5, 0.2), circles=[(6.0, 0.0, 0.3)])
    start_monitor(ros_executor)
    wait_for(lambda: rig.passes(0.5, 0.2), 10.0, "the command through unchanged")
    assert rig.outputs[-1].header.frame_id == "base_link"
    state = rig.state()
    assert state.header.frame_id == "base_link"
    assert state.speed_scale == pytest.approx(1.0)
    assert state.max_speed == pytest.approx(15 * KMH, rel=1e-6)
    # The post's near side: scanner at x = 0.55 in base_link, post centre 6 m ahead of it.
    assert state.nearest_obstacle_distance == pytest.approx(0.55 + 6.0 - 0.3, abs=0.02)
    assert state.nearest_obstacle.x == pytest.approx(6.25, abs=0.02)
    assert not state.estop_hardware
    assert not state.estop_remote


def test_obstacle_in_stop_zone_stops_at_once(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, command=(0.5, 0.0))
    start_monitor(ros_executor)
    wait_for(lambda: rig.passes(0.5), 10.0, "the command through")
    # A post 0.70 m ahead of base_link: inside the stop zone (to 0.85 m), outside the footprint.
    rig.circles = [(0.15, 0.0, 0.05)]
    wait_for(lambda: rig.stopped_by(LIMIT_STOP_ZONE), 5.0, "zero with LIMIT_STOP_ZONE")
    state = rig.state()
    assert state.max_speed == 0.0
    assert state.speed_scale == 0.0
    assert state.nearest_obstacle_distance == pytest.approx(0.65, abs=0.02)
    assert state.interventions >= 1
    assert_stays_stopped(rig, LIMIT_STOP_ZONE)
    rig.circles = []
    wait_for(lambda: rig.passes(0.5), 5.0, "the command through once the zone is clear")


def test_stop_is_published_on_the_scan_not_at_the_next_tick(
    ros_executor: SpinningExecutor,
) -> None:
    # With a 1 Hz control timer, a stop that waited for the tick would come 0..1 s late.
    rig = Rig(ros_executor, command=(0.5, 0.0))
    start_monitor(ros_executor, control_rate_hz=1.0)
    wait_for(lambda: rig.passes(0.5), 10.0, "the command through")
    moving = len(rig.outputs)
    obstacle_from = rig.node.get_clock().now().nanoseconds * 1e-9
    rig.circles = [(0.15, 0.0, 0.05)]
    wait_for(lambda: (0.0, 0.0) in rig.outputs_after(moving), 5.0, "a zero cmd_vel_safe")
    with rig._lock:
        zero = next(m for m in rig.outputs[moving:] if m.twist.linear.x == 0.0)
    delay = zero.header.stamp.sec + zero.header.stamp.nanosec * 1e-9 - obstacle_from
    assert delay < RIG_PERIOD_S + 0.25, f"stop published {delay:.3f} s after the obstacle"


def test_command_timeout_keeps_publishing_zeros(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, command=(0.4, 0.0))
    start_monitor(ros_executor, command_timeout=0.3)
    wait_for(lambda: rig.passes(0.4), 10.0, "the command through")
    rig.command = None  # navigation goes quiet; the last command was 0.4 m/s
    wait_for(lambda: rig.stopped_by(LIMIT_COMMAND_TIMEOUT), 5.0,
             "zero with LIMIT_COMMAND_TIMEOUT")
    assert_stays_stopped(rig, LIMIT_COMMAND_TIMEOUT, ticks=8)


def test_missing_or_stale_scan_stops(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, command=(0.4, 0.0), scanning=False)
    start_monitor(ros_executor, scan_timeout=0.3)
    wait_for(lambda: rig.stopped_by(LIMIT_SCAN_TIMEOUT), 10.0, "zero with LIMIT_SCAN_TIMEOUT")
    assert_stays_stopped(rig, LIMIT_SCAN_TIMEOUT)
    assert set(rig.outputs_after(0)) == {(0.0, 0.0)}, "never moved without a scan"
    rig.scanning = True
    wait_for(lambda: rig.passes(0.4), 5.0, "the command through with scans")
    rig.scanning = False  # the scanner dies while driving
    wait_for(lambda: rig.stopped_by(LIMIT_SCAN_TIMEOUT), 5.0, "zero once the scan is stale")


@pytest.mark.parametrize(
    "broken",
    [{"range_max": math.nan}, {"angle_increment": 0.0}, {"ranges": []}],
    ids=["nan-range-max", "no-increment", "no-beams"],
)
def test_malformed_scans_do_not_count_as_fresh(
    ros_executor: SpinningExecutor, broken: dict[str, Any]
) -> None:
    rig = Rig(ros_executor, command=(0.4, 0.0))
    start_monitor(ros_executor, scan_timeout=0.3)
    wait_for(lambda: rig.passes(0.4), 10.0, "the command through")
    rig.scan_fields = broken  # e.g. a NaN range_max would make every beam invalid: blind
    wait_for(lambda: rig.stopped_by(LIMIT_SCAN_TIMEOUT), 5.0, "zero with LIMIT_SCAN_TIMEOUT")


def test_remote_estop_latches_until_reset(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, command=(0.5, 0.0))
    start_monitor(ros_executor)
    wait_for(lambda: rig.passes(0.5), 10.0, "the command through")

    assert estop_remote(rig, True).success
    wait_for(lambda: rig.stopped_by(LIMIT_ESTOP_REMOTE), 5.0, "zero with LIMIT_ESTOP_REMOTE")
    assert rig.state().estop_remote
    refused = reset(rig)
    assert not refused.success
    assert "still asserted" in refused.message

    released = estop_remote(rig, False)
    assert released.success
    assert "safety/reset" in released.message
    assert_stays_stopped(rig, LIMIT_ESTOP_REMOTE)  # fresh commands keep coming: still latched
    assert rig.state().estop_remote

    accepted = reset(rig)
    assert accepted.success, accepted.message
    wait_for(lambda: rig.passes(0.5), 5.0, "fresh commands through after the reset")
    assert not rig.state().estop_remote


def test_hardware_estop_refuses_reset_while_pressed(ros_executor: SpinningExecutor) -> None:
    from std_msgs.msg import Bool

    rig = Rig(ros_executor, command=(0.5, 0.0))
    start_monitor(ros_executor)
    wait_for(lambda: rig.passes(0.5), 10.0, "the command through")

    rig.estop_pub.publish(Bool(data=True))
    wait_for(lambda: rig.stopped_by(LIMIT_ESTOP_HARDWARE), 5.0, "zero with LIMIT_ESTOP_HARDWARE")
    refused = reset(rig)
    assert not refused.success
    assert "still pressed" in refused.message

    rig.estop_pub.publish(Bool(data=False))
    assert_stays_stopped(rig, LIMIT_ESTOP_HARDWARE)
    assert rig.state().estop_hardware
    assert reset(rig).success
    wait_for(lambda: rig.passes(0.5), 5.0, "fresh commands through after the reset")


def test_mass_class_and_zone_caps_clip_the_command(ros_executor: SpinningExecutor) -> None:
    from std_msgs.msg import Float32

    rig = Rig(ros_executor, command=(6.0, 0.3))  # 21.6 km/h, over the 65 kg class's 15 km/h
    start_monitor(ros_executor)
    cap = 15 * KMH
    wait_for(lambda: rig.passes(cap, 0.3 * cap / 6.0, LIMIT_SPEED_CAP), 10.0,
             "the command clipped to 15 km/h, arc kept")

    rig.zone_cap_pub.publish(Float32(data=5 * KMH))  # a park
    park = float(np.float32(5 * KMH))
    wait_for(lambda: rig.passes(park, 0.3 * park / 6.0, LIMIT_SPEED_CAP | LIMIT_ZONE_CAP), 5.0,
             "the command clipped to the zone's 5 km/h")

    rig.zone_cap_pub.publish(Float32(data=math.inf))  # out of the park
    wait_for(lambda: rig.passes(cap, 0.3 * cap / 6.0, LIMIT_SPEED_CAP), 5.0, "15 km/h again")

    rig.zone_cap_pub.publish(Float32(data=math.nan))  # not a speed: fail safe
    wait_for(lambda: rig.stopped_by(LIMIT_ZONE_CAP), 5.0, "a stop on a NaN zone cap")


def test_markers_for_a_moving_cluster_in_the_odom_frame(ros_executor: SpinningExecutor) -> None:
    # The robot stands at (10, 5) facing +y in odom; a pedestrian 3 m ahead of the scanner
    # walks to the robot's left (+y in base_link, -x in odom) at 0.5 m/s.
    rig = Rig(ros_executor, command=(0.0, 0.0),
              circles=lambda t: [(3.0, -1.0 + 0.5 * t, 0.2)])
    rig.odom_pose = (10.0, 5.0, math.pi / 2)
    start_monitor(ros_executor)

    def moving_track() -> tuple[Any, Any] | None:
        from visualization_msgs.msg import Marker

        with rig._lock:
            latest = rig.markers[-1].markers if rig.markers else []
        cylinders = {m.id: m for m in latest if m.ns == "obstacles" and m.type == Marker.CYLINDER}
        for arrow in latest:
            if arrow.ns == "obstacle_velocity" and arrow.type == Marker.ARROW:
                start, end = arrow.points
                if math.hypot(end.x - start.x + 0.5, end.y - start.y) < 0.15 and (
                        arrow.id in cylinders):
                    return cylinders[arrow.id], arrow
        return None

    wait_for(lambda: moving_track() is not None, 10.0, "a track moving at -0.5 m/s along x")
    found = moving_track()
    assert found is not None
    cylinder, arrow = found
    assert cylinder.header.frame_id == arrow.header.frame_id == "odom"
    # 3.55 m ahead of the robot (less the visible arc's centroid bias), i.e. +y in odom.
    assert cylinder.pose.position.y == pytest.approx(5.0 + 3.55 - 0.15, abs=0.15)
    assert 0.3 <= cylinder.scale.x <= 0.5
    assert cylinder.lifetime.sec > 0

    track_id = cylinder.id
    rig.circles = []  # the pedestrian is gone: its markers are deleted, not left behind

    def deleted() -> bool:
        from visualization_msgs.msg import Marker

        with rig._lock:
            return any(m.action == Marker.DELETE and m.id == track_id and m.ns == "obstacles"
                       for array in rig.markers for m in array.markers)

    wait_for(deleted, 5.0, f"a DELETE for track {track_id}")


def test_sim_time_stamps_and_staleness_follow_the_node_clock(
    ros_executor: SpinningExecutor,
) -> None:
    rig = Rig(ros_executor, command=(0.5, 0.0), sim_start=100.0)
    start_monitor(ros_executor, use_sim_time=True)
    wait_for(lambda: rig.passes(0.5), 10.0, "sim-time stamped commands through")
    assert 100 <= rig.outputs[-1].header.stamp.sec < 1000, "stamped with the simulation clock"
    rig.stamp_with_wall_clock = True  # a publisher that ignores use_sim_time
    wait_for(lambda: rig.stopped_by(LIMIT_COMMAND_TIMEOUT | LIMIT_SCAN_TIMEOUT), 5.0,
             "wall-clock stamps judged stale against sim time")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"slowdown_scale": 1.5}, r"slowdown_scale: must be in \[0, 1\]"),
        ({"stop_zon": [0.9, 0.3, -0.1, 0.3, -0.1, -0.3]}, "unknown safety parameter.*stop_zon"),
        ({"total_mass_kg": None}, "total_mass_kg: required parameter is missing"),
        ({k: None for k in CONFIG}, "no safety configuration: start with .*--params-file"),
        ({"footprint": "wide"}, "footprint: expected a list of numbers"),
        ({"tracking_alpha": 0.0}, "tracking_alpha"),
        ({"control_rate_hz": 0.0}, "control_rate_hz"),
    ],
    ids=["out-of-range", "typo", "missing", "no-config", "wrong-type", "tracking", "rate"],
)
def test_bad_parameter_refuses_to_start(
    ros_context: Any, overrides: dict[str, Any], message: str
) -> None:
    from delivery_robot.nodes.safety_monitor import SafetyMonitorNode

    with pytest.raises(ValueError, match=message) as refused:
        SafetyMonitorNode(context=ros_context, parameter_overrides=params(**overrides))
    assert "\n" not in str(refused.value)


def test_every_core_parameter_is_declared_with_a_description(ros_context: Any) -> None:
    from delivery_robot.nodes.safety_monitor import SafetyMonitorNode, parameter_descriptions

    node = SafetyMonitorNode(context=ros_context, parameter_overrides=params())
    try:
        names = parameter_descriptions()
        assert set(CONFIG) <= set(names), "every key of config/safety.yaml is a parameter"
        for name in [*names, "control_rate_hz"]:
            description = node.describe_parameter(name).description
            assert description, name
            assert not description.startswith("see "), name
        assert node.get_parameter("stop_zone_reverse").value is None  # the core's default
    finally:
        node.destroy_node()

"""safety_monitor: the last gate between navigation's `cmd_vel` and the base's `cmd_vel_safe`.

A thin rclpy wrapper: every decision is made by `delivery_robot.safety_gate.SafetyGate`, and
obstacle tracks come from `delivery_robot.obstacle_tracking.ObstacleTracker`. This node only
converts messages, keeps time and publishes.

Timing:
- `cmd_vel_safe` is published by a timer at `control_rate_hz`, whether or not commands or
  scans arrive, so the command and scan watchdogs stop the robot when their inputs go quiet.
- A new scan, an e-stop or a zone cap that turns the output into a stop publishes the zero at
  once, out of cycle, so the stop latency is not a control period (at the 15 km/h cap the
  robot covers 21 cm in one 20 Hz period, most of the stop zone's margin).
- `safety/state` is published on every change of what an operator acts on (limits, e-stops,
  interventions, speed scale and cap) and at least every `STATE_HEARTBEAT_S`, which also
  refreshes the nearest obstacle (it changes at every scan while the robot moves: publishing
  it at the scan rate was a tenth of a simulated robot's CPU).
- Time is the node clock (`use_sim_time` honoured); command and scan freshness compare their
  header stamps with it. A zero stamp (an unstamped publisher) counts as the arrival time.

Obstacle tracks go into the fixed frame of `odom` when a fresh odometry pose is available
(then their velocities also feed approach mode if `approach_use_obstacle_velocity`), else
into base_link, where the robot's own motion looks like obstacle motion, so velocities are
then only shown, never used. Tracking runs only when something uses it.

Parameters are those of config/safety.yaml (the keys `SafetyConfig.from_params` and
`TrackerConfig.from_params` understand), declared once with descriptions and without defaults
of their own: what the params file leaves out takes the core's defaults, and the core
validates everything (a bad or unknown key refuses the start with a one-line ValueError).
The scanner's mount comes from `laser_pose` (no TF lookup here).
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from delivery_interfaces.msg import SafetyState
from geometry_msgs.msg import Point, TwistStamped, Vector3
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import LaserScan
from std_msgs.msg import Bool, ColorRGBA, Float32, Header
from std_srvs.srv import SetBool, Trigger
from visualization_msgs.msg import Marker, MarkerArray

from delivery_robot.obstacle_tracking import (
    PARAM_PREFIX as TRACKING_PREFIX,
)
from delivery_robot.obstacle_tracking import (
    ObstacleTracker,
    TrackerConfig,
    TrackingResult,
)
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS
from delivery_robot.safety_gate import (
    GateOutput,
    LaserScanData,
    Pose2D,
    SafetyConfig,
    SafetyGate,
    SafetyLimit,
    SafetyStatus,
    VelocityCommand,
)

BASE_FRAME = "base_link"
STATE_HEARTBEAT_S = 0.5  # safety/state at least this often (>= 1 Hz with a control tick spare)
ODOM_MAX_AGE_S = 0.5  # an odometry pose further than this from the scan's stamp is not used
MARKER_LIFETIME_S = 1.0  # rviz drops markers on its own if the monitor stops publishing
MARKER_HEIGHT_M = 1.0
ARROW_HORIZON_S = 1.0  # a velocity arrow is as long as the track moves in this time
OBSTACLE_NS = "obstacles"
VELOCITY_NS = "obstacle_velocity"

# Bits that stop the robot and that an operator should see in the log when they come and go.
_LOGGED_STOPS = {
    SafetyLimit.ESTOP_HARDWARE: "hardware e-stop latched",
    SafetyLimit.ESTOP_REMOTE: "remote e-stop latched",
    SafetyLimit.SCAN_TIMEOUT: "scan stale or missing",
    SafetyLimit.COMMAND_TIMEOUT: "no fresh cmd_vel",
}

SAFETY_PARAMETERS: dict[str, str] = {
    "total_mass_kg": "Robot plus heaviest payload, kg; picks the legal speed cap "
    "(<= 100 kg: 15 km/h, <= 230 kg: 10 km/h, heavier: 5 km/h)",
    "footprint": "Robot outline in base_link, flat [x1, y1, x2, y2, ...] in m",
    "stop_zone": "Any obstacle here stops the robot (driving forwards); flat polygon in "
    "base_link, m",
    "slowdown_zone": "Any obstacle here scales the command by slowdown_scale; flat polygon in "
    "base_link, m",
    "slowdown_scale": "Speed factor while the slowdown zone is occupied, 0..1",
    "stop_zone_reverse": "Stop zone while reversing; unset: stop_zone mirrored about the "
    "footprint's mid-length",
    "slowdown_zone_reverse": "Slowdown zone while reversing; unset: slowdown_zone mirrored",
    "laser_pose": "Scanner pose in base_link [x m, y m, yaw rad]",
    "min_points": "Scan points a zone or the approach path must hold before it counts (noise)",
    "approach_enabled": "Keep the time to collision along the commanded arc at least "
    "time_before_collision",
    "time_before_collision": "Approach threshold, s",
    "approach_linear_resolution": "Approach check: footprint sampled every this many m",
    "approach_angular_resolution": "Approach check: footprint sampled every this many rad",
    "approach_max_samples": "Approach check: at most this many footprint poses per command",
    "approach_use_obstacle_velocity": "Approach check also predicts tracked obstacles along "
    "their velocity (used only while odom gives a fixed frame)",
    "max_linear_accel": "Largest speed-up, m/s^2 (slowing down is never limited)",
    "max_angular_accel": "Largest turn-rate increase, rad/s^2",
    "command_timeout": "Stop when the newest cmd_vel stamp is older than this, s",
    "scan_timeout": "Stop when the newest scan stamp is older than this, s",
    "rotation_clearance": "Turning on the spot: margin beyond the footprint's circumradius; "
    "scan points inside that circle stop the turn (the zones do not), m",
}
TRACKING_PARAMETERS: dict[str, str] = {
    "cluster_distance": "Smallest gap between neighbouring points that splits a cluster, m",
    "cluster_gap_beams": "... or this many beam spacings at that range, if wider",
    "min_cluster_points": "Clusters with fewer points are noise",
    "max_cluster_radius": "Wider clusters are structure (walls, cars): shown, not tracked, m",
    "gate_distance": "Largest prediction-to-cluster distance that continues a track, m",
    "alpha": "Alpha-beta filter position gain, (0, 1]",
    "beta": "Alpha-beta filter velocity gain, (0, 2)",
    "max_missed": "Scans a track may go unseen before it is dropped",
    "min_hits_for_velocity": "Updates a track needs before its velocity is used or shown",
}


def parameter_descriptions() -> dict[str, str]:
    """Every safety and tracking parameter the core understands, with its description."""
    descriptions: dict[str, str] = {}
    for item in fields(SafetyConfig):
        descriptions[item.name] = SAFETY_PARAMETERS.get(item.name, "see safety_gate.SafetyConfig")
    for item in fields(TrackerConfig):
        descriptions[TRACKING_PREFIX + item.name] = TRACKING_PARAMETERS.get(
            item.name, "see obstacle_tracking.TrackerConfig"
        )
    return descriptions


def stamp_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time as float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def yaw_of(orientation: Any) -> float:
    """Yaw (rad) of a geometry_msgs/Quaternion."""
    q = orientation
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


@dataclass(frozen=True)
class _OdomPose:
    frame_id: str
    pose: Pose2D
    stamp: float


class SafetyMonitorNode(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("safety_monitor", **node_options)
        try:
            self._configure()
        except ValueError:
            self.destroy_node()  # a refused start must not leave a half-made node behind
            raise

    # ---- set-up ------------------------------------------------------------------------------

    def _configure(self) -> None:
        self.control_rate_hz = float(
            declare(self, "control_rate_hz", 20.0, "Rate of cmd_vel_safe, Hz (1..1000)")
        )
        if not 1.0 <= self.control_rate_hz <= 1000.0:
            raise ValueError(f"control_rate_hz: must be in [1, 1000], got {self.control_rate_hz}")
        params = self._declare_core_parameters()
        if not params.keys() & {"total_mass_kg", "footprint", "stop_zone", "slowdown_zone"}:
            raise ValueError(
                "no safety configuration: start with --ros-args --params-file "
                "config/safety.yaml (installed in share/delivery_robot/config)"
            )
        try:
            config = SafetyConfig.from_params(params)
            tracker_config = TrackerConfig.from_params(params)
        except ValueError as error:
            raise ValueError(f"safety_monitor parameters: {error}") from None
        self.config = config
        self.gate = SafetyGate(config)
        self.tracker = ObstacleTracker(tracker_config, laser_pose=config.laser_pose)

        self._odom: _OdomPose | None = None
        self._tracking_frame: str | None = None
        self._marker_ids: set[int] = set()
        self._arrow_ids: set[int] = set()
        self._last_published = (0.0, 0.0)
        self._state_key: tuple[Any, ...] | None = None
        self._state_time: float | None = None
        self._logged_stops = 0
        self._hw_pressed = False
        self._zone_cap: float | None = None
        self._warned: set[str] = set()

        self.command_publisher = self.create_publisher(TwistStamped, "cmd_vel_safe", COMMAND_QOS)
        self.state_publisher = self.create_publisher(SafetyState, "safety/state", STATE_QOS)
        self.marker_publisher = self.create_publisher(MarkerArray, "safety/obstacles", 10)
        self.create_subscription(TwistStamped, "cmd_vel", self._on_command, COMMAND_QOS)
        self.create_subscription(LaserScan, "scan", self._on_scan, SENSOR_QOS)
        self.create_subscription(Odometry, "odom", self._on_odom, SENSOR_QOS)
        self.create_subscription(Bool, "estop", self._on_hardware_estop, STATE_QOS)
        self.create_subscription(Float32, "zone_speed_cap", self._on_zone_cap, STATE_QOS)
        self.create_service(SetBool, "safety/remote_estop", self._on_remote_estop)
        self.create_service(Trigger, "safety/reset", self._on_reset)
        self.create_timer(1.0 / self.control_rate_hz, self._on_control_tick)
        self.get_logger().info(
            f"safety gate up: {self.control_rate_hz:g} Hz, speed cap "
            f"{config.speed_cap:.2f} m/s ({config.total_mass_kg:g} kg), command timeout "
            f"{config.command_timeout:g} s, scan timeout {config.scan_timeout:g} s"
        )

    def _declare_core_parameters(self) -> dict[str, Any]:
        """Declare every core parameter (no default: unset ones take the core's) and read them.

        Dynamic typing lets the core judge types (so `command_timeout: 1` is fine and a string
        is refused by name); read-only because a changed zone must be validated at start-up.
        Params-file keys that match no parameter are handed to the core too, which refuses
        them by name: a typo must not silently drop a safety rule.
        """
        values: dict[str, Any] = {}
        for name, description in parameter_descriptions().items():
            descriptor = ParameterDescriptor(
                description=description, dynamic_typing=True, read_only=True
            )
            value = self.declare_parameter(name, None, descriptor).value
            if value is not None:
                values[name] = list(value) if isinstance(value, array.array | tuple) else value
        # rclpy keeps the params-file and override values it was given here (no public API).
        overrides: dict[str, Any] = getattr(self, "_parameter_overrides", {})
        for name, parameter in overrides.items():
            if not self.has_parameter(name) and not name.startswith("qos_overrides."):
                values[name] = parameter.value
        return values

    # ---- time --------------------------------------------------------------------------------

    def _now(self) -> tuple[Time, float]:
        now = self.get_clock().now()
        return now, now.nanoseconds * 1e-9

    def _stamp_or_now(self, stamp: Any, now: float, what: str) -> float:
        seconds = stamp_seconds(stamp)
        if seconds == 0.0:
            self._warn_once(f"zero-{what}", f"{what} has no header stamp; using its arrival time")
            return now
        return seconds

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(message)

    # ---- inputs ------------------------------------------------------------------------------

    def _on_command(self, message: TwistStamped) -> None:
        _, now = self._now()
        stamp = self._stamp_or_now(message.header.stamp, now, "cmd_vel")
        twist = message.twist
        self.gate.update_command(VelocityCommand(twist.linear.x, twist.angular.z, stamp))

    def _on_scan(self, message: LaserScan) -> None:
        now_time, now = self._now()
        if not (
            len(message.ranges) > 0
            and math.isfinite(message.angle_min)
            and math.isfinite(message.angle_increment)
            and message.angle_increment != 0.0
            and message.range_min >= 0.0
            and message.range_max > message.range_min  # False for NaN: it would hide all
        ):
            # Not taken, so the scan watchdog stops the robot if only such scans arrive.
            self._warn_once("bad-scan", "ignoring LaserScan without beams, angles or range limits")
            return
        stamp = self._stamp_or_now(message.header.stamp, now, "scan")
        scan = LaserScanData(
            ranges=np.frombuffer(message.ranges, dtype=np.float32).astype(np.float64),
            angle_min=float(message.angle_min),
            angle_increment=float(message.angle_increment),
            range_min=float(message.range_min),
            range_max=float(message.range_max),
            stamp=stamp,
        )
        # Zones need no velocities: decide (and publish) a stop before tracking, which costs
        # several times the gate's own work.
        self.gate.update_scan(scan)
        self._step_event(now_time, now)
        tracking = self._track(scan)
        if tracking is None:
            return
        if self.config.approach_use_obstacle_velocity and self._tracking_frame != BASE_FRAME:
            self.gate.update_scan(scan, tracking.point_velocities_base())  # for the next step
        self._publish_markers(tracking, message.header)

    def _on_odom(self, message: Odometry) -> None:
        _, now = self._now()
        pose = message.pose.pose
        self._odom = _OdomPose(
            frame_id=message.header.frame_id or "odom",
            pose=Pose2D(pose.position.x, pose.position.y, yaw_of(pose.orientation)),
            stamp=self._stamp_or_now(message.header.stamp, now, "odom"),
        )

    def _on_hardware_estop(self, message: Bool) -> None:
        now_time, now = self._now()
        pressed = bool(message.data)
        if pressed != self._hw_pressed:
            if pressed:
                self.get_logger().warning(
                    f"E-STOP hardware PRESSED (topic estop) {self._when(now)}; {self._situation()}"
                )
            else:
                self.get_logger().info(
                    f"e-stop hardware released (topic estop) {self._when(now)}; the stop holds "
                    "until safety/reset"
                )
        self._hw_pressed = pressed
        self.gate.set_hardware_estop(pressed)
        self._step_event(now_time, now)

    def _on_zone_cap(self, message: Float32) -> None:
        """Route-graph zone cap in m/s; +inf = no zone cap; NaN or negative -> 0 (fail safe)."""
        now_time, now = self._now()
        value = float(message.data)
        cap: float | None
        if value == math.inf:
            cap = None
        elif math.isfinite(value) and value >= 0.0:
            cap = value
        else:
            cap = 0.0
            self.get_logger().error(f"zone_speed_cap {value!r} is not a speed; holding at 0 m/s")
        if cap != self._zone_cap:
            shown = "none" if cap is None else f"{cap:.3f} m/s"
            self.get_logger().info(f"zone speed cap: {shown}")
        self._zone_cap = cap
        self.gate.set_zone_speed_cap(cap)
        self._step_event(now_time, now)

    # ---- services ----------------------------------------------------------------------------

    def _on_remote_estop(
        self, request: SetBool.Request, response: SetBool.Response
    ) -> SetBool.Response:
        now_time, now = self._now()
        active = bool(request.data)
        self.gate.set_remote_estop(active)
        if active:
            self.get_logger().warning(
                f"E-STOP remote ON (service safety/remote_estop, data=true) {self._when(now)}; "
                f"{self._situation()}"
            )
            response.message = "remote e-stop latched; release it, then call safety/reset"
        else:
            self.get_logger().info(
                f"e-stop remote input released (service safety/remote_estop, data=false) "
                f"{self._when(now)}; the stop holds until safety/reset"
            )
            response.message = "remote e-stop input released; the stop holds until safety/reset"
        response.success = True
        self._step_event(now_time, now)
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        now_time, now = self._now()
        result = self.gate.reset(now)
        response.success = result.accepted
        response.message = result.reason
        if result.accepted:
            self.get_logger().info(
                f"e-stop RESET accepted (service safety/reset) {self._when(now)}: {result.reason}"
            )
        else:
            self.get_logger().warning(
                f"e-stop reset REFUSED (service safety/reset) {self._when(now)}: {result.reason}"
            )
        self._step_event(now_time, now)
        return response

    def _when(self, now: float) -> str:
        wall = datetime.now(UTC).isoformat(timespec="milliseconds")
        return f"at ros_time {now:.3f} s, wall {wall}"

    def _situation(self) -> str:
        state = self._state_key
        limits = SafetyLimit(state[0]) if state is not None else SafetyLimit.NONE
        v, w = self._last_published
        return f"last output v={v:.2f} m/s w={w:.2f} rad/s, limits {limits.name or 'none'}"

    # ---- the gate ----------------------------------------------------------------------------

    def _on_control_tick(self) -> None:
        now_time, now = self._now()
        output = self.gate.step(now)
        self._publish_command(output, now_time)
        self._publish_state(output.status, now_time, now)

    def _step_event(self, now_time: Time, now: float) -> None:
        """Step after an input changed; publish a new stop at once instead of at the next tick."""
        output = self.gate.step(now)
        stopped = output.linear == 0.0 and output.angular == 0.0
        if stopped and self._last_published != (0.0, 0.0):
            self._publish_command(output, now_time)
        self._publish_state(output.status, now_time, now)

    def _publish_command(self, output: GateOutput, now_time: Time) -> None:
        message = TwistStamped()
        message.header.stamp = now_time.to_msg()
        message.header.frame_id = BASE_FRAME
        message.twist.linear.x = output.linear
        message.twist.angular.z = output.angular
        self.command_publisher.publish(message)
        self._last_published = (output.linear, output.angular)

    def _publish_state(self, status: SafetyStatus, now_time: Time, now: float) -> None:
        """On change of what an operator acts on, else as a heartbeat."""
        key = (
            int(status.active_limits),
            status.estop_hardware,
            status.estop_remote,
            status.interventions,
            round(status.speed_scale, 2),
            round(status.max_speed, 2),
        )
        due = self._state_time is None or not 0.0 <= now - self._state_time < STATE_HEARTBEAT_S
        if key == self._state_key and not due:
            return
        self._log_stop_changes(int(status.active_limits), now)
        self._state_key = key
        self._state_time = now
        fields_ = status.message_fields()
        x, y, z = fields_.pop("nearest_obstacle")
        message = SafetyState(**fields_, nearest_obstacle=Point(x=x, y=y, z=z))
        message.header.stamp = now_time.to_msg()
        message.header.frame_id = BASE_FRAME
        self.state_publisher.publish(message)

    def _log_stop_changes(self, limits: int, now: float) -> None:
        logger = self.get_logger()
        for bit, what in _LOGGED_STOPS.items():
            was, now_on = bool(self._logged_stops & bit), bool(limits & bit)
            # One call site per severity: rclpy's logger refuses a site that changes it.
            if now_on and not was and bit == SafetyLimit.COMMAND_TIMEOUT:
                logger.info(f"stopping: {what}, {self._when(now)}")  # routine at a goal's end
            elif now_on and not was:
                logger.warning(f"stopping: {what}, {self._when(now)}")
            elif was and not now_on:
                logger.info(f"cleared: {what}, {self._when(now)}")
        self._logged_stops = limits

    # ---- tracking and markers ----------------------------------------------------------------

    def _track(self, scan: LaserScanData) -> TrackingResult | None:
        """Update the tracks if approach mode or a viewer uses them, in odom when possible."""
        odom = self._odom
        if odom is not None and abs(scan.stamp - odom.stamp) <= ODOM_MAX_AGE_S:
            frame, pose = odom.frame_id, odom.pose
        else:
            frame, pose = BASE_FRAME, Pose2D()
        wanted = self.marker_publisher.get_subscription_count() > 0 or (
            self.config.approach_use_obstacle_velocity and frame != BASE_FRAME
        )
        if not wanted or frame != self._tracking_frame:
            # Tracks from another frame (or with a gap in between) would give false velocities.
            self.tracker.reset()
            self._clear_markers()
            self._tracking_frame = frame if wanted else None
        if not wanted:
            return None
        return self.tracker.update(scan, pose)

    def _clear_markers(self) -> None:
        if not self._marker_ids:
            return
        markers = MarkerArray()
        for marker_id in sorted(self._marker_ids):
            markers.markers.append(Marker(ns=OBSTACLE_NS, id=marker_id, action=Marker.DELETE))
        for marker_id in sorted(self._arrow_ids):
            markers.markers.append(Marker(ns=VELOCITY_NS, id=marker_id, action=Marker.DELETE))
        self.marker_publisher.publish(markers)
        self._marker_ids.clear()
        self._arrow_ids.clear()

    def _publish_markers(self, result: TrackingResult, scan_header: Header) -> None:
        """A cylinder per track and an arrow for its velocity; deletes for dropped tracks."""
        header = Header(stamp=scan_header.stamp, frame_id=self._tracking_frame or BASE_FRAME)
        lifetime = Duration(sec=int(MARKER_LIFETIME_S), nanosec=0)
        markers = MarkerArray()
        shown: set[int] = set()
        arrows: set[int] = set()
        for track in result.tracks:
            shown.add(track.track_id)
            x, y = track.position
            diameter = max(2.0 * track.radius, 0.1)
            cylinder = Marker(header=header, ns=OBSTACLE_NS, id=track.track_id,
                              type=Marker.CYLINDER, action=Marker.ADD, lifetime=lifetime)
            cylinder.pose.position = Point(x=x, y=y, z=0.5 * MARKER_HEIGHT_M)
            cylinder.pose.orientation.w = 1.0
            cylinder.scale = Vector3(x=diameter, y=diameter, z=MARKER_HEIGHT_M)
            seen = track.missed == 0
            cylinder.color = (ColorRGBA(r=1.0, g=0.5, b=0.0, a=0.8) if seen
                              else ColorRGBA(r=0.6, g=0.6, b=0.6, a=0.5))
            markers.markers.append(cylinder)
            if track.hits >= result.min_hits_for_velocity:
                arrows.add(track.track_id)
                vx, vy = track.velocity
                arrow = Marker(header=header, ns=VELOCITY_NS, id=track.track_id,
                               type=Marker.ARROW, action=Marker.ADD, lifetime=lifetime)
                arrow.pose.orientation.w = 1.0
                arrow.points = [
                    Point(x=x, y=y, z=MARKER_HEIGHT_M),
                    Point(x=x + vx * ARROW_HORIZON_S, y=y + vy * ARROW_HORIZON_S,
                          z=MARKER_HEIGHT_M),
                ]
                arrow.scale = Vector3(x=0.05, y=0.1, z=0.1)  # shaft, head diameter, head length
                arrow.color = ColorRGBA(r=1.0, g=0.1, b=0.1, a=0.9)
                markers.markers.append(arrow)
        for marker_id in sorted(self._marker_ids - shown):
            markers.markers.append(Marker(header=header, ns=OBSTACLE_NS, id=marker_id,
                                          action=Marker.DELETE))
        for marker_id in sorted(self._arrow_ids - arrows):
            markers.markers.append(Marker(header=header, ns=VELOCITY_NS, id=marker_id,
                                          action=Marker.DELETE))
        self._marker_ids = shown
        self._arrow_ids = arrows
        if markers.markers and self.marker_publisher.get_subscription_count() > 0:
            self.marker_publisher.publish(markers)


def main() -> int:
    return run_node(SafetyMonitorNode)


if __name__ == "__main__":
    raise SystemExit(main())

"""base_driver: the motor/lock controller on a serial port, as a ROS 2 lifecycle node.

cmd_vel_safe (TwistStamped) -> wheel speeds on the wire; encoder reports -> odom (+ TF
odom->base_link where tf2_ros is installed); battery_state; compartment/state; estop;
/diagnostics; service compartment/set_lock. Protocol: docs/serial_protocol.md.

Threads: the serial port belongs to a `SerialPortWorker` thread (reads, writes, reconnects, the
50 Hz velocity stream, retries); executor callbacks only hand it short pure calls on the
`MotorControllerLink` under a lock, so none blocks on the port. The worker wakes the executor
through a guard condition when it has events (odometry, state changes, command results), and
this node publishes them on the executor thread.

Lifecycle: configure opens the port (the worker keeps reopening it until it is there),
activate enables the motors (an acked MOTOR_ENABLE) and starts the velocity stream; deactivate,
cleanup, shutdown, error and process exit stop the wheels, disable the motors and lock the
compartment unless its door is open. With `autostart` (default) the node configures and
activates itself, for `ros2 run` without a lifecycle manager. After a hardware e-stop the motors
stay off until the node is activated again (deactivate + activate: the deliberate reset).

compartment/state carries what the hardware knows (lock_state, door_closed); occupancy is left
UNKNOWN and handoff_state/tamper/order_id at their defaults: those are the handoff node's.
"""

from __future__ import annotations

import math
import time
from typing import Any

from delivery_interfaces.msg import CompartmentState
from delivery_interfaces.srv import SetLock
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TransformStamped, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.task import Future
from rclpy.time import Time
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Bool, Header

from delivery_robot.adapters.tf_broadcaster import TransformBroadcaster
from delivery_robot.diff_drive import DiffDriveGeometry, OdometryEstimate
from delivery_robot.motor_controller_link import (
    SUPERSEDED,
    BatteryUpdated,
    CommandDone,
    CompartmentChanged,
    EstopChanged,
    LinkConfig,
    LinkEvent,
    LinkState,
    LinkStateChanged,
    LinkStatus,
    MotorControllerLink,
    OdometryUpdated,
)
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS
from delivery_robot.serial_port_worker import SerialPortWorker
from delivery_robot.serial_protocol import BatteryReport, LockAction, LockCommand, LockStatus

_LOCK_STATE = {
    None: CompartmentState.LOCK_UNKNOWN,
    LockStatus.LOCKED: CompartmentState.LOCK_LOCKED,
    LockStatus.UNLOCKED: CompartmentState.LOCK_UNLOCKED,
    LockStatus.FAULT: CompartmentState.LOCK_FAULT,
}
# Planar robot: x, y and yaw come from the encoders; z, roll and pitch are not observed.
_POSE_COVARIANCE = [0.0] * 36
_TWIST_COVARIANCE = [0.0] * 36
for _index, (_pose, _twist) in enumerate(
    [(1e-3, 1e-3), (1e-3, 1e-3), (1e6, 1e6), (1e6, 1e6), (1e6, 1e6), (1e-2, 1e-2)]
):
    _POSE_COVARIANCE[_index * 7] = _pose
    _TWIST_COVARIANCE[_index * 7] = _twist
_EXIT_TIMEOUT_S = 1.5  # how long the exit path waits for the disable and lock ACKs


class BaseDriverNode(LifecycleNode):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("base_driver", **node_options)
        declare(self, "serial_port", "/dev/ttyACM0", "Serial device of the motor controller")
        declare(self, "baud", 115_200, "Baud rate (8N1, no flow control)")
        declare(self, "wheel_radius", 0.12, "Drive wheel radius, m")
        declare(self, "track_width", 0.48, "Distance between the drive wheels' contact points, m")
        declare(self, "encoder_ticks_per_rev", 4096, "Encoder counts per wheel revolution")
        declare(self, "max_wheel_speed", 40.0,
                "Wheel speed limit, rad/s; faster twists are scaled down along their arc")
        declare(self, "odom_frame_id", "odom", "Odometry frame (REP-105)")
        declare(self, "base_frame_id", "base_link", "Robot body frame (REP-105)")
        declare(self, "compartment_frame_id", "compartment", "frame_id of compartment/state")
        declare(self, "publish_tf", True, "Broadcast odom->base_link (needs tf2_ros)")
        declare(self, "control_rate_hz", 50.0, "WHEEL_VELOCITY stream rate")
        declare(self, "heartbeat_rate_hz", 5.0, "Heartbeat rate (link round-trip time)")
        declare(self, "cmd_timeout_s", 0.5, "Without cmd_vel_safe for this long, stream zeros")
        declare(self, "link_timeout_s", 1.0, "Without a valid frame for this long, reopen")
        declare(self, "reconnect_period_s", 0.1, "Wait between attempts to reopen the port")
        declare(self, "ack_retry_period_s", 0.1, "Resend an unanswered lock/enable after this")
        declare(self, "ack_max_tries", 10, "Give up on a lock/enable command after this many")
        declare(self, "lock_timeout_s", 2.0,
                "compartment/set_lock fails if not acknowledged within this (link down too)")
        declare(self, "diagnostics_period_s", 1.0,
                "Period of /diagnostics and of the repeated compartment/state and estop")
        self.autostart = declare(self, "autostart", True,
                                 "Configure and activate at start (no lifecycle manager needed)",
                                 read_only=True)
        self._settings()  # refuse bad parameters at start, with the reason

        self.odom_publisher = self.create_publisher(Odometry, "odom", SENSOR_QOS)
        self.battery_publisher = self.create_publisher(BatteryState, "battery_state", SENSOR_QOS)
        self.compartment_publisher = self.create_publisher(
            CompartmentState, "compartment/state", STATE_QOS)
        self.estop_publisher = self.create_publisher(Bool, "estop", STATE_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(TwistStamped, "cmd_vel_safe", self._on_cmd_vel, COMMAND_QOS)
        # Reentrant: the callback awaits the MCU's answer, and a mutually exclusive group would
        # keep the guard condition that delivers that answer from running meanwhile.
        self.create_service(SetLock, "compartment/set_lock", self._on_set_lock,
                            callback_group=ReentrantCallbackGroup())
        self._events_guard = self.create_guard_condition(self._on_link_events)
        self._tf = TransformBroadcaster(self)

        self._worker: SerialPortWorker | None = None
        self._odom_frame = str(self._param("odom_frame_id"))
        self._base_frame = str(self._param("base_frame_id"))
        self._compartment_frame = str(self._param("compartment_frame_id"))
        self._retiring: list[SerialPortWorker] = []
        self._waiters: dict[int, Future] = {}
        self._active = False
        self._tf_enabled = False
        self._link_state = LinkState.DISCONNECTED
        self._estop: bool | None = None
        self._compartment: tuple[LockStatus | None, bool | None] = (None, None)
        self.commands_received = 0
        self.commands_ignored = 0
        self._diagnostics_timer = self.create_timer(
            float(self._param("diagnostics_period_s")), self._publish_periodic)
        if self.autostart and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # -- configuration ----------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _settings(self) -> tuple[DiffDriveGeometry, LinkConfig, float]:
        """Parameters -> validated settings; ValueError names the bad one."""
        rates = {name: float(self._param(name))
                 for name in ("control_rate_hz", "heartbeat_rate_hz")}
        for name, rate in rates.items():
            if not rate > 0:
                raise ValueError(f"{name} must be > 0, got {rate}")
        if int(self._param("baud")) <= 0:
            raise ValueError("baud must be > 0")
        for name in ("reconnect_period_s", "lock_timeout_s", "diagnostics_period_s"):
            if not float(self._param(name)) > 0:
                raise ValueError(f"{name} must be > 0")
        geometry = DiffDriveGeometry(
            wheel_radius=float(self._param("wheel_radius")),
            track_width=float(self._param("track_width")),
            ticks_per_rev=int(self._param("encoder_ticks_per_rev")),
            max_wheel_speed=float(self._param("max_wheel_speed")),
        )
        config = LinkConfig(
            control_period=1.0 / rates["control_rate_hz"],
            heartbeat_period=1.0 / rates["heartbeat_rate_hz"],
            ack_retry_period=float(self._param("ack_retry_period_s")),
            ack_max_tries=int(self._param("ack_max_tries")),
            command_timeout=float(self._param("cmd_timeout_s")),
            link_timeout=float(self._param("link_timeout_s")),
        )
        return geometry, config, float(self._param("reconnect_period_s"))

    # -- lifecycle --------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Open the port: the worker thread opens it (and keeps retrying), so this returns
        at once whether or not the controller is plugged in."""
        try:
            geometry, config, reconnect_period = self._settings()
        except ValueError as error:
            self.get_logger().error(f"cannot configure: {error}")
            return TransitionCallbackReturn.FAILURE
        self._retire_worker()
        link = MotorControllerLink(geometry, config, now=time.monotonic())
        port = str(self._param("serial_port"))
        worker = SerialPortWorker(link, port, int(self._param("baud")),
                                  reconnect_period=reconnect_period,
                                  notify=self._events_guard.trigger,
                                  log=self.get_logger().info)
        worker.start()
        self._worker = worker
        self._tf_enabled = bool(self._param("publish_tf"))
        self._odom_frame = str(self._param("odom_frame_id"))
        self._base_frame = str(self._param("base_frame_id"))
        self._compartment_frame = str(self._param("compartment_frame_id"))
        self.get_logger().info(f"configured: motor controller on {port}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the motors (acked, retried) and stream velocities; also the deliberate
        reset after an e-stop."""
        worker = self._worker
        if worker is None:
            return TransitionCallbackReturn.FAILURE
        worker.call(lambda link, now: link.set_motors(True, now))
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._secure()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._retire_worker()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._retire_worker()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("lifecycle error: stopping the wheels and closing the port")
        self._active = False
        self._retire_worker()
        return TransitionCallbackReturn.SUCCESS

    def _secure(self) -> None:
        worker = self._worker
        if worker is not None:
            worker.call(lambda link, now: link.secure(now))

    def _retire_worker(self) -> None:
        """Exit path without blocking the executor: queue stop + disable + lock, and let the
        worker close the port once they are answered (or after `_EXIT_TIMEOUT_S`)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.call(lambda link, now: link.secure(now))
            worker.close_when_idle(_EXIT_TIMEOUT_S)
            self._retiring.append(worker)

    def destroy_node(self) -> None:
        """Process exit: the same exit path, waited for (this is not an executor callback)."""
        self._active = False
        worker, self._worker = self._worker, None
        closing = [*self._retiring, *([worker] if worker is not None else [])]
        try:
            for attempt in range(2):
                try:
                    if worker is not None:
                        worker.call(lambda link, now: link.secure(now))
                    for each in closing:
                        each.close(_EXIT_TIMEOUT_S)
                    break
                except KeyboardInterrupt:
                    # rclpy ends spin() on Ctrl-C from its own handler; Python's
                    # KeyboardInterrupt for the same signal can land here, late. Finish the
                    # exit path anyway (a second Ctrl-C during the retry still interrupts).
                    if attempt:
                        raise
                    self.get_logger().warning("interrupted: finishing the exit path first")
        finally:
            self._retiring.clear()
            for future in self._waiters.values():
                if not future.done():
                    future.set_result(None)
            self._waiters.clear()
            super().destroy_node()

    # -- commands in ------------------------------------------------------------------------
    def _on_cmd_vel(self, message: TwistStamped) -> None:
        worker = self._worker
        if not self._active or worker is None:
            self.commands_ignored += 1
            return
        linear, angular = message.twist.linear.x, message.twist.angular.z
        if not (math.isfinite(linear) and math.isfinite(angular)):
            self.get_logger().warning("non-finite cmd_vel_safe: stopping",
                                      throttle_duration_sec=5.0)
            linear = angular = 0.0
        self.commands_received += 1
        worker.call(lambda link, now: link.set_twist(linear, angular, now))

    async def _on_set_lock(self, request: SetLock.Request,
                           response: SetLock.Response) -> SetLock.Response:
        """Awaits the MCU's ACK/NAK without blocking the executor: the worker's CommandDone
        event (always produced, by the lock timeout at the latest) completes the future."""
        verb = "lock" if request.lock else "unlock"
        who = request.requested_by or "unknown"
        worker = self._worker
        if worker is None:
            response.success = False
            response.message = f"{verb} refused: base_driver is not configured"
            response.state = self._compartment_message(*self._compartment)
            return response
        action = LockAction.LOCK if request.lock else LockAction.UNLOCK
        timeout = float(self._param("lock_timeout_s"))
        future = Future()

        def submit(link: MotorControllerLink, now: float) -> int:
            ticket = link.request_lock(action, now, timeout)
            self._waiters[ticket] = future  # under the worker's lock: before any answer
            return ticket

        worker.call(submit)
        self.get_logger().info(f"{verb} requested by {who}")
        done = await future
        if not isinstance(done, CommandDone):  # the node is being destroyed
            response.success = False
            response.message = f"{verb} not confirmed: base_driver is shutting down"
            response.state = self._compartment_message(*self._compartment)
            return response
        response.success = done.ok
        response.message = f"{verb}: {done.detail}"
        response.state = self._compartment_message(done.lock_status, done.door_open)
        if done.ok:  # (rclpy forbids one call site logging at two severities)
            self.get_logger().info(f"{verb} requested by {who}: {done.detail}")
        else:
            self.get_logger().warning(f"{verb} requested by {who}: {done.detail}")
        return response

    # -- events out -------------------------------------------------------------------------
    def _on_link_events(self) -> None:
        """Guard condition callback: publish what the worker decoded (executor thread)."""
        workers = [*self._retiring, *([self._worker] if self._worker is not None else [])]
        for worker in workers:
            ended = not worker.running  # checked first: then its last events are in
            events: list[LinkEvent] = worker.call(
                lambda link, _now: link.take_events(), wake=False)
            for event in events:
                try:
                    self._handle(event)
                except Exception as error:  # noqa: BLE001 - one bad event must not stop the node
                    self.get_logger().error(f"cannot publish {event!r}: {error!r}")
            if ended and worker in self._retiring:
                self._retiring.remove(worker)

    def _handle(self, event: LinkEvent) -> None:
        if isinstance(event, OdometryUpdated):
            self._publish_odometry(event.estimate, self._stamp(event.received_at))
        elif isinstance(event, BatteryUpdated):
            self._publish_battery(event.report, self._stamp(event.received_at))
        elif isinstance(event, CompartmentChanged):
            self._compartment = (event.lock_status, event.door_open)
            self.compartment_publisher.publish(self._compartment_message(*self._compartment))
            bolt = "unknown" if event.lock_status is None else event.lock_status.name.lower()
            door = {None: "unknown", True: "open", False: "closed"}[event.door_open]
            self.get_logger().info(f"compartment: bolt {bolt}, door {door}")  # the lid record
        elif isinstance(event, EstopChanged):
            was_active, self._estop = self._estop, event.active
            self.estop_publisher.publish(Bool(data=event.active))
            if event.active:
                self.get_logger().warning("hardware e-stop pressed: motors off")
            elif was_active:
                self.get_logger().warning(
                    "hardware e-stop released: motors stay off until the node is re-activated")
        elif isinstance(event, CommandDone):
            self._on_command_done(event)
        elif isinstance(event, LinkStateChanged):
            self._on_link_state(event)

    def _on_command_done(self, event: CommandDone) -> None:
        future = self._waiters.pop(event.ticket, None)
        if future is not None:
            if not future.done():
                future.set_result(event)
            return
        message = event.message
        if isinstance(message, LockCommand):
            what = message.action.name.lower()
        else:
            what = "motor enable" if message.enable else "motor disable"
        if event.ok:
            self.get_logger().info(f"{what}: {event.detail}")
        elif event.detail == SUPERSEDED:
            # e.g. the disable sent at the handshake, overtaken by activate's enable
            self.get_logger().debug(f"{what}: {event.detail}")
        else:
            self.get_logger().warning(f"{what}: {event.detail}")

    def _on_link_state(self, event: LinkStateChanged) -> None:
        was, self._link_state = self._link_state, event.state
        logger = self.get_logger()
        if event.state is LinkState.READY and event.firmware is not None:
            fw = event.firmware
            logger.info(f"motor controller firmware {fw.major}.{fw.minor}.{fw.patch} "
                        f"build {fw.build:08x}, protocol {fw.protocol}")
        elif event.state is LinkState.INCOMPATIBLE:
            logger.error(f"motor controller refused: {event.detail}")
        elif event.state is LinkState.DISCONNECTED and was is not LinkState.HANDSHAKE:
            # (A port that opens but never answers cycles HANDSHAKE -> DISCONNECTED each link
            # timeout; that is logged once by the worker, and /diagnostics shows it.)
            logger.warning(f"motor controller link down: {event.detail}")
        self._publish_diagnostics()

    def _stamp(self, received_at: float) -> Time:
        """Host receive time of a report on the ROS clock (the link works in monotonic time)."""
        age = max(0.0, time.monotonic() - received_at)
        return self.get_clock().now() - Duration(nanoseconds=int(age * 1e9))

    def _publish_odometry(self, estimate: OdometryEstimate, stamp: Time) -> None:
        header = Header(stamp=stamp.to_msg(), frame_id=self._odom_frame)
        child = self._base_frame
        message = Odometry(header=header, child_frame_id=child)
        pose = message.pose.pose
        pose.position.x, pose.position.y = estimate.x, estimate.y
        pose.orientation.z = math.sin(estimate.yaw / 2.0)
        pose.orientation.w = math.cos(estimate.yaw / 2.0)
        message.pose.covariance = _POSE_COVARIANCE
        message.twist.twist.linear.x = estimate.linear
        message.twist.twist.angular.z = estimate.angular
        message.twist.covariance = _TWIST_COVARIANCE
        self.odom_publisher.publish(message)
        if self._tf_enabled and self._tf.available:
            transform = TransformStamped(header=header, child_frame_id=child)
            transform.transform.translation.x = estimate.x
            transform.transform.translation.y = estimate.y
            transform.transform.rotation = pose.orientation
            self._tf.send(transform)

    def _publish_battery(self, report: BatteryReport, stamp: Time) -> None:
        message = BatteryState(
            header=Header(stamp=stamp.to_msg(), frame_id=self._base_frame),
            voltage=report.voltage, current=report.current, percentage=report.state_of_charge,
            charge=math.nan, capacity=math.nan, design_capacity=math.nan, present=True)
        if not report.charger_connected:
            message.power_supply_status = BatteryState.POWER_SUPPLY_STATUS_DISCHARGING
        elif report.state_of_charge >= 0.999:
            message.power_supply_status = BatteryState.POWER_SUPPLY_STATUS_FULL
        elif report.current > 0:
            message.power_supply_status = BatteryState.POWER_SUPPLY_STATUS_CHARGING
        else:
            message.power_supply_status = BatteryState.POWER_SUPPLY_STATUS_NOT_CHARGING
        self.battery_publisher.publish(message)

    def _compartment_message(self, status: LockStatus | None,
                             door_open: bool | None) -> CompartmentState:
        header = Header(stamp=self.get_clock().now().to_msg(),
                        frame_id=self._compartment_frame)
        return CompartmentState(header=header, lock_state=_LOCK_STATE[status],
                                door_closed=door_open is False,
                                occupancy=CompartmentState.OCCUPANCY_UNKNOWN)

    def _publish_periodic(self) -> None:
        """compartment/state >= 1 Hz (its contract), estop and diagnostics."""
        if self._compartment != (None, None):
            self.compartment_publisher.publish(self._compartment_message(*self._compartment))
        if self._estop is not None:
            self.estop_publisher.publish(Bool(data=self._estop))
        self._publish_diagnostics()

    def link_status(self) -> LinkStatus | None:
        worker = self._worker
        return None if worker is None else worker.call(
            lambda link, now: link.status(now), wake=False)

    def _publish_diagnostics(self) -> None:
        status = self.link_status()
        port = str(self._param("serial_port"))
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [_link_diagnostics(status, port), _motor_diagnostics(status, self._active)]
        self.diagnostics_publisher.publish(array)


def _value(value: object) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _link_diagnostics(status: LinkStatus | None, port: str) -> DiagnosticStatus:
    diagnostic = DiagnosticStatus(name="base_driver: serial link", hardware_id=port)
    if status is None:
        diagnostic.level = DiagnosticStatus.STALE
        diagnostic.message = "not configured"
        return diagnostic
    rx = status.rx
    if status.state is LinkState.READY:
        damaged = rx.crc_errors + rx.header_errors + rx.truncated_frames
        if status.last_frame_age is not None and status.last_frame_age > 0.5:
            diagnostic.level, diagnostic.message = DiagnosticStatus.WARN, "controller silent"
        elif damaged > 0.01 * max(1, rx.frames):
            diagnostic.level, diagnostic.message = DiagnosticStatus.WARN, "noisy link"
        else:
            diagnostic.level, diagnostic.message = DiagnosticStatus.OK, "connected"
    elif status.state is LinkState.HANDSHAKE:
        diagnostic.level, diagnostic.message = DiagnosticStatus.WARN, "waiting for the firmware"
    elif status.state is LinkState.INCOMPATIBLE:
        diagnostic.level = DiagnosticStatus.ERROR
        diagnostic.message = "firmware speaks another protocol version"
    else:
        diagnostic.level, diagnostic.message = DiagnosticStatus.ERROR, "disconnected"
    fw = status.firmware
    firmware = "unknown" if fw is None else (
        f"{fw.major}.{fw.minor}.{fw.patch} build {fw.build:08x} protocol {fw.protocol}")
    values = {
        "state": status.state.value,
        "firmware": firmware,
        "connects": status.connects,
        "frames received": rx.frames,
        "bytes received": rx.bytes_received,
        "crc errors": rx.crc_errors,
        "header errors": rx.header_errors,
        "truncated frames": rx.truncated_frames,
        "resyncs": rx.resyncs,
        "lost frames": rx.lost_frames,
        "malformed frames": rx.malformed_frames,
        "unknown frames": rx.unknown_frames,
        "version errors": rx.version_errors,
        "dropped bytes": rx.dropped_bytes,
        "frames sent": status.tx_frames,
        "bytes sent": status.tx_bytes,
        "ack retries": status.ack_retries,
        "ack timeouts": status.ack_timeouts,
        "naks": status.naks,
        "stray replies": status.stray_replies,
        "heartbeat rtt last ms": status.rtt_last_ms,
        "heartbeat rtt mean ms": status.rtt_mean_ms,
        "heartbeat rtt max ms": status.rtt_max_ms,
        "command to report ms": status.command_latency_ms,
        "last frame age s": status.last_frame_age,
        "pending commands": status.pending_commands,
    }
    diagnostic.values = [KeyValue(key=key, value=_value(value)) for key, value in values.items()]
    return diagnostic


def _motor_diagnostics(status: LinkStatus | None, active: bool) -> DiagnosticStatus:
    diagnostic = DiagnosticStatus(name="base_driver: motors and e-stop", hardware_id="base")
    if status is None:
        diagnostic.level, diagnostic.message = DiagnosticStatus.STALE, "not configured"
        return diagnostic
    if status.estop_active:
        diagnostic.level, diagnostic.message = DiagnosticStatus.WARN, "e-stop pressed"
    elif status.estop_latched:
        diagnostic.level = DiagnosticStatus.WARN
        diagnostic.message = "e-stop released: re-activate the node to enable the motors"
    elif active and status.motors_enabled is False:
        diagnostic.level, diagnostic.message = DiagnosticStatus.WARN, "motors not enabled yet"
    else:
        diagnostic.level = DiagnosticStatus.OK
        diagnostic.message = "motors enabled" if status.motors_enabled else "motors off"
    values = {
        "active": active,
        "motors wanted": status.motors_wanted,
        "motors enabled": status.motors_enabled,
        "e-stop active": status.estop_active,
        "e-stop latched": status.estop_latched,
        "watchdog trips": status.watchdog_trips,
        "odometry resets": status.odometry_resets,
    }
    diagnostic.values = [KeyValue(key=key, value=_value(value)) for key, value in values.items()]
    return diagnostic


def main() -> int:
    return run_node(BaseDriverNode)


if __name__ == "__main__":
    raise SystemExit(main())

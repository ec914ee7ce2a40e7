"""navigation: the `navigate` action (go to a route-graph waypoint or a map pose) per robot.

A thin rclpy wrapper; routing and driving are decided by the core (`RoutePlanner`, `Navigator`)
or by Nav2 (`delivery_robot.adapters.nav2_navigator`). Backend by parameter `backend`:
- `builtin`: the core Navigator; a control timer at `control_rate_hz` calls `nav.step(pose,
  now)` and publishes `cmd_vel` (TwistStamped, frame base_link, COMMAND_QOS).
- `nav2`: our planned route driven by Nav2's BasicNavigator in a thread of its own (see the
  adapter); this node publishes no `cmd_vel` then (Nav2's controller does), and the goal's
  `max_speed` is not passed on (Nav2 takes speed limits on its own `speed_limit` topic).

Never blocking the executor: the action's execute callback is a coroutine that awaits an rclpy
Future; the control timer completes that Future when the goal ends (arrived, failed, canceled,
preempted). So one SingleThreadedExecutor serves odometry, the timer and the action at once.

One goal at a time: a new goal preempts the running one, which is ABORTED with code CANCELED
and message "preempted by a new goal" (the robot is not stopped in between: the new goal's
first command follows in the next control step). A cancel request is accepted, and the next
control step stops the robot (a zero cmd_vel) and ends the goal CANCELED.

Pose: `odom` (nav_msgs/Odometry) moved into the map frame by the fixed offset `odom_to_map`
[x, y, yaw]. In the headless simulator odometry starts at zero at the robot's start pose, so
`odom_to_map` is that start pose; on robots with localisation a map-pose source will replace
this. A pose older than `pose_timeout_s` (node clock, receipt time) holds the robot at zero;
odometry silent for twice that ends the goal FAILED (as does none within `pose_timeout_s` of a
goal's arrival). The zone speed cap of the current position is published on `zone_speed_cap`
(Float32 m/s, STATE_QOS, +inf outside capped zones) on change, for the safety monitor, with
either backend.

Time is the node clock (`use_sim_time` honoured), also for crosswalk signal cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from delivery_interfaces.action import Navigate
from geometry_msgs.msg import Pose, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.node import Node
from rclpy.task import Future
from std_msgs.msg import Float32

from delivery_robot.adapters.nav2_navigator import (
    Mode,
    Nav2Navigator,
    Nav2Task,
    NavigatorFactory,
)
from delivery_robot.path_tracking import (
    STOP,
    Navigator,
    NavigatorParams,
    TrackerParams,
    VelocityCommand,
)
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.paths import share_file
from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS
from delivery_robot.route_graph import RouteGraph, load_route_graph
from delivery_robot.route_planner import Goal, NavCode, PlannerParams, Pose2D, RoutePlanner

BASE_FRAME = "base_link"
MAP_FRAME = "map"
PREEMPTED = "preempted by a new goal"

# Descriptions of the core parameters worth explaining; the rest point at their dataclass.
_CORE_DESCRIPTIONS: dict[str, str] = {
    "max_speed": "Cruise cap, m/s (lane limits and the goal's max_speed cap further)",
    "xy_goal_tolerance": "Goal reached within this distance, m",
    "yaw_goal_tolerance": "Goal heading reached within this angle, rad",
    "max_linear_accel": "Largest speed-up, m/s^2",
    "max_linear_decel": "Largest slow-down, m/s^2",
    "max_angular_speed": "Largest turn rate, rad/s",
    "progress_distance": "No progress of this many m along the route ...",
    "progress_timeout_s": "... within this many s: the lane counts as blocked (close, replan)",
    "replan_on_blocked": "Close a blocked lane and replan (else end the goal BLOCKED)",
    "max_replans": "Replans per goal before giving up",
    "closure_s": "How long a blocked lane stays closed, s; <= 0: the planner's reopen_after_s",
    "reopen_after_s": "Default time a reported-blocked lane stays closed, s",
    "off_graph_speed": "Speed on straight joins between a pose and the route graph, m/s",
    "max_join_distance": "A pose farther than this from every lane has no path, m",
    "keep_right": "Drive right of two-way lanes as the route graph's keep_right says",
}


def yaw_of(q: Any) -> float:
    """Yaw (rad) of a geometry_msgs/Quaternion."""
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def odom_to_map_pose(odom: Pose2D, offset: Pose2D) -> Pose2D:
    """The map pose of an odom-frame pose, `offset` being the odom frame's pose in map."""
    c, s = math.cos(offset.yaw), math.sin(offset.yaw)
    yaw = math.atan2(math.sin(offset.yaw + odom.yaw), math.cos(offset.yaw + odom.yaw))
    return Pose2D(offset.x + c * odom.x - s * odom.y, offset.y + s * odom.x + c * odom.y, yaw)


def goal_from_message(goal: Any) -> Goal | str:
    """Our Goal from a Navigate goal, or an error message (str prefixed "!") if unusable.
    A zero quaternion means "any final heading"."""
    if goal.waypoint:
        return str(goal.waypoint)
    frame = goal.pose.header.frame_id
    if frame not in ("", MAP_FRAME):
        return f"!goal pose must be in frame {MAP_FRAME!r}, got {frame!r}"
    p, q = goal.pose.pose.position, goal.pose.pose.orientation
    if q.x == 0.0 and q.y == 0.0 and q.z == 0.0 and q.w == 0.0:
        return (float(p.x), float(p.y))
    return (float(p.x), float(p.y), yaw_of(q))


def pose_message(pose: Pose2D) -> Pose:
    msg = Pose()
    msg.position.x, msg.position.y = pose.x, pose.y
    msg.orientation.z, msg.orientation.w = math.sin(pose.yaw / 2.0), math.cos(pose.yaw / 2.0)
    return msg


@dataclass
class _Job:
    """One accepted goal: the handle, the Future its execute coroutine awaits, and progress."""

    handle: ServerGoalHandle
    future: Future
    goal: Goal
    max_speed: float | None
    started: bool = False  # the backend has it (waits for a first pose otherwise)
    received_at: float = 0.0
    nav2: Nav2Task | None = None
    cancel_sent: bool = False
    travelled: float = 0.0  # m, for the nav2 backend (the builtin Navigator counts its own)
    last_pose: Pose2D | None = None
    last_feedback_at: float = -math.inf


class NavigationNode(Node):
    def __init__(self, *, nav2_factory: NavigatorFactory | None = None,
                 **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests);
        `nav2_factory` replaces the real BasicNavigator (tests inject a stand-in)."""
        super().__init__("navigation", **node_options)
        self._nav2: Nav2Navigator | None = None
        try:
            self._configure(nav2_factory)
        except ValueError:
            self.destroy_node()  # a refused start must not leave a half-made node behind
            raise

    # ---- set-up ------------------------------------------------------------------------------

    def _configure(self, nav2_factory: NavigatorFactory | None) -> None:
        self.backend = declare(self, "backend", "builtin", "builtin (route graph + pure "
                               "pursuit on odom) or nav2 (Nav2 via BasicNavigator)", True)
        if self.backend not in ("builtin", "nav2"):
            raise ValueError(f"backend: must be 'builtin' or 'nav2', got {self.backend!r}")
        world = declare(self, "world", "town", "World name: share/config/worlds/<world>.yaml")
        route_file = declare(self, "route_graph_file", "", "Route graph YAML; overrides world")
        self.control_rate_hz = float(declare(self, "control_rate_hz", 20.0,
                                             "Control (cmd_vel) and status rate, Hz"))
        if not 1.0 <= self.control_rate_hz <= 1000.0:
            raise ValueError(f"control_rate_hz: must be in [1, 1000], got {self.control_rate_hz}")
        offset = [float(v) for v in declare(
            self, "odom_to_map", [0.0, 0.0, 0.0],
            "Pose [x, y, yaw] of the odom frame in map (headless sim: the start pose)")]
        if len(offset) != 3 or not all(math.isfinite(v) for v in offset):
            raise ValueError(f"odom_to_map: must be 3 finite numbers [x, y, yaw], got {offset}")
        self.odom_to_map = Pose2D(*offset)
        self.pose_timeout_s = float(declare(self, "pose_timeout_s", 1.0,
                                            "Odometry older than this stops the robot, s"))
        self.feedback_period_s = float(declare(self, "feedback_period_s", 0.2,
                                               "Action feedback at most this often, s"))
        nav2_mode = declare(self, "nav2_mode", "through_poses",
                            "nav2 backend: through_poses (goThroughPoses) or waypoints "
                            "(followWaypoints)")
        nav2_wait = declare(self, "nav2_wait_until_active", True,
                            "nav2 backend: wait for bt_navigator before taking goals "
                            "(never for AMCL)")
        if nav2_mode not in ("through_poses", "waypoints"):
            raise ValueError(f"nav2_mode: must be through_poses or waypoints, got {nav2_mode!r}")
        if self.pose_timeout_s <= 0.0 or self.feedback_period_s < 0.0:
            raise ValueError("pose_timeout_s must be > 0 and feedback_period_s >= 0")
        planner_params = PlannerParams(**self._declare_core(PlannerParams()))
        tracker_params = TrackerParams(**self._declare_core(TrackerParams()))
        nav_values = self._declare_core(NavigatorParams(), skip={"closure_s"})
        closure = float(declare(self, "closure_s", 0.0, _CORE_DESCRIPTIONS["closure_s"]))
        nav_params = NavigatorParams(**nav_values, closure_s=closure if closure > 0 else None)

        path = Path(route_file) if route_file else share_file(f"config/worlds/{world}.yaml")
        self.route: RouteGraph = load_route_graph(path, validate=False)
        self.planner = RoutePlanner(self.route, planner_params)
        self.navigator = Navigator(self.planner, nav_params, tracker_params)
        if self.backend == "nav2":
            if nav2_factory is None:
                from delivery_robot.adapters.nav2_navigator import basic_navigator_factory

                nav2_factory = basic_navigator_factory(f"{self.get_name()}_basic_navigator",
                                                       self.get_namespace().strip("/"))
            mode: Mode = "waypoints" if nav2_mode == "waypoints" else "through_poses"
            self._nav2 = Nav2Navigator(self.planner, nav2_factory, mode=mode,
                                       wait_for_nav2=nav2_wait,
                                       log=self.get_logger().warning)

        self._job: _Job | None = None
        self._odom: Pose2D | None = None
        self._odom_at = -math.inf
        self._zone_cap: float | None = None
        self._last_cmd = STOP  # the last cmd_vel published: a goal's end stops a moving robot
        self.cmd_publisher = self.create_publisher(TwistStamped, "cmd_vel", COMMAND_QOS)
        self.zone_cap_publisher = self.create_publisher(Float32, "zone_speed_cap", STATE_QOS)
        self.create_subscription(Odometry, "odom", self._on_odom, SENSOR_QOS)
        self._server = ActionServer(
            self, Navigate, "navigate", self._execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
        )
        self.create_timer(1.0 / self.control_rate_hz, self._on_control_tick)
        self.get_logger().info(
            f"navigation up: backend {self.backend}, world {self.route.world!r} ({path}), "
            f"{self.control_rate_hz:g} Hz, odom_to_map {tuple(self.odom_to_map)}"
        )

    def _declare_core(self, defaults: Any, skip: set[str] | frozenset[str] = frozenset()
                      ) -> dict[str, Any]:
        """Declare every field of a core params dataclass (its default, a description) and
        return the values: the params file tunes the core without code here."""
        values: dict[str, Any] = {}
        cls = type(defaults).__name__
        for item in fields(defaults):
            if item.name in skip:
                continue
            description = _CORE_DESCRIPTIONS.get(item.name, f"see {cls}.{item.name}")
            values[item.name] = declare(self, item.name, getattr(defaults, item.name),
                                        description, True)
        return values

    # ---- inputs ------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_odom(self, msg: Odometry) -> None:
        p = msg.pose.pose
        odom = Pose2D(p.position.x, p.position.y, yaw_of(p.orientation))
        self._odom = odom_to_map_pose(odom, self.odom_to_map)
        self._odom_at = self._now()

    def _pose(self, now: float) -> Pose2D | None:
        """The current map pose, None when missing or older than `pose_timeout_s`."""
        if self._odom is None or now - self._odom_at > self.pose_timeout_s:
            return None
        return self._odom

    # ---- the action --------------------------------------------------------------------------

    async def _execute(self, handle: ServerGoalHandle) -> Any:
        """Register the goal with the control timer and await its end (never blocks)."""
        request = handle.request
        now = self._now()
        parsed = goal_from_message(request)
        future: Future = Future()
        max_speed = float(request.max_speed) if request.max_speed > 0.0 else None
        if isinstance(parsed, str) and parsed.startswith("!"):
            future.set_result((NavCode.NO_PATH, parsed[1:], 0.0))
        else:
            if self._job is not None:
                self._end(self._job, NavCode.CANCELED, PREEMPTED, stop=False)
            job = _Job(handle, future, parsed, max_speed, received_at=now)
            self._job = job
            pose = self._pose(now)
            if pose is not None:
                self._start(job, pose, now)  # plan now: NO_PATH is answered at once
        code, message, travelled = await future
        result = Navigate.Result(code=int(code), message=message,
                                 distance_travelled=float(travelled))
        if code is NavCode.SUCCEEDED:
            handle.succeed()
        elif code is NavCode.CANCELED and handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        return result

    def _end(self, job: _Job, code: NavCode, message: str, *, stop: bool = True) -> None:
        """Finish `job`: zero command (builtin), complete the Future its coroutine awaits.
        Without `stop` (preemption) the builtin Navigator is left to the next goal's start(),
        so the robot slows within the acceleration limits instead of braking at once."""
        if job.nav2 is not None and not job.nav2.done:
            job.nav2.cancel()
        elif stop and self.navigator.active and job.started and job.nav2 is None:
            self.navigator.cancel()
        if stop and self.backend == "builtin" and self._last_cmd != STOP:
            self._publish_cmd(STOP)
        travelled = job.travelled if job.nav2 is not None else (
            self.navigator.feedback.distance_travelled if job.started else 0.0)
        if self._job is job:
            self._job = None
        if not job.future.done():
            job.future.set_result((code, message, travelled))
        text = f"navigate {job.goal!r}: {code.name} ({message})"
        if code is NavCode.SUCCEEDED:  # one call site per severity (rclpy's logger insists)
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    # ---- the control step --------------------------------------------------------------------

    def _on_control_tick(self) -> None:
        now = self._now()
        pose = self._pose(now)
        if pose is not None:
            self._publish_zone_cap(pose)
        job = self._job
        if job is None:
            return
        if job.handle.is_cancel_requested and job.nav2 is None:
            self._end(job, NavCode.CANCELED, "navigation canceled")
            return
        if not job.started:
            if pose is None:
                if now - job.received_at > self.pose_timeout_s:
                    self._end(job, NavCode.FAILED, f"no odometry for {self.pose_timeout_s:g} s")
                return
            if not self._start(job, pose, now):
                return
        if self._nav2 is not None:
            self._nav2_step(job, pose, now)
        else:
            self._builtin_step(job, pose, now)

    def _start(self, job: _Job, pose: Pose2D, now: float) -> bool:
        """Hand the goal to the backend; False if it already ended (NO_PATH)."""
        job.started = True
        job.last_pose = pose
        if self._nav2 is not None:
            job.nav2 = self._nav2.start(job.goal, pose, now)
            return True
        status = self.navigator.start(job.goal, pose, now, max_speed=job.max_speed)
        if status.done:
            assert status.code is not None
            self._end(job, status.code, status.message)
            return False
        return True

    def _builtin_step(self, job: _Job, pose: Pose2D | None, now: float) -> None:
        if pose is None:
            self._publish_cmd(STOP)  # stale odometry: hold still, and give up after a while
            if now - self._odom_at > 2.0 * self.pose_timeout_s:
                self._end(job, NavCode.FAILED,
                          f"odometry lost for more than {2.0 * self.pose_timeout_s:g} s")
            return
        step = self.navigator.step(pose, now)
        if step.status.done:
            assert step.status.code is not None
            self._publish_feedback(job, now, step.feedback.distance_remaining,
                                   step.feedback.eta_s, step.feedback.current_lane, pose,
                                   force=True)
            self._end(job, step.status.code, step.status.message)
            return
        self._publish_cmd(step.cmd)
        fb = step.feedback
        self._publish_feedback(job, now, fb.distance_remaining, fb.eta_s, fb.current_lane, pose)

    def _nav2_step(self, job: _Job, pose: Pose2D | None, now: float) -> None:
        task = job.nav2
        assert task is not None
        if job.handle.is_cancel_requested and not job.cancel_sent:
            task.cancel()  # the worker thread calls cancelTask; the outcome follows
            job.cancel_sent = True
        if pose is not None and job.last_pose is not None:
            job.travelled += math.hypot(pose.x - job.last_pose.x, pose.y - job.last_pose.y)
            job.last_pose = pose
        outcome = task.outcome
        progress = task.progress
        where = progress.pose or pose
        if where is not None:
            self._publish_feedback(job, now, progress.distance_remaining, progress.eta_s,
                                   progress.current_lane, where, force=outcome is not None)
        if outcome is not None:
            self._end(job, outcome.code, outcome.message, stop=False)

    # ---- outputs -----------------------------------------------------------------------------

    def _publish_cmd(self, cmd: VelocityCommand) -> None:
        msg = TwistStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = BASE_FRAME
        msg.twist.linear.x = float(cmd.linear)
        msg.twist.angular.z = float(cmd.angular)
        self.cmd_publisher.publish(msg)
        self._last_cmd = cmd

    def _publish_feedback(self, job: _Job, now: float, distance: float, eta: float, lane: str,
                          pose: Pose2D, force: bool = False) -> None:
        if not force and now - job.last_feedback_at < self.feedback_period_s:
            return
        job.last_feedback_at = now
        job.handle.publish_feedback(Navigate.Feedback(
            distance_remaining=float(distance), eta_s=float(eta), current_lane=lane,
            current_pose=pose_message(pose)))

    def _publish_zone_cap(self, pose: Pose2D) -> None:
        cap = self.route.speed_limit_at(pose.x, pose.y)
        value = math.inf if cap is None else float(cap)
        if value != self._zone_cap:
            self._zone_cap = value
            self.zone_cap_publisher.publish(Float32(data=value))

    def destroy_node(self) -> None:
        if self._nav2 is not None:
            self._nav2.shutdown()
        super().destroy_node()


def main() -> int:
    return run_node(NavigationNode)


if __name__ == "__main__":
    raise SystemExit(main())

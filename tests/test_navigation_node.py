"""The navigation node through real rclpy: the `navigate` action, cmd_vel, zone_speed_cap.

`SimRobot` stands in for the headless simulator: a 50 Hz wall-clock timer advances sim time by
`SCALE` x 20 ms, publishes /clock, integrates the newest TwistStamped cmd_vel as a unicycle over
that sim step and publishes odom (frame odom, starting at zero). The navigation node runs on
that sim time (use_sim_time), so controller and physics agree and the run is just faster than
real time; `odom_to_map` is the robot's start pose in map, as in the headless sim.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from ros_harness import SpinningExecutor, wait_for

from delivery_robot.route_planner import NavCode

pytestmark = pytest.mark.ros

TOWN = Path(__file__).resolve().parents[1] / "config" / "worlds" / "town.yaml"
TICK_S = 0.02  # wall period of the stand-in robot
SCALE = 2.0  # sim seconds per wall second
PHARMACY_WALK = (-12.0, 5.5)  # walk_n_pharmacy
SHOP_PHARMACY = (-12.0, 8.0)  # 2.5 m north, inside the shop_frontage slow zone (0.8 m/s)


class SimRobot:
    """Sim clock + unicycle base + odometry; records commands and zone caps."""

    def __init__(self, ros_executor: SpinningExecutor, scale: float = SCALE) -> None:
        from geometry_msgs.msg import TwistStamped
        from nav_msgs.msg import Odometry
        from rosgraph_msgs.msg import Clock
        from std_msgs.msg import Float32

        from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS

        self.scale = scale
        self.sim_time = 1.0
        self.x = self.y = self.yaw = 0.0
        self.cmd = (0.0, 0.0)
        self.commands: list[tuple[float, float]] = []
        self.zone_caps: list[float] = []
        self.node = ros_executor.node("sim_robot")
        self._odom_type = Odometry
        self._clock_type = Clock
        self.clock_publisher = self.node.create_publisher(Clock, "/clock", 10)
        self.odom_publisher = self.node.create_publisher(Odometry, "odom", SENSOR_QOS)
        self.node.create_subscription(TwistStamped, "cmd_vel", self._on_cmd, COMMAND_QOS)
        self.node.create_subscription(Float32, "zone_speed_cap",
                                      lambda m: self.zone_caps.append(m.data), STATE_QOS)
        self.node.create_timer(TICK_S, self._tick)

    def _on_cmd(self, msg: Any) -> None:
        self.cmd = (msg.twist.linear.x, msg.twist.angular.z)
        self.commands.append(self.cmd)
        assert msg.header.frame_id == "base_link"

    def _tick(self) -> None:
        dt = TICK_S * self.scale
        v, w = self.cmd
        self.x += v * math.cos(self.yaw + w * dt / 2.0) * dt
        self.y += v * math.sin(self.yaw + w * dt / 2.0) * dt
        self.yaw = math.atan2(math.sin(self.yaw + w * dt), math.cos(self.yaw + w * dt))
        self.sim_time += dt
        sec = int(self.sim_time)
        stamp_ns = int(round((self.sim_time - sec) * 1e9))
        clock = self._clock_type()
        clock.clock.sec, clock.clock.nanosec = sec, stamp_ns
        self.clock_publisher.publish(clock)
        odom = self._odom_type()
        odom.header.stamp = clock.clock
        odom.header.frame_id, odom.child_frame_id = "odom", "base_link"
        odom.pose.pose.position.x, odom.pose.pose.position.y = self.x, self.y
        odom.pose.pose.orientation.z = math.sin(self.yaw / 2.0)
        odom.pose.pose.orientation.w = math.cos(self.yaw / 2.0)
        odom.twist.twist.linear.x, odom.twist.twist.angular.z = v, w
        self.odom_publisher.publish(odom)

    def map_pose(self, start: tuple[float, float, float]) -> tuple[float, float]:
        c, s = math.cos(start[2]), math.sin(start[2])
        return start[0] + c * self.x - s * self.y, start[1] + s * self.x + c * self.y


def start_navigation(ros_executor: SpinningExecutor, start: tuple[float, float, float] | None,
                     **overrides: Any) -> Any:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.navigation import NavigationNode

    values: dict[str, Any] = {"route_graph_file": str(TOWN), "use_sim_time": start is not None}
    if start is not None:
        values["odom_to_map"] = list(start)
    values.update(overrides)
    nav_factory = values.pop("nav2_factory", None)
    node = NavigationNode(context=ros_executor.context, nav2_factory=nav_factory,
                          parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    return ros_executor.add(node)


class Client:
    """An action client for `navigate` that keeps every goal's feedback."""

    def __init__(self, ros_executor: SpinningExecutor) -> None:
        from delivery_interfaces.action import Navigate
        from rclpy.action import ActionClient

        self.node = ros_executor.node("navigate_client")
        self.client = ActionClient(self.node, Navigate, "navigate")
        self.goal_type = Navigate.Goal
        wait_for(self.client.server_is_ready, 15.0, "the navigate action server")

    def send(self, waypoint: str = "", pose: tuple[float, float, float] | None = None,
             frame: str = "map") -> tuple[Any, list[Any]]:
        goal = self.goal_type(waypoint=waypoint)
        if pose is not None:
            goal.pose.header.frame_id = frame
            goal.pose.pose.position.x, goal.pose.pose.position.y = pose[0], pose[1]
            goal.pose.pose.orientation.z = math.sin(pose[2] / 2.0)
            goal.pose.pose.orientation.w = math.cos(pose[2] / 2.0)
        feedback: list[Any] = []
        sent = self.client.send_goal_async(goal, feedback_callback=lambda m: feedback.append(
            m.feedback))
        wait_for(sent.done, 10.0, "the goal response")
        handle = sent.result()
        assert handle.accepted
        return handle, feedback

    @staticmethod
    def result(handle: Any, timeout: float = 30.0) -> tuple[int, Any]:
        future = handle.get_result_async()
        wait_for(future.done, timeout, "the navigate result")
        outcome = future.result()
        return outcome.status, outcome.result


@pytest.mark.slow
def test_navigates_to_a_waypoint_with_feedback_and_zone_caps(
    ros_executor: SpinningExecutor,
) -> None:
    from action_msgs.msg import GoalStatus

    start = (*PHARMACY_WALK, math.pi / 2)
    robot = SimRobot(ros_executor)
    start_navigation(ros_executor, start)
    client = Client(ros_executor)
    wait_for(lambda: bool(robot.zone_caps), 10.0, "the first zone_speed_cap")
    assert robot.zone_caps == [math.inf]  # on the sidewalk: no zone cap

    handle, feedback = client.send("shop_pharmacy")
    status, result = client.result(handle)

    assert status == GoalStatus.STATUS_SUCCEEDED
    assert result.code == NavCode.SUCCEEDED, result.message
    assert result.distance_travelled == pytest.approx(2.5, abs=0.2)
    x, y = robot.map_pose(start)
    assert math.hypot(x - SHOP_PHARMACY[0], y - SHOP_PHARMACY[1]) <= 0.15
    # feedback: distance falls to the goal, on the spur lane, pose in map
    distances = [f.distance_remaining for f in feedback]
    assert len(distances) >= 3
    assert distances[0] > 2.0
    assert distances[-1] < 0.2
    assert all(b <= a + 1e-3 for a, b in zip(distances, distances[1:], strict=False))
    assert feedback[0].current_lane == "walk_n_pharmacy->shop_pharmacy"
    assert feedback[-1].current_pose.position.y == pytest.approx(y, abs=0.1)
    assert all(f.eta_s >= 0.0 for f in feedback)
    # the stand-in base saw commands within the lane/zone limit, and a stop at the end
    assert max(v for v, _ in robot.commands) <= 0.8 + 1e-6
    assert robot.commands[-1] == (0.0, 0.0)
    # entering the shop frontage (y >= 6.8) published its 0.8 m/s cap once
    assert robot.zone_caps == [math.inf, pytest.approx(0.8)]


def test_navigates_to_a_map_pose(ros_executor: SpinningExecutor) -> None:
    from action_msgs.msg import GoalStatus

    start = (*PHARMACY_WALK, math.pi / 2)
    robot = SimRobot(ros_executor, scale=3.0)
    start_navigation(ros_executor, start)
    client = Client(ros_executor)
    wait_for(lambda: bool(robot.zone_caps), 10.0, "odometry to reach navigation")
    handle, _ = client.send(pose=(-12.0, 6.5, math.pi / 2))  # 1 m up the shop spur
    status, result = client.result(handle)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert result.code == NavCode.SUCCEEDED
    x, y = robot.map_pose(start)
    assert math.hypot(x + 12.0, y - 6.5) <= 0.15


def test_unknown_waypoint_is_no_path(ros_executor: SpinningExecutor) -> None:
    from action_msgs.msg import GoalStatus

    robot = SimRobot(ros_executor)
    start_navigation(ros_executor, (*PHARMACY_WALK, 0.0))
    client = Client(ros_executor)
    wait_for(lambda: bool(robot.zone_caps), 10.0, "odometry to reach navigation")
    handle, _ = client.send("nowhere")
    status, result = client.result(handle, 10.0)
    assert status == GoalStatus.STATUS_ABORTED
    assert result.code == NavCode.NO_PATH
    assert "nowhere" in result.message
    assert robot.commands == []  # never moved


def test_pose_goal_outside_the_map_frame_is_refused(ros_executor: SpinningExecutor) -> None:
    from action_msgs.msg import GoalStatus

    start_navigation(ros_executor, None)
    client = Client(ros_executor)
    handle, _ = client.send(pose=(1.0, 2.0, 0.0), frame="odom")
    status, result = client.result(handle, 10.0)
    assert status == GoalStatus.STATUS_ABORTED
    assert result.code == NavCode.NO_PATH
    assert "'map'" in result.message


def test_no_odometry_fails_the_goal(ros_executor: SpinningExecutor) -> None:
    from action_msgs.msg import GoalStatus

    start_navigation(ros_executor, None, pose_timeout_s=0.3)
    client = Client(ros_executor)
    handle, _ = client.send("shop_pharmacy")
    status, result = client.result(handle, 10.0)
    assert status == GoalStatus.STATUS_ABORTED
    assert result.code == NavCode.FAILED
    assert "odometry" in result.message


def test_cancel_stops_the_robot(ros_executor: SpinningExecutor) -> None:
    from action_msgs.msg import GoalStatus

    robot = SimRobot(ros_executor, scale=3.0)
    start_navigation(ros_executor, (*PHARMACY_WALK, 0.0))
    client = Client(ros_executor)
    wait_for(lambda: bool(robot.zone_caps), 10.0, "odometry to reach navigation")
    handle, feedback = client.send("house_n1")  # 41 m east: still driving when canceled
    wait_for(lambda: len(feedback) >= 2 and feedback[0].distance_remaining
             - feedback[-1].distance_remaining > 0.3, 20.0, "the robot to get going")
    assert robot.cmd[0] > 0.0
    cancel = handle.cancel_goal_async()
    wait_for(cancel.done, 10.0, "the cancel response")
    assert len(cancel.result().goals_canceling) == 1
    status, result = client.result(handle, 10.0)
    assert status == GoalStatus.STATUS_CANCELED
    assert result.code == NavCode.CANCELED
    assert result.distance_travelled > 0.3
    wait_for(lambda: robot.cmd == (0.0, 0.0), 5.0, "a zero cmd_vel")
    assert robot.commands[-1] == (0.0, 0.0)


def test_a_new_goal_preempts_the_running_one(ros_executor: SpinningExecutor) -> None:
    from action_msgs.msg import GoalStatus

    robot = SimRobot(ros_executor, scale=3.0)
    start_navigation(ros_executor, (*PHARMACY_WALK, 0.0))
    client = Client(ros_executor)
    wait_for(lambda: bool(robot.zone_caps), 10.0, "odometry to reach navigation")
    first, _ = client.send("house_n1")
    wait_for(lambda: robot.cmd[0] > 0.0, 20.0, "the robot to get going")
    second, feedback = client.send("shop_pharmacy")  # back west: a new route
    status, result = client.result(first, 10.0)
    assert status == GoalStatus.STATUS_ABORTED
    assert result.code == NavCode.CANCELED
    assert "preempted" in result.message
    wait_for(lambda: bool(feedback), 10.0, "feedback of the new goal")
    assert feedback[-1].distance_remaining < 3.0  # the new route, not the 41 m of the old
    assert feedback[-1].current_lane == "walk_n_pharmacy->shop_pharmacy"
    cancel = second.cancel_goal_async()
    wait_for(cancel.done, 10.0, "the cancel response")
    status, result = client.result(second, 10.0)
    assert status == GoalStatus.STATUS_CANCELED


def test_nav2_backend_runs_goals_off_the_executor(ros_executor: SpinningExecutor) -> None:
    """The node with backend nav2 and the contract test's stand-in BasicNavigator: the action
    completes through the adapter's thread while the executor keeps spinning."""
    from action_msgs.msg import GoalStatus
    from test_nav2_adapter import StandInBasicNavigator, through_poses_feedback

    stand_in = StandInBasicNavigator(polls=20, feedback=through_poses_feedback)
    robot = SimRobot(ros_executor)
    start_navigation(ros_executor, (*PHARMACY_WALK, 0.0), backend="nav2",
                     nav2_factory=lambda: stand_in)
    client = Client(ros_executor)
    wait_for(lambda: bool(robot.zone_caps), 10.0, "odometry to reach navigation")
    handle, feedback = client.send("shop_pharmacy")
    status, result = client.result(handle, 10.0)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert result.code == NavCode.SUCCEEDED
    assert "goThroughPoses" in stand_in.names()
    assert "ros-executor" not in stand_in.threads
    assert feedback
    assert feedback[-1].distance_remaining == 0.0
    assert robot.commands == []  # Nav2's controller drives, not this node


def test_params_file_loads_and_bad_values_are_refused(ros_executor: SpinningExecutor) -> None:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.navigation import NavigationNode

    params = Path(__file__).resolve().parents[1] / "config" / "navigation.yaml"
    node = NavigationNode(context=ros_executor.context,
                          cli_args=["--ros-args", "--params-file", str(params)],
                          parameter_overrides=[Parameter("route_graph_file", value=str(TOWN))])
    try:
        assert node.backend == "builtin"
        assert node.navigator.params.max_replans == 3
        assert node.navigator.params.closure_s is None
        assert node.navigator.tracker.params.xy_goal_tolerance == 0.15
    finally:
        node.destroy_node()
    with pytest.raises(ValueError, match="backend"):
        start_navigation(ros_executor, None, backend="teleport")
    with pytest.raises(ValueError, match="odom_to_map"):
        start_navigation(ros_executor, None, odom_to_map=[1.0, 2.0])

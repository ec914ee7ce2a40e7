"""demo_robot: a stand-in robot for the end-to-end demo of `make sim` (until the headless
simulator and the real mission executor land).

It serves the real `execute_mission` action and publishes the real `robot_state`, but it moves
along straight lines in scaled time and the shop and recipient act on their own after a delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delivery_interfaces.action import ExecuteMission
from delivery_interfaces.msg import CompartmentState, RobotState
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.node import Node
from rclpy.task import Future

from delivery_robot.demo_map import DemoMap
from delivery_robot.mission_legs import Leg, LegStep, MissionKind, plan_legs
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.paths import share_file
from delivery_robot.ros.qos import STATE_QOS

MODE_DURING_LEG = {
    Leg.TO_PICKUP: RobotState.MODE_TO_PICKUP,
    Leg.AWAITING_LOAD: RobotState.MODE_AWAITING_LOAD,
    Leg.TO_DROPOFF: RobotState.MODE_TO_DROPOFF,
    Leg.HANDOFF: RobotState.MODE_AWAITING_RECIPIENT,
    Leg.RETURNING: RobotState.MODE_RETURNING,
    Leg.CHARGING: RobotState.MODE_CHARGING,
}


@dataclass
class ActiveMission:
    goal_handle: ServerGoalHandle
    legs: list[LegStep]
    done: Future
    leg_index: int = 0
    waited_s: float = 0.0
    order_ids: list[str] = field(default_factory=list)

    @property
    def step(self) -> LegStep:
        return self.legs[self.leg_index]


class DemoRobot(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("demo_robot", **node_options)
        namespace_id = self.get_namespace().strip("/") or "robot1"
        self.robot_id = declare(self, "robot_id", namespace_id, "Robot id used by the fleet")
        map_file = declare(self, "map_file", "", "Demo map YAML; empty = the installed one")
        self.map = DemoMap.load(Path(map_file) if map_file else share_file("config/demo_map.yaml"))
        start = declare(self, "start_waypoint", self.map.depot, "Waypoint the robot starts at")
        if start not in self.map.waypoints:
            raise ValueError(f"start_waypoint {start!r} is not in the demo map")
        self.speed = declare(self, "cruise_speed", 1.5, "Cruise speed in m/s")
        self.time_scale = declare(self, "time_scale", 20.0, "Simulated s per wall s")
        self.load_delay_s = declare(self, "load_delay_s", 60.0, "Simulated s to load")
        self.handoff_delay_s = declare(self, "handoff_delay_s", 45.0, "Simulated s to hand over")
        self.tick_s = declare(self, "tick_period_s", 0.1, "Wall s between progress updates")
        state_period = declare(self, "state_period_s", 1.0, "Wall s between robot_state")
        if self.speed <= 0 or self.time_scale <= 0 or self.tick_s <= 0:
            raise ValueError("cruise_speed, time_scale and tick_period_s must be > 0")

        self.position = self.map.waypoints[start]
        self.current_waypoint = start
        self.mode = RobotState.MODE_IDLE
        self.mission: ActiveMission | None = None
        self.state_publisher = self.create_publisher(RobotState, "robot_state", STATE_QOS)
        self.create_timer(state_period, self.publish_state)
        self.create_timer(self.tick_s, self.tick)
        self.action_server = ActionServer(
            self, ExecuteMission, "execute_mission", execute_callback=self.execute,
            goal_callback=self.accept_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
        )
        self.publish_state()

    def accept_goal(self, goal: Any) -> GoalResponse:
        if self.mission is not None:
            self.get_logger().warning(f"refusing mission {goal.mission_id}: already busy")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    async def execute(self, goal_handle: ServerGoalHandle) -> ExecuteMission.Result:
        goal = goal_handle.request
        try:
            legs = plan_legs(MissionKind(goal.kind), goal.pickup_waypoint, goal.dropoff_waypoint,
                             goal.return_waypoint)
            unknown = [step.waypoint for step in legs if step.waypoint not in self.map.waypoints]
            if unknown:
                raise ValueError(f"unknown waypoints {unknown}")
        except ValueError as error:
            goal_handle.abort()
            return ExecuteMission.Result(outcome=ExecuteMission.Result.OUTCOME_FAILED,
                                         message=str(error))
        done = Future()
        self.mission = ActiveMission(goal_handle, legs, done,
                                     order_ids=[order.order_id for order in goal.orders])
        self.get_logger().info(f"mission {goal.mission_id}: " +
                               " -> ".join(f"{s.leg.name.lower()}@{s.waypoint}" for s in legs))
        self.set_mode(MODE_DURING_LEG[legs[0].leg])
        result: ExecuteMission.Result = await done
        return result

    def tick(self) -> None:
        mission = self.mission
        if mission is None:
            return
        if mission.goal_handle.is_cancel_requested:
            mission.goal_handle.canceled()
            self.finish(ExecuteMission.Result.OUTCOME_CANCELED, "cancelled")
            return
        sim_dt = self.tick_s * self.time_scale
        step = mission.step
        if step.drives:
            tx, ty = self.map.waypoints[step.waypoint]
            x, y = self.position
            remaining = math.hypot(tx - x, ty - y)
            advance = min(remaining, self.speed * sim_dt)
            if remaining > 1e-9:
                self.position = (x + (tx - x) * advance / remaining,
                                 y + (ty - y) * advance / remaining)
                self.current_waypoint = ""
            leg_done = remaining - advance <= 1e-6
        else:
            mission.waited_s += sim_dt
            remaining = 0.0
            delay = self.load_delay_s if step.leg is Leg.AWAITING_LOAD else self.handoff_delay_s
            leg_done = mission.waited_s >= delay
        feedback = ExecuteMission.Feedback(
            leg=int(step.leg), distance_remaining=float(remaining),
            eta_s=float(remaining / self.speed), current_waypoint=self.current_waypoint)
        mission.goal_handle.publish_feedback(feedback)
        if leg_done:
            self.current_waypoint = step.waypoint
            mission.leg_index += 1
            mission.waited_s = 0.0
            if mission.leg_index == len(mission.legs):
                mission.goal_handle.succeed()
                self.finish(ExecuteMission.Result.OUTCOME_SUCCEEDED, "mission complete",
                            delivered=mission.order_ids)
            else:
                self.set_mode(MODE_DURING_LEG[mission.step.leg])

    def finish(self, outcome: int, message: str, delivered: list[str] | None = None) -> None:
        assert self.mission is not None
        result = ExecuteMission.Result(outcome=outcome, message=message,
                                       failed_leg=int(self.mission.step.leg)
                                       if self.mission.leg_index < len(self.mission.legs) else 0,
                                       delivered_order_ids=delivered or [])
        done = self.mission.done
        self.mission = None
        self.set_mode(RobotState.MODE_IDLE)
        done.set_result(result)

    def set_mode(self, mode: int) -> None:
        if mode != self.mode:
            self.mode = mode
            self.publish_state()

    def publish_state(self) -> None:
        state = RobotState()
        state.header.stamp = self.get_clock().now().to_msg()
        state.header.frame_id = "map"
        state.robot_id = self.robot_id
        state.pose.position.x, state.pose.position.y = self.position
        state.pose.orientation.w = 1.0
        state.battery_percentage = 0.9
        state.mode = self.mode
        state.size_class = 2
        state.max_payload_kg = 20.0
        state.current_waypoint = self.current_waypoint
        if self.mission is not None:
            state.mission_id = self.mission.goal_handle.request.mission_id
            state.order_ids = list(self.mission.order_ids)
        state.compartment = CompartmentState(lock_state=CompartmentState.LOCK_LOCKED,
                                             door_closed=True)
        self.state_publisher.publish(state)


def main() -> int:
    return run_node(DemoRobot)


if __name__ == "__main__":
    raise SystemExit(main())

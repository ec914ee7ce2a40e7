"""demo_coordinator: the fleet side of the end-to-end demo of `make sim` (until the real
coordinator of issue 3 lands: no persistence, no HTTP, nearest idle robot).

It serves the real `/fleet/submit_order`, drives robots through the real `execute_mission`
action, and announces every order transition on `/fleet/order_status`, checked by the one
lifecycle definition (delivery_robot.order_lifecycle).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delivery_interfaces.action import ExecuteMission
from delivery_interfaces.msg import FleetState, Order, OrderStatus, RobotState
from delivery_interfaces.srv import SubmitOrder
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.task import Future

from delivery_robot.demo_map import DemoMap
from delivery_robot.mission_legs import ORDER_STATE_DURING_LEG, Leg, MissionKind
from delivery_robot.order_lifecycle import OrderState, check_transition, is_terminal
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.paths import share_file
from delivery_robot.ros.qos import EVENT_QOS, STATE_QOS


@dataclass
class DemoOrder:
    order_id: str
    shop_id: str
    pickup: str
    dropoff: str
    size: int
    weight_kg: float
    state: OrderState = OrderState.REQUESTED
    robot_id: str = ""
    mission_id: str = ""
    sequence: int = 0


@dataclass
class DemoRobotEntry:
    robot_id: str
    client: ActionClient
    state: RobotState | None = None
    order_id: str = ""  # order of the running mission, empty when free


class DemoCoordinator(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("demo_coordinator", **node_options)
        map_file = declare(self, "map_file", "", "Demo map YAML; empty = the installed one")
        self.map = DemoMap.load(Path(map_file) if map_file else share_file("config/demo_map.yaml"))
        robot_ids = declare(self, "robot_ids", ["robot1", "robot2"], "Robot namespaces")
        status_period = declare(self, "status_period_s", 1.0, "Period of /fleet/state in s")
        self.orders: dict[str, DemoOrder] = {}
        self.queue: deque[str] = deque()
        self.order_numbers = itertools.count(1)
        self.robots: dict[str, DemoRobotEntry] = {}
        for robot_id in robot_ids:
            entry = DemoRobotEntry(robot_id, ActionClient(self, ExecuteMission,
                                                          f"/{robot_id}/execute_mission"))
            self.robots[robot_id] = entry
            self.create_subscription(RobotState, f"/{robot_id}/robot_state",
                                     lambda msg, e=entry: self.on_robot_state(e, msg), STATE_QOS)
        self.status_publisher = self.create_publisher(OrderStatus, "/fleet/order_status",
                                                      EVENT_QOS)
        self.fleet_publisher = self.create_publisher(FleetState, "/fleet/state", STATE_QOS)
        self.create_service(SubmitOrder, "/fleet/submit_order", self.submit_order)
        self.create_timer(status_period, self.publish_fleet_state)

    # intake -----------------------------------------------------------------------------
    def submit_order(self, request: Any, response: Any) -> Any:
        if request.shop_id not in self.map.shops:
            response.error_code = "unknown_shop"
            response.message = f"unknown shop {request.shop_id!r}; known: {sorted(self.map.shops)}"
            return response
        if request.dropoff_waypoint not in self.map.dropoffs:
            response.error_code = "unknown_dropoff"
            response.message = (f"unknown dropoff {request.dropoff_waypoint!r}; "
                                f"known: {self.map.dropoffs}")
            return response
        order = DemoOrder(f"order-{next(self.order_numbers):04d}", request.shop_id,
                          self.map.shops[request.shop_id], request.dropoff_waypoint,
                          request.size, request.weight_kg)
        self.orders[order.order_id] = order
        self.queue.append(order.order_id)
        self.announce(order, OrderState.REQUESTED, "")
        response.accepted = True
        response.order = self.order_message(order)
        self.dispatch()
        return response

    # dispatch ---------------------------------------------------------------------------
    def on_robot_state(self, entry: DemoRobotEntry, state: RobotState) -> None:
        first = entry.state is None
        entry.state = state
        if first:
            self.get_logger().info(f"{entry.robot_id} online at {state.current_waypoint}")
        self.dispatch()

    def idle_robots(self) -> list[DemoRobotEntry]:
        return [entry for entry in self.robots.values()
                if entry.state is not None and not entry.order_id
                and entry.state.mode == RobotState.MODE_IDLE and entry.client.server_is_ready()]

    def dispatch(self) -> None:
        while self.queue:
            idle = self.idle_robots()
            if not idle:
                return
            order = self.orders[self.queue.popleft()]
            robot = min(idle, key=lambda e: self.distance_from(e, order.pickup))
            robot.order_id = order.order_id
            order.robot_id = robot.robot_id
            order.mission_id = f"mission-{order.order_id}"
            self.announce(order, OrderState.ASSIGNED, f"nearest idle robot {robot.robot_id}")
            goal = ExecuteMission.Goal(
                mission_id=order.mission_id, kind=int(MissionKind.DELIVERY),
                orders=[self.order_message(order)], pickup_waypoint=order.pickup,
                dropoff_waypoint=order.dropoff, return_waypoint=self.map.depot,
                load_timeout_s=600.0, handoff_timeout_s=600.0)
            sent = robot.client.send_goal_async(
                goal, feedback_callback=lambda fb, o=order: self.on_feedback(o, fb.feedback))
            sent.add_done_callback(lambda future, o=order, r=robot: self.on_goal_sent(o, r, future))

    def distance_from(self, entry: DemoRobotEntry, waypoint: str) -> float:
        assert entry.state is not None
        x, y = entry.state.pose.position.x, entry.state.pose.position.y
        tx, ty = self.map.waypoints[waypoint]
        return float(((tx - x) ** 2 + (ty - y) ** 2) ** 0.5)

    def on_goal_sent(self, order: DemoOrder, robot: DemoRobotEntry, future: Future) -> None:
        goal_handle = future.result()
        if goal_handle is None or not goal_handle.accepted:
            self.release(robot, order, "robot refused the mission")
            return
        goal_handle.get_result_async().add_done_callback(
            lambda result, o=order, r=robot: self.on_result(o, r, result))

    def on_feedback(self, order: DemoOrder, feedback: Any) -> None:
        leg = Leg(feedback.leg)
        if leg in ORDER_STATE_DURING_LEG:
            self.advance(order, ORDER_STATE_DURING_LEG[leg])
        elif leg is Leg.RETURNING and order.state is OrderState.AWAITING_RECIPIENT:
            self.advance(order, OrderState.DELIVERED)

    def on_result(self, order: DemoOrder, robot: DemoRobotEntry, future: Future) -> None:
        result = future.result().result
        if result.outcome == ExecuteMission.Result.OUTCOME_SUCCEEDED:
            self.advance(order, OrderState.DELIVERED)
            robot.order_id = ""
            self.dispatch()
        else:
            self.release(robot, order, result.message or "mission failed")

    def release(self, robot: DemoRobotEntry, order: DemoOrder, reason: str) -> None:
        robot.order_id = ""
        if not is_terminal(order.state):
            self.announce(order, OrderState.FAILED, reason)
        self.dispatch()

    # announcements ----------------------------------------------------------------------
    def advance(self, order: DemoOrder, state: OrderState) -> None:
        """Walk the lifecycle to `state`; a feedback message may skip a step, never go back."""
        order_of_states = list(ORDER_STATE_DURING_LEG.values()) + [OrderState.DELIVERED]
        if order.state is state or order.state not in (OrderState.ASSIGNED, *order_of_states):
            return
        start = 0 if order.state is OrderState.ASSIGNED else order_of_states.index(order.state) + 1
        if state not in order_of_states[start:]:
            return
        for step in order_of_states[start:order_of_states.index(state) + 1]:
            self.announce(order, step, "")

    def announce(self, order: DemoOrder, state: OrderState, reason: str) -> None:
        previous = order.state
        if order.sequence:
            check_transition(previous, state)
        order.state = state
        order.sequence += 1
        status = OrderStatus(order_id=order.order_id, shop_id=order.shop_id, state=int(state),
                             previous_state=int(previous), robot_id=order.robot_id,
                             reason=reason, eta_s=-1.0, sequence=order.sequence,
                             queue_position=self.queue.index(order.order_id) + 1
                             if order.order_id in self.queue else 0)
        status.header.stamp = self.get_clock().now().to_msg()
        self.status_publisher.publish(status)

    def order_message(self, order: DemoOrder) -> Order:
        return Order(order_id=order.order_id, shop_id=order.shop_id,
                     pickup_waypoint=order.pickup, dropoff_waypoint=order.dropoff,
                     size=order.size, weight_kg=order.weight_kg, state=int(order.state),
                     robot_id=order.robot_id, mission_id=order.mission_id,
                     created=self.get_clock().now().to_msg())

    def publish_fleet_state(self) -> None:
        fleet = FleetState()
        fleet.header.stamp = self.get_clock().now().to_msg()
        fleet.robots = [e.state for e in self.robots.values() if e.state is not None]
        fleet.offline_robot_ids = [e.robot_id for e in self.robots.values() if e.state is None]
        fleet.orders_waiting = len(self.queue)
        fleet.orders_active = sum(1 for o in self.orders.values()
                                  if not is_terminal(o.state) and o.state != OrderState.REQUESTED)
        self.fleet_publisher.publish(fleet)


def main() -> int:
    return run_node(DemoCoordinator)


if __name__ == "__main__":
    raise SystemExit(main())

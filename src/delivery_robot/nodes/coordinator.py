"""coordinator: the fleet's one coordinator node, a thin wrapper around `FleetCoordinator`.

The core decides; this node only translates. Services and robot states go into the core; the
core's effects come back through its effect sink (a queue plus a guard condition), so effects
caused by any thread - a service worker, later the HTTP API - are carried out in the executor
thread, in the order the core decided them. Announcements are published only after the core
has committed them to the store.

Service requests run on a small worker pool (the submit hashes the recipient PIN with scrypt
and every change is a durable SQLite commit); the executor only awaits them. Action goals are
sent asynchronously; their feedback and results feed the core.

After a restart the goal handles of running missions are gone: progress then comes from the
robots' `robot_state` (mode + mission id), and a mission we must stop is cancelled through the
action's cancel service (cancel-all: a robot runs one mission at a time).

Each delivery goal carries the orders' credential records (`handoff_records`). When the core
asks for a robot's compartment to be opened (`OpenCompartment`: the order reached
awaiting_load, or returned goods are back at the shop), the node calls that robot's
`handoff/open_for_loading` (std_srvs/Trigger, asynchronously); a refusal (e.g. `not_at_shop`:
the handoff node has not yet seen the robot's arrival) is asked again every
`open_compartment_retry_s`, up to `open_compartment_tries` times, while the order still needs it.

The shop HTTP API (`delivery_robot.web`) runs in this process on a uvicorn thread when
`http_port` > 0: its handlers call the same thread-safe core, and the effect sink also feeds
the API's websocket fan-out; announcements on ROS still go out from the executor thread here.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from action_msgs.srv import CancelGoal
from builtin_interfaces.msg import Time
from delivery_interfaces.action import ExecuteMission
from delivery_interfaces.msg import CompartmentState, FleetState, Order, OrderStatus, RobotState
from delivery_interfaces.srv import CancelOrder, ConfirmLoaded, SubmitOrder
from rclpy.action import ActionClient
from rclpy.action.client import ClientGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future
from std_srvs.srv import Trigger

from delivery_robot.credentials import PIN_PARAMS, ScryptParams
from delivery_robot.demo_map import DemoMap
from delivery_robot.fleet_coordinator import (
    Alert,
    Announce,
    CancelMission,
    CoordinatorPolicy,
    CoordinatorWorld,
    Effect,
    FleetCoordinator,
    MissionOutcome,
    OpenCompartment,
    Reply,
    RobotMode,
    RobotSample,
    SendMission,
)
from delivery_robot.handoff_credentials import CredentialPolicy, HandoffCredentials
from delivery_robot.mission_legs import Leg
from delivery_robot.order_intake import OrderRequest, RobotCapacity, SizeClass
from delivery_robot.order_lifecycle import OrderState, is_terminal
from delivery_robot.order_store import OrderStore, StoredOrder
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.paths import share_file
from delivery_robot.ros.qos import EVENT_QOS, STATE_QOS
from delivery_robot.route_graph import load_route_graph
from delivery_robot.web.events import EventHub
from delivery_robot.web.world_map import map_from_demo_map, map_from_route_graph

T = TypeVar("T")
SEND_RETRY_S = 5.0  # how long a goal waits for the robot's action server to appear


@dataclass
class _PendingSend:
    effect: SendMission
    deadline: float


@dataclass
class _PendingOpen:
    effect: OpenCompartment
    tries: int = 0
    next_at: float = 0.0  # monotonic s
    in_flight: bool = False


def _stamp(seconds: float) -> Time:
    whole = int(seconds)
    return Time(sec=whole, nanosec=int((seconds - whole) * 1e9))


def order_message(order: StoredOrder) -> Order:
    return Order(order_id=order.order_id, shop_id=order.shop_id,
                 pickup_waypoint=order.pickup_waypoint, dropoff_waypoint=order.dropoff_waypoint,
                 size=int(order.size), weight_kg=float(order.weight_kg), note=order.note,
                 state=int(order.state), robot_id=order.robot_id or "",
                 mission_id=order.mission_id or "", created=_stamp(order.created_at))


def robot_sample(msg: RobotState, robot_id: str) -> RobotSample:
    try:
        mode = RobotMode(msg.mode)
    except ValueError:
        mode = RobotMode.FAULT  # an unknown mode is not a robot to send missions to
    return RobotSample(
        robot_id=msg.robot_id or robot_id, mode=mode, x=msg.pose.position.x,
        y=msg.pose.position.y, current_waypoint=msg.current_waypoint,
        battery=float(msg.battery_percentage),
        size_class=SizeClass(min(int(msg.size_class), int(SizeClass.LARGE))),
        max_payload_kg=float(msg.max_payload_kg), mission_id=msg.mission_id,
        order_ids=tuple(msg.order_ids), faults=tuple(msg.faults),
        compartment_busy=(int(msg.compartment.handoff_state)
                          != CompartmentState.HANDOFF_LOCKED_EMPTY),
    )


class CoordinatorNode(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("coordinator", **node_options)
        database = declare(self, "database_path", "delivery_orders.db",
                           "SQLite order store (WAL); the same file after a restart resumes")
        world = declare(self, "world", "town", "World name: share/config/worlds/<world>.yaml")
        route_file = declare(self, "route_graph_file", "", "Route graph YAML; overrides world")
        map_file = declare(self, "map_file", "",
                           "Demo map YAML (straight lines, make sim); overrides world")
        robot_ids = declare(self, "robot_ids", ["robot1", "robot2"],
                            "Robot namespaces known in advance")
        self.discover = declare(self, "discover_robots", True,
                                "Also follow any /<robot>/robot_state topic that appears")
        policy = CoordinatorPolicy(
            heartbeat_timeout_s=declare(self, "heartbeat_timeout_s", 5.0,
                                        "A robot silent this long (s) is offline"),
            navigation_retries=declare(self, "navigation_retries", 2,
                                       "Re-sends of a failed mission before giving up"),
            load_timeout_s=declare(self, "load_timeout_s", 600.0, "Wait at the shop (s)"),
            handoff_timeout_s=declare(self, "handoff_timeout_s", 600.0,
                                      "Wait for the recipient before a no-show (s)"),
            recipient_reminder_after_s=declare(self, "recipient_reminder_after_s", 300.0,
                                               "Re-notify the recipient after this wait (s)"),
            result_grace_s=declare(self, "result_grace_s", 3.0,
                                   "A robot reports no mission after running ours: wait this "
                                   "long (s) for the result, then decide from the orders"),
            replan_period_s=declare(self, "replan_period_s", 15.0,
                                    "Re-optimise open, not-yet-loaded assignments with OR-Tools "
                                    "this often (s); 0 = never"),
            replan_time_limit_s=declare(self, "replan_time_limit_s", 0.5,
                                        "Time limit of one re-optimisation (s)"),
            replan_when_requested=declare(self, "replan_when_requested", 5,
                                          "Also re-optimise after a submit leaves this many "
                                          "orders waiting; 0 = never"),
            promise_margin_s=declare(self, "promise_margin_s", 300.0,
                                     "Promised delivery = request + estimate + this (s)"),
            promise_queued_s=declare(self, "promise_queued_s", 1200.0,
                                     "Extra promise allowance when no robot is free (s)"),
            charge_below=declare(self, "charge_below", 0.2,
                                 "Send a free robot below this battery fraction to charge "
                                 "(0 = never)"),
            charge_until=declare(self, "charge_until", 0.8,
                                 "A robot sent to charge is dispatched again from this "
                                 "battery fraction"),
            return_home_after_s=declare(
                self, "return_home_after_s", 0.0,
                "Send a robot free this long away from home and chargers home (s); 0 = never"),
            one_robot_per_waypoint=declare(
                self, "one_robot_per_waypoint", False,
                "An order waits while another robot is at (or driving to) its shop or dropoff "
                "for an open order (dead ends one robot wide)"),
        )
        fleet = [RobotCapacity(SizeClass(declare(self, "fleet_max_size_class", 2,
                                                 "Largest compartment (Order.SIZE_*)")),
                               declare(self, "fleet_max_payload_kg", 20.0,
                                       "Largest payload of any robot (kg)"))]
        secret = declare(self, "handoff_secret", "",
                         "Key (>= 32 chars) signing QR tokens; shared with the handoff nodes")
        pin_cost = declare(self, "pin_hash_log2_n", PIN_PARAMS.log2_n,
                           "scrypt cost of PIN hashes (2**n); lower only in tests")
        tick_s = declare(self, "tick_period_s", 1.0, "Heartbeat check period (s)")
        state_s = declare(self, "fleet_state_period_s", 1.0, "Period of /fleet/state (s)")
        self._open_retry_s = float(declare(
            self, "open_compartment_retry_s", 1.0,
            "Ask a robot's handoff/open_for_loading again after a refusal this much later (s)"))
        self._open_tries = int(declare(
            self, "open_compartment_tries", 30,
            "Give up asking a robot's handoff/open_for_loading after this many tries"))
        if tick_s <= 0 or state_s <= 0:
            raise ValueError("tick_period_s and fleet_state_period_s must be > 0")
        if not secret:
            self.get_logger().warning("handoff_secret is empty: using a random key, so QR "
                                      "tokens will not verify after a restart")
            secret = secrets.token_hex(32)

        http_port = declare(self, "http_port", 8080, "Shop HTTP API port (0 = API off)")
        self._allow_demo_tokens = declare(
            self, "allow_demo_tokens", False,
            "Accept a shop API config marked demo_tokens (public tokens; local trials only)")
        api_config = declare(self, "shop_api_config", "",
                             "Shop API YAML (token hashes, rate limit); empty = the packaged "
                             "config/shop_api.yaml, which holds the DEMO tokens' hashes")

        world_map: dict[str, Any]
        if map_file:
            demo = DemoMap.load(Path(map_file))
            coordinator_world = CoordinatorWorld.from_demo_map(demo)
            world_map = map_from_demo_map(demo)
        else:
            path = Path(route_file) if route_file else share_file(f"config/worlds/{world}.yaml")
            route = load_route_graph(path, validate=False)
            coordinator_world = CoordinatorWorld.from_route_graph(route)
            world_map = map_from_route_graph(route)

        self._effects: deque[Effect] = deque()
        self._effects_lock = threading.Lock()
        self._wake = self.create_guard_condition(self._drain)
        self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="coordinator")
        self._mission_clients: dict[str, ActionClient] = {}
        self._cancel_services: dict[str, Any] = {}
        self._goals: dict[tuple[str, str], ClientGoalHandle] = {}
        self._pending: list[_PendingSend] = []
        self._opening: list[_PendingOpen] = []
        self._open_clients: dict[str, Any] = {}
        self._last_states: dict[str, RobotState] = {}
        self.api_events = EventHub()  # websocket fan-out, fed by _sink
        self.store = OrderStore(database)
        self.core = FleetCoordinator(
            self.store, coordinator_world,
            HandoffCredentials(CredentialPolicy(
                secret_key=secret.encode(), pin_hash_cost=ScryptParams(log2_n=pin_cost))),
            fleet=fleet, policy=policy, robot_ids=robot_ids, effect_sink=self._sink,
            replan_runner=self._offload,  # OR-Tools off the executor; effects via the sink
            now=self._now(),
        )
        self.status_publisher = self.create_publisher(OrderStatus, "/fleet/order_status",
                                                      EVENT_QOS)
        self.fleet_publisher = self.create_publisher(FleetState, "/fleet/state", STATE_QOS)
        for robot_id in robot_ids:
            self._follow_robot(robot_id)
        # Their own group: an awaiting request must not hold the default (mutually exclusive)
        # group, which the effect guard, timers and robot states share.
        services = ReentrantCallbackGroup()
        self.create_service(SubmitOrder, "/fleet/submit_order", self._submit,
                            callback_group=services)
        self.create_service(CancelOrder, "/fleet/cancel_order", self._cancel,
                            callback_group=services)
        self.create_service(ConfirmLoaded, "/fleet/confirm_loaded", self._confirm,
                            callback_group=services)
        self.create_timer(tick_s, self._tick)
        self.create_timer(state_s, self._publish_fleet_state)
        self.create_timer(0.2, self._retry_pending)
        self.create_timer(0.2, self._retry_opening)
        if self.discover:
            self.create_timer(2.0, self._discover)
        self.robot_link: Any = None
        self._api_server = self._start_api(http_port, api_config, world_map)
        open_orders = len(self.core.list_orders())
        self.get_logger().info(f"coordinator ready: {database}, {open_orders} open orders")

    # -- plumbing ---------------------------------------------------------------------------

    def _now(self) -> float:
        return float(self.get_clock().now().nanoseconds) / 1e9

    def _sink(self, effects: Sequence[Effect]) -> None:
        """Called by the core under its lock, from any thread: queue, wake the executor."""
        with self._effects_lock:
            self._effects.extend(effects)
        self._wake.trigger()
        self.api_events.publish(effects)  # never blocks: hands events to the API's loop

    def _offload(self, work: Callable[[], T]) -> Future:
        """Run `work` on a worker thread; the executor awaits the returned future."""
        future = Future()

        def run() -> None:
            try:
                future.set_result(work())
            except Exception as error:  # noqa: BLE001 - reported to the caller, not raised
                future.set_exception(error)
            self._wake.trigger()  # lets the executor resume the awaiting service task

        self._workers.submit(run)
        return future

    def _drain(self) -> None:
        while True:
            with self._effects_lock:
                if not self._effects:
                    return
                effect = self._effects.popleft()
            try:
                self._carry_out(effect)
            except Exception as error:  # noqa: BLE001 - one bad effect must not stop the rest
                self.get_logger().error(f"could not carry out {effect!r}: {error}")

    def _carry_out(self, effect: Effect) -> None:
        if isinstance(effect, Announce):
            event = effect.event
            status = OrderStatus(order_id=event.order_id, shop_id=event.shop_id,
                                 state=int(event.state), previous_state=int(event.previous_state),
                                 robot_id=event.robot_id or "", reason=event.reason, eta_s=-1.0,
                                 queue_position=effect.queue_position, sequence=event.sequence)
            status.header.stamp = _stamp(event.at)
            self.status_publisher.publish(status)
        elif isinstance(effect, SendMission):
            self._pending.append(_PendingSend(effect, time.monotonic() + SEND_RETRY_S))
            self._retry_pending()
        elif isinstance(effect, CancelMission):
            self._cancel_goal(effect)
        elif isinstance(effect, OpenCompartment):
            self._opening.append(_PendingOpen(effect))
            self._retry_opening()
        elif isinstance(effect, Alert):
            where = f" [{effect.audience.value}]"
            self.get_logger().warning(f"ALERT {effect.kind.value}{where}: {effect.message}")

    # -- robots -----------------------------------------------------------------------------

    def _follow_robot(self, robot_id: str) -> None:
        if robot_id in self._mission_clients:
            return
        self._mission_clients[robot_id] = ActionClient(self, ExecuteMission,
                                               f"/{robot_id}/execute_mission")
        self._cancel_services[robot_id] = self.create_client(
            CancelGoal, f"/{robot_id}/execute_mission/_action/cancel_goal")
        self.create_subscription(RobotState, f"/{robot_id}/robot_state",
                                 lambda msg, r=robot_id: self._on_robot_state(r, msg), STATE_QOS)

    def _discover(self) -> None:
        for name, _ in self.get_topic_names_and_types():
            parts = name.strip("/").split("/")
            known = parts[0] in self._mission_clients
            if len(parts) == 2 and parts[1] == "robot_state" and not known:
                self.get_logger().info(f"discovered robot {parts[0]}")
                self._follow_robot(parts[0])

    def _on_robot_state(self, robot_id: str, msg: RobotState) -> None:
        self._last_states[robot_id] = msg
        self.core.on_robot_state(robot_sample(msg, robot_id), self._now())

    def _retry_pending(self) -> None:
        still: list[_PendingSend] = []
        for pending in self._pending:
            effect = pending.effect
            client = self._mission_clients.get(effect.robot_id)
            if client is None:
                self._follow_robot(effect.robot_id)
                client = self._mission_clients[effect.robot_id]
            if client.server_is_ready():
                self._send_goal(client, effect)
            elif time.monotonic() > pending.deadline:
                self.get_logger().warning(f"{effect.robot_id}: no execute_mission server")
                self.core.on_mission_rejected(effect.robot_id, effect.mission_id, self._now())
            else:
                still.append(pending)
        self._pending = still

    def _send_goal(self, client: ActionClient, effect: SendMission) -> None:
        goal = ExecuteMission.Goal(
            mission_id=effect.mission_id, kind=int(effect.kind),
            orders=[order_message(o) for o in effect.orders],
            pickup_waypoint=effect.pickup_waypoint, dropoff_waypoint=effect.dropoff_waypoint,
            return_waypoint=effect.return_waypoint, load_timeout_s=effect.load_timeout_s,
            handoff_timeout_s=effect.handoff_timeout_s,
            handoff_records=list(effect.handoff_records))
        robot, mission = effect.robot_id, effect.mission_id
        sent = client.send_goal_async(
            goal, feedback_callback=lambda fb: self.core.on_mission_feedback(
                robot, mission, Leg(fb.feedback.leg), self._now()))
        sent.add_done_callback(lambda future: self._on_goal_response(robot, mission, future))

    def _on_goal_response(self, robot: str, mission: str, future: Future) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self.core.on_mission_rejected(robot, mission, self._now())
            return
        self._goals[(robot, mission)] = handle
        handle.get_result_async().add_done_callback(
            lambda result: self._on_result(robot, mission, result))

    def _on_result(self, robot: str, mission: str, future: Future) -> None:
        self._goals.pop((robot, mission), None)
        response = future.result()
        result = response.result
        try:
            outcome = MissionOutcome(result.outcome)
        except ValueError:
            outcome = MissionOutcome.FAILED
        self.core.on_mission_result(robot, mission, outcome, self._now(), message=result.message,
                                    delivered_order_ids=list(result.delivered_order_ids))

    def _retry_opening(self) -> None:
        """Call handoff/open_for_loading for each pending request that is due."""
        now = time.monotonic()
        for pending in list(self._opening):
            effect = pending.effect
            if pending.in_flight or now < pending.next_at:
                continue
            if not self._still_wanted(effect) or pending.tries >= self._open_tries:
                if pending.tries >= self._open_tries:
                    self.get_logger().warning(
                        f"{effect.robot_id}: compartment not opened for {effect.purpose} of "
                        f"order {effect.order_id} after {pending.tries} tries")
                self._opening.remove(pending)
                continue
            client = self._open_clients.get(effect.robot_id)
            if client is None:
                client = self.create_client(Trigger,
                                            f"/{effect.robot_id}/handoff/open_for_loading")
                self._open_clients[effect.robot_id] = client
            pending.tries += 1
            pending.next_at = now + self._open_retry_s
            if not client.service_is_ready():
                continue
            pending.in_flight = True
            future = client.call_async(Trigger.Request())
            future.add_done_callback(lambda f, p=pending: self._on_opened(p, f))

    def _still_wanted(self, effect: OpenCompartment) -> bool:
        order = self.core.get_order(effect.order_id)
        if order is None or order.robot_id != effect.robot_id:
            return False
        if effect.purpose == "loading":
            return order.state is OrderState.AWAITING_LOAD
        return is_terminal(order.state)  # unloading: the order ended with the goods back

    def _on_opened(self, pending: _PendingOpen, future: Future) -> None:
        pending.in_flight = False
        effect = pending.effect
        try:
            reply = future.result()
        except Exception as error:  # noqa: BLE001 - retried like a refusal
            reply, why = None, repr(error)
        else:
            why = reply.message if reply is not None else "no reply"
        done = reply is not None and (reply.success or why.startswith("already_open"))
        if done:
            self.get_logger().info(f"{effect.robot_id}: compartment open for {effect.purpose} "
                                   f"of order {effect.order_id} ({why})")
            if pending in self._opening:
                self._opening.remove(pending)
        else:
            self.get_logger().info(f"{effect.robot_id}: open for {effect.purpose} of order "
                                   f"{effect.order_id} refused ({why}); asking again")

    def _cancel_goal(self, effect: CancelMission) -> None:
        handle = self._goals.get((effect.robot_id, effect.mission_id))
        if handle is not None:
            handle.cancel_goal_async()
            return
        client = self._cancel_services.get(effect.robot_id)
        if client is not None and client.service_is_ready():
            # No handle (sent before a restart): a zero goal id and stamp cancel all goals.
            client.call_async(CancelGoal.Request())

    # -- services (never raise: every problem is an error_code) ----------------------------

    async def _submit(self, request: Any, response: Any) -> Any:
        order = OrderRequest(shop_id=request.shop_id, dropoff_waypoint=request.dropoff_waypoint,
                             size=int(request.size), weight_kg=float(request.weight_kg),
                             note=request.note, idempotency_key=request.idempotency_key)
        reply = await self._answer(lambda: self.core.submit_order(order, self._now()))
        self._fill(response, reply)
        if reply.credentials is not None:
            response.recipient_pin = reply.credentials.pin
            response.recipient_qr_token = reply.credentials.qr_token
        return response

    async def _cancel(self, request: Any, response: Any) -> Any:
        reply = await self._answer(lambda: self.core.cancel_order(
            request.order_id, request.requested_by, request.reason, self._now()))
        return self._fill(response, reply)

    async def _confirm(self, request: Any, response: Any) -> Any:
        reply = await self._answer(lambda: self.core.confirm_loaded(
            request.order_id, request.shop_id, self._now()))
        return self._fill(response, reply)

    async def _answer(self, work: Callable[[], Reply]) -> Reply:
        try:
            reply: Reply = await self._offload(work)
        except Exception as error:  # noqa: BLE001 - a service answers, it never raises
            self.get_logger().error(f"request failed: {error!r}")
            return Reply(False, "internal_error", "the coordinator could not handle the "
                         "request; it was not applied")
        return reply

    @staticmethod
    def _fill(response: Any, reply: Reply) -> Any:
        response.accepted = reply.accepted
        response.error_code = reply.error_code
        response.message = reply.message
        if reply.order is not None:
            response.order = order_message(reply.order)
        return response

    # -- timers -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self.core.tick(self._now())

    def _publish_fleet_state(self) -> None:
        fleet = FleetState()
        fleet.header.stamp = self.get_clock().now().to_msg()
        offline = self.core.offline_robot_ids()
        fleet.robots = [msg for robot, msg in sorted(self._last_states.items())
                        if robot not in offline]
        fleet.offline_robot_ids = offline
        waiting, active = self.core.counts()
        fleet.orders_waiting = waiting
        fleet.orders_active = active
        self.fleet_publisher.publish(fleet)

    # -- shop HTTP API (delivery_robot.web) -------------------------------------------------

    def _start_api(self, port: int, config_path: str, world_map: dict[str, Any]) -> Any:
        """Serve the shop API on a background thread; a failure leaves the ROS side running."""
        if port <= 0:
            return None
        try:
            from delivery_robot.web.config import load_api_config
            from delivery_robot.web.server import ApiServer
            from delivery_robot.web.shop_api import create_app

            path = Path(config_path) if config_path else share_file("config/shop_api.yaml")
            config = load_api_config(path)
            if config.demo_tokens and not self._allow_demo_tokens:
                raise ValueError(
                    f"{path} holds the public demo tokens; give it your own token hashes "
                    "(python -m delivery_robot.web.tokens new) or, for a local trial only, "
                    "set allow_demo_tokens:=true")
            from delivery_robot.ros.robot_link import RosRobotLink

            # The recipient's verify and the operator's e-stop reach the robots' services.
            self.robot_link = RosRobotLink(self, robot_ids=list(self._mission_clients))
            app = create_app(self.core, config.token_registry(), config.rate_limiter(),
                             self._now, world_map, events=self.api_events,
                             robot_link=self.robot_link, tablet=config.tablet)
            server = ApiServer(app, config.host, port)
            server.start()
        except Exception as error:  # noqa: BLE001 - orders still come in over ROS services
            self.get_logger().error(f"shop API not started on port {port}: {error}")
            return None
        self.get_logger().info(f"shop API on http://{config.host}:{server.port}/api/v1 "
                               f"(config {path}; OpenAPI at /openapi.json)")
        return server

    def destroy_node(self) -> None:
        if self._api_server is not None:
            self._api_server.stop()
        if self.robot_link is not None:
            self.robot_link.close()
        self._workers.shutdown(wait=True)
        super().destroy_node()
        self.store.close()


def main() -> int:
    return run_node(CoordinatorNode)


if __name__ == "__main__":
    raise SystemExit(main())

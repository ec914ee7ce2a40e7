"""The mission executor with real rclpy against the headless simulator in town.

The stack runs as on a robot, in separate processes on the simulator's /clock:
fleet_sim (its own process) -> navigation (builtin) + safety_monitor + handoff (one process)
-> mission_executor (its own process, so it can be SIGKILLed). The test process plays the
coordinator (the real coordinator node, or an action client plus /fleet/order_status), the shop
(sim/open_door, sim/load, sim/close_door, confirm) and the recipient (handoff/verify with a PIN
or QR token, then sim/open_door, sim/unload, sim/close_door).

Speed: the simulator runs in lockstep with the robot (fleet_sim `lockstep`: the clock
advances a step only once the safety monitor has answered the last one), capped at SIM_RTF x
real time. Without lockstep a loaded machine lets the clock outrun the robot's control loop in
the other process and the robot weaves or stalls; with it a loaded machine only makes the test
slower. The nodes run at 10 Hz control on 0.1 s steps, as delivery-sim runs them; the tests
wait on what the nodes publish, never on sleeps.
"""

from __future__ import annotations

import json
import math
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ros_harness import PeerProcess, SpinningExecutor, wait_for

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
TOWN = ROOT / "config" / "worlds" / "town.yaml"
PEER = Path(__file__).resolve().parent / "mission_stack_peer.py"
SECRET = "mission-executor-test-secret-0123456789"
SIM_RTF = 5.0  # at most; lockstep holds the clock back when the robot lags
CONTROL_HZ = 10.0
DEPOT = (-48.0, 16.0, math.pi / 2)
WALK_BAKERY = (-28.0, 5.5, 0.0)  # on the north sidewalk in front of the bakery, facing east
WALK_DEPOT_IN = (-52.0, 5.5, 0.0)
WALK_CHICKEN = (12.0, 5.5, math.pi / 2)  # below the chicken shop's spur, facing it
EXACT_ODOMETRY = {f"odometry.{k}": 0.0 for k in (
    "wheel_noise", "left_scale_error", "right_scale_error", "wheel_base_error")}
# The action-client tests load and hand over on the sidewalk (junction waypoints in the open):
# the shops' and houses' own waypoints stand 1 m from a wall, where an approach that ends a
# little long puts the wall inside the safety monitor's stop zone (see the coordinator test).
BAKERY, PHARMACY = "walk_n_bakery", "walk_n_pharmacy"
LOCKED_EMPTY, OPEN_FOR_LOADING, LOCKED_LOADED, OPEN_FOR_RECIPIENT, DOOR_OPEN = range(5)
MODE_IDLE, MODE_TO_PICKUP, MODE_AWAITING_LOAD, MODE_TO_DROPOFF = 0, 1, 2, 3
MODE_AWAITING_RECIPIENT, MODE_RETURNING = 4, 5


def params_of(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "config" / name).read_text())
    section = data.get("/**") or next(iter(data.values()))
    return dict(section["ros__parameters"])


# ---- the stack in peer processes ----------------------------------------------------------


def sim_entry(poses: list[tuple[float, float, float]], **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "route_graph_file": str(TOWN), "robot_ids": [f"robot{i + 1}" for i in range(len(poses))],
        "start_poses": [v for pose in poses for v in pose], "real_time_factor": SIM_RTF,
        "seed": 3, "kinematics.command_timeout_s": 0.5, "pedestrians.count": 0,
        "step_s": 0.1, "odom_rate_hz": 10.0, "lockstep": True, "lockstep_lead_s": 0.1,
        "lockstep_grace_s": 3.0, "lockstep_robots": ["robot1"], "start_paused": True,
        **EXACT_ODOMETRY, **overrides}
    return {"module": "delivery_robot.nodes.fleet_sim", "class": "FleetSimNode",
            "params": params}


def robot_entries(pose: tuple[float, float, float], **nav: Any) -> list[dict[str, Any]]:
    safety = params_of("safety.yaml")
    safety.update({"laser_pose": [0.15, 0.0, 0.0], "use_sim_time": True,
                   "control_rate_hz": CONTROL_HZ})
    navigation = {"route_graph_file": str(TOWN), "use_sim_time": True,
                  "odom_to_map": list(pose), "control_rate_hz": CONTROL_HZ, **nav}
    handoff = params_of("handoff.yaml")
    handoff.update({"handoff_secret": SECRET, "use_sim_time": True, "tick_period_s": 0.1,
                    "occupancy_settle_s": 0.5})
    return [
        {"module": "delivery_robot.nodes.safety_monitor", "class": "SafetyMonitorNode",
         "namespace": "robot1", "params": safety},
        {"module": "delivery_robot.nodes.navigation", "class": "NavigationNode",
         "namespace": "robot1", "params": navigation},
        {"module": "delivery_robot.nodes.handoff", "class": "HandoffNode",
         "namespace": "robot1", "params": handoff},
    ]


def executor_entry(journal: Path, pose: tuple[float, float, float], start_waypoint: str,
                   **overrides: Any) -> dict[str, Any]:
    params = params_of("mission_executor.yaml")
    params.update({"journal_path": str(journal), "use_sim_time": True,
                   "odom_to_map": list(pose), "start_waypoint": start_waypoint,
                   "nav_retry_delay_s": 1.0, "resume_wait_s": 2.0, **overrides})
    return {"module": "delivery_robot.nodes.mission_executor", "class": "MissionExecutorNode",
            "namespace": "robot1", "params": params}


class Stack:
    """The simulator, robot1's nodes and its mission executor, each group its own process."""

    def __init__(self, ros_peer: Callable[..., PeerProcess], tmp_path: Path,
                 poses: list[tuple[float, float, float]], start_waypoint: str = "",
                 nav: dict[str, Any] | None = None, sim: dict[str, Any] | None = None,
                 executor: dict[str, Any] | None = None) -> None:
        self.ros_peer = ros_peer
        self.journal = tmp_path / "robot1_missions.db"
        self.pose = poses[0]
        self.start_waypoint = start_waypoint
        self.executor_overrides = executor or {}
        # Started side by side (each takes seconds to import rclpy); the clock starts when all
        # are up, so the robot's first control tick sees the first step.
        self.robot = self._start([*robot_entries(self.pose, **(nav or {}))])
        self.executor = self.start_executor(wait=False)
        self.sim = self._start([sim_entry(poses, **(sim or {}))])
        for peer in (self.robot, self.executor, self.sim):
            peer.wait_ready(timeout=90.0)

    def _start(self, entries: list[dict[str, Any]]) -> PeerProcess:
        return self.ros_peer(PEER, json.dumps({"nodes": entries}))

    def start_executor(self, wait: bool = True) -> PeerProcess:
        peer = self._start([executor_entry(self.journal, self.pose, self.start_waypoint,
                                           **self.executor_overrides)])
        if wait:
            peer.wait_ready(timeout=90.0)
        return peer

    def run(self, robot: Robot) -> None:
        """Let the simulator's clock go (it starts paused)."""
        from std_srvs.srv import SetBool

        assert robot.call(SetBool, "/sim/run", SetBool.Request(data=True)).success

    def pause(self, robot: Robot) -> None:
        """Hold the simulator's clock."""
        from std_srvs.srv import SetBool

        assert robot.call(SetBool, "/sim/run", SetBool.Request(data=False)).success

    def kill_executor(self) -> None:
        self.executor.process.send_signal(signal.SIGKILL)
        self.executor.process.wait(timeout=10)
        assert self.executor.process.returncode == -signal.SIGKILL


class Robot:
    """The test's side: watches robot1's topics, plays shop, recipient and coordinator."""

    def __init__(self, ros_executor: SpinningExecutor) -> None:
        from delivery_interfaces.action import ExecuteMission
        from delivery_interfaces.msg import CompartmentState, OrderStatus, RobotState
        from rclpy.action import ActionClient
        from std_msgs.msg import String

        from delivery_robot.ros.qos import EVENT_QOS, STATE_QOS

        self.node = ros_executor.node("mission_test")
        self.lock = threading.Lock()
        self.states: list[Any] = []
        self.handoff: Any = None
        self.events: list[dict[str, Any]] = []
        self.feedback_legs: list[int] = []
        self.node.create_subscription(RobotState, "/robot1/robot_state", self._on_state,
                                      STATE_QOS)
        self.node.create_subscription(CompartmentState, "/robot1/handoff/state",
                                      self._on_handoff, STATE_QOS)
        self.node.create_subscription(String, "/robot1/handoff/events",
                                      lambda m: self.events.append(json.loads(m.data)),
                                      EVENT_QOS)
        self.status = self.node.create_publisher(OrderStatus, "/fleet/order_status", EVENT_QOS)
        self.missions = ActionClient(self.node, ExecuteMission, "/robot1/execute_mission")
        self._sequence = 0

    def _on_state(self, msg: Any) -> None:
        with self.lock:
            self.states.append(msg)

    def _on_handoff(self, msg: Any) -> None:
        self.handoff = msg

    @property
    def state(self) -> Any:
        with self.lock:
            return self.states[-1] if self.states else None

    def modes(self) -> list[int]:
        """Distinct consecutive robot_state modes seen so far."""
        with self.lock:
            modes = [s.mode for s in self.states]
        return [m for i, m in enumerate(modes) if i == 0 or modes[i - 1] != m]

    def wait_state(self, predicate: Callable[[Any], bool], timeout: float, what: str) -> Any:
        def describe() -> str:
            s = self.state
            if s is None:
                return f"{what} (no robot_state yet)"
            return (f"{what} (last robot_state at sim {s.header.stamp.sec} s: mode {s.mode}, "
                    f"mission {s.mission_id!r}, waypoint {s.current_waypoint!r}, lane "
                    f"{s.current_lane!r}, at ({s.pose.position.x:.1f}, {s.pose.position.y:.1f}))")

        matched: list[Any] = []

        def check() -> bool:
            state = self.state  # one message: a newer one may arrive meanwhile
            if state is not None and predicate(state):
                matched.append(state)
            return bool(matched)

        try:
            wait_for(check, timeout, what)
        except pytest.fail.Exception:
            pytest.fail(f"timed out after {timeout:g} s waiting for {describe()}")
        return matched[0]

    def wait_handoff(self, handoff_state: int, timeout: float = 20.0) -> None:
        wait_for(lambda: self.handoff is not None and self.handoff.handoff_state == handoff_state,
                 timeout, f"handoff_state {handoff_state}")

    def call(self, kind: Any, name: str, request: Any, timeout: float = 15.0) -> Any:
        client = self.node.create_client(kind, name)
        wait_for(client.service_is_ready, timeout, f"service {name}")
        future = client.call_async(request)
        wait_for(future.done, timeout, f"the answer of {name}")
        self.node.destroy_client(client)
        return future.result()

    def person(self, action: str) -> None:
        from std_srvs.srv import Trigger

        reply = self.call(Trigger, f"/robot1/sim/{action}", Trigger.Request())
        assert reply.success, f"sim/{action}: {reply.message}"

    def wait_door(self, closed: bool) -> None:
        wait_for(lambda: self.handoff is not None and self.handoff.door_closed == closed, 20.0,
                 f"handoff to see the door {'closed' if closed else 'open'}")

    def shop_loads(self, open_for_loading: bool = True) -> None:
        """The shop opens the unlocked door, puts the goods in and closes it."""
        from std_srvs.srv import Trigger

        if open_for_loading:  # what the coordinator does when the order is awaiting_load
            wait_for(lambda: self.call(Trigger, "/robot1/handoff/open_for_loading",
                                       Trigger.Request()).success, 20.0, "open for loading")
        self.wait_handoff(OPEN_FOR_LOADING)
        wait_for(lambda: self.handoff.lock_state == 2, 20.0, "the bolt to open")
        self.person("open_door")
        self.wait_door(False)
        self.person("load")
        self.person("close_door")
        self.wait_handoff(LOCKED_LOADED)

    def recipient_takes(self, order_id: str, method: int, credential: str) -> None:
        from delivery_interfaces.srv import VerifyHandoff

        reply = self.call(VerifyHandoff, "/robot1/handoff/verify", VerifyHandoff.Request(
            order_id=order_id, method=method, credential=credential))
        assert reply.granted, f"{reply.error_code}: {reply.message}"
        self.wait_handoff(OPEN_FOR_RECIPIENT)
        wait_for(lambda: self.handoff.lock_state == 2, 20.0, "the bolt to open")
        self.person("open_door")
        self.wait_door(False)
        self.person("unload")
        self.person("close_door")

    def announce(self, order_id: str, state: int, reason: str = "") -> None:
        """Play the coordinator's /fleet/order_status for one order."""
        from delivery_interfaces.msg import OrderStatus

        self._sequence += 1
        self.status.publish(OrderStatus(order_id=order_id, shop_id="bakery", state=state,
                                        previous_state=state, robot_id="robot1",
                                        reason=reason, sequence=self._sequence))

    def send(self, goal: Any) -> Any:
        wait_for(self.missions.server_is_ready, 30.0, "the execute_mission server")
        sent = self.missions.send_goal_async(
            goal, feedback_callback=lambda m: self.feedback_legs.append(m.feedback.leg))
        wait_for(sent.done, 15.0, "the goal response")
        handle = sent.result()
        assert handle.accepted
        return handle

    def result(self, handle: Any, timeout: float) -> Any:
        future = handle.get_result_async()
        wait_for(future.done, timeout, "the mission result")
        return future.result()


def delivery_goal(mission_id: str, order_id: str, pickup: str, dropoff: str, back: str,
                  **kw: Any) -> Any:
    from delivery_interfaces.action import ExecuteMission
    from delivery_interfaces.msg import Order

    order = Order(order_id=order_id, shop_id="bakery", pickup_waypoint=pickup,
                  dropoff_waypoint=dropoff, state=1, robot_id="robot1", mission_id=mission_id)
    values: dict[str, Any] = {"load_timeout_s": 300.0, "handoff_timeout_s": 300.0}
    values.update(kw)
    return ExecuteMission.Goal(mission_id=mission_id, kind=0, orders=[order],
                               pickup_waypoint=pickup, dropoff_waypoint=dropoff,
                               return_waypoint=back, **values)


@pytest.fixture
def robot(ros_executor: SpinningExecutor) -> Robot:
    return Robot(ros_executor)


@pytest.fixture
def ros_peer(ros_peer: Callable[..., PeerProcess]) -> Iterator[Callable[..., PeerProcess]]:
    """The harness's peers, with the end of each one's log printed after the test (pytest
    shows it when the test fails)."""
    started: list[PeerProcess] = []

    def start(script: Path, *args: str) -> PeerProcess:
        peer = ros_peer(script, *args)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        if peer.log.closed:
            continue  # stopped by the test
        lines = [line for line in peer.output().splitlines() if "RTPS_TRANSPORT_SHM" not in line]
        print(f"---- peer {peer.process.args[2][:90]}\n" + "\n".join(lines[-60:]))
    for peer in reversed(started):  # the simulator first: in lockstep it waits for the robot
        peer.stop()


def issue(order_id: str, now: float) -> tuple[Any, str]:
    """A PIN/QR pair and the coordinator's record for it (JSON), as the coordinator issues."""
    from delivery_robot.credentials import ScryptParams
    from delivery_robot.handoff_credentials import CredentialPolicy, HandoffCredentials
    from delivery_robot.handoff_record import record_to_json

    book = HandoffCredentials(CredentialPolicy(secret_key=SECRET.encode(),
                                               pin_hash_cost=ScryptParams(log2_n=4)))
    issued = book.issue(order_id, now)
    record = book.record(order_id)
    assert record is not None
    return issued, record_to_json(record)


def sim_now(robot: Robot) -> float:
    state = robot.state
    return float(state.header.stamp.sec) + state.header.stamp.nanosec * 1e-9 if state else 0.0


# ---- tests --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_coordinator_s_order_is_delivered_by_a_robot_driving_through_town(
    ros_executor: SpinningExecutor, ros_peer: Callable[..., PeerProcess], robot: Robot,
    tmp_path: Path,
) -> None:
    """(a) coordinator -> execute_mission -> navigate -> cmd_vel -> safety_monitor ->
    cmd_vel_safe -> fleet_sim; the shop loads and confirms, the recipient gives the PIN, the
    robot drives home to the depot. (It starts on the sidewalk below the shop to keep the
    run short; the way home through the depot's one-way door is the long part.)"""
    from delivery_interfaces.msg import OrderStatus
    from delivery_interfaces.srv import ConfirmLoaded, SubmitOrder
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.coordinator import CoordinatorNode
    from delivery_robot.ros.qos import EVENT_QOS

    statuses: list[Any] = []
    robot.node.create_subscription(OrderStatus, "/fleet/order_status", statuses.append,
                                   EVENT_QOS)
    stack = Stack(ros_peer, tmp_path, [WALK_CHICKEN], start_waypoint="walk_n_chicken")
    values = {"database_path": str(tmp_path / "orders.db"), "route_graph_file": str(TOWN),
              "robot_ids": ["robot1"], "discover_robots": False, "pin_hash_log2_n": 1,
              "handoff_secret": SECRET, "http_port": 0, "use_sim_time": True,
              "heartbeat_timeout_s": 30.0, "load_timeout_s": 300.0, "handoff_timeout_s": 300.0}
    ros_executor.add(CoordinatorNode(context=ros_executor.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in values.items()]))
    stack.run(robot)
    robot.wait_state(lambda s: s.current_waypoint == "walk_n_chicken"
                     and s.battery_percentage > 0.9, 30.0, "robot1 idle on the sidewalk")
    reply = robot.call(SubmitOrder, "/fleet/submit_order", SubmitOrder.Request(
        shop_id="chicken", dropoff_waypoint="house_n1", size=1, weight_kg=2.0))
    assert reply.accepted, reply.message
    order_id = reply.order.order_id

    def order_states() -> list[int]:
        return [m.state for m in statuses if m.order_id == order_id]

    robot.wait_state(lambda s: s.mode == MODE_AWAITING_LOAD, 60.0, "robot1 at the shop")
    assert robot.state.current_waypoint == "shop_chicken"
    robot.shop_loads(open_for_loading=False)  # the coordinator asked handoff to open
    confirm = robot.call(ConfirmLoaded, "/fleet/confirm_loaded", ConfirmLoaded.Request(
        order_id=order_id, shop_id="chicken"))
    assert confirm.accepted, confirm.message
    robot.wait_state(lambda s: s.mode == MODE_AWAITING_RECIPIENT, 60.0,
                     "robot1 at house_n1")
    assert robot.state.current_waypoint == "house_n1"
    wait_for(lambda: OrderStatus.STATE_AWAITING_RECIPIENT in order_states(), 10.0,
             "the order awaiting the recipient")
    robot.recipient_takes(order_id, 0, reply.recipient_pin)
    wait_for(lambda: OrderStatus.STATE_DELIVERED in order_states(), 30.0, "delivered")
    robot.wait_state(lambda s: s.mode == MODE_IDLE and s.current_waypoint == "depot", 180.0,
                     "robot1 back at the depot, idle")
    assert order_states() == list(range(7))  # requested .. delivered, each once
    assert robot.modes() == [MODE_IDLE, MODE_TO_PICKUP, MODE_AWAITING_LOAD, MODE_TO_DROPOFF,
                             MODE_AWAITING_RECIPIENT, MODE_RETURNING, MODE_IDLE]
    assert robot.state.mission_id == ""
    assert any(e["kind"] == "delivered" and e["order_id"] == order_id for e in robot.events)
    assert robot.handoff.handoff_state == LOCKED_EMPTY
    stack.sim.stop()


@pytest.mark.slow
def test_cancel_before_and_after_loading(
    ros_executor: SpinningExecutor, ros_peer: Callable[..., PeerProcess], robot: Robot,
    tmp_path: Path,
) -> None:
    """(b) Before loading the robot stops where it is; with the goods on board it drives them
    back to the shop and ends there, CANCELED, goods locked, showing RETURNING meanwhile."""
    from delivery_interfaces.action import ExecuteMission
    from delivery_interfaces.msg import OrderStatus

    Stack(ros_peer, tmp_path, [WALK_BAKERY], start_waypoint="walk_n_bakery").run(robot)
    robot.wait_state(lambda s: s.battery_percentage > 0.9, 30.0, "robot1 up")
    first = robot.send(delivery_goal("m-early", "o-early", PHARMACY, BAKERY, BAKERY))
    robot.wait_state(lambda s: s.mode == MODE_TO_PICKUP and s.current_lane, 30.0,
                     "robot1 driving to the pickup")
    first.cancel_goal_async()
    early = robot.result(first, 30.0)
    assert early.result.outcome == ExecuteMission.Result.OUTCOME_CANCELED, early.result.message
    assert early.result.failed_leg == ExecuteMission.Feedback.LEG_TO_PICKUP
    stopped = robot.wait_state(lambda s: s.mode == MODE_IDLE, 10.0, "robot1 idle")
    assert stopped.current_waypoint == ""  # stopped on the way, not at a waypoint

    handle = robot.send(delivery_goal("m-late", "o-late", BAKERY, PHARMACY, BAKERY))
    robot.wait_state(lambda s: s.mode == MODE_AWAITING_LOAD, 60.0, "robot1 at the bakery")
    robot.shop_loads()
    robot.announce("o-late", OrderStatus.STATE_IN_TRANSIT)
    robot.wait_state(lambda s: s.mode == MODE_TO_DROPOFF and s.current_lane, 30.0,
                     "robot1 on its way to the dropoff")
    handle.cancel_goal_async()
    back = robot.wait_state(lambda s: s.mode == MODE_RETURNING, 10.0, "robot1 returning")
    assert list(back.order_ids) == ["o-late"]  # the goods are still on board
    late = robot.result(handle, 60.0)
    assert late.result.outcome == ExecuteMission.Result.OUTCOME_CANCELED, late.result.message
    assert f"back at the shop ({BAKERY}), locked" in late.result.message
    assert list(late.result.delivered_order_ids) == []
    idle = robot.wait_state(lambda s: s.mode == MODE_IDLE, 10.0, "robot1 idle at the shop")
    assert idle.current_waypoint == BAKERY
    assert robot.handoff.handoff_state == LOCKED_LOADED
    assert robot.handoff.lock_state == 1  # locked


@pytest.mark.slow
def test_sigkill_mid_mission_resumes_in_the_right_leg(
    ros_executor: SpinningExecutor, ros_peer: Callable[..., PeerProcess], robot: Robot,
    tmp_path: Path,
) -> None:
    """(c) SIGKILL of the executor on the way to the dropoff with the goods inside: the
    restarted executor resumes at to_dropoff (not the pickup), the recipient's QR token opens
    the compartment, and the mission ends back at its return waypoint, journalled."""
    from delivery_interfaces.msg import OrderStatus

    from delivery_robot.mission_journal import MissionJournal
    from delivery_robot.mission_legs import Leg

    stack = Stack(ros_peer, tmp_path, [WALK_BAKERY], start_waypoint="walk_n_bakery")
    stack.run(robot)
    robot.wait_state(lambda s: s.battery_percentage > 0.9, 30.0, "robot1 up")
    issued, record = issue("o-kill", sim_now(robot))
    goal = delivery_goal("m-kill", "o-kill", BAKERY, "walk_n_crosswalk", BAKERY)
    goal.handoff_records = [record]
    robot.send(goal)
    robot.wait_state(lambda s: s.mode == MODE_AWAITING_LOAD, 60.0, "robot1 at the bakery")
    robot.shop_loads()
    robot.announce("o-kill", OrderStatus.STATE_IN_TRANSIT)
    robot.wait_state(lambda s: s.mode == MODE_TO_DROPOFF and s.current_lane, 30.0,
                     "robot1 on its way to the dropoff")
    # The clock is held while the executor is dead and restarting (seconds of wall time for
    # the imports, a whole leg at 5x): the robot must still be on its way when it resumes.
    stack.pause(robot)
    stack.kill_executor()
    with robot.lock:
        robot.states.clear()
    stack.executor = stack.start_executor()
    stack.run(robot)
    resumed = robot.wait_state(lambda s: s.mission_id == "m-kill", 30.0,
                               "the restarted executor to report the mission")
    assert resumed.mode == MODE_TO_DROPOFF, resumed.mode
    robot.wait_state(lambda s: s.mode == MODE_AWAITING_RECIPIENT, 60.0,
                     "robot1 at the dropoff after the restart")
    assert robot.modes()[:2] == [MODE_TO_DROPOFF, MODE_AWAITING_RECIPIENT]  # never to pickup
    robot.recipient_takes("o-kill", 1, issued.qr_token)
    robot.wait_state(lambda s: s.mode == MODE_RETURNING, 30.0, "robot1 returning")
    done = robot.wait_state(lambda s: s.mode == MODE_IDLE and not s.mission_id, 60.0,
                            "robot1 idle again, with no mission")
    assert done.current_waypoint == BAKERY
    stack.executor.stop()
    journal = MissionJournal(stack.journal)
    legs = [line.leg for line in journal.lines("m-kill")]
    # Started at the pickup: to_pickup ended at once, in the first (journalled) step.
    assert legs[:2] == [Leg.AWAITING_LOAD, Leg.TO_DROPOFF]
    assert legs.index(Leg.HANDOFF) < legs.index(Leg.RETURNING)
    assert journal.unfinished() == []
    cp = journal.checkpoint("m-kill")
    assert cp is not None
    assert cp.outcome is not None
    assert cp.delivered == ("o-kill",)
    journal.close()


@pytest.mark.slow
def test_a_blocked_lane_fails_the_drive_and_the_retry_goes_on_once_it_clears(
    ros_executor: SpinningExecutor, ros_peer: Callable[..., PeerProcess], robot: Robot,
    tmp_path: Path,
) -> None:
    """(d) robot2 stands on the sidewalk in robot1's way: navigation finds the lane blocked,
    closes it and replans, and ends the goal BLOCKED when no other way works; the executor
    re-sends the goal, and once robot2 has moved away (and the closure has lapsed) the mission
    succeeds. Navigation may replan 0 times here: town's other way is round through the depot,
    which the robot can drive now that its lidar sits at the front (robot2 is outside its
    stop zone when it turns), so one replan would make the drive succeed without a BLOCKED.)"""
    from action_msgs.msg import GoalStatus, GoalStatusArray
    from delivery_interfaces.action import ExecuteMission
    from geometry_msgs.msg import PoseStamped, TwistStamped

    from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS

    parked = (-48.5, 5.5, math.pi / 2)
    Stack(ros_peer, tmp_path, [WALK_DEPOT_IN, parked], start_waypoint="walk_n_depot_in",
          nav={"progress_timeout_s": 4.0, "max_replans": 0, "closure_s": 3.0}).run(robot)
    robot.wait_state(lambda s: s.battery_percentage > 0.9, 30.0, "robot1 up")
    aborted: set[bytes] = set()

    def on_status(msg: Any) -> None:
        for status in msg.status_list:
            if status.status == GoalStatus.STATUS_ABORTED:
                aborted.add(bytes(status.goal_info.goal_id.uuid))

    robot.node.create_subscription(GoalStatusArray, "/robot1/navigate/_action/status",
                                   on_status, 10)
    other: dict[str, Any] = {}
    robot.node.create_subscription(PoseStamped, "/robot2/ground_truth/pose",
                                   lambda m: other.update(pose=m.pose), SENSOR_QOS)
    push = robot.node.create_publisher(TwistStamped, "/robot2/cmd_vel_safe", COMMAND_QOS)
    handle = robot.send(ExecuteMission.Goal(mission_id="m-blocked", kind=1,
                                            return_waypoint="walk_n_bakery"))
    wait_for(lambda: len(aborted) >= 1, 60.0, "navigation to give up on the blocked lane")
    assert robot.state.mode == MODE_RETURNING  # the mission goes on: the executor retries

    def moved() -> bool:  # robot2 steps north off the sidewalk, out of robot1's way
        command = TwistStamped()
        command.header.frame_id = "base_link"
        command.twist.linear.x = 0.0 if other["pose"].position.y > 7.2 else 0.5
        push.publish(command)
        return command.twist.linear.x == 0.0

    wait_for(lambda: "pose" in other and moved(), 30.0, "robot2 to make way")
    result = robot.result(handle, 120.0)
    assert result.result.outcome == ExecuteMission.Result.OUTCOME_SUCCEEDED, \
        result.result.message
    assert robot.state.current_waypoint == "walk_n_bakery"


@pytest.mark.slow
def test_a_charge_mission_drives_to_the_charger_and_stays_until_charged(
    ros_executor: SpinningExecutor, ros_peer: Callable[..., PeerProcess], robot: Robot,
    tmp_path: Path,
) -> None:
    """fleet_sim charges a robot stopped on a charger waypoint; the executor reports
    MODE_CHARGING there and ends the mission once battery_state reaches charge_target (the
    simulator charges 100x faster than its default here)."""
    from delivery_interfaces.action import ExecuteMission

    Stack(ros_peer, tmp_path, [DEPOT], start_waypoint="depot",
          sim={"battery.initial": 0.5, "battery.charge_per_s": 0.01},
          executor={"charge_target": 0.6, "battery_reserve": 0.0}).run(robot)
    robot.wait_state(lambda s: 0.45 < s.battery_percentage < 0.55, 30.0, "robot1 half full")
    handle = robot.send(ExecuteMission.Goal(mission_id="m-charge", kind=2,
                                            return_waypoint="charger_1"))
    charging = robot.wait_state(lambda s: s.mode == 6, 60.0, "robot1 charging")  # CHARGING
    assert charging.current_waypoint == "charger_1"
    robot.wait_state(lambda s: s.charging, 30.0, "the simulator to charge it")
    result = robot.result(handle, 60.0).result
    assert result.outcome == ExecuteMission.Result.OUTCOME_SUCCEEDED, result.message
    assert "charged to" in result.message
    assert robot.wait_state(lambda s: s.mode == MODE_IDLE, 10.0, "idle").battery_percentage \
        >= 0.6


# ---- the node alone (no simulator): parameters, refusals, resuming from the journal ----------


def executor_node(ros_executor: SpinningExecutor, journal: Path, **overrides: Any) -> Any:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.mission_executor import MissionExecutorNode

    params = params_of("mission_executor.yaml")
    params.update({"journal_path": str(journal), "nav_retry_delay_s": 0.1,
                   "tick_period_s": 0.05, "resume_wait_s": 0.2, "peer_wait_s": 0.5,
                   **overrides})
    return ros_executor.add(MissionExecutorNode(
        context=ros_executor.context, namespace="robot1",
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))


def test_config_file_declares_only_known_parameters(ros_context: Any, tmp_path: Path) -> None:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.mission_executor import MissionExecutorNode

    params = params_of("mission_executor.yaml")
    params["journal_path"] = str(tmp_path / "j.db")
    node = MissionExecutorNode(context=ros_context, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    try:
        unknown = [k for k in params if not node.has_parameter(k)]
        assert unknown == []
        described = [k for k in params
                     if not node.describe_parameter(k).description]
        assert described == []
        assert node.robot_id == "robot1"  # "" in the file: the namespace (none here: default)
    finally:
        node.destroy_node()


@pytest.mark.parametrize(("name", "value", "why"), [
    ("state_rate_hz", 0.5, "state_rate_hz"),
    ("odom_to_map", [1.0, 2.0], "odom_to_map"),
    ("charge_target", 1.5, "charge_target"),
    ("battery_reserve", -0.1, "battery_reserve"),
])
def test_bad_parameters_refuse_to_start(ros_context: Any, tmp_path: Path, name: str,
                                        value: Any, why: str) -> None:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.mission_executor import MissionExecutorNode

    with pytest.raises(ValueError, match=why):
        MissionExecutorNode(context=ros_context, parameter_overrides=[
            Parameter("journal_path", value=str(tmp_path / "j.db")),
            Parameter(name, value=value)])


def test_goals_it_cannot_run_fail_with_a_reason_and_a_busy_robot_refuses(
    ros_executor: SpinningExecutor, robot: Robot, tmp_path: Path,
) -> None:
    """No navigation here: a return mission's drives fail ("not available"), are retried, and
    the mission fails with that reason; meanwhile a second goal is refused."""
    from delivery_interfaces.action import ExecuteMission

    executor_node(ros_executor, tmp_path / "j.db", nav_retry_delay_s=0.5)
    idle = robot.wait_state(lambda s: True, 10.0, "robot_state")
    assert (idle.robot_id, idle.mode, idle.mission_id) == ("robot1", MODE_IDLE, "")
    assert "battery_unknown" in idle.faults
    assert idle.header.frame_id == "map"

    bad = robot.send(ExecuteMission.Goal(mission_id="m-bad", kind=7))
    assert robot.result(bad, 10.0).result.message == "unknown mission kind 7"
    two = delivery_goal("m-two", "o-1", BAKERY, PHARMACY, BAKERY)
    two.orders = [*two.orders, *delivery_goal("m-two", "o-2", BAKERY, PHARMACY, BAKERY).orders]
    refused = robot.result(robot.send(two), 10.0).result
    assert refused.outcome == ExecuteMission.Result.OUTCOME_FAILED
    assert "at most 1 per mission" in refused.message

    handle = robot.send(ExecuteMission.Goal(mission_id="m-home", kind=1,
                                            return_waypoint="depot"))
    robot.wait_state(lambda s: s.mission_id == "m-home" and s.mode == MODE_RETURNING, 10.0,
                     "the return mission in robot_state")
    sent = robot.missions.send_goal_async(ExecuteMission.Goal(mission_id="m-other", kind=1,
                                                              return_waypoint="depot"))
    wait_for(sent.done, 10.0, "the second goal's answer")
    assert not sent.result().accepted
    result = robot.result(handle, 20.0).result
    assert result.outcome == ExecuteMission.Result.OUTCOME_FAILED
    assert result.failed_leg == ExecuteMission.Feedback.LEG_RETURNING
    assert "after 3 attempts" in result.message
    assert "not available" in result.message
    robot.wait_state(lambda s: s.mode == MODE_IDLE and s.mission_id == "", 10.0, "idle again")


def test_a_journalled_mission_resumes_without_a_goal_and_ends_idle(
    ros_executor: SpinningExecutor, robot: Robot, tmp_path: Path,
) -> None:
    """A mission journalled at the handoff (the executor died there) is resumed on start:
    robot_state shows its mission id and leg (so the coordinator reconciles), the delivered
    event in handoff/events' history ends the handoff, and when the mission is over the robot
    reports idle with no mission id; the journal has it finished."""
    from std_msgs.msg import String

    from delivery_robot.compartment_handoff import HandoffState, LockState, Occupancy
    from delivery_robot.mission_journal import MissionJournal
    from delivery_robot.mission_legs import Leg, MissionKind
    from delivery_robot.mission_runner import (
        CompartmentSeen,
        MissionRunner,
        MissionSpec,
        NavigationEnded,
        OrderStatusSeen,
        OrderTask,
        RunnerConfig,
    )
    from delivery_robot.order_lifecycle import OrderState
    from delivery_robot.ros.qos import EVENT_QOS
    from delivery_robot.route_planner import NavCode

    spec = MissionSpec("m-old", MissionKind.DELIVERY,
                       (OrderTask("o-old", BAKERY, PHARMACY, OrderState.ASSIGNED),), BAKERY,
                       PHARMACY, "depot", 300.0, 300.0)
    runner, _ = MissionRunner.start(spec, RunnerConfig(), 0.0, current_waypoint=BAKERY)
    runner.handle(OrderStatusSeen("o-old", OrderState.IN_TRANSIT), 1.0)
    runner.handle(CompartmentSeen(HandoffState.LOCKED_LOADED, LockState.LOCKED, True,
                                  Occupancy.OCCUPIED, "o-old"), 2.0)
    runner.handle(NavigationEnded(1, NavCode.SUCCEEDED), 3.0)
    assert runner.leg is Leg.HANDOFF
    journal = MissionJournal(tmp_path / "j.db")
    journal.save(runner.checkpoint, 3.0, "before the crash")
    journal.close()

    events = robot.node.create_publisher(String, "/robot1/handoff/events", EVENT_QOS)
    node = executor_node(ros_executor, tmp_path / "j.db", nav_retry_delay_s=0.05)
    resumed = robot.wait_state(lambda s: s.mission_id == "m-old", 10.0, "the resumed mission")
    assert resumed.mode == MODE_AWAITING_RECIPIENT
    assert list(resumed.order_ids) == ["o-old"]
    assert resumed.current_waypoint == PHARMACY
    events.publish(String(data=json.dumps({"kind": "delivered", "order_id": "o-old"})))
    # Returning (delivered), then - no navigation here - the drive home fails and it ends.
    robot.wait_state(lambda s: s.mode == MODE_RETURNING, 10.0, "returning after delivery")
    robot.wait_state(lambda s: s.mode == MODE_IDLE and s.mission_id == "", 20.0, "idle")
    node.destroy_node()
    journal = MissionJournal(tmp_path / "j.db")
    cp = journal.checkpoint("m-old")
    assert cp is not None
    assert cp.delivered == ("o-old",)
    assert cp.outcome is not None
    assert journal.unfinished() == []
    assert [line.note for line in journal.lines("m-old")][0] == "before the crash"
    journal.close()

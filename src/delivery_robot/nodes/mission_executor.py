"""mission_executor: the robot's `execute_mission` action, around `mission_runner.MissionRunner`.

Every decision is the core's; this node converts messages, keeps time, journals and carries
out the `Step`s the core returns. One mission at a time: a goal arriving while one runs (or
while a journalled one is being resumed) is rejected.

Inputs
- action `execute_mission` (ExecuteMission) from the coordinator; a cancel is handed to the core
  (before loading: stop; goods on board: back to the shop, see the core).
- `/fleet/order_status` (OrderStatus, EVENT QoS): the shop's loading confirmation (in_transit)
  and the coordinator giving up on an order (cancelled, failed, returning), which the core
  treats as a cancel (it also reaches a resumed mission, which has no goal handle).
- `handoff/state` (CompartmentState, STATE QoS) and `handoff/events` (std_msgs/String JSON,
  EVENT QoS; `delivered` ends the handoff leg).
- `odom` (SENSOR QoS): the pose, moved into `map` by the fixed `odom_to_map` offset (as the
  builtin navigation does; [0, 0, 0] = the map frame is odom's origin).
- `battery_state` (SENSOR QoS), `safety/state` (STATE QoS: a latched e-stop shows as
  MODE_ESTOP).
- a timer (`tick_period_s`) feeds time to the core (deadlines, retries).

Outputs
- action client `navigate` (Navigate): one goal per drive stage; results go back to the core.
- service client `handoff/assign` (AssignHandoff): the order the compartment serves, with the
  coordinator's credential record from the goal's `handoff_records`.
- `robot_state` (RobotState, STATE QoS) at `state_rate_hz` and on every change: the
  coordinator's heartbeat and, after a restart of either side, its view of the mission.
- the mission journal (`mission_journal.MissionJournal`, SQLite WAL, synchronous=FULL) at
  `journal_path`: every checkpoint is committed, on a worker thread, before anything that
  follows it in the core's step (feedback, robot_state, navigate goals, the result) is carried
  out. On start the newest unfinished mission is resumed once `handoff/state` has been heard
  (or after `resume_wait_s`), in the leg the compartment allows; it runs without a goal handle,
  shows its mission id in robot_state, and ends with robot_state idle (the coordinator decides
  from that, see fleet_coordinator).

Time is the node clock (`use_sim_time` honoured).
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from delivery_interfaces.action import ExecuteMission, Navigate
from delivery_interfaces.msg import CompartmentState, OrderStatus, RobotState, SafetyState
from delivery_interfaces.srv import AssignHandoff
from nav_msgs.msg import Odometry
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.action.client import ClientGoalHandle
from rclpy.action.server import ServerGoalHandle
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import BatteryState
from std_msgs.msg import String

from delivery_robot.compartment_handoff import HandoffState, LockState, Occupancy
from delivery_robot.mission_journal import JournalError, MissionJournal
from delivery_robot.mission_legs import MODE_DURING_LEG, Leg, MissionKind, RobotMode
from delivery_robot.mission_runner import (
    DELIVERED_EVENT,
    AssignCompartment,
    BatterySeen,
    CancelRequested,
    Checkpoint,
    CompartmentSeen,
    DriveTo,
    Finished,
    HandoffAssigned,
    HandoffEventSeen,
    MissionRejected,
    MissionRunner,
    MissionSpec,
    NavigationEnded,
    OrderStatusSeen,
    OrderTask,
    Outcome,
    RunnerConfig,
    RunnerInput,
    Step,
    StopNavigation,
    Tick,
)
from delivery_robot.nodes.navigation import odom_to_map_pose, pose_message, yaw_of
from delivery_robot.order_lifecycle import OrderState
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.qos import EVENT_QOS, SENSOR_QOS, STATE_QOS
from delivery_robot.route_planner import NavCode, Pose2D

MAP_FRAME = "map"
ORDER_CACHE = 2000  # newest order statuses kept (a mission may start after its statuses)
DELIVERED_CACHE = 500


def spec_from_goal(goal: Any) -> MissionSpec:
    """The core's mission from an ExecuteMission goal; MissionRejected for unusable fields."""
    try:
        kind = MissionKind(int(goal.kind))
    except ValueError:
        raise MissionRejected(f"unknown mission kind {goal.kind}") from None
    records = [str(r) for r in goal.handoff_records]
    if records and len(records) != len(goal.orders):
        raise MissionRejected(f"{len(records)} handoff records for {len(goal.orders)} orders")
    orders = []
    for i, order in enumerate(goal.orders):
        try:
            state = OrderState(int(order.state))
        except ValueError:
            raise MissionRejected(f"order {order.order_id}: unknown state {order.state}") from None
        orders.append(OrderTask(
            order_id=str(order.order_id), pickup=str(order.pickup_waypoint),
            dropoff=str(order.dropoff_waypoint) or str(goal.dropoff_waypoint), state=state,
            record=records[i] if records else ""))
    return MissionSpec(
        mission_id=str(goal.mission_id), kind=kind, orders=tuple(orders),
        pickup=str(goal.pickup_waypoint), dropoff=str(goal.dropoff_waypoint),
        return_to=str(goal.return_waypoint), load_timeout_s=float(goal.load_timeout_s),
        handoff_timeout_s=float(goal.handoff_timeout_s))


def compartment_seen(msg: CompartmentState) -> CompartmentSeen | None:
    """The core's view of handoff/state; None for values outside the enumerations."""
    try:
        return CompartmentSeen(HandoffState(msg.handoff_state), LockState(msg.lock_state),
                               bool(msg.door_closed), Occupancy(msg.occupancy), str(msg.order_id))
    except ValueError:
        return None


@dataclass
class _Active:
    runner: MissionRunner
    handle: ServerGoalHandle | None  # None: resumed from the journal
    done: Future | None
    nav_handles: dict[int, ClientGoalHandle] = field(default_factory=dict)
    nav_stop: set[int] = field(default_factory=set)  # stop once the goal is accepted
    distance: float = 0.0
    eta: float = -1.0


@dataclass(frozen=True)
class _Journal:
    checkpoint: Checkpoint
    note: str


@dataclass(frozen=True)
class _View:
    """What robot_state and the action's feedback say of a mission: a snapshot taken with the
    step that changed it, so nothing is announced before its checkpoint is journalled."""

    mission_id: str
    mode: RobotMode
    leg: Leg
    waypoint: str
    order_ids: tuple[str, ...]
    drives: bool

    @classmethod
    def of(cls, runner: MissionRunner) -> _View:
        return cls(runner.mission_id, runner.mode, runner.leg, runner.current_waypoint,
                   tuple(runner.order_ids), runner.stage.drives)

    @classmethod
    def of_checkpoint(cls, checkpoint: Checkpoint) -> _View:
        """A journalled mission not yet resumed: where the journal left the robot."""
        stage = checkpoint.stages[checkpoint.index]
        orders = tuple(o.order_id for o in checkpoint.spec.orders
                       if o.order_id not in checkpoint.delivered)
        return cls(checkpoint.spec.mission_id, MODE_DURING_LEG[stage.leg], stage.leg,
                   "" if stage.drives else stage.waypoint, orders, stage.drives)


@dataclass(frozen=True)
class _Announce:
    active: _Active
    view: _View


@dataclass(frozen=True)
class _Finish:
    active: _Active
    finished: Finished


_OutboxItem = _Journal | _Announce | _Finish | DriveTo | StopNavigation | AssignCompartment


class MissionExecutorNode(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("mission_executor", **node_options)
        self._journal: MissionJournal | None = None
        self._worker: ThreadPoolExecutor | None = None
        try:
            self._configure()
        except (ValueError, JournalError):
            self._shutdown_worker()
            self.destroy_node()  # a refused start must not leave a half-made node behind
            raise

    # ---- set-up ------------------------------------------------------------------------------

    def _configure(self) -> None:
        namespace_id = self.get_namespace().strip("/").split("/")[-1] or "robot1"
        self.robot_id = str(declare(self, "robot_id", "",
                                    "Robot id in robot_state ('' = the namespace)")
                            ) or namespace_id
        journal_path = str(declare(
            self, "journal_path", "", "Mission journal (SQLite); empty = "
            "~/.ros/delivery_robot/<robot_id>_missions.db", read_only=True))
        defaults = RunnerConfig()
        self.config = RunnerConfig(
            nav_retries=int(declare(self, "nav_retries", defaults.nav_retries,
                                    "Re-sent navigate goals per leg after a failure")),
            nav_retry_delay_s=float(declare(self, "nav_retry_delay_s",
                                            defaults.nav_retry_delay_s,
                                            "Wait before re-sending a failed navigate goal, s")),
            handoff_grace_s=float(declare(
                self, "handoff_grace_s", defaults.handoff_grace_s,
                "After the handoff timeout, wait up to this long while the compartment is "
                "still open for the recipient, s")),
            charge_target=float(declare(self, "charge_target", defaults.charge_target,
                                        "A charge mission ends at this battery fraction")),
            charge_start_timeout_s=float(declare(
                self, "charge_start_timeout_s", defaults.charge_start_timeout_s,
                "At the charger and not charging after this long: the charge fails, s")),
            max_orders=int(declare(self, "max_orders_per_mission", defaults.max_orders,
                                   "Orders per delivery mission (one compartment: 1)")),
            assign_retry_s=float(declare(self, "assign_retry_s", defaults.assign_retry_s,
                                         "Ask handoff/assign again after this long when it "
                                         "was unavailable or busy, s")),
            default_load_timeout_s=float(declare(
                self, "default_load_timeout_s", defaults.default_load_timeout_s,
                "Wait at the shop when a goal gives no load_timeout_s, s")),
            default_handoff_timeout_s=float(declare(
                self, "default_handoff_timeout_s", defaults.default_handoff_timeout_s,
                "Wait for the recipient when a goal gives no handoff_timeout_s, s")))
        self.battery_reserve = float(declare(
            self, "battery_reserve", 0.1,
            "Refuse delivery missions below this battery fraction (0 = never)"))
        self.state_rate_hz = float(declare(self, "state_rate_hz", 1.0,
                                           "robot_state at least this often, Hz (>= 1)"))
        self.tick_period_s = float(declare(self, "tick_period_s", 0.2,
                                           "Timer feeding time to the mission core, s"))
        self.resume_wait_s = float(declare(
            self, "resume_wait_s", 3.0,
            "On start, wait this long for handoff/state before resuming a journalled mission, "
            "s (resumes at once when heard)"))
        self.peer_wait_s = float(declare(
            self, "peer_wait_s", 15.0,
            "Wait this long (wall clock) for the navigate server or handoff/assign to be "
            "discovered before a drive or an assignment counts as failed, s"))
        self.size_class = int(declare(self, "size_class", 2,
                                      "Largest Order.SIZE_* the compartment takes"))
        self.max_payload_kg = float(declare(self, "max_payload_kg", 20.0,
                                            "Largest payload, kg"))
        start_waypoint = str(declare(self, "start_waypoint", "",
                                     "Waypoint the robot stands at when started ('' unknown)"))
        offset = [float(v) for v in declare(
            self, "odom_to_map", [0.0, 0.0, 0.0],
            "Pose [x, y, yaw] of the odom frame in map (as navigation's; [0,0,0]: map = odom)")]
        if len(offset) != 3 or not all(math.isfinite(v) for v in offset):
            raise ValueError(f"odom_to_map: must be 3 finite numbers [x, y, yaw], got {offset}")
        if not self.state_rate_hz >= 1.0:
            raise ValueError(f"state_rate_hz: must be >= 1, got {self.state_rate_hz}")
        if not self.tick_period_s > 0.0 or not self.resume_wait_s >= 0.0:
            raise ValueError("tick_period_s must be > 0 and resume_wait_s >= 0")
        if not self.peer_wait_s >= 0.0:
            raise ValueError(f"peer_wait_s: must be >= 0, got {self.peer_wait_s}")
        if not 0.0 <= self.battery_reserve < 1.0:
            raise ValueError(f"battery_reserve: must be in [0, 1), got {self.battery_reserve}")
        if not 0 <= self.size_class <= 2 or not self.max_payload_kg > 0:
            raise ValueError("size_class must be 0..2 and max_payload_kg > 0")
        self.odom_to_map = Pose2D(*offset)

        path = journal_path or os.path.join(
            os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "delivery_robot",
            f"{self.robot_id}_missions.db")
        self._journal = MissionJournal(path)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mission-journal")

        self._active: _Active | None = None
        self._view: _View | None = None  # the running mission as last announced
        self._reserved = False  # a goal accepted whose execute has not started yet
        self._resume: Checkpoint | None = None
        self._resume_deadline: float | None = None
        self._outbox: deque[_OutboxItem] = deque()
        self._writing = False
        self._journal_fault = ""
        self._waypoint = start_waypoint
        self._lane = ""
        self._pose = Pose2D(*offset)
        self._speed = 0.0
        self._battery: BatterySeen | None = None
        self._estop = False
        self._compartment_msg: CompartmentState | None = None
        self._compartment: CompartmentSeen | None = None
        self._orders: OrderedDict[str, tuple[int, OrderStatusSeen]] = OrderedDict()
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._published: tuple[Any, ...] | None = None
        self._nav_seq = 0
        # Commands waiting for their peer to be discovered: (command, wall deadline).
        self._waiting_for_peer: list[tuple[DriveTo | AssignCompartment, float]] = []

        self._wake = self.create_guard_condition(self._pump)
        self.state_publisher = self.create_publisher(RobotState, "robot_state", STATE_QOS)
        self.navigate = ActionClient(self, Navigate, "navigate")
        self.assign_client = self.create_client(AssignHandoff, "handoff/assign")
        self.create_subscription(Odometry, "odom", self._on_odom, SENSOR_QOS)
        self.create_subscription(BatteryState, "battery_state", self._on_battery, SENSOR_QOS)
        self.create_subscription(SafetyState, "safety/state", self._on_safety, STATE_QOS)
        self.create_subscription(CompartmentState, "handoff/state", self._on_compartment,
                                 STATE_QOS)
        self.create_subscription(String, "handoff/events", self._on_handoff_event, EVENT_QOS)
        self.create_subscription(OrderStatus, "/fleet/order_status", self._on_order_status,
                                 EVENT_QOS)
        self._server = ActionServer(
            self, ExecuteMission, "execute_mission", self._execute,
            goal_callback=self._on_goal, cancel_callback=self._on_cancel)
        self.create_timer(self.tick_period_s, self._on_tick)
        self.create_timer(1.0 / self.state_rate_hz, partial(self._publish_state, True))
        # Discovery happens in wall time whatever the sim clock does (at 20x, a 1 s retry is
        # 50 ms of wall time: less than DDS needs to match a fresh peer).
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(0.2, self._retry_waiting_for_peer, clock=self._steady)
        self._load_unfinished()
        self.get_logger().info(
            f"mission_executor up: robot {self.robot_id}, journal {path}, nav retries "
            f"{self.config.nav_retries}, max {self.config.max_orders} order(s) per mission")
        self._publish_state(True)

    def _load_unfinished(self) -> None:
        """Pick the newest unfinished journalled mission to resume; close any older ones."""
        assert self._journal is not None
        now = self._now()
        for i, (mission_id, text) in enumerate(self._journal.unfinished()):
            try:
                checkpoint = Checkpoint.from_json(text)
            except ValueError as error:
                self.get_logger().error(f"journal: mission {mission_id} unreadable ({error}); "
                                        "abandoned")
                self._journal.abandon(mission_id, now, str(error))
                continue
            if i > 0 or self._resume is not None:
                self._journal.abandon(mission_id, now, "a newer mission was running")
                continue
            self._resume = checkpoint
            self._view = _View.of_checkpoint(checkpoint)
            stage = checkpoint.stages[checkpoint.index]
            self.get_logger().warning(
                f"journal: mission {mission_id} unfinished at {stage.leg.name.lower()}@"
                f"{stage.waypoint}; resuming once handoff/state is heard "
                f"(at most {self.resume_wait_s:g} s)")

    # ---- time ----------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ---- the action ----------------------------------------------------------------------------

    def _on_goal(self, goal: Any) -> GoalResponse:
        busy = self._active is not None or self._reserved or self._resume is not None
        if busy:
            running = (self._active.runner.mission_id if self._active is not None
                       else self._resume.spec.mission_id if self._resume is not None
                       else "another goal")
            self.get_logger().warning(f"refusing mission {goal.mission_id}: busy with {running}")
            return GoalResponse.REJECT
        battery = self._battery
        if (goal.kind == ExecuteMission.Goal.KIND_DELIVERY and battery is not None
                and battery.level < self.battery_reserve):
            self.get_logger().warning(
                f"refusing delivery {goal.mission_id}: battery {battery.level:.0%} below the "
                f"reserve {self.battery_reserve:.0%}")
            return GoalResponse.REJECT
        self._reserved = True
        return GoalResponse.ACCEPT

    def _on_cancel(self, handle: ServerGoalHandle) -> CancelResponse:
        active = self._active
        if active is None or active.handle is not handle:
            return CancelResponse.ACCEPT  # not started yet: `_execute` sees the request
        self.get_logger().info(f"cancel requested for mission {active.runner.mission_id}")
        self._feed(CancelRequested("mission cancelled by the coordinator"))
        return CancelResponse.ACCEPT

    async def _execute(self, handle: ServerGoalHandle) -> Any:
        self._reserved = False
        goal = handle.request
        try:
            spec = spec_from_goal(goal)
            runner, step = MissionRunner.start(spec, self.config, self._now(),
                                               current_waypoint=self._waypoint,
                                               known=self._known(spec))
        except MissionRejected as error:
            self.get_logger().warning(f"mission {goal.mission_id} refused: {error}")
            handle.abort()
            return ExecuteMission.Result(outcome=int(Outcome.FAILED), message=str(error),
                                         failed_leg=0)
        done: Future = Future()
        active = _Active(runner, handle, done)
        self._active = active
        if handle.is_cancel_requested:
            step = self._merge(step, runner.handle(CancelRequested("cancelled before it began"),
                                                   self._now()))
        self._apply(active, step)
        finished: Finished = await done
        result = ExecuteMission.Result(outcome=int(finished.outcome), message=finished.message,
                                       failed_leg=int(finished.failed_leg),
                                       delivered_order_ids=list(finished.delivered))
        if finished.outcome is Outcome.SUCCEEDED:
            handle.succeed()
        elif handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        return result

    @staticmethod
    def _merge(first: Step, second: Step) -> Step:
        return Step(first.commands + second.commands, first.journal or second.journal,
                    second.finished or first.finished, first.notes + second.notes)

    def _known(self, spec: MissionSpec) -> list[RunnerInput]:
        """What this node heard before the mission that the core needs to know."""
        known: list[RunnerInput] = []
        if self._compartment is not None:
            known.append(self._compartment)
        if self._battery is not None:
            known.append(self._battery)
        for order in spec.orders:
            seen = self._orders.get(order.order_id)
            if seen is not None:
                known.append(seen[1])
            if order.order_id in self._delivered:
                known.append(HandoffEventSeen(DELIVERED_EVENT, order.order_id))
        return known

    # ---- resuming after a restart --------------------------------------------------------------

    def _try_resume(self, now: float) -> None:
        checkpoint = self._resume
        if checkpoint is None or self._active is not None or self._reserved:
            return
        if self._resume_deadline is None:
            self._resume_deadline = now + self.resume_wait_s
        if self._compartment is None and now < self._resume_deadline:
            return
        self._resume = None
        if self._compartment is None:
            self.get_logger().warning("resuming without handoff/state: compartment unknown")
        delivered = {o.order_id for o in checkpoint.spec.orders if o.order_id in self._delivered}
        try:
            runner, step = MissionRunner.resume(
                checkpoint, self.config, now, compartment=self._compartment,
                delivered_events=delivered, known=self._known(checkpoint.spec))
        except ValueError as error:
            self.get_logger().error(f"cannot resume mission {checkpoint.spec.mission_id}: "
                                    f"{error}")
            assert self._journal is not None
            self._journal.abandon(checkpoint.spec.mission_id, now, str(error))
            self._view = None
            self._publish_state(False)
            return
        active = _Active(runner, None, None)
        self._active = active
        self._apply(active, step)

    # ---- feeding the core --------------------------------------------------------------------

    def _feed(self, event: RunnerInput, active: _Active | None = None) -> None:
        """One input through the running mission's core (if `active` is still the one)."""
        current = self._active
        if current is None or (active is not None and active is not current):
            return
        self._apply(current, current.runner.handle(event, self._now()))

    def _apply(self, active: _Active, step: Step) -> None:
        """Queue the step's effects: journal first, then commands, announcements, the end."""
        for note in step.notes:
            self.get_logger().info(f"[{active.runner.mission_id}] {note}")
        if step.journal:
            self._outbox.append(_Journal(active.runner.checkpoint, "; ".join(step.notes)))
        self._outbox.extend(step.commands)
        if step.journal or step.commands:
            self._outbox.append(_Announce(active, _View.of(active.runner)))
        if step.finished is not None:
            self._outbox.append(_Finish(active, step.finished))
        self._pump()

    def _pump(self) -> None:
        """Carry out queued effects in order; a journal write holds the rest until durable."""
        while self._outbox and not self._writing:
            item = self._outbox.popleft()
            if isinstance(item, _Journal):
                self._writing = True
                assert self._worker is not None
                future = self._worker.submit(self._write, item, self._now())
                future.add_done_callback(lambda _f: self._wake.trigger())
                return
            try:
                self._carry_out(item)
            except Exception as error:  # noqa: BLE001 - one bad effect must not stop the rest
                self.get_logger().error(f"could not carry out {item!r}: {error!r}")

    def _write(self, item: _Journal, now: float) -> None:
        """On the journal thread: the durable commit, then let the executor go on."""
        assert self._journal is not None
        try:
            self._journal.save(item.checkpoint, now, item.note)
            self._journal_fault = ""
        except Exception as error:  # noqa: BLE001 - reported in robot_state, mission goes on
            self._journal_fault = f"journal_write_failed: {error}"
        finally:
            self._writing = False

    def _carry_out(self, item: _OutboxItem) -> None:
        if isinstance(item, DriveTo):
            self._send_navigation(item)
        elif isinstance(item, StopNavigation):
            self._stop_navigation(item)
        elif isinstance(item, AssignCompartment):
            self._assign_handoff(item)
        elif isinstance(item, _Announce):
            self._announce(item.active, item.view)
        elif isinstance(item, _Finish):
            self._finish(item.active, item.finished)

    # ---- effects -----------------------------------------------------------------------------

    def _send_navigation(self, command: DriveTo) -> None:
        active = self._active
        if active is None:
            return
        self._lane = ""
        if not self.navigate.server_is_ready():
            if not self._wait_for_peer(command):
                self._feed(NavigationEnded(
                    command.goal, NavCode.FAILED,
                    f"the navigate action server is not available (waited "
                    f"{self.peer_wait_s:g} s)"), active)
            return
        sent = self.navigate.send_goal_async(
            Navigate.Goal(waypoint=command.waypoint),
            feedback_callback=partial(self._on_nav_feedback, active))
        sent.add_done_callback(partial(self._on_nav_accepted, active, command))

    def _wait_for_peer(self, command: DriveTo | AssignCompartment) -> bool:
        """Park a command whose peer is not discovered yet; False once its wait is over."""
        now = self._steady.now().nanoseconds * 1e-9
        for i, (waiting, deadline) in enumerate(self._waiting_for_peer):
            if waiting is command:
                if now >= deadline:
                    del self._waiting_for_peer[i]
                    return False
                return True
        if self.peer_wait_s <= 0.0:
            return False
        self._waiting_for_peer.append((command, now + self.peer_wait_s))
        return True

    def _retry_waiting_for_peer(self) -> None:
        for command, _ in list(self._waiting_for_peer):
            if self._active is None:
                self._waiting_for_peer.clear()
                return
            if self._peer_ready(command):
                self._waiting_for_peer = [(c, d) for c, d in self._waiting_for_peer
                                          if c is not command]
            self._carry_out(command)  # sends it now, or fails it once its wait is over

    def _peer_ready(self, command: DriveTo | AssignCompartment) -> bool:
        if isinstance(command, DriveTo):
            return bool(self.navigate.server_is_ready())
        return bool(self.assign_client.service_is_ready())

    def _on_nav_accepted(self, active: _Active, command: DriveTo, future: Future
                         ) -> None:
        try:
            handle: ClientGoalHandle | None = future.result()
        except Exception as error:  # noqa: BLE001 - a failed send is a failed drive
            handle, why = None, repr(error)
        else:
            why = "the navigate goal was rejected"
        if handle is None or not handle.accepted:
            self._feed(NavigationEnded(command.goal, NavCode.FAILED, why), active)
            return
        active.nav_handles[command.goal] = handle
        if command.goal in active.nav_stop:
            handle.cancel_goal_async()
        handle.get_result_async().add_done_callback(
            partial(self._on_nav_result, active, command))

    def _on_nav_result(self, active: _Active, command: DriveTo, future: Future) -> None:
        active.nav_handles.pop(command.goal, None)
        try:
            response = future.result()
            result = response.result
            code, message = NavCode(int(result.code)), str(result.message)
        except Exception as error:  # noqa: BLE001 - an unreadable result is a failure
            code, message = NavCode.FAILED, f"navigate result unreadable: {error!r}"
        if code is NavCode.SUCCEEDED and self._active is active:
            self._lane = ""
        self._feed(NavigationEnded(command.goal, code, message), active)

    def _on_nav_feedback(self, active: _Active, message: Any) -> None:
        feedback = message.feedback
        active.distance = float(feedback.distance_remaining)
        active.eta = float(feedback.eta_s)
        lane = str(feedback.current_lane)
        changed = lane != self._lane
        self._lane = lane
        if active.handle is not None and self._active is active and self._view is not None:
            self._publish_feedback(active)
        if changed:
            self._publish_state(False)

    def _stop_navigation(self, command: StopNavigation) -> None:
        active = self._active
        if active is None:
            return
        handle = active.nav_handles.get(command.goal)
        if handle is not None:
            handle.cancel_goal_async()
        else:
            active.nav_stop.add(command.goal)

    def _assign_handoff(self, command: AssignCompartment) -> None:
        active = self._active
        if active is None:
            return
        if not self.assign_client.service_is_ready():
            if not self._wait_for_peer(command):
                self._feed(HandoffAssigned(
                    command.order_id, False, "unavailable",
                    f"handoff/assign is not available (waited {self.peer_wait_s:g} s)"), active)
            return
        future = self.assign_client.call_async(AssignHandoff.Request(
            order_id=command.order_id, shop_waypoint=command.shop_waypoint,
            dropoff_waypoint=command.dropoff_waypoint, credential_record=command.record))
        future.add_done_callback(partial(self._on_assigned, active, command))

    def _on_assigned(self, active: _Active, command: AssignCompartment, future: Future) -> None:
        try:
            reply = future.result()
        except Exception as error:  # noqa: BLE001 - retried like an unavailable service
            reply, why = None, repr(error)
        else:
            why = "no reply"
        if reply is None:
            self._feed(HandoffAssigned(command.order_id, False, "unavailable", why), active)
            return
        self._feed(HandoffAssigned(command.order_id, bool(reply.accepted),
                                   str(reply.error_code), str(reply.message)), active)

    def _announce(self, active: _Active, view: _View) -> None:
        if self._active is not active:
            return
        self._view = view
        if not view.drives:
            active.distance, active.eta = 0.0, -1.0
        if active.handle is not None:
            self._publish_feedback(active)
        self._publish_state(False)

    def _finish(self, active: _Active, finished: Finished) -> None:
        mission_id = active.runner.mission_id
        for goal, handle in list(active.nav_handles.items()):
            handle.cancel_goal_async()
            active.nav_handles.pop(goal, None)
        if self._active is active:
            self._active = None
            self._view = None
            self._waiting_for_peer.clear()
            self._waypoint = active.runner.current_waypoint
        text = (f"mission {mission_id} finished {finished.outcome.name}: {finished.message}"
                + ("" if active.handle is not None else " (resumed: no goal to answer)"))
        if finished.outcome is Outcome.SUCCEEDED:  # one call site per severity (rclpy insists)
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)
        self._publish_state(False)
        if active.done is not None and not active.done.done():
            active.done.set_result(finished)

    # ---- inputs ------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        now = self._now()
        if self._resume is not None:
            self._try_resume(now)
        self._feed(Tick())

    def _on_odom(self, msg: Odometry) -> None:
        p = msg.pose.pose
        odom = Pose2D(p.position.x, p.position.y, yaw_of(p.orientation))
        self._pose = odom_to_map_pose(odom, self.odom_to_map)
        self._speed = float(msg.twist.twist.linear.x)

    def _on_battery(self, msg: BatteryState) -> None:
        level = float(msg.percentage)
        if not math.isfinite(level):
            return
        charging = msg.power_supply_status == BatteryState.POWER_SUPPLY_STATUS_CHARGING
        seen = BatterySeen(min(max(level, 0.0), 1.0), charging)
        changed = self._battery is None or self._battery.charging != seen.charging
        self._battery = seen
        self._feed(seen)
        if changed:
            self._publish_state(False)

    def _on_safety(self, msg: SafetyState) -> None:
        estop = bool(msg.estop_hardware or msg.estop_remote)
        if estop != self._estop:
            self._estop = estop
            self._publish_state(False)

    def _on_compartment(self, msg: CompartmentState) -> None:
        self._compartment_msg = msg
        seen = compartment_seen(msg)
        if seen is None:
            self.get_logger().warning(f"handoff/state with unknown values: {msg}")
            return
        changed = seen != self._compartment
        self._compartment = seen
        if self._resume is not None:
            self._try_resume(self._now())
        self._feed(seen)
        if changed:
            self._publish_state(False)

    def _on_handoff_event(self, msg: String) -> None:
        try:
            event = json.loads(msg.data)
            kind, order_id = str(event["kind"]), str(event.get("order_id") or "")
        except (ValueError, KeyError, TypeError):
            self.get_logger().warning(f"handoff/events: not an event: {msg.data[:200]!r}")
            return
        if kind == DELIVERED_EVENT and order_id:
            self._delivered[order_id] = None
            while len(self._delivered) > DELIVERED_CACHE:
                self._delivered.popitem(last=False)
        self._feed(HandoffEventSeen(kind, order_id))

    def _on_order_status(self, msg: OrderStatus) -> None:
        order_id = str(msg.order_id)
        try:
            state = OrderState(int(msg.state))
        except ValueError:
            return
        known = self._orders.get(order_id)
        if known is not None and known[0] >= msg.sequence:
            return  # a duplicate or an older announcement
        seen = OrderStatusSeen(order_id, state, str(msg.reason))
        self._orders[order_id] = (int(msg.sequence), seen)
        self._orders.move_to_end(order_id)
        while len(self._orders) > ORDER_CACHE:
            self._orders.popitem(last=False)
        active = self._active
        if active is not None and order_id in {o.order_id for o in active.runner.spec.orders}:
            self._feed(seen)

    # ---- outputs -----------------------------------------------------------------------------

    def _publish_feedback(self, active: _Active) -> None:
        view = self._view
        if active.handle is None or view is None:
            return
        active.handle.publish_feedback(ExecuteMission.Feedback(
            leg=int(view.leg), distance_remaining=float(active.distance),
            eta_s=float(active.eta), current_waypoint=view.waypoint))

    def _faults(self) -> list[str]:
        faults = []
        if self._journal_fault:
            faults.append(self._journal_fault)
        if self._battery is None:
            faults.append("battery_unknown")
        compartment = self._compartment
        if compartment is not None and compartment.handoff_state is HandoffState.FAULT:
            faults.append("compartment_fault")
        return faults

    def _publish_state(self, heartbeat: bool) -> None:
        """robot_state on every change (`heartbeat` False) and from the state timer."""
        view = self._view
        mission_id, order_ids, waypoint, mode = "", (), self._waypoint, RobotMode.IDLE
        if view is not None:
            mission_id, order_ids, waypoint, mode = (view.mission_id, view.order_ids,
                                                     view.waypoint, view.mode)
        if self._estop:
            mode = RobotMode.ESTOP
        battery = self._battery
        compartment = self._compartment_msg or CompartmentState()
        faults = self._faults()
        key = (mode, mission_id, order_ids, waypoint, self._lane,
               battery.charging if battery else None, tuple(faults),
               (compartment.handoff_state, compartment.lock_state, compartment.door_closed,
                compartment.occupancy, compartment.order_id))
        if not heartbeat and key == self._published:
            return
        self._published = key
        state = RobotState()
        state.header.stamp = self.get_clock().now().to_msg()
        state.header.frame_id = MAP_FRAME
        state.robot_id = self.robot_id
        state.pose = pose_message(self._pose)
        state.speed = self._speed
        state.battery_percentage = battery.level if battery is not None else 0.0
        state.charging = battery.charging if battery is not None else False
        state.mode = int(mode)
        state.size_class = self.size_class
        state.max_payload_kg = self.max_payload_kg
        state.mission_id = mission_id
        state.order_ids = list(order_ids)
        state.current_waypoint = waypoint
        state.current_lane = self._lane
        state.compartment = compartment
        state.faults = faults
        self.state_publisher.publish(state)

    # ---- shutdown ----------------------------------------------------------------------------

    def _shutdown_worker(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def destroy_node(self) -> None:
        self._shutdown_worker()
        super().destroy_node()


def main() -> int:
    return run_node(MissionExecutorNode)


if __name__ == "__main__":
    raise SystemExit(main())

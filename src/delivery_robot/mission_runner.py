"""The mission executor's core: one mission as a list of stages, and what to do on each input.

ROS-free, clock passed in. The `mission_executor` node feeds it what the robot learns (navigation
results, `/fleet/order_status`, `handoff/state`, `handoff/events`, the battery, the handoff
node's answer to `handoff/assign`, cancel requests, time) and carries out the `Step` it returns:
commands (navigate, assign the compartment), whether the checkpoint changed (journal it before
announcing anything), and the result once the mission is over.

A delivery runs `to_pickup -> awaiting_load -> (to_dropoff -> handoff) per order -> returning`:
- a drive stage sends one `navigate` goal; any failure (BLOCKED, NO_PATH - mostly a lane
  navigation closed as blocked -, TIMEOUT, FAILED, CANCELED) is re-sent up to `nav_retries`
  times after `nav_retry_delay_s`, then the mission fails with the last reason. The robot
  never drives off while the compartment door is reported open.
- awaiting_load ends when every order is `in_transit` on /fleet/order_status (the shop
  confirmed) AND the handoff node reports the compartment locked_loaded and bolted; otherwise
  `load_timeout_s` -> NOT_LOADED, the robot staying at the shop.
- handoff ends with the handoff node's `delivered` event for the order -> the next order's
  dropoff, or returning (which is how the coordinator learns the order was delivered). No
  delivery within `handoff_timeout_s` -> NO_SHOW at the dropoff with the goods locked; while the
  compartment is still open for the recipient (or its door open) the robot waits up to
  `handoff_grace_s` longer for the handoff node to finish or relock.
- a cancel (or the coordinator's /fleet/order_status saying the order is cancelled, failed or
  returning) before loading stops the robot (CANCELED); with goods on board the remaining
  stages become one `returning` stage to the shop, and the mission ends there, CANCELED, goods
  locked (at the shop already: at once).
- return/charge missions drive to `return_waypoint`; a charge then waits there until the
  battery reaches `charge_target` (FAILED if it does not start charging in time).

`Checkpoint` is everything a restart needs; `MissionRunner.resume` checks it against the
compartment before going on (goods gone at the dropoff with a delivered event = delivered; goods
gone before the dropoff = FAILED, never a second trip to the shop).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum
from typing import Any

from delivery_robot.compartment_handoff import HandoffState, LockState, Occupancy
from delivery_robot.mission_legs import MODE_DURING_LEG, Leg, MissionKind, RobotMode
from delivery_robot.order_lifecycle import OrderState, is_terminal
from delivery_robot.route_planner import NavCode


class Outcome(IntEnum):
    """`ExecuteMission.Result.OUTCOME_*` wire values."""

    SUCCEEDED = 0
    CANCELED = 1
    FAILED = 2
    NOT_LOADED = 3
    NO_SHOW = 4


class MissionRejected(ValueError):
    """A goal the robot cannot run; the message says why (the goal is rejected, not started)."""


_DRIVES = frozenset({Leg.TO_PICKUP, Leg.TO_DROPOFF, Leg.RETURNING})
_LOADED_STATES = frozenset({OrderState.IN_TRANSIT, OrderState.AWAITING_RECIPIENT})
# A delivery the coordinator has given up on: stop it (goods on board: back to the shop).
_GIVEN_UP = frozenset({OrderState.CANCELLED, OrderState.FAILED, OrderState.RETURNING})
_OPEN_HANDOFF = frozenset({HandoffState.OPEN_FOR_LOADING, HandoffState.OPEN_FOR_RECIPIENT,
                           HandoffState.DOOR_OPEN})
DELIVERED_EVENT = "delivered"  # handoff/events kind (compartment_handoff.EventKind.DELIVERED)
# handoff/assign refusals that waiting does not cure (others, e.g. "already_open", "fault",
# "unavailable", are asked again after `assign_retry_s`).
_PERMANENT_REFUSALS = frozenset({"goods_on_board", "malformed_request", "bad_record"})


# ---- the mission ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderTask:
    order_id: str
    pickup: str
    dropoff: str
    state: OrderState  # as the coordinator sent it: a loaded order resumes at its dropoff
    record: str = field(default="", repr=False)  # credential record JSON ("" = none)


@dataclass(frozen=True)
class MissionSpec:
    mission_id: str
    kind: MissionKind
    orders: tuple[OrderTask, ...]
    pickup: str
    dropoff: str
    return_to: str
    load_timeout_s: float
    handoff_timeout_s: float


@dataclass(frozen=True)
class Stage:
    leg: Leg
    waypoint: str
    order_index: int = -1  # the order a to_dropoff/handoff stage serves; -1 for the others

    @property
    def drives(self) -> bool:
        return self.leg in _DRIVES


@dataclass(frozen=True)
class RunnerConfig:
    nav_retries: int = 2  # re-sent navigate goals per stage after a failure
    nav_retry_delay_s: float = 2.0
    handoff_grace_s: float = 120.0  # extra wait after the handoff timeout while it is open
    charge_target: float = 0.9  # a charge mission ends at this battery fraction
    charge_start_timeout_s: float = 60.0  # at the charger and not charging by then: FAILED
    max_orders: int = 1  # orders per delivery mission (one compartment: one order)
    assign_retry_s: float = 2.0  # re-ask handoff/assign after it was unavailable
    default_load_timeout_s: float = 600.0  # when a goal carries none (<= 0)
    default_handoff_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        problems = []
        if self.nav_retries < 0:
            problems.append("nav_retries must be >= 0")
        if self.max_orders < 1:
            problems.append("max_orders must be >= 1")
        if not 0.0 < self.charge_target <= 1.0:
            problems.append("charge_target must be in (0, 1]")
        times = (self.nav_retry_delay_s, self.handoff_grace_s, self.charge_start_timeout_s,
                 self.assign_retry_s)
        if not all(math.isfinite(t) and t >= 0 for t in times):
            problems.append("nav_retry_delay_s, handoff_grace_s, charge_start_timeout_s and "
                            "assign_retry_s must be >= 0")
        if not (self.default_load_timeout_s > 0 and self.default_handoff_timeout_s > 0):
            problems.append("default load and handoff timeouts must be > 0")
        if problems:
            raise ValueError("bad mission runner config: " + "; ".join(problems))


def plan_stages(spec: MissionSpec, config: RunnerConfig) -> tuple[Stage, ...]:
    """The stages of a mission, starting where its orders' states say; MissionRejected if it
    cannot be run."""
    if not spec.mission_id:
        raise MissionRejected("a mission needs an id")
    if spec.kind is not MissionKind.DELIVERY:
        if not spec.return_to:
            raise MissionRejected(f"a {spec.kind.name.lower()} mission needs a return waypoint")
        drive = (Stage(Leg.RETURNING, spec.return_to),)
        if spec.kind is MissionKind.CHARGE:
            return (*drive, Stage(Leg.CHARGING, spec.return_to))
        return drive
    if not spec.orders:
        raise MissionRejected("a delivery mission needs at least one order")
    if len(spec.orders) > config.max_orders:
        raise MissionRejected(f"{len(spec.orders)} orders, but this robot carries at most "
                              f"{config.max_orders} per mission (one compartment)")
    if not spec.pickup:
        raise MissionRejected("a delivery mission needs a pickup waypoint")
    for order in spec.orders:
        if not order.order_id or not order.dropoff:
            raise MissionRejected("every order needs an id and a dropoff waypoint")
        if order.pickup and order.pickup != spec.pickup:
            raise MissionRejected(f"order {order.order_id} is picked up at {order.pickup}, "
                                  f"not at the mission's {spec.pickup}")
        if order.state is OrderState.RETURNING:
            raise MissionRejected(f"order {order.order_id} is returning to the shop; that "
                                  "takes a return mission")
    live = [i for i, o in enumerate(spec.orders) if not is_terminal(o.state)]
    if not live:
        raise MissionRejected("every order of the mission is already finished")
    loaded = [i for i in live if spec.orders[i].state in _LOADED_STATES]
    if loaded and len(loaded) != len(live):
        raise MissionRejected("some orders are loaded and some are not: cannot resume both")
    stages: list[Stage] = []
    if not loaded:
        stages += [Stage(Leg.TO_PICKUP, spec.pickup), Stage(Leg.AWAITING_LOAD, spec.pickup)]
    for i in live:
        dropoff = spec.orders[i].dropoff
        stages += [Stage(Leg.TO_DROPOFF, dropoff, i), Stage(Leg.HANDOFF, dropoff, i)]
    if spec.return_to:
        stages.append(Stage(Leg.RETURNING, spec.return_to))
    return tuple(stages)


# ---- persisted progress -----------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """What the journal keeps of a running mission (all a restart needs)."""

    spec: MissionSpec
    stages: tuple[Stage, ...]  # the plan; a cancel with goods on board replaces the rest
    index: int  # the current stage
    stage_started_at: float  # node clock, s: deadlines survive a restart
    current_waypoint: str = ""  # last waypoint reached; "" while driving
    delivered: tuple[str, ...] = ()
    cancel_reason: str | None = None  # set once a cancel was taken
    outcome: Outcome | None = None
    message: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """The checkpoint in `text`; ValueError with a reason if it is not one."""
        try:
            data: dict[str, Any] = json.loads(text)
            spec_data = dict(data["spec"])
            spec_data["kind"] = MissionKind(spec_data["kind"])
            spec_data["orders"] = tuple(
                OrderTask(**{**o, "state": OrderState(o["state"])}) for o in spec_data["orders"])
            spec = MissionSpec(**spec_data)
            stages = tuple(Stage(Leg(s["leg"]), s["waypoint"], s["order_index"])
                           for s in data["stages"])
            outcome = data.get("outcome")
            return cls(spec=spec, stages=stages, index=int(data["index"]),
                       stage_started_at=float(data["stage_started_at"]),
                       current_waypoint=str(data.get("current_waypoint", "")),
                       delivered=tuple(data.get("delivered", ())),
                       cancel_reason=data.get("cancel_reason"),
                       outcome=None if outcome is None else Outcome(outcome),
                       message=str(data.get("message", "")))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a mission checkpoint: {error!r}") from None


# ---- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NavigationEnded:
    goal: int  # the `DriveTo.goal` number it answers
    code: NavCode
    message: str = ""


@dataclass(frozen=True)
class OrderStatusSeen:
    order_id: str
    state: OrderState
    reason: str = ""


@dataclass(frozen=True)
class CompartmentSeen:
    """handoff/state: the handoff node's view of the compartment."""

    handoff_state: HandoffState
    lock_state: LockState = LockState.UNKNOWN
    door_closed: bool = True
    occupancy: Occupancy = Occupancy.UNKNOWN
    order_id: str = ""

    @property
    def loaded_and_locked(self) -> bool:
        return (self.handoff_state is HandoffState.LOCKED_LOADED and self.door_closed
                and self.lock_state is LockState.LOCKED)

    @property
    def holds_goods(self) -> bool:
        return (self.handoff_state is HandoffState.LOCKED_LOADED
                or self.occupancy is Occupancy.OCCUPIED)

    @property
    def emptied(self) -> bool:
        return (self.handoff_state is HandoffState.LOCKED_EMPTY
                and self.occupancy is Occupancy.EMPTY)

    @property
    def open(self) -> bool:
        return self.handoff_state in _OPEN_HANDOFF or not self.door_closed


@dataclass(frozen=True)
class HandoffEventSeen:
    kind: str  # handoff/events "kind"
    order_id: str


@dataclass(frozen=True)
class HandoffAssigned:
    """The answer to an `AssignCompartment` command (accepted False + "unavailable" when the
    service is not there or the call failed)."""

    order_id: str
    accepted: bool
    error_code: str = ""
    message: str = ""


@dataclass(frozen=True)
class BatterySeen:
    level: float  # 0..1
    charging: bool


@dataclass(frozen=True)
class CancelRequested:
    reason: str = ""


@dataclass(frozen=True)
class Tick:
    """Only time passes (deadlines, retries)."""


RunnerInput = (NavigationEnded | OrderStatusSeen | CompartmentSeen | HandoffEventSeen
               | HandoffAssigned | BatterySeen | CancelRequested | Tick)


# ---- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriveTo:
    goal: int  # number of this goal within the runner (results name it)
    waypoint: str


@dataclass(frozen=True)
class StopNavigation:
    goal: int


@dataclass(frozen=True)
class AssignCompartment:
    order_id: str
    shop_waypoint: str
    dropoff_waypoint: str
    record: str = field(default="", repr=False)


Command = DriveTo | StopNavigation | AssignCompartment


@dataclass(frozen=True)
class Finished:
    outcome: Outcome
    message: str
    failed_leg: Leg
    delivered: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    commands: tuple[Command, ...] = ()
    journal: bool = False  # the checkpoint changed: persist it before announcing
    finished: Finished | None = None
    notes: tuple[str, ...] = ()  # what happened, for the log


# ---- the runner -------------------------------------------------------------------------------


class MissionRunner:
    """One mission; `handle(input, now)` returns what to do. Not thread-safe."""

    def __init__(self, checkpoint: Checkpoint, config: RunnerConfig, now: float) -> None:
        """Use `start` or `resume`."""
        self._config = config
        self._cp = checkpoint
        self._now = now
        self._commands: list[Command] = []
        self._notes: list[str] = []
        self._journal = False
        self._finished: Finished | None = None
        self._nav_goal = 0  # number of the last navigate goal sent
        self._nav_active = False
        self._nav_attempts = 0
        self._retry_at: float | None = None
        self._last_nav_message = ""
        self._order_states: dict[str, OrderState] = {o.order_id: o.state
                                                      for o in checkpoint.spec.orders}
        self._compartment: CompartmentSeen | None = None
        self._delivered_seen: set[str] = set()
        self._battery: BatterySeen | None = None
        self._assigned: str | None = None  # order the handoff node accepted
        self._assign_pending: str | None = None
        self._assign_retry_at: float | None = None
        self._grace_noted = False

    # -- construction --

    @classmethod
    def start(cls, spec: MissionSpec, config: RunnerConfig, now: float, *,
              current_waypoint: str = "", known: Iterable[RunnerInput] = ()
              ) -> tuple[MissionRunner, Step]:
        """A new mission (MissionRejected if it cannot run) and its first step.

        `current_waypoint` is where the robot stands ("" = between waypoints or unknown);
        `known` are inputs heard before the mission (compartment, battery, order statuses,
        handoff events), taken in before the first decision."""
        spec = replace(
            spec,
            load_timeout_s=spec.load_timeout_s if spec.load_timeout_s > 0
            else config.default_load_timeout_s,
            handoff_timeout_s=spec.handoff_timeout_s if spec.handoff_timeout_s > 0
            else config.default_handoff_timeout_s)
        stages = plan_stages(spec, config)
        runner = cls(Checkpoint(spec, stages, 0, now, current_waypoint), config, now)
        runner._journal = True
        runner._note(f"mission {spec.mission_id} ({spec.kind.name.lower()}): " + " -> ".join(
            f"{s.leg.name.lower()}@{s.waypoint}" for s in stages))
        for event in known:
            runner._absorb(event, now)
        if runner._finished is not None:
            return runner, runner._step()
        runner._request_assignment(now)
        runner._advance(now)
        return runner, runner._step()

    @classmethod
    def resume(cls, checkpoint: Checkpoint, config: RunnerConfig, now: float, *,
               compartment: CompartmentSeen | None,
               delivered_events: set[str] | frozenset[str] = frozenset(),
               known: Iterable[RunnerInput] = ()) -> tuple[MissionRunner, Step]:
        """Go on with a journalled mission after a restart, in the leg the compartment allows.

        `compartment` is the handoff node's state at start-up (None: not heard), and
        `delivered_events` the orders with a `delivered` event in handoff/events' history;
        `known`: other inputs heard before (battery, order statuses), as for `start`.
        Where the robot stands: at the stage's waypoint for a waiting stage; unknown (between
        waypoints) for a drive, which is then driven again from wherever the robot is."""
        if checkpoint.outcome is not None or not 0 <= checkpoint.index < len(checkpoint.stages):
            raise ValueError(f"mission {checkpoint.spec.mission_id} is already finished")
        here = checkpoint.stages[checkpoint.index]
        checkpoint = replace(checkpoint, current_waypoint="" if here.drives else here.waypoint)
        runner = cls(checkpoint, config, now)
        runner._compartment = compartment
        runner._delivered_seen = set(delivered_events)
        runner._journal = True
        stage = runner.stage
        runner._note(f"resuming mission {checkpoint.spec.mission_id} at {stage.leg.name.lower()}"
                     f"@{stage.waypoint}")
        spec = checkpoint.spec
        ours = {o.order_id for o in spec.orders}
        if (stage.leg is Leg.TO_PICKUP and compartment is not None
                and compartment.order_id in ours and compartment.holds_goods):
            # Loaded while we were down (we only get loaded at the shop): wait for the
            # confirmation there instead of driving to the shop again.
            runner._cp = replace(runner._cp, current_waypoint=spec.pickup)
            runner._next_stage(now, "goods already inside")
        elif stage.leg is Leg.HANDOFF and compartment is not None and compartment.emptied:
            # Taken while we were down (the event may have left the history): delivered.
            order_id = spec.orders[stage.order_index].order_id
            if order_id not in runner._delivered_seen:
                runner._note(f"compartment empty at the dropoff: order {order_id} taken")
                runner._delivered_seen.add(order_id)
        elif stage.leg is Leg.TO_DROPOFF and stage.order_index >= 0 and compartment is not None \
                and compartment.emptied and spec.orders[stage.order_index].order_id \
                not in runner._delivered_seen:
            runner._finish(Outcome.FAILED, "compartment found empty after a restart before the "
                           "dropoff: the goods are missing", now)
            return runner, runner._step()
        for event in known:
            runner._absorb(event, now)
        if runner._finished is not None:
            return runner, runner._step()
        runner._request_assignment(now)
        runner._advance(now)
        return runner, runner._step()

    # -- read side --

    @property
    def checkpoint(self) -> Checkpoint:
        return self._cp

    @property
    def spec(self) -> MissionSpec:
        return self._cp.spec

    @property
    def mission_id(self) -> str:
        return self._cp.spec.mission_id

    @property
    def stage(self) -> Stage:
        return self._cp.stages[min(self._cp.index, len(self._cp.stages) - 1)]

    @property
    def leg(self) -> Leg:
        return self.stage.leg

    @property
    def mode(self) -> RobotMode:
        return RobotMode.IDLE if self._finished is not None else MODE_DURING_LEG[self.leg]

    @property
    def current_waypoint(self) -> str:
        return self._cp.current_waypoint

    @property
    def finished(self) -> Finished | None:
        return self._finished

    @property
    def cancelling(self) -> bool:
        return self._cp.cancel_reason is not None

    @property
    def order_ids(self) -> list[str]:
        """Orders on board or being served: the compartment's order first."""
        spec = self._cp.spec
        if spec.kind is MissionKind.CHARGE or self._finished is not None:
            return []
        ids = [o.order_id for o in spec.orders
               if o.order_id not in self._cp.delivered and not is_terminal(o.state)]
        stage = self.stage
        if stage.order_index >= 0:
            current = spec.orders[stage.order_index].order_id
            if current in ids:
                ids.remove(current)
                ids.insert(0, current)
        return ids

    def deadline(self) -> float | None:
        """When the current waiting leg times out (node clock), None for drives."""
        spec, started = self._cp.spec, self._cp.stage_started_at
        if self.leg is Leg.AWAITING_LOAD:
            return started + spec.load_timeout_s
        if self.leg is Leg.HANDOFF:
            return started + spec.handoff_timeout_s
        return None

    # -- the one entry point --

    def handle(self, event: RunnerInput, now: float) -> Step:
        self._commands, self._notes, self._journal = [], [], False
        if not math.isfinite(now):
            self._note(f"ignored a non-finite time {now!r}")
            return self._step()
        now = max(now, self._now)
        self._now = now
        if self._finished is not None:
            return self._step()
        self._absorb(event, now)
        if self._finished is None:
            self._request_assignment(now)
            self._advance(now)
        return self._step()

    # -- inputs --

    def _absorb(self, event: RunnerInput, now: float) -> None:
        """Take one input in (its direct effects only; `_advance` decides the rest)."""
        match event:
            case NavigationEnded():
                self._on_navigation(event, now)
            case OrderStatusSeen():
                self._on_order_status(event, now)
            case CompartmentSeen():
                self._compartment = event
            case HandoffEventSeen(kind=kind, order_id=order_id):
                if kind == DELIVERED_EVENT and order_id:
                    self._delivered_seen.add(order_id)
            case HandoffAssigned():
                self._on_assigned(event, now)
            case BatterySeen():
                self._battery = event
            case CancelRequested(reason=reason):
                self._cancel(reason or "cancel requested", now)
            case Tick():
                pass

    def _on_navigation(self, event: NavigationEnded, now: float) -> None:
        if not self._nav_active or event.goal != self._nav_goal:
            return  # an older goal (preempted, or stopped on purpose)
        self._nav_active = False
        stage = self.stage
        if event.code is NavCode.SUCCEEDED:
            self._cp = replace(self._cp, current_waypoint=stage.waypoint)
            self._next_stage(now, f"reached {stage.waypoint}")
            return
        self._last_nav_message = f"{event.code.name}: {event.message}"
        attempts = self._nav_attempts
        # NO_PATH is retried too: it is mostly a lane navigation closed as blocked (by this
        # robot or, on a shared planner, another), which reopens; an unknown waypoint only
        # costs the retries' delay before the same answer ends the mission.
        if attempts > self._config.nav_retries:
            why = (f"navigation to {stage.waypoint} failed after {attempts} attempt"
                   f"{'s' if attempts != 1 else ''} ({self._last_nav_message})")
            if self.cancelling:
                self._finish(Outcome.CANCELED, f"{self._cp.cancel_reason}; could not get the "
                             f"goods back to the shop: {why}", now)
            else:
                self._finish(Outcome.FAILED, why, now)
            return
        self._retry_at = now + self._config.nav_retry_delay_s
        self._note(f"navigation to {stage.waypoint}: {self._last_nav_message}; retry "
                   f"{attempts} of {self._config.nav_retries} in "
                   f"{self._config.nav_retry_delay_s:g} s")

    def _on_order_status(self, event: OrderStatusSeen, now: float) -> None:
        if event.order_id not in self._order_states:
            return
        self._order_states[event.order_id] = event.state
        spec = self._cp.spec
        if (spec.kind is MissionKind.DELIVERY and event.state in _GIVEN_UP
                and event.order_id not in self._cp.delivered and not self.cancelling):
            why = f": {event.reason}" if event.reason else ""
            self._cancel(f"order {event.order_id} is {event.state.label} on the coordinator"
                         f"{why}", now)

    def _on_assigned(self, event: HandoffAssigned, now: float) -> None:
        if event.order_id != self._assign_pending:
            return
        self._assign_pending = None
        if event.accepted:
            self._assigned = event.order_id
            self._note(f"handoff assigned to order {event.order_id}")
            return
        if event.error_code not in _PERMANENT_REFUSALS:
            self._assign_retry_at = now + self._config.assign_retry_s
            self._note(f"handoff/assign for {event.order_id}: {event.error_code} "
                       f"({event.message}); retry in {self._config.assign_retry_s:g} s")
            return
        # The compartment cannot take this order (another order's goods inside, a fault): a
        # delivery that has not loaded yet cannot go on; one with goods on board goes on (the
        # handoff node then refuses the recipient, and the timeout ends it as a no-show).
        if self._cp.spec.kind is MissionKind.DELIVERY and self.leg in (Leg.TO_PICKUP,
                                                                       Leg.AWAITING_LOAD):
            self._finish(Outcome.FAILED, f"compartment refused order {event.order_id}: "
                         f"{event.error_code}: {event.message}", now)
        else:
            self._note(f"compartment refused order {event.order_id}: {event.error_code}: "
                       f"{event.message}")

    # -- cancel --

    def _goods_on_board(self) -> bool:
        if self._cp.spec.kind is not MissionKind.DELIVERY:
            return False  # a return/charge mission stops where it is told
        leg = self.leg
        if leg in (Leg.TO_DROPOFF, Leg.HANDOFF):
            return True
        if leg is Leg.AWAITING_LOAD:
            return self._compartment is not None and self._compartment.holds_goods
        return False

    def _cancel(self, reason: str, now: float) -> None:
        if self.cancelling:
            return
        self._cp = replace(self._cp, cancel_reason=reason)
        self._journal = True
        leg = self.leg
        pickup = self._cp.spec.pickup
        if not self._goods_on_board():
            self._stop_navigation()
            self._finish(Outcome.CANCELED, f"{reason} (during {leg.name.lower()})", now)
            return
        if leg is Leg.AWAITING_LOAD or (self._cp.current_waypoint == pickup
                                        and not self._nav_active):
            self._finish(Outcome.CANCELED, f"{reason}; the goods are on board, locked, and "
                         f"the robot is at the shop ({pickup})", now)
            return
        # Goods on board: everything left becomes one drive back to the shop.
        self._stop_navigation()
        cp = self._cp
        stages = cp.stages[:cp.index] + (Stage(Leg.RETURNING, pickup),)
        self._cp = replace(cp, stages=stages, stage_started_at=now)
        self._nav_attempts = 0
        self._retry_at = None
        self._note(f"{reason}: goods on board, driving them back to the shop at {pickup}")

    # -- stages --

    def _advance(self, now: float) -> None:
        """Run the current stage as far as the inputs allow (possibly across stages)."""
        for _ in range(len(self._cp.stages) + 1):
            if self._finished is not None:
                return
            before = self._cp.index
            stage = self.stage
            if stage.drives:
                self._drive(stage, now)
            elif stage.leg is Leg.AWAITING_LOAD:
                self._await_load(now)
            elif stage.leg is Leg.HANDOFF:
                self._await_recipient(stage, now)
            elif stage.leg is Leg.CHARGING:
                self._charge(stage, now)
            if self._cp.index == before:
                return

    def _drive(self, stage: Stage, now: float) -> None:
        if self._nav_active:
            return
        if self._cp.current_waypoint == stage.waypoint and self._nav_attempts == 0:
            self._next_stage(now, f"already at {stage.waypoint}")
            return
        if self._retry_at is not None and now < self._retry_at:
            return
        compartment = self._compartment
        if compartment is not None and (not compartment.door_closed
                                        or compartment.handoff_state is HandoffState.DOOR_OPEN):
            return  # never drive off with the door open; it relocks when closed
        self._retry_at = None
        self._nav_goal += 1
        self._nav_attempts += 1
        self._nav_active = True
        if self._cp.current_waypoint:
            self._cp = replace(self._cp, current_waypoint="")
        self._commands.append(DriveTo(self._nav_goal, stage.waypoint))

    def _await_load(self, now: float) -> None:
        spec = self._cp.spec
        confirmed = all(self._order_states.get(o.order_id) in _LOADED_STATES
                        or o.order_id in self._cp.delivered for o in spec.orders
                        if not is_terminal(o.state))
        compartment = self._compartment
        if confirmed and compartment is not None and compartment.loaded_and_locked:
            self._next_stage(now, "loaded, confirmed by the shop and locked")
            return
        if now >= self._cp.stage_started_at + spec.load_timeout_s:
            missing = []
            if not confirmed:
                missing.append("the shop did not confirm loading")
            if compartment is None or not compartment.loaded_and_locked:
                missing.append("the compartment is not locked with goods inside")
            self._finish(Outcome.NOT_LOADED, f"not loaded within {spec.load_timeout_s:g} s at "
                         f"{spec.pickup}: {' and '.join(missing)}", now)

    def _await_recipient(self, stage: Stage, now: float) -> None:
        spec = self._cp.spec
        order_id = spec.orders[stage.order_index].order_id
        if order_id in self._delivered_seen:
            self._cp = replace(self._cp, delivered=(*self._cp.delivered, order_id))
            self._next_stage(now, f"order {order_id} delivered")
            return
        timeout = self._cp.stage_started_at + spec.handoff_timeout_s
        if now < timeout:
            return
        compartment = self._compartment
        if compartment is not None and compartment.open \
                and now < timeout + self._config.handoff_grace_s:
            if not self._grace_noted:
                self._grace_noted = True
                self._note(f"handoff timeout for {order_id}, but the compartment is open: "
                           f"waiting up to {self._config.handoff_grace_s:g} s for it to close")
            return
        state = "locked" if compartment is not None and not compartment.open else (
            "not confirmed locked")
        self._finish(Outcome.NO_SHOW, f"recipient of order {order_id} did not come within "
                     f"{spec.handoff_timeout_s:g} s; goods {state} at {stage.waypoint}", now)

    def _charge(self, stage: Stage, now: float) -> None:
        battery = self._battery
        target = self._config.charge_target
        if battery is not None and battery.level >= target:
            self._next_stage(now, f"charged to {battery.level:.0%}")
            return
        charging = battery is not None and battery.charging
        if not charging and now >= self._cp.stage_started_at + self._config.charge_start_timeout_s:
            level = "unknown" if battery is None else f"{battery.level:.0%}"
            self._finish(Outcome.FAILED, f"not charging at {stage.waypoint} after "
                         f"{self._config.charge_start_timeout_s:g} s (battery {level})", now)

    def _next_stage(self, now: float, why: str) -> None:
        cp = self._cp
        index = cp.index + 1
        self._nav_attempts = 0
        self._retry_at = None
        self._grace_noted = False
        self._journal = True
        if index >= len(cp.stages):
            self._cp = replace(cp, index=len(cp.stages) - 1)
            if self.cancelling:
                self._finish(Outcome.CANCELED, f"{cp.cancel_reason}; the goods are back at the "
                             f"shop ({cp.spec.pickup}), locked", now)
            else:
                self._finish(Outcome.SUCCEEDED, f"mission complete ({why})", now)
            return
        self._cp = replace(cp, index=index, stage_started_at=now)
        self._note(f"{why}: now {self.leg.name.lower()}@{self.stage.waypoint}")
        self._request_assignment(now)

    # -- the compartment's order --

    def _order_to_assign(self) -> tuple[OrderTask, str] | None:
        """The order the compartment must serve now, and its shop waypoint."""
        spec = self._cp.spec
        if spec.kind is MissionKind.CHARGE or not spec.orders:
            return None
        stage = self.stage
        index = stage.order_index
        if index < 0:
            pending = [i for i, o in enumerate(spec.orders)
                       if o.order_id not in self._cp.delivered and not is_terminal(o.state)]
            if not pending:
                return None
            index = pending[0]
        order = spec.orders[index]
        if order.order_id in self._cp.delivered:
            return None
        shop = order.pickup or spec.pickup or spec.return_to
        return order, shop

    def _request_assignment(self, now: float) -> None:
        wanted = self._order_to_assign()
        if wanted is None or self._finished is not None:
            return
        order, shop = wanted
        if order.order_id in (self._assigned, self._assign_pending):
            return
        if self._assign_retry_at is not None and now < self._assign_retry_at:
            return
        self._assign_retry_at = None
        self._assign_pending = order.order_id
        self._commands.append(AssignCompartment(order.order_id, shop, order.dropoff, order.record))

    # -- effects --

    def _stop_navigation(self) -> None:
        if self._nav_active:
            self._nav_active = False
            self._commands.append(StopNavigation(self._nav_goal))

    def _finish(self, outcome: Outcome, message: str, now: float) -> None:
        if self._finished is not None:
            return
        self._stop_navigation()
        cp = self._cp
        self._cp = replace(cp, outcome=outcome, message=message)
        self._journal = True
        self._finished = Finished(outcome, message, self.leg, cp.delivered)
        self._note(f"mission {cp.spec.mission_id} ended {outcome.name}: {message}")

    def _note(self, text: str) -> None:
        self._notes.append(text)

    def _step(self) -> Step:
        step = Step(tuple(self._commands), self._journal, self._finished if self._journal
                    and self._finished is not None else None, tuple(self._notes))
        self._commands, self._notes, self._journal = [], [], False
        return step

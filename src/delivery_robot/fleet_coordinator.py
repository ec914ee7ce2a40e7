"""The fleet coordinator's core: orders in, missions out, every decision persisted first.

ROS-free so that it can be tested with an injected clock and driven from any thread: the
`coordinator` node feeds it service requests, robot states and action feedback/results, and the
shop HTTP API calls the same public methods from its own threads. One lock serialises
everything; each method returns the *effects* the caller must carry out, in order:

- `Announce`: an order transition, already committed to the store (persist, then announce);
- `SendMission` / `CancelMission`: what to ask of a robot's `execute_mission` action;
- `Alert`: something an operator (and/or the shop) must hear about.

If an `effect_sink` is given, every effect list is also handed to it under the lock, so effects
caused by another thread (an HTTP request) reach the node in the order they were decided.

Contracts with the mission executor (see docs/architecture.md):
- a delivery mission's legs map to order states (`ORDER_STATE_DURING_LEG`); the robot leaves
  the handoff leg for the returning leg only after a granted handoff, so "returning after
  handoff" means delivered (also how progress is recovered from `robot_state` after a restart,
  when the action's goal handles are gone);
- a no-show ends the delivery mission at the dropoff (OUTCOME_NO_SHOW, goods locked inside);
  the coordinator then sends a RETURN mission to the shop (`<mission>-return`);
- a re-sent mission (navigation retry) carries each order's current state in `orders[].state`,
  so an executor resumes a loaded order at the dropoff leg instead of the pickup;
- a delivery mission carries each order's credential record (`handoff_records`, JSON of the
  stored hashes) for the robot's handoff node;
- when an order reaches awaiting_load, `OpenCompartment` asks the robot's handoff node to
  unlock for loading; when returned goods are back at the shop, to unlock for unloading;
- a cancel with goods on board: the order is moved to returning first, then the mission is
  cancelled; the executor drives the goods back to the shop itself (leg RETURNING, which does
  not mean delivered for an order already returning) and ends CANCELED there; the coordinator
  then sends the return mission, which ends at once at the shop;
- a cancel while the robot waits at the shop (awaiting_load): the shop may already have put
  the goods in without confirming, so the compartment is opened for unloading (the robot's
  handoff would otherwise refuse its next order with `goods_on_board`);
- a free robot whose battery drops below `charge_below` is sent a CHARGE mission to the
  nearest charger (`charge-<robot>-<n>`) and is not dispatched until it reports
  `charge_until`;
- a mission that ends without a result (the executor restarted and resumed it without the
  action's goal handle) shows as the robot reporting no mission after having reported it; after
  `result_grace_s` without a result the coordinator decides from the orders' states.

Re-optimisation (`FleetReplanner`, OR-Tools): every `replan_period_s` from `tick`, and after a
submit that leaves `replan_when_requested` orders waiting, the movable orders (requested, or
assigned/to_pickup: never once the robot waits at the shop) and the usable robots are
snapshotted under the lock; the plan is computed off the lock by `replan_runner` (the node's
worker pool; at most one run at a time) and applied under the lock by `finish_replan`, which
skips every move the world has overtaken and every move to a robot that is not free.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

from delivery_robot.demo_map import DemoMap
from delivery_robot.dispatch import (
    Assignment,
    BatteryModel,
    Dispatcher,
    DispatchOrder,
    PlannedStop,
    RobotSnapshot,
    RouteCache,
    ServiceTimes,
    TimeToFinishDispatcher,
)
from delivery_robot.fleet_replanner import FleetReplan, FleetReplanner, OpenOrder, ReplanSettings
from delivery_robot.handoff_credentials import HandoffCredentials, IssuedCredentials
from delivery_robot.handoff_record import record_to_json
from delivery_robot.mission_legs import ORDER_STATE_DURING_LEG, Leg, MissionKind, RobotMode
from delivery_robot.order_intake import (
    AcceptedOrder,
    OrderIntake,
    OrderRequest,
    Rejection,
    RobotCapacity,
    Shop,
    SizeClass,
)
from delivery_robot.order_lifecycle import (
    GOODS_ON_BOARD_STATES,
    IllegalTransition,
    OrderState,
    is_terminal,
)
from delivery_robot.order_store import (
    IdempotencyConflict,
    OrderEvent,
    OrderStore,
    OrderStoreError,
    StoredOrder,
)
from delivery_robot.route_graph import RouteGraph

_S = OrderState
# The forward path of a delivery; progress reports may skip steps, never go back.
_FORWARD = (
    _S.ASSIGNED,
    _S.TO_PICKUP,
    _S.AWAITING_LOAD,
    _S.IN_TRANSIT,
    _S.AWAITING_RECIPIENT,
    _S.DELIVERED,
)
_UNLOADED = frozenset({_S.ASSIGNED, _S.TO_PICKUP, _S.AWAITING_LOAD})
# What the re-optimiser may move: never an order whose robot already waits at the shop.
_MOVABLE = frozenset({_S.REQUESTED, _S.ASSIGNED, _S.TO_PICKUP})
_RETURN_SUFFIX = "-return"
_CHARGE_PREFIX = "charge-"
_HOME_PREFIX = "home-"  # a free robot left away from home (a cancelled or failed mission)
_CHARGE_RETRY_S = 30.0  # after a refused or failed charge mission, ask again this much later
_UNUSABLE_MODES = frozenset({RobotMode.ESTOP, RobotMode.FAULT})


# Which delivery leg a robot's mode reveals: how progress is recovered without action feedback.
_LEG_OF_MODE: dict[RobotMode, Leg] = {
    RobotMode.TO_PICKUP: Leg.TO_PICKUP,
    RobotMode.AWAITING_LOAD: Leg.AWAITING_LOAD,
    RobotMode.TO_DROPOFF: Leg.TO_DROPOFF,
    RobotMode.AWAITING_RECIPIENT: Leg.HANDOFF,
    RobotMode.RETURNING: Leg.RETURNING,
}
_FREE_MODES = frozenset({RobotMode.IDLE, RobotMode.CHARGING})
# Where an open order's robot is, or is going: its shop (before loading, and with goods coming
# back) or its dropoff (loaded).
_TO_SHOP_STATES = frozenset({OrderState.ASSIGNED, OrderState.TO_PICKUP, OrderState.AWAITING_LOAD,
                             OrderState.RETURNING})
_TO_DOOR_STATES = frozenset({OrderState.ASSIGNED, OrderState.TO_PICKUP, OrderState.AWAITING_LOAD,
                             OrderState.IN_TRANSIT, OrderState.AWAITING_RECIPIENT})


class MissionOutcome(IntEnum):
    """`ExecuteMission.Result.OUTCOME_*` wire values."""

    SUCCEEDED = 0
    CANCELED = 1
    FAILED = 2
    NOT_LOADED = 3
    NO_SHOW = 4


class AlertKind(StrEnum):
    ROBOT_OFFLINE = "robot_offline"
    ROBOT_BACK_ONLINE = "robot_back_online"
    GOODS_ON_OFFLINE_ROBOT = "goods_on_offline_robot"
    ROBOT_ESTOP = "robot_estop"
    ROBOT_FAULT = "robot_fault"
    NAVIGATION_RETRY = "navigation_retry"
    GOODS_RETURNING = "goods_returning"
    GOODS_BACK_AT_SHOP = "goods_back_at_shop"
    RETURN_FAILED = "return_failed"
    RECIPIENT_REMINDER = "recipient_reminder"
    NOT_LOADED = "not_loaded"
    UNKNOWN_AFTER_RESTART = "unknown_after_restart"
    CHARGE_FAILED = "charge_failed"


class Audience(StrEnum):
    OPERATOR = "operator"
    SHOP = "shop"
    BOTH = "both"


# ---- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Announce:
    """Publish this persisted transition on /fleet/order_status (and the websocket)."""

    event: OrderEvent
    queue_position: int = 0  # n >= 1: n-th waiting order; 0: served or finished


@dataclass(frozen=True)
class SendMission:
    """Send an ExecuteMission goal; `orders` carry their current state (resume point)."""

    robot_id: str
    mission_id: str
    kind: MissionKind
    orders: tuple[StoredOrder, ...]
    pickup_waypoint: str
    dropoff_waypoint: str
    return_waypoint: str
    load_timeout_s: float
    handoff_timeout_s: float
    handoff_records: tuple[str, ...] = ()  # per order: credential record JSON ("" = none)


@dataclass(frozen=True)
class CancelMission:
    robot_id: str
    mission_id: str


@dataclass(frozen=True)
class OpenCompartment:
    """Ask the robot's handoff node to unlock for the shop (`handoff/open_for_loading`): to
    load an order waiting at the shop, or to take back goods returned to it."""

    robot_id: str
    order_id: str
    purpose: str  # "loading" or "unloading"


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    message: str
    audience: Audience = Audience.OPERATOR
    order_id: str = ""
    shop_id: str = ""
    robot_id: str = ""


Effect = Announce | SendMission | CancelMission | OpenCompartment | Alert
EffectSink = Callable[[Sequence[Effect]], None]


@dataclass(frozen=True)
class Reply:
    """Answer to a shop/operator request: `error_code` is "" when accepted.

    `credentials` (plain PIN and QR token) is set once, on the submit that created the order.
    """

    accepted: bool
    error_code: str
    message: str
    order: StoredOrder | None = None
    credentials: IssuedCredentials | None = None
    effects: tuple[Effect, ...] = ()


# ---- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class CoordinatorPolicy:
    """The failure policies' knobs (all from config/coordinator.yaml)."""

    heartbeat_timeout_s: float = 5.0
    navigation_retries: int = 2  # re-sends of a failed mission before giving up on it
    load_timeout_s: float = 600.0  # sent to the robot: how long to wait at the shop
    handoff_timeout_s: float = 600.0  # sent to the robot: how long to wait for the recipient
    recipient_reminder_after_s: float = 300.0  # re-notify the recipient after this wait
    # A robot reporting no mission after it reported ours: wait this long for the action's
    # result before deciding from the orders' states (the executor restarted and resumed).
    result_grace_s: float = 3.0
    # Re-optimise open, not-yet-loaded assignments this often (s; 0 = never), and also after
    # a submit leaves at least `replan_when_requested` orders waiting (0 = never).
    replan_period_s: float = 15.0
    replan_time_limit_s: float = 0.5  # OR-Tools time limit of one re-optimisation
    replan_when_requested: int = 5
    # Promised delivery = request + the dispatcher's estimated time to deliver + this margin;
    # an order no robot can take at once is promised `promise_queued_s` more on top.
    promise_margin_s: float = 300.0
    promise_queued_s: float = 1200.0
    # A free robot below `charge_below` (0 = off) goes to the nearest charger; it is not
    # dispatched again until it reports at least `charge_until`.
    charge_below: float = 0.2
    charge_until: float = 0.8
    # A shop's pickup point and a door's dropoff are dead ends one robot wide: an order whose
    # shop or dropoff another robot is at (or driving to) for an open order waits until it
    # has left, instead of sending a second robot to meet the first on its way out. (Off here,
    # on in config/coordinator.yaml: the emulated robots of the tablet demo have no traffic.)
    one_robot_per_waypoint: bool = False
    # A robot free for this long away from home and chargers (its mission was cancelled or
    # re-planned away, or failed) is sent home, so it does not stand in a lane; 0 = never.
    return_home_after_s: float = 0.0

    def __post_init__(self) -> None:
        if self.heartbeat_timeout_s <= 0 or self.navigation_retries < 0:
            raise ValueError("heartbeat_timeout_s must be > 0 and navigation_retries >= 0")
        if not self.result_grace_s >= 0:
            raise ValueError("result_grace_s must be >= 0")
        if min(self.load_timeout_s, self.handoff_timeout_s, self.recipient_reminder_after_s) <= 0:
            raise ValueError("load, handoff and reminder times must be > 0")
        if self.replan_period_s < 0 or not self.replan_time_limit_s > 0:
            raise ValueError("replan_period_s must be >= 0 and replan_time_limit_s > 0")
        if self.replan_when_requested < 0:
            raise ValueError("replan_when_requested must be >= 0")
        if not self.return_home_after_s >= 0:
            raise ValueError("return_home_after_s must be >= 0")
        if self.promise_margin_s < 0 or self.promise_queued_s < 0:
            raise ValueError("promise_margin_s and promise_queued_s must be >= 0")
        if not 0.0 <= self.charge_below < 1.0 or not self.charge_below <= self.charge_until <= 1.0:
            raise ValueError("need 0 <= charge_below < 1 and charge_below <= charge_until <= 1")


@dataclass(frozen=True)
class CoordinatorWorld:
    """What the coordinator needs of the map: shops, waypoint kinds, routes, where robots go
    home, and how to name the waypoint nearest a pose."""

    shops: Mapping[str, str]  # shop id -> pickup waypoint
    waypoint_kinds: Mapping[str, str]
    travel_time: Callable[[str, str], float | None]
    chargers: tuple[str, ...]
    home: str  # return waypoint at the end of a delivery (depot)
    locate: Callable[[float, float], str]

    @classmethod
    def from_route_graph(cls, route: RouteGraph) -> CoordinatorWorld:
        depots = [w.name for w in route.depots]
        chargers = tuple(w.name for w in route.chargers)
        if not depots and not chargers:
            raise ValueError(f"world {route.world!r} has no depot or charger to return to")
        return cls(
            shops={s.shop_id: s.waypoint for s in route.shops},
            waypoint_kinds={name: w.kind.value for name, w in route.waypoints.items()},
            travel_time=route.travel_time,
            chargers=chargers or (depots[0],),
            home=depots[0] if depots else chargers[0],
            locate=lambda x, y: route.nearest_waypoint(x, y).name,
        )

    @classmethod
    def from_demo_map(cls, demo: DemoMap, cruise_speed_mps: float = 1.5) -> CoordinatorWorld:
        """The straight-line demo map of `make sim`: the depot doubles as the charger."""
        kinds = {name: "dropoff" for name in demo.dropoffs}
        kinds.update({wp: "shop" for wp in demo.shops.values()})
        kinds[demo.depot] = "depot"

        def locate(x: float, y: float) -> str:
            return min(
                demo.waypoints,
                key=lambda n: math.hypot(demo.waypoints[n][0] - x, demo.waypoints[n][1] - y),
            )

        return cls(
            shops=dict(demo.shops),
            waypoint_kinds=kinds,
            travel_time=lambda a, b: demo.distance(a, b) / cruise_speed_mps,
            chargers=(demo.depot,),
            home=demo.depot,
            locate=locate,
        )


# ---- robot registry -----------------------------------------------------------------------


@dataclass(frozen=True)
class RobotSample:
    """One `robot_state` message, as the core needs it."""

    robot_id: str
    mode: RobotMode
    x: float = 0.0
    y: float = 0.0
    current_waypoint: str = ""
    battery: float = 1.0
    size_class: SizeClass = SizeClass.LARGE
    max_payload_kg: float = 20.0
    mission_id: str = ""
    order_ids: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    # The compartment is not empty and locked (goods on board, open for loading or for a
    # recipient, a fault): such a robot takes no new mission, even with no mission running:
    # goods brought back to a shop must be taken out before the robot drives off.
    compartment_busy: bool = False


@dataclass
class RobotEntry:
    robot_id: str
    sample: RobotSample | None = None
    last_seen: float = -math.inf
    online: bool = False
    # The mission we believe the robot runs (sent, or confirmed from its state); None = free.
    mission_id: str | None = None
    # Set after a goal rejection: not free again until the robot's next state sample.
    hold_until_next_sample: bool = False
    # The robot has reported `mission_id` (so its later absence means the mission ended).
    confirmed: bool = False
    # When the robot first reported no mission after confirming one (result still awaited).
    ended_at: float | None = None
    # Battery went below charge_below: not dispatched until it reports charge_until.
    needs_charge: bool = False
    next_charge_at: float = -math.inf  # no charge mission before this (after a refusal)
    free_since: float | None = None  # free (and online) since; None while busy
    next_home_at: float = -math.inf  # no home mission before this (after one failed)

    def run(self, mission_id: str | None, *, confirmed: bool = False) -> None:
        """Believe the robot runs `mission_id` from now on (None: free)."""
        self.mission_id = mission_id
        self.confirmed = confirmed
        self.ended_at = None

    @property
    def free(self) -> bool:
        s = self.sample
        return (
            self.online
            and s is not None
            and s.mode in _FREE_MODES
            and not s.mission_id
            and not s.compartment_busy
            and self.mission_id is None
            and not self.hold_until_next_sample
        )


@dataclass(frozen=True)
class RobotView:
    """A robot as the API's `GET /robots` shows it."""

    robot_id: str
    online: bool
    free: bool
    mode: RobotMode | None
    waypoint: str
    battery: float | None
    mission_id: str
    last_seen: float


@dataclass
class _MissionInfo:
    """In-memory facts about a mission (lost on restart; the store has what matters)."""

    robot_id: str
    order_ids: tuple[str, ...]
    kind: MissionKind
    attempts: int = 1
    cancel_requested: bool = False
    adopted: bool = False  # found running after a restart: no goal handle, no result


@dataclass(frozen=True)
class ReplanJob:
    """What one re-optimisation plans with: a snapshot taken under the coordinator's lock."""

    orders: tuple[OpenOrder, ...]
    robots: tuple[RobotSnapshot, ...]
    compartments: Mapping[str, int]
    missions: Mapping[str, str | None]  # order id -> its mission id at the snapshot
    now: float


@dataclass
class _OrderMemo:
    queue_reason: str = ""
    excluded_robots: set[str] = field(default_factory=set)
    flagged: bool = False  # loaded order whose robot went offline or is unknown
    reminded: bool = False
    awaiting_since: float | None = None


# ---- the core -----------------------------------------------------------------------------


class FleetCoordinator:
    """Owns the store, intake, dispatch, credential issuing, robot registry and policies."""

    def __init__(
        self,
        store: OrderStore,
        world: CoordinatorWorld,
        credentials: HandoffCredentials,
        *,
        fleet: Iterable[RobotCapacity],
        policy: CoordinatorPolicy | None = None,
        dispatcher: Dispatcher | None = None,
        robot_ids: Iterable[str] = (),
        effect_sink: EffectSink | None = None,
        replan_runner: Callable[[Callable[[], None]], object] | None = None,
        now: float = 0.0,
    ) -> None:
        """`replan_runner(work)` runs a re-optimisation off the lock (a worker thread in the
        node); without one it runs in the calling thread after the lock is released."""
        self._lock = threading.RLock()
        self._issue_lock = threading.Lock()  # HandoffCredentials is not thread-safe
        self._store = store
        self._world = world
        self._credentials = credentials
        self._policy = policy or CoordinatorPolicy()
        self._sink = effect_sink
        self._intake = OrderIntake(
            [Shop(shop_id, wp) for shop_id, wp in world.shops.items()],
            world.waypoint_kinds,
            fleet,
            world.travel_time,
        )
        self._routes = RouteCache(world.travel_time)
        self._service = ServiceTimes()
        self._battery = BatteryModel(world.chargers)
        self._dispatcher: Dispatcher = dispatcher or TimeToFinishDispatcher(
            self._routes, self._battery, self._service
        )
        # Its own RouteCache: the replanner runs in another thread and RouteCache is not
        # thread-safe to share.
        self._replanner = FleetReplanner(
            RouteCache(world.travel_time),
            BatteryModel(chargers=world.chargers, reserve=self._battery.reserve),
            self._service,
            ReplanSettings(time_limit_s=self._policy.replan_time_limit_s),
        )
        self._replan_runner = replan_runner
        self._replan_running = False
        self._next_replan_at = now + self._policy.replan_period_s
        self.last_replan: FleetReplan | None = None  # the latest result, for logs and tests
        self.replans_applied = 0  # moves carried out since start
        self._errand_count = 0
        self._robots: dict[str, RobotEntry] = {}
        self._missions: dict[str, _MissionInfo] = {}
        self._orphans_cancelled: set[str] = set()
        self._ended_without_result: set[tuple[str, str]] = set()
        self._memo: dict[str, _OrderMemo] = {}
        self._started = now
        for robot_id in robot_ids:
            self._robots[robot_id] = RobotEntry(robot_id, last_seen=now)
        # Restart recovery: open orders come back from the store; robots with orders must
        # report before they are reconciled (see on_robot_state).
        self._unreconciled: set[str] = set()
        for order in store.open_orders():
            if order.robot_id is not None:
                self._unreconciled.add(order.robot_id)
                entry = self._robots.setdefault(
                    order.robot_id, RobotEntry(order.robot_id, last_seen=now)
                )
                entry.last_seen = now

    # -- public API (any thread) ------------------------------------------------------------

    @property
    def policy(self) -> CoordinatorPolicy:
        return self._policy

    def submit_order(
        self, request: OrderRequest, now: float, *, promised_by: float | None = None
    ) -> Reply:
        """Validate, persist with fresh credentials, dispatch at once (or queue with a reason).

        `promised_by`: a delivery time the shop asked for (store clock, epoch seconds); without
        it the order is promised the dispatcher's estimate plus `promise_margin_s`.
        """
        if promised_by is not None and not math.isfinite(promised_by):
            return Reply(False, "invalid_promise", "promised_by must be a finite time")
        reply, job = self._submit(request, now, promised_by)
        if job is not None:
            self._launch_replan(job)
        return reply

    def _submit(
        self, request: OrderRequest, now: float, promised_by: float | None
    ) -> tuple[Reply, ReplanJob | None]:
        checked = self._intake.validate(request)
        if isinstance(checked, Rejection):
            return Reply(False, checked.code.value, checked.message), None
        if checked.idempotency_key:
            existing = self._store.find_by_idempotency_key(
                checked.shop_id, checked.idempotency_key
            )
            if existing is not None and _same_order(checked, existing):
                return self._replayed(checked, existing), None  # no hashing for a retry
        order_id = self._store.new_order_id()
        with self._issue_lock:  # scrypt takes ~0.1 s: outside the coordinator's lock
            issued = self._credentials.issue(order_id, now)
            record = self._credentials.record(order_id)
            self._credentials.revoke(order_id)  # the handoff keeps its own copy
        assert record is not None
        with self._lock:
            promise_in = None if promised_by is not None else self._promise_in_s(checked)
            try:
                outcome = self._store.submit(checked, order_id=order_id, credentials=record,
                                             promised_by=promised_by, promise_in_s=promise_in)
            except IdempotencyConflict as error:
                return Reply(False, error.code, str(error)), None
            if not outcome.created:
                return self._replayed(checked, outcome.order), None
            effects: list[Effect] = []
            assert outcome.event is not None
            self._memo[order_id] = _OrderMemo()
            effects.append(Announce(outcome.event, self._queue_position(order_id)))
            self._dispatch_queue(effects, now)
            order = self._store.get(order_id)
            message = "order accepted"
            if order.state is _S.REQUESTED:
                message += f"; {self._memo[order_id].queue_reason}"
            job = None
            wanted = self._policy.replan_when_requested
            if wanted and len(self._store.orders_by_state(_S.REQUESTED)) >= wanted:
                job = self._take_replan_job(now)
            return Reply(True, "", message, order, issued, tuple(self._emit(effects))), job

    def cancel_order(self, order_id: str, requested_by: str, reason: str, now: float) -> Reply:
        """Before loading: cancelled at once. After: the goods ride back to the shop first.

        `requested_by` is a shop id (it may cancel only its own orders) or "operator".
        """
        with self._lock:
            order = self._store.find(order_id)
            refusal = self._check_caller(order, order_id, requested_by)
            if refusal is not None:
                return refusal
            assert order is not None
            why = f"cancelled by {requested_by}" + (f": {reason}" if reason else "")
            effects: list[Effect] = []
            if is_terminal(order.state):
                return Reply(False, "not_cancellable", f"order {order_id} is already "
                             f"{order.state.label}", order)
            if order.state is _S.RETURNING:
                return Reply(False, "not_cancellable", f"order {order_id} is already on its "
                             "way back to the shop", order)
            if order.state in GOODS_ON_BOARD_STATES:
                self._return_to_shop(order, f"cancel: {why}", effects, now)
            else:
                mission = order.mission_id
                self._transition(order, _S.CANCELLED, why, effects)
                if mission is not None and order.robot_id is not None:
                    self._cancel_mission(order.robot_id, mission, effects)
                if order.state is _S.AWAITING_LOAD and order.robot_id is not None:
                    # The goods may be in already (lid closed, not confirmed): let the shop
                    # take them back, or the robot refuses its next order (goods_on_board).
                    effects.append(OpenCompartment(order.robot_id, order_id, "unloading"))
            return Reply(True, "", why, self._store.get(order_id), None, tuple(self._emit(effects)))

    def confirm_loaded(self, order_id: str, shop_id: str, now: float) -> Reply:
        """The shop closed the lid: the goods are on board (awaiting_load -> in_transit)."""
        with self._lock:
            order = self._store.find(order_id)
            refusal = self._check_caller(order, order_id, shop_id)
            if refusal is not None:
                return refusal
            assert order is not None
            if order.state is not _S.AWAITING_LOAD:
                return Reply(False, "not_awaiting_load", f"order {order_id} is "
                             f"{order.state.label}; loading is confirmed only while the robot "
                             "waits at the shop", order)
            effects: list[Effect] = []
            self._transition(order, _S.IN_TRANSIT, f"loaded, confirmed by {shop_id}", effects)
            return Reply(True, "", "loaded", self._store.get(order_id), None,
                         tuple(self._emit(effects)))

    def get_order(self, order_id: str) -> StoredOrder | None:
        return self._store.find(order_id)

    def list_orders(
        self, shop_id: str | None = None, state: OrderState | None = None
    ) -> list[StoredOrder]:
        if shop_id is not None:
            return self._store.orders_by_shop(shop_id, state)
        if state is not None:
            return self._store.orders_by_state(state)
        return self._store.open_orders()

    def history(self, order_id: str) -> list[OrderEvent]:
        return self._store.history(order_id)

    def queue_reason(self, order_id: str) -> str:
        with self._lock:
            memo = self._memo.get(order_id)
            return memo.queue_reason if memo else ""

    def robots(self) -> list[RobotView]:
        with self._lock:
            views = []
            for entry in sorted(self._robots.values(), key=lambda e: e.robot_id):
                s = entry.sample
                views.append(RobotView(
                    robot_id=entry.robot_id,
                    online=entry.online,
                    free=entry.free,
                    mode=s.mode if s else None,
                    waypoint=s.current_waypoint if s else "",
                    battery=s.battery if s else None,
                    mission_id=s.mission_id if s else "",
                    last_seen=entry.last_seen,
                ))
            return views

    def robot_samples(self) -> list[RobotSample]:
        with self._lock:
            return [e.sample for e in self._robots.values() if e.online and e.sample]

    def offline_robot_ids(self) -> list[str]:
        with self._lock:
            return sorted(e.robot_id for e in self._robots.values() if not e.online)

    def counts(self) -> tuple[int, int]:
        """(orders waiting for a robot, orders being served) for /fleet/state."""
        open_orders = self._store.open_orders()
        waiting = sum(1 for o in open_orders if o.state is _S.REQUESTED)
        return waiting, len(open_orders) - waiting

    # -- robot inputs -----------------------------------------------------------------------

    def on_robot_state(self, sample: RobotSample, now: float) -> list[Effect]:
        """Heartbeat, registry update, reconciliation after a restart, progress from the mode."""
        with self._lock:
            effects: list[Effect] = []
            entry = self._robots.setdefault(sample.robot_id, RobotEntry(sample.robot_id))
            previous = entry.sample
            was_online = entry.online
            entry.sample = sample
            entry.last_seen = now
            entry.online = True
            entry.hold_until_next_sample = False
            self._update_charge_need(entry, sample)
            if previous is not None and not was_online:
                effects.append(Alert(AlertKind.ROBOT_BACK_ONLINE,
                                     f"{sample.robot_id} is back online", robot_id=sample.robot_id))
            self._mode_alerts(previous, sample, effects)
            if sample.robot_id in self._unreconciled or not was_online:
                self._unreconciled.discard(sample.robot_id)
                self._reconcile(entry, effects, now)
            else:
                self._follow(entry, effects, now)
            self._dispatch_queue(effects, now)
            if not entry.free:
                entry.free_since = None
            elif entry.free_since is None:
                entry.free_since = now
            return self._emit(effects)

    def on_mission_feedback(
        self, robot_id: str, mission_id: str, leg: Leg, now: float
    ) -> list[Effect]:
        with self._lock:
            effects: list[Effect] = []
            info = self._missions.get(mission_id)
            if info is not None and info.robot_id == robot_id:
                self._progress(mission_id, leg, effects, now)
            return self._emit(effects)

    def on_mission_rejected(self, robot_id: str, mission_id: str, now: float) -> list[Effect]:
        """The robot refused the goal (busy) or its action server is not there."""
        with self._lock:
            effects: list[Effect] = []
            info = self._missions.pop(mission_id, None)
            entry = self._robots.get(robot_id)
            if entry is not None and entry.mission_id == mission_id:
                entry.run(None)
                entry.hold_until_next_sample = True
                if mission_id.startswith(_CHARGE_PREFIX):
                    entry.next_charge_at = now + _CHARGE_RETRY_S
            if info is not None:
                for order in self._orders_of(info):
                    if order.state in _UNLOADED:
                        self._transition(order, _S.REQUESTED,
                                         f"{robot_id} refused mission {mission_id}", effects)
                    elif order.state in GOODS_ON_BOARD_STATES:
                        self._flag(order, f"{robot_id} refused mission {mission_id} with the "
                                   "goods on board", effects)
            self._dispatch_queue(effects, now)
            return self._emit(effects)

    def on_mission_result(
        self,
        robot_id: str,
        mission_id: str,
        outcome: MissionOutcome,
        now: float,
        *,
        message: str = "",
        delivered_order_ids: Iterable[str] = (),
    ) -> list[Effect]:
        with self._lock:
            effects: list[Effect] = []
            entry = self._robots.get(robot_id)
            if entry is not None and entry.mission_id == mission_id:
                entry.run(None)
            if (robot_id, mission_id) in self._ended_without_result:
                # Already decided from the orders' states: a late result changes nothing.
                self._ended_without_result.discard((robot_id, mission_id))
                return self._emit(effects)
            info = self._missions.pop(mission_id, None)
            if info is None:
                info = self._recover_mission_info(robot_id, mission_id)
            if info is not None and info.robot_id == robot_id:
                self._apply_result(info, mission_id, outcome, message,
                                   set(delivered_order_ids), effects, now)
            self._dispatch_queue(effects, now)
            return self._emit(effects)

    def tick(self, now: float) -> list[Effect]:
        """Heartbeats (offline robots) and timed reminders; call about once a second."""
        with self._lock:
            effects: list[Effect] = []
            for entry in self._robots.values():
                silent = now - entry.last_seen
                if entry.online and silent > self._policy.heartbeat_timeout_s:
                    self._robot_offline(entry, f"silent for {silent:.1f} s", effects)
                elif (not entry.online and entry.robot_id in self._unreconciled
                      and silent > self._policy.heartbeat_timeout_s):
                    # A robot that had orders before the restart and never reported again.
                    self._unreconciled.discard(entry.robot_id)
                    self._robot_offline(entry, "not heard from since the coordinator restarted",
                                        effects)
                elif (entry.online and entry.ended_at is not None
                      and now - entry.ended_at >= self._policy.result_grace_s):
                    self._ended_without_result_decide(entry, effects, now)
            self._remind_recipients(effects, now)
            self._dispatch_queue(effects, now)
            self._send_home(effects, now)
            job = None
            if self._policy.replan_period_s > 0 and now >= self._next_replan_at:
                self._next_replan_at = now + self._policy.replan_period_s
                job = self._take_replan_job(now)
            emitted = self._emit(effects)
        if job is not None:
            self._launch_replan(job)
        return emitted

    # -- re-optimisation --------------------------------------------------------------------

    def start_replan(self, now: float) -> ReplanJob | None:
        """Snapshot a re-optimisation now (None: one runs already, or nothing to plan).
        The caller runs `run_replan` off the lock and then `finish_replan`."""
        with self._lock:
            return self._take_replan_job(now)

    def run_replan(self, job: ReplanJob) -> FleetReplan:
        """The OR-Tools plan (up to `replan_time_limit_s`): call without holding the lock."""
        return self._replanner.replan(job.orders, job.robots, job.compartments)

    def finish_replan(
        self, job: ReplanJob, result: FleetReplan | None, now: float
    ) -> list[Effect]:
        """Apply the moves the world has not overtaken; `result` None: the run failed."""
        with self._lock:
            self._replan_running = False
            effects: list[Effect] = []
            if result is not None:
                self.last_replan = result
                self._apply_moves(job, result, effects)
            self._dispatch_queue(effects, now)
            return self._emit(effects)

    def _launch_replan(self, job: ReplanJob) -> None:
        def work() -> None:
            result: FleetReplan | None
            try:
                result = self.run_replan(job)
            except Exception:  # noqa: BLE001 - a failed plan changes nothing; dispatch goes on
                result = None
            self.finish_replan(job, result, job.now)

        try:
            if self._replan_runner is None:
                work()
            else:
                self._replan_runner(work)
        except Exception:  # noqa: BLE001 - e.g. the worker pool is shut down: no run
            with self._lock:
                self._replan_running = False

    def _take_replan_job(self, now: float) -> ReplanJob | None:
        if self._replan_running:
            return None
        movable = [o for o in self._store.open_orders() if o.state in _MOVABLE]
        if len(movable) < 2:
            return None
        if not any(e.free and not e.needs_charge for e in self._robots.values()):
            return None
        store_now = self._store.now()
        orders = tuple(
            OpenOrder(o.order_id, o.pickup_waypoint, o.dropoff_waypoint, o.size, o.weight_kg,
                      robot_id=o.robot_id,
                      due_s=None if o.promised_by is None
                      else max(0.0, o.promised_by - store_now))
            for o in movable)
        robots = []
        for entry in self._robots.values():
            s = entry.sample
            if s is None or not entry.online or s.mode in _UNUSABLE_MODES or entry.needs_charge:
                continue
            plan = self._committed_plan(entry)
            if plan is None:
                continue
            robots.append(replace(self._snapshot(entry), available=True, plan=plan))
        if not robots:
            return None
        self._replan_running = True
        return ReplanJob(orders, tuple(robots), {r.robot_id: 1 for r in robots},
                         {o.order_id: o.mission_id for o in movable}, now)

    def _committed_plan(self, entry: RobotEntry) -> tuple[PlannedStop, ...] | None:
        """The stops of the robot's orders the replanner may not move (None: no route)."""
        stops: list[tuple[str, float]] = []
        for order in self._store.orders_by_robot(entry.robot_id):
            if order.state is _S.AWAITING_LOAD:
                stops += [(order.pickup_waypoint, self._service.load_s),
                          (order.dropoff_waypoint, self._service.handoff_s)]
            elif order.state in (_S.IN_TRANSIT, _S.AWAITING_RECIPIENT):
                stops.append((order.dropoff_waypoint, self._service.handoff_s))
            elif order.state is _S.RETURNING:
                stops.append((order.pickup_waypoint, 0.0))
        here, t = self._snapshot(entry).waypoint, 0.0
        plan = []
        for waypoint, service in stops:
            leg = self._routes.leg(here, waypoint)
            if leg is None:
                return None
            plan.append(PlannedStop(waypoint, t + leg.time_s, service))
            t, here = t + leg.time_s + service, waypoint
        return tuple(plan)

    def _apply_moves(self, job: ReplanJob, result: FleetReplan, effects: list[Effect]) -> None:
        """One order per mission: a move goes out only to a robot free now, for the order it
        would do first; a stale move (the order changed since the snapshot) is skipped, and so
        is one to a shop or dropoff another robot is at or driving to (one_robot_per_waypoint)."""
        taken: set[str] = set()
        places = self._taken_waypoints() if self._policy.one_robot_per_waypoint else {}
        for move in result.moves:
            order = self._store.find(move.order_id)
            if (order is None or order.state not in _MOVABLE
                    or order.robot_id != move.from_robot
                    or order.mission_id != job.missions.get(move.order_id)):
                continue  # overtaken: loaded, cancelled, re-dispatched meanwhile
            target = self._robots.get(move.to_robot)
            if (target is None or not target.online or not target.free or target.needs_charge
                    or move.to_robot in taken):
                continue  # a busy robot: it takes the order after its mission, if ever
            if result.sequences.get(move.to_robot, ())[:1] != (move.order_id,):
                continue
            if any(places.get(w, order.robot_id) != order.robot_id
                   for w in (order.pickup_waypoint, order.dropoff_waypoint)):
                continue
            memo = self._memo.setdefault(move.order_id, _OrderMemo())
            assignment = result.assignments.get(move.order_id)
            if assignment is None or move.to_robot in memo.excluded_robots:
                continue
            if order.robot_id is not None and order.mission_id is not None:
                old_robot, old_mission = order.robot_id, order.mission_id
                self._missions.pop(old_mission, None)
                old = self._robots.get(old_robot)
                if old is not None and old.mission_id == old_mission:
                    old.run(None)
                    old.hold_until_next_sample = True  # until it reports the mission gone
                effects.append(CancelMission(old_robot, old_mission))
                order = self._transition(order, _S.REQUESTED, f"re-planned to {move.to_robot}",
                                         effects)
            memo.queue_reason = ""
            self._assign(order, assignment, effects)
            taken.add(move.to_robot)
            if self._policy.one_robot_per_waypoint:
                places[order.pickup_waypoint] = places[order.dropoff_waypoint] = move.to_robot
            self.replans_applied += 1

    # -- promises and charging --------------------------------------------------------------

    def _promise_in_s(self, order: AcceptedOrder) -> float:
        """Seconds from now to promise: the dispatcher's estimate, plus the margin."""
        robots = [self._snapshot(e) for e in self._robots.values() if e.sample is not None]
        decision = self._dispatcher.assign(
            DispatchOrder("", order.pickup_waypoint, order.dropoff_waypoint, order.size,
                          order.weight_kg), robots)
        margin = self._policy.promise_margin_s
        if isinstance(decision, Assignment):
            return decision.finish_s + margin
        leg = self._routes.leg(order.pickup_waypoint, order.dropoff_waypoint)
        drive = leg.time_s if leg is not None else 0.0
        return (drive + self._service.load_s + self._service.handoff_s
                + self._policy.promise_queued_s + margin)

    def _update_charge_need(self, entry: RobotEntry, sample: RobotSample) -> None:
        policy = self._policy
        if policy.charge_below <= 0:
            entry.needs_charge = False
        elif sample.battery < policy.charge_below:
            entry.needs_charge = True
        elif sample.battery >= policy.charge_until:
            entry.needs_charge = False

    def _send_home(self, effects: list[Effect], now: float) -> None:
        """Free robots left away from home and chargers for `return_home_after_s`: home."""
        after = self._policy.return_home_after_s
        if after <= 0:
            return
        for entry in self._robots.values():
            if not (entry.free and not entry.needs_charge and entry.free_since is not None
                    and now - entry.free_since >= after and now >= entry.next_home_at):
                continue
            waypoint = self._snapshot(entry).waypoint
            if waypoint == self._world.home or waypoint in self._world.chargers:
                continue
            entry.free_since = None
            self._send_errand(entry, _HOME_PREFIX, MissionKind.RETURN, self._world.home,
                              effects, now)

    def _send_charges(self, effects: list[Effect], now: float) -> None:
        """Free robots low on battery and away from a charger: to the nearest charger."""
        chargers = self._world.chargers
        for entry in self._robots.values():
            if not (entry.needs_charge and entry.free and now >= entry.next_charge_at):
                continue
            waypoint = self._snapshot(entry).waypoint
            if waypoint in chargers:
                continue  # charging where it is
            nearest = self._routes.nearest(waypoint, chargers)
            if nearest is None:
                entry.next_charge_at = now + _CHARGE_RETRY_S
                effects.append(Alert(AlertKind.CHARGE_FAILED, f"{entry.robot_id}: battery low "
                                     f"and no charger reachable from {waypoint}",
                                     robot_id=entry.robot_id))
                continue
            self._send_errand(entry, _CHARGE_PREFIX, MissionKind.CHARGE, nearest[0], effects, now)

    def _send_errand(self, entry: RobotEntry, prefix: str, kind: MissionKind, waypoint: str,
                     effects: list[Effect], now: float) -> None:
        """A mission without orders (charge, way home) to `waypoint`, with an id of its own."""
        self._errand_count += 1
        mission_id = f"{prefix}{entry.robot_id}-{int(now)}-{self._errand_count}"
        entry.run(mission_id)
        self._missions[mission_id] = _MissionInfo(entry.robot_id, (), kind)
        effects.append(SendMission(
            robot_id=entry.robot_id, mission_id=mission_id, kind=kind, orders=(),
            pickup_waypoint="", dropoff_waypoint="", return_waypoint=waypoint,
            load_timeout_s=self._policy.load_timeout_s,
            handoff_timeout_s=self._policy.handoff_timeout_s,
        ))

    # -- internals: transitions and effects -------------------------------------------------

    def _emit(self, effects: list[Effect]) -> list[Effect]:
        if effects and self._sink is not None:
            self._sink(list(effects))
        return effects

    def _transition(
        self,
        order: StoredOrder,
        state: OrderState,
        reason: str,
        effects: list[Effect],
        *,
        robot_id: str | None = None,
        mission_id: str | None = None,
    ) -> StoredOrder:
        """Persist, then queue the announcement (the store commits before returning)."""
        outcome = self._store.transition(
            order.order_id, state, reason=reason, robot_id=robot_id, mission_id=mission_id
        )
        if is_terminal(state):
            self._memo.pop(order.order_id, None)
        effects.append(Announce(outcome.event, self._queue_position(order.order_id)))
        stored = outcome.order
        if state is _S.AWAITING_LOAD and stored.robot_id:
            effects.append(OpenCompartment(stored.robot_id, stored.order_id, "loading"))
        return stored

    def _advance(self, order: StoredOrder, target: OrderState, effects: list[Effect]) -> None:
        """Walk forward along the delivery path to `target`; never backwards."""
        if order.state not in _FORWARD or target not in _FORWARD:
            return
        start, end = _FORWARD.index(order.state), _FORWARD.index(target)
        for state in _FORWARD[start + 1 : end + 1]:
            order = self._transition(order, state, "", effects)

    def _queue_position(self, order_id: str) -> int:
        waiting = [o.order_id for o in self._store.orders_by_state(_S.REQUESTED)]
        return waiting.index(order_id) + 1 if order_id in waiting else 0

    def _replayed(self, checked: AcceptedOrder, existing: StoredOrder) -> Reply:
        return Reply(True, "", f"order {existing.order_id} already exists for idempotency key "
                     f"{checked.idempotency_key!r}; the recipient PIN and QR token were returned "
                     "with the first reply only", existing)

    @staticmethod
    def _check_caller(order: StoredOrder | None, order_id: str, caller: str) -> Reply | None:
        if order is None:
            return Reply(False, "unknown_order", f"unknown order {order_id!r}")
        if caller != "operator" and caller != order.shop_id:
            # Same answer as for an unknown order: a shop cannot probe other shops' ids.
            return Reply(False, "unknown_order", f"unknown order {order_id!r}")
        return None

    def _orders_of(self, info: _MissionInfo) -> list[StoredOrder]:
        orders = [self._store.find(order_id) for order_id in info.order_ids]
        return [o for o in orders if o is not None and not is_terminal(o.state)]

    # -- internals: dispatch ----------------------------------------------------------------

    def _snapshot(self, entry: RobotEntry) -> RobotSnapshot:
        s = entry.sample
        assert s is not None
        waypoint = s.current_waypoint
        if waypoint not in self._world.waypoint_kinds:
            waypoint = self._world.locate(s.x, s.y)
        return RobotSnapshot(entry.robot_id, waypoint, s.battery, s.size_class,
                             s.max_payload_kg, available=entry.free and not entry.needs_charge)

    def _dispatch_queue(self, effects: list[Effect], now: float) -> None:
        """Try every waiting order, oldest first, on the robots free right now."""
        self._send_charges(effects, now)
        waiting = self._store.orders_by_state(_S.REQUESTED)
        if not waiting:
            return
        robots = [self._snapshot(e) for e in self._robots.values() if e.sample is not None]
        taken = self._taken_waypoints() if self._policy.one_robot_per_waypoint else {}
        for order in waiting:
            memo = self._memo.setdefault(order.order_id, _OrderMemo())
            busy = [(w, taken[w]) for w in (order.pickup_waypoint, order.dropoff_waypoint)
                    if w in taken]
            if busy:  # see CoordinatorPolicy.one_robot_per_waypoint
                where, robot_id = busy[0]
                memo.queue_reason = (f"queued (waypoint_busy): {robot_id} is at or on its way "
                                     f"to {where}")
                continue
            candidates = [r for r in robots if r.robot_id not in memo.excluded_robots]
            if not any(r.available for r in candidates) and memo.queue_reason:
                continue  # nothing changed for this order; keep its reason
            decision = self._dispatcher.assign(
                DispatchOrder(order.order_id, order.pickup_waypoint, order.dropoff_waypoint,
                              order.size, order.weight_kg),
                candidates,
            )
            if not isinstance(decision, Assignment):
                memo.queue_reason = decision.message if candidates else (
                    "queued (no_robots): no robot has reported yet")
                continue
            memo.queue_reason = ""
            self._assign(order, decision, effects)
            if self._policy.one_robot_per_waypoint:
                taken.setdefault(order.pickup_waypoint, decision.robot_id)
                taken.setdefault(order.dropoff_waypoint, decision.robot_id)
            robots = [replace(r, available=False) if r.robot_id == decision.robot_id else r
                      for r in robots]

    def _taken_waypoints(self) -> dict[str, str]:
        """Shop and dropoff waypoints -> the robot at them, or driving to them for an open
        order (its shop until loaded or with goods coming back; its dropoff until delivered)."""
        taken: dict[str, str] = {}
        for entry in self._robots.values():
            # A robot busy at a shop or a door (handing over, or just leaving on its way back);
            # a free one standing there is one the dispatcher may send anywhere.
            here = entry.sample.current_waypoint if entry.sample is not None else ""
            if (here and not entry.free
                    and self._world.waypoint_kinds.get(here) in ("shop", "dropoff")):
                taken.setdefault(here, entry.robot_id)
        for order in self._store.open_orders():
            if order.robot_id is None:
                continue
            if order.state in _TO_SHOP_STATES:
                taken.setdefault(order.pickup_waypoint, order.robot_id)
            if order.state in _TO_DOOR_STATES:
                taken.setdefault(order.dropoff_waypoint, order.robot_id)
        return taken

    def _assign(self, order: StoredOrder, decision: Assignment, effects: list[Effect]) -> None:
        attempt = len(self._store.assignments(order.order_id)) + 1
        mission_id = f"{order.order_id}-m{attempt}"
        order = self._transition(
            order, _S.ASSIGNED,
            f"{decision.robot_id}: pickup in {decision.pickup_eta_s:.0f} s, "
            f"done in {decision.finish_s:.0f} s",
            effects, robot_id=decision.robot_id, mission_id=mission_id,
        )
        self._robots[decision.robot_id].run(mission_id)
        self._missions[mission_id] = _MissionInfo(decision.robot_id, (order.order_id,),
                                                  MissionKind.DELIVERY)
        effects.append(self._delivery_goal(decision.robot_id, mission_id, (order,)))

    def _delivery_goal(self, robot_id: str, mission_id: str,
                       orders: tuple[StoredOrder, ...]) -> SendMission:
        first = orders[0]
        return SendMission(
            robot_id=robot_id, mission_id=mission_id, kind=MissionKind.DELIVERY,
            orders=orders, pickup_waypoint=first.pickup_waypoint,
            dropoff_waypoint=first.dropoff_waypoint, return_waypoint=self._world.home,
            load_timeout_s=self._policy.load_timeout_s,
            handoff_timeout_s=self._policy.handoff_timeout_s,
            handoff_records=tuple(self._handoff_record(o.order_id) for o in orders),
        )

    def _handoff_record(self, order_id: str) -> str:
        """The order's stored credential record for the robot ("" if it has none)."""
        try:
            return record_to_json(self._store.credentials(order_id))
        except OrderStoreError:
            return ""

    # -- internals: progress and results ----------------------------------------------------

    def _progress(self, mission_id: str, leg: Leg, effects: list[Effect], now: float) -> None:
        if mission_id.endswith(_RETURN_SUFFIX):
            return  # a return mission does not move the order until it is back
        for order in self._store.orders_by_mission(mission_id):
            if is_terminal(order.state) or order.mission_id != mission_id:
                continue
            if leg in ORDER_STATE_DURING_LEG:
                target = ORDER_STATE_DURING_LEG[leg]
                if target is _S.IN_TRANSIT and order.state is _S.AWAITING_LOAD:
                    self._transition(order, _S.IN_TRANSIT, "loaded (robot left the shop)",
                                     effects)
                else:
                    self._advance(order, target, effects)
            elif leg is Leg.RETURNING and order.state in (_S.IN_TRANSIT, _S.AWAITING_RECIPIENT):
                # The executor leaves the handoff leg for the returning leg only after a
                # granted handoff, so returning from the dropoff means delivered.
                self._advance(order, _S.DELIVERED, effects)

    def _recover_mission_info(self, robot_id: str, mission_id: str) -> _MissionInfo | None:
        base = mission_id.removesuffix(_RETURN_SUFFIX)
        orders = [o for o in self._store.orders_by_mission(base) if not is_terminal(o.state)]
        if not orders:
            return None
        kind = MissionKind.RETURN if mission_id.endswith(_RETURN_SUFFIX) else MissionKind.DELIVERY
        return _MissionInfo(robot_id, tuple(o.order_id for o in orders), kind,
                            attempts=self._store.mission_attempts(mission_id), adopted=True)

    def _apply_result(
        self,
        info: _MissionInfo,
        mission_id: str,
        outcome: MissionOutcome,
        message: str,
        delivered: set[str],
        effects: list[Effect],
        now: float,
    ) -> None:
        orders = self._orders_of(info)
        robot_id = info.robot_id
        if info.kind is MissionKind.CHARGE:
            if outcome is not MissionOutcome.SUCCEEDED:
                entry = self._robots.get(robot_id)
                if entry is not None:
                    entry.next_charge_at = now + _CHARGE_RETRY_S
                effects.append(Alert(AlertKind.CHARGE_FAILED, f"{robot_id}: charge mission "
                                     f"{mission_id} ended {outcome.name.lower()} ({message})",
                                     robot_id=robot_id))
            return
        if info.kind is MissionKind.RETURN and mission_id.startswith(_HOME_PREFIX):
            entry = self._robots.get(robot_id)
            if entry is not None and outcome is not MissionOutcome.SUCCEEDED:
                entry.next_home_at = now + _CHARGE_RETRY_S  # not again at once
            return
        if info.kind is MissionKind.RETURN:
            self._return_result(info, mission_id, outcome, message, orders, effects)
            return
        if outcome is MissionOutcome.SUCCEEDED:
            for order in orders:
                if order.state is _S.RETURNING:
                    self._send_return(order, effects)
                    continue
                if order.order_id in delivered or order.state is _S.AWAITING_RECIPIENT:
                    self._advance(order, _S.DELIVERED, effects)
                else:
                    self._mission_ended_early(order, robot_id, "mission ended without "
                                              "delivering it", effects, now)
            return
        retry = not info.cancel_requested and info.attempts <= self._policy.navigation_retries
        if outcome is MissionOutcome.FAILED and retry:
            info.attempts += 1
            self._store.record_mission_attempts(mission_id, info.attempts)
            self._missions[mission_id] = info
            entry = self._robots.get(robot_id)
            if entry is not None:
                entry.run(mission_id)
            if orders:
                first = orders[0]
                effects.append(Alert(AlertKind.NAVIGATION_RETRY,
                                     f"{robot_id}: mission {mission_id} failed ({message}); "
                                     f"retry {info.attempts - 1} of "
                                     f"{self._policy.navigation_retries}",
                                     order_id=first.order_id, shop_id=first.shop_id,
                                     robot_id=robot_id))
                effects.append(self._delivery_goal(robot_id, mission_id, tuple(orders)))
            return
        for order in orders:
            if order.state is _S.RETURNING:
                # Cancelled after loading (or the goods were already going back): now that
                # the delivery mission is over, drive them back.
                self._send_return(order, effects)
                continue
            if outcome is MissionOutcome.NO_SHOW and order.state in GOODS_ON_BOARD_STATES:
                self._return_to_shop(order, f"no_show: recipient did not come ({message})",
                                     effects, now)
            elif outcome is MissionOutcome.NOT_LOADED and order.state in _UNLOADED:
                self._transition(order, _S.FAILED, "not loaded within the load timeout",
                                 effects)
                effects.append(Alert(AlertKind.NOT_LOADED, f"order {order.order_id} was not "
                                     "loaded in time; the robot left", Audience.SHOP,
                                     order.order_id, order.shop_id, robot_id))
            elif outcome is MissionOutcome.CANCELED and info.cancel_requested:
                pass  # our own cancel: the order was already moved on
            elif outcome is MissionOutcome.FAILED:
                self._mission_ended_early(
                    order, robot_id,
                    f"navigation failed after {self._policy.navigation_retries} retries "
                    f"({message})", effects, now, exclude_robot=True)
            else:
                self._mission_ended_early(order, robot_id, f"mission ended: "
                                          f"{outcome.name.lower()} ({message})", effects, now)

    def _mission_ended_early(
        self, order: StoredOrder, robot_id: str, why: str, effects: list[Effect], now: float,
        *, exclude_robot: bool = False,
    ) -> None:
        """Unloaded: back to requested for another robot. Loaded: the goods go back."""
        if order.state in _UNLOADED:
            if exclude_robot:
                self._memo.setdefault(order.order_id, _OrderMemo()).excluded_robots.add(robot_id)
            self._transition(order, _S.REQUESTED, f"{robot_id}: {why}", effects)
        elif order.state in GOODS_ON_BOARD_STATES and order.state is not _S.RETURNING:
            self._return_to_shop(order, f"navigation_failed: {why}", effects, now)

    def _return_to_shop(
        self, order: StoredOrder, why: str, effects: list[Effect], now: float
    ) -> None:
        """Loaded order: returning, cancel the delivery mission if it runs, then drive back."""
        robot_id, mission_id = order.robot_id, order.mission_id
        assert robot_id is not None
        assert mission_id is not None
        order = self._transition(order, _S.RETURNING, why, effects)
        effects.append(Alert(AlertKind.GOODS_RETURNING, f"order {order.order_id}: the goods "
                             f"are coming back to the shop, locked ({why})", Audience.BOTH,
                             order.order_id, order.shop_id, robot_id))
        info = self._missions.get(mission_id)
        entry = self._robots.get(robot_id)
        if info is not None and entry is not None and entry.mission_id == mission_id:
            # The delivery mission still runs: cancel it; the return goes out on its result.
            info.cancel_requested = True
            effects.append(CancelMission(robot_id, mission_id))
            return
        self._send_return(order, effects)

    def _send_return(self, order: StoredOrder, effects: list[Effect]) -> None:
        assert order.robot_id is not None
        assert order.mission_id is not None
        return_id = order.mission_id + _RETURN_SUFFIX
        info = self._missions.get(return_id)
        self._missions[return_id] = info or _MissionInfo(
            order.robot_id, (order.order_id,), MissionKind.RETURN,
            attempts=self._store.mission_attempts(return_id))
        entry = self._robots.get(order.robot_id)
        if entry is not None:
            entry.run(return_id)
        effects.append(SendMission(
            robot_id=order.robot_id, mission_id=return_id, kind=MissionKind.RETURN,
            orders=(order,), pickup_waypoint="", dropoff_waypoint="",
            return_waypoint=order.pickup_waypoint, load_timeout_s=self._policy.load_timeout_s,
            handoff_timeout_s=self._policy.handoff_timeout_s,
        ))

    def _return_result(
        self, info: _MissionInfo, mission_id: str, outcome: MissionOutcome, message: str,
        orders: list[StoredOrder], effects: list[Effect],
    ) -> None:
        for order in orders:
            if order.state is not _S.RETURNING:
                continue
            if outcome is MissionOutcome.SUCCEEDED:
                self._back_at_shop(order, effects)
            elif (outcome is MissionOutcome.FAILED
                  and info.attempts <= self._policy.navigation_retries):
                info.attempts += 1
                self._store.record_mission_attempts(mission_id, info.attempts)
                self._send_return(order, effects)
            else:
                self._flag(order, f"return mission {mission_id} ended: "
                           f"{outcome.name.lower()} ({message}); goods still on board", effects)

    def _back_at_shop(self, order: StoredOrder, effects: list[Effect]) -> None:
        cancelled = order.reason.startswith("cancel")
        state = _S.CANCELLED if cancelled else _S.FAILED
        why = order.reason.split(": ", 1)[-1] if cancelled else order.reason
        self._transition(order, state, f"{why}; goods back at the shop", effects)
        effects.append(Alert(AlertKind.GOODS_BACK_AT_SHOP, f"order {order.order_id}: the goods "
                             "are back at the shop, locked in the robot", Audience.SHOP,
                             order.order_id, order.shop_id, order.robot_id or ""))
        if order.robot_id:
            effects.append(OpenCompartment(order.robot_id, order.order_id, "unloading"))

    def _flag(self, order: StoredOrder, why: str, effects: list[Effect]) -> None:
        memo = self._memo.setdefault(order.order_id, _OrderMemo())
        if memo.flagged:
            return
        memo.flagged = True
        effects.append(Alert(AlertKind.GOODS_ON_OFFLINE_ROBOT, f"order {order.order_id}: {why}",
                             Audience.BOTH, order.order_id, order.shop_id, order.robot_id or ""))

    def _cancel_mission(self, robot_id: str, mission_id: str, effects: list[Effect]) -> None:
        info = self._missions.get(mission_id)
        if info is not None:
            info.cancel_requested = True
        effects.append(CancelMission(robot_id, mission_id))

    # -- internals: robots ------------------------------------------------------------------

    def _mode_alerts(
        self, previous: RobotSample | None, sample: RobotSample, effects: list[Effect]
    ) -> None:
        before = previous.mode if previous is not None else None
        if sample.mode is RobotMode.ESTOP and before is not RobotMode.ESTOP:
            effects.append(Alert(AlertKind.ROBOT_ESTOP, f"{sample.robot_id}: e-stop latched",
                                 robot_id=sample.robot_id))
        if sample.mode is RobotMode.FAULT and before is not RobotMode.FAULT:
            faults = ", ".join(sample.faults) or "no fault code"
            effects.append(Alert(AlertKind.ROBOT_FAULT, f"{sample.robot_id}: fault ({faults})",
                                 robot_id=sample.robot_id))

    def _owns(self, robot_id: str, mission_id: str) -> bool:
        if mission_id.startswith((f"{_CHARGE_PREFIX}{robot_id}-", f"{_HOME_PREFIX}{robot_id}-")):
            return True  # a charge or a way home we sent (before a restart, too): let it finish
        base = mission_id.removesuffix(_RETURN_SUFFIX)
        return any(o.mission_id == base for o in self._store.orders_by_robot(robot_id))

    def _follow(self, entry: RobotEntry, effects: list[Effect], now: float) -> None:
        """Steady state: progress from the robot's mode; stop missions we do not hold."""
        sample = entry.sample
        assert sample is not None
        reported = sample.mission_id
        if reported:
            if reported != entry.mission_id:
                if not self._owns(entry.robot_id, reported):
                    if reported not in self._orphans_cancelled:
                        self._orphans_cancelled.add(reported)
                        effects.append(CancelMission(entry.robot_id, reported))
                    return
                entry.run(reported, confirmed=True)
                if reported not in self._missions:
                    info = self._recover_mission_info(entry.robot_id, reported)
                    if info is not None:
                        self._missions[reported] = info
            entry.confirmed, entry.ended_at = True, None
            leg = _LEG_OF_MODE.get(sample.mode)
            if leg is not None:
                self._progress(reported, leg, effects, now)
            return
        mission_id = entry.mission_id
        info = self._missions.get(mission_id) if mission_id is not None else None
        if mission_id is not None and info is not None and info.adopted:
            # A mission adopted after a restart ended; no result will come, so decide from
            # the orders' states (delivered ones were already advanced by the mode).
            self._ended_without_result_decide(entry, effects, now)
        elif mission_id is not None and entry.confirmed and entry.ended_at is None:
            entry.ended_at = now  # the result should follow; `tick` decides if it does not

    def _ended_without_result_decide(self, entry: RobotEntry, effects: list[Effect],
                                     now: float) -> None:
        """The robot ran our mission and now runs none, and no result came: decide from the
        orders' states (delivered ones were already advanced from the robot's mode)."""
        mission_id = entry.mission_id
        assert mission_id is not None
        info = self._missions.pop(mission_id, None) or self._recover_mission_info(
            entry.robot_id, mission_id)
        entry.run(None)
        self._ended_without_result.add((entry.robot_id, mission_id))
        if info is None:
            return
        for order in self._orders_of(info):
            self._robot_lost_order(entry, order, f"finished mission {mission_id} without "
                                   "delivering it", effects, now)

    def _reconcile(self, entry: RobotEntry, effects: list[Effect], now: float) -> None:
        """First sample after a restart or an outage: trust what the robot runs."""
        sample = entry.sample
        assert sample is not None
        reported = sample.mission_id
        if reported and self._owns(entry.robot_id, reported):
            entry.run(reported, confirmed=True)
            if reported not in self._missions:
                info = self._recover_mission_info(entry.robot_id, reported)
                if info is not None:
                    self._missions[reported] = info
            leg = _LEG_OF_MODE.get(sample.mode)
            if leg is not None:
                self._progress(reported, leg, effects, now)
        elif reported:
            # A mission we no longer hold (reassigned while the robot was away): stop it, so
            # nothing is delivered twice.
            entry.run(None)
            self._orphans_cancelled.add(reported)
            effects.append(CancelMission(entry.robot_id, reported))
        else:
            entry.run(None)
        carried = reported.removesuffix(_RETURN_SUFFIX)
        for order in self._store.orders_by_robot(entry.robot_id):
            if order.mission_id is None or carried == order.mission_id:
                if self._memo.get(order.order_id, _OrderMemo()).flagged:
                    self._memo[order.order_id].flagged = False
                continue
            self._robot_lost_order(entry, order, "reports no mission for it", effects, now)

    def _robot_lost_order(
        self, entry: RobotEntry, order: StoredOrder, why: str, effects: list[Effect], now: float
    ) -> None:
        if order.state in _UNLOADED:
            if order.mission_id is not None:
                self._missions.pop(order.mission_id, None)
            self._transition(order, _S.REQUESTED, f"{entry.robot_id} {why}: re-dispatching",
                             effects)
        elif order.state is _S.RETURNING and entry.online and entry.sample is not None:
            if entry.sample.current_waypoint == order.pickup_waypoint:
                self._back_at_shop(order, effects)
            else:
                self._send_return(order, effects)
        elif (order.state in GOODS_ON_BOARD_STATES and entry.online and entry.sample is not None
              and entry.sample.mode in _FREE_MODES and not entry.sample.mission_id):
            # The robot is here and idle with the goods (e.g. a no-show ended while nobody
            # held the goal): the goods go back to the shop, as after any failed delivery.
            self._return_to_shop(order, f"returned: {entry.robot_id} {why}", effects, now)
        else:
            self._flag(order, f"{entry.robot_id} {why} with the goods on board "
                       f"({order.state.label}); not reassigned, operator action needed", effects)

    def _robot_offline(self, entry: RobotEntry, why: str, effects: list[Effect]) -> None:
        entry.online = False
        effects.append(Alert(AlertKind.ROBOT_OFFLINE, f"{entry.robot_id} is offline ({why})",
                             robot_id=entry.robot_id))
        for order in self._store.orders_by_robot(entry.robot_id):
            if order.state in _UNLOADED and order.mission_id is not None:
                # Stop it if it comes back; the order goes to another robot now.
                self._cancel_mission(entry.robot_id, order.mission_id, effects)
            self._robot_lost_order(entry, order, f"went offline ({why})", effects, 0.0)
        entry.run(None)

    def _remind_recipients(self, effects: list[Effect], now: float) -> None:
        """No-show policy, first step: re-notify once the robot has waited a while."""
        for order in self._store.orders_by_state(_S.AWAITING_RECIPIENT):
            order_id = order.order_id
            memo = self._memo.setdefault(order_id, _OrderMemo())
            if memo.awaiting_since is None:
                memo.awaiting_since = now
            if memo.reminded:
                continue
            if now - memo.awaiting_since >= self._policy.recipient_reminder_after_s:
                memo.reminded = True
                effects.append(Alert(AlertKind.RECIPIENT_REMINDER, f"order {order_id}: the "
                                     "robot is still waiting at the dropoff; recipient "
                                     "re-notified", Audience.SHOP, order_id, order.shop_id,
                                     order.robot_id or ""))


def _same_order(request: AcceptedOrder, existing: StoredOrder) -> bool:
    """A replay, not a conflict (the store re-checks and raises IdempotencyConflict)."""
    return (
        existing.dropoff_waypoint == request.dropoff_waypoint
        and existing.size == request.size
        and abs(existing.weight_kg - request.weight_kg) <= 0.0005
        and existing.note == request.note
    )


__all__ = [
    "Alert",
    "AlertKind",
    "Announce",
    "Audience",
    "CancelMission",
    "CoordinatorPolicy",
    "CoordinatorWorld",
    "Effect",
    "FleetCoordinator",
    "IllegalTransition",
    "MissionOutcome",
    "OpenCompartment",
    "OrderStoreError",
    "Reply",
    "RobotMode",
    "RobotSample",
    "ReplanJob",
    "RobotView",
    "SendMission",
]

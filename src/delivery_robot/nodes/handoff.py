"""handoff: the per-robot compartment node around `compartment_handoff.CompartmentHandoff`.

Every decision is the core's; this node converts messages, keeps time and carries out the
`Step`s the core returns.

Inputs
- `compartment/state` (CompartmentState from the base driver or the simulator): door switch,
  bolt and occupancy. Door is fed before the bolt and the bolt before occupancy, so a message
  that reports "closed and empty" closes first and is then judged. Occupancy is fed when it
  changes; a value unchanged since before the door closed is only taken as the verdict once
  it has held for `occupancy_settle_s` after the close (a stale pre-close "occupied" must not
  count as "goods not taken"). The base driver reports occupancy UNKNOWN: on hardware,
  perception has to fill it in, or every handoff ends at the core's verdict timeout with the
  goods kept locked.
- service `handoff/assign` (AssignHandoff): the mission executor names the order the
  compartment serves, its shop waypoint (where loading may open) and dropoff waypoint (where a
  credential may open it), and hands over the coordinator's credential record (JSON, hashes
  only: `handoff_record`), so the recipient's PIN verifies on the robot. Called at the start of
  a mission, for the next order of a trip and again after an executor restart; asking again
  for the order already served is accepted. Refused with the core's code (e.g.
  `goods_on_board`: another order's goods are inside; `already_open`; `fault`) or `bad_record`.
- `robot_state` (RobotState): `current_waypoint` is the robot's position; `order_ids[0]` is
  the order the compartment serves. For an order never assigned through `handoff/assign` (an
  executor that does not call it), the node falls back to taking the shop to be the waypoint
  where the robot reported MODE_AWAITING_LOAD for the order, and the dropoff the one where it
  reported MODE_AWAITING_RECIPIENT. An unknown dropoff is `UNKNOWN_WAYPOINT`, which no route
  graph has, so no credential can open the compartment before the robot reports it is at the
  dropoff.
- service `handoff/open_for_loading` (std_srvs/Trigger): the coordinator's loading request for
  the order of `robot_state`; refused unless the core allows it (at the shop, door closed).
- service `handoff/verify` (VerifyHandoff): a recipient's PIN or QR token.
- service `handoff/reset` (std_srvs/Trigger): an operator clears a fault (door closed, bolt
  confirmed locked).
- a timer (`tick_period_s`) so timeouts fire in quiet periods. Time is the node clock in
  seconds (`use_sim_time` honoured).

Credentials: the node keeps a `HandoffCredentials` book keyed with `handoff_secret`, the key the
coordinator issues with. The coordinator's stored records (hashes and counters, never plain
codes) arrive with `handoff/assign` (or `load_credentials()` in tests); without one a PIN does
not verify. A signed QR token needs no record: a genuine,
unexpired token for the presented order enrols the order on first sight (a record holding that
token's hash and an unusable PIN hash), and from then on the book's rules apply to it: one use,
attempt counting, lockout, re-arming after a no-show. A token re-issued by the coordinator is
only told from the old one once the coordinator's record is loaded.

Outputs
- lock commands to `compartment/set_lock` (SetLock) with `call_async`; the reply is only
  logged. Whether the bolt moved is judged by the core from `compartment/state`: a command the
  base never confirms (service missing, NAK, no report) ends in FAULT after
  `lock_ack_timeout_s`.
- `handoff/state` (CompartmentState, STATE_QOS): the core's snapshot, on change and at least
  every `state_heartbeat_s`.
- `handoff/events` (std_msgs/String, EVENT_QOS): the events a shop, the operator or the audit
  trail act on, as JSON (`DELIVERED` carries the proof record); every core event, lock commands
  and lid events included, also goes to the ROS log with its time.

Verifying a PIN costs one scrypt hash (~0.1 s of CPU) in the service callback: nothing is
awaited, and the cost is what slows a brute-force attempt down.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import threading
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from delivery_interfaces.msg import CompartmentState, RobotState
from delivery_interfaces.srv import AssignHandoff, SetLock, VerifyHandoff
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.task import Future
from std_msgs.msg import Header, String, UInt8
from std_srvs.srv import Trigger

from delivery_robot.compartment_handoff import (
    AssignOrder,
    ClearOrder,
    CompartmentHandoff,
    CompartmentMemory,
    CompartmentSnapshot,
    CredentialPresented,
    DoorReported,
    EventKind,
    HandoffConfig,
    HandoffEvent,
    HandoffInput,
    HandoffState,
    LockCommand,
    LockReported,
    Occupancy,
    OccupancyReported,
    OpenForLoading,
    OperatorReset,
    PositionReported,
    Step,
    Tick,
)
from delivery_robot.credentials import TOKEN_PARAMS, hash_secret
from delivery_robot.handoff_credentials import (
    MIN_SECRET_KEY_BYTES,
    TOKEN_PREFIX,
    CredentialPolicy,
    HandoffCredentials,
    Method,
    StoredCredentials,
    VerifyResult,
    make_qr_token,
)
from delivery_robot.handoff_record import BadRecord, record_from_json
from delivery_robot.handoff_store import (
    HandoffStore,
    HandoffStoreError,
    SavedHandoff,
    saved_to_json,
)
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.qos import EVENT_QOS, STATE_QOS

COMPARTMENT_HISTORY_DEPTH = 20
# STATE_QOS with a deeper reader history: a door opened and closed while this executor was busy
# must arrive as two samples, not as the last one only (a missed open hides a tamper).
COMPARTMENT_QOS = QoSProfile(
    history=STATE_QOS.history, depth=COMPARTMENT_HISTORY_DEPTH,
    reliability=STATE_QOS.reliability, durability=STATE_QOS.durability)
UNKNOWN_WAYPOINT = "(unknown)"  # no route-graph waypoint is named so: nothing opens there
DEFAULT_FRAME = "compartment"
OCCUPANCY_FROM_STATE = "compartment_state"
OCCUPANCY_FROM_PERCEPTION = "perception"
OCCUPANCY_SOURCES = (OCCUPANCY_FROM_STATE, OCCUPANCY_FROM_PERCEPTION)

# Events published on handoff/events. Left out: per-sample reports and bookkeeping, which would
# push the events that matter out of the topic's transient-local history.
PUBLISHED_EVENT_KINDS: frozenset[EventKind] = frozenset(EventKind) - {
    EventKind.STARTED, EventKind.LOCK_REPORTED, EventKind.OCCUPANCY_REPORTED,
    EventKind.STATE_CHANGED, EventKind.ORDER_ASSIGNED, EventKind.ORDER_CLEARED,
    EventKind.REFUSED, EventKind.BAD_INPUT, EventKind.CLOCK_WENT_BACK}


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def record_from_token(policy: CredentialPolicy, order_id: str, token: str,
                      now: float) -> StoredCredentials | None:
    """A record for `order_id` built from a genuine, unexpired QR token of that order, or None.

    The signature is checked by re-signing the token's claims with the core's `make_qr_token`
    and comparing whole strings, so a token in any but the canonical encoding is not genuine.
    """
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != TOKEN_PREFIX:
        return None
    order_bytes, nonce = _unb64(parts[1]), _unb64(parts[3])
    expiry = parts[2]
    if order_bytes is None or nonce is None or not (expiry.isascii() and expiry.isdigit()
                                                    and len(expiry) <= 12):
        return None
    try:
        claimed = order_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return None
    expires_at = int(expiry)
    genuine = hmac.compare_digest(
        make_qr_token(policy.secret_key, claimed, expires_at, nonce).encode(), token.encode())
    if not genuine or claimed != order_id or now >= expires_at:
        return None
    return StoredCredentials(
        order_id=order_id,
        pin_hash=hash_secret(secrets.token_hex(32), TOKEN_PARAMS),  # no PIN opens it
        qr_hash=hash_secret(token, policy.token_hash_cost),
        expires_at=expires_at)


class RobotCredentials:
    """The robot's credential book: loaded coordinator records plus QR-token enrolment.

    Implements the core's `CredentialVerifier`.
    """

    def __init__(self, book: HandoffCredentials) -> None:
        self.book = book
        self.enrolled: set[str] = set()

    def load(self, record: StoredCredentials) -> None:
        """Take a coordinator record without letting this robot's counters go backwards (a
        reload must not re-open a used code or lift a lockout)."""
        current = self.book.record(record.order_id)
        if current is not None:
            locks = [t for t in (current.locked_until, record.locked_until) if t is not None]
            record = replace(
                record,
                used_at=record.used_at if record.used_at is not None else current.used_at,
                failed_attempts=max(record.failed_attempts, current.failed_attempts),
                locked_until=max(locks) if locks else None,
                lockouts=max(record.lockouts, current.lockouts))
        self.enrolled.discard(record.order_id)
        self.book.add(record)

    def verify(self, order_id: str, method: int, credential: str, now: float) -> VerifyResult:
        if self.book.record(order_id) is None and method == Method.QR:
            record = record_from_token(self.book.policy, order_id, credential.strip(), now)
            if record is not None:
                self.book.add(record)
                self.enrolled.add(order_id)
        return self.book.verify(order_id, method, credential, now)

    def rearm(self, order_id: str) -> bool:
        return self.book.rearm(order_id)


class HandoffNode(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("handoff", **node_options)
        try:
            self._configure()
        except ValueError:
            self.destroy_node()  # a refused start must not leave a half-made node behind
            raise

    # ---- set-up ------------------------------------------------------------------------------

    def _configure(self) -> None:
        secret = str(declare(self, "handoff_secret", "",
                             "Key signing QR tokens and keying PIN hashes; the coordinator's "
                             "handoff_secret", read_only=True))
        min_chars = int(declare(self, "min_secret_chars", MIN_SECRET_KEY_BYTES,
                                f"Refuse to start with a shorter handoff_secret "
                                f"(>= {MIN_SECRET_KEY_BYTES})", read_only=True))
        if min_chars < MIN_SECRET_KEY_BYTES:
            raise ValueError(f"min_secret_chars: must be >= {MIN_SECRET_KEY_BYTES}")
        if len(secret.encode()) < min_chars:
            raise ValueError(f"handoff_secret: needs >= {min_chars} characters (the "
                             "coordinator's key; set it in config/handoff.yaml or on the "
                             "command line)")
        config = HandoffConfig(
            recipient_open_timeout_s=float(declare(
                self, "recipient_open_timeout_s", 60.0,
                "Unlocked for the recipient and door not opened: relock, count a no-show, s")),
            loading_open_timeout_s=float(declare(
                self, "loading_open_timeout_s", 300.0,
                "Unlocked for the shop and door not opened: relock, s")),
            lock_ack_timeout_s=float(declare(
                self, "lock_ack_timeout_s", 3.0,
                "compartment/state must confirm a lock command within this, else FAULT, s")),
            occupancy_verdict_timeout_s=float(declare(
                self, "occupancy_verdict_timeout_s", 15.0,
                "Occupancy must be judged this soon after closing, else kept as loaded, s")),
            log_capacity=int(declare(self, "log_capacity", 10_000,
                                     "Newest core events kept in memory")))
        policy = CredentialPolicy(
            secret_key=secret.encode(),
            max_attempts=int(declare(self, "max_attempts", 5,
                                     "Wrong credentials before a lockout")),
            lockout_s=float(declare(self, "lockout_s", 300.0,
                                    "Cool-down after max_attempts wrong credentials, s")))
        self.tick_period_s = float(declare(self, "tick_period_s", 0.2,
                                           "Timer feeding time to the state machine, s"))
        self.state_heartbeat_s = float(declare(self, "state_heartbeat_s", 1.0,
                                               "handoff/state at least this often, s"))
        self.occupancy_settle_s = float(declare(
            self, "occupancy_settle_s", 2.0,
            "An occupancy unchanged since before the door closed counts as the verdict only "
            "after holding this long after the close, s"))
        for name in ("tick_period_s", "state_heartbeat_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0")
        if not self.occupancy_settle_s >= 0:
            raise ValueError("occupancy_settle_s: must be >= 0")
        self.occupancy_source = str(declare(
            self, "occupancy_source", OCCUPANCY_FROM_STATE,
            f"Which occupancy wins when both report a known value: {OCCUPANCY_FROM_STATE} "
            f"(simulator) or {OCCUPANCY_FROM_PERCEPTION} (robots with the compartment camera); "
            "compartment/occupancy always replaces an UNKNOWN in compartment/state",
            read_only=True))
        if self.occupancy_source not in OCCUPANCY_SOURCES:
            raise ValueError(f"occupancy_source: must be one of {', '.join(OCCUPANCY_SOURCES)}, "
                             f"got {self.occupancy_source!r}")
        state_path = str(declare(
            self, "state_path", "", "Handoff state store (SQLite); empty = "
            "$ROS_HOME/delivery_robot/<namespace>_handoff.db (ROS_HOME defaults to ~/.ros)",
            read_only=True))
        robot = self.get_namespace().strip("/").replace("/", "_") or "robot"
        path = state_path or os.path.join(
            os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "delivery_robot",
            f"{robot}_handoff.db")
        try:
            self._store = HandoffStore(path)
        except HandoffStoreError as error:
            raise ValueError(f"state_path: {error}") from None

        self._lock = threading.Lock()  # tests and a future loader call in from other threads
        self.credentials = RobotCredentials(HandoffCredentials(policy))
        self._routes: dict[str, tuple[str, str]] = {}  # authoritative, from assign_order()
        self._saved_text = ""
        memory = self._restore()
        self.core = CompartmentHandoff(self.credentials, config, now=self._now(), memory=memory)
        self._inferred: dict[str, tuple[str, str]] = {}  # from robot_state modes
        self._robot_state: RobotState | None = None
        self._frame_id = DEFAULT_FRAME
        self._occupancy = Occupancy.UNKNOWN
        self._occupancy_fed = Occupancy.UNKNOWN
        self._occupancy_ref = ""
        self._state_occupancy = Occupancy.UNKNOWN  # as compartment/state last reported it
        self._state_occupancy_ref = ""
        self._perception_occupancy: Occupancy | None = None  # None: nothing from perception
        self._perception_ref = ""
        self._door_closed: bool | None = None
        self._closed_at: float | None = None  # set while a post-close verdict may be owed
        self._published: tuple[Any, ...] | None = None
        self._published_at: float | None = None

        self.state_publisher = self.create_publisher(CompartmentState, "handoff/state",
                                                     STATE_QOS)
        self.event_publisher = self.create_publisher(String, "handoff/events", EVENT_QOS)
        self.lock_client = self.create_client(SetLock, "compartment/set_lock")
        self.create_subscription(CompartmentState, "compartment/state", self._on_compartment,
                                 COMPARTMENT_QOS)
        self.create_subscription(UInt8, "compartment/occupancy", self._on_perception_occupancy,
                                 STATE_QOS)
        self.create_subscription(RobotState, "robot_state", self._on_robot_state, STATE_QOS)
        self.create_service(AssignHandoff, "handoff/assign", self._on_assign)
        self.create_service(Trigger, "handoff/open_for_loading", self._on_open_for_loading)
        self.create_service(VerifyHandoff, "handoff/verify", self._on_verify)
        self.create_service(Trigger, "handoff/reset", self._on_reset)
        self.create_timer(self.tick_period_s, self._on_tick)
        self.get_logger().info(
            f"handoff up: recipient timeout {config.recipient_open_timeout_s:g} s, lockout "
            f"after {policy.max_attempts} wrong tries for {policy.lockout_s:g} s; state "
            f"{self.core.state.label} from {path}; occupancy from {self.occupancy_source}")
        self._persist(self._now())
        self._publish_state(self._now(), force=True)

    def _restore(self) -> CompartmentMemory | None:
        """The saved memory into the credential book and routes; the core's part returned.
        An unreadable store starts the compartment in FAULT: goods kept locked, operator told."""
        try:
            saved = self._store.load()
        except HandoffStoreError as error:
            self.get_logger().error(f"handoff state unreadable, starting in fault: {error}")
            return CompartmentMemory(HandoffState.FAULT,
                                     fault_reason="saved handoff state unreadable")
        if saved is None:
            return None
        for record in saved.credentials:
            self.credentials.book.add(record)
        self.credentials.enrolled = set(saved.enrolled) & {
            r.order_id for r in saved.credentials}
        self._routes = dict(saved.routes)
        return saved.compartment

    def _persist(self, now: float) -> None:
        """Save the memory if it changed; durable before the caller announces anything."""
        saved = SavedHandoff(self.core.memory(), dict(self._routes),
                             tuple(self.credentials.book.records()),
                             frozenset(self.credentials.enrolled))
        text = saved_to_json(saved)
        if text == self._saved_text:
            return
        try:
            self._store.save(saved, now)
        except HandoffStoreError as error:
            self.get_logger().error(f"handoff state not saved (a restart would lose it): {error}")
            return
        self._saved_text = text

    def destroy_node(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()
        super().destroy_node()

    # ---- API for the coordinator link (and tests) --------------------------------------------

    def load_credentials(self, records: list[StoredCredentials]) -> None:
        """Coordinator records for orders this robot may hand over (hashes only)."""
        with self._lock:
            for record in records:
                self.credentials.load(record)
            self._persist(self._now())

    def assign_order(self, order_id: str, shop_waypoint: str, dropoff_waypoint: str) -> Step:
        """The order's real waypoints; they take precedence over what robot_state suggests."""
        with self._lock:
            self._routes[order_id] = (shop_waypoint, dropoff_waypoint)
            now = self._now()
            return self._feed(AssignOrder(order_id, shop_waypoint, dropoff_waypoint), now)

    # ---- time --------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _when(self, at: float) -> str:
        wall = datetime.now(UTC).isoformat(timespec="milliseconds")
        return f"ros_time {at:.3f} s, wall {wall}"

    # ---- inputs ------------------------------------------------------------------------------

    def _on_compartment(self, message: CompartmentState) -> None:
        with self._lock:
            now = self._now()
            self._frame_id = message.header.frame_id or DEFAULT_FRAME
            closed = bool(message.door_closed)
            if closed != self._door_closed:
                self._closed_at = now if closed and self._door_closed is not None else None
                self._door_closed = closed
            self._feed(DoorReported(closed), now)
            self._feed(LockReported(int(message.lock_state)), now)
            try:
                occupancy = Occupancy(int(message.occupancy))
            except ValueError:
                self._feed(OccupancyReported(int(message.occupancy)), now)  # core records it
                return
            stamp = message.header.stamp
            self._state_occupancy = occupancy
            self._state_occupancy_ref = f"{self._frame_id}@{stamp.sec}.{stamp.nanosec:09d}"
            self._update_occupancy(now)

    def _on_perception_occupancy(self, message: UInt8) -> None:
        with self._lock:
            now = self._now()
            try:
                occupancy = Occupancy(int(message.data))
            except ValueError:
                self._feed(OccupancyReported(int(message.data)), now)  # core records it
                return
            self._perception_occupancy = occupancy
            self._perception_ref = f"compartment_camera@{now:.3f}"
            self._update_occupancy(now)

    def _update_occupancy(self, now: float) -> None:
        """Pick the occupancy to feed: perception replaces an UNKNOWN from compartment/state,
        and wins over a known one only with occupancy_source = perception."""
        perceived = self._perception_occupancy
        use_perception = perceived is not None and (
            self.occupancy_source == OCCUPANCY_FROM_PERCEPTION
            or self._state_occupancy is Occupancy.UNKNOWN)
        if use_perception and perceived is not None:
            self._occupancy, self._occupancy_ref = perceived, self._perception_ref
        else:
            self._occupancy = self._state_occupancy
            self._occupancy_ref = self._state_occupancy_ref
        if self._occupancy is not self._occupancy_fed:
            self._feed_occupancy(now)
        self._settle_verdict(now)

    def _feed_occupancy(self, now: float) -> None:
        self._occupancy_fed = self._occupancy
        if self._occupancy is not Occupancy.UNKNOWN:
            self._closed_at = None
        self._feed(OccupancyReported(self._occupancy, self._occupancy_ref), now)

    def _settle_verdict(self, now: float) -> None:
        """Re-feed an unchanged occupancy once it has held `occupancy_settle_s` after a close."""
        if (self._closed_at is not None and self._occupancy is not Occupancy.UNKNOWN
                and now - self._closed_at >= self.occupancy_settle_s):
            self._feed_occupancy(now)

    def _on_robot_state(self, message: RobotState) -> None:
        with self._lock:
            now = self._now()
            self._robot_state = message
            waypoint = str(message.current_waypoint)
            self._feed(PositionReported(waypoint or None), now)
            order_ids = [str(o) for o in message.order_ids if o]
            self._inferred = {o: r for o, r in self._inferred.items() if o in order_ids}
            if not order_ids:
                order = self.core.order
                if order is not None and self.core.state is HandoffState.LOCKED_EMPTY:
                    self._feed(ClearOrder(order.order_id), now)
                return
            order_id = order_ids[0]
            shop, dropoff = self._inferred.get(order_id, (UNKNOWN_WAYPOINT, UNKNOWN_WAYPOINT))
            if waypoint and message.mode == RobotState.MODE_AWAITING_LOAD:
                shop = waypoint
            elif waypoint and message.mode == RobotState.MODE_AWAITING_RECIPIENT:
                dropoff = waypoint
            self._inferred[order_id] = (shop, dropoff)
            self._ensure_assigned(order_id, now)

    def _ensure_assigned(self, order_id: str, now: float) -> None:
        shop, dropoff = self._routes.get(order_id) or self._inferred.get(
            order_id, (UNKNOWN_WAYPOINT, UNKNOWN_WAYPOINT))
        order = self.core.order
        if order is not None and (order.order_id, order.shop_waypoint,
                                  order.dropoff_waypoint) == (order_id, shop, dropoff):
            return
        if self.core.state not in (HandoffState.LOCKED_EMPTY, HandoffState.LOCKED_LOADED):
            return  # the core refuses while open or in fault; retried on the next robot_state
        self._feed(AssignOrder(order_id, shop, dropoff), now)

    def _current_order_id(self) -> str:
        order = self.core.order
        if order is not None:
            return order.order_id
        state = self._robot_state
        return str(state.order_ids[0]) if state is not None and state.order_ids else ""

    def _on_assign(self, request: AssignHandoff.Request,
                   response: AssignHandoff.Response) -> AssignHandoff.Response:
        order_id = str(request.order_id)
        shop, dropoff = str(request.shop_waypoint), str(request.dropoff_waypoint)
        record = None
        if request.credential_record:
            try:
                record = record_from_json(str(request.credential_record))
            except BadRecord as error:
                response.accepted, response.error_code = False, "bad_record"
                response.message = f"credential record of order {order_id}: {error}"
                return response
            if record.order_id != order_id:
                response.accepted, response.error_code = False, "bad_record"
                response.message = (f"the credential record is for order {record.order_id}, "
                                    f"not {order_id}")
                return response
        with self._lock:
            order = self.core.order
            if order is None or (order.order_id, order.shop_waypoint,
                                 order.dropoff_waypoint) != (order_id, shop, dropoff):
                step = self._feed(AssignOrder(order_id, shop, dropoff), self._now())
                if step.refusal is not None:
                    response.accepted = False
                    response.error_code = step.refusal.code
                    response.message = step.refusal.message
                    return response
            self._routes[order_id] = (shop, dropoff)
            if record is not None:
                self.credentials.load(record)
            self._persist(self._now())
        response.accepted, response.error_code = True, ""
        response.message = (f"compartment serves order {order_id} (shop {shop}, dropoff "
                            f"{dropoff}); " + ("credential record loaded" if record is not None
                                               else "no record: only a signed QR token opens"))
        self.get_logger().info(f"handoff/assign: {response.message}")
        return response

    def _on_open_for_loading(self, request: Trigger.Request,
                             response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            now = self._now()
            order_id = self._current_order_id()
            if not order_id:
                response.success = False
                response.message = "no_order: robot_state names no order for this robot"
                return response
            self._ensure_assigned(order_id, now)
            step = self._feed(OpenForLoading(order_id, "coordinator (handoff/open_for_loading)"),
                              now)
            response.success = step.accepted
            response.message = (f"{step.refusal.code}: {step.refusal.message}" if step.refusal
                                 else f"unlocked for loading order {order_id}")
            return response

    def _on_verify(self, request: VerifyHandoff.Request,
                   response: VerifyHandoff.Response) -> VerifyHandoff.Response:
        with self._lock:
            now = self._now()
            order_id = str(request.order_id)
            step = self._feed(CredentialPresented(order_id, int(request.method),
                                                  str(request.credential)), now)
            result = step.verification
            if result is not None:
                response.granted = result.granted
                response.error_code = result.error_code
                response.message = result.message
                attempts, lockout = result.attempts_left, result.lockout_remaining_s
            else:
                status = self.credentials.book.status(order_id, now)
                response.granted = False
                response.error_code = step.refusal.code if step.refusal else "not_granted"
                response.message = step.refusal.message if step.refusal else ""
                attempts = status.attempts_left if status else 0
                lockout = status.lockout_remaining_s if status else 0.0
            response.attempts_left = max(0, min(255, attempts))
            response.lockout_remaining_s = float(lockout)
            return response

    def _on_reset(self, request: Trigger.Request,
                  response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            step = self._feed(OperatorReset("operator (handoff/reset)"), self._now())
            response.success = step.accepted
            response.message = (f"{step.refusal.code}: {step.refusal.message}" if step.refusal
                                else f"reset to {self.core.state.label}")
            return response

    def _on_tick(self) -> None:
        with self._lock:
            now = self._now()
            self._feed(Tick(), now)
            self._settle_verdict(now)
            self._publish_state(now)

    # ---- outputs -----------------------------------------------------------------------------

    def _feed(self, event: HandoffInput, now: float) -> Step:
        """One input through the core, and its effects carried out (caller holds the lock)."""
        step = self.core.handle(event, now)
        self._persist(now)  # durable before any command, event or reply announces it
        for command in step.commands:
            self._send_lock(command)
        for item in step.events:
            self._emit(item, step)
        if step.events:
            self._publish_state(now)
        return step

    def _send_lock(self, command: LockCommand) -> None:
        verb = "lock" if command.lock else "unlock"
        if not self.lock_client.service_is_ready():
            self.get_logger().error(f"lock command {verb} ({command.reason}) not sent: "
                                    "compartment/set_lock is not available")
            return  # the core's lock_ack_timeout_s turns this into a fault
        request = SetLock.Request(lock=command.lock, requested_by=f"handoff: {command.reason}")
        future = self.lock_client.call_async(request)
        future.add_done_callback(partial(self._on_lock_reply, command))

    def _on_lock_reply(self, command: LockCommand, future: Future) -> None:
        verb = "lock" if command.lock else "unlock"
        try:
            reply = future.result()
        except Exception as error:  # noqa: BLE001 - a failed call is logged, the core times out
            self.get_logger().error(f"{verb} ({command.reason}) failed: {error!r}")
            return
        if reply is None:
            return  # cancelled at shutdown
        if reply.success:
            self.get_logger().info(f"{verb} ({command.reason}) acknowledged: {reply.message}")
        else:
            self.get_logger().warning(f"{verb} ({command.reason}) refused by the base: "
                                      f"{reply.message}")

    def _emit(self, event: HandoffEvent, step: Step) -> None:
        order = f" (order {event.order_id})" if event.order_id else ""
        text = f"{event.kind.value}: {event.detail or '-'}{order} at {self._when(event.at)}"
        if event.alarm:  # one call site per severity (rclpy's logger insists)
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)
        if event.kind not in PUBLISHED_EVENT_KINDS:
            return
        payload: dict[str, Any] = {
            "robot": self.get_namespace().strip("/"), "at": event.at, "kind": event.kind.value,
            "detail": event.detail, "order_id": event.order_id, "alarm": event.alarm,
            "handoff_state": self.core.state.label}
        if event.kind is EventKind.DELIVERED and step.proof is not None:
            proof = step.proof
            payload["order_id"] = proof.order_id
            payload["proof"] = {"order_id": proof.order_id, "delivered_at": proof.delivered_at,
                                "waypoint": proof.waypoint, "photo_ref": proof.photo_ref}
        self.event_publisher.publish(String(data=json.dumps(payload, sort_keys=True)))

    def _publish_state(self, now: float, force: bool = False) -> None:
        snapshot: CompartmentSnapshot = self.core.snapshot()
        key = (snapshot.handoff_state, snapshot.lock_state, snapshot.door_closed,
               snapshot.occupancy, snapshot.tamper, snapshot.order_id)
        due = (self._published_at is None
               or not 0.0 <= now - self._published_at < self.state_heartbeat_s)
        if key == self._published and not due and not force:
            return
        self._published, self._published_at = key, now
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._frame_id)
        self.state_publisher.publish(CompartmentState(
            header=header, lock_state=int(snapshot.lock_state),
            door_closed=snapshot.door_closed, occupancy=int(snapshot.occupancy),
            handoff_state=int(snapshot.handoff_state), tamper=snapshot.tamper,
            order_id=snapshot.order_id))


def main() -> int:
    return run_node(HandoffNode)


if __name__ == "__main__":
    raise SystemExit(main())

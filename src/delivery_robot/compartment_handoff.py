"""The goods compartment of one robot: when it may open, when it locks, what counts as delivered.

A ROS-free state machine. The `handoff` node feeds it what the hardware and the fleet report
(door switch, lock state from the base, occupancy from perception, the robot's waypoint,
coordinator requests, credentials, time ticks) and carries out what it returns: lock commands
for `compartment/set_lock` and events for the shop, the operator and the event log.

Rules it keeps:
- it locks only with the door closed, and locks by itself as soon as the door closes;
- it opens for loading only on the coordinator's request at the order's shop waypoint, and for
  the recipient only after a valid credential at the order's dropoff waypoint;
- a door opened without an unlock, a bolt released without a command, a lock fault or a lock
  command the base does not confirm puts it in `FAULT` (alarm) with the goods kept locked;
- after a recipient unlock: door opened, closed and then reported empty -> delivered, with a
  proof record; closed but still occupied -> locked again with an event; never opened within
  the timeout -> relocked and counted as a no-show.

Hardware reports never raise, whatever they contain: odd values are recorded and, where that is
the safe choice, lead to `FAULT`. Requests the rules do not allow are refused with a `Refusal`
(stable code + message) in the returned `Step`. Time is passed in (`now`, seconds) so tests are
deterministic; the machine never reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, IntEnum, StrEnum
from typing import Protocol

from delivery_robot.handoff_credentials import Method, VerifyResult


class HandoffState(IntEnum):
    """Values equal `CompartmentState.HANDOFF_*` (a test keeps them equal), so the node
    publishes them unchanged."""

    LOCKED_EMPTY = 0
    OPEN_FOR_LOADING = 1
    LOCKED_LOADED = 2
    OPEN_FOR_RECIPIENT = 3
    DOOR_OPEN = 4  # the recipient has opened the door after a credential unlock
    FAULT = 5  # tamper or lock fault: needs an operator

    @property
    def label(self) -> str:
        return self.name.lower()


class LockState(IntEnum):
    """The bolt as the base reports it; values equal `CompartmentState.LOCK_*`."""

    UNKNOWN = 0
    LOCKED = 1
    UNLOCKED = 2
    FAULT = 3


class Occupancy(IntEnum):
    """Goods in the compartment as perception reports it; values equal
    `CompartmentState.OCCUPANCY_*`."""

    UNKNOWN = 0
    EMPTY = 1
    OCCUPIED = 2


class EventKind(StrEnum):
    STARTED = "started"
    LOCK_COMMAND = "lock_command"
    LOCK_REPORTED = "lock_reported"
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    OCCUPANCY_REPORTED = "occupancy_reported"
    STATE_CHANGED = "state_changed"
    ORDER_ASSIGNED = "order_assigned"
    ORDER_CLEARED = "order_cleared"
    LOADING_OPENED = "loading_opened"
    LOADING_TIMEOUT_RELOCK = "loading_timeout_relock"
    LOADED = "loaded"
    CLOSED_EMPTY = "closed_empty"  # the shop closed the door without loading anything
    RECIPIENT_UNLOCKED = "recipient_unlocked"
    CREDENTIAL_REJECTED = "credential_rejected"
    CREDENTIAL_LOCKOUT = "credential_lockout"
    NO_SHOW_RELOCK = "no_show_relock"
    MOVED_RELOCK = "moved_relock"
    MOVED_WITH_DOOR_OPEN = "moved_with_door_open"
    GOODS_NOT_TAKEN = "goods_not_taken"
    OCCUPANCY_UNKNOWN = "occupancy_unknown"
    OCCUPANCY_MISMATCH = "occupancy_mismatch"
    DELIVERED = "delivered"
    TAMPER = "tamper"
    LOCK_FAULT = "lock_fault"
    LOCK_MISMATCH = "lock_mismatch"
    OPERATOR_RESET = "operator_reset"
    REFUSED = "refused"
    BAD_INPUT = "bad_input"
    CLOCK_WENT_BACK = "clock_went_back"


# Events the operator page raises as alerts (and the shop is told about for its orders).
ALARM_KINDS: frozenset[EventKind] = frozenset({
    EventKind.TAMPER, EventKind.LOCK_FAULT, EventKind.CREDENTIAL_LOCKOUT,
    EventKind.MOVED_WITH_DOOR_OPEN})


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DoorReported:
    closed: bool  # door switch


@dataclass(frozen=True)
class LockReported:
    state: int  # LockState value from the base; anything else is recorded as bad input


@dataclass(frozen=True)
class OccupancyReported:
    occupancy: int  # Occupancy value from perception
    photo_ref: str = ""  # reference of the compartment photo it was judged on (proof record)


@dataclass(frozen=True)
class PositionReported:
    waypoint: str | None  # the route-graph waypoint the robot stands at; None/"" between


@dataclass(frozen=True)
class AssignOrder:
    order_id: str
    shop_waypoint: str
    dropoff_waypoint: str


@dataclass(frozen=True)
class ClearOrder:
    order_id: str


@dataclass(frozen=True)
class OpenForLoading:
    order_id: str
    requested_by: str = "coordinator"


@dataclass(frozen=True)
class CredentialPresented:
    order_id: str
    method: int  # Method value (VerifyHandoff.METHOD_*)
    credential: str = field(repr=False)


@dataclass(frozen=True)
class OperatorReset:
    by: str


@dataclass(frozen=True)
class Tick:
    """Only time passes (timeouts are checked on every input, this is for quiet periods)."""


HandoffInput = (DoorReported | LockReported | OccupancyReported | PositionReported | AssignOrder
                | ClearOrder | OpenForLoading | CredentialPresented | OperatorReset | Tick)


# --- outputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockCommand:
    lock: bool  # True = lock, False = unlock (SetLock.Request.lock)
    reason: str  # recorded by the base driver as requested_by context


@dataclass(frozen=True)
class HandoffEvent:
    at: float
    kind: EventKind
    detail: str
    order_id: str = ""

    @property
    def alarm(self) -> bool:
        return self.kind in ALARM_KINDS


@dataclass(frozen=True)
class Refusal:
    code: str  # stable, e.g. "not_at_shop"; for credentials the VerifyError value
    message: str


@dataclass(frozen=True)
class DeliveryProof:
    order_id: str
    delivered_at: float
    waypoint: str
    photo_ref: str


@dataclass(frozen=True)
class Step:
    """What one input caused: commands to send, events to publish, and the request's answer."""

    commands: tuple[LockCommand, ...] = ()
    events: tuple[HandoffEvent, ...] = ()
    refusal: Refusal | None = None
    verification: VerifyResult | None = None
    proof: DeliveryProof | None = None

    @property
    def accepted(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True)
class OrderInfo:
    order_id: str
    shop_waypoint: str
    dropoff_waypoint: str


@dataclass(frozen=True)
class CompartmentSnapshot:
    """Everything `CompartmentState` publishes."""

    handoff_state: HandoffState
    lock_state: LockState
    door_closed: bool  # False while unknown too: the message has no "unknown" door
    occupancy: Occupancy
    tamper: bool
    order_id: str
    fault_reason: str


@dataclass(frozen=True)
class CompartmentMemory:
    """What must survive a restart of the node (persisted by `handoff_store`): the state, the
    order with its waypoints, the no-show count and an unresolved fault. An open state is a
    pending unlock: it restarts as locked_loaded (goods may be inside), and after a recipient
    unlock the used credential is re-armed, since nobody saw the goods taken."""

    state: HandoffState
    order: OrderInfo | None = None
    no_shows: int = 0
    tamper: bool = False
    fault_reason: str = ""


@dataclass(frozen=True)
class HandoffConfig:
    recipient_open_timeout_s: float = 60.0  # T: unlocked for the recipient, door not opened
    loading_open_timeout_s: float = 300.0  # unlocked for the shop, door not opened
    lock_ack_timeout_s: float = 3.0  # base must confirm a lock command within this
    occupancy_verdict_timeout_s: float = 15.0  # perception must judge a closed compartment
    log_capacity: int = 10_000  # newest events kept in memory; the node persists them

    def __post_init__(self) -> None:
        timeouts = (self.recipient_open_timeout_s, self.loading_open_timeout_s,
                    self.lock_ack_timeout_s, self.occupancy_verdict_timeout_s)
        if not all(t > 0 for t in timeouts) or self.log_capacity < 1:
            raise ValueError("handoff timeouts must be > 0 s and log_capacity >= 1")


class CredentialVerifier(Protocol):
    """What the machine needs of `HandoffCredentials` (a fake in tests)."""

    def verify(self, order_id: str, method: int, credential: str, now: float) -> VerifyResult:
        ...

    def rearm(self, order_id: str) -> bool:
        ...


class _Verdict(Enum):
    """Why the machine waits for perception after the door closed."""

    LOADING = "loading"
    RECIPIENT = "recipient"


_LOCKED_STATES = frozenset({HandoffState.LOCKED_EMPTY, HandoffState.LOCKED_LOADED})
_OPEN_STATES = frozenset({HandoffState.OPEN_FOR_LOADING, HandoffState.OPEN_FOR_RECIPIENT,
                          HandoffState.DOOR_OPEN})
# After a restart nobody can tell what happened while it was down: goods may be inside.
_STATE_AFTER_RESTART = {
    HandoffState.OPEN_FOR_LOADING: HandoffState.LOCKED_LOADED,
    HandoffState.OPEN_FOR_RECIPIENT: HandoffState.LOCKED_LOADED,
    HandoffState.DOOR_OPEN: HandoffState.LOCKED_LOADED,
}


class CompartmentHandoff:
    """The compartment state machine; call `handle(input, now)` and act on the `Step`."""

    def __init__(self, verifier: CredentialVerifier, config: HandoffConfig | None = None, *,
                 now: float, state: HandoffState = HandoffState.LOCKED_EMPTY,
                 order: OrderInfo | None = None,
                 memory: CompartmentMemory | None = None) -> None:
        """`memory` (or `state`/`order`) restores a persisted compartment; an open state
        restarts as locked_loaded, and nothing is unlocked until a new request or credential.
        The first door and bolt reports then reconcile it with the hardware: a closed door is
        locked, a door found open is tamper."""
        if memory is not None:
            state, order = memory.state, memory.order
        self._verifier = verifier
        self._config = config or HandoffConfig()
        self._now = now
        self._state = _STATE_AFTER_RESTART.get(state, state)
        self._order = order
        self._log: deque[HandoffEvent] = deque(maxlen=self._config.log_capacity)
        self._step_events: list[HandoffEvent] = []
        self._step_commands: list[LockCommand] = []
        self._door_closed: bool | None = None
        self._lock_reported = LockState.UNKNOWN
        self._lock_commanded: bool | None = None
        self._lock_commanded_at = now
        self._lock_confirmed = False
        self._occupancy = Occupancy.UNKNOWN
        self._waypoint: str | None = None
        self._unlocked_at = now
        self._door_opened_since_unlock = False
        self._state_before_loading = HandoffState.LOCKED_EMPTY
        self._verdict: _Verdict | None = None
        self._verdict_since = now
        self._tamper = False
        self._fault_reason = "restored in fault" if self._state is HandoffState.FAULT else ""
        self._no_shows = 0
        if memory is not None:
            self._no_shows = max(0, memory.no_shows)
            if self._state is HandoffState.FAULT:
                self._tamper = memory.tamper
                self._fault_reason = memory.fault_reason or self._fault_reason
        self._record(EventKind.STARTED, f"state {self._state.label}"
                     + (f" (was {state.label})" if state is not self._state else ""))
        if state in (HandoffState.OPEN_FOR_RECIPIENT, HandoffState.DOOR_OPEN):
            self._rearm_credential()  # the handover was never seen to finish
        self._step_events.clear()

    # --- read side ---

    @property
    def state(self) -> HandoffState:
        return self._state

    @property
    def order(self) -> OrderInfo | None:
        return self._order

    @property
    def door_closed(self) -> bool | None:
        return self._door_closed

    @property
    def lock_commanded(self) -> bool | None:
        """The last lock command sent (None before the first)."""
        return self._lock_commanded

    @property
    def no_shows(self) -> int:
        return self._no_shows

    @property
    def event_log(self) -> tuple[HandoffEvent, ...]:
        return tuple(self._log)

    def memory(self) -> CompartmentMemory:
        """What to persist after every step (equal values: nothing to write)."""
        faulted = self._state is HandoffState.FAULT
        return CompartmentMemory(self._state, self._order, self._no_shows,
                                 self._tamper if faulted else False,
                                 self._fault_reason if faulted else "")

    def snapshot(self) -> CompartmentSnapshot:
        return CompartmentSnapshot(
            handoff_state=self._state, lock_state=self._lock_reported,
            door_closed=self._door_closed is True, occupancy=self._occupancy,
            tamper=self._tamper, order_id=self._order.order_id if self._order else "",
            fault_reason=self._fault_reason)

    # --- the one entry point ---

    def handle(self, event: HandoffInput, now: float) -> Step:
        self._step_events = []
        self._step_commands = []
        now = self._advance_clock(now)
        self._run_timers(now)
        refusal: Refusal | None = None
        verification: VerifyResult | None = None
        proof: DeliveryProof | None = None
        match event:
            case DoorReported(closed=closed):
                self._on_door(bool(closed), now)
            case LockReported(state=raw):
                self._on_lock_report(raw, now)
            case OccupancyReported(occupancy=raw, photo_ref=photo_ref):
                proof = self._on_occupancy(raw, str(photo_ref), now)
            case PositionReported(waypoint=waypoint):
                self._on_position(waypoint or None, now)
            case AssignOrder():
                refusal = self._on_assign(event, now)
            case ClearOrder(order_id=order_id):
                refusal = self._on_clear(order_id, now)
            case OpenForLoading(order_id=order_id, requested_by=requested_by):
                refusal = self._on_open_for_loading(order_id, requested_by, now)
            case CredentialPresented():
                refusal, verification = self._on_credential(event, now)
            case OperatorReset(by=by):
                refusal = self._on_operator_reset(by, now)
            case Tick():
                pass
            case _:  # only reachable from untyped callers; recorded, never raised
                name = type(event).__name__  # type: ignore[unreachable]
                self._record(EventKind.BAD_INPUT, f"unknown input {name}", now)
        if refusal is not None:
            self._record(EventKind.REFUSED, f"{type(event).__name__}: {refusal.code}", now)
        return Step(tuple(self._step_commands), tuple(self._step_events), refusal,
                    verification, proof)

    # --- time ---

    def _advance_clock(self, now: float) -> float:
        if not math.isfinite(now):
            self._record(EventKind.BAD_INPUT, f"non-finite time {now!r}", self._now)
            return self._now
        if now < self._now:
            self._record(EventKind.CLOCK_WENT_BACK, f"{now} < {self._now}; kept {self._now}",
                         self._now)
            return self._now
        self._now = now
        return now

    def _run_timers(self, now: float) -> None:
        cfg = self._config
        if (self._lock_commanded is not None and not self._lock_confirmed
                and self._state is not HandoffState.FAULT
                and now - self._lock_commanded_at >= cfg.lock_ack_timeout_s):
            verb = "lock" if self._lock_commanded else "unlock"
            self._enter_fault(now, tamper=False,
                              reason=f"base did not confirm {verb} within "
                                     f"{cfg.lock_ack_timeout_s:g} s")
            return
        waited = now - self._unlocked_at
        if (self._state is HandoffState.OPEN_FOR_RECIPIENT
                and waited >= cfg.recipient_open_timeout_s):
            self._no_shows += 1
            self._relock(now, HandoffState.LOCKED_LOADED, EventKind.NO_SHOW_RELOCK,
                         f"door not opened within {cfg.recipient_open_timeout_s:g} s "
                         f"(no-show {self._no_shows})")
            self._rearm_credential()
        elif (self._state is HandoffState.OPEN_FOR_LOADING and not self._door_opened_since_unlock
              and waited >= cfg.loading_open_timeout_s):
            self._relock(now, self._state_before_loading, EventKind.LOADING_TIMEOUT_RELOCK,
                         f"door not opened within {cfg.loading_open_timeout_s:g} s")
        if (self._verdict is not None
                and now - self._verdict_since >= cfg.occupancy_verdict_timeout_s):
            verdict, self._verdict = self._verdict, None
            self._record(EventKind.OCCUPANCY_UNKNOWN,
                         f"no occupancy report within {cfg.occupancy_verdict_timeout_s:g} s "
                         "of closing; kept as loaded", now)
            if verdict is _Verdict.RECIPIENT:
                self._rearm_credential()

    # --- hardware reports ---

    def _on_door(self, closed: bool, now: float) -> None:
        if closed == self._door_closed:
            return
        first_report = self._door_closed is None
        self._door_closed = closed
        self._record(EventKind.DOOR_CLOSED if closed else EventKind.DOOR_OPENED,
                     "first report" if first_report else "", now)
        if closed:
            self._on_door_closed(now)
        else:
            self._on_door_opened(now, first_report)

    def _on_door_opened(self, now: float, first_report: bool) -> None:
        state = self._state
        if state in _LOCKED_STATES or state is HandoffState.FAULT:
            why = ("door open at start-up without an unlock" if first_report
                   else "door opened without an unlock")
            self._enter_fault(now, tamper=True, reason=why)
        elif state is HandoffState.OPEN_FOR_LOADING:
            self._door_opened_since_unlock = True
            self._lock_confirmed = True  # the door opened, so the bolt did let go
        elif state is HandoffState.OPEN_FOR_RECIPIENT:
            self._door_opened_since_unlock = True
            self._lock_confirmed = True
            self._set_state(HandoffState.DOOR_OPEN, "recipient opened the door", now)

    def _on_door_closed(self, now: float) -> None:
        state = self._state
        if state is HandoffState.OPEN_FOR_LOADING and self._door_opened_since_unlock:
            self._command_lock(True, "door closed after loading", now)
            self._set_state(HandoffState.LOCKED_LOADED, "door closed after loading", now)
            self._await_verdict(_Verdict.LOADING, now)
        elif state is HandoffState.DOOR_OPEN:
            self._command_lock(True, "door closed after handoff", now)
            self._set_state(HandoffState.LOCKED_LOADED, "door closed after handoff", now)
            self._await_verdict(_Verdict.RECIPIENT, now)
        elif state is HandoffState.FAULT or (
                state in _LOCKED_STATES and self._lock_commanded is not True):
            self._command_lock(True, "door closed", now)

    def _on_lock_report(self, raw: int, now: float) -> None:
        try:
            reported = LockState(raw)
        except (ValueError, TypeError):
            self._record(EventKind.BAD_INPUT, f"lock state {raw!r} from the base", now)
            return
        changed = reported is not self._lock_reported
        if changed:
            self._record(EventKind.LOCK_REPORTED, reported.name.lower(), now)
        self._lock_reported = reported
        if reported is LockState.FAULT:
            if changed or self._state is not HandoffState.FAULT:
                self._enter_fault(now, tamper=False, reason="lock fault reported by the base")
            return
        if reported is LockState.UNKNOWN:
            return  # a pending command still times out if this lasts
        locked = reported is LockState.LOCKED
        if self._lock_commanded is None:
            # Nothing commanded yet (start-up): make sure a closed door ends up locked.
            if not locked and self._door_closed is True and self._state not in _OPEN_STATES:
                self._command_lock(True, "found unlocked at start-up", now)
        elif locked == self._lock_commanded:
            self._lock_confirmed = True
        elif self._lock_confirmed:
            if self._lock_commanded:
                self._enter_fault(now, tamper=True, reason="bolt released without a command")
            else:
                self._record(EventKind.LOCK_MISMATCH, "locked while commanded unlocked", now)
        # else: the bolt is still travelling; the ack timeout covers a command that never lands

    def _on_occupancy(self, raw: int, photo_ref: str, now: float) -> DeliveryProof | None:
        try:
            occupancy = Occupancy(raw)
        except (ValueError, TypeError):
            self._record(EventKind.BAD_INPUT, f"occupancy {raw!r} from perception", now)
            return None
        changed = occupancy is not self._occupancy
        self._occupancy = occupancy
        if changed:
            self._record(EventKind.OCCUPANCY_REPORTED, occupancy.name.lower(), now)
        if occupancy is Occupancy.UNKNOWN:
            return None
        if self._verdict is not None and self._state is HandoffState.LOCKED_LOADED:
            verdict, self._verdict = self._verdict, None
            empty = occupancy is Occupancy.EMPTY
            if verdict is _Verdict.RECIPIENT:
                if empty:
                    return self._deliver(photo_ref, now)
                self._record(EventKind.GOODS_NOT_TAKEN, "closed with the goods still inside",
                             now)
                self._rearm_credential()
            elif empty:
                self._set_state(HandoffState.LOCKED_EMPTY, "closed without loading", now)
                self._record(EventKind.CLOSED_EMPTY, "shop closed the door with nothing inside",
                             now)
            else:
                self._record(EventKind.LOADED, photo_ref, now)
            return None
        expected = {HandoffState.LOCKED_EMPTY: Occupancy.EMPTY,
                    HandoffState.LOCKED_LOADED: Occupancy.OCCUPIED}.get(self._state)
        if changed and expected is not None and occupancy is not expected:
            self._record(EventKind.OCCUPANCY_MISMATCH,
                         f"{occupancy.name.lower()} while {self._state.label}", now)
        return None

    def _on_position(self, waypoint: str | None, now: float) -> None:
        if waypoint == self._waypoint:
            return
        self._waypoint = waypoint
        order, state = self._order, self._state
        if order is None:
            return
        if state is HandoffState.OPEN_FOR_RECIPIENT and waypoint != order.dropoff_waypoint:
            self._relock(now, HandoffState.LOCKED_LOADED, EventKind.MOVED_RELOCK,
                         f"robot left {order.dropoff_waypoint}")
            self._rearm_credential()
        elif state is HandoffState.OPEN_FOR_LOADING and waypoint != order.shop_waypoint:
            if self._door_opened_since_unlock:
                self._record(EventKind.MOVED_WITH_DOOR_OPEN, f"left {order.shop_waypoint}", now)
            else:
                self._relock(now, self._state_before_loading, EventKind.MOVED_RELOCK,
                             f"robot left {order.shop_waypoint}")
        elif state is HandoffState.DOOR_OPEN:
            self._record(EventKind.MOVED_WITH_DOOR_OPEN, f"left {order.dropoff_waypoint}", now)

    # --- requests ---

    def _on_assign(self, request: AssignOrder, now: float) -> Refusal | None:
        if not (request.order_id and request.shop_waypoint and request.dropoff_waypoint):
            return Refusal("malformed_request", "an order needs an id, a shop and a dropoff")
        refusal = self._refuse_unless_locked()
        if refusal is not None:
            return refusal
        current = self._order
        if (self._state is HandoffState.LOCKED_LOADED and current is not None
                and current.order_id != request.order_id):
            return Refusal("goods_on_board",
                           f"compartment holds the goods of order {current.order_id}")
        self._order = OrderInfo(request.order_id, request.shop_waypoint, request.dropoff_waypoint)
        self._record(EventKind.ORDER_ASSIGNED,
                     f"shop {request.shop_waypoint}, dropoff {request.dropoff_waypoint}", now)
        return None

    def _on_clear(self, order_id: str, now: float) -> Refusal | None:
        order = self._order_for(order_id)
        if isinstance(order, Refusal):
            return order
        refusal = self._refuse_unless_locked()
        if refusal is not None:
            return refusal
        if self._state is HandoffState.LOCKED_LOADED:
            return Refusal("goods_on_board", "unload the compartment before clearing its order")
        self._record(EventKind.ORDER_CLEARED, "", now)
        self._order = None
        return None

    def _on_open_for_loading(self, order_id: str, requested_by: str,
                             now: float) -> Refusal | None:
        order = self._order_for(order_id)
        if isinstance(order, Refusal):
            return order
        refusal = self._refuse_unless_locked()
        if refusal is not None:
            return refusal
        if self._waypoint != order.shop_waypoint:
            return Refusal("not_at_shop", f"robot is not at {order.shop_waypoint}")
        if self._door_closed is not True:
            return Refusal("door_not_closed", "door is not reported closed")
        self._state_before_loading = self._state
        self._unlock(HandoffState.OPEN_FOR_LOADING, f"loading requested by {requested_by}", now)
        self._record(EventKind.LOADING_OPENED, f"requested by {requested_by}", now)
        return None

    def _on_credential(self, request: CredentialPresented,
                       now: float) -> tuple[Refusal | None, VerifyResult | None]:
        """Checks place and state first, so a credential is only spent when it can open."""
        order = self._order_for(request.order_id)
        if isinstance(order, Refusal):
            return order, None
        refusal = self._refuse_unless_locked()
        if refusal is not None:
            return refusal, None
        if self._state is not HandoffState.LOCKED_LOADED:
            return Refusal("no_goods", "the compartment holds no goods"), None
        if self._waypoint != order.dropoff_waypoint:
            return Refusal("not_at_dropoff", f"robot is not at {order.dropoff_waypoint} yet"), None
        if self._door_closed is not True:
            return Refusal("door_not_closed", "door is not reported closed"), None
        result = self._verifier.verify(request.order_id, request.method, request.credential, now)
        if result.lockout is not None:
            self._record(EventKind.CREDENTIAL_LOCKOUT,
                         f"{result.lockout.failed_attempts} wrong tries; locked until "
                         f"{result.lockout.until:g}", now)
        if not result.granted:
            self._record(EventKind.CREDENTIAL_REJECTED,
                         f"{result.error_code}; {result.attempts_left} tries left", now)
            return Refusal(result.error_code or "not_granted", result.message), result
        self._unlock(HandoffState.OPEN_FOR_RECIPIENT, "valid credential", now)
        self._record(EventKind.RECIPIENT_UNLOCKED, _method_label(request.method), now)
        return None, result

    def _on_operator_reset(self, by: str, now: float) -> Refusal | None:
        if self._state is not HandoffState.FAULT:
            return Refusal("not_in_fault", f"compartment is {self._state.label}, not in fault")
        if self._door_closed is not True:
            return Refusal("door_not_closed", "close the door before resetting")
        if not (self._lock_commanded is True and self._lock_reported is LockState.LOCKED):
            return Refusal("lock_not_confirmed", "the base has not confirmed the lock")
        loaded = self._occupancy is not Occupancy.EMPTY  # unknown: assume the goods are there
        self._tamper = False
        self._fault_reason = ""
        self._set_state(HandoffState.LOCKED_LOADED if loaded else HandoffState.LOCKED_EMPTY,
                        f"reset by {by}", now)
        self._record(EventKind.OPERATOR_RESET, f"by {by}", now)
        return None

    def _order_for(self, order_id: str) -> OrderInfo | Refusal:
        if self._order is None:
            return Refusal("no_order", "no order is assigned to this compartment")
        if order_id != self._order.order_id:
            return Refusal("wrong_order", "this compartment is for another order")
        return self._order

    def _refuse_unless_locked(self) -> Refusal | None:
        if self._state is HandoffState.FAULT:
            return Refusal("fault", f"compartment in fault ({self._fault_reason}); "
                                    "an operator must reset it")
        if self._state in _OPEN_STATES:
            return Refusal("already_open", f"compartment is {self._state.label}")
        return None

    # --- effects ---

    def _command_lock(self, lock: bool, reason: str, now: float) -> None:
        if lock and self._door_closed is not True:
            # Rule: never throw the bolt into an open door. Callers check; this is the backstop.
            self._record(EventKind.BAD_INPUT, f"lock withheld, door not closed ({reason})", now)
            return
        self._lock_commanded = lock
        self._lock_commanded_at = now
        self._lock_confirmed = self._lock_reported is (
            LockState.LOCKED if lock else LockState.UNLOCKED)
        self._step_commands.append(LockCommand(lock, reason))
        self._record(EventKind.LOCK_COMMAND, f"{'lock' if lock else 'unlock'}: {reason}", now)

    def _unlock(self, new_state: HandoffState, reason: str, now: float) -> None:
        self._verdict = None
        self._unlocked_at = now
        self._door_opened_since_unlock = False
        self._command_lock(False, reason, now)
        self._set_state(new_state, reason, now)

    def _relock(self, now: float, new_state: HandoffState, kind: EventKind, detail: str) -> None:
        self._command_lock(True, detail, now)
        self._set_state(new_state, detail, now)
        self._record(kind, detail, now)

    def _await_verdict(self, verdict: _Verdict, now: float) -> None:
        self._verdict = verdict
        self._verdict_since = now

    def _deliver(self, photo_ref: str, now: float) -> DeliveryProof:
        order_id = self._order.order_id if self._order else ""
        proof = DeliveryProof(order_id, now, self._waypoint or "", photo_ref)
        self._set_state(HandoffState.LOCKED_EMPTY, "goods taken", now)
        self._record(EventKind.DELIVERED, f"at {proof.waypoint}, photo {photo_ref or '-'}", now)
        self._order = None
        return proof

    def _enter_fault(self, now: float, *, tamper: bool, reason: str) -> None:
        self._record(EventKind.TAMPER if tamper else EventKind.LOCK_FAULT, reason, now)
        self._tamper = self._tamper or tamper
        if self._state is HandoffState.FAULT:
            return
        self._fault_reason = reason
        self._verdict = None
        self._set_state(HandoffState.FAULT, reason, now)
        if self._door_closed is True:
            self._command_lock(True, "fault: keep the goods locked", now)

    def _rearm_credential(self) -> None:
        if self._order is not None:
            self._verifier.rearm(self._order.order_id)

    def _set_state(self, new_state: HandoffState, why: str, now: float) -> None:
        if new_state is self._state:
            return
        old, self._state = self._state, new_state
        self._record(EventKind.STATE_CHANGED, f"{old.label} -> {new_state.label}: {why}", now)

    def _record(self, kind: EventKind, detail: str, now: float | None = None) -> None:
        event = HandoffEvent(self._now if now is None else now, kind, detail,
                             self._order.order_id if self._order else "")
        self._log.append(event)
        self._step_events.append(event)


def _method_label(method: int) -> str:
    try:
        return Method(method).name.lower()
    except ValueError:
        return str(method)

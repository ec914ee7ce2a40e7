from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery_robot.compartment_handoff import (
    AssignOrder,
    ClearOrder,
    CompartmentHandoff,
    CredentialPresented,
    CredentialVerifier,
    DoorReported,
    EventKind,
    HandoffConfig,
    HandoffInput,
    HandoffState,
    LockReported,
    LockState,
    Occupancy,
    OccupancyReported,
    OpenForLoading,
    OperatorReset,
    OrderInfo,
    PositionReported,
    Step,
    Tick,
)
from delivery_robot.credentials import ScryptParams
from delivery_robot.handoff_credentials import (
    CredentialPolicy,
    HandoffCredentials,
    Method,
    VerifyError,
    VerifyResult,
)

S = HandoffState
SHOP, DROPOFF = "bakery", "apt_101"
PIN = "123456"
CONFIG = HandoffConfig(recipient_open_timeout_s=60.0, loading_open_timeout_s=120.0,
                       lock_ack_timeout_s=3.0, occupancy_verdict_timeout_s=10.0)


class FakeVerifier:
    """Grants PIN once per order; rearm makes it usable again (like HandoffCredentials)."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.calls = 0
        self.rearmed: list[str] = []

    def verify(self, order_id: str, method: int, credential: str, now: float) -> VerifyResult:
        self.calls += 1
        if order_id in self.used:
            return VerifyResult(False, VerifyError.ALREADY_USED, "used", 5)
        if credential == PIN:
            self.used.add(order_id)
            return VerifyResult(True, None, "accepted", 5)
        return VerifyResult(False, VerifyError.WRONG_CREDENTIAL, "wrong code", 4)

    def rearm(self, order_id: str) -> bool:
        self.rearmed.append(order_id)
        was_used = order_id in self.used
        self.used.discard(order_id)
        return was_used


class Rig:
    """The machine plus a clock and, unless told otherwise, a base that confirms each command."""

    def __init__(self, *, auto_ack: bool = True, verifier: CredentialVerifier | None = None,
                 state: HandoffState = HandoffState.LOCKED_EMPTY,
                 order: OrderInfo | None = None) -> None:
        self.now = 1_000.0
        self.verifier = verifier if verifier is not None else FakeVerifier()
        self.machine = CompartmentHandoff(self.verifier, CONFIG, now=self.now, state=state,
                                          order=order)
        self.auto_ack = auto_ack
        self.commands: list[bool] = []
        self.events: list[EventKind] = []

    def send(self, event: HandoffInput, dt: float = 0.1) -> Step:
        self.now += dt
        step = self._handle(event)
        if self.auto_ack and step.commands:
            last = step.commands[-1].lock
            self._handle(LockReported(LockState.LOCKED if last else LockState.UNLOCKED))
        return step

    def _handle(self, event: HandoffInput) -> Step:
        step = self.machine.handle(event, self.now)
        self.commands += [command.lock for command in step.commands]
        self.events += [e.kind for e in step.events]
        return step

    def state(self) -> HandoffState:
        """A method, not a property, so that type checkers do not pin it between calls."""
        return self.machine.state


def _code(step: Step) -> str:
    """The refusal code of a step, "" if it was accepted."""
    return step.refusal.code if step.refusal is not None else ""


def _ready(rig: Rig, order_id: str = "ord-1") -> None:
    """Robot at the shop, door closed and locked, order assigned."""
    rig.send(DoorReported(closed=True))
    rig.send(PositionReported(SHOP))
    assert rig.send(AssignOrder(order_id, SHOP, DROPOFF)).accepted


def _loaded(rig: Rig) -> None:
    _ready(rig)
    assert rig.send(OpenForLoading("ord-1")).accepted
    rig.send(DoorReported(closed=False))
    rig.send(DoorReported(closed=True))
    rig.send(OccupancyReported(Occupancy.OCCUPIED, "load.jpg"))
    assert rig.state() is S.LOCKED_LOADED


def _at_dropoff_unlocked(rig: Rig) -> None:
    _loaded(rig)
    rig.send(PositionReported(DROPOFF), dt=300)
    step = rig.send(CredentialPresented("ord-1", Method.PIN, PIN))
    assert step.accepted
    assert step.verification is not None
    assert step.verification.granted
    assert rig.state() is S.OPEN_FOR_RECIPIENT


# --- start-up and assignment ------------------------------------------------------------------


def test_closed_door_at_start_up_is_locked_at_once() -> None:
    rig = Rig(auto_ack=False)
    step = rig.send(DoorReported(closed=True))
    assert [c.lock for c in step.commands] == [True]
    assert rig.machine.lock_commanded is True
    rig.send(LockReported(LockState.LOCKED))
    rig.send(Tick(), dt=10)  # confirmed: no ack timeout
    assert rig.state() is S.LOCKED_EMPTY


def test_base_found_unlocked_at_start_up_is_locked() -> None:
    rig = Rig(auto_ack=False)
    rig.machine.handle(LockReported(LockState.UNLOCKED), rig.now)  # before the door report
    step = rig.send(DoorReported(closed=True))
    assert [c.lock for c in step.commands] == [True]


def test_order_assignment_rules() -> None:
    rig = Rig()
    assert _code(rig.send(AssignOrder("", SHOP, DROPOFF))) == "malformed_request"
    _loaded(rig)
    refused = rig.send(AssignOrder("ord-2", SHOP, DROPOFF))
    assert refused.refusal is not None
    assert refused.refusal.code == "goods_on_board"
    assert rig.send(AssignOrder("ord-1", SHOP, "apt_202")).accepted  # dropoff changed
    assert rig.machine.order == OrderInfo("ord-1", SHOP, "apt_202")
    cleared = rig.send(ClearOrder("ord-1"))
    assert cleared.refusal is not None
    assert cleared.refusal.code == "goods_on_board"
    assert EventKind.REFUSED in rig.events


def test_clear_order_when_empty() -> None:
    rig = Rig()
    _ready(rig)
    assert _code(rig.send(ClearOrder("ord-9"))) == "wrong_order"
    assert rig.send(ClearOrder("ord-1")).accepted
    assert rig.machine.order is None
    assert _code(rig.send(ClearOrder("ord-1"))) == "no_order"


# --- loading ----------------------------------------------------------------------------------


def test_open_for_loading_refusals() -> None:
    rig = Rig()
    assert _code(rig.send(OpenForLoading("ord-1"))) == "no_order"
    rig.send(AssignOrder("ord-1", SHOP, DROPOFF))
    assert _code(rig.send(OpenForLoading("ord-2"))) == "wrong_order"
    assert _code(rig.send(OpenForLoading("ord-1"))) == "not_at_shop"
    rig.send(PositionReported(DROPOFF))
    assert _code(rig.send(OpenForLoading("ord-1"))) == "not_at_shop"
    rig.send(PositionReported(SHOP))
    # Door never reported: nobody knows it is closed, so no unlock.
    assert _code(rig.send(OpenForLoading("ord-1"))) == "door_not_closed"
    assert rig.commands == []
    rig.send(DoorReported(closed=True))
    assert rig.send(OpenForLoading("ord-1")).accepted
    assert _code(rig.send(OpenForLoading("ord-1"))) == "already_open"


def test_loading_opens_at_the_shop_and_locks_when_the_door_closes() -> None:
    rig = Rig()
    _ready(rig)
    step = rig.send(OpenForLoading("ord-1"))
    assert [c.lock for c in step.commands] == [False]
    assert rig.state() is S.OPEN_FOR_LOADING
    assert rig.send(DoorReported(closed=False)).commands == ()
    assert rig.state() is S.OPEN_FOR_LOADING
    closed = rig.send(DoorReported(closed=True), dt=20)
    assert [c.lock for c in closed.commands] == [True]
    assert rig.state() is S.LOCKED_LOADED
    rig.send(OccupancyReported(Occupancy.OCCUPIED))
    assert rig.state() is S.LOCKED_LOADED
    assert EventKind.LOADED in rig.events


def test_closing_without_loading_goes_back_to_locked_empty() -> None:
    rig = Rig()
    _ready(rig)
    rig.send(OpenForLoading("ord-1"))
    rig.send(DoorReported(closed=False))
    rig.send(DoorReported(closed=True))
    rig.send(OccupancyReported(Occupancy.EMPTY))
    assert rig.state() is S.LOCKED_EMPTY
    assert EventKind.CLOSED_EMPTY in rig.events


def test_loading_unlock_relocks_if_the_door_is_not_opened() -> None:
    rig = Rig()
    _ready(rig)
    rig.send(OpenForLoading("ord-1"))
    assert rig.send(Tick(), dt=119).commands == ()
    step = rig.send(Tick(), dt=1)
    assert [c.lock for c in step.commands] == [True]
    assert rig.state() is S.LOCKED_EMPTY
    assert EventKind.LOADING_TIMEOUT_RELOCK in rig.events


def test_robot_leaving_the_shop_relocks_an_unopened_compartment() -> None:
    rig = Rig()
    _ready(rig)
    rig.send(OpenForLoading("ord-1"))
    step = rig.send(PositionReported(None))
    assert [c.lock for c in step.commands] == [True]
    assert rig.state() is S.LOCKED_EMPTY


def test_robot_leaving_with_the_door_open_is_an_alarm() -> None:
    rig = Rig()
    _ready(rig)
    rig.send(OpenForLoading("ord-1"))
    rig.send(DoorReported(closed=False))
    step = rig.send(PositionReported("junction"))
    assert step.commands == ()
    assert any(e.alarm for e in step.events)


def test_shop_can_reopen_a_loaded_compartment_to_take_the_goods_back() -> None:
    rig = Rig()
    _loaded(rig)
    assert rig.send(OpenForLoading("ord-1", requested_by="return")).accepted
    rig.send(DoorReported(closed=False))
    rig.send(DoorReported(closed=True))
    rig.send(OccupancyReported(Occupancy.EMPTY))
    assert rig.state() is S.LOCKED_EMPTY
    assert rig.send(ClearOrder("ord-1")).accepted


# --- recipient --------------------------------------------------------------------------------


def test_happy_path_from_loading_to_delivered_with_proof() -> None:
    rig = Rig()
    _loaded(rig)
    rig.send(PositionReported("junction"), dt=60)
    rig.send(PositionReported(DROPOFF), dt=60)
    unlock = rig.send(CredentialPresented("ord-1", Method.PIN, PIN))
    assert unlock.accepted
    assert [c.lock for c in unlock.commands] == [False]
    assert rig.state() is S.OPEN_FOR_RECIPIENT
    rig.send(DoorReported(closed=False), dt=5)
    assert rig.state() is S.DOOR_OPEN
    close = rig.send(DoorReported(closed=True), dt=10)
    assert [c.lock for c in close.commands] == [True]
    assert rig.state() is S.LOCKED_LOADED
    empty = rig.send(OccupancyReported(Occupancy.EMPTY, photo_ref="cam/ord-1/after.jpg"), dt=1)
    assert empty.proof is not None
    assert (empty.proof.order_id, empty.proof.delivered_at, empty.proof.waypoint,
            empty.proof.photo_ref) == ("ord-1", rig.now, DROPOFF, "cam/ord-1/after.jpg")
    assert rig.state() is S.LOCKED_EMPTY
    assert rig.machine.order is None
    assert rig.commands == [True, False, True, False, True]  # start, load, close, hand, close
    log = rig.machine.event_log
    assert [e.kind for e in log].count(EventKind.LOCK_COMMAND) == len(rig.commands)
    lid = [e.kind for e in log if e.kind in (EventKind.DOOR_OPENED, EventKind.DOOR_CLOSED)]
    assert lid == [EventKind.DOOR_CLOSED, EventKind.DOOR_OPENED, EventKind.DOOR_CLOSED,
                   EventKind.DOOR_OPENED, EventKind.DOOR_CLOSED]
    assert [e.at for e in log] == sorted(e.at for e in log)
    delivered = [e for e in log if e.kind is EventKind.DELIVERED]
    assert len(delivered) == 1
    assert delivered[0].order_id == "ord-1"


def test_credential_refusals_do_not_spend_the_credential() -> None:
    rig = Rig()
    verifier = rig.verifier
    assert isinstance(verifier, FakeVerifier)
    _ready(rig)
    no_goods = rig.send(CredentialPresented("ord-1", Method.PIN, PIN))
    assert no_goods.refusal is not None
    assert no_goods.refusal.code == "no_goods"
    rig.send(OpenForLoading("ord-1"))
    rig.send(DoorReported(closed=False))
    rig.send(DoorReported(closed=True))
    at_shop = rig.send(CredentialPresented("ord-1", Method.PIN, PIN))
    assert at_shop.refusal is not None
    assert at_shop.refusal.code == "not_at_dropoff"
    other = rig.send(CredentialPresented("ord-2", Method.PIN, PIN))
    assert other.refusal is not None
    assert other.refusal.code == "wrong_order"
    assert verifier.calls == 0
    assert rig.state() is S.LOCKED_LOADED
    rig.send(PositionReported(DROPOFF))
    wrong = rig.send(CredentialPresented("ord-1", Method.PIN, "000000"))
    assert wrong.refusal is not None
    assert wrong.refusal.code == "wrong_credential"
    assert wrong.verification is not None
    assert wrong.verification.attempts_left == 4
    assert wrong.commands == ()
    assert rig.state() is S.LOCKED_LOADED
    assert EventKind.CREDENTIAL_REJECTED in rig.events
    assert rig.send(CredentialPresented("ord-1", Method.PIN, PIN)).accepted
    again = rig.send(CredentialPresented("ord-1", Method.PIN, PIN))
    assert again.refusal is not None
    assert again.refusal.code == "already_open"


def test_goods_still_inside_after_close_relock_with_an_event() -> None:
    rig = Rig()
    _at_dropoff_unlocked(rig)
    rig.send(DoorReported(closed=False))
    rig.send(DoorReported(closed=True))
    step = rig.send(OccupancyReported(Occupancy.OCCUPIED))
    assert step.proof is None
    assert rig.state() is S.LOCKED_LOADED
    assert EventKind.GOODS_NOT_TAKEN in [e.kind for e in step.events]
    assert rig.machine.order is not None
    # The recipient may try again with the same code.
    assert rig.send(CredentialPresented("ord-1", Method.PIN, PIN)).accepted


def test_no_occupancy_verdict_keeps_the_goods_as_loaded() -> None:
    rig = Rig()
    _at_dropoff_unlocked(rig)
    rig.send(DoorReported(closed=False))
    rig.send(DoorReported(closed=True))
    rig.send(Tick(), dt=10)
    assert EventKind.OCCUPANCY_UNKNOWN in rig.events
    assert rig.state() is S.LOCKED_LOADED
    late = rig.send(OccupancyReported(Occupancy.EMPTY))  # too late to count as a handover
    assert late.proof is None
    assert EventKind.OCCUPANCY_MISMATCH in [e.kind for e in late.events]


def test_no_show_relocks_and_counts() -> None:
    rig = Rig()
    _at_dropoff_unlocked(rig)
    assert rig.send(Tick(), dt=59.9).commands == ()
    step = rig.send(Tick(), dt=0.1)
    assert [c.lock for c in step.commands] == [True]
    assert rig.state() is S.LOCKED_LOADED
    assert rig.machine.no_shows == 1
    assert EventKind.NO_SHOW_RELOCK in [e.kind for e in step.events]
    assert rig.send(CredentialPresented("ord-1", Method.PIN, PIN)).accepted  # rearmed


def test_robot_leaving_the_dropoff_relocks() -> None:
    rig = Rig()
    _at_dropoff_unlocked(rig)
    step = rig.send(PositionReported(SHOP))
    assert [c.lock for c in step.commands] == [True]
    assert rig.state() is S.LOCKED_LOADED


# --- tamper and faults ------------------------------------------------------------------------


def test_door_opened_without_unlock_is_tamper_and_needs_an_operator() -> None:
    rig = Rig()
    _loaded(rig)
    step = rig.send(DoorReported(closed=False))
    assert rig.state() is S.FAULT
    assert rig.machine.snapshot().tamper
    assert step.commands == ()  # never lock into an open door
    assert [e.kind for e in step.events if e.alarm] == [EventKind.TAMPER]
    blocked = rig.send(CredentialPresented("ord-1", Method.PIN, PIN))
    assert blocked.refusal is not None
    assert blocked.refusal.code == "fault"
    assert _code(rig.send(OperatorReset("op"))) == "door_not_closed"
    closed = rig.send(DoorReported(closed=True))
    assert [c.lock for c in closed.commands] == [True]
    assert rig.send(OperatorReset("op")).accepted
    assert rig.state() is S.LOCKED_LOADED
    assert not rig.machine.snapshot().tamper
    assert _code(rig.send(OperatorReset("op"))) == "not_in_fault"


def test_door_open_at_start_up_is_a_fault() -> None:
    rig = Rig()
    rig.send(DoorReported(closed=False))
    assert rig.state() is S.FAULT
    assert "start-up" in rig.machine.snapshot().fault_reason


def test_lock_fault_from_the_base_is_a_fault_and_keeps_locking() -> None:
    rig = Rig()
    _loaded(rig)
    rig.auto_ack = False  # the broken bolt keeps reporting a fault
    step = rig.send(LockReported(LockState.FAULT))
    assert rig.state() is S.FAULT
    assert not rig.machine.snapshot().tamper
    assert [e.kind for e in step.events if e.alarm] == [EventKind.LOCK_FAULT]
    assert [c.lock for c in step.commands] == [True]
    repeat = rig.machine.handle(LockReported(LockState.FAULT), rig.now + 1)
    assert repeat.events == ()
    assert repeat.commands == ()
    reset = rig.machine.handle(OperatorReset("op"), rig.now + 2)
    assert reset.refusal is not None
    assert reset.refusal.code == "lock_not_confirmed"


def test_bolt_released_without_a_command_is_tamper() -> None:
    rig = Rig()
    _loaded(rig)
    rig.send(LockReported(LockState.UNLOCKED))
    assert rig.state() is S.FAULT
    assert rig.machine.snapshot().tamper


def test_unconfirmed_lock_command_is_a_lock_fault() -> None:
    rig = Rig(auto_ack=False)
    rig.send(DoorReported(closed=True))
    rig.send(LockReported(LockState.UNLOCKED), dt=1)  # still travelling
    assert rig.state() is S.LOCKED_EMPTY
    rig.send(Tick(), dt=2)
    assert rig.state() is S.FAULT
    assert EventKind.LOCK_FAULT in rig.events


def test_bad_hardware_input_is_recorded_and_never_raises() -> None:
    rig = Rig()
    _loaded(rig)
    for event in (LockReported(42), OccupancyReported(-3), LockReported("x")):  # type: ignore[arg-type]
        rig.send(event)
    rig.machine.handle("garbage", rig.now)  # type: ignore[arg-type]
    rig.machine.handle(Tick(), math.nan)
    rig.machine.handle(Tick(), rig.now - 50)
    assert rig.state() is S.LOCKED_LOADED
    kinds = [e.kind for e in rig.machine.event_log]
    assert kinds.count(EventKind.BAD_INPUT) == 5
    assert EventKind.CLOCK_WENT_BACK in kinds


@pytest.mark.parametrize("state", [S.OPEN_FOR_LOADING, S.OPEN_FOR_RECIPIENT, S.DOOR_OPEN])
def test_restart_mid_handoff_keeps_the_goods_locked(state: HandoffState) -> None:
    rig = Rig(state=state, order=OrderInfo("ord-1", SHOP, DROPOFF))
    assert rig.state() is S.LOCKED_LOADED
    step = rig.send(DoorReported(closed=True))
    assert [c.lock for c in step.commands] == [True]
    rig.send(PositionReported(DROPOFF))
    rig.send(Tick(), dt=CONFIG.recipient_open_timeout_s * 2)
    assert rig.commands == [True]
    assert rig.state() is S.LOCKED_LOADED


def test_snapshot_reports_what_compartment_state_publishes() -> None:
    rig = Rig()
    _loaded(rig)
    snap = rig.machine.snapshot()
    assert (snap.handoff_state, snap.lock_state, snap.door_closed, snap.occupancy, snap.tamper,
            snap.order_id) == (S.LOCKED_LOADED, LockState.LOCKED, True, Occupancy.OCCUPIED,
                               False, "ord-1")


def test_lockout_through_real_credentials_alerts_and_recovers() -> None:
    book = HandoffCredentials(CredentialPolicy(secret_key=b"k" * 32, lockout_s=300.0,
                                               pin_hash_cost=ScryptParams(log2_n=4, r=1, p=1)))
    rig = Rig(verifier=book)
    issued = book.issue("ord-1", now=rig.now)
    _loaded(rig)
    rig.send(PositionReported(DROPOFF))
    wrong = f"{(int(issued.pin) + 1) % 10**6:06d}"
    steps = [rig.send(CredentialPresented("ord-1", Method.PIN, wrong)) for _ in range(5)]
    assert [s.refusal.code for s in steps if s.refusal] == ["wrong_credential"] * 4 + [
        "locked_out"]
    assert [e.kind for e in steps[-1].events if e.alarm] == [EventKind.CREDENTIAL_LOCKOUT]
    during = rig.send(CredentialPresented("ord-1", Method.QR, issued.qr_token), dt=100)
    assert during.verification is not None
    assert during.verification.lockout_remaining_s > 0
    assert rig.commands.count(False) == 1  # only the loading unlock
    after = rig.send(CredentialPresented("ord-1", Method.QR, issued.qr_token), dt=200)
    assert after.accepted
    assert rig.state() is S.OPEN_FOR_RECIPIENT


@pytest.mark.ros
def test_enums_match_compartment_state_constants() -> None:
    from delivery_interfaces.msg import CompartmentState

    for prefix, enum in (("HANDOFF_", HandoffState), ("LOCK_", LockState),
                         ("OCCUPANCY_", Occupancy)):
        wire = {name.removeprefix(prefix): value for name, value in vars(CompartmentState).items()
                if name.startswith(prefix)}
        assert wire == {member.name: member.value for member in enum}, prefix


# --- random sequences -------------------------------------------------------------------------

ORDERS = st.sampled_from(["ord-1", "ord-2"])
INPUTS = st.one_of(
    st.builds(DoorReported, st.booleans()),
    st.just("ack"),  # the base confirms the last lock command
    st.builds(LockReported, st.integers(-1, 4)),
    st.builds(OccupancyReported, st.integers(-1, 3), st.just("photo")),
    st.builds(PositionReported, st.sampled_from([SHOP, DROPOFF, "junction", None])),
    st.builds(AssignOrder, ORDERS, st.just(SHOP), st.just(DROPOFF)),
    st.builds(ClearOrder, ORDERS),
    st.builds(OpenForLoading, ORDERS),
    st.builds(CredentialPresented, ORDERS, st.integers(0, 2), st.sampled_from([PIN, "000000"])),
    st.builds(OperatorReset, st.just("op")),
    st.just(Tick()),
)
DELAYS = st.sampled_from([0.0, 0.1, 1.0, 4.0, 30.0, 61.0, 200.0])
AWAITING_OPEN = {S.OPEN_FOR_LOADING: CONFIG.loading_open_timeout_s,
                 S.OPEN_FOR_RECIPIENT: CONFIG.recipient_open_timeout_s}


@settings(max_examples=250, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(INPUTS, DELAYS), max_size=40))
def test_random_inputs_never_raise_nor_leave_a_closed_door_unlocked(
        sequence: list[tuple[HandoffInput | str, float]]) -> None:
    verifier = FakeVerifier()
    machine = CompartmentHandoff(verifier, CONFIG, now=0.0)
    now, waypoint = 0.0, None
    door: bool | None = None
    last_lock: bool | None = None
    unlocked_at, opened_since_unlock = 0.0, False
    granted: set[str] = set()
    for item, delay in sequence:
        now += delay
        event: HandoffInput
        if item == "ack":
            event = Tick() if last_lock is None else LockReported(
                LockState.LOCKED if last_lock else LockState.UNLOCKED)
        else:
            assert not isinstance(item, str)
            event = item
        order, door_before = machine.order, door
        step = machine.handle(event, now)
        if isinstance(event, DoorReported):
            door = event.closed
            opened_since_unlock = opened_since_unlock or not event.closed
        if isinstance(event, PositionReported):
            waypoint = event.waypoint
        if isinstance(event, CredentialPresented) and step.verification is not None and (
                step.verification.granted):
            granted.add(event.order_id)
        for command in step.commands:
            if command.lock:
                # Timeouts fire before the input of the same call, with the door as known then.
                assert door is True or door_before is True, "locked into an open door"
            else:
                # Unlocks only for loading at the shop or a granted credential at the dropoff.
                assert order is not None
                assert step.accepted
                assert (isinstance(event, OpenForLoading) and waypoint == order.shop_waypoint
                        ) or (isinstance(event, CredentialPresented)
                              and waypoint == order.dropoff_waypoint)
                unlocked_at, opened_since_unlock = now, False
            last_lock = command.lock
        locks = sum(1 for e in step.events if e.kind is EventKind.LOCK_COMMAND)
        assert locks == len(step.commands), "every lock command is in the event log"
        if door is True and last_lock is not True:
            # Unlocked behind a closed door only while waiting for the person, within the time.
            assert machine.state in AWAITING_OPEN, machine.state
            assert not opened_since_unlock
            assert now - unlocked_at < AWAITING_OPEN[machine.state]
        if machine.state is S.DOOR_OPEN:
            assert door is False
        if step.proof is not None:
            assert step.proof.order_id in granted, "delivered without a credential"

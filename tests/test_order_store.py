"""The order store: durable transitions, refusals that write nothing, idempotency, crashes."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from delivery_robot.credentials import ScryptParams
from delivery_robot.handoff_credentials import (
    CredentialPolicy,
    HandoffCredentials,
    IssuedCredentials,
    Method,
)
from delivery_robot.order_intake import AcceptedOrder, SizeClass
from delivery_robot.order_lifecycle import IllegalTransition, OrderState
from delivery_robot.order_store import (
    IdempotencyConflict,
    OrderEvent,
    OrderNotFound,
    OrderStore,
    OrderStoreError,
    StoredOrder,
    SubmitOutcome,
    TransitionArgumentError,
)

S = OrderState
SRC = Path(__file__).resolve().parents[1] / "src"
CHEAP = ScryptParams(log2_n=1, r=1, p=1)  # real PIN hashing costs ~0.1 s; tests need none
POLICY = CredentialPolicy(secret_key=b"k" * 32, pin_hash_cost=CHEAP, token_hash_cost=CHEAP)
ROBOT = {"robot_id": "robot1", "mission_id": "m1"}

HAPPY_PATH: list[tuple[OrderState, dict[str, str]]] = [
    (S.ASSIGNED, ROBOT),
    (S.TO_PICKUP, {}),
    (S.AWAITING_LOAD, {}),
    (S.IN_TRANSIT, {}),
    (S.AWAITING_RECIPIENT, {}),
    (S.DELIVERED, {}),
]


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def counting_ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"ord_{next(counter):04d}"


def accepted(
    shop_id: str = "bakery",
    dropoff: str = "gate_a",
    size: SizeClass = SizeClass.SMALL,
    weight_kg: float = 1.5,
    note: str = "",
    key: str = "",
) -> AcceptedOrder:
    return AcceptedOrder(
        shop_id=shop_id,
        pickup_waypoint=f"{shop_id}_door",
        dropoff_waypoint=dropoff,
        size=size,
        weight_kg=weight_kg,
        note=note,
        idempotency_key=key,
    )


def submit(
    store: OrderStore, order: AcceptedOrder | None = None, now: float = 1_000.0
) -> tuple[SubmitOutcome, IssuedCredentials]:
    """What the coordinator does: an id, credentials for it, then one store transaction."""
    order_id = store.new_order_id()
    book = HandoffCredentials(POLICY)
    issued = book.issue(order_id, now)
    record = book.record(order_id)
    assert record is not None
    return store.submit(order or accepted(), order_id=order_id, credentials=record), issued


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "orders.sqlite3"


@pytest.fixture
def store(db_path: Path, clock: FakeClock) -> Iterator[OrderStore]:
    with OrderStore(db_path, clock=clock, new_order_id=counting_ids()) as opened:
        yield opened


def reopen(db_path: Path) -> OrderStore:
    return OrderStore(db_path, clock=FakeClock(9e9))


def test_submit_creates_a_requested_order_with_event_sequence_1(
    store: OrderStore, clock: FakeClock
) -> None:
    outcome, _ = submit(store, accepted(note="ring twice", weight_kg=2.0))

    assert outcome.created
    order = outcome.order
    assert (order.order_id, order.state, order.sequence) == ("ord_0001", S.REQUESTED, 1)
    assert (order.note, order.weight_kg, order.pickup_waypoint) == (
        "ring twice",
        2.0,
        "bakery_door",
    )
    assert order.robot_id is None
    assert order.mission_id is None
    assert outcome.event == OrderEvent(
        order_id="ord_0001",
        shop_id="bakery",
        sequence=1,
        previous_state=S.REQUESTED,
        state=S.REQUESTED,
        reason="",
        robot_id=None,
        mission_id=None,
        at=clock.now,
    )
    assert store.history(order.order_id) == [outcome.event]


def test_every_transition_is_on_disk_when_the_call_returns(
    store: OrderStore, db_path: Path, clock: FakeClock
) -> None:
    outcome, _ = submit(store)
    order_id = outcome.order.order_id
    events = [outcome.event]
    for sequence, (state, details) in enumerate(HAPPY_PATH, start=2):
        clock.advance(10.0)
        result = store.transition(order_id, state, **details)
        events.append(result.event)
        assert result.event.sequence == sequence
        assert result.event.at == clock.now
        # A second connection sees the change at once: it was committed before returning.
        with reopen(db_path) as other:
            seen = other.get(order_id)
            assert (seen.state, seen.sequence, seen.updated_at) == (state, sequence, clock.now)
            assert other.history(order_id) == events

    with reopen(db_path) as after:
        history = after.history(order_id)
        assert [e.state for e in history] == [S.REQUESTED] + [s for s, _ in HAPPY_PATH]
        assert [e.previous_state for e in history[1:]] == [e.state for e in history[:-1]]
        final = after.get(order_id)
        assert (final.state, final.robot_id, final.mission_id) == (S.DELIVERED, "robot1", "m1")


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        ([], S.DELIVERED),
        ([], S.IN_TRANSIT),
        ([(S.ASSIGNED, ROBOT)], S.AWAITING_LOAD),
        (
            [(S.ASSIGNED, ROBOT), (S.TO_PICKUP, {}), (S.AWAITING_LOAD, {}), (S.IN_TRANSIT, {})],
            S.REQUESTED,
        ),  # goods on board: never silently put back in the queue
        (HAPPY_PATH, S.CANCELLED),
    ],
    ids=[
        "requested->delivered",
        "requested->in_transit",
        "assigned->awaiting_load",
        "in_transit->requested",
        "delivered->cancelled",
    ],
)
def test_illegal_transition_is_refused_and_writes_nothing(
    store: OrderStore,
    db_path: Path,
    path: list[tuple[OrderState, dict[str, str]]],
    wanted: OrderState,
) -> None:
    order_id = submit(store)[0].order.order_id
    for state, details in path:
        store.transition(order_id, state, **details)
    before, history = store.get(order_id), store.history(order_id)

    with pytest.raises(IllegalTransition) as refused:
        store.transition(order_id, wanted, reason="because")

    assert f"{before.state.label} -> {wanted.label}" in str(refused.value)
    assert "allowed:" in str(refused.value)
    with reopen(db_path) as other:
        assert other.get(order_id) == before
        assert other.history(order_id) == history


@pytest.mark.parametrize(
    ("state", "details", "needs"),
    [
        (S.ASSIGNED, {}, "robot_id and mission_id"),
        (S.ASSIGNED, {"robot_id": "robot1"}, "robot_id and mission_id"),
        (S.CANCELLED, {}, "needs a reason"),
        (S.FAILED, {"reason": "  "}, "needs a reason"),
        (S.CANCELLED, {"reason": "shop asked", "robot_id": "robot1"}, "only by a transition"),
    ],
)
def test_transition_with_missing_details_is_refused_and_writes_nothing(
    store: OrderStore, state: OrderState, details: dict[str, str], needs: str
) -> None:
    order_id = submit(store)[0].order.order_id
    before = store.get(order_id)

    with pytest.raises(TransitionArgumentError, match=needs):
        store.transition(order_id, state, **details)

    assert store.get(order_id) == before
    assert len(store.history(order_id)) == 1
    assert store.assignments(order_id) == []


def test_unknown_order_is_reported_with_its_code(store: OrderStore) -> None:
    with pytest.raises(OrderNotFound, match="ord_nope") as missing:
        store.transition("ord_nope", S.CANCELLED, reason="x")
    assert missing.value.code == "unknown_order"
    assert store.find("ord_nope") is None


def test_cancel_and_fail_keep_their_reason(store: OrderStore) -> None:
    first = submit(store)[0].order.order_id
    second = submit(store)[0].order.order_id

    store.transition(first, S.CANCELLED, reason="shop cancelled")
    store.transition(second, S.FAILED, reason="no route")

    assert store.get(first).reason == "shop cancelled"
    assert store.history(second)[-1].reason == "no route"


def test_retry_with_the_same_key_returns_the_same_order(store: OrderStore, db_path: Path) -> None:
    first, issued = submit(store, accepted(key="k-1", note="hi"))
    again, _ = submit(store, accepted(key="k-1", note="hi"))

    assert first.created
    assert not again.created
    assert again.event is None
    assert again.order == first.order
    assert [o.order_id for o in store.orders_by_shop("bakery")] == [first.order.order_id]
    # The first credentials stay the valid ones: the retry's were never stored.
    book = HandoffCredentials(POLICY, store.open_order_credentials())
    granted = book.verify(first.order.order_id, Method.PIN, issued.pin, now=1_001.0)
    assert granted.granted
    with reopen(db_path) as other:
        replay = other.find_by_idempotency_key("bakery", "k-1")
        assert replay is not None
        assert replay.order_id == first.order.order_id


def test_retry_across_float32_transport_is_still_the_same_order(store: OrderStore) -> None:
    first, _ = submit(store, accepted(key="k-1", weight_kg=1.1))
    as_float32 = 1.100000023841858  # 1.1 after a ROS float32 field

    again, _ = submit(store, accepted(key="k-1", weight_kg=as_float32))

    assert again.order.order_id == first.order.order_id


def test_idempotency_keys_belong_to_one_shop(store: OrderStore) -> None:
    bakery, _ = submit(store, accepted(shop_id="bakery", key="k-1"))
    florist, _ = submit(store, accepted(shop_id="florist", key="k-1"))

    assert florist.created
    assert florist.order.order_id != bakery.order.order_id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dropoff": "gate_b"}, "dropoff_waypoint"),
        ({"size": SizeClass.LARGE}, "size"),
        ({"weight_kg": 2.5}, "weight_kg"),
        ({"note": "other"}, "note"),
    ],
)
def test_same_key_with_different_content_is_a_conflict_and_writes_nothing(
    store: OrderStore, change: dict[str, object], field: str
) -> None:
    first, _ = submit(store, accepted(key="k-1"))
    args: dict[str, object] = {"key": "k-1", **change}

    with pytest.raises(IdempotencyConflict, match=field) as conflict:
        submit(store, accepted(**args))  # type: ignore[arg-type]

    assert conflict.value.code == "idempotency_conflict"
    assert first.order.order_id in str(conflict.value)
    assert store.orders_by_shop("bakery") == [first.order]


def test_credentials_issued_for_another_order_are_refused(store: OrderStore) -> None:
    book = HandoffCredentials(POLICY)
    book.issue("ord_other", 1_000.0)
    record = book.record("ord_other")
    assert record is not None

    with pytest.raises(ValueError, match="ord_other"):
        store.submit(accepted(), order_id=store.new_order_id(), credentials=record)
    assert store.open_orders() == []


def test_reassignment_keeps_the_assignment_history(store: OrderStore, clock: FakeClock) -> None:
    order_id = submit(store)[0].order.order_id
    store.transition(order_id, S.ASSIGNED, robot_id="robot1", mission_id="m1")
    store.transition(order_id, S.TO_PICKUP)
    clock.advance(30.0)
    back = store.transition(order_id, S.REQUESTED, reason="robot1 offline")
    assert (back.order.robot_id, back.order.mission_id) == (None, None)
    clock.advance(5.0)
    store.transition(order_id, S.ASSIGNED, robot_id="robot2", mission_id="m7")

    first, second = store.assignments(order_id)
    assert (first.robot_id, first.mission_id, first.released_at) == ("robot1", "m1", 1_030.0)
    assert first.release_reason == "robot1 offline"
    assert (second.robot_id, second.mission_id, second.released_at) == ("robot2", "m7", None)
    assert store.orders_by_robot("robot1") == []
    assert [o.order_id for o in store.orders_by_robot("robot2")] == [order_id]
    assert [o.order_id for o in store.orders_by_mission("m7")] == [order_id]


def test_queries_by_state_shop_robot_and_open(store: OrderStore, clock: FakeClock) -> None:
    ids = []
    for shop_id in ("bakery", "florist", "bakery", "bakery"):
        clock.advance(1.0)
        ids.append(submit(store, accepted(shop_id=shop_id))[0].order.order_id)
    a, b, c, d = ids
    store.transition(a, S.ASSIGNED, robot_id="robot1", mission_id="m1")
    store.transition(b, S.ASSIGNED, robot_id="robot1", mission_id="m2")
    store.transition(c, S.CANCELLED, reason="shop cancelled")
    for state, details in HAPPY_PATH[1:]:
        store.transition(a, state, **details)

    def order_ids(orders: list[StoredOrder]) -> list[str]:
        return [o.order_id for o in orders]

    assert order_ids(store.open_orders()) == [b, d]
    assert order_ids(store.orders_by_state(S.REQUESTED)) == [d]
    assert order_ids(store.orders_by_state(S.DELIVERED)) == [a]
    assert order_ids(store.orders_by_shop("bakery")) == [a, c, d]
    assert order_ids(store.orders_by_shop("bakery", S.CANCELLED)) == [c]
    assert order_ids(store.orders_by_robot("robot1")) == [b]
    assert order_ids(store.orders_by_robot("robot1", include_closed=True)) == [a, b]
    # Delivered and cancelled orders have closed assignments; the open one stays active.
    assert store.assignments(a)[-1].release_reason == "delivered"
    assert store.assignments(b)[-1].released_at is None


def test_credentials_are_kept_only_as_salted_hashes(store: OrderStore, db_path: Path) -> None:
    outcome, issued = submit(store)
    order_id = outcome.order.order_id
    store.transition(order_id, S.ASSIGNED, robot_id="robot1", mission_id="m1")

    on_disk = b"".join(
        path.read_bytes() for path in db_path.parent.iterdir() if path.name.startswith("orders")
    )
    assert issued.pin.encode() not in on_disk
    assert issued.qr_token.encode() not in on_disk
    stored = store.credentials(order_id)
    assert stored.pin_hash.encoded.startswith("scrypt$")
    assert stored.qr_hash.encoded.startswith("scrypt$")


def test_handoff_counters_survive_a_reopen(store: OrderStore, db_path: Path) -> None:
    outcome, issued = submit(store)
    order_id = outcome.order.order_id
    book = HandoffCredentials(POLICY, store.open_order_credentials())
    for _ in range(2):
        assert not book.verify(order_id, Method.PIN, "000000", now=1_001.0).granted
    record = book.record(order_id)
    assert record is not None
    store.save_credentials(record)

    with reopen(db_path) as other:
        restored = HandoffCredentials(POLICY, other.open_order_credentials())
        assert other.credentials(order_id).failed_attempts == 2
        wrong_pin = "000000" if issued.pin != "000000" else "111111"
        result = restored.verify(order_id, Method.PIN, wrong_pin, now=1_002.0)
        assert result.attempts_left == POLICY.max_attempts - 3
        assert restored.verify(order_id, Method.QR, issued.qr_token, now=1_003.0).granted


def test_transition_log_is_append_only(store: OrderStore, db_path: Path) -> None:
    order_id = submit(store)[0].order.order_id
    raw = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE order_transitions SET to_state = 6 WHERE order_id = ?", (order_id,))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM order_transitions")
    finally:
        raw.close()
    assert len(store.history(order_id)) == 1


def test_durability_settings(store: OrderStore) -> None:
    conn = store._conn  # the contract is about this very connection's settings
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_newer_schema_is_not_touched(db_path: Path) -> None:
    OrderStore(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()

    with pytest.raises(RuntimeError, match="schema version 99"):
        OrderStore(db_path)


def test_threads_sharing_a_store_never_duplicate_an_order(store: OrderStore) -> None:
    results: list[list[str]] = [[] for _ in range(4)]

    def worker(slot: int) -> None:
        for n in range(8):
            outcome, _ = submit(store, accepted(key=f"k-{n}"))
            results[slot].append(outcome.order.order_id)

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(ids == results[0] for ids in results)
    assert len(store.orders_by_shop("bakery")) == 8


# -- crash safety: a real process killed with SIGKILL -------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from delivery_robot.credentials import ScryptParams
    from delivery_robot.handoff_credentials import CredentialPolicy, HandoffCredentials
    from delivery_robot.order_intake import AcceptedOrder, SizeClass
    from delivery_robot.order_lifecycle import OrderState
    from delivery_robot.order_store import OrderStore

    path, phase = sys.argv[1], sys.argv[2]
    cheap = ScryptParams(log2_n=1, r=1, p=1)
    book = HandoffCredentials(
        CredentialPolicy(secret_key=b"k" * 32, pin_hash_cost=cheap, token_hash_cost=cheap))
    store = OrderStore(path)

    def kill_at_commit(statement):
        if statement.startswith("COMMIT"):
            os.kill(os.getpid(), signal.SIGKILL)

    def submit():
        order_id = store.new_order_id()
        book.issue(order_id, 1000.0)
        order = AcceptedOrder("bakery", "bakery_door", "gate_a", SizeClass.SMALL, 1.0, "", "k-1")
        return store.submit(order, order_id=order_id, credentials=book.record(order_id))

    if phase == "submit-before-commit":
        store._conn.set_trace_callback(kill_at_commit)
        submit()
    order_id = submit().order.order_id
    print(order_id, flush=True)
    if phase == "transition-before-commit":
        store._conn.set_trace_callback(kill_at_commit)
    store.transition(order_id, OrderState.ASSIGNED, robot_id="robot1", mission_id="m1")
    os.kill(os.getpid(), signal.SIGKILL)  # right after the method returned
    """
)


def run_killed_child(db_path: Path, phase: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db_path), phase],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    return child.stdout.strip()


def test_transition_survives_sigkill_right_after_the_call_returns(db_path: Path) -> None:
    order_id = run_killed_child(db_path, "after-return")

    with reopen(db_path) as store:
        order = store.get(order_id)
        assert (order.state, order.robot_id, order.sequence) == (S.ASSIGNED, "robot1", 2)
        assert [e.state for e in store.history(order_id)] == [S.REQUESTED, S.ASSIGNED]
        assert store.assignments(order_id)[0].released_at is None
        assert store.credentials(order_id).order_id == order_id


def test_sigkill_before_a_transition_commits_leaves_the_previous_state(db_path: Path) -> None:
    order_id = run_killed_child(db_path, "transition-before-commit")

    with reopen(db_path) as store:
        order = store.get(order_id)
        assert (order.state, order.robot_id, order.sequence) == (S.REQUESTED, None, 1)
        assert len(store.history(order_id)) == 1
        assert store.assignments(order_id) == []


def test_sigkill_before_a_submit_commits_leaves_no_trace(db_path: Path) -> None:
    assert run_killed_child(db_path, "submit-before-commit") == ""

    with reopen(db_path) as store:
        assert store.open_orders() == []
        assert store.find_by_idempotency_key("bakery", "k-1") is None
        assert store.open_order_credentials() == []


def test_store_refuses_an_order_id_in_use(store: OrderStore) -> None:
    outcome, _ = submit(store)
    book = HandoffCredentials(POLICY)
    book.issue(outcome.order.order_id, 1_000.0)
    record = book.record(outcome.order.order_id)
    assert record is not None

    with pytest.raises(OrderStoreError, match="already in use"):
        store.submit(accepted(), order_id=outcome.order.order_id, credentials=record)

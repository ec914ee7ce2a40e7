"""Restart mid-handoff (issue 7): the compartment's memory saved by `handoff_store` and restored
into `CompartmentHandoff`, then reconciled with the first door and bolt reports."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from delivery_robot.compartment_handoff import (
    CompartmentHandoff,
    CompartmentMemory,
    CredentialPresented,
    DoorReported,
    EventKind,
    HandoffConfig,
    HandoffState,
    LockReported,
    LockState,
    Occupancy,
    OccupancyReported,
    OrderInfo,
    PositionReported,
)
from delivery_robot.credentials import ScryptParams
from delivery_robot.handoff_credentials import (
    CredentialPolicy,
    HandoffCredentials,
    Method,
    VerifyError,
)
from delivery_robot.handoff_store import (
    HandoffStore,
    HandoffStoreError,
    SavedHandoff,
    saved_from_json,
    saved_to_json,
)

S = HandoffState
ORDER = OrderInfo("order-7", "bakery", "apt_101")
CONFIG = HandoffConfig()
POLICY = CredentialPolicy(secret_key=b"k" * 32, pin_hash_cost=ScryptParams(log2_n=4),
                          max_attempts=5, lockout_s=300.0)


class RecordingVerifier:
    def __init__(self) -> None:
        self.rearmed: list[str] = []

    def verify(self, order_id: str, method: int, credential: str, now: float):  # type: ignore[no-untyped-def]
        raise AssertionError("no credential is verified in these tests")

    def rearm(self, order_id: str) -> bool:
        self.rearmed.append(order_id)
        return True


# What each saved state is after a restart with the door closed and the bolt locked.
AFTER_RESTART = {
    S.LOCKED_EMPTY: S.LOCKED_EMPTY,
    S.OPEN_FOR_LOADING: S.LOCKED_LOADED,  # goods may have gone in: keep them locked
    S.LOCKED_LOADED: S.LOCKED_LOADED,
    S.OPEN_FOR_RECIPIENT: S.LOCKED_LOADED,
    S.DOOR_OPEN: S.LOCKED_LOADED,  # nobody saw the goods taken
    S.FAULT: S.FAULT,
}


def restored(state: HandoffState, verifier: RecordingVerifier | None = None,
             **memory: object) -> CompartmentHandoff:
    return CompartmentHandoff(verifier or RecordingVerifier(), CONFIG, now=50.0,
                              memory=CompartmentMemory(state, ORDER, **memory))  # type: ignore[arg-type]


@pytest.mark.parametrize("saved", list(S))
def test_each_saved_state_restarts_locked_with_a_closed_door(saved: HandoffState) -> None:
    machine = restored(saved)
    assert machine.state is AFTER_RESTART[saved]
    assert machine.order == ORDER
    first = machine.handle(DoorReported(True), 51.0)
    assert [c.lock for c in first.commands] == [True]  # the closed door is locked at once
    machine.handle(LockReported(LockState.LOCKED), 51.1)
    assert machine.state is AFTER_RESTART[saved]
    assert machine.snapshot().order_id == ORDER.order_id
    machine.handle(PositionReported(ORDER.dropoff_waypoint), 52.0)
    assert machine.state is AFTER_RESTART[saved]  # nothing opens by itself


@pytest.mark.parametrize("saved", list(S))
def test_door_found_open_at_restart_is_tamper(saved: HandoffState) -> None:
    machine = restored(saved)
    step = machine.handle(DoorReported(False), 51.0)
    assert machine.state is S.FAULT
    assert machine.snapshot().tamper
    assert EventKind.TAMPER in [e.kind for e in step.events]
    assert not any(c.lock for c in step.commands)  # never throw the bolt into an open door


def test_bolt_found_unlocked_with_goods_is_locked() -> None:
    machine = restored(S.LOCKED_LOADED)
    # The bolt report comes before the door's: nothing is commanded into an unknown door.
    assert machine.handle(LockReported(LockState.UNLOCKED), 51.0).commands == ()
    step = machine.handle(DoorReported(True), 51.1)
    assert [c.lock for c in step.commands] == [True]
    machine.handle(LockReported(LockState.LOCKED), 51.2)
    assert machine.state is S.LOCKED_LOADED


@pytest.mark.parametrize("saved", [S.OPEN_FOR_RECIPIENT, S.DOOR_OPEN])
def test_interrupted_recipient_handover_rearms_the_credential(saved: HandoffState) -> None:
    verifier = RecordingVerifier()
    restored(saved, verifier)
    assert verifier.rearmed == [ORDER.order_id]


@pytest.mark.parametrize("saved", [S.LOCKED_EMPTY, S.OPEN_FOR_LOADING, S.LOCKED_LOADED])
def test_other_states_do_not_rearm(saved: HandoffState) -> None:
    verifier = RecordingVerifier()
    restored(saved, verifier)
    assert verifier.rearmed == []


def test_fault_reason_tamper_and_no_shows_survive() -> None:
    machine = restored(S.FAULT, tamper=True, fault_reason="door opened without an unlock",
                       no_shows=2)
    assert machine.snapshot().tamper
    assert machine.snapshot().fault_reason == "door opened without an unlock"
    assert machine.no_shows == 2
    assert machine.memory() == CompartmentMemory(S.FAULT, ORDER, 2, True,
                                                 "door opened without an unlock")


def test_memory_follows_the_machine() -> None:
    machine = CompartmentHandoff(RecordingVerifier(), CONFIG, now=0.0)
    assert machine.memory() == CompartmentMemory(S.LOCKED_EMPTY)
    machine.handle(DoorReported(True), 1.0)
    machine.handle(LockReported(LockState.LOCKED), 1.1)
    machine.handle(OccupancyReported(Occupancy.EMPTY), 1.2)
    assert machine.memory().state is S.LOCKED_EMPTY


# ---- the store ---------------------------------------------------------------------------------


def book_with_history() -> tuple[HandoffCredentials, str]:
    """A book whose order had two wrong PINs and then a granted one (used once)."""
    book = HandoffCredentials(POLICY)
    issued = book.issue(ORDER.order_id, 100.0)
    wrong = "000000" if issued.pin != "000000" else "111111"
    book.verify(ORDER.order_id, Method.PIN, wrong, 101.0)
    book.verify(ORDER.order_id, Method.PIN, wrong, 102.0)
    return book, issued.pin


def test_store_round_trip_keeps_counters_and_used_flags(tmp_path: Path) -> None:
    book, pin = book_with_history()
    path = tmp_path / "robot1_handoff.db"
    store = HandoffStore(path)
    assert store.load() is None
    saved = SavedHandoff(CompartmentMemory(S.LOCKED_LOADED, ORDER, 1),
                         {ORDER.order_id: (ORDER.shop_waypoint, ORDER.dropoff_waypoint)},
                         tuple(book.records()), frozenset())
    store.save(saved, 103.0)
    store.close()

    again = HandoffStore(path)
    loaded = again.load()
    assert loaded == saved
    restored_book = HandoffCredentials(POLICY)
    for record in loaded.credentials:
        restored_book.add(record)
    status = restored_book.status(ORDER.order_id, 104.0)
    assert status is not None
    assert status.attempts_left == 3
    assert restored_book.verify(ORDER.order_id, Method.PIN, pin, 105.0).granted
    # The used flag is saved too: after another restart the same PIN is refused.
    again.save(SavedHandoff(saved.compartment, saved.routes, tuple(restored_book.records())),
               106.0)
    again.close()
    third = HandoffStore(path).load()
    assert third is not None
    book3 = HandoffCredentials(POLICY)
    for record in third.credentials:
        book3.add(record)
    replay = book3.verify(ORDER.order_id, Method.PIN, pin, 107.0)
    assert (replay.granted, replay.error_code) == (False, VerifyError.ALREADY_USED)


def test_store_is_wal_with_full_sync(tmp_path: Path) -> None:
    store = HandoffStore(tmp_path / "s.db")
    store.save(SavedHandoff(CompartmentMemory(S.LOCKED_EMPTY)), 1.0)
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_unreadable_content_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    HandoffStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO handoff (id, memory, saved_at) VALUES (1, '{\"v\": 1}', 0)")
    with pytest.raises(HandoffStoreError, match="s.db"):
        HandoffStore(path).load()


@pytest.mark.parametrize("text", ["[]", "{", '{"v": 2}', '{"v": 1, "state": 9}'])
def test_bad_saved_text_raises_store_error_only(text: str) -> None:
    with pytest.raises(HandoffStoreError):
        saved_from_json(text)


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HandoffStoreError, match="junk.db"):
        HandoffStore(path).load()


def test_json_round_trip_of_a_fault() -> None:
    saved = SavedHandoff(CompartmentMemory(S.FAULT, None, 0, True, "lock fault"))
    assert saved_from_json(saved_to_json(saved)) == saved


def test_restored_core_refuses_replayed_credential_after_interrupted_delivery() -> None:
    """Delivered (goods taken, order cleared) and restarted: a replayed code opens nothing."""
    book, pin = book_with_history()
    machine = CompartmentHandoff(book, CONFIG, now=200.0,
                                 memory=CompartmentMemory(S.LOCKED_EMPTY, None))
    step = machine.handle(CredentialPresented(ORDER.order_id, Method.PIN, pin), 201.0)
    assert step.refusal is not None
    assert not step.accepted

"""Durable order store: an order is never lost, never duplicated, never in an illegal state.

SQLite in WAL mode with `synchronous=FULL`: every commit reaches the disk before the method
returns, so the caller may announce a change as soon as the call comes back ("persist, then
announce"). Each state change is checked with `order_lifecycle.check_transition` and written
in one transaction together with its event in the append-only `order_transitions` log; a
refused change writes nothing. Reopening the file after a crash gives back every order in its
last committed state.

Thread-safety: one store object owns one connection; every method takes the object's lock, so
a store may be shared by threads (executor callbacks, HTTP worker threads). Several processes
on one file are serialised by SQLite (`BEGIN IMMEDIATE` and a busy timeout), but the design has
one writer, the coordinator.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

from delivery_robot.credentials import SecretHash
from delivery_robot.handoff_credentials import StoredCredentials
from delivery_robot.order_intake import AcceptedOrder, RejectCode, SizeClass
from delivery_robot.order_lifecycle import (
    TERMINAL_STATES,
    OrderState,
    check_transition,
)

Clock = Callable[[], float]

SCHEMA_VERSION = 2  # 2: orders.promised_by, mission_attempts (1 is migrated in place)
# Retried submits may cross float32 (ROS) and float64 (JSON): equal within a gram is equal.
_WEIGHT_TOLERANCE_KG = 0.0005
_OPEN_STATES = tuple(int(s) for s in OrderState if s not in TERMINAL_STATES)
_REASON_REQUIRED = frozenset({OrderState.FAILED, OrderState.CANCELLED})

_SCHEMA = f"""
CREATE TABLE orders (
    order_id         TEXT PRIMARY KEY,
    shop_id          TEXT NOT NULL,
    pickup_waypoint  TEXT NOT NULL,
    dropoff_waypoint TEXT NOT NULL,
    size             INTEGER NOT NULL CHECK (size BETWEEN 0 AND 2),
    weight_kg        REAL NOT NULL CHECK (weight_kg >= 0),
    note             TEXT NOT NULL,
    state            INTEGER NOT NULL CHECK (state BETWEEN 0 AND 9),
    reason           TEXT NOT NULL,   -- reason of the last transition
    robot_id         TEXT,            -- current (or, once terminal, last) robot
    mission_id       TEXT,
    sequence         INTEGER NOT NULL CHECK (sequence >= 1),  -- of the last transition
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    promised_by      REAL             -- promised delivery time (store clock), NULL = none
) STRICT;
CREATE INDEX orders_by_state ON orders (state);
CREATE INDEX orders_by_shop ON orders (shop_id, state);
CREATE INDEX orders_by_robot ON orders (robot_id) WHERE robot_id IS NOT NULL;
CREATE INDEX orders_by_mission ON orders (mission_id) WHERE mission_id IS NOT NULL;

-- Append-only event log: one row per lifecycle transition, sequence 1 = creation.
CREATE TABLE order_transitions (
    order_id    TEXT NOT NULL REFERENCES orders (order_id),
    sequence    INTEGER NOT NULL CHECK (sequence >= 1),
    from_state  INTEGER NOT NULL CHECK (from_state BETWEEN 0 AND 9),
    to_state    INTEGER NOT NULL CHECK (to_state BETWEEN 0 AND 9),
    reason      TEXT NOT NULL,
    robot_id    TEXT,
    mission_id  TEXT,
    at          REAL NOT NULL,
    PRIMARY KEY (order_id, sequence)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER order_transitions_no_update BEFORE UPDATE ON order_transitions
BEGIN SELECT RAISE(ABORT, 'order_transitions is append-only'); END;
CREATE TRIGGER order_transitions_no_delete BEFORE DELETE ON order_transitions
BEGIN SELECT RAISE(ABORT, 'order_transitions is append-only'); END;

CREATE TABLE idempotency_keys (
    shop_id          TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    order_id         TEXT NOT NULL UNIQUE REFERENCES orders (order_id),
    created_at       REAL NOT NULL,
    PRIMARY KEY (shop_id, idempotency_key)
) STRICT;

-- Recipient credentials as salted scrypt hashes only (the plain PIN and token are never
-- written), with the handoff's counters so a restart cannot lift a lockout.
CREATE TABLE order_credentials (
    order_id         TEXT PRIMARY KEY REFERENCES orders (order_id),
    pin_hash         TEXT NOT NULL CHECK (pin_hash LIKE 'scrypt$%'),
    qr_hash          TEXT NOT NULL CHECK (qr_hash LIKE 'scrypt$%'),
    expires_at       INTEGER NOT NULL,
    used_at          REAL,
    failed_attempts  INTEGER NOT NULL CHECK (failed_attempts >= 0),
    locked_until     REAL,
    lockouts         INTEGER NOT NULL CHECK (lockouts >= 0),
    updated_at       REAL NOT NULL
) STRICT;

-- Which robot and mission carry(ied) an order; released_at is NULL while active.
CREATE TABLE assignments (
    assignment_id   INTEGER PRIMARY KEY,
    order_id        TEXT NOT NULL REFERENCES orders (order_id),
    robot_id        TEXT NOT NULL,
    mission_id      TEXT NOT NULL,
    assigned_at     REAL NOT NULL,
    released_at     REAL,
    release_reason  TEXT
) STRICT;
CREATE UNIQUE INDEX one_active_assignment ON assignments (order_id) WHERE released_at IS NULL;
CREATE INDEX assignments_by_robot ON assignments (robot_id, released_at);
CREATE INDEX assignments_by_mission ON assignments (mission_id);

-- Sends of a mission so far (1 = first send), so a navigation retry budget survives a restart.
CREATE TABLE mission_attempts (
    mission_id  TEXT PRIMARY KEY,
    attempts    INTEGER NOT NULL CHECK (attempts >= 1),
    updated_at  REAL NOT NULL
) STRICT;

PRAGMA user_version = {SCHEMA_VERSION};
"""

# Version 1 -> 2, for a database written before promises and persisted retry counts.
_MISSION_ATTEMPTS = """
CREATE TABLE IF NOT EXISTS mission_attempts (
    mission_id  TEXT PRIMARY KEY,
    attempts    INTEGER NOT NULL CHECK (attempts >= 1),
    updated_at  REAL NOT NULL
) STRICT
"""


class OrderStoreError(Exception):
    """Base of the store's refusals; `code` is the stable API error code."""

    code: str = "order_store_error"


class OrderNotFound(OrderStoreError, LookupError):
    code = "unknown_order"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"unknown order {order_id!r}")
        self.order_id = order_id


class IdempotencyConflict(OrderStoreError, ValueError):
    code = RejectCode.IDEMPOTENCY_CONFLICT.value

    def __init__(self, shop_id: str, key: str, order_id: str, differing: Iterable[str]) -> None:
        fields = ", ".join(differing)
        super().__init__(
            f"idempotency key {key!r} of shop {shop_id!r} was already used for order "
            f"{order_id} with a different {fields}; send a new key for a new order"
        )
        self.shop_id = shop_id
        self.key = key
        self.order_id = order_id


class TransitionArgumentError(OrderStoreError, ValueError):
    """A legal state change asked for with missing or misplaced details (reason, robot)."""

    code = "invalid_transition"


@dataclass(frozen=True)
class StoredOrder:
    """An order as persisted; field names follow `delivery_interfaces/Order`."""

    order_id: str
    shop_id: str
    pickup_waypoint: str
    dropoff_waypoint: str
    size: SizeClass
    weight_kg: float
    note: str
    state: OrderState
    reason: str
    robot_id: str | None
    mission_id: str | None
    sequence: int
    created_at: float
    updated_at: float
    promised_by: float | None = None  # promised delivery time (store clock); None = no promise


@dataclass(frozen=True)
class OrderEvent:
    """One persisted transition: what `/fleet/order_status` and the websocket announce.

    The creation event has sequence 1 and previous_state == state == REQUESTED.
    """

    order_id: str
    shop_id: str
    sequence: int
    previous_state: OrderState
    state: OrderState
    reason: str
    robot_id: str | None
    mission_id: str | None
    at: float


@dataclass(frozen=True)
class AssignmentRecord:
    order_id: str
    robot_id: str
    mission_id: str
    assigned_at: float
    released_at: float | None
    release_reason: str | None


@dataclass(frozen=True)
class SubmitOutcome:
    """`created` is False for a replayed idempotency key: then `event` is None (nothing new
    to announce) and the credentials passed in were not stored; the first ones stay valid."""

    order: StoredOrder
    created: bool
    event: OrderEvent | None


@dataclass(frozen=True)
class TransitionOutcome:
    order: StoredOrder
    event: OrderEvent


def random_order_id() -> str:
    """Unguessable, so the recipient link `/handoff/<order>` cannot be enumerated."""
    return f"ord_{secrets.token_hex(8)}"


_ORDER_COLUMNS = (
    "order_id, shop_id, pickup_waypoint, dropoff_waypoint, size, weight_kg, note, state, "
    "reason, robot_id, mission_id, sequence, created_at, updated_at, promised_by"
)


def _order_from_row(row: sqlite3.Row) -> StoredOrder:
    return StoredOrder(
        order_id=row["order_id"],
        shop_id=row["shop_id"],
        pickup_waypoint=row["pickup_waypoint"],
        dropoff_waypoint=row["dropoff_waypoint"],
        size=SizeClass(row["size"]),
        weight_kg=row["weight_kg"],
        note=row["note"],
        state=OrderState(row["state"]),
        reason=row["reason"],
        robot_id=row["robot_id"],
        mission_id=row["mission_id"],
        sequence=row["sequence"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        promised_by=row["promised_by"],
    )


def _credentials_from_row(row: sqlite3.Row) -> StoredCredentials:
    return StoredCredentials(
        order_id=row["order_id"],
        pin_hash=SecretHash(row["pin_hash"]),
        qr_hash=SecretHash(row["qr_hash"]),
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        failed_attempts=row["failed_attempts"],
        locked_until=row["locked_until"],
        lockouts=row["lockouts"],
    )


def _event_from_row(row: sqlite3.Row, shop_id: str) -> OrderEvent:
    return OrderEvent(
        order_id=row["order_id"],
        shop_id=shop_id,
        sequence=row["sequence"],
        previous_state=OrderState(row["from_state"]),
        state=OrderState(row["to_state"]),
        reason=row["reason"],
        robot_id=row["robot_id"],
        mission_id=row["mission_id"],
        at=row["at"],
    )


class OrderStore:
    """The coordinator's orders on disk. Use as a context manager or call `close()`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = time.time,
        new_order_id: Callable[[], str] = random_order_id,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self._clock = clock
        self._new_order_id = new_order_id
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            os.fspath(path),
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # guarded by self._lock instead
            timeout=busy_timeout_s,
        )
        try:
            self._conn.row_factory = sqlite3.Row
            self._configure()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- connection lifecycle -------------------------------------------------------------

    def _configure(self) -> None:
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(
                f"order store needs a file database in WAL mode; SQLite gave {mode!r}"
            )
        # FULL: in WAL mode the WAL is fsynced at every commit, so a commit survives power loss.
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA foreign_keys = ON")

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _split_sql(_SCHEMA):
                    conn.execute(statement)
            elif version == 1:
                # Additive only: old rows keep their meaning (no promise, attempts unknown).
                columns = {row["name"] for row in conn.execute("PRAGMA table_info(orders)")}
                if "promised_by" not in columns:
                    conn.execute("ALTER TABLE orders ADD COLUMN promised_by REAL")
                conn.execute(_MISSION_ATTEMPTS)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise RuntimeError(
                    f"order store schema version {version} is not the supported "
                    f"{SCHEMA_VERSION}; refusing to touch it"
                )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> OrderStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction, committed (durably) on exit or rolled back on error."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- writes ---------------------------------------------------------------------------

    def new_order_id(self) -> str:
        """An id no stored order has, to issue the order's credentials before `submit`."""
        with self._lock:
            for _ in range(16):
                order_id = self._new_order_id()
                taken = self._conn.execute("SELECT 1 FROM orders WHERE order_id = ?", (order_id,))
                if taken.fetchone() is None:
                    return order_id
        raise RuntimeError("order id generator keeps returning ids already in use")

    def submit(
        self,
        order: AcceptedOrder,
        *,
        order_id: str,
        credentials: StoredCredentials,
        promised_by: float | None = None,
        promise_in_s: float | None = None,
    ) -> SubmitOutcome:
        """Create an order (state REQUESTED, event sequence 1) with its credential hashes, in
        one transaction, or replay an idempotent submit.

        `order_id` comes from `new_order_id()` and `credentials` were issued for it (the PIN
        hash is bound to the order id, so they are made first, outside the store's lock). On a
        replay both are ignored and the first order, with its first credentials, comes back; a
        caller may look the key up first (`find_by_idempotency_key`) to skip hashing.
        Raises IdempotencyConflict when the shop reuses a key for a different order.
        The promised delivery time is `promised_by` (absolute, store clock) if given, else
        creation time + `promise_in_s` if given, else none.
        """
        if credentials.order_id != order_id:
            raise ValueError(
                f"credentials were issued for order {credentials.order_id!r}, not {order_id!r}"
            )
        with self._write() as conn:
            if order.idempotency_key:
                existing = self._replayed_order(conn, order)
                if existing is not None:
                    return SubmitOutcome(order=existing, created=False, event=None)
            if conn.execute("SELECT 1 FROM orders WHERE order_id = ?", (order_id,)).fetchone():
                raise OrderStoreError(f"order id {order_id!r} is already in use")
            now = self._clock()
            conn.execute(
                f"INSERT INTO orders ({_ORDER_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', NULL, NULL, 1, ?, ?, ?)",
                (
                    order_id,
                    order.shop_id,
                    order.pickup_waypoint,
                    order.dropoff_waypoint,
                    int(order.size),
                    order.weight_kg,
                    order.note,
                    int(OrderState.REQUESTED),
                    now,
                    now,
                    promised_by if promised_by is not None
                    else None if promise_in_s is None else now + promise_in_s,
                ),
            )
            conn.execute(
                "INSERT INTO order_transitions "
                "(order_id, sequence, from_state, to_state, reason, robot_id, mission_id, at) "
                "VALUES (?, 1, ?, ?, '', NULL, NULL, ?)",
                (order_id, int(OrderState.REQUESTED), int(OrderState.REQUESTED), now),
            )
            self._upsert_credentials(conn, credentials, now)
            if order.idempotency_key:
                conn.execute(
                    "INSERT INTO idempotency_keys (shop_id, idempotency_key, order_id, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (order.shop_id, order.idempotency_key, order_id, now),
                )
            stored = self._get(conn, order_id)
        event = OrderEvent(
            order_id=order_id,
            shop_id=order.shop_id,
            sequence=1,
            previous_state=OrderState.REQUESTED,
            state=OrderState.REQUESTED,
            reason="",
            robot_id=None,
            mission_id=None,
            at=stored.created_at,
        )
        return SubmitOutcome(order=stored, created=True, event=event)

    def transition(
        self,
        order_id: str,
        state: OrderState,
        *,
        reason: str = "",
        robot_id: str | None = None,
        mission_id: str | None = None,
    ) -> TransitionOutcome:
        """Move an order to `state`, durably, or raise and write nothing.

        ASSIGNED needs `robot_id` and `mission_id` (and only ASSIGNED takes them); FAILED and
        CANCELLED need a `reason`. Back to REQUESTED releases the robot; a final state closes
        the assignment but keeps `robot_id` on the order as a record of who carried it.
        Raises OrderNotFound, IllegalTransition or TransitionArgumentError.
        """
        state = OrderState(state)
        self._check_arguments(state, reason, robot_id, mission_id)
        with self._write() as conn:
            current = self._get(conn, order_id)
            check_transition(current.state, state)
            now = self._clock()
            sequence = current.sequence + 1
            new_robot, new_mission = current.robot_id, current.mission_id
            if state is OrderState.ASSIGNED:
                new_robot, new_mission = robot_id, mission_id
                conn.execute(
                    "INSERT INTO assignments (order_id, robot_id, mission_id, assigned_at) "
                    "VALUES (?, ?, ?, ?)",
                    (order_id, robot_id, mission_id, now),
                )
            elif state is OrderState.REQUESTED or state in TERMINAL_STATES:
                conn.execute(
                    "UPDATE assignments SET released_at = ?, release_reason = ? "
                    "WHERE order_id = ? AND released_at IS NULL",
                    (now, reason or state.label, order_id),
                )
                if state is OrderState.REQUESTED:
                    new_robot, new_mission = None, None
            conn.execute(
                "UPDATE orders SET state = ?, reason = ?, robot_id = ?, mission_id = ?, "
                "sequence = ?, updated_at = ? WHERE order_id = ? AND sequence = ?",
                (
                    int(state),
                    reason,
                    new_robot,
                    new_mission,
                    sequence,
                    now,
                    order_id,
                    current.sequence,
                ),
            )
            conn.execute(
                "INSERT INTO order_transitions "
                "(order_id, sequence, from_state, to_state, reason, robot_id, mission_id, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order_id,
                    sequence,
                    int(current.state),
                    int(state),
                    reason,
                    new_robot,
                    new_mission,
                    now,
                ),
            )
            updated = self._get(conn, order_id)
        event = OrderEvent(
            order_id=order_id,
            shop_id=current.shop_id,
            sequence=sequence,
            previous_state=current.state,
            state=state,
            reason=reason,
            robot_id=new_robot,
            mission_id=new_mission,
            at=now,
        )
        return TransitionOutcome(order=updated, event=event)

    def record_mission_attempts(self, mission_id: str, attempts: int) -> None:
        """Persist how many times a mission has been sent (1 = the first send)."""
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO mission_attempts (mission_id, attempts, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (mission_id) DO UPDATE SET attempts = excluded.attempts, "
                "updated_at = excluded.updated_at",
                (mission_id, attempts, self._clock()),
            )

    def mission_attempts(self, mission_id: str) -> int:
        """Sends of the mission so far; 1 when none were recorded."""
        with self._lock:
            row = self._conn.execute(
                "SELECT attempts FROM mission_attempts WHERE mission_id = ?", (mission_id,)
            ).fetchone()
        return 1 if row is None else int(row["attempts"])

    def now(self) -> float:
        """The store's clock (what created_at, event times and promises are in)."""
        return self._clock()

    def save_credentials(self, credentials: StoredCredentials) -> None:
        """Persist the handoff's record of an order (re-issue, failed tries, lockout, use)."""
        with self._write() as conn:
            self._get(conn, credentials.order_id)
            self._upsert_credentials(conn, credentials, self._clock())

    # -- reads ----------------------------------------------------------------------------

    def get(self, order_id: str) -> StoredOrder:
        with self._lock:
            return self._get(self._conn, order_id)

    def find(self, order_id: str) -> StoredOrder | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)
            ).fetchone()
        return None if row is None else _order_from_row(row)

    def history(self, order_id: str) -> list[OrderEvent]:
        """Every transition of the order, oldest first (sequence 1, 2, ...)."""
        with self._lock:
            order = self._get(self._conn, order_id)
            rows = self._conn.execute(
                "SELECT * FROM order_transitions WHERE order_id = ? ORDER BY sequence",
                (order_id,),
            ).fetchall()
        return [_event_from_row(row, order.shop_id) for row in rows]

    def open_orders(self) -> list[StoredOrder]:
        """Orders not yet delivered, cancelled or failed: what a restart must resume."""
        marks = ", ".join("?" * len(_OPEN_STATES))
        return self._select(f"state IN ({marks})", _OPEN_STATES)

    def orders_by_state(self, state: OrderState) -> list[StoredOrder]:
        return self._select("state = ?", (int(state),))

    def orders_by_shop(self, shop_id: str, state: OrderState | None = None) -> list[StoredOrder]:
        if state is None:
            return self._select("shop_id = ?", (shop_id,))
        return self._select("shop_id = ? AND state = ?", (shop_id, int(state)))

    def orders_by_robot(self, robot_id: str, *, include_closed: bool = False) -> list[StoredOrder]:
        """The robot's current orders; with include_closed also the ones it finished."""
        if include_closed:
            return self._select("robot_id = ?", (robot_id,))
        marks = ", ".join("?" * len(_OPEN_STATES))
        return self._select(f"robot_id = ? AND state IN ({marks})", (robot_id, *_OPEN_STATES))

    def orders_by_mission(self, mission_id: str) -> list[StoredOrder]:
        return self._select("mission_id = ?", (mission_id,))

    def assignments(self, order_id: str) -> list[AssignmentRecord]:
        """Assignment history of the order, oldest first; at most the last one is active."""
        with self._lock:
            self._get(self._conn, order_id)
            rows = self._conn.execute(
                "SELECT * FROM assignments WHERE order_id = ? ORDER BY assignment_id",
                (order_id,),
            ).fetchall()
        return [
            AssignmentRecord(
                order_id=row["order_id"],
                robot_id=row["robot_id"],
                mission_id=row["mission_id"],
                assigned_at=row["assigned_at"],
                released_at=row["released_at"],
                release_reason=row["release_reason"],
            )
            for row in rows
        ]

    def credentials(self, order_id: str) -> StoredCredentials:
        with self._lock:
            self._get(self._conn, order_id)
            row = self._conn.execute(
                "SELECT * FROM order_credentials WHERE order_id = ?", (order_id,)
            ).fetchone()
        if row is None:  # submit always writes them; only a hand-edited file lacks them
            raise OrderStoreError(f"order {order_id!r} has no stored credentials")
        return _credentials_from_row(row)

    def open_order_credentials(self) -> list[StoredCredentials]:
        """Credentials of every open order: what the handoff reloads after a restart."""
        marks = ", ".join("?" * len(_OPEN_STATES))
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.* FROM order_credentials c JOIN orders o USING (order_id) "
                f"WHERE o.state IN ({marks}) ORDER BY o.created_at, o.rowid",
                _OPEN_STATES,
            ).fetchall()
        return [_credentials_from_row(row) for row in rows]

    def find_by_idempotency_key(self, shop_id: str, key: str) -> StoredOrder | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT order_id FROM idempotency_keys WHERE shop_id = ? AND idempotency_key = ?",
                (shop_id, key),
            ).fetchone()
            return None if row is None else self._get(self._conn, row["order_id"])

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _check_arguments(
        state: OrderState, reason: str, robot_id: str | None, mission_id: str | None
    ) -> None:
        if state is OrderState.ASSIGNED:
            if not robot_id or not mission_id:
                raise TransitionArgumentError(
                    "assigning an order needs both robot_id and mission_id"
                )
        elif robot_id is not None or mission_id is not None:
            raise TransitionArgumentError(
                f"robot_id/mission_id are set only by a transition to assigned, "
                f"not to {state.label}"
            )
        if state in _REASON_REQUIRED and not reason.strip():
            raise TransitionArgumentError(f"a transition to {state.label} needs a reason")

    def _select(self, where: str, params: tuple[object, ...]) -> list[StoredOrder]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {where} ORDER BY created_at, rowid",
                params,
            ).fetchall()
        return [_order_from_row(row) for row in rows]

    @staticmethod
    def _get(conn: sqlite3.Connection, order_id: str) -> StoredOrder:
        row = conn.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)
        ).fetchone()
        if row is None:
            raise OrderNotFound(order_id)
        return _order_from_row(row)

    @staticmethod
    def _upsert_credentials(
        conn: sqlite3.Connection, credentials: StoredCredentials, now: float
    ) -> None:
        conn.execute(
            "INSERT INTO order_credentials (order_id, pin_hash, qr_hash, expires_at, used_at, "
            "failed_attempts, locked_until, lockouts, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO UPDATE SET "
            "pin_hash = excluded.pin_hash, qr_hash = excluded.qr_hash, "
            "expires_at = excluded.expires_at, used_at = excluded.used_at, "
            "failed_attempts = excluded.failed_attempts, locked_until = excluded.locked_until, "
            "lockouts = excluded.lockouts, updated_at = excluded.updated_at",
            (
                credentials.order_id,
                credentials.pin_hash.encoded,
                credentials.qr_hash.encoded,
                int(credentials.expires_at),
                credentials.used_at,
                credentials.failed_attempts,
                credentials.locked_until,
                credentials.lockouts,
                now,
            ),
        )

    def _replayed_order(self, conn: sqlite3.Connection, order: AcceptedOrder) -> StoredOrder | None:
        row = conn.execute(
            "SELECT order_id FROM idempotency_keys WHERE shop_id = ? AND idempotency_key = ?",
            (order.shop_id, order.idempotency_key),
        ).fetchone()
        if row is None:
            return None
        existing = self._get(conn, row["order_id"])
        differing = [
            name
            for name, same in (
                ("dropoff_waypoint", existing.dropoff_waypoint == order.dropoff_waypoint),
                ("size", existing.size == order.size),
                ("weight_kg", abs(existing.weight_kg - order.weight_kg) <= _WEIGHT_TOLERANCE_KG),
                ("note", existing.note == order.note),
            )
            if not same
        ]
        if differing:
            raise IdempotencyConflict(
                order.shop_id, order.idempotency_key, existing.order_id, differing
            )
        return existing


def _split_sql(script: str) -> list[str]:
    """Statements of the schema script (triggers contain ';' inside BEGIN ... END)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in schema: {buffer.strip()!r}")
    return statements

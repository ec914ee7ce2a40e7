"""The handoff node's memory on the robot's own disk, so a restart mid-handoff keeps the goods
locked and the recipient's code working (and a used code or a brute-force counter spent).

SQLite in WAL mode with `synchronous=FULL`, one row holding the newest `SavedHandoff` as JSON:
`save` returns only once it is durable, so the node saves before it announces (publishes,
answers a service, sends a lock command) anything that followed from the change. What is kept:
the compartment's `CompartmentMemory` (state, order and waypoints, no-shows, an unresolved
fault; an open state is the pending unlock), the waypoints given by `handoff/assign`, and the
credential records (hashes and counters only, with their used-once flag) plus which were
enrolled from a QR token.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delivery_robot.compartment_handoff import CompartmentMemory, HandoffState, OrderInfo
from delivery_robot.handoff_credentials import StoredCredentials
from delivery_robot.handoff_record import BadRecord, record_from_json, record_to_json

SCHEMA_VERSION = 1
SAVED_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS handoff (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    memory    TEXT NOT NULL,      -- SavedHandoff as JSON (the newest)
    saved_at  REAL NOT NULL       -- node clock, s
);
"""


class HandoffStoreError(RuntimeError):
    """The store cannot be used or its content is not ours; says which file and why."""


@dataclass(frozen=True)
class SavedHandoff:
    compartment: CompartmentMemory
    routes: dict[str, tuple[str, str]] = field(default_factory=dict)  # order -> shop, dropoff
    credentials: tuple[StoredCredentials, ...] = ()
    enrolled: frozenset[str] = frozenset()  # orders whose record came from a QR token


def saved_to_json(saved: SavedHandoff) -> str:
    memory = saved.compartment
    order = memory.order
    return json.dumps({
        "v": SAVED_VERSION,
        "state": int(memory.state),
        "order": None if order is None else [order.order_id, order.shop_waypoint,
                                             order.dropoff_waypoint],
        "no_shows": memory.no_shows,
        "tamper": memory.tamper,
        "fault_reason": memory.fault_reason,
        "routes": {k: list(v) for k, v in sorted(saved.routes.items())},
        "credentials": [record_to_json(r) for r in sorted(saved.credentials,
                                                           key=lambda r: r.order_id)],
        "enrolled": sorted(saved.enrolled),
    }, sort_keys=True, separators=(",", ":"))


def _strings(value: Any, count: int, what: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and len(value) == count
            and all(isinstance(v, str) for v in value)):
        raise HandoffStoreError(f"{what}: expected {count} strings, got {value!r}")
    return tuple(value)


def saved_from_json(text: str) -> SavedHandoff:
    """The saved memory in `text`; HandoffStoreError (never another exception) if it is not."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise HandoffStoreError(f"not JSON: {error}") from None
    if not isinstance(data, dict) or data.get("v") != SAVED_VERSION:
        raise HandoffStoreError(f"not a saved handoff of version {SAVED_VERSION}")
    raw_state = data.get("state")
    if isinstance(raw_state, bool) or not isinstance(raw_state, int) or not any(
            raw_state == s for s in HandoffState):
        raise HandoffStoreError(f"state: unknown value {raw_state!r}")
    state = HandoffState(raw_state)
    order = None
    if data.get("order") is not None:
        order = OrderInfo(*_strings(data["order"], 3, "order"))
    no_shows, tamper, reason = data.get("no_shows"), data.get("tamper"), data.get("fault_reason")
    if isinstance(no_shows, bool) or not isinstance(no_shows, int) or no_shows < 0:
        raise HandoffStoreError(f"no_shows: must be an integer >= 0, got {no_shows!r}")
    if not isinstance(tamper, bool) or not isinstance(reason, str):
        raise HandoffStoreError("tamper must be a boolean and fault_reason a string")
    routes_raw, records_raw = data.get("routes"), data.get("credentials")
    enrolled_raw = data.get("enrolled")
    if not (isinstance(routes_raw, dict) and isinstance(records_raw, list)
            and isinstance(enrolled_raw, list) and all(isinstance(o, str) for o in enrolled_raw)):
        raise HandoffStoreError("routes, credentials and enrolled are missing or malformed")
    routes: dict[str, tuple[str, str]] = {}
    for order_id, pair in routes_raw.items():
        shop, dropoff = _strings(pair, 2, f"routes[{order_id}]")
        routes[str(order_id)] = (shop, dropoff)
    records = []
    for raw in records_raw:
        if not isinstance(raw, str):
            raise HandoffStoreError("credentials: each record is a JSON string")
        try:
            records.append(record_from_json(raw))
        except BadRecord as error:
            raise HandoffStoreError(f"credential record: {error}") from None
    return SavedHandoff(CompartmentMemory(state, order, no_shows, tamper, reason), routes,
                        tuple(records), frozenset(enrolled_raw))


class HandoffStore:
    """One robot's saved handoff memory. Thread-safe (one internal lock)."""

    def __init__(self, path: Path | str) -> None:
        """Open (or create) the store at `path`; its folder is created if missing."""
        self._path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self._path, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, SCHEMA_VERSION):
                raise HandoffStoreError(f"{self._path}: store schema {version}, this build "
                                        f"reads {SCHEMA_VERSION}")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as error:
            raise HandoffStoreError(f"{self._path}: cannot open the handoff store: "
                                    f"{error}") from None

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> SavedHandoff | None:
        """The newest saved memory, None if nothing was saved yet; HandoffStoreError if the
        row is unreadable (the node then starts in fault, goods kept locked)."""
        with self._lock:
            try:
                row = self._conn.execute("SELECT memory FROM handoff WHERE id = 1").fetchone()
            except sqlite3.Error as error:
                raise HandoffStoreError(f"{self._path}: {error}") from None
        if row is None:
            return None
        try:
            return saved_from_json(str(row[0]))
        except HandoffStoreError as error:
            raise HandoffStoreError(f"{self._path}: {error}") from None

    def save(self, saved: SavedHandoff, at: float) -> None:
        """Durable when it returns (WAL commit with synchronous=FULL)."""
        text = saved_to_json(saved)
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO handoff (id, memory, saved_at) VALUES (1, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET memory = excluded.memory, "
                    "saved_at = excluded.saved_at", (text, at))
            except sqlite3.Error as error:
                raise HandoffStoreError(f"{self._path}: cannot save: {error}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

"""The robot's mission journal: every leg change of a mission, on the robot's own disk.

SQLite in WAL mode with `synchronous=FULL`: `save` returns only once the checkpoint is durable,
so whatever the executor announced afterwards (feedback, robot_state) is never ahead of what a
restart finds. One row per mission holds the newest checkpoint (`mission_runner.Checkpoint` as
JSON); an append-only log keeps every step with its time and note for the audit trail. A
mission is unfinished until a checkpoint with an outcome is saved; on start the executor resumes
the newest unfinished one.

Not thread-safe by itself beyond one internal lock: the node calls it from one worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from delivery_robot.mission_runner import Checkpoint

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS missions (
    mission_id   TEXT PRIMARY KEY,
    checkpoint   TEXT NOT NULL,      -- mission_runner.Checkpoint as JSON (the newest)
    started_at   REAL NOT NULL,      -- node clock, s
    updated_at   REAL NOT NULL,
    finished_at  REAL,               -- NULL while the mission runs
    outcome      INTEGER,            -- ExecuteMission.Result.OUTCOME_*, NULL while running
    message      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS missions_running ON missions (finished_at, updated_at);
CREATE TABLE IF NOT EXISTS journal (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    mission_id   TEXT NOT NULL,
    at           REAL NOT NULL,
    leg          INTEGER NOT NULL,   -- ExecuteMission.Feedback.LEG_*
    stage        INTEGER NOT NULL,
    note         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_mission ON journal (mission_id, seq);
"""


class JournalError(RuntimeError):
    """The journal file cannot be used (wrong schema, not a database); says which file."""


@dataclass(frozen=True)
class JournalLine:
    mission_id: str
    at: float
    leg: int
    stage: int
    note: str


class MissionJournal:
    def __init__(self, path: Path | str, *, keep_finished: int = 1000) -> None:
        """Open (or create) the journal at `path`; its folder is created if missing."""
        self._path = Path(path).expanduser()
        self._keep = keep_finished
        self._lock = threading.Lock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self._path, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, SCHEMA_VERSION):
                raise JournalError(f"{self._path}: journal schema {version}, this build "
                                   f"reads {SCHEMA_VERSION}")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as error:
            raise JournalError(f"{self._path}: cannot open the mission journal: "
                               f"{error}") from None

    @property
    def path(self) -> Path:
        return self._path

    def save(self, checkpoint: Checkpoint, at: float, note: str = "") -> None:
        """Persist the newest checkpoint (and a log line) durably; returns after the commit."""
        spec = checkpoint.spec
        stage = checkpoint.stages[min(checkpoint.index, len(checkpoint.stages) - 1)]
        finished = checkpoint.outcome is not None
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO missions (mission_id, checkpoint, started_at, updated_at, "
                    "finished_at, outcome, message) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (mission_id) DO UPDATE SET checkpoint = excluded.checkpoint, "
                    "updated_at = excluded.updated_at, finished_at = excluded.finished_at, "
                    "outcome = excluded.outcome, message = excluded.message",
                    (spec.mission_id, checkpoint.to_json(), at, at, at if finished else None,
                     int(checkpoint.outcome) if checkpoint.outcome is not None else None,
                     checkpoint.message))
                conn.execute(
                    "INSERT INTO journal (mission_id, at, leg, stage, note) VALUES (?, ?, ?, ?, ?)",
                    (spec.mission_id, at, int(stage.leg), checkpoint.index, note))
                if finished:
                    self._prune(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def abandon(self, mission_id: str, at: float, why: str) -> None:
        """Close a mission that cannot be resumed (unreadable checkpoint), keeping its rows."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("UPDATE missions SET finished_at = ?, updated_at = ?, outcome = 2, "
                             "message = ? WHERE mission_id = ? AND finished_at IS NULL",
                             (at, at, f"abandoned: {why}", mission_id))
                conn.execute("INSERT INTO journal (mission_id, at, leg, stage, note) "
                             "VALUES (?, ?, -1, -1, ?)", (mission_id, at, f"abandoned: {why}"))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def unfinished(self) -> list[tuple[str, str]]:
        """(mission id, checkpoint JSON) of every unfinished mission, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT mission_id, checkpoint FROM missions WHERE finished_at IS NULL "
                "ORDER BY updated_at DESC, rowid DESC").fetchall()
        return [(str(m), str(c)) for m, c in rows]

    def checkpoint(self, mission_id: str) -> Checkpoint | None:
        with self._lock:
            row = self._conn.execute("SELECT checkpoint FROM missions WHERE mission_id = ?",
                                     (mission_id,)).fetchone()
        return None if row is None else Checkpoint.from_json(str(row[0]))

    def lines(self, mission_id: str) -> list[JournalLine]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT mission_id, at, leg, stage, note FROM journal WHERE mission_id = ? "
                "ORDER BY seq", (mission_id,)).fetchall()
        return [JournalLine(str(m), float(a), int(leg), int(s), str(n))
                for m, a, leg, s, n in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Keep the newest `keep_finished` finished missions (and their log lines)."""
        old = [str(r[0]) for r in conn.execute(
            "SELECT mission_id FROM missions WHERE finished_at IS NOT NULL "
            "ORDER BY finished_at DESC, rowid DESC LIMIT -1 OFFSET ?", (self._keep,))]
        for mission_id in old:
            conn.execute("DELETE FROM journal WHERE mission_id = ?", (mission_id,))
            conn.execute("DELETE FROM missions WHERE mission_id = ?", (mission_id,))

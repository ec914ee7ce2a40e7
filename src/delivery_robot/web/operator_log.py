"""The record of operator commands (remote e-stop, resume): who, when, what, and the answer.

Every attempt is recorded, also the ones the robot refused or never answered, because the
record is what a pilot's safety review reads. With a path, each entry is appended to a JSON
Lines file and flushed before the request answers, and the newest entries are read back on
start, so the record survives a coordinator restart.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_CAPACITY = 1000


@dataclass(frozen=True)
class OperatorCommand:
    at: float  # the coordinator's clock (ROS time; sim time in simulation)
    wall_time: str  # ISO 8601 UTC, for people reading the record
    who: str  # "operator" or "operator (<name they gave>)"
    client: str  # the client address the request came from
    robot_id: str
    action: str  # "estop" | "resume"
    success: bool
    code: str  # "" when the robot did it; else why not (robot_refused, robot_timeout, ...)
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def wall_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class OperatorLog:
    """Thread-safe; `record` returns once the entry is in the file (if there is one)."""

    def __init__(self, path: str | Path | None = None, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("operator log capacity must be >= 1")
        self._lock = threading.Lock()
        self._recent: deque[OperatorCommand] = deque(maxlen=capacity)
        self._path = Path(path) if path else None
        if self._path is not None and self._path.exists():
            self._recent.extend(self._read(self._path))

    @property
    def path(self) -> Path | None:
        return self._path

    def record(self, command: OperatorCommand) -> None:
        line = json.dumps(command.to_json(), ensure_ascii=False, sort_keys=True)
        with self._lock:
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            self._recent.append(command)

    def recent(self, limit: int = 100) -> list[OperatorCommand]:
        """Newest first."""
        with self._lock:
            items = list(self._recent)
        return items[::-1][:max(0, limit)]

    @staticmethod
    def _read(path: Path) -> list[OperatorCommand]:
        """Entries of an existing file; a damaged line (a crash mid-write) is skipped."""
        entries = []
        fields = set(OperatorCommand.__dataclass_fields__)
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and set(data) == fields:
                entries.append(OperatorCommand(**data))
        return entries

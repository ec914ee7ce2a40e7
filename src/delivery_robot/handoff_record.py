"""The coordinator's credential record of one order on the wire, as JSON.

`ExecuteMission.Goal.handoff_records` carries it from the coordinator to the robot, and
`handoff/assign` from the mission executor to the handoff node, so the robot can verify the
recipient's PIN (a QR token verifies without it). Only hashes and counters travel, never a plain
PIN or token: a leaked goal or log opens no compartment.
"""

from __future__ import annotations

import json
import math
from typing import Any

from delivery_robot.credentials import SecretHash
from delivery_robot.handoff_credentials import MAX_ORDER_ID_CHARS, StoredCredentials

RECORD_VERSION = 1
MAX_RECORD_CHARS = 4096  # a record is ~300 characters; anything much longer is not one


class BadRecord(ValueError):
    """The text is not a credential record of ours; the message says what is wrong."""


def record_to_json(record: StoredCredentials) -> str:
    return json.dumps({
        "v": RECORD_VERSION,
        "order_id": record.order_id,
        "pin_hash": record.pin_hash.encoded,
        "qr_hash": record.qr_hash.encoded,
        "expires_at": int(record.expires_at),
        "used_at": record.used_at,
        "failed_attempts": record.failed_attempts,
        "locked_until": record.locked_until,
        "lockouts": record.lockouts,
    }, sort_keys=True, separators=(",", ":"))


def _optional_time(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRecord(f"{key}: must be a finite number or null, got {value!r}")
    return float(value)


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRecord(f"{key}: must be an integer >= 0, got {value!r}")
    return value


def _hash(data: dict[str, Any], key: str) -> SecretHash:
    value = data.get(key)
    try:
        if isinstance(value, str):
            return SecretHash(value)
    except ValueError:
        pass
    raise BadRecord(f"{key}: not an encoded scrypt hash")


def record_from_json(text: str) -> StoredCredentials:
    """The record in `text`; BadRecord (never another exception) when it is not one."""
    if len(text) > MAX_RECORD_CHARS:
        raise BadRecord(f"record longer than {MAX_RECORD_CHARS} characters")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise BadRecord(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise BadRecord("a record is a JSON object")
    if data.get("v") != RECORD_VERSION:
        raise BadRecord(f"unknown record version {data.get('v')!r} (expected {RECORD_VERSION})")
    order_id = data.get("order_id")
    if not isinstance(order_id, str) or not 0 < len(order_id) <= MAX_ORDER_ID_CHARS:
        raise BadRecord(f"order_id: must be 1..{MAX_ORDER_ID_CHARS} characters")
    pin_hash, qr_hash = _hash(data, "pin_hash"), _hash(data, "qr_hash")
    expires_at = data.get("expires_at")
    if isinstance(expires_at, bool) or not isinstance(expires_at, int):
        raise BadRecord(f"expires_at: must be an integer (s), got {expires_at!r}")
    return StoredCredentials(
        order_id=order_id, pin_hash=pin_hash, qr_hash=qr_hash, expires_at=expires_at,
        used_at=_optional_time(data, "used_at"),
        failed_attempts=_count(data, "failed_attempts"),
        locked_until=_optional_time(data, "locked_until"),
        lockouts=_count(data, "lockouts"))

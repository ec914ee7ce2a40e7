"""The credential record on the wire: round trip, and clear refusals of anything else."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from delivery_robot.credentials import ScryptParams
from delivery_robot.handoff_credentials import CredentialPolicy, HandoffCredentials
from delivery_robot.handoff_record import BadRecord, record_from_json, record_to_json

FAST = ScryptParams(log2_n=1, r=1, p=1)


def issued() -> tuple[HandoffCredentials, str, str]:
    book = HandoffCredentials(CredentialPolicy(secret_key=b"k" * 32, pin_hash_cost=FAST))
    creds = book.issue("o-1", 100.0)
    return book, creds.pin, creds.qr_token


def test_round_trip_keeps_hashes_and_counters_and_verifies_on_another_book() -> None:
    book, pin, token = issued()
    record = book.record("o-1")
    assert record is not None
    record = replace(record, failed_attempts=2, locked_until=500.5, lockouts=1)
    text = record_to_json(record)
    assert pin not in text
    assert token not in text
    back = record_from_json(text)
    assert back == record
    robot = HandoffCredentials(CredentialPolicy(secret_key=b"k" * 32, pin_hash_cost=FAST))
    robot.add(replace(back, locked_until=None, failed_attempts=0))
    assert robot.verify("o-1", 0, pin, 200.0).granted


@pytest.mark.parametrize(("change", "why"), [
    ({"v": 2}, "version"),
    ({"order_id": ""}, "order_id"),
    ({"pin_hash": "plain-pin"}, "pin_hash"),
    ({"qr_hash": None}, "qr_hash"),
    ({"expires_at": "soon"}, "expires_at"),
    ({"failed_attempts": -1}, "failed_attempts"),
    ({"used_at": "yesterday"}, "used_at"),
])
def test_bad_fields_are_named(change: dict[str, object], why: str) -> None:
    book, _, _ = issued()
    record = book.record("o-1")
    assert record is not None
    data = json.loads(record_to_json(record))
    data.update(change)
    with pytest.raises(BadRecord, match=why):
        record_from_json(json.dumps(data))


@pytest.mark.parametrize("text", ["", "[1]", "{", "x" * 5000, '"v"'])
def test_non_records_are_refused(text: str) -> None:
    with pytest.raises(BadRecord):
        record_from_json(text)

"""The KPI report of a simulated day: definitions on hand-made order traces."""

from __future__ import annotations

import json

import pytest

from delivery_robot.order_lifecycle import OrderState
from delivery_robot.sim_report import (
    KPI_KEYS,
    OrderTrace,
    RunFacts,
    build_report,
    compare_reports,
    format_table,
    percentile,
    reason_key,
    to_json,
)

S = OrderState


def trace(order_id: str, *steps: tuple[OrderState, float], reason: str = "") -> OrderTrace:
    t = OrderTrace(order_id, "bakery", key=f"k-{order_id}", submitted_at=steps[0][1])
    for sequence, (state, at) in enumerate(steps, start=1):
        t.add(sequence, int(state), at, reason if sequence == len(steps) else "", "robot1")
    return t


def delivered(order_id: str, start: float, took: float) -> OrderTrace:
    return trace(order_id, (S.REQUESTED, start), (S.ASSIGNED, start + 1),
                 (S.TO_PICKUP, start + 1), (S.AWAITING_LOAD, start + 60),
                 (S.IN_TRANSIT, start + 120), (S.AWAITING_RECIPIENT, start + took - 30),
                 (S.DELIVERED, start + took))


def facts(**overrides: object) -> RunFacts:
    values: dict[str, object] = {"world": "town", "robots": 2, "seed": 1,
                                 "sim_seconds": 7200.0, "wall_seconds": 600.0,
                                 "promise_s": 1800.0}
    values.update(overrides)
    return RunFacts(**values)  # type: ignore[arg-type]


def test_delivery_times_on_time_rate_and_throughput() -> None:
    traces = [delivered("a", 0.0, 600.0), delivered("b", 100.0, 1200.0),
              delivered("c", 200.0, 2400.0)]  # c is late (promise 1800 s)
    report = build_report(traces, facts())
    assert report["orders"] == 3
    assert report["delivered"] == 3
    assert report["mean_delivery_s"] == pytest.approx(1400.0)
    assert report["p95_delivery_s"] == pytest.approx(2280.0)  # 1200 + 0.9 * 1200
    assert report["on_time_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["deliveries_per_robot_hour"] == pytest.approx(3 / (2 * 2.0))
    assert report["speedup"] == pytest.approx(12.0)
    assert report["failed"] == {}
    assert report["open"] == {}


def test_failures_by_reason_cancellations_and_open_orders() -> None:
    traces = [
        delivered("a", 0.0, 500.0),
        trace("f1", (S.REQUESTED, 0.0), (S.ASSIGNED, 1.0), (S.FAILED, 90.0),
              reason="navigation_failed: BLOCKED on lane x"),
        trace("f2", (S.REQUESTED, 0.0), (S.ASSIGNED, 1.0), (S.FAILED, 95.0),
              reason="navigation_failed: NO_PATH to y"),
        trace("f3", (S.REQUESTED, 0.0), (S.FAILED, 5.0), reason="not_loaded"),
        trace("c", (S.REQUESTED, 0.0), (S.CANCELLED, 10.0), reason="cancelled by shop"),
        trace("late_open", (S.REQUESTED, 1000.0), (S.ASSIGNED, 1001.0)),  # 6200 s > promise
        trace("fresh_open", (S.REQUESTED, 7000.0)),  # 200 s: outcome not known yet
    ]
    report = build_report(traces, facts())
    assert report["orders"] == 7
    assert report["delivered"] == 1
    assert report["failed"] == {"navigation_failed": 2, "not_loaded": 1}
    assert report["cancelled"] == 1
    assert report["open"] == {"assigned": 1, "requested": 1}
    # known outcomes: a (on time), f1, f2, f3, late_open -> 1 / 5
    assert report["on_time_rate"] == pytest.approx(0.2)


def test_events_out_of_order_and_duplicates_count_once() -> None:
    t = OrderTrace("x", "bakery")
    assert t.add(2, int(S.ASSIGNED), 5.0)
    assert t.add(1, int(S.REQUESTED), 0.0)
    assert not t.add(2, int(S.ASSIGNED), 5.0)
    assert t.state is S.ASSIGNED
    assert t.requested_at == 0.0


def test_no_orders_and_no_time_give_none_not_errors() -> None:
    report = build_report([], facts(sim_seconds=0.0, wall_seconds=0.0))
    assert report["orders"] == 0
    assert report["mean_delivery_s"] is None
    assert report["on_time_rate"] is None
    assert report["deliveries_per_robot_hour"] is None
    assert report["speedup"] is None
    assert report["dispatch_p95_ms"] is None
    format_table(report)  # renders


def test_report_has_every_issue_key_and_is_json() -> None:
    report = build_report([delivered("a", 0.0, 600.0)], facts(
        distance_m=1234.56, safety_stops=3, submit_latencies_s=[0.1, 0.2, 0.3],
        extra={"lockstep": {"steps": 10}}))
    assert set(KPI_KEYS) <= set(report)
    assert list(report)[:len(KPI_KEYS)] == list(KPI_KEYS)
    assert report["distance_m"] == 1234.6
    assert report["dispatch_p95_ms"] == pytest.approx(290.0)
    assert json.loads(to_json(report))["lockstep"] == {"steps": 10}


def test_table_names_every_kpi_and_flags_a_partial_run() -> None:
    report = build_report([delivered("a", 0.0, 600.0)], facts(interrupted=True))
    table = format_table(report)
    for label in ("orders accepted", "delivered", "failed", "mean delivery time",
                  "on time", "deliveries per robot-hour", "distance driven", "safety stops",
                  "speed-up", "wall time"):
        assert label in table
    assert "INTERRUPTED" in table


def test_compare_reports_ignores_wall_clock_keys() -> None:
    a = build_report([delivered("a", 0.0, 600.0)], facts(wall_seconds=100.0))
    b = build_report([delivered("a", 0.0, 600.0)], facts(wall_seconds=90.0))
    assert compare_reports(a, b) == {}
    c = build_report([delivered("a", 0.0, 660.0)], facts())
    assert compare_reports(a, c) == {"mean_delivery_s": (600.0, 660.0),
                                     "p95_delivery_s": (600.0, 660.0)}


def test_percentile_and_reason_key() -> None:
    assert percentile([], 95) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert reason_key("navigation_failed: x: y") == "navigation_failed"
    assert reason_key("") == "unspecified"

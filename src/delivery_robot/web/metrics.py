"""Delivery KPIs computed from the store's transition history (the one source of truth).

Per order: seconds from request to assigned, to picked up (loaded: in_transit), to delivered,
and the handoff wait (robot at the door -> delivered), and whether a delivered order met its
promised time (`promised_by`, set at submit). Per fleet: deliveries per robot-hour over the
observed window, and the on-time rate: delivered by the promise / delivered with a promise
(None while no promised order was delivered).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from delivery_robot.order_lifecycle import OrderState
from delivery_robot.order_store import OrderEvent, StoredOrder

_S = OrderState


@dataclass(frozen=True)
class OrderKpis:
    order_id: str
    shop_id: str
    state: OrderState
    robot_id: str | None
    requested_at: float
    to_assigned_s: float | None
    to_picked_up_s: float | None
    to_delivered_s: float | None
    handoff_wait_s: float | None
    promised_by: float | None = None
    on_time: bool | None = None  # delivered by the promise; None: not delivered or no promise


@dataclass(frozen=True)
class FleetKpis:
    orders: int
    delivered: int
    cancelled: int
    failed: int
    open: int
    robots: int
    window_s: float
    deliveries_per_robot_hour: float | None
    on_time_rate: float | None
    mean_to_assigned_s: float | None
    mean_to_picked_up_s: float | None
    mean_to_delivered_s: float | None
    mean_handoff_wait_s: float | None
    delivered_on_time: int = 0
    delivered_late: int = 0


def order_kpis(order: StoredOrder, history: Sequence[OrderEvent]) -> OrderKpis:
    start = history[0].at if history else order.created_at

    def first(state: OrderState) -> float | None:
        return next((e.at for e in history if e.state is state and e.sequence > 1), None)

    assigned, loaded, delivered = first(_S.ASSIGNED), first(_S.IN_TRANSIT), first(_S.DELIVERED)
    at_door = None
    if delivered is not None:  # the last arrival at the door before the handoff
        at_door = max((e.at for e in history
                       if e.state is _S.AWAITING_RECIPIENT and e.at <= delivered), default=None)
    return OrderKpis(
        order_id=order.order_id, shop_id=order.shop_id, state=order.state,
        robot_id=order.robot_id, requested_at=start,
        to_assigned_s=None if assigned is None else assigned - start,
        to_picked_up_s=None if loaded is None else loaded - start,
        to_delivered_s=None if delivered is None else delivered - start,
        handoff_wait_s=None if delivered is None or at_door is None else delivered - at_door,
        promised_by=order.promised_by,
        on_time=None if delivered is None or order.promised_by is None
        else delivered <= order.promised_by,
    )


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def fleet_kpis(orders: Sequence[OrderKpis], robots: int, now: float) -> FleetKpis:
    """`robots`: robots known to the coordinator over the window (first request -> now)."""
    window = max(0.0, now - min((o.requested_at for o in orders), default=now))
    delivered = sum(1 for o in orders if o.state is _S.DELIVERED)
    robot_hours = robots * window / 3600.0
    on_time = sum(1 for o in orders if o.on_time is True)
    late = sum(1 for o in orders if o.on_time is False)
    return FleetKpis(
        orders=len(orders),
        delivered=delivered,
        cancelled=sum(1 for o in orders if o.state is _S.CANCELLED),
        failed=sum(1 for o in orders if o.state is _S.FAILED),
        open=sum(1 for o in orders if o.state not in (_S.DELIVERED, _S.CANCELLED, _S.FAILED)),
        robots=robots,
        window_s=window,
        deliveries_per_robot_hour=delivered / robot_hours if robot_hours > 0 else None,
        on_time_rate=on_time / (on_time + late) if on_time + late else None,
        mean_to_assigned_s=_mean(o.to_assigned_s for o in orders),
        mean_to_picked_up_s=_mean(o.to_picked_up_s for o in orders),
        mean_to_delivered_s=_mean(o.to_delivered_s for o in orders),
        mean_handoff_wait_s=_mean(o.handoff_wait_s for o in orders),
        delivered_on_time=on_time,
        delivered_late=late,
    )


def prometheus_text(orders: Sequence[OrderKpis], fleet: FleetKpis,
                    robots_online: int) -> str:
    """Prometheus text exposition format 0.0.4 (gauges and summaries without quantiles)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: Iterable[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        # `suffix` is a label set like {state="x"} or a summary suffix like _sum
        lines.extend(f"{name}{suffix} {value:.10g}" for suffix, value in samples)

    by_state = {state: 0 for state in OrderState}
    for o in orders:
        by_state[o.state] += 1
    metric("delivery_orders", "gauge", "Orders by current state.",
           ((f'{{state="{s.label}"}}', float(n)) for s, n in by_state.items()))
    metric("delivery_robots", "gauge", "Robots known to the coordinator.",
           [("", float(fleet.robots))])
    metric("delivery_robots_online", "gauge", "Robots with a recent robot_state.",
           [("", float(robots_online))])
    if fleet.deliveries_per_robot_hour is not None:
        metric("delivery_deliveries_per_robot_hour", "gauge",
               "Delivered orders per robot-hour since the first order.",
               [("", fleet.deliveries_per_robot_hour)])
    if fleet.on_time_rate is not None:
        metric("delivery_on_time_rate", "gauge",
               "Delivered by the promised time / delivered with a promise.",
               [("", fleet.on_time_rate)])
    metric("delivery_deliveries_by_promise", "gauge",
           "Delivered orders with a promise, by whether the promise was met.",
           [('{on_time="true"}', float(fleet.delivered_on_time)),
            ('{on_time="false"}', float(fleet.delivered_late))])
    for name, attr, help_text in (
        ("delivery_request_to_assigned_seconds", "to_assigned_s", "Request to robot assigned."),
        ("delivery_request_to_picked_up_seconds", "to_picked_up_s", "Request to goods loaded."),
        ("delivery_request_to_delivered_seconds", "to_delivered_s", "Request to delivered."),
        ("delivery_handoff_wait_seconds", "handoff_wait_s", "Robot at the door to handoff."),
    ):
        values = [v for o in orders if (v := getattr(o, attr)) is not None]
        metric(name, "summary", help_text,
               [("_sum", float(sum(values))), ("_count", float(len(values)))])
    return "\n".join(lines) + "\n"

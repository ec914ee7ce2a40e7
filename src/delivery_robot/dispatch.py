"""Online dispatch: a new order is assigned to a robot, or queued with a reason, at once.

No auction window: the decision is a pure function of the order and a snapshot of the fleet,
so a burst of requests never waits for bids. `TimeToFinishDispatcher` picks the robot that
delivers the order soonest given what it already has to do (the order is appended at the end
of its plan), among robots whose compartment fits and whose battery lasts through the
mission and on to the nearest charger with a reserve left. `GreedyNearestIdleDispatcher` is
the measured baseline: nearest idle robot, plans and battery ignored.

Travel times come from an injected `travel_time(a, b) -> seconds | None` and are memoised in
a `RouteCache` shared across orders, so one decision costs O(robots + their plan stops)
lookups, not a shortest-path search per pair. Clear the cache when the route graph changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from delivery_robot.order_intake import SizeClass

TravelTime = Callable[[str, str], float | None]
TravelDistance = Callable[[str, str], float | None]


@dataclass(frozen=True)
class Leg:
    time_s: float
    distance_m: float


class RouteCache:
    """Memoised travel time and distance between waypoints (None = no route).

    Without a `travel_distance`, metres are estimated as time x `cruise_speed_mps`, which is
    what the battery model needs and no more.
    """

    def __init__(
        self,
        travel_time: TravelTime,
        travel_distance: TravelDistance | None = None,
        cruise_speed_mps: float = 1.2,
    ) -> None:
        if cruise_speed_mps <= 0:
            raise ValueError("cruise_speed_mps must be > 0")
        self._travel_time = travel_time
        self._travel_distance = travel_distance
        self._cruise_speed_mps = cruise_speed_mps
        self._legs: dict[tuple[str, str], Leg | None] = {}
        self._nearest: dict[tuple[str, tuple[str, ...]], tuple[str, Leg] | None] = {}

    def leg(self, start: str, goal: str) -> Leg | None:
        key = (start, goal)
        try:
            return self._legs[key]
        except KeyError:
            pass
        leg: Leg | None
        if start == goal:
            leg = Leg(0.0, 0.0)
        else:
            time_s = self._travel_time(start, goal)
            if time_s is None:
                leg = None
            else:
                distance = (
                    self._travel_distance(start, goal)
                    if self._travel_distance is not None
                    else None
                )
                leg = Leg(time_s, time_s * self._cruise_speed_mps if distance is None else distance)
        self._legs[key] = leg
        return leg

    def nearest(self, start: str, goals: tuple[str, ...]) -> tuple[str, Leg] | None:
        """The goal reached soonest from `start` (ties by name), or None if none is reachable."""
        key = (start, goals)
        if key in self._nearest:
            return self._nearest[key]
        best: tuple[str, Leg] | None = None
        for goal in sorted(goals):
            leg = self.leg(start, goal)
            if leg is not None and (best is None or leg.time_s < best[1].time_s):
                best = (goal, leg)
        self._nearest[key] = best
        return best

    def clear(self) -> None:
        self._legs.clear()
        self._nearest.clear()


@dataclass(frozen=True)
class PlannedStop:
    """A stop still ahead of a robot: it arrives `eta_s` from now and stays `service_s`."""

    waypoint: str
    eta_s: float
    service_s: float = 0.0

    @property
    def done_s(self) -> float:
        return self.eta_s + self.service_s


@dataclass(frozen=True)
class RobotSnapshot:
    """What dispatch knows of one robot. `waypoint` is where it is or the next one it reaches."""

    robot_id: str
    waypoint: str
    battery: float  # state of charge, 0.0 .. 1.0
    size_class: SizeClass
    max_payload_kg: float
    plan: tuple[PlannedStop, ...] = ()
    available: bool = True  # False: offline, e-stop, fault, or held by the operator

    @property
    def idle(self) -> bool:
        return self.available and not self.plan


@dataclass(frozen=True)
class DispatchOrder:
    order_id: str
    pickup_waypoint: str
    dropoff_waypoint: str
    size: SizeClass
    weight_kg: float


@dataclass(frozen=True)
class ServiceTimes:
    """Expected time spent at stops (s): loading at the shop, handing over at the dropoff."""

    load_s: float = 60.0
    handoff_s: float = 120.0


@dataclass(frozen=True)
class BatteryModel:
    """Energy as a fraction of a full battery: per metre driven plus per second powered.

    A robot takes an order only if, after finishing its plan and the order, it still reaches
    the nearest charger with at least `reserve` left. Charging within the current plan is not
    credited, which errs on the safe side.
    """

    chargers: tuple[str, ...]
    reserve: float = 0.15
    per_m: float = 1.0 / 20_000.0  # 20 km of driving per charge
    per_s: float = 1.0 / (10 * 3600.0)  # 10 h of electronics per charge

    def __post_init__(self) -> None:
        if not self.chargers:
            raise ValueError("battery model needs at least one charger waypoint")
        if not 0.0 <= self.reserve < 1.0 or self.per_m < 0 or self.per_s < 0:
            raise ValueError(f"battery model out of range: {self}")

    def use(self, distance_m: float, duration_s: float) -> float:
        return self.per_m * distance_m + self.per_s * duration_s


@dataclass(frozen=True)
class Assignment:
    """Times in seconds from now. `battery_at_charger` is None when the dispatcher ignores it."""

    order_id: str
    robot_id: str
    pickup_eta_s: float
    dropoff_eta_s: float
    finish_s: float  # handoff done: the cost being minimised
    charger: str | None = None
    battery_at_charger: float | None = None


class QueueReason(StrEnum):
    """Why a robot cannot take the order; the queue reason is the most telling of these."""

    NO_ROBOTS = "no_robots"
    UNAVAILABLE = "unavailable"
    NOT_IDLE = "not_idle"
    NO_CAPACITY = "no_capacity"
    UNREACHABLE = "unreachable"
    LOW_BATTERY = "low_battery"


# A robot that got further through the checks says more about what the order waits for:
# "low battery" (it will charge) is more telling than "unavailable".
_REASON_RANK = {
    QueueReason.NO_ROBOTS: 0,
    QueueReason.UNAVAILABLE: 1,
    QueueReason.NOT_IDLE: 2,
    QueueReason.NO_CAPACITY: 3,
    QueueReason.UNREACHABLE: 4,
    QueueReason.LOW_BATTERY: 5,
}


@dataclass(frozen=True)
class Exclusion:
    reason: QueueReason
    detail: str


@dataclass(frozen=True)
class Queued:
    """No robot can take the order now; `excluded` says why for each robot."""

    order_id: str
    reason: QueueReason
    message: str
    excluded: Mapping[str, Exclusion] = field(default_factory=dict)


DispatchDecision = Assignment | Queued


class Dispatcher(Protocol):
    def assign(self, order: DispatchOrder, robots: Sequence[RobotSnapshot]) -> DispatchDecision:
        """Decide at once: a robot for the order, or the reason it waits."""
        ...


def _fits(robot: RobotSnapshot, order: DispatchOrder) -> Exclusion | None:
    if robot.size_class < order.size:
        return Exclusion(
            QueueReason.NO_CAPACITY,
            f"compartment {robot.size_class.label} < order size {order.size.label}",
        )
    if robot.max_payload_kg < order.weight_kg:
        return Exclusion(
            QueueReason.NO_CAPACITY,
            f"payload {robot.max_payload_kg:g} kg < order {order.weight_kg:g} kg",
        )
    return None


def _queued(order: DispatchOrder, excluded: dict[str, Exclusion]) -> Queued:
    if not excluded:
        reason = QueueReason.NO_ROBOTS
        return Queued(order.order_id, reason, f"queued ({reason.value}): the fleet is empty", {})
    reason = max((e.reason for e in excluded.values()), key=_REASON_RANK.__getitem__)
    counts: dict[QueueReason, int] = {}
    for exclusion in excluded.values():
        counts[exclusion.reason] = counts.get(exclusion.reason, 0) + 1
    summary = ", ".join(
        f"{count} {why.value}"
        for why, count in sorted(counts.items(), key=lambda item: -_REASON_RANK[item[0]])
    )
    examples = "; ".join(
        f"{robot_id}: {e.detail}" for robot_id, e in sorted(excluded.items()) if e.reason == reason
    )
    return Queued(
        order.order_id,
        reason,
        f"queued ({reason.value}): no robot can take order {order.order_id} now "
        f"[{summary}] — {examples}",
        dict(excluded),
    )


def _plan_end(robot: RobotSnapshot, routes: RouteCache) -> tuple[str, float, float] | None:
    """Where and when (s from now) the robot's plan ends, and the metres it drives to get there."""
    here = robot.waypoint
    metres = 0.0
    for stop in robot.plan:
        leg = routes.leg(here, stop.waypoint)
        if leg is None:
            return None
        metres += leg.distance_m
        here = stop.waypoint
    done = robot.plan[-1].done_s if robot.plan else 0.0
    return here, done, metres


class TimeToFinishDispatcher:
    """Assign to the robot that finishes the order soonest, within compartment and battery."""

    def __init__(
        self,
        routes: RouteCache,
        battery: BatteryModel,
        service: ServiceTimes | None = None,
    ) -> None:
        self._routes = routes
        self._battery = battery
        self._service = service or ServiceTimes()

    def assign(self, order: DispatchOrder, robots: Sequence[RobotSnapshot]) -> DispatchDecision:
        routes = self._routes
        excluded: dict[str, Exclusion] = {}
        delivery = routes.leg(order.pickup_waypoint, order.dropoff_waypoint)
        to_charger = routes.nearest(order.dropoff_waypoint, self._battery.chargers)
        best: Assignment | None = None
        for robot in robots:
            if not robot.available:
                excluded[robot.robot_id] = Exclusion(QueueReason.UNAVAILABLE, "not available")
                continue
            misfit = _fits(robot, order)
            if misfit is not None:
                excluded[robot.robot_id] = misfit
                continue
            if delivery is None or to_charger is None:
                detail = (
                    f"no route {order.pickup_waypoint} -> {order.dropoff_waypoint}"
                    if delivery is None
                    else f"no charger reachable from {order.dropoff_waypoint}"
                )
                excluded[robot.robot_id] = Exclusion(QueueReason.UNREACHABLE, detail)
                continue
            end = _plan_end(robot, routes)
            approach = None if end is None else routes.leg(end[0], order.pickup_waypoint)
            if end is None or approach is None:
                excluded[robot.robot_id] = Exclusion(
                    QueueReason.UNREACHABLE, f"no route to pickup {order.pickup_waypoint}"
                )
                continue
            _, free_s, plan_m = end
            pickup_eta = free_s + approach.time_s
            dropoff_eta = pickup_eta + self._service.load_s + delivery.time_s
            finish = dropoff_eta + self._service.handoff_s
            charger, charge_leg = to_charger
            used = self._battery.use(
                plan_m + approach.distance_m + delivery.distance_m + charge_leg.distance_m,
                finish + charge_leg.time_s,
            )
            left = robot.battery - used
            if left < self._battery.reserve:
                excluded[robot.robot_id] = Exclusion(
                    QueueReason.LOW_BATTERY,
                    f"would reach charger {charger} with {left:.0%}, "
                    f"reserve is {self._battery.reserve:.0%}",
                )
                continue
            candidate = Assignment(
                order_id=order.order_id,
                robot_id=robot.robot_id,
                pickup_eta_s=pickup_eta,
                dropoff_eta_s=dropoff_eta,
                finish_s=finish,
                charger=charger,
                battery_at_charger=left,
            )
            if best is None or (candidate.finish_s, candidate.robot_id) < (
                best.finish_s,
                best.robot_id,
            ):
                best = candidate
        return best if best is not None else _queued(order, excluded)


class GreedyNearestIdleDispatcher:
    """Baseline: the idle robot nearest to the pickup by travel time.

    Keeps only the physical must-haves (the goods fit, the route exists); ignores plans (busy
    robots are never chosen) and battery. Kept to measure the real dispatcher against.
    """

    def __init__(self, routes: RouteCache, service: ServiceTimes | None = None) -> None:
        self._routes = routes
        self._service = service or ServiceTimes()

    def assign(self, order: DispatchOrder, robots: Sequence[RobotSnapshot]) -> DispatchDecision:
        excluded: dict[str, Exclusion] = {}
        delivery = self._routes.leg(order.pickup_waypoint, order.dropoff_waypoint)
        best: tuple[float, str, Leg] | None = None
        for robot in robots:
            if not robot.available:
                excluded[robot.robot_id] = Exclusion(QueueReason.UNAVAILABLE, "not available")
                continue
            if robot.plan:
                excluded[robot.robot_id] = Exclusion(QueueReason.NOT_IDLE, "busy with a plan")
                continue
            misfit = _fits(robot, order)
            if misfit is not None:
                excluded[robot.robot_id] = misfit
                continue
            approach = self._routes.leg(robot.waypoint, order.pickup_waypoint)
            if approach is None or delivery is None:
                excluded[robot.robot_id] = Exclusion(
                    QueueReason.UNREACHABLE, "no route to the pickup or on to the dropoff"
                )
                continue
            if best is None or (approach.time_s, robot.robot_id) < best[:2]:
                best = (approach.time_s, robot.robot_id, approach)
        if best is None or delivery is None:
            return _queued(order, excluded)
        approach_s, robot_id, _ = best
        dropoff_eta = approach_s + self._service.load_s + delivery.time_s
        return Assignment(
            order_id=order.order_id,
            robot_id=robot_id,
            pickup_eta_s=approach_s,
            dropoff_eta_s=dropoff_eta,
            finish_s=dropoff_eta + self._service.handoff_s,
        )


def with_order_appended(
    robot: RobotSnapshot, assignment: Assignment, order: DispatchOrder, service: ServiceTimes
) -> RobotSnapshot:
    """The robot's snapshot after taking the order, for deciding the next one in a burst."""
    if assignment.robot_id != robot.robot_id:
        raise ValueError(f"assignment is for {assignment.robot_id}, not {robot.robot_id}")
    stops = (
        PlannedStop(order.pickup_waypoint, assignment.pickup_eta_s, service.load_s),
        PlannedStop(order.dropoff_waypoint, assignment.dropoff_eta_s, service.handoff_s),
    )
    return replace(robot, plan=robot.plan + stops)

"""Re-optimise the coordinator's open, not-yet-loaded assignments (issue 3, item 5).

The online dispatcher decides each order at once, appended to one robot's plan; this looks
at all open orders together now and then and says which robot should take which, in what
order, under a time limit. It only plans orders that are still movable: not loaded, and
whose robot has not reached the shop (the caller leaves the others out and keeps them in the
robot's committed `plan`). A robot starts where its committed plan ends, when it ends.

The model is the PDPTW of `pickup_delivery_planner`: an order is a pickup at the shop
(loading time) and a delivery at the dropoff (handoff time) on one robot; capacity is the
robot's compartments and payload (each order takes one compartment, so a robot with several
compartments may carry several orders from one shop in one trip); the battery must last
through the committed plan and the new stops and on to the nearest charger with the
reserve left (BatteryModel, as the dispatcher checks it; time spent waiting is not
counted); a promised delivery time is soft. The cost, in seconds, is the sum of the orders'
finish times (handoff done, as `TimeToFinishDispatcher` minimises per order), plus
`lateness_weight` per second past a promise; an order no robot can take stays unassigned.

A new plan is only worth moving robots for when it beats the current assignment (each robot
does its orders in the given order) by `min_gain_s` and `min_gain`; otherwise `moves` is
empty.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from delivery_robot.dispatch import (
    Assignment,
    BatteryModel,
    PlannedStop,
    RobotSnapshot,
    RouteCache,
    ServiceTimes,
)
from delivery_robot.order_intake import SizeClass
from delivery_robot.pickup_delivery_planner import (
    InfeasibleRoutes,
    Objective,
    PdpProblem,
    PdpSolution,
    PlannerSettings,
    Request,
    SolveMethod,
    Vehicle,
    Visit,
    VisitKind,
    evaluate_routes,
    plan,
)

_PPM = 1e6  # battery fractions are planned in parts per million, so they survive rounding
_GRAMS = 1000  # payload is planned in grams


@dataclass(frozen=True)
class OpenOrder:
    """An order the planner may move: not loaded, its robot (if any) not at the shop yet."""

    order_id: str
    pickup_waypoint: str
    dropoff_waypoint: str
    size: SizeClass
    weight_kg: float
    robot_id: str | None = None  # assigned robot; None = queued
    due_s: float | None = None  # promised: handoff done within this many seconds from now


@dataclass(frozen=True)
class ReplanSettings:
    time_limit_s: float = 0.5  # the whole call: building the model, greedy and OR-Tools
    lateness_weight: int = 10  # cost of a second past the promise, vs 1 per second of finish
    metre_weight: float = 0.001  # breaks ties towards shorter drives (cost in s per metre)
    min_gain_s: float = 60.0  # the new plan must save at least this much summed finish time
    min_gain: float = 0.05  # ... and at least this fraction of the current plan's cost
    max_orders: int = 150  # plan at most this many open orders (the first ones given)

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0 or self.lateness_weight < 0 or self.metre_weight < 0:
            raise ValueError(f"replan settings out of range: {self}")
        if self.min_gain_s < 0 or not 0 <= self.min_gain < 1 or self.max_orders < 1:
            raise ValueError(f"replan settings out of range: {self}")


@dataclass(frozen=True)
class Move:
    order_id: str
    from_robot: str | None  # None: the order was queued
    to_robot: str


@dataclass(frozen=True)
class FleetReplan:
    """The planner's answer. Times are seconds from now, like the dispatcher's."""

    moves: tuple[Move, ...]  # what to change; empty when the gain is too small
    assignments: Mapping[str, Assignment]  # order id -> robot and ETAs in the new plan
    sequences: Mapping[str, tuple[str, ...]]  # robot id -> its orders in pickup order
    stops: Mapping[str, tuple[PlannedStop, ...]]  # robot id -> new stops after committed ones
    unassigned: Mapping[str, str]  # order id -> why no robot takes it in the new plan
    cost_before: float  # the current assignment (math.inf if it breaks a constraint)
    cost_after: float
    method: SolveMethod
    note: str
    elapsed_s: float
    skipped: tuple[str, ...] = field(default_factory=tuple)  # over max_orders, not planned

    @property
    def improved(self) -> bool:
        return bool(self.moves)


def _fits(robot: RobotSnapshot, order: OpenOrder) -> bool:
    return (robot.available and robot.size_class >= order.size
            and robot.max_payload_kg >= order.weight_kg)


class FleetReplanner:
    """Builds the PDPTW from the coordinator's view and plans it under a time limit."""

    def __init__(
        self,
        routes: RouteCache,
        battery: BatteryModel,
        service: ServiceTimes | None = None,
        settings: ReplanSettings | None = None,
    ) -> None:
        self._routes = routes
        self._battery = battery
        self._service = service or ServiceTimes()
        self._settings = settings or ReplanSettings()

    def replan(
        self,
        orders: Sequence[OpenOrder],
        robots: Sequence[RobotSnapshot],
        compartments: Mapping[str, int] | None = None,
    ) -> FleetReplan:
        """A better assignment of `orders`, or none (empty `moves`) if it is not worth it.

        `robots[i].plan` holds only committed stops (loaded orders, orders at the shop);
        `compartments` gives each robot's compartment count (default 1). Pure: nothing is
        changed; the caller applies the moves it still agrees with.
        """
        started = time.monotonic()
        settings = self._settings
        ids = [o.order_id for o in orders]
        if len(set(ids)) != len(ids):
            raise ValueError("open orders must have unique ids")
        robot_ids = [r.robot_id for r in robots]
        if len(set(robot_ids)) != len(robot_ids):
            raise ValueError("robots must have unique ids")
        counts = dict(compartments or {})
        if any(c < 0 for c in counts.values()):
            raise ValueError("compartment counts must be >= 0")
        planned, skipped = list(orders[:settings.max_orders]), orders[settings.max_orders:]
        fleet = [r for r in robots if r.available]
        if not planned or not fleet:
            why = "no open orders" if not planned else "no available robot"
            return FleetReplan((), {}, {}, {}, {o.order_id: why for o in planned}, 0.0, 0.0,
                               SolveMethod.GREEDY, why, time.monotonic() - started,
                               tuple(o.order_id for o in skipped))

        places = sorted({o.pickup_waypoint for o in planned} | {o.dropoff_waypoint
                                                                 for o in planned})
        starts: dict[str, tuple[str, float, float]] = {}  # robot -> (where, ready, energy)
        for robot in fleet:
            starts[robot.robot_id] = self._plan_end(robot)
        places = sorted(set(places) | {where for where, _, _ in starts.values()})
        index = {name: i for i, name in enumerate(places)}
        n = len(places)
        times = [[math.inf] * n for _ in range(n)]
        metres = [[math.inf] * n for _ in range(n)]
        for a, origin in enumerate(places):
            for b, goal in enumerate(places):
                leg = self._routes.leg(origin, goal)
                if leg is not None:
                    times[a][b], metres[a][b] = leg.time_s, leg.distance_m
        battery = self._battery
        # Battery per arc, counting the longer of the two services at its end (conservative).
        stop_s = max(self._service.load_s, self._service.handoff_s)
        energy = [[_PPM * battery.use(metres[a][b], times[a][b] + stop_s)
                   if math.isfinite(times[a][b]) and math.isfinite(metres[a][b]) else math.inf
                   for b in range(n)] for a in range(n)]
        closing = []
        for name in places:
            nearest = self._routes.nearest(name, battery.chargers)
            closing.append(math.inf if nearest is None else
                           _PPM * battery.use(nearest[1].distance_m, nearest[1].time_s))

        vehicles = []
        for robot in fleet:
            where, ready, used = starts[robot.robot_id]
            budget = max(0.0, robot.battery - battery.reserve - used)
            vehicles.append(Vehicle(
                robot.robot_id, index[where], None,
                (counts.get(robot.robot_id, 1), round(robot.max_payload_kg * _GRAMS)),
                ready=ready, range_budget=_PPM * budget))
        service = self._service
        requests = []
        for order in planned:
            due = None if order.due_s is None else order.due_s - service.handoff_s
            requests.append(Request(
                order.order_id,
                Visit(index[order.pickup_waypoint], service=service.load_s),
                Visit(index[order.dropoff_waypoint], service=service.handoff_s, due=due),
                (1, math.ceil(order.weight_kg * _GRAMS)),
                frozenset(r.robot_id for r in fleet if _fits(r, order)),
            ))
        # Completion counts each handoff's start; the handoffs themselves add a constant.
        objective = Objective(distance=settings.metre_weight, completion=1,
                              lateness=settings.lateness_weight, unassigned=1e6)
        problem = PdpProblem(times, requests, vehicles, distance=metres, range_use=energy,
                             range_closing=closing, objective=objective)
        current = self._current_cost(problem, planned, fleet)
        left = settings.time_limit_s - (time.monotonic() - started)
        solution = plan(problem, PlannerSettings(time_limit_s=max(left, 1e-3)))
        return self._result(planned, skipped, fleet, solution, current, started)

    # -- internals -----------------------------------------------------------------------

    def _plan_end(self, robot: RobotSnapshot) -> tuple[str, float, float]:
        """Where the committed plan ends, when, and the battery it uses to get there."""
        here, metres = robot.waypoint, 0.0
        for stop in robot.plan:
            leg = self._routes.leg(here, stop.waypoint)
            if leg is None:
                return robot.plan[-1].waypoint, robot.plan[-1].done_s, math.inf
            metres += leg.distance_m
            here = stop.waypoint
        done = robot.plan[-1].done_s if robot.plan else 0.0
        return here, done, self._battery.use(metres, done)

    @staticmethod
    def _current_cost(problem: PdpProblem, planned: Sequence[OpenOrder],
                      fleet: Sequence[RobotSnapshot]) -> float:
        on_robot: dict[str, list[tuple[str, VisitKind]]] = {}
        in_fleet = {r.robot_id for r in fleet}
        fits = {r.request_id: r.vehicles for r in problem.requests}
        for order in planned:
            robot = order.robot_id
            allowed = fits[order.order_id]
            if robot is None or robot not in in_fleet or allowed is None or robot not in allowed:
                continue  # queued, or on a robot that cannot take it: unassigned now
            on_robot.setdefault(robot, []).extend(
                [(order.order_id, VisitKind.PICKUP), (order.order_id, VisitKind.DELIVERY)])
        try:
            return evaluate_routes(problem, on_robot).cost
        except InfeasibleRoutes:
            return math.inf

    def _result(self, planned: Sequence[OpenOrder], skipped: Sequence[OpenOrder],
                fleet: Sequence[RobotSnapshot], solution: PdpSolution, current: float,
                started: float) -> FleetReplan:
        service = self._service
        by_id = {o.order_id: o for o in planned}
        assignments: dict[str, Assignment] = {}
        sequences: dict[str, tuple[str, ...]] = {}
        stops: dict[str, tuple[PlannedStop, ...]] = {}
        for route in solution.routes:
            if not route.visits:
                continue
            pickups: dict[str, float] = {}
            robot_stops = []
            for visit in route.visits:
                order = by_id[visit.request_id]
                if visit.kind == VisitKind.PICKUP:
                    pickups[visit.request_id] = visit.arrival
                    robot_stops.append(PlannedStop(order.pickup_waypoint, visit.start,
                                                   service.load_s))
                else:
                    robot_stops.append(PlannedStop(order.dropoff_waypoint, visit.start,
                                                   service.handoff_s))
                    assignments[visit.request_id] = Assignment(
                        visit.request_id, route.vehicle_id, pickups[visit.request_id],
                        visit.arrival, visit.start + service.handoff_s)
            sequences[route.vehicle_id] = tuple(pickups)
            stops[route.vehicle_id] = tuple(robot_stops)
        reasons = {}
        fits_any = {o.order_id: any(_fits(r, o) for r in fleet) for o in planned}
        for order_id in solution.unassigned:
            reasons[order_id] = ("no available robot fits it (size, payload)"
                                 if not fits_any[order_id] else
                                 "no robot can take it within battery and routes")
        gain = current - solution.cost
        settings = self._settings
        needed = max(settings.min_gain_s,
                     settings.min_gain * current if math.isfinite(current) else 0.0)
        moves: tuple[Move, ...] = ()
        note = solution.note
        in_fleet = {r.robot_id for r in fleet}
        dropped = sorted(o.order_id for o in planned
                         if o.robot_id in in_fleet and o.order_id in reasons)
        if dropped:
            # Never take an order away without giving it to someone: keep the current plan.
            note = f"the new plan leaves assigned orders {dropped} out; {note}".rstrip("; ")
        elif gain >= needed:
            moves = tuple(Move(o.order_id, o.robot_id, assignments[o.order_id].robot_id)
                          for o in planned
                          if o.order_id in assignments
                          and assignments[o.order_id].robot_id != o.robot_id)
        else:
            note = f"gain {gain:.0f} s below the threshold {needed:.0f} s; {note}".rstrip("; ")
        return FleetReplan(moves, assignments, sequences, stops, reasons, current,
                           solution.cost, solution.method, note, time.monotonic() - started,
                           tuple(o.order_id for o in skipped))

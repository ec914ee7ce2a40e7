"""Pickup and delivery with time windows and capacities (PDPTW), always under a time limit.

The re-optimising planner of the coordinator and the solver of the Li & Lim benchmark. Each
request is a pickup and a delivery on the same vehicle, pickup first; visits have hard time
windows, service times and optional soft due times; vehicles have their own start, optional
end (None = the route ends at its last visit), capacity vector, ready time and range budget.

`plan()` runs a deterministic greedy insertion first (a solution in hand, whatever happens;
past `greedy_share` of the limit it only appends at route ends), then OR-Tools routing
(AddPickupAndDelivery, capacity, time and range dimensions; parallel cheapest insertion +
guided local search with LNS operators) with whatever is left of the time limit, and returns
the better of the two. If OR-Tools gets no time, finds nothing in time or fails, the greedy
solution is returned and `note` says why. `greedy_insertion()` (no deadline) is the measured
baseline. Every solution is re-evaluated in floating point by one evaluator, so the reported
costs and the feasibility check do not depend on the integer rounding OR-Tools needs (travel
times are rounded up, so an integer-feasible route is feasible).

Travel times are assumed to obey the triangle inequality (shortest paths and Euclidean
distances do); the greedy's pruning relies on it, and without it the greedy may miss its
cheapest insertion (never feasibility).
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ortools.constraint_solver import pywrapcp
from ortools.constraint_solver import routing_enums_pb2 as enums

Matrix = Sequence[Sequence[float]]


class VisitKind(StrEnum):
    PICKUP = "pickup"
    DELIVERY = "delivery"


class SolveMethod(StrEnum):
    ORTOOLS = "ortools"
    GREEDY = "greedy"


@dataclass(frozen=True)
class Visit:
    """A stop at `location` (index into the problem's matrices).

    Service may start in [earliest, latest] (waiting is allowed, being late is not); starting
    after `due` is allowed but costs `Objective.lateness` per time unit.
    """

    location: int
    earliest: float = 0.0
    latest: float = math.inf
    service: float = 0.0
    due: float | None = None


@dataclass(frozen=True)
class Request:
    """Carry `demand` from the pickup to the delivery on one vehicle (None = any vehicle)."""

    request_id: str
    pickup: Visit
    delivery: Visit
    demand: tuple[int, ...] = (1,)
    vehicles: frozenset[str] | None = None


@dataclass(frozen=True)
class Vehicle:
    """A vehicle that leaves `start` at `ready` or later and ends at `end` by `latest_end`.

    `end=None` is an open route: it ends where its last visit ends. `range_budget` bounds
    the problem's `range_use` along the route plus `range_closing` from where it ends.
    """

    vehicle_id: str
    start: int
    end: int | None = None
    capacity: tuple[int, ...] = (1,)
    ready: float = 0.0
    latest_end: float = math.inf
    range_budget: float = math.inf


@dataclass(frozen=True)
class Objective:
    """What a solution costs. Weights are per unit of the problem's distance and time.

    `completion` sums the time each delivery starts (time to finish); `lateness` sums the
    time each visit starts after its due. Both must be whole numbers (OR-Tools takes integer
    coefficients); `unassigned` is paid per request left out and should dwarf the rest.
    """

    distance: float = 1.0
    vehicle: float = 0.0
    completion: int = 0
    lateness: int = 0
    unassigned: float = 1e6

    def __post_init__(self) -> None:
        if min(self.distance, self.vehicle, self.completion, self.lateness) < 0:
            raise ValueError(f"objective weights must be >= 0: {self}")
        if self.unassigned <= 0:
            raise ValueError("objective.unassigned must be > 0")
        for name in ("completion", "lateness"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"objective.{name} must be a whole number, got {value!r}")


@dataclass(frozen=True)
class PdpProblem:
    """Matrices are indexed by location; math.inf (or None in a caller's own data, converted
    before it gets here) means there is no route between two locations."""

    travel_time: Matrix
    requests: Sequence[Request]
    vehicles: Sequence[Vehicle]
    distance: Matrix | None = None  # cost of an arc; defaults to travel_time
    range_use: Matrix | None = None  # what an arc uses of a vehicle's range; defaults to distance
    range_closing: Sequence[float] | None = None  # range needed after the route ends, per location
    objective: Objective = field(default_factory=Objective)

    def __post_init__(self) -> None:
        size = len(self.travel_time)
        if size == 0:
            raise ValueError("travel_time matrix is empty")
        for name in ("travel_time", "distance", "range_use"):
            matrix: Matrix | None = getattr(self, name)
            if matrix is None:
                continue
            if len(matrix) != size or any(len(row) != size for row in matrix):
                raise ValueError(f"{name} must be a {size}x{size} matrix")
            if any(value < 0 or math.isnan(value) for row in matrix for value in row):
                raise ValueError(f"{name} has a negative or NaN entry")
        if self.range_closing is not None and len(self.range_closing) != size:
            raise ValueError(f"range_closing must have {size} entries")
        if not self.vehicles:
            raise ValueError("the problem has no vehicles")
        dims = len(self.vehicles[0].capacity)
        names = [v.vehicle_id for v in self.vehicles]
        if len(set(names)) != len(names):
            raise ValueError("vehicle ids must be unique")
        for v in self.vehicles:
            if len(v.capacity) != dims or min(v.capacity, default=0) < 0:
                raise ValueError(f"vehicle {v.vehicle_id}: capacity must be {dims} values >= 0")
            for where in (v.start, v.end):
                if where is not None and not 0 <= where < size:
                    raise ValueError(f"vehicle {v.vehicle_id}: location {where} out of range")
            if v.ready > v.latest_end or v.range_budget < 0:
                raise ValueError(f"vehicle {v.vehicle_id}: ready after latest_end or range < 0")
        ids = [r.request_id for r in self.requests]
        if len(set(ids)) != len(ids):
            raise ValueError("request ids must be unique")
        known = set(names)
        for r in self.requests:
            if len(r.demand) != dims or min(r.demand, default=0) < 0:
                raise ValueError(f"request {r.request_id}: demand must be {dims} values >= 0")
            if r.vehicles is not None and not r.vehicles <= known:
                raise ValueError(
                    f"request {r.request_id}: unknown vehicles {sorted(r.vehicles - known)}"
                )
            for visit in (r.pickup, r.delivery):
                if not 0 <= visit.location < size:
                    raise ValueError(
                        f"request {r.request_id}: location {visit.location} out of range"
                    )
                if visit.earliest > visit.latest or visit.service < 0:
                    raise ValueError(
                        f"request {r.request_id}: time window [{visit.earliest}, "
                        f"{visit.latest}] is empty or service < 0"
                    )


@dataclass(frozen=True)
class ScheduledVisit:
    request_id: str
    kind: VisitKind
    location: int
    arrival: float
    start: float  # service starts (>= arrival when waiting for the window)


@dataclass(frozen=True)
class Route:
    vehicle_id: str
    visits: tuple[ScheduledVisit, ...]
    distance: float
    end_time: float
    cost: float


@dataclass(frozen=True)
class PdpSolution:
    routes: tuple[Route, ...]  # one per vehicle, in the problem's order (empty = unused)
    unassigned: tuple[str, ...]
    distance: float
    cost: float  # the objective, unassigned penalties included
    method: SolveMethod
    note: str = ""
    elapsed_s: float = 0.0

    @property
    def vehicles_used(self) -> int:
        return sum(1 for route in self.routes if route.visits)

    def route_of(self, vehicle_id: str) -> Route:
        for route in self.routes:
            if route.vehicle_id == vehicle_id:
                return route
        raise KeyError(vehicle_id)


class InfeasibleRoutes(ValueError):
    """Routes handed to `evaluate_routes` break a constraint."""


_FIRST_SOLUTIONS = frozenset(enums.FirstSolutionStrategy.Value.keys())
_METAHEURISTICS = frozenset(enums.LocalSearchMetaheuristic.Value.keys())


@dataclass(frozen=True)
class PlannerSettings:
    """How `plan()` searches. `time_limit_s` bounds the whole call, greedy included."""

    time_limit_s: float = 1.0
    scale: int = 1000  # integer resolution for OR-Tools: units per time/distance unit
    first_solution: str = "PARALLEL_CHEAPEST_INSERTION"
    metaheuristic: str = "GUIDED_LOCAL_SEARCH"
    lns_operators: bool = True
    min_solver_s: float = 0.02  # do not start OR-Tools with less time than this left
    # Past this share of the limit the greedy start only appends at route ends (linear time).
    greedy_share: float = 0.4

    def __post_init__(self) -> None:
        if (not self.time_limit_s > 0 or self.scale < 1 or self.min_solver_s < 0
                or not 0 < self.greedy_share <= 1):
            raise ValueError(f"planner settings out of range: {self}")
        if self.first_solution not in _FIRST_SOLUTIONS:
            raise ValueError(f"unknown first_solution strategy {self.first_solution!r}")
        if self.metaheuristic not in _METAHEURISTICS:
            raise ValueError(f"unknown metaheuristic {self.metaheuristic!r}")


# ---- evaluation: one source of truth for feasibility and cost ------------------------------

# Visits are numbered 2*r (pickup of request r) and 2*r + 1 (its delivery).
_Seq = list[int]


@dataclass(frozen=True)
class _RouteEval:
    distance: float
    cost: float
    end_time: float
    arrivals: tuple[float, ...]
    starts: tuple[float, ...]


class _Evaluator:
    def __init__(self, problem: PdpProblem) -> None:
        self.p = problem
        self.time = problem.travel_time
        self.dist = problem.distance if problem.distance is not None else problem.travel_time
        self.use = problem.range_use if problem.range_use is not None else self.dist
        self.closing = problem.range_closing
        self.visits: list[Visit] = []
        for r in problem.requests:
            self.visits += [r.pickup, r.delivery]
        self.dims = len(problem.vehicles[0].capacity)

    def route(self, v: Vehicle, seq: Sequence[int]) -> _RouteEval | str:
        """Schedule `seq` as early as possible; a reason string if it breaks a constraint."""
        if not seq:
            return _RouteEval(0.0, 0.0, v.ready, (), ())
        obj = self.p.objective
        requests = self.p.requests
        load = [0] * self.dims
        on_board: set[int] = set()
        here, t = v.start, v.ready
        distance = used = completion = lateness = 0.0
        arrivals: list[float] = []
        starts: list[float] = []
        for k in seq:
            visit = self.visits[k]
            r = k // 2
            leg = self.time[here][visit.location]
            if math.isinf(leg):
                return f"no route from location {here} to {visit.location}"
            distance += self.dist[here][visit.location]
            used += self.use[here][visit.location]
            arrival = t + leg
            start = max(arrival, visit.earliest)
            if start > visit.latest + 1e-9:
                return (
                    f"{requests[r].request_id} {'delivery' if k % 2 else 'pickup'} would start "
                    f"at {start:.6g} > latest {visit.latest:.6g}"
                )
            demand = requests[r].demand
            if k % 2 == 0:
                if r in on_board:
                    return f"{requests[r].request_id} picked up twice"
                on_board.add(r)
                load = [a + b for a, b in zip(load, demand, strict=True)]
                if any(a > c for a, c in zip(load, v.capacity, strict=True)):
                    return f"capacity {v.capacity} exceeded at {requests[r].request_id} pickup"
            else:
                if r not in on_board:
                    return f"{requests[r].request_id} delivered before its pickup"
                on_board.discard(r)
                load = [a - b for a, b in zip(load, demand, strict=True)]
                completion += start
            if visit.due is not None and start > visit.due:
                lateness += start - visit.due
            arrivals.append(arrival)
            starts.append(start)
            here, t = visit.location, start + visit.service
        if on_board:
            return "a request is picked up but never delivered"
        if v.end is not None:
            leg = self.time[here][v.end]
            if math.isinf(leg):
                return f"no route from location {here} to the end {v.end}"
            distance += self.dist[here][v.end]
            used += self.use[here][v.end]
            t += leg
            here = v.end
        if t > v.latest_end + 1e-9:
            return f"route ends at {t:.6g} > latest_end {v.latest_end:.6g}"
        if self.closing is not None:
            used += self.closing[here]
        if used > v.range_budget + 1e-9:
            return f"uses {used:.6g} of range {v.range_budget:.6g}"
        cost = (
            obj.distance * distance
            + obj.vehicle
            + obj.completion * completion
            + obj.lateness * lateness
        )
        return _RouteEval(distance, cost, t, tuple(arrivals), tuple(starts))

    def solution(
        self,
        seqs: Sequence[Sequence[int]],
        method: SolveMethod,
        note: str,
        elapsed_s: float,
        excluded: Sequence[int] = (),
    ) -> PdpSolution:
        """Build the reported solution; raises InfeasibleRoutes if a route breaks a rule."""
        requests = self.p.requests
        routes = []
        served: set[int] = set()
        distance = cost = 0.0
        for v, seq in zip(self.p.vehicles, seqs, strict=True):
            result = self.route(v, seq)
            if isinstance(result, str):
                raise InfeasibleRoutes(f"vehicle {v.vehicle_id}: {result}")
            for k in seq:
                request = requests[k // 2]
                if k % 2 == 0 and k // 2 in served:
                    raise InfeasibleRoutes(f"{request.request_id} is served twice")
                if not _allowed(request, v):
                    raise InfeasibleRoutes(f"{request.request_id} may not ride on {v.vehicle_id}")
                served.add(k // 2)
            visits = tuple(
                ScheduledVisit(
                    requests[k // 2].request_id,
                    VisitKind.DELIVERY if k % 2 else VisitKind.PICKUP,
                    self.visits[k].location,
                    arrival,
                    start,
                )
                for k, arrival, start in zip(seq, result.arrivals, result.starts, strict=True)
            )
            routes.append(Route(v.vehicle_id, visits, result.distance, result.end_time,
                                result.cost))
            distance += result.distance
            cost += result.cost
        unassigned = tuple(r.request_id for i, r in enumerate(requests) if i not in served)
        cost += self.p.objective.unassigned * len(unassigned)
        return PdpSolution(tuple(routes), unassigned, distance, cost, method, note, elapsed_s)


def evaluate_routes(
    problem: PdpProblem, routes: Mapping[str, Sequence[tuple[str, VisitKind]]]
) -> PdpSolution:
    """Cost and schedule of given routes (vehicle id -> visits); InfeasibleRoutes if one breaks
    a constraint. Vehicles not named stay unused; requests not visited count as unassigned."""
    evaluator = _Evaluator(problem)
    index = {r.request_id: i for i, r in enumerate(problem.requests)}
    known = {v.vehicle_id for v in problem.vehicles}
    unknown = sorted(set(routes) - known)
    if unknown:
        raise InfeasibleRoutes(f"unknown vehicles {unknown}")
    seqs: list[list[int]] = []
    for v in problem.vehicles:
        seq = []
        for request_id, kind in routes.get(v.vehicle_id, ()):
            if request_id not in index:
                raise InfeasibleRoutes(f"unknown request {request_id!r}")
            r = problem.requests[index[request_id]]
            if r.vehicles is not None and v.vehicle_id not in r.vehicles:
                raise InfeasibleRoutes(f"{request_id} may not ride on {v.vehicle_id}")
            seq.append(2 * index[request_id] + (1 if kind == VisitKind.DELIVERY else 0))
        seqs.append(seq)
    return evaluator.solution(seqs, SolveMethod.GREEDY, "evaluated", 0.0)


# ---- greedy insertion: the fallback and the baseline -------------------------------------


def _allowed(request: Request, vehicle: Vehicle) -> bool:
    return request.vehicles is None or vehicle.vehicle_id in request.vehicles


# A partial route: (where, departure time, load, cost so far, range used so far).
_State = tuple[int, float, tuple[int, ...], float, float]


class _Inserter:
    """Cheapest insertion without rescheduling from scratch: routes keep their prefix states,
    and a candidate is abandoned as soon as its cost so far cannot beat the best one (every
    cost term only grows along a route). Agrees with `_Evaluator.route`, which re-checks the
    result."""

    def __init__(self, problem: PdpProblem, ev: _Evaluator) -> None:
        self.p, self.ev = problem, ev
        self.obj = problem.objective
        inf = math.inf
        # Per visit, flattened for the hot loop.
        self.where = [vis.location for vis in ev.visits]
        self.earliest = [vis.earliest for vis in ev.visits]
        self.latest = [vis.latest + 1e-9 for vis in ev.visits]
        self.service = [vis.service for vis in ev.visits]
        self.due = [inf if vis.due is None else vis.due for vis in ev.visits]
        self.change = [r.demand if k == 0 else tuple(-d for d in r.demand)
                       for r in problem.requests for k in (0, 1)]

    def begin(self, v: Vehicle) -> _State:
        return (v.start, v.ready, (0,) * self.ev.dims, self.obj.vehicle, 0.0)

    def advance(self, state: _State, k: int, v: Vehicle) -> _State | None:
        here, t, load, cost, used = state
        where = self.where[k]
        leg = self.ev.time[here][where]
        start = t + leg
        if start < self.earliest[k]:
            start = self.earliest[k]
        if start > self.latest[k]:  # an infinite leg lands here too
            return None
        used += self.ev.use[here][where]
        if used > v.range_budget + 1e-9:
            return None
        obj = self.obj
        cost += obj.distance * self.ev.dist[here][where]
        load = tuple(map(operator.add, load, self.change[k]))
        if k % 2 == 0:
            if any(map(operator.gt, load, v.capacity)):
                return None
        else:
            cost += obj.completion * start
        if start > self.due[k]:
            cost += obj.lateness * (start - self.due[k])
        return (where, start + self.service[k], load, cost, used)

    def bound(self, v: Vehicle, r: int) -> float:
        """A lower bound on what adding request r to any route of v costs: its delivery
        cannot start before v drives from its start to the pickup and on (travel times are
        shortest paths, so they obey the triangle inequality)."""
        if not self.obj.completion:
            return 0.0
        time_m = self.ev.time
        pickup, delivery = self.where[2 * r], self.where[2 * r + 1]
        at_pickup = max(v.ready + time_m[v.start][pickup], self.earliest[2 * r])
        at_delivery = max(at_pickup + self.service[2 * r] + time_m[pickup][delivery],
                          self.earliest[2 * r + 1])
        return self.obj.completion * at_delivery

    def finish(self, state: _State, seq: Sequence[int], j: int, v: Vehicle,
               old: Sequence[_State], limit: float) -> float | None:
        """What inserting costs (new route cost - old), given `state` after the inserted
        visits and the old route's stops seq[:j]; None if infeasible or not below `limit`.

        With travel times that obey the triangle inequality, an insertion only delays the
        stops after it, so (cost so far - the old route's cost at the same stop) never
        shrinks: a candidate is dropped as soon as it reaches `limit`."""
        current: _State | None = state
        for m in range(j, len(seq)):
            assert current is not None
            current = self.advance(current, seq[m], v)
            if current is None or current[3] - old[m + 1][3] >= limit:
                return None
        assert current is not None
        here, t, _, cost, used = current
        ev = self.ev
        if v.end is not None:
            t += ev.time[here][v.end]
            cost += self.obj.distance * ev.dist[here][v.end]
            used += ev.use[here][v.end]
            here = v.end
        if ev.closing is not None:
            used += ev.closing[here]
        if t > v.latest_end + 1e-9 or used > v.range_budget + 1e-9:
            return None
        return cost

    def prefixes(self, v: Vehicle, seq: Sequence[int]) -> list[_State]:
        states = [self.begin(v)]
        for k in seq:
            state = self.advance(states[-1], k, v)
            assert state is not None, "a route in the making became infeasible"
            states.append(state)
        return states


def _greedy_seqs(problem: PdpProblem, evaluator: _Evaluator,
                 deadline: float = math.inf) -> list[_Seq]:
    """Requests by earliest pickup time (input order breaks ties), each inserted at the
    cheapest feasible pickup/delivery positions over all vehicles; an empty vehicle costs its
    fixed cost, so new vehicles open only when that is cheaper or nothing else fits. Past the
    `deadline`, the remaining requests are only appended at the ends of routes."""
    vehicles = problem.vehicles
    inserter = _Inserter(problem, evaluator)
    seqs: list[_Seq] = [[] for _ in vehicles]
    costs = [0.0] * len(vehicles)
    prefixes = [inserter.prefixes(v, []) for v in vehicles]
    order = sorted(range(len(problem.requests)),
                   key=lambda r: (problem.requests[r].pickup.earliest, r))
    for r in order:
        request = problem.requests[r]
        pickup, delivery = 2 * r, 2 * r + 1
        append_only = time.monotonic() > deadline
        best_delta = math.inf
        best: tuple[int, int, int] | None = None  # vehicle, pickup position, delivery position
        tried_empty: set[tuple[object, ...]] = set()
        bounds = sorted((inserter.bound(v, r), vi) for vi, v in enumerate(vehicles)
                        if _allowed(request, v))
        for lower, vi in bounds:
            if lower >= best_delta:
                break  # sorted: no later vehicle can do better
            vehicle = vehicles[vi]
            seq, old = seqs[vi], costs[vi]
            if not seq:
                # Identical empty vehicles give identical insertions: try one of them.
                signature = (vehicle.start, vehicle.end, vehicle.capacity, vehicle.ready,
                             vehicle.latest_end, vehicle.range_budget)
                if signature in tried_empty:
                    continue
                tried_empty.add(signature)
            size, before = len(seq), prefixes[vi]
            for i in range(size if append_only else 0, size + 1):
                mid = inserter.advance(before[i], pickup, vehicle)
                j = i
                # mid: the pickup then seq[i:j]. Once it ends at an old stop (j > i), its cost
                # so far minus the old route's at that stop only grows (see finish()).
                while mid is not None and (j == i or mid[3] - before[j][3] < best_delta - 1e-9):
                    after = inserter.advance(mid, delivery, vehicle)
                    if after is not None:
                        total = inserter.finish(after, seq, j, vehicle, before,
                                                best_delta - 1e-9)
                        if total is not None and total - old < best_delta - 1e-9:
                            best_delta, best = total - old, (vi, i, j)
                    if j == size:
                        break
                    # Later delivery positions keep this prefix: if it breaks, they all do.
                    mid = inserter.advance(mid, seq[j], vehicle)
                    j += 1
        if best is not None:
            vi, i, j = best
            seq = seqs[vi]
            seqs[vi] = seq[:i] + [pickup] + seq[i:j] + [delivery] + seq[j:]
            costs[vi] += best_delta
            prefixes[vi] = inserter.prefixes(vehicles[vi], seqs[vi])
    return seqs


def greedy_insertion(problem: PdpProblem) -> PdpSolution:
    """Deterministic cheapest feasible insertion (see `_greedy_seqs`); no time limit."""
    started = time.monotonic()
    evaluator = _Evaluator(problem)
    seqs = _greedy_seqs(problem, evaluator)
    return evaluator.solution(seqs, SolveMethod.GREEDY, "greedy insertion",
                              time.monotonic() - started)


# ---- OR-Tools -----------------------------------------------------------------------------


def _ceil(value: float, scale: int) -> int:
    return math.ceil(value * scale - 1e-6)


def _floor(value: float, scale: int) -> int:
    return math.floor(value * scale + 1e-6)


class _OrToolsModel:
    """The routing model: nodes are the vehicles' start/end locations, one dummy end for open
    routes, then two nodes per request (pickup, delivery)."""

    def __init__(self, problem: PdpProblem, settings: PlannerSettings,
                 requests: Sequence[int]) -> None:
        self.problem = problem
        self.requests = list(requests)  # indices into problem.requests that are in the model
        scale = settings.scale
        ev = _Evaluator(problem)
        vehicles = problem.vehicles
        depots = sorted({v.start for v in vehicles} | {v.end for v in vehicles
                                                        if v.end is not None})
        depot_node = {loc: n for n, loc in enumerate(depots)}
        # Open routes end at one dummy node, reached from anywhere for nothing. It exists only
        # when some route is open: a node that no route ends at would have to be visited.
        open_end = len(depots)
        node_loc: list[int | None] = list(depots)
        if any(v.end is None for v in vehicles):
            node_loc.append(None)
        node_visit: list[int | None] = [None] * len(node_loc)
        # Visit nodes in location order. The search breaks ties by node order; this order
        # reached the best-known Li & Lim solutions where request order did not (lr101).
        chosen = [k for r in self.requests for k in (2 * r, 2 * r + 1)]
        for visit_k in sorted(chosen, key=lambda k: (ev.visits[k].location, k)):
            node_loc.append(ev.visits[visit_k].location)
            node_visit.append(visit_k)
        node_of_visit = {k: node for node, k in enumerate(node_visit) if k is not None}
        self.node_visit = node_visit
        n = len(node_loc)
        starts = [depot_node[v.start] for v in vehicles]
        ends = [open_end if v.end is None else depot_node[v.end] for v in vehicles]
        self.manager = pywrapcp.RoutingIndexManager(n, len(vehicles), starts, ends)
        self.routing = pywrapcp.RoutingModel(self.manager)
        routing, manager = self.routing, self.manager

        finite_times = [t for row in ev.time for t in row if not math.isinf(t)]
        max_leg = max(finite_times, default=0.0)
        max_service = max((vis.service for vis in ev.visits), default=0.0)
        bounds = [vis.earliest for vis in ev.visits] + [v.ready for v in vehicles]
        bounds += [vis.latest for vis in ev.visits if not math.isinf(vis.latest)]
        bounds += [v.latest_end for v in vehicles if not math.isinf(v.latest_end)]
        reach = max(v.ready for v in vehicles) + (len(ev.visits) + 1) * (max_leg + max_service)
        if all(not math.isinf(v.latest_end) for v in vehicles):
            reach = max(v.latest_end for v in vehicles)  # no cumul can pass its route's end
        horizon = _ceil(max([*bounds, reach]), scale) + 1
        forbidden = horizon + 1  # any arc without a route breaks the time dimension at once

        def service(node: int) -> int:
            k = node_visit[node]
            return 0 if k is None else _ceil(ev.visits[k].service, scale)

        def arc(matrix: Matrix, a: int, b: int, big: int) -> int:
            la, lb = node_loc[a], node_loc[b]
            if la is None or lb is None:
                return 0
            value = matrix[la][lb]
            return big if math.isinf(value) else _ceil(value, scale)

        finite_use = [u for row in ev.use for u in row if not math.isinf(u)]
        finite_use += [c for c in ev.closing or () if not math.isinf(c)]
        big_range = 4 * n * (_ceil(max(finite_use, default=0.0), scale) + 1)

        def closing(a: int, b: int) -> int:
            """Range needed after a route ends: on the arc from its last visit to its end."""
            if ev.closing is None or node_visit[a] is None or node_visit[b] is not None:
                return 0  # not an arc into an end; an empty route is never infeasible
            where = node_loc[b] if node_loc[b] is not None else node_loc[a]
            needed = ev.closing[where or 0]
            return big_range if math.isinf(needed) else _ceil(needed, scale)

        time_m = [[0 if a == b else arc(ev.time, a, b, forbidden) + service(a) for b in range(n)]
                  for a in range(n)]
        big_cost = 10 * horizon
        obj = problem.objective

        def cost(a: int, b: int) -> int:
            la, lb = node_loc[a], node_loc[b]
            if la is None or lb is None or a == b:
                return 0
            value = ev.dist[la][lb]
            return big_cost if math.isinf(value) else round(value * obj.distance * scale)

        dist_m = [[cost(a, b) for b in range(n)] for a in range(n)]
        cost_cb = routing.RegisterTransitMatrix(dist_m)
        routing.SetArcCostEvaluatorOfAllVehicles(cost_cb)
        if obj.vehicle > 0:
            routing.SetFixedCostOfAllVehicles(round(obj.vehicle * scale))

        time_cb = routing.RegisterTransitMatrix(time_m)
        routing.AddDimension(time_cb, horizon, horizon, False, "time")
        self.time_dim = routing.GetDimensionOrDie("time")
        for vi, v in enumerate(vehicles):
            self.time_dim.CumulVar(routing.Start(vi)).SetRange(_ceil(v.ready, scale), horizon)
            latest = horizon if math.isinf(v.latest_end) else _floor(v.latest_end, scale)
            self.time_dim.CumulVar(routing.End(vi)).SetMax(latest)

        busy_dim = None
        if obj.completion > 0:
            # Time without waiting, for the completion term: its cumuls carry no slack.
            routing.AddDimension(time_cb, 0, horizon, False, "busy")
            busy_dim = routing.GetDimensionOrDie("busy")
            for vi, v in enumerate(vehicles):
                ready = _ceil(v.ready, scale)
                busy_dim.CumulVar(routing.Start(vi)).SetRange(ready, ready)

        for d in range(ev.dims):
            demand = [0] * n
            for node, k in enumerate(node_visit):
                if k is not None:
                    amount = problem.requests[k // 2].demand[d]
                    demand[node] = -amount if k % 2 else amount
            demand_cb = routing.RegisterUnaryTransitVector(demand)
            routing.AddDimensionWithVehicleCapacity(
                demand_cb, 0, [v.capacity[d] for v in vehicles], True, f"capacity{d}")

        budgets = [v.range_budget for v in vehicles]
        if ev.closing is not None or any(not math.isinf(b) for b in budgets):
            use_m = [[0 if a == b else arc(ev.use, a, b, big_range) + closing(a, b)
                      for b in range(n)] for a in range(n)]
            range_cb = routing.RegisterTransitMatrix(use_m)
            caps = [big_range * n if math.isinf(b) else _floor(b, scale) for b in budgets]
            routing.AddDimensionWithVehicleCapacity(range_cb, 0, caps, True, "range")

        solver = routing.solver()
        penalty = max(1, round(obj.unassigned * scale / 2))
        vehicle_index = {v.vehicle_id: vi for vi, v in enumerate(vehicles)}
        for node in range(n):
            k = node_visit[node]
            if k is None:
                continue
            visit = ev.visits[k]
            index = manager.NodeToIndex(node)
            cumul = self.time_dim.CumulVar(index)
            cumul.SetRange(_ceil(visit.earliest, scale),
                           horizon if math.isinf(visit.latest) else _floor(visit.latest, scale))
            if visit.due is not None and obj.lateness > 0:
                self.time_dim.SetCumulVarSoftUpperBound(index, round(visit.due * scale),
                                                        obj.lateness)
            if busy_dim is not None and k % 2 == 1:
                busy_dim.SetCumulVarSoftUpperBound(index, 0, obj.completion)
            if k % 2 == 1:
                continue
            request = problem.requests[k // 2]
            pickup, delivery = index, manager.NodeToIndex(node_of_visit[k + 1])
            routing.AddPickupAndDelivery(pickup, delivery)
            solver.Add(routing.VehicleVar(pickup) == routing.VehicleVar(delivery))
            solver.Add(self.time_dim.CumulVar(pickup) <= self.time_dim.CumulVar(delivery))
            routing.AddDisjunction([pickup, delivery], penalty, 2)
            if request.vehicles is not None:
                # SetAllowedVehiclesForIndex's Python binding rejects lists in OR-Tools 9.15:
                # restrict the vehicle variable instead (-1 = not performed).
                allowed = [-1, *sorted(vehicle_index[name] for name in request.vehicles)]
                routing.VehicleVar(pickup).SetValues(allowed)
                routing.VehicleVar(delivery).SetValues(allowed)

    def solve(self, settings: PlannerSettings, limit_s: float) -> tuple[list[_Seq] | None, str]:
        params = pywrapcp.DefaultRoutingSearchParameters()
        params.first_solution_strategy = enums.FirstSolutionStrategy.Value.Value(
            settings.first_solution)
        params.local_search_metaheuristic = enums.LocalSearchMetaheuristic.Value.Value(
            settings.metaheuristic)
        if settings.lns_operators:
            ops = params.local_search_operators
            for name in ("use_path_lns", "use_inactive_lns",
                         "use_global_cheapest_insertion_expensive_chain_lns",
                         "use_local_cheapest_insertion_expensive_chain_lns",
                         "use_global_cheapest_insertion_close_nodes_lns",
                         "use_local_cheapest_insertion_close_nodes_lns"):
                setattr(ops, name, 3)  # OptionalBoolean.BOOL_TRUE
        params.time_limit.FromMicroseconds(max(1, int(limit_s * 1e6)))
        params.lns_time_limit.FromMicroseconds(max(1, int(min(0.1, limit_s / 50) * 1e6)))
        assignment = self.routing.SolveWithParameters(params)
        status = _STATUS.get(self.routing.status(), str(self.routing.status()))
        if assignment is None:
            return None, status
        seqs: list[_Seq] = []
        routing, manager = self.routing, self.manager
        for vi in range(len(self.problem.vehicles)):
            seq: _Seq = []
            index = assignment.Value(routing.NextVar(routing.Start(vi)))
            while not routing.IsEnd(index):
                k = self.node_visit[manager.IndexToNode(index)]
                if k is not None:
                    seq.append(k)
                index = assignment.Value(routing.NextVar(index))
            seqs.append(seq)
        return seqs, status


_STATUS = {0: "not solved", 1: "success", 2: "partial success (limit reached)",
           3: "no solution found", 4: "timeout without a solution", 5: "invalid parameters",
           6: "proven infeasible", 7: "optimal"}


def plan(problem: PdpProblem, settings: PlannerSettings | None = None) -> PdpSolution:
    """The best solution found within `settings.time_limit_s` (greedy first, then OR-Tools)."""
    settings = settings or PlannerSettings()
    started = time.monotonic()
    deadline = started + settings.time_limit_s
    evaluator = _Evaluator(problem)
    greedy_seqs = _greedy_seqs(problem, evaluator,
                               started + settings.greedy_share * settings.time_limit_s)
    greedy = evaluator.solution(greedy_seqs, SolveMethod.GREEDY, "",
                                time.monotonic() - started)

    def fallback(why: str) -> PdpSolution:
        return PdpSolution(greedy.routes, greedy.unassigned, greedy.distance, greedy.cost,
                           SolveMethod.GREEDY, why, time.monotonic() - started)

    servable = [r for r, request in enumerate(problem.requests)
                if any(_allowed(request, v) for v in problem.vehicles)]
    if not servable:
        return fallback("nothing for OR-Tools to do: " + (
            "no requests" if not problem.requests else "no request fits any vehicle"))
    left = deadline - time.monotonic()
    if left < settings.min_solver_s:
        return fallback(f"no time left for OR-Tools ({max(left, 0.0) * 1000:.0f} ms)")
    try:
        model = _OrToolsModel(problem, settings, servable)
        # Keep a margin: the search stops between moves, a little after its limit.
        left = deadline - time.monotonic()
        limit = left - min(0.5, 0.1 * left + 0.02)
        if limit < settings.min_solver_s:
            return fallback(f"no time left for OR-Tools after building the model "
                            f"({max(left, 0.0) * 1000:.0f} ms)")
        seqs, status = model.solve(settings, limit)
    except Exception as error:  # OR-Tools must never take the coordinator down
        return fallback(f"OR-Tools failed: {type(error).__name__}: {error}")
    if seqs is None:
        return fallback(f"OR-Tools found no solution in {limit:.3g} s ({status})")
    try:
        solution = evaluator.solution(seqs, SolveMethod.ORTOOLS, status,
                                      time.monotonic() - started)
    except InfeasibleRoutes as error:
        return fallback(f"OR-Tools solution rejected by the evaluator: {error}")
    if greedy.cost < solution.cost - 1e-9:
        return fallback(f"greedy was cheaper than OR-Tools ({status})")
    return solution

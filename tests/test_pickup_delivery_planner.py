"""The PDPTW planner: constraints, objective, time limit and the greedy fallback/baseline."""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from delivery_robot import pickup_delivery_planner as pdp
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
    greedy_insertion,
    plan,
)

ROOT = Path(__file__).resolve().parents[1]
P, D = VisitKind.PICKUP, VisitKind.DELIVERY


def euclid(points: Sequence[tuple[float, float]]) -> list[list[float]]:
    return [[math.dist(a, b) for b in points] for a in points]


def random_problem(seed: int, requests: int = 8, vehicles: int = 3,
                   capacity: int = 2, window: float = 400.0) -> PdpProblem:
    rng = random.Random(seed)
    points = [(50.0, 50.0)] + [(rng.uniform(0, 100), rng.uniform(0, 100))
                               for _ in range(2 * requests)]
    reqs = []
    for r in range(requests):
        start = rng.uniform(0, 150)
        reqs.append(Request(
            f"r{r}",
            Visit(1 + 2 * r, earliest=start, latest=start + window, service=5.0),
            Visit(2 + 2 * r, earliest=0.0, latest=start + 2 * window, service=5.0),
            (1,)))
    fleet = [Vehicle(f"v{i}", 0, 0, (capacity,), latest_end=2000.0) for i in range(vehicles)]
    return PdpProblem(euclid(points), reqs, fleet)


def check_solution(problem: PdpProblem, solution: PdpSolution) -> None:
    """Every rule, checked from the routes themselves (not from the planner's evaluator)."""
    by_id = {r.request_id: r for r in problem.requests}
    seen: set[str] = set()
    for route in solution.routes:
        vehicle = next(v for v in problem.vehicles if v.vehicle_id == route.vehicle_id)
        load = [0] * len(vehicle.capacity)
        picked: set[str] = set()
        t, here = vehicle.ready, vehicle.start
        for visit in route.visits:
            request = by_id[visit.request_id]
            stop = request.pickup if visit.kind == P else request.delivery
            assert visit.location == stop.location
            assert visit.arrival >= t + problem.travel_time[here][stop.location] - 1e-6
            assert stop.earliest - 1e-6 <= visit.start <= stop.latest + 1e-6, visit
            if visit.kind == P:
                assert visit.request_id not in seen, "served twice"
                picked.add(visit.request_id)
                load = [a + b for a, b in zip(load, request.demand, strict=True)]
                assert all(a <= c for a, c in zip(load, vehicle.capacity, strict=True))
            else:
                assert visit.request_id in picked, "delivered before its pickup on this route"
                picked.discard(visit.request_id)
                seen.add(visit.request_id)
                load = [a - b for a, b in zip(load, request.demand, strict=True)]
            t, here = visit.start + stop.service, stop.location
        assert not picked, "picked up and never delivered"
    assert seen | set(solution.unassigned) == set(by_id)
    assert not seen & set(solution.unassigned)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planner_keeps_pickup_before_delivery_on_one_vehicle(seed: int) -> None:
    problem = random_problem(seed)
    planned = plan(problem, PlannerSettings(time_limit_s=0.3))
    assert planned.method == SolveMethod.ORTOOLS, planned.note
    for solution in (planned, greedy_insertion(problem)):
        check_solution(problem, solution)
        assert not solution.unassigned


def shuttle(capacity: int) -> PdpProblem:
    """Three parcels from a shop at x=10 to a street at x=100; the vehicle starts at x=0."""
    points = [(0.0, 0.0), (10.0, 0.0), (100.0, 0.0), (101.0, 0.0), (102.0, 0.0)]
    requests = [Request(f"p{i}", Visit(1), Visit(2 + i)) for i in range(3)]
    return PdpProblem(euclid(points), requests, [Vehicle("v", 0, None, (capacity,))])


def test_capacity_is_never_exceeded_and_spare_capacity_is_used() -> None:
    one = plan(shuttle(1), PlannerSettings(time_limit_s=0.3))
    check_solution(shuttle(1), one)
    kinds = [v.kind for v in one.routes[0].visits]
    assert kinds == [P, D, P, D, P, D]
    three = plan(shuttle(3), PlannerSettings(time_limit_s=0.3))
    check_solution(shuttle(3), three)
    assert [v.kind for v in three.routes[0].visits] == [P, P, P, D, D, D]
    assert three.distance == pytest.approx(102.0)
    assert one.distance > 2 * three.distance


def test_evaluator_refuses_broken_routes() -> None:
    problem = shuttle(1)
    with pytest.raises(InfeasibleRoutes, match="capacity"):
        evaluate_routes(problem, {"v": [("p0", P), ("p1", P), ("p0", D), ("p1", D)]})
    with pytest.raises(InfeasibleRoutes, match="before its pickup"):
        evaluate_routes(problem, {"v": [("p0", D), ("p0", P)]})
    with pytest.raises(InfeasibleRoutes, match="never delivered"):
        evaluate_routes(problem, {"v": [("p0", P)]})
    with pytest.raises(InfeasibleRoutes, match="unknown request"):
        evaluate_routes(problem, {"v": [("nope", P)]})
    with pytest.raises(InfeasibleRoutes, match="unknown vehicles"):
        evaluate_routes(problem, {"w": []})
    fine = evaluate_routes(problem, {"v": [("p0", P), ("p0", D)]})
    assert fine.unassigned == ("p1", "p2")
    assert fine.cost == pytest.approx(100.0 + 2 * 1e6)


def test_time_windows_are_respected_even_against_distance() -> None:
    # From a shop at (10, 0): "near" at (10, 15) first is shorter, but "far" at (40, 0) must
    # be reached by t=45, which only works when it goes first.
    points = [(0.0, 0.0), (10.0, 0.0), (10.0, 15.0), (40.0, 0.0)]
    requests = [Request("near", Visit(1), Visit(2)),
                Request("far", Visit(1), Visit(3, latest=45.0))]
    free = PdpProblem(euclid(points), [requests[0], Request("far", Visit(1), Visit(3))],
                      [Vehicle("v", 0, None, (2,))])
    problem = PdpProblem(euclid(points), requests, [Vehicle("v", 0, None, (2,))])
    for solver in (lambda p: plan(p, PlannerSettings(time_limit_s=0.3)), greedy_insertion):
        unconstrained = solver(free)
        assert [v.request_id for v in unconstrained.routes[0].visits if v.kind == D] == [
            "near", "far"]
        solution = solver(problem)
        check_solution(problem, solution)
        assert [v.request_id for v in solution.routes[0].visits if v.kind == D] == [
            "far", "near"]
    with pytest.raises(InfeasibleRoutes, match="latest"):
        evaluate_routes(problem, {"v": [("near", P), ("far", P), ("near", D), ("far", D)]})


def test_waiting_for_an_early_window_and_an_impossible_request() -> None:
    points = [(0.0, 0.0), (10.0, 0.0), (20.0, 0.0), (500.0, 0.0)]
    requests = [Request("later", Visit(1, earliest=100.0), Visit(2)),
                Request("never", Visit(1), Visit(3, latest=50.0))]
    problem = PdpProblem(euclid(points), requests, [Vehicle("v", 0, None, (1,))])
    for solution in (plan(problem, PlannerSettings(time_limit_s=0.3)),
                     greedy_insertion(problem)):
        check_solution(problem, solution)
        assert solution.unassigned == ("never",)
        pickup = solution.routes[0].visits[0]
        assert (pickup.arrival, pickup.start) == (pytest.approx(10.0), pytest.approx(100.0))


def test_allowed_vehicles_and_range_budget() -> None:
    # "big" may only ride on v2; v1's range cannot reach the far dropoff and back to base.
    points = [(0.0, 0.0), (5.0, 0.0), (60.0, 0.0), (8.0, 0.0)]
    requests = [Request("big", Visit(1), Visit(3), vehicles=frozenset({"v2"})),
                Request("far", Visit(1), Visit(2))]
    fleet = [Vehicle("v1", 0, 0, (1,), range_budget=50.0), Vehicle("v2", 0, 0, (1,))]
    problem = PdpProblem(euclid(points), requests, fleet)
    for solution in (plan(problem, PlannerSettings(time_limit_s=0.3)),
                     greedy_insertion(problem)):
        check_solution(problem, solution)
        assert {v.request_id for v in solution.route_of("v2").visits} == {"big", "far"}
        assert not solution.route_of("v1").visits
    with pytest.raises(InfeasibleRoutes, match="may not ride"):
        evaluate_routes(problem, {"v1": [("big", P), ("big", D)]})
    with pytest.raises(InfeasibleRoutes, match="range"):
        evaluate_routes(problem, {"v1": [("far", P), ("far", D)]})


def test_range_closing_counts_the_way_to_a_charger() -> None:
    # Open routes; after the last stop the vehicle must still reach a charger at x=0.
    points = [(0.0, 0.0), (10.0, 0.0), (30.0, 0.0)]
    matrix = euclid(points)
    closing = [row[0] for row in matrix]
    requests = [Request("a", Visit(1), Visit(2))]
    tight = Vehicle("tight", 1, None, (1,), range_budget=40.0)  # 20 out + 30 back > 40
    roomy = Vehicle("roomy", 0, None, (1,), range_budget=60.0)  # 30 out + 30 back
    problem = PdpProblem(matrix, requests, [tight, roomy], range_closing=closing)
    for solution in (plan(problem, PlannerSettings(time_limit_s=0.3)),
                     greedy_insertion(problem)):
        assert [v.request_id for v in solution.route_of("roomy").visits] == ["a", "a"]


def brute_force_optimum(problem: PdpProblem) -> float:
    """Exact optimum by enumeration (routes are independent once requests are split)."""
    ids = [r.request_id for r in problem.requests]
    best = math.inf
    names = [v.vehicle_id for v in problem.vehicles]
    for split in itertools.product(names, repeat=len(ids)):
        total = 0.0
        for name in names:
            mine = [i for i, owner in zip(ids, split, strict=True) if owner == name]
            visits = [(i, k) for i in mine for k in (P, D)]
            route_best = math.inf
            for order in itertools.permutations(visits):
                if any(order.index((i, P)) > order.index((i, D)) for i in mine):
                    continue
                with contextlib.suppress(InfeasibleRoutes):
                    route_best = min(route_best, evaluate_routes(problem, {name: order}).cost
                                     - problem.objective.unassigned * (len(ids) - len(mine)))
            total += route_best
        best = min(best, total)
    return best


def test_small_instance_reaches_the_known_optimum() -> None:
    problem = random_problem(seed=7, requests=3, vehicles=2, capacity=2, window=300.0)
    problem = PdpProblem(problem.travel_time, problem.requests, problem.vehicles,
                         objective=Objective(vehicle=100.0))
    optimum = brute_force_optimum(problem)
    assert math.isfinite(optimum)
    solution = plan(problem, PlannerSettings(time_limit_s=1.0))
    assert solution.method == SolveMethod.ORTOOLS
    assert solution.cost == pytest.approx(optimum, rel=1e-6)


@pytest.mark.parametrize(("lateness", "order", "cost"),
                         [(100, ["due", "near"], 22.0 + 52.0), (0, ["near", "due"], 10.0 + 40.0)])
def test_completion_and_lateness_shape_the_order(lateness: int, order: list[str],
                                                 cost: float) -> None:
    # An open route from x=0 via the shop at x=1; dropoffs at x=10 and x=-20 (due by 25).
    # Finishing soonest means "near" first, unless being late costs more.
    points = [(0.0, 0.0), (1.0, 0.0), (10.0, 0.0), (-20.0, 0.0)]
    requests = [Request("near", Visit(1), Visit(2)),
                Request("due", Visit(1), Visit(3, due=25.0))]
    objective = Objective(distance=0.0, completion=1, lateness=lateness)
    problem = PdpProblem(euclid(points), requests, [Vehicle("v", 0, None, (2,))],
                         objective=objective)
    for solution in (plan(problem, PlannerSettings(time_limit_s=0.3)),
                     greedy_insertion(problem)):
        deliveries = [v for v in solution.routes[0].visits if v.kind == D]
        assert [v.request_id for v in deliveries] == order
        assert solution.cost == pytest.approx(cost)


def test_greedy_baseline_is_deterministic() -> None:
    problem = random_problem(seed=11, requests=20, vehicles=6, capacity=3)
    first, second = greedy_insertion(problem), greedy_insertion(problem)
    assert first.routes == second.routes
    assert first.method == SolveMethod.GREEDY
    check_solution(problem, first)
    # The fallback inside plan() is the same greedy solution when it has the time to finish.
    fallback = plan(problem, PlannerSettings(time_limit_s=5.0, min_solver_s=10.0,
                                             greedy_share=1.0))
    assert "no time left for OR-Tools" in fallback.note
    assert [r.visits for r in fallback.routes] == [r.visits for r in first.routes]


def lr101() -> PdpProblem:
    sys.path.insert(0, str(ROOT))
    from bench.li_lim import load

    return load("lr101", Objective(vehicle=10_000.0))[0].problem


def test_time_limit_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = lr101()
    calls: list[tuple[float, float]] = []  # (when OR-Tools was started, the limit it got)
    real_solve = pdp._OrToolsModel.solve

    def recording(self: pdp._OrToolsModel, settings: PlannerSettings,
                  limit: float) -> tuple[list[list[int]] | None, str]:
        calls.append((time.monotonic(), limit))
        return real_solve(self, settings, limit)

    monkeypatch.setattr(pdp._OrToolsModel, "solve", recording)
    for limit in (0.3, 1.0):
        calls.clear()
        started = time.monotonic()
        solution = plan(problem, PlannerSettings(time_limit_s=limit))
        elapsed = time.monotonic() - started
        assert not solution.unassigned, solution.note
        # OR-Tools gets only what is left of the budget, less a margin for stopping.
        assert len(calls) == 1
        called, granted = calls[0]
        assert called - started + granted <= limit - 0.02
        # Wall clock: the search stops between moves, and a busy shared machine adds delay.
        assert elapsed <= limit + 0.5, f"{elapsed:.3f} s for a {limit} s limit"


def test_no_time_for_ortools_falls_back_to_greedy() -> None:
    problem = lr101()
    started = time.monotonic()
    solution = plan(problem, PlannerSettings(time_limit_s=1e-4))
    elapsed = time.monotonic() - started
    assert solution.method == SolveMethod.GREEDY
    assert "no time left for OR-Tools" in solution.note
    # Out of time at once, the greedy start only appends at route ends: fast, still valid.
    check_solution(problem, solution)
    assert len(solution.unassigned) < len(problem.requests)
    assert elapsed < 0.2


def test_ortools_without_a_solution_in_time_returns_none() -> None:
    model = pdp._OrToolsModel(lr101(), PlannerSettings(), range(53))
    seqs, status = model.solve(PlannerSettings(), 1e-6)
    assert seqs is None
    assert "timeout" in status or "no solution" in status


def test_ortools_failure_or_no_solution_falls_back_to_greedy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    problem = random_problem(seed=5)
    greedy = greedy_insertion(problem)

    def broken(self: object, settings: PlannerSettings, limit: float) -> None:
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(pdp._OrToolsModel, "solve", broken)
    solution = plan(problem, PlannerSettings(time_limit_s=0.5))
    assert solution.method == SolveMethod.GREEDY
    assert "OR-Tools failed: RuntimeError: solver exploded" in solution.note
    assert solution.routes == greedy.routes

    monkeypatch.setattr(pdp._OrToolsModel, "solve",
                        lambda self, settings, limit: (None, "timeout without a solution"))
    solution = plan(problem, PlannerSettings(time_limit_s=0.5))
    assert solution.method == SolveMethod.GREEDY
    assert "found no solution" in solution.note


def test_bad_input_is_refused_with_a_clear_error() -> None:
    matrix = euclid([(0.0, 0.0), (1.0, 0.0)])
    fleet = [Vehicle("v", 0)]
    with pytest.raises(ValueError, match="must be a 1x1 matrix"):
        PdpProblem([[0.0, 1.0]], [], fleet)
    with pytest.raises(ValueError, match="unknown vehicles"):
        PdpProblem(matrix, [Request("r", Visit(0), Visit(1), vehicles=frozenset({"w"}))], fleet)
    with pytest.raises(ValueError, match="out of range"):
        PdpProblem(matrix, [Request("r", Visit(0), Visit(5))], fleet)
    with pytest.raises(ValueError, match="empty"):
        PdpProblem(matrix, [Request("r", Visit(0, earliest=5, latest=1), Visit(1))], fleet)
    with pytest.raises(ValueError, match="unique"):
        PdpProblem(matrix, [Request("r", Visit(0), Visit(1))] * 2, fleet)
    with pytest.raises(ValueError, match="demand"):
        PdpProblem(matrix, [Request("r", Visit(0), Visit(1), (1, 2))], fleet)
    with pytest.raises(ValueError, match="whole number"):
        Objective(completion=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown first_solution"):
        PlannerSettings(first_solution="FASTEST")
    with pytest.raises(ValueError, match="out of range"):
        PlannerSettings(time_limit_s=0)


def test_empty_problem_needs_no_solver() -> None:
    problem = PdpProblem([[0.0]], [], [Vehicle("v", 0)])
    solution = plan(problem)
    assert solution.routes[0].visits == ()
    assert solution.cost == 0.0
    assert solution.note == "nothing for OR-Tools to do: no requests"

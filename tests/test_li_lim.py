"""The Li & Lim loader (bench/li_lim.py) against the copied instances and their .sol files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.li_lim import (  # noqa: E402
    DATA,
    INSTANCES,
    LiLimFormatError,
    best_known,
    load,
    load_instance,
)
from delivery_robot.pickup_delivery_planner import (  # noqa: E402
    Objective,
    evaluate_routes,
    greedy_insertion,
)

# README.md of the instances: best-known distance and vehicles.
README_BKS = {"lc101": (828.94, 10), "lr101": (1650.80, 19), "lrc101": (1703.21, 15)}


@pytest.mark.parametrize("name", INSTANCES)
def test_instance_and_best_known_routes_agree(name: str) -> None:
    instance, bks = load(name)
    problem = instance.problem
    assert len(problem.requests) == 53
    assert len(problem.vehicles) == 25
    assert all(v.capacity == (200,) and v.start == v.end == 0 for v in problem.vehicles)
    distance, vehicles = README_BKS[name]
    assert bks.vehicles == vehicles
    assert bks.distance == pytest.approx(distance, abs=0.01)
    # The best-known routes are feasible in our model and cost what the literature says.
    checked = evaluate_routes(problem, bks.routes)
    assert checked.unassigned == ()
    assert checked.vehicles_used == vehicles
    assert checked.distance == pytest.approx(distance, abs=0.01)


def test_first_request_of_lc101() -> None:
    instance, _ = load("lc101")
    # Node 4 (location 3) is a pickup of 10 delivered at node 76, window [65, 146], 90 s.
    request = next(r for r in instance.problem.requests if r.request_id == "n4")
    assert (request.pickup.location, request.delivery.location) == (3, 75)
    assert (request.pickup.earliest, request.pickup.latest, request.pickup.service) == (
        65.0, 146.0, 90.0)
    assert request.demand == (10,)
    assert instance.problem.vehicles[0].latest_end == 1236.0


def test_fleet_cap_and_objective_pass_through() -> None:
    instance, _ = load("lc101", Objective(vehicle=5.0), fleet=10)
    assert len(instance.problem.vehicles) == 10
    assert instance.problem.objective.vehicle == 5.0
    greedy = greedy_insertion(instance.problem)
    assert not greedy.unassigned
    assert greedy.vehicles_used <= 10


def test_malformed_files_name_the_line(tmp_path: Path) -> None:
    text = (DATA / "lc101.vrp").read_text().splitlines()
    broken = tmp_path / "broken.vrp"
    at = text.index("PICKUP_AND_DELIVERY_SECTION") + 2
    broken.write_text("\n".join(text[:at] + ["2 -10 912 x 90 12 0"] + text[at + 1:]))
    with pytest.raises(LiLimFormatError, match=rf"broken.vrp:{at + 1}: not a number"):
        load_instance(broken)
    with pytest.raises(LiLimFormatError, match="cannot read"):
        load_instance(tmp_path / "missing.vrp")
    instance = load_instance(DATA / "lc101.vrp")
    bad_sol = tmp_path / "bad.sol"
    bad_sol.write_text("Route #1: 1 2 999\nCost 1\n")
    with pytest.raises(LiLimFormatError, match="unknown client"):
        best_known(bad_sol, instance)

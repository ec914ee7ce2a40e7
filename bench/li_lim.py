"""Li & Lim PDPTW instances (VRPLIB form, bench/data/li_lim/README.md) as planner problems.

Travel time = distance = Euclidean, not rounded (the literature's convention, and what the
best-known distances are measured in). Every vehicle of the instance starts and ends at the
depot within the depot's time window. The `.sol` files hold the best-known routes and their
cost x 1000; `best_known()` turns them into routes the planner's evaluator can check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from delivery_robot.pickup_delivery_planner import (
    Objective,
    PdpProblem,
    Request,
    Vehicle,
    Visit,
    VisitKind,
)

DATA = Path(__file__).resolve().parent / "data" / "li_lim"
INSTANCES = ("lc101", "lr101", "lrc101")


class LiLimFormatError(ValueError):
    """A malformed instance or solution file (the message names the file and line)."""


@dataclass(frozen=True)
class LiLimInstance:
    name: str
    problem: PdpProblem
    node_of_request: dict[str, tuple[int, int]]  # request id -> (pickup node, delivery node)


@dataclass(frozen=True)
class BestKnown:
    routes: dict[str, list[tuple[str, VisitKind]]]  # vehicle id -> visits
    distance: float
    vehicles: int


def _numbers(path: Path, number: int, line: str, count: int) -> list[float]:
    parts = line.split()
    if len(parts) != count:
        raise LiLimFormatError(f"{path}:{number}: expected {count} numbers, got {line!r}")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise LiLimFormatError(f"{path}:{number}: not a number in {line!r}") from None


def load_instance(path: Path, objective: Objective | None = None) -> LiLimInstance:
    """Parse a `.vrp` file; `objective` defaults to distance only."""
    try:
        text = path.read_text()
    except OSError as error:
        raise LiLimFormatError(f"cannot read {path}: {error}") from None
    header: dict[str, str] = {}
    coords: dict[int, tuple[float, float]] = {}
    rows: dict[int, list[float]] = {}
    depots: list[int] = []
    section = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line == "EOF":
            continue
        if line.endswith("_SECTION"):
            section = line
        elif not section and ":" in line:
            key, value = line.split(":", 1)
            header[key.strip()] = value.strip()
        elif section == "NODE_COORD_SECTION":
            node, x, y = _numbers(path, number, line, 3)
            coords[int(node)] = (x, y)
        elif section == "PICKUP_AND_DELIVERY_SECTION":
            row = _numbers(path, number, line, 7)
            rows[int(row[0])] = row[1:]
        elif section == "DEPOT_SECTION":
            if int(_numbers(path, number, line, 1)[0]) != -1:
                depots.append(int(line))
        else:
            raise LiLimFormatError(f"{path}:{number}: unexpected line {line!r}")
    try:
        fleet, capacity = int(header["VEHICLES"]), int(header["CAPACITY"])
    except (KeyError, ValueError):
        raise LiLimFormatError(f"{path}: VEHICLES and CAPACITY must be integers") from None
    ids = sorted(coords)
    if ids != list(range(1, len(ids) + 1)) or sorted(rows) != ids:
        raise LiLimFormatError(f"{path}: nodes must be numbered 1..n in both sections")
    if depots != [1]:
        raise LiLimFormatError(f"{path}: expected node 1 as the only depot, got {depots}")

    def visit(node: int) -> Visit:
        _, earliest, latest, service, _, _ = rows[node]
        return Visit(node - 1, earliest, latest, service)

    requests: list[Request] = []
    node_of_request: dict[str, tuple[int, int]] = {}
    for node in ids[1:]:
        demand, _, _, _, pickup_of, delivery_of = rows[node]
        if demand <= 0:
            continue
        delivery = int(delivery_of)
        if delivery not in rows or int(rows[delivery][4]) != node or rows[delivery][0] != -demand:
            raise LiLimFormatError(f"{path}: pickup {node} and delivery {delivery} do not match")
        request_id = f"n{node}"
        requests.append(Request(request_id, visit(node), visit(delivery), (int(demand),)))
        node_of_request[request_id] = (node, delivery)
    points = [coords[n] for n in ids]
    matrix = [[math.dist(a, b) for b in points] for a in points]
    depot = rows[1]
    vehicles = [Vehicle(f"v{i + 1}", 0, 0, (capacity,), ready=depot[1], latest_end=depot[2])
                for i in range(fleet)]
    problem = PdpProblem(matrix, requests, vehicles, objective=objective or Objective())
    return LiLimInstance(header.get("NAME", path.stem), problem, node_of_request)


def best_known(path: Path, instance: LiLimInstance) -> BestKnown:
    """Parse a `.sol` file: routes of client indices (node id = entry + 1) and `Cost` x 1000."""
    request_at: dict[int, tuple[str, VisitKind]] = {}
    for request_id, (pickup, delivery) in instance.node_of_request.items():
        request_at[pickup] = (request_id, VisitKind.PICKUP)
        request_at[delivery] = (request_id, VisitKind.DELIVERY)
    routes: dict[str, list[tuple[str, VisitKind]]] = {}
    cost: float | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("Route #"):
            entries = line.split(":", 1)[1].split()
            try:
                visits = [request_at[int(entry) + 1] for entry in entries]
            except (KeyError, ValueError):
                raise LiLimFormatError(f"{path}:{number}: unknown client in {line!r}") from None
            routes[f"v{len(routes) + 1}"] = visits
        elif line.startswith("Cost"):
            cost = float(line.removeprefix("Cost").strip(" :")) / 1000.0
    if cost is None or not routes:
        raise LiLimFormatError(f"{path}: no routes or no Cost line")
    return BestKnown(routes, cost, len(routes))


def load(name: str, objective: Objective | None = None,
         fleet: int | None = None) -> tuple[LiLimInstance, BestKnown]:
    """An instance from bench/data/li_lim and its best-known solution; `fleet` caps the
    number of vehicles (default: the instance's own fleet)."""
    instance = load_instance(DATA / f"{name}.vrp", objective)
    if fleet is not None:
        problem = replace(instance.problem, vehicles=instance.problem.vehicles[:fleet])
        instance = replace(instance, problem=problem)
    return instance, best_known(DATA / f"{name}.sol", instance)

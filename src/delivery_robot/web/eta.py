"""A rough ETA for the shop page: how long until the robot is at the shop, or at the customer.

The coordinator does not carry the robots' own ETA (mission feedback has one, the core does
not keep it), so the page estimates from the drawn map: shortest path over the map's lanes at
their speed limits (capped at the cruise speed), or the straight line on the demo map, which
has no lanes. Waiting (at crossings, in a queue) is not in it: the page says "about".
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from delivery_robot.order_lifecycle import OrderState

DEFAULT_CRUISE_MPS = 1.5
_TO_PICKUP = frozenset({OrderState.ASSIGNED, OrderState.TO_PICKUP})
_TO_DROPOFF = frozenset({OrderState.IN_TRANSIT})


@dataclass(frozen=True)
class Eta:
    target: str  # "pickup" | "dropoff"
    seconds: float


class EtaEstimator:
    def __init__(self, world_map: Mapping[str, Any],
                 cruise_speed_mps: float = DEFAULT_CRUISE_MPS) -> None:
        if not cruise_speed_mps > 0:
            raise ValueError("cruise_speed_mps must be > 0")
        self._cruise = cruise_speed_mps
        self._points: dict[str, tuple[float, float]] = {
            str(w["name"]): (float(w["x"]), float(w["y"])) for w in world_map.get("waypoints", [])
        }
        self._edges: dict[str, list[tuple[str, float]]] = {}
        for lane in world_map.get("lanes", []):
            a, b = str(lane["start"]), str(lane["end"])
            if a not in self._points or b not in self._points:
                continue
            limit = lane.get("speed_limit")
            speed = min(self._cruise, float(limit)) if limit and float(limit) > 0 else self._cruise
            seconds = self._distance(a, b) / speed
            self._edges.setdefault(a, []).append((b, seconds))
            if not lane.get("one_way", False):
                self._edges.setdefault(b, []).append((a, seconds))
        self._cache: dict[tuple[str, str], float | None] = {}

    def nearest(self, x: float, y: float) -> str | None:
        if not self._points:
            return None
        return min(self._points, key=lambda n: math.hypot(self._points[n][0] - x,
                                                          self._points[n][1] - y))

    def place(self, waypoint: str, x: float, y: float) -> str | None:
        """The waypoint a robot reports, or the one nearest its pose if it names none."""
        return waypoint if waypoint in self._points else self.nearest(x, y)

    def travel_s(self, start: str, goal: str) -> float | None:
        if start not in self._points or goal not in self._points:
            return None
        if start == goal:
            return 0.0
        if not self._edges:
            return self._distance(start, goal) / self._cruise
        key = (start, goal)
        if key not in self._cache:
            self._cache[key] = self._dijkstra(start, goal)
        return self._cache[key]

    def eta(self, state: OrderState, robot_waypoint: str | None, pickup: str,
            dropoff: str) -> Eta | None:
        """None when the order is not on its way anywhere, or the robot's place is unknown."""
        if robot_waypoint is None:
            return None
        if state in _TO_PICKUP:
            seconds = self.travel_s(robot_waypoint, pickup)
            return None if seconds is None else Eta("pickup", seconds)
        if state in _TO_DROPOFF:
            seconds = self.travel_s(robot_waypoint, dropoff)
            return None if seconds is None else Eta("dropoff", seconds)
        return None

    def _distance(self, a: str, b: str) -> float:
        (ax, ay), (bx, by) = self._points[a], self._points[b]
        return math.hypot(ax - bx, ay - by)

    def _dijkstra(self, start: str, goal: str) -> float | None:
        best = {start: 0.0}
        frontier = [(0.0, start)]
        while frontier:
            cost, node = heapq.heappop(frontier)
            if node == goal:
                return cost
            if cost > best.get(node, math.inf):
                continue
            for following, seconds in self._edges.get(node, []):
                total = cost + seconds
                if total < best.get(following, math.inf):
                    best[following] = total
                    heapq.heappush(frontier, (total, following))
        return None

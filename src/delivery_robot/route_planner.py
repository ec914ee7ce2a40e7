"""Fastest routes on a world's route graph for the built-in navigator (issue 5, item 1). ROS-free.

`RouteGraph.shortest_path` answers "which waypoints", for validated graphs and static lanes. A
robot on the pavement needs more: it starts wherever it is (not on a waypoint), may be sent to a
map pose, must avoid lanes that robots reported blocked (until they reopen), must never plan
outside the geofence, and has to know where to stop at the kerb before a crosswalk. This module
turns a goal into a `Plan` (straight segments with polylines, per-segment speed limits, crosswalk
gates, length, ETA) or a typed `NoPath` with a message a human can act on; it never raises for
an unknown or unreachable goal.

Design:
- The search is networkx A* on a private copy of the graph, weighted by travel time at each
  lane's effective limit (the lane limit capped by every slow zone, park or crosswalk it runs
  through), so the result is the fastest route. The A* heuristic is the larger of straight-line
  distance over the top speed and landmark (ALT) bounds from travel times to and from a few
  landmarks computed once: both stay admissible when lanes close, since closing a lane only
  makes routes slower.
- Closures are a set of directed edges read by the weight function (returning None hides an
  edge), so closing or reopening a lane is O(1) and the next search simply avoids it.
- A pose joins the graph at its projections onto the nearest lanes (within `join_slack` of the
  nearest one; the other candidates within `max_join_distance` only if that finds no route),
  through a straight join inside the geofence, costed at `off_graph_speed`. The projection nodes
  are added to the private graph for one search and removed again (under a lock: one planner
  may serve several robots).
- Cached: lane geometry, zone caps and crosswalk intervals per directed edge (computed once,
  vectorised), the prepared geofence, landmark bounds per goal waypoint, and whole
  waypoint-to-waypoint plans (keyed by the closure version, so a closure invalidates them).

Units: metres, seconds, m/s, radians; map frame (REP-103/105). Times (`now`) are seconds on the
caller's clock (ROS time, sim time): the same clock for closing lanes and planning.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from itertools import pairwise
from typing import Any, NamedTuple

import networkx as nx
import numpy as np
import shapely
from shapely.geometry import LineString, Point

from delivery_robot.route_graph import RouteGraph, SignalCycle, Zone, ZoneKind

_EPS = 1e-6
_BOUNDS_CACHE_SIZE = 64  # goal waypoints whose A* lower bounds are kept (shops, doors, depots)
_SNAP = 1e-3  # m: a pose this close to a waypoint along a lane joins at the waypoint


class NavCode(IntEnum):
    """Outcome of a navigation goal: the `CODE_*` values of `delivery_interfaces/Navigate`."""

    SUCCEEDED = 0
    CANCELED = 1
    BLOCKED = 2  # path blocked and no alternative route
    NO_PATH = 3  # goal unknown or unreachable on the route graph
    TIMEOUT = 4
    FAILED = 5


class Pose2D(NamedTuple):
    """A pose in the map frame: metres and radians (yaw counter-clockwise from +x)."""

    x: float
    y: float
    yaw: float = 0.0


# A goal: a waypoint name, an (x, y) point (any final heading) or (x, y, yaw) / Pose2D.
Goal = str | tuple[float, float] | tuple[float, float, float]
# A start: a waypoint name or the robot's pose ((x, y) or (x, y, yaw); the heading is not used).
Start = Goal


@dataclass(frozen=True)
class PlannerParams:
    off_graph_speed: float = 0.5  # m/s on straight joins between a pose and the graph
    max_join_distance: float = 5.0  # m: a pose farther than this from every lane is NO_PATH
    join_candidates: int = 8  # nearest directed lanes considered when joining a pose
    join_slack: float = 1.0  # m: lanes this much farther than the nearest are tried first too
    reopen_after_s: float = 300.0  # default time a reported-blocked lane stays closed
    kerb_stop_margin: float = 2.0  # m before a crosswalk edge to stop, never before the lane start
    start_outside_tolerance: float = 0.5  # m a robot may be outside the fence (localisation noise)
    cache_size: int = 1024  # waypoint-to-waypoint plans kept
    landmarks: int = 16  # A* landmarks (ALT): tighter lower bounds than distance / top speed

    def __post_init__(self) -> None:
        positive = ("off_graph_speed", "max_join_distance", "reopen_after_s")
        for name in positive:
            value = getattr(self, name)
            if not (value > 0.0):
                raise ValueError(f"PlannerParams.{name} must be > 0, got {value!r}")
        if self.landmarks < 0:
            raise ValueError("PlannerParams.landmarks must be >= 0")
        if self.join_candidates < 1:
            raise ValueError("PlannerParams.join_candidates must be >= 1")
        if min(self.kerb_stop_margin, self.start_outside_tolerance, self.join_slack) < 0.0:
            raise ValueError("PlannerParams margins must be >= 0")


@dataclass(frozen=True)
class Crossing:
    """A crosswalk on the plan: wait at `stop_s` until crossing is allowed, then do not stop
    between `entry_s` and `exit_s`. Distances are arc lengths along the plan (m)."""

    zone: str
    signal: SignalCycle | None  # None: an unsignalled crossing
    segment: int  # index of the segment that enters the crosswalk
    stop_s: float
    entry_s: float
    exit_s: float


@dataclass(frozen=True)
class Segment:
    """One straight piece of a plan: a lane (or part of one), or an off-graph join."""

    start: str  # waypoint name; "start" / "goal" for a pose; "" for a point part-way on a lane
    end: str
    lane: tuple[str, str] | None  # directed lane driven along; None off the graph
    points: tuple[tuple[float, float], ...]  # polyline in the map frame (>= 2 points)
    length: float  # m
    speed_limit: float  # m/s: min of the lane limit and every zone cap along it
    s_start: float  # arc length along the plan where this segment begins (m)
    crosswalk: str | None = None  # the crosswalk this segment enters: stop at the kerb first

    @property
    def lane_name(self) -> str:
        """`from->to` of the lane, "" off the graph (the Navigate feedback's `current_lane`)."""
        return f"{self.lane[0]}->{self.lane[1]}" if self.lane else ""

    @property
    def travel_time(self) -> float:
        return self.length / self.speed_limit

    @property
    def s_end(self) -> float:
        return self.s_start + self.length


@dataclass(frozen=True)
class Plan:
    segments: tuple[Segment, ...]
    crossings: tuple[Crossing, ...]
    start: tuple[float, float]
    goal: tuple[float, float]
    goal_yaw: float | None  # heading to stop in; None: any
    goal_name: str  # the goal waypoint, "" for a pose goal
    waypoints: tuple[str, ...]  # graph waypoints passed, in order
    length: float  # m
    eta_s: float  # s at the segments' speed limits, without waiting at crossings

    def segment_at(self, s: float) -> int:
        """Index of the segment holding arc length `s` (clamped to the plan); -1 if empty."""
        if not self.segments:
            return -1
        return min(bisect.bisect_right(self._segment_ends, s), len(self.segments) - 1)

    @functools.cached_property
    def _segment_ends(self) -> tuple[float, ...]:
        return tuple(seg.s_end for seg in self.segments)


@dataclass(frozen=True)
class NoPath:
    """No route: the goal is unknown, outside the geofence, or unreachable (maybe for now)."""

    message: str

    @property
    def code(self) -> NavCode:
        return NavCode.NO_PATH


@dataclass(frozen=True)
class LaneClosure:
    """A lane reported blocked by a robot driving `start -> end`; closed until `reopen_at`."""

    start: str
    end: str
    closed_at: float
    reopen_at: float

    @property
    def name(self) -> str:
        return f"{self.start}->{self.end}"


@dataclass(frozen=True)
class _V:
    """A temporary search node: the start or goal pose, or a pose's projection onto a lane."""

    kind: str  # "start", "goal", "s" (start projection), "g" (goal projection)
    edge: int = -1


Node = str | _V


class _Piece(NamedTuple):
    """A plan step before it gets its place in the plan (see RoutePlanner._assemble)."""

    start: str
    end: str
    edge: tuple[str, str] | None
    a: tuple[float, float]
    b: tuple[float, float]
    length: float
    speed: float
    crosswalks: list[tuple[str, float, float]]  # (zone, enter, leave) from the step's start


@dataclass(frozen=True)
class _Join:
    """A pose's projection onto directed edge `edge` at fraction `t` from its start."""

    edge: int
    t: float
    x: float
    y: float
    distance: float


class RoutePlanner:
    """Fastest plans on one world's route graph, with runtime lane closures. Thread-safe."""

    def __init__(self, route: RouteGraph, params: PlannerParams | None = None) -> None:
        self.route = route
        self.params = params or PlannerParams()
        fence = route.geofence
        if fence is None:
            raise ValueError(f"{route.source}: the route graph has no geofence (operating area)")
        self._fence: Any = fence
        self._start_fence: Any = fence.buffer(self.params.start_outside_tolerance)
        shapely.prepare(self._fence)
        shapely.prepare(self._start_fence)
        self._crosswalks = {z.name: z for z in route.zones_of_kind(ZoneKind.CROSSWALK)}
        self._capped = [z for z in route.zones if z.effective_speed_limit is not None]
        self._xy: dict[str, tuple[float, float]] = {
            n: (w.x, w.y) for n, w in route.waypoints.items()
        }
        names = list(self._xy)
        coords = np.array([self._xy[n] for n in names], dtype=float).reshape(-1, 2)
        inside = shapely.covers(self._fence, shapely.points(coords)) if names else []
        self._outside = {n for n, ok in zip(names, inside, strict=True) if not ok}
        self._lock = threading.RLock()
        self._closures: dict[tuple[str, str], LaneClosure] = {}  # by lane key
        self._closed: dict[tuple[str, str], LaneClosure] = {}  # by directed edge
        # waypoint-to-waypoint results by (start, goal, closure version): a closure makes the
        # old entries unreachable in O(1); they age out of the LRU instead of being freed at once
        self._cache: OrderedDict[tuple[str, str, int], Plan | NoPath] = OrderedDict()
        self._version = 0
        self._lane_key: dict[tuple[str, str], tuple[str, str]] = {}
        self._lane_edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for lane in route.lanes:
            key = (lane.start, lane.end)
            dirs = [key] if lane.one_way else [key, (lane.end, lane.start)]
            self._lane_edges[key] = dirs
            for d in dirs:
                self._lane_key[d] = key
        self._build_edges()
        self._build_landmarks()

    # -- precomputation --------------------------------------------------------------------
    def _build_edges(self) -> None:
        """Per directed edge, once: inside the fence?, effective limit, crosswalk intervals."""
        edges = [(str(u), str(v)) for u, v in self.route.graph.edges]
        coords = np.array(
            [[self._xy[u], self._xy[v]] for u, v in edges], dtype=float
        ).reshape(-1, 2, 2)
        lines = shapely.linestrings(coords) if edges else np.empty(0, dtype=object)
        inside = shapely.covers(self._fence, lines) if edges else np.empty(0, dtype=bool)
        limits = np.array(
            [float(self.route.graph.edges[u, v]["speed_limit"]) for u, v in edges], dtype=float
        )
        for zone in self._capped:
            cap = zone.effective_speed_limit
            assert cap is not None
            hit = np.flatnonzero(shapely.intersects(lines, zone.polygon))
            if hit.size:
                through = shapely.length(shapely.intersection(lines[hit], zone.polygon)) > _EPS
                idx = hit[through]
                limits[idx] = np.minimum(limits[idx], cap)
        self._crossings_of: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
        for zone in self._crosswalks.values():
            for hit_index in np.flatnonzero(shapely.intersects(lines, zone.polygon)):
                edge = edges[int(hit_index)]
                for d_in, d_out in _intervals(lines[hit_index], zone):
                    self._crossings_of.setdefault(edge, []).append((zone.name, d_in, d_out))
        for pieces in self._crossings_of.values():
            pieces.sort(key=lambda p: p[1])

        self._g: Any = nx.DiGraph()
        self._g.add_nodes_from(n for n in self._xy if n not in self._outside)
        self._edges: list[tuple[str, str]] = []
        self._speed: dict[tuple[str, str], float] = {}
        self._length: dict[tuple[str, str], float] = {}
        self._excluded: set[tuple[str, str]] = set()
        for i, (u, v) in enumerate(edges):
            length = float(self.route.graph.edges[u, v]["length"])
            if not inside[i] or u in self._outside or v in self._outside or length <= _EPS:
                self._excluded.add((u, v))  # never plan outside the fence, even unvalidated
                continue
            speed = float(limits[i])
            self._g.add_edge(u, v, t=length / speed)
            self._edges.append((u, v))
            self._speed[u, v] = speed
            self._length[u, v] = length
        arr = np.array(
            [(*self._xy[u], *self._xy[v]) for u, v in self._edges], dtype=float
        ).reshape(-1, 4)
        self._ax, self._ay = arr[:, 0], arr[:, 1]
        self._dx, self._dy = arr[:, 2] - arr[:, 0], arr[:, 3] - arr[:, 1]
        self._l2 = np.maximum(self._dx**2 + self._dy**2, _EPS)
        self._vmax = max([self.params.off_graph_speed, *self._speed.values()])

    def _build_landmarks(self) -> None:
        """Travel times from and to a few landmarks spread over the map (farthest-point picks).

        For any node n and target t, d(L, t) - d(L, n) and d(n, L) - d(t, L) are lower bounds
        of d(n, t) (triangle inequality), and they stay lower bounds when lanes close (closing
        only makes routes slower), so they are computed once for the open graph.
        """
        nodes = [str(n) for n in self._g.nodes]
        self._index = {n: i for i, n in enumerate(nodes)}
        self._bounds_cache: OrderedDict[str, list[float]] = OrderedDict()
        xy = np.array([self._xy[n] for n in nodes], dtype=float).reshape(-1, 2)
        self._node_xy = xy
        k = min(self.params.landmarks, len(nodes))
        self._from_lm = np.full((k, len(nodes)), np.inf)
        self._to_lm = np.full((k, len(nodes)), np.inf)
        if k == 0:
            return
        nearest = np.hypot(*(xy - xy.mean(axis=0)).T)
        picks: list[int] = []
        for _ in range(k):
            pick = int(np.argmax(nearest))
            picks.append(pick)
            nearest = np.minimum(nearest, np.hypot(*(xy - xy[pick]).T))
        reverse = self._g.reverse(copy=False)
        for row, pick in enumerate(picks):
            for graph, table in ((self._g, self._from_lm), (reverse, self._to_lm)):
                dist = nx.single_source_dijkstra_path_length(graph, nodes[pick], weight="t")
                idx = np.fromiter((self._index[n] for n in dist), dtype=np.intp, count=len(dist))
                table[row, idx] = np.fromiter(dist.values(), dtype=float, count=len(dist))

    def _lower_bounds(
        self, goal_xy: tuple[float, float], target: str | None, entries: list[tuple[str, float]]
    ) -> list[float]:
        """Per node (by index): a lower bound of the travel time to the target waypoint, or to
        the goal pose reached through `entries` (waypoint, seconds from it to the goal)."""
        if target is not None and target in self._bounds_cache:
            self._bounds_cache.move_to_end(target)
            return self._bounds_cache[target]
        gx, gy = goal_xy
        bound = np.hypot(self._node_xy[:, 0] - gx, self._node_xy[:, 1] - gy) / self._vmax
        if self._from_lm.shape[0]:
            with np.errstate(invalid="ignore"):  # inf - inf: no bound from that landmark
                if target is not None:
                    t = self._index[target]
                    alt = np.fmax.reduce(self._from_lm[:, t : t + 1] - self._from_lm, axis=0)
                    alt = np.fmax(alt, np.fmax.reduce(self._to_lm - self._to_lm[:, t : t + 1],
                                                      axis=0))
                else:
                    to_goal = np.full(self._from_lm.shape[0], np.inf)
                    for node, cost in entries:
                        to_goal = np.minimum(to_goal, self._from_lm[:, self._index[node]] + cost)
                    alt = np.fmax.reduce(to_goal[:, None] - self._from_lm, axis=0)
            bound = np.fmax(bound, alt)
        # a hair below the true bound, so float rounding can never make it overestimate
        out: list[float] = (bound * (1.0 - 1e-9)).tolist()
        if target is not None:  # bounds ignore closures: valid until the graph changes
            self._bounds_cache[target] = out
            if len(self._bounds_cache) > _BOUNDS_CACHE_SIZE:
                self._bounds_cache.popitem(last=False)
        return out

    @property
    def refused_lanes(self) -> list[tuple[str, str]]:
        """Directed lanes never planned on: they leave the geofence (a graph that was loaded
        without validation) or have no length."""
        return sorted(self._excluded)

    # -- closures ---------------------------------------------------------------------------
    def close_lane(
        self, start: str, end: str, now: float, reopen_after_s: float | None = None
    ) -> LaneClosure:
        """Close the lane a robot driving start -> end reported blocked (both directions of a
        two-way lane: the obstruction is physical); it reopens `reopen_after_s` later.

        A robot standing on a closed lane may still leave it back towards `start` (the way the
        reporter came), so a blocked robot can turn round instead of being stranded.
        Raises KeyError for a lane that does not exist (a caller bug, not a routing outcome).
        """
        if (start, end) not in self._lane_key:
            raise KeyError(f"no lane {start!r} -> {end!r} in world {self.route.world!r}")
        after = self.params.reopen_after_s if reopen_after_s is None else reopen_after_s
        if not after > 0.0:
            raise ValueError(f"reopen_after_s must be > 0, got {after!r}")
        closure = LaneClosure(start, end, now, now + after)
        with self._lock:
            self._expire(now)
            self._closures[self._lane_key[start, end]] = closure
            self._rebuild_closed()
        return closure

    def reopen_lane(self, start: str, end: str) -> bool:
        """Reopen a closed lane now (e.g. an operator cleared it); False if it was not closed."""
        key = self._lane_key.get((start, end))
        with self._lock:
            if key is None or key not in self._closures:
                return False
            del self._closures[key]
            self._rebuild_closed()
            return True

    def closures(self, now: float) -> list[LaneClosure]:
        """The lanes closed at `now` (expired closures are dropped first)."""
        with self._lock:
            self._expire(now)
            return sorted(self._closures.values(), key=lambda c: (c.reopen_at, c.name))

    def is_closed(self, start: str, end: str, now: float) -> bool:
        with self._lock:
            self._expire(now)
            return (start, end) in self._closed

    def _expire(self, now: float) -> None:
        gone = [k for k, c in self._closures.items() if c.reopen_at <= now]
        if gone:
            for k in gone:
                del self._closures[k]
            self._rebuild_closed()

    def _rebuild_closed(self) -> None:
        self._closed = {
            d: c for k, c in self._closures.items() for d in self._lane_edges[k]
        }
        self._version += 1

    def _may_leave_by(self, edge: tuple[str, str]) -> bool:
        """May a robot standing on `edge`'s lane drive along it in this direction?"""
        closure = self._closed.get(edge)
        return closure is None or (closure.end, closure.start) == edge

    # -- planning ---------------------------------------------------------------------------
    def plan(self, start: Start, goal: Goal, now: float) -> Plan | NoPath:
        """The fastest plan from `start` to `goal` at time `now`, or NoPath saying why."""
        with self._lock:
            self._expire(now)
            if isinstance(start, str) and isinstance(goal, str):
                key = (start, goal, self._version)
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    return cached
                result = self._plan(start, goal)
                self._cache[key] = result
                if len(self._cache) > self.params.cache_size:
                    self._cache.popitem(last=False)
                return result
            return self._plan(start, goal)

    def _plan(self, start: Start, goal: Goal) -> Plan | NoPath:
        # -- the goal --
        goal_yaw: float | None = None
        goal_joins: list[_Join] = []
        if isinstance(goal, str):
            problem = self._check_waypoint(goal, "goal")
            if problem:
                return NoPath(problem)
            goal_node: Node = goal
            gx, gy = self._xy[goal]
            goal_yaw = self.route.waypoints[goal].yaw
        else:
            parsed = _parse_pose(goal)
            if parsed is None:
                return NoPath(f"goal {goal!r} is not a finite (x, y) or (x, y, yaw) pose")
            gx, gy, goal_yaw = parsed
            where = f"goal ({gx:.2f}, {gy:.2f})"
            if not self._fence.covers(Point(gx, gy)):
                return NoPath(f"{where} is outside the geofence (the operating area)")
            for zone in self._crosswalks.values():
                if zone.polygon.covers(Point(gx, gy)):
                    return NoPath(f"{where} is inside crosswalk {zone.name!r}: robots never "
                                  "stop on a crossing")
            goal_joins, why = self._joins(gx, gy, self._fence, where)
            if not goal_joins:
                return NoPath(why)
            goal_node = _V("goal")
        # -- the start --
        start_joins: list[_Join] = []
        if isinstance(start, str):
            problem = self._check_waypoint(start, "start")
            if problem:
                return NoPath(problem)
            start_node: Node = start
            sx, sy = self._xy[start]
        else:
            parsed = _parse_pose(start)
            if parsed is None:
                return NoPath(f"start {start!r} is not a finite (x, y) or (x, y, yaw) pose")
            sx, sy, _ = parsed
            where = f"robot at ({sx:.2f}, {sy:.2f})"
            if not self._start_fence.covers(Point(sx, sy)):
                return NoPath(f"{where} is outside the geofence (the operating area)")
            start_joins, why = self._joins(sx, sy, self._start_fence, where)
            start_joins = [j for j in start_joins
                           if self._snap(j) is not None or self._may_leave_by(self._edges[j.edge])]
            if not start_joins:
                return NoPath(why or f"{where}: every lane near it is closed")
            start_node = _V("start")
        goal_name = goal if isinstance(goal, str) else ""
        if start_node == goal_node:
            return self._assemble([start_node], {}, {}, (sx, sy), (gx, gy), goal_yaw, goal_name)
        # Join at the nearest lanes first; only if that finds no route, at any candidate.
        tiers = [(self._nearest(start_joins), self._nearest(goal_joins))]
        if tiers[0] != (start_joins, goal_joins):
            tiers.append((start_joins, goal_joins))
        for s_joins, g_joins in tiers:
            found = self._search(start_node, (sx, sy), s_joins, goal_node, (gx, gy), g_joins)
            if found is not None:
                path, virtual, joins = found
                return self._assemble(path, virtual, joins, (sx, sy), (gx, gy), goal_yaw,
                                      goal_name)
        return NoPath(self._unreachable_message(start, goal))

    def _search(
        self,
        start_node: Node,
        start_xy: tuple[float, float],
        start_joins: list[_Join],
        goal_node: Node,
        goal_xy: tuple[float, float],
        goal_joins: list[_Join],
    ) -> tuple[list[Node], dict[Node, tuple[float, float]], dict[Node, _Join]] | None:
        """A* from start to goal; poses are linked to the graph by temporary nodes and edges."""
        g = self._g
        off = self.params.off_graph_speed
        virtual: dict[Node, tuple[float, float]] = {}
        joins: dict[Node, _Join] = {}
        added: list[tuple[Node, Node, float]] = []
        if isinstance(start_node, _V):
            virtual[start_node] = start_xy
        if isinstance(goal_node, _V):
            virtual[goal_node] = goal_xy
        for j in start_joins:
            u, v = self._edges[j.edge]
            end = self._snap(j)
            if end is not None:  # the pose projects onto a waypoint: join there
                added.append((start_node, end, j.distance / off))
                continue
            node = _V("s", j.edge)
            virtual[node], joins[node] = (j.x, j.y), j
            added.append((start_node, node, j.distance / off))
            added.append((node, v, (1.0 - j.t) * self._time(u, v)))
        for j in goal_joins:
            u, v = self._edges[j.edge]
            end = self._snap(j)
            if end is not None:
                added.append((end, goal_node, j.distance / off))
                continue
            node = _V("g", j.edge)
            virtual[node], joins[node] = (j.x, j.y), j
            if (u, v) not in self._closed:
                added.append((u, node, j.t * self._time(u, v)))
            added.append((node, goal_node, j.distance / off))
            start_on_lane = _V("s", j.edge)
            if start_on_lane in joins and joins[start_on_lane].t <= j.t:  # same lane, ahead
                added.append((start_on_lane, node, (j.t - joins[start_on_lane].t)
                              * self._time(u, v)))
        closed = self._closed
        # exact remaining cost from a goal projection; 0 (admissible) for the start side
        exact = {a: t for a, b, t in added
                 if b == goal_node and isinstance(a, _V) and a.kind == "g"}
        entries = [(a, t) for a, b, t in added if b == goal_node and isinstance(a, str)]
        for a, b, t in added:
            if isinstance(b, _V) and b.kind == "g" and isinstance(a, str):
                entries.append((a, t + exact[b]))
        bounds = self._lower_bounds(
            goal_xy, goal_node if isinstance(goal_node, str) else None, entries
        )
        index = self._index
        first = [start_node] if isinstance(start_node, str) else [
            b for a, b, _ in added if isinstance(b, str) and (a == start_node or a in joins)
        ]
        same_lane = any(isinstance(a, _V) and a.kind == "s" and isinstance(b, _V)
                        and b.kind == "g" for a, b, _ in added)
        if not same_lane and all(math.isinf(bounds[index[n]]) for n in first):
            return None  # landmarks prove the goal unreachable: skip the exhaustive search

        def weight(u: Node, v: Node, d: dict[str, Any]) -> float | None:
            return None if (u, v) in closed else float(d["t"])

        def heuristic(n: Node, _target: Node) -> float:
            return bounds[index[n]] if isinstance(n, str) else exact.get(n, 0.0)

        try:
            for a, b, t in added:
                g.add_edge(a, b, t=max(t, 0.0))
            path = nx.astar_path(g, start_node, goal_node, heuristic=heuristic, weight=weight)
        except nx.NetworkXNoPath:
            return None
        finally:
            g.remove_nodes_from([n for n in virtual if n in g])
        return list(path), virtual, joins

    def _snap(self, j: _Join) -> str | None:
        """The waypoint a projection lands on (within 1 mm), if any."""
        u, v = self._edges[j.edge]
        along = j.t * self._length[u, v]
        if along <= _SNAP:
            return u
        if self._length[u, v] - along <= _SNAP:
            return v
        return None

    def _nearest(self, joins: list[_Join]) -> list[_Join]:
        if not joins:
            return joins
        limit = joins[0].distance + self.params.join_slack
        return [j for j in joins if j.distance <= limit]

    def _time(self, u: str, v: str) -> float:
        return self._length[u, v] / self._speed[u, v]

    def _check_waypoint(self, name: str, role: str) -> str | None:
        if name not in self.route.waypoints:
            return f"{role}: no waypoint {name!r} in world {self.route.world!r}"
        if name in self._outside:
            return f"{role}: waypoint {name!r} is outside the geofence"
        return None

    def _unreachable_message(self, start: Start, goal: Goal) -> str:
        a = repr(start) if isinstance(start, str) else "the robot's position"
        b = repr(goal) if isinstance(goal, str) else "the goal pose"
        msg = f"no route from {a} to {b}"
        if self._closures:
            names = ", ".join(
                f"{c.name} (until t={c.reopen_at:.0f} s)"
                for c in sorted(self._closures.values(), key=lambda c: c.reopen_at)
            )
            msg += f" while these lanes are closed: {names}"
        else:
            msg += " (one-way lanes honoured)"
        return msg

    def _joins(self, x: float, y: float, fence: Any, where: str) -> tuple[list[_Join], str]:
        """The nearest directed lanes a pose can reach in a straight line inside the fence."""
        if not self._edges:
            return [], f"{where}: the route graph has no usable lanes"
        t = np.clip(((x - self._ax) * self._dx + (y - self._ay) * self._dy) / self._l2, 0.0, 1.0)
        px, py = self._ax + t * self._dx, self._ay + t * self._dy
        dist = np.hypot(px - x, py - y)
        k = min(self.params.join_candidates, dist.size)
        nearest = np.argpartition(dist, k - 1)[:k]
        nearest = nearest[np.argsort(dist[nearest], kind="stable")]
        out: list[_Join] = []
        for i in nearest:
            d = float(dist[i])
            if d > self.params.max_join_distance:
                break
            jx, jy = float(px[i]), float(py[i])
            if d > _EPS and not fence.covers(LineString([(x, y), (jx, jy)])):
                continue
            out.append(_Join(int(i), float(t[i]), jx, jy, d))
        if out:
            return out, ""
        d0 = float(dist[nearest[0]])
        if d0 > self.params.max_join_distance:
            return [], (f"{where} is {d0:.1f} m from the nearest lane (at most "
                        f"{self.params.max_join_distance:.1f} m off the route graph)")
        return [], f"{where} cannot reach a lane in a straight line inside the geofence"

    # -- plan assembly ----------------------------------------------------------------------
    def _assemble(
        self,
        path: Sequence[Node],
        virtual: dict[Node, tuple[float, float]],
        joins: dict[Node, _Join],
        start_xy: tuple[float, float],
        goal_xy: tuple[float, float],
        goal_yaw: float | None,
        goal_name: str,
    ) -> Plan:
        segments: list[Segment] = []
        crossings: list[Crossing] = []
        s = 0.0
        for p, q in pairwise(path):
            piece = self._piece(p, q, virtual, joins)
            if piece is None:
                continue
            index = len(segments)
            flagged: str | None = None
            for zone_name, d_in, d_out in piece.crosswalks:
                zone = self._crosswalks[zone_name]
                start_pt = Point(piece.a)
                already_in = d_in <= _EPS and zone.polygon.contains(start_pt) and (
                    zone.polygon.boundary.distance(start_pt) > 0.01
                )
                if already_in:
                    last = crossings[-1] if crossings else None
                    if last and last.zone == zone_name and abs(last.exit_s - s) < 1e-3:
                        crossings[-1] = replace(last, exit_s=s + d_out)
                    continue  # started on the crossing (a replan): nothing to wait for
                entry = s + d_in
                stop = max(s, entry - self.params.kerb_stop_margin)
                crossings.append(Crossing(zone_name, zone.signal, index, stop, entry, s + d_out))
                flagged = flagged or zone_name
            segments.append(Segment(piece.start, piece.end, piece.edge, (piece.a, piece.b),
                                    piece.length, piece.speed, s, flagged))
            s += piece.length
        eta = sum(seg.travel_time for seg in segments)
        waypoints = tuple(n for n in path if isinstance(n, str))
        return Plan(tuple(segments), tuple(crossings), start_xy, goal_xy, goal_yaw, goal_name,
                    waypoints, s, eta)

    def _piece(
        self,
        p: Node,
        q: Node,
        virtual: dict[Node, tuple[float, float]],
        joins: dict[Node, _Join],
    ) -> _Piece | None:
        """The step p -> q with its crosswalk intervals (relative to its start), or None for
        a zero-length step (a pose exactly on the graph)."""

        def xy(n: Node) -> tuple[float, float]:
            return self._xy[n] if isinstance(n, str) else virtual[n]

        def name(n: Node) -> str:
            if isinstance(n, str):
                return n
            return n.kind if n.kind in ("start", "goal") else ""

        a, b = xy(p), xy(q)
        if isinstance(p, str) and isinstance(q, str):
            edge: tuple[str, str] | None = (p, q)
            d0, d1 = 0.0, self._length[p, q]
        elif p in joins and (isinstance(q, str) or q in joins):
            edge = self._edges[joins[p].edge]
            d0 = joins[p].t * self._length[edge]
            d1 = joins[q].t * self._length[edge] if q in joins else self._length[edge]
        elif isinstance(p, str) and q in joins:
            edge = self._edges[joins[q].edge]
            d0, d1 = 0.0, joins[q].t * self._length[edge]
        else:
            edge = None  # off-graph join from the start pose or to the goal pose
            d0, d1 = 0.0, math.hypot(b[0] - a[0], b[1] - a[1])
        length = d1 - d0
        if length <= _EPS:
            return None
        if edge is not None:
            speed = self._speed[edge]
            pieces = [
                (z, max(di, d0) - d0, min(do, d1) - d0)
                for z, di, do in self._crossings_of.get(edge, [])
                if do > d0 + _EPS and di < d1 - _EPS
            ]
        else:
            line = LineString([a, b])
            speed = self.params.off_graph_speed
            for zone in self._capped:
                cap = zone.effective_speed_limit
                if cap is not None and line.intersection(zone.polygon).length > _EPS:
                    speed = min(speed, cap)
            pieces = []
            for zone in self._crosswalks.values():
                if line.intersects(zone.polygon):
                    pieces += [(zone.name, di, do) for di, do in _intervals(line, zone)]
            pieces.sort(key=lambda piece: piece[1])
        return _Piece(name(p), name(q), edge, a, b, length, speed, pieces)


def _intervals(line: Any, zone: Zone) -> list[tuple[float, float]]:
    """Where a straight line runs inside a zone: sorted (enter, leave) distances from its start."""
    inter = line.intersection(zone.polygon)
    parts = getattr(inter, "geoms", [inter])
    out: list[tuple[float, float]] = []
    for part in parts:
        if part.geom_type != "LineString" or part.length <= _EPS:
            continue
        coords = list(part.coords)
        d0 = float(line.project(Point(coords[0])))
        d1 = float(line.project(Point(coords[-1])))
        out.append((min(d0, d1), max(d0, d1)))
    return sorted(out)


def _parse_pose(value: object) -> tuple[float, float, float | None] | None:
    """(x, y, yaw or None) from an (x, y) / (x, y, yaw) tuple; None if malformed or not finite."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) not in (2, 3):
        return None
    try:
        nums = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in nums):
        return None
    return nums[0], nums[1], (nums[2] if len(nums) == 3 else None)

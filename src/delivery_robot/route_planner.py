"""Fastest routes on a world's route graph for the built-in navigator (issue 5, item 1). ROS-free.

`RouteGraph.shortest_path` answers "which waypoints", for validated graphs and static lanes. A
robot on the pavement needs more: it starts wherever it is (not on a waypoint), may be sent to a
map pose, must avoid lanes that robots reported blocked (until they reopen), must never plan
outside the geofence, and has to know where to stop at the kerb before a crosswalk. This module
turns a goal into a `Plan` (straight segments with polylines, per-segment speed limits, crosswalk
gates, length, ETA) or a typed `NoPath` with a message a human can act on; it never raises for
an unknown or unreachable goal.

Design:
- The search is A* over integer-indexed adjacency lists that hold each directed lane's travel
  time at its effective limit (the lane limit capped by every slow zone, park or crosswalk it
  runs through), so the result is the fastest route. A binary heap on plain lists, no
  networkx in the search: bench/bench_route_planning.py times it on a 10,000-waypoint city
  against networkx's A* on the same graph (several times faster, equal travel times).
- The A* heuristic is the larger of straight-line distance over the top speed and landmark
  (ALT) bounds from travel times to and from a few landmarks computed once: both stay
  admissible when lanes close, since closing a lane only makes routes slower, and a landmark
  bound of "unreachable" (one-way lanes, the fence) prunes a node or answers NO_PATH without
  a search. The bounds of all nodes for one goal waypoint are cached.
- Closures: the search reads per-node lists of the lanes open now; closing or reopening a lane
  rebuilds only the lists of the nodes it touches and bumps a version that retires the cached
  plans. A closure expires at its `reopen_at` on the caller's clock.
- A pose joins the graph at its projections onto the nearest lanes (an R-tree of the lanes;
  within `join_slack` of the nearest one; the other candidates within `max_join_distance` only
  if that finds no route), through a straight join inside the geofence, costed at
  `off_graph_speed`. The projections are temporary nodes numbered after the waypoints, for one
  search; nothing shared is modified (one planner may serve several robots; it has a lock).
- Cached: lane geometry, zone caps and crosswalk intervals per directed edge and each whole
  lane as a plan step (computed once, vectorised), the prepared geofence and zones, landmark
  bounds per goal waypoint, and whole waypoint-to-waypoint plans (keyed by the closure
  version, so a closure or a reopening invalidates them).

Units: metres, seconds, m/s, radians; map frame (REP-103/105). Times (`now`) are seconds on the
caller's clock (ROS time, sim time): the same clock for closing lanes and planning.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from itertools import pairwise
from typing import Any, NamedTuple

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
    # Drive right of two-way lanes' centre lines as the route graph says (its keep_right):
    # robots meeting head-on pass each other instead of blocking the lane for both.
    keep_right: bool = True

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
        # the same zones in R-trees: a pose or a join tests only the zones near it
        self._crosswalk_zones = list(self._crosswalks.values())
        self._crosswalk_polys: Any = np.array([z.polygon for z in self._crosswalk_zones],
                                              dtype=object)
        self._capped_polys: Any = np.array([z.polygon for z in self._capped], dtype=object)
        self._crosswalk_tree = shapely.STRtree(self._crosswalk_polys)
        self._capped_tree = shapely.STRtree(self._capped_polys)
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
        self._next_reopen = math.inf  # the earliest reopen_at of the closures
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

        # The search graph: nodes are the waypoints inside the fence, indexed 0..n-1; edges are
        # indexed too (their index is a _Join's `edge`), with travel times in flat lists that
        # the search reads without a dict or a networkx view in its inner loop.
        self._names: list[str] = [n for n in self._xy if n not in self._outside]
        self._index: dict[str, int] = {n: i for i, n in enumerate(self._names)}
        self._edges: list[tuple[str, str]] = []
        self._speed: dict[tuple[str, str], float] = {}
        self._length: dict[tuple[str, str], float] = {}
        self._excluded: set[tuple[str, str]] = set()
        self._edge_id: dict[tuple[str, str], int] = {}
        self._out: list[list[tuple[int, float, int]]] = [[] for _ in self._names]
        self._in: list[list[tuple[int, float, int]]] = [[] for _ in self._names]
        for i, (u, v) in enumerate(edges):
            length = float(self.route.graph.edges[u, v]["length"])
            if not inside[i] or u in self._outside or v in self._outside or length <= _EPS:
                self._excluded.add((u, v))  # never plan outside the fence, even unvalidated
                continue
            speed = float(limits[i])
            e = len(self._edges)
            self._edges.append((u, v))
            self._edge_id[u, v] = e
            self._speed[u, v] = speed
            self._length[u, v] = length
            a, b, t = self._index[u], self._index[v], length / speed
            self._out[a].append((b, t, e))
            self._in[b].append((a, t, e))
        # What the search reads: per node, (next node, travel time) over the lanes open now;
        # a closure change rebuilds the lists of the nodes it touches (see _set_closure).
        self._open_out: list[list[tuple[int, float]]] = [
            [(b, t) for b, t, _ in adj] for adj in self._out
        ]
        self._closed_ids: set[int] = set()  # edges closed now, by index
        self._offset: dict[tuple[str, str], float] = {}
        if self.params.keep_right:
            for u, v in self._length:
                offset = self.route.lane_offset(u, v)
                if offset > _EPS:
                    self._offset[u, v] = offset
        # every whole lane as a plan step, ready for _assemble
        self._lane_pieces: dict[tuple[Node, Node], _Piece] = {}
        for (u, v), length in self._length.items():
            cross = [(z, max(di, 0.0), min(do, length))
                     for z, di, do in self._crossings_of.get((u, v), [])
                     if do > _EPS and di < length - _EPS]
            self._lane_pieces[u, v] = _Piece(u, v, (u, v), self._xy[u], self._xy[v], length,
                                             self._speed[u, v], cross)
        self._edge_lines: Any = (lines[[i for i, e in enumerate(edges) if e in self._edge_id]]
                                 if edges else np.empty(0, dtype=object))
        self._edge_tree = shapely.STRtree(self._edge_lines)
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
        only makes routes slower), so they are computed once for the open graph. An infinite
        bound proves a node cannot reach the target at all (one-way lanes, the fence).
        """
        self._bounds_cache: OrderedDict[str, array[float]] = OrderedDict()
        n = len(self._names)
        xy = np.array([self._xy[name] for name in self._names], dtype=float).reshape(-1, 2)
        self._node_xy = xy
        k = min(self.params.landmarks, n)
        self._from_lm = np.full((k, n), np.inf)
        self._to_lm = np.full((k, n), np.inf)
        self._big = math.inf
        self._lm = np.empty((0, n), dtype=np.float32)
        self._margin = 0.0
        self._centre = xy.mean(axis=0) if n else np.zeros(2)
        self._node_x32 = np.ascontiguousarray(xy[:, 0] - self._centre[0], dtype=np.float32)
        self._node_y32 = np.ascontiguousarray(xy[:, 1] - self._centre[1], dtype=np.float32)
        if k == 0:
            return
        nearest = np.hypot(*(xy - self._centre).T)
        picks: list[int] = []
        for _ in range(k):
            pick = int(np.argmax(nearest))
            picks.append(pick)
            nearest = np.minimum(nearest, np.hypot(*(xy - xy[pick]).T))
        for row, pick in enumerate(picks):
            self._from_lm[row] = _dijkstra(self._out, pick)
            self._to_lm[row] = _dijkstra(self._in, pick)
        # One matrix for both kinds of bound, rows d(L, .) and -d(., L), so the bound of every
        # node is one subtraction and one max: max_r (M[r, t] - M[r, n]). "Unreachable" is
        # a finite sentinel instead of inf (inf - inf would be NaN), far above any real time,
        # so a difference above half of it still proves a node cannot reach the target.
        p = self.params
        join = p.max_join_distance / p.off_graph_speed  # the most a join can cost
        self._big = 4.0 * (sum(t for adj in self._out for _, t, _ in adj) + join + 1.0)
        lm = np.vstack([np.where(np.isinf(self._from_lm), self._big, self._from_lm),
                        -np.where(np.isinf(self._to_lm), self._big, self._to_lm)])
        # Kept in float32: a bound is one pass over 2k x n numbers, and half the bytes make it
        # about twice as fast. Every bound is lowered by a margin above float32's rounding of
        # the largest finite time (plus the Euclidean part), so it never overestimates.
        self._lm = lm.astype(np.float32)
        finite = np.abs(lm[np.abs(lm) < 0.5 * self._big])
        largest = (float(finite.max()) if finite.size else 0.0) + join + float(
            np.ptp(xy, axis=0).sum()) / self._vmax
        self._margin = 8.0 * float(np.finfo(np.float32).eps) * largest + 1e-9

    def _lower_bounds(
        self, goal_xy: tuple[float, float], target: str | None, entries: list[tuple[str, float]]
    ) -> array[float]:
        """Per node (by index): a lower bound of the travel time to the target waypoint, or to
        the goal pose reached through `entries` (waypoint, seconds from it to the goal); inf
        where the node cannot reach it at all. An array, not a list: the search reads only the
        nodes it touches, so boxing all 10,000 floats up front would be wasted."""
        if target is not None and target in self._bounds_cache:
            self._bounds_cache.move_to_end(target)
            return self._bounds_cache[target]
        gx, gy = goal_xy
        if not self._lm.shape[0]:
            bound = np.hypot(self._node_xy[:, 0] - gx, self._node_xy[:, 1] - gy)
            # a hair below the true bound, so float rounding can never make it overestimate
            bound *= (1.0 - 1e-9) / self._vmax
            out = array("d", bound.tobytes())
        else:
            lm = self._lm  # (coordinates about the centre: float32 keeps centimetres)
            bound32 = np.hypot(self._node_x32 - np.float32(gx - self._centre[0]),
                               self._node_y32 - np.float32(gy - self._centre[1]))
            bound32 *= np.float32(1.0 / self._vmax)
            if target is not None:
                t = self._index[target]
                alt = (lm[:, t : t + 1] - lm).max(axis=0)
            else:
                k = lm.shape[0] // 2  # the rows d(L, .): the goal pose has no lanes out
                to_goal = np.full(k, self._big, dtype=np.float32)
                for node, cost in entries:
                    to_goal = np.minimum(to_goal, lm[:k, self._index[node]] + np.float32(cost))
                alt = (to_goal[:, None] - lm[:k]).max(axis=0)
            np.maximum(bound32, alt, out=bound32)
            bound = bound32.astype(np.float64)
            bound -= self._margin
            np.maximum(bound, 0.0, out=bound)
            bound[alt > 0.5 * self._big] = math.inf
            out = array("d", bound.tobytes())
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
            self._set_closure(self._lane_key[start, end], closure)
        return closure

    def reopen_lane(self, start: str, end: str) -> bool:
        """Reopen a closed lane now (e.g. an operator cleared it); False if it was not closed."""
        key = self._lane_key.get((start, end))
        with self._lock:
            if key is None or key not in self._closures:
                return False
            self._set_closure(key, None)
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
        if now < self._next_reopen:
            return  # (plan() calls this every time: usually nothing is due)
        for key in [k for k, c in self._closures.items() if c.reopen_at <= now]:
            self._set_closure(key, None)

    def _set_closure(self, key: tuple[str, str], closure: LaneClosure | None) -> None:
        """Close (or with None reopen) the lane `key`: both directions of a two-way lane, in
        the look-ups and in the search's lists of open lanes of the nodes it leaves."""
        if closure is None:
            self._closures.pop(key, None)
        else:
            self._closures[key] = closure
        for d in self._lane_edges[key]:
            if closure is None:
                self._closed.pop(d, None)
            else:
                self._closed[d] = closure
            e = self._edge_id.get(d)
            if e is None:
                continue  # a refused lane: never planned on anyway
            if closure is None:
                self._closed_ids.discard(e)
            else:
                self._closed_ids.add(e)
            a = self._index[d[0]]
            self._open_out[a] = [(b, t) for b, t, i in self._out[a]
                                 if i not in self._closed_ids]
        self._next_reopen = min((c.reopen_at for c in self._closures.values()),
                                default=math.inf)
        self._version += 1  # cached plans of other versions are never returned again

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
            inside = self._crosswalk_tree.query(Point(gx, gy), predicate="covered_by")
            if inside.size:
                zone = self._crosswalk_zones[int(inside.min())]
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

        # Temporary nodes get the indices after the waypoints; their edges are never closed
        # (a start join onto a closed lane was already dropped unless it leaves backwards).
        n = len(self._names)
        temp = [node for node in virtual if isinstance(node, _V)]
        ids = {node: n + i for i, node in enumerate(temp)}

        def nid(node: Node) -> int:
            return index[node] if isinstance(node, str) else ids[node]

        extra: dict[int, list[tuple[int, float]]] = {}
        for a, b, t in added:
            extra.setdefault(nid(a), []).append((nid(b), max(t, 0.0)))
        heuristic = bounds + array("d", [exact.get(node, 0.0) for node in temp])
        path = _astar(self._open_out, extra, heuristic, nid(start_node), nid(goal_node))
        if path is None:
            return None
        names = self._names
        return [names[i] if i < n else temp[i - n] for i in path], virtual, joins

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
        """The nearest directed lanes a pose can reach in a straight line inside the fence:
        the `join_candidates` nearest within `max_join_distance` (found with an R-tree of the
        lanes, not a scan of all of them), minus those the straight join would leave the
        fence for."""
        if not self._edges:
            return [], f"{where}: the route graph has no usable lanes"
        reach = self.params.max_join_distance
        here = Point(x, y)
        near = self._edge_tree.query(here, predicate="dwithin", distance=reach + 1e-6)
        if near.size:
            near = np.sort(near)  # ties in distance go to the lower edge index
            ax, ay, dx, dy = self._ax[near], self._ay[near], self._dx[near], self._dy[near]
            t = np.clip(((x - ax) * dx + (y - ay) * dy) / self._l2[near], 0.0, 1.0)
            px, py = ax + t * dx, ay + t * dy
            dist = np.hypot(px - x, py - y)
            order = np.argsort(dist, kind="stable")[: self.params.join_candidates]
            order = order[dist[order] <= reach]
        else:
            order = near
        if order.size:
            jx, jy = px[order], py[order]
            joins = shapely.linestrings(np.stack(
                [np.full(order.size, x), np.full(order.size, y), jx, jy], axis=1
            ).reshape(-1, 2, 2))
            reachable = (dist[order] <= _EPS) | shapely.covers(fence, joins)
            out = [_Join(int(near[i]), float(t[i]), float(px[i]), float(py[i]), float(dist[i]))
                   for i, ok in zip(order.tolist(), reachable.tolist(), strict=True) if ok]
            if out:
                return out, ""
            return [], f"{where} cannot reach a lane in a straight line inside the geofence"
        _, gap = self._edge_tree.query_nearest(here, return_distance=True)
        return [], (f"{where} is {float(gap[0]):.1f} m from the nearest lane (at most "
                    f"{reach:.1f} m off the route graph)")

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
        lane_pieces = self._lane_pieces
        for p, q in pairwise(path):
            piece = lane_pieces.get((p, q)) if isinstance(p, str) and isinstance(q, str) else None
            if piece is None:
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
        if self._offset and segments:
            segments, crossings, s = self._keep_right(segments, crossings)
        eta = sum(seg.travel_time for seg in segments)
        waypoints = tuple(n for n in path if isinstance(n, str))
        return Plan(tuple(segments), tuple(crossings), start_xy, goal_xy, goal_yaw, goal_name,
                    waypoints, s, eta)

    def _keep_right(
        self, segments: list[Segment], crossings: list[Crossing]
    ) -> tuple[list[Segment], list[Crossing], float]:
        """The plan moved to the right of two-way lanes (`keep_right`).

        Each lane step runs parallel to its lane at the lane's offset; consecutive steps meet
        where their offset lines cross (a mitre), or, where that point is far off (an about-
        turn, a near-straight change of offset), with a short sideways jog at the start of the
        next step. An off-graph join ends (or starts) at the lane's offset line instead of its
        centre line, so a robot already driving on the right joins without a sidestep. The
        plan still starts at the start and ends exactly at the goal: the first and last lane
        steps taper from and to the centre line. Crossings keep their place on their step
        (distances scaled with the step's new length)."""
        count = len(segments)
        offsets = [self._offset.get(seg.lane, 0.0) if seg.lane else 0.0 for seg in segments]
        if not any(offsets):
            return segments, crossings, segments[-1].s_end
        units: list[tuple[float, float]] = []
        for seg in segments:
            (ax, ay), (bx, by) = seg.points[0], seg.points[-1]
            length = math.hypot(bx - ax, by - ay)
            units.append(((bx - ax) / length, (by - ay) / length) if length > _EPS else (0., 0.))

        def shifted(i: int, x: float, y: float) -> tuple[float, float]:
            ux, uy = units[i]
            return (x + uy * offsets[i], y - ux * offsets[i])  # right normal = (uy, -ux)

        points: list[list[tuple[float, float]]] = [[] for _ in segments]
        for k in range(1, count):  # the joint of steps k-1 and k
            vx, vy = segments[k].points[0]
            o1, o2 = offsets[k - 1], offsets[k]
            if o1 == 0.0 and o2 == 0.0:
                joint: list[tuple[float, float]] = [(vx, vy)]
            elif segments[k - 1].lane is None:
                joint = [shifted(k, vx, vy)]
            elif segments[k].lane is None:
                joint = [shifted(k - 1, vx, vy)]
            else:
                a1, a2 = shifted(k - 1, vx, vy), shifted(k, vx, vy)
                (u1x, u1y), (u2x, u2y) = units[k - 1], units[k]
                cross = u1x * u2y - u1y * u2x
                joint = [a1, a2]  # a jog, unless the mitre is near
                if abs(cross) > 0.2:
                    t = ((a2[0] - a1[0]) * u2y - (a2[1] - a1[1]) * u2x) / cross
                    mitre = (a1[0] + t * u1x, a1[1] + t * u1y)
                    if math.hypot(mitre[0] - vx, mitre[1] - vy) <= 3.0 * max(o1, o2):
                        joint = [mitre]
                elif u1x * u2x + u1y * u2y > 0.0 and abs(o1 - o2) <= _EPS:
                    joint = [a1]
            points[k - 1].append(joint[0])
            points[k].extend(joint)
        first, last = segments[0], segments[-1]
        start, goal = first.points[0], last.points[-1]
        taper = 1.5  # m along the lane to reach (or leave) the offset line
        if offsets[0] > 0.0 and first.lane is not None:
            ux, uy = units[0]
            d = min(taper, 0.5 * first.length)
            points[0][:0] = [start, shifted(0, start[0] + ux * d, start[1] + uy * d)]
        else:
            points[0].insert(0, start)
        if offsets[-1] > 0.0 and last.lane is not None:
            ux, uy = units[-1]
            d = min(taper, 0.5 * last.length)
            end = last.points[-1]
            if count == 1 and offsets[0] > 0.0:
                d = min(d, 0.5 * last.length - 1e-3)
            points[-1].extend([shifted(count - 1, end[0] - ux * d, end[1] - uy * d), goal])
        else:
            points[-1].append(goal)

        old_ends = [seg.s_end for seg in segments]
        moved: list[Segment] = []
        s = 0.0
        for seg, pts in zip(segments, points, strict=True):
            pts = [pt for i, pt in enumerate(pts)
                   if i == 0 or math.hypot(pt[0] - pts[i - 1][0], pt[1] - pts[i - 1][1]) > _EPS]
            if len(pts) == 1:
                pts.append(pts[0])
            length = sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in pairwise(pts))
            moved.append(replace(seg, points=tuple(pts), length=length, s_start=s))
            s += length

        def moved_s(old: float) -> float:
            i = min(bisect.bisect_left(old_ends, old - _EPS), count - 1)
            before, now = segments[i], moved[i]
            share = (old - before.s_start) / before.length if before.length > _EPS else 0.0
            return now.s_start + min(max(share, 0.0), 1.0) * now.length

        crossings = [replace(c, stop_s=moved_s(c.stop_s), entry_s=moved_s(c.entry_s),
                             exit_s=moved_s(c.exit_s)) for c in crossings]
        return moved, crossings, s

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
            for i in self._capped_tree.query(line, predicate="intersects").tolist():
                zone = self._capped[i]
                cap = zone.effective_speed_limit
                if cap is not None and line.intersection(zone.polygon).length > _EPS:
                    speed = min(speed, cap)
            pieces = []
            for i in sorted(self._crosswalk_tree.query(line, predicate="intersects").tolist()):
                zone = self._crosswalk_zones[i]
                pieces += [(zone.name, di, do) for di, do in _intervals(line, zone)]
            pieces.sort(key=lambda piece: piece[1])
        return _Piece(name(p), name(q), edge, a, b, length, speed, pieces)


def _dijkstra(adjacency: list[list[tuple[int, float, int]]], source: int) -> list[float]:
    """Travel times from `source` to every node (inf: unreachable), closures ignored."""
    dist = [math.inf] * len(adjacency)
    dist[source] = 0.0
    heap = [(0.0, source)]
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        d, u = pop(heap)
        if d > dist[u]:
            continue
        for v, w, _ in adjacency[u]:
            nd = d + w
            if nd < dist[v]:
                dist[v] = nd
                push(heap, (nd, v))
    return dist


def _astar(
    adjacency: list[list[tuple[int, float]]],
    extra: dict[int, list[tuple[int, float]]],
    heuristic: array[float],
    source: int,
    target: int,
) -> list[int] | None:
    """A* on integer nodes: `adjacency` for the waypoints (the open lanes), `extra` for the
    temporary edges, `heuristic` a consistent lower bound per node (inf prunes a node that
    cannot reach the target). Returns the node path or None.

    Plain lists and a binary heap with lazy deletion: on a 10,000-waypoint graph this is
    several times faster than networkx.astar_path, which calls a weight function per edge."""
    n = len(adjacency)
    size = len(heuristic)
    dist = [math.inf] * size
    parent = [-1] * size
    dist[source] = 0.0
    heap = [(heuristic[source], -0.0, source)]  # ties: the node further from the start first
    pop, push, inf = heapq.heappop, heapq.heappush, math.inf
    get_extra = extra.get
    while heap:
        _, neg_g, u = pop(heap)
        g = -neg_g
        if g > dist[u]:
            continue  # a stale entry: u was reached faster since
        if u == target:
            path = [u]
            while u != source:
                u = parent[u]
                path.append(u)
            path.reverse()
            return path
        if u < n:
            for v, w in adjacency[u]:
                ng = g + w
                if ng < dist[v]:
                    h = heuristic[v]
                    if h == inf:
                        continue
                    dist[v] = ng
                    parent[v] = u
                    push(heap, (ng + h, -ng, v))
        more = get_extra(u)
        if more:
            for v, w in more:
                ng = g + w
                if ng < dist[v] and heuristic[v] != inf:
                    dist[v] = ng
                    parent[v] = u
                    push(heap, (ng + heuristic[v], -ng, v))
    return None


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

"""Pedestrians for the headless simulator: moving circles the lidar sees and robots must not hit.

Deliberately simple agents, because they exist to exercise the robots' safety stack, not to
model crowds: each walks in a straight line at its own speed to a goal, pauses there, and
picks the next goal; it waits rather than walk into a robot, and gives up on a goal it has
been blocked from for `patience_s`. Goals are either random points of a walkable area (a
shapely polygon, e.g. the route graph's geofence minus the obstacles, with the straight walk
there inside it) or the vertices of given polylines walked back and forth. Every random draw
comes from the generator passed in, so a crowd is deterministic for a seed. Metres, seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Point, Polygon
from shapely.ops import unary_union

from delivery_robot.world_geometry import WorldGeometry

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]

_MAX_SPAWN_TRIES = 2000
_GOAL_TRIES = 32  # candidate goals drawn at once
_GOAL_RANGE = 20.0  # m: a new goal is at most this far along x and y
_RETRY_S = 1.0  # when no goal could be found, try again after this


@dataclass(frozen=True)
class PedestrianConfig:
    """How many people walk about and how; zero pedestrians by default (opt in per scenario)."""

    count: int = 0
    radius: float = 0.3  # m, a person seen by a lidar at knee height, with some margin
    speed_min: float = 0.8  # m/s
    speed_max: float = 1.5  # m/s
    pause_max_s: float = 5.0  # a pause at each goal is uniform in [0, pause_max_s]
    patience_s: float = 10.0  # blocked this long by a robot: choose another goal

    def __post_init__(self) -> None:
        if self.count < 0 or self.radius <= 0.0 or not 0.0 < self.speed_min <= self.speed_max:
            raise ValueError(f"invalid pedestrian config {self}")


class PedestrianCrowd:
    """N pedestrians stepped together, in the map frame: `z` holds positions as complex
    numbers x + iy (what the simulator computes with), `positions` as an (N, 2) array."""

    def __init__(
        self,
        config: PedestrianConfig,
        rng: np.random.Generator,
        *,
        area: Any = None,
        paths: Sequence[Sequence[tuple[float, float]]] = (),
        obstacles: WorldGeometry | None = None,
        keep_clear: FloatArray | None = None,
        keep_clear_radius: float = 0.0,
    ) -> None:
        """`paths` (polylines of >= 2 points) win over `area`; one of them is needed if
        config.count > 0. `keep_clear` (K, 2): points (robots) no one may spawn near."""
        self.config = config
        self.radius = config.radius
        self._rng = rng
        n = config.count
        self._paths = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in paths]
        if any(len(p) < 2 for p in self._paths):
            raise ValueError("every pedestrian path needs at least 2 points")
        self._walkable: Any = None
        if n and not self._paths:
            if area is None:
                raise ValueError("pedestrians need a walkable area or paths")
            self._walkable = _walkable_area(area, obstacles, config.radius)
        if self._walkable is not None:
            shapely.prepare(self._walkable)  # fast repeated point / line tests
        self.z: ComplexArray = np.zeros(n, dtype=np.complex128)  # positions, x + iy
        self.goals: ComplexArray = np.zeros(n, dtype=np.complex128)
        self.speeds: FloatArray = rng.uniform(config.speed_min, config.speed_max, n)
        self.wait_s: FloatArray = np.zeros(n)
        self.blocked_s: FloatArray = np.zeros(n)
        self._was_blocked = False
        self._path_of = np.zeros(n, dtype=np.int64)
        self._vertex = np.zeros(n, dtype=np.int64)  # index of the goal vertex on the path
        self._direction = np.ones(n, dtype=np.int64)
        clear = np.zeros((0, 2)) if keep_clear is None else np.asarray(keep_clear).reshape(-1, 2)
        for i in range(n):
            x, y = self._spawn_point(i, clear, keep_clear_radius)
            self.z[i] = self.goals[i] = complex(x, y)
            self._choose_goal(i)

    @property
    def count(self) -> int:
        return len(self.z)

    @property
    def positions(self) -> FloatArray:
        """(N, 2) x, y in the map frame."""
        return np.column_stack([self.z.real, self.z.imag])

    def step(self, dt: float, blockers: ComplexArray, blocker_radius: float) -> None:
        """Walk for dt; never step closer into a blocker (robot) circle than is free.

        `blockers` are the robots' positions as complex numbers x + iy.
        """
        if not self.count:
            return
        walking = self.wait_s <= 0.0
        delta = self.goals - self.z
        dist = np.abs(delta)
        reach = np.minimum(self.speeds * dt, dist)
        proposed = self.z + delta * (reach / np.maximum(dist, 1e-12))
        moving = walking
        gap = np.abs(proposed[:, None] - blockers)
        touching = gap < self.radius + blocker_radius
        near = bool(np.count_nonzero(touching))  # (a third of .any()'s overhead)
        if near:
            blocked = (touching & (gap < np.abs(self.z[:, None] - blockers))).any(axis=1)
            moving = walking & ~blocked
            self.blocked_s = np.where(walking & blocked, self.blocked_s + dt, 0.0)
            for i in np.flatnonzero(self.blocked_s > self.config.patience_s):
                self.blocked_s[i] = 0.0
                self._choose_goal(int(i))
        elif self._was_blocked:
            self.blocked_s = np.zeros(self.count)
        self._was_blocked = near
        self.z = np.where(moving, proposed, self.z)
        if np.count_nonzero(walking) < len(walking):
            self.wait_s = np.where(walking, self.wait_s, self.wait_s - dt)
        arrived = moving & (reach >= dist)
        if np.count_nonzero(arrived):
            for i in np.flatnonzero(arrived):
                self.wait_s[i] = self._rng.uniform(0.0, self.config.pause_max_s)
                self._choose_goal(int(i))

    # -- goals ---------------------------------------------------------------------------------
    def _spawn_point(self, i: int, clear: FloatArray, clear_radius: float) -> tuple[float, float]:
        limit = self.radius + clear_radius
        for _ in range(_MAX_SPAWN_TRIES):
            if self._paths:
                p = int(self._rng.integers(len(self._paths)))
                v = int(self._rng.integers(len(self._paths[p])))
                self._path_of[i], self._vertex[i] = p, v
                self._direction[i] = 1 if v < len(self._paths[p]) - 1 else -1
                point = self._paths[p][v].copy()
            else:
                point = self._random_walkable_point()
            if not len(clear) or _distances(point[None, :], clear).min() >= limit:
                return float(point[0]), float(point[1])
        raise ValueError("no free spawn point for a pedestrian (robots everywhere?)")

    def _choose_goal(self, i: int) -> None:
        if self._paths:
            path = self._paths[self._path_of[i]]
            nxt = self._vertex[i] + self._direction[i]
            if not 0 <= nxt < len(path):
                self._direction[i] = -self._direction[i]
                nxt = self._vertex[i] + self._direction[i]
            self._vertex[i] = nxt
            self.goals[i] = complex(path[nxt, 0], path[nxt, 1])
            return
        # Goals a short walk away (most random points of a long, thin sidewalk area are not
        # in a straight line of sight), all candidates tested in one vectorised shapely call.
        here = self.z[i]
        offsets = self._rng.uniform(-_GOAL_RANGE, _GOAL_RANGE, (_GOAL_TRIES, 2))
        xs, ys = here.real + offsets[:, 0], here.imag + offsets[:, 1]
        inside = shapely.contains_xy(self._walkable, xs, ys)
        if np.count_nonzero(inside):
            xs, ys = xs[inside], ys[inside]
            lines = shapely.linestrings(np.stack([
                np.column_stack([np.full(len(xs), here.real), xs]),
                np.column_stack([np.full(len(xs), here.imag), ys]),
            ], axis=2))
            ok = np.flatnonzero(shapely.covers(self._walkable, lines))
            if len(ok):
                self.goals[i] = complex(xs[ok[0]], ys[ok[0]])
                return
        self.goals[i] = here  # stay, and look again a little later
        self.wait_s[i] = max(float(self.wait_s[i]), _RETRY_S)

    def _random_walkable_point(self) -> FloatArray:
        x0, y0, x1, y1 = self._walkable.bounds
        for _ in range(_MAX_SPAWN_TRIES // _GOAL_TRIES):
            xs = self._rng.uniform(x0, x1, _GOAL_TRIES)
            ys = self._rng.uniform(y0, y1, _GOAL_TRIES)
            inside = np.flatnonzero(shapely.contains_xy(self._walkable, xs, ys))
            if len(inside):
                return np.array([xs[inside[0]], ys[inside[0]]])
        raise ValueError("the walkable area is (almost) empty")


def _walkable_area(area: Any, obstacles: WorldGeometry | None, radius: float) -> Any:
    """The area where a pedestrian's centre may be: the area minus obstacles grown by radius."""
    if not hasattr(area, "difference"):
        raise TypeError(f"area must be a shapely geometry, got {type(area).__name__}")
    walkable = area
    if obstacles is not None and (obstacles.boxes or obstacles.circle_shapes):
        shapes = [Polygon(b.corners()) for b in obstacles.boxes]
        shapes += [Point(c.cx, c.cy).buffer(c.radius) for c in obstacles.circle_shapes]
        walkable = walkable.difference(unary_union(shapes).buffer(radius))
    if walkable.is_empty or walkable.area <= math.pi * radius * radius:
        raise ValueError("the walkable area is empty once obstacles are removed")
    return walkable


def _distances(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise distances (len(a), len(b))."""
    d = a[:, None, :] - b[None, :, :]
    out: FloatArray = np.hypot(d[..., 0], d[..., 1])
    return out

"""A world's route graph (config/worlds/<name>.yaml): where robots may drive, how fast, and why.

The YAML is written by hand next to an SDF world, so this module is mostly a careful reader: it
checks the file against itself and against the SDF's static obstacles and reports EVERY problem
in one go (a list of `Problem`s, raised as one `RouteGraphError`), so an author fixes a world in
one pass instead of one error per run. The schema is documented in docs/route_graph.md.

Coordinates are the map frame (REP-105; the map origin is the SDF world origin), metres,
radians, m/s and seconds. Lanes are straight segments between waypoints. ROS-free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import networkx as nx
import numpy as np
import shapely
import yaml
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import unary_union

from delivery_robot.world_geometry import WorldGeometry, WorldGeometryError, load_world_geometry

# Korea's outdoor mobile robot rules (2023): 15 km/h for robots up to 100 kg is the highest
# legal cap of any class, and parks are 5 km/h. The safety monitor clips per robot mass; the
# graph only refuses limits that no robot may ever drive.
MAX_SPEED_LIMIT = 15.0 / 3.6
PARK_SPEED_LIMIT = 5.0 / 3.6
# A ~0.6 m wide delivery robot plus 5 cm: the clearance a lane needs on each side.
DEFAULT_ROBOT_HALF_WIDTH = 0.35
KEEP_RIGHT_MARGIN = 0.15  # m more than the half-width between a kept-right line and obstacles
# Collision shapes between these heights can stop a robot (a 15 cm kerb does; a 2 cm lip and a
# tree canopy at 3 m do not).
MIN_OBSTACLE_HEIGHT = 0.03
DEFAULT_ROBOT_HEIGHT = 1.2

# Names are used in ROS messages, URLs and logs: keep them identifiers.
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_EPS = 1e-9
_E = TypeVar("_E", bound=StrEnum)


class WaypointKind(StrEnum):
    SHOP = "shop"
    DROPOFF = "dropoff"
    CHARGER = "charger"
    DEPOT = "depot"
    JUNCTION = "junction"


class ZoneKind(StrEnum):
    CROSSWALK = "crosswalk"
    SLOW_ZONE = "slow_zone"
    GEOFENCE = "geofence"
    PARK = "park"


class ProblemKind(StrEnum):
    """What kind of mistake a problem is, so tools and tests can tell them apart."""

    SCHEMA = "schema"  # missing / ill-typed / unknown field
    SDF = "sdf"  # SDF file missing, unreadable, unsupported, or a different world
    DUPLICATE_NAME = "duplicate_name"
    UNKNOWN_WAYPOINT = "unknown_waypoint"
    BAD_KIND = "bad_kind"
    BAD_SPEED_LIMIT = "bad_speed_limit"
    BAD_LANE = "bad_lane"  # self loop, zero length, duplicate, narrower than the robot
    BAD_ZONE = "bad_zone"  # invalid polygon, wrong or missing signal cycle
    BAD_SHOP = "bad_shop"  # shop entry and shop waypoint disagree
    BAD_DOCK_MARKER = "bad_dock_marker"
    MISSING = "missing"  # no depot, no geofence
    LANE_THROUGH_OBSTACLE = "lane_through_obstacle"
    WAYPOINT_IN_OBSTACLE = "waypoint_in_obstacle"
    UNREACHABLE = "unreachable"
    OUTSIDE_GEOFENCE = "outside_geofence"
    LANE_OUTSIDE_GEOFENCE = "lane_outside_geofence"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"[{self.kind.value}] {self.message}"


class RouteGraphError(ValueError):
    """A route graph with problems; `problems` holds all of them."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the route graph:\n{lines}")


@dataclass(frozen=True)
class Waypoint:
    name: str
    kind: WaypointKind
    x: float
    y: float
    yaw: float | None = None  # heading to stop in (e.g. facing a dock marker); None: any
    dock_marker: int | None = None  # ArUco id at a shop / charger
    shop_id: str | None = None
    label: str | None = None  # human-readable name, e.g. "101동 1-2호 라인 현관"

    @property
    def point(self) -> Point:
        return Point(self.x, self.y)


@dataclass(frozen=True)
class Lane:
    start: str
    end: str
    speed_limit: float
    one_way: bool
    length: float
    width: float | None = None
    keep_right: float | None = None  # m right of the centre line (two-way); None: the world's

    @property
    def travel_time(self) -> float:
        return self.length / self.speed_limit if self.speed_limit > 0 else math.inf


@dataclass(frozen=True)
class SignalCycle:
    """A pedestrian signal: green for green_s, then red for red_s, shifted by offset_s."""

    green_s: float
    red_s: float
    offset_s: float = 0.0

    @property
    def cycle_s(self) -> float:
        return self.green_s + self.red_s

    def is_green(self, t: float) -> bool:
        return (t - self.offset_s) % self.cycle_s < self.green_s

    def seconds_until_green(self, t: float) -> float:
        phase = (t - self.offset_s) % self.cycle_s
        return 0.0 if phase < self.green_s else self.cycle_s - phase


@dataclass(frozen=True)
class Zone:
    name: str
    kind: ZoneKind
    polygon: Polygon
    speed_limit: float | None = None
    signal: SignalCycle | None = None  # only crosswalks; None: an unsignalled crossing
    label: str | None = None

    @property
    def effective_speed_limit(self) -> float | None:
        """The cap inside the zone; parks default to the legal 5 km/h."""
        if self.kind is ZoneKind.PARK and self.speed_limit is None:
            return PARK_SPEED_LIMIT
        return self.speed_limit


@dataclass(frozen=True)
class Shop:
    shop_id: str
    name: str
    waypoint: str


class RouteGraph:
    """The loaded graph: typed look-ups plus a networkx DiGraph weighted by travel time.

    Each lane is one edge (two for a two-way lane) with attributes `length` (m), `speed_limit`
    (m/s), `travel_time` (s = length / speed_limit), `one_way` and `width`. Treat `graph` as
    read-only; it is shared.
    """

    def __init__(
        self,
        *,
        world: str,
        sdf: str,
        waypoints: Iterable[Waypoint],
        lanes: Iterable[Lane],
        zones: Iterable[Zone] = (),
        shops: Iterable[Shop] = (),
        sdf_path: Path | None = None,
        source: str = "<route graph>",
        keep_right: float = 0.0,
    ) -> None:
        self.world = world
        # Robots drive this far right of a two-way lane's centre line (a lane's own keep_right
        # wins), so two meeting head-on pass each other; the validator checks the offset lines
        # against the lane width and the SDF's obstacles like the centre lines.
        self.keep_right = keep_right
        self.sdf = sdf
        self.sdf_path = sdf_path
        self.source = source
        self.waypoints: dict[str, Waypoint] = {w.name: w for w in waypoints}
        self.lanes: tuple[Lane, ...] = tuple(lanes)
        # (from, to) -> lane, both directions of two-way lanes; the first lane wins, as before.
        self._lane_by_ends: dict[tuple[str, str], Lane] = {}
        for lane in self.lanes:
            self._lane_by_ends.setdefault((lane.start, lane.end), lane)
            if not lane.one_way:
                self._lane_by_ends.setdefault((lane.end, lane.start), lane)
        self.zones: tuple[Zone, ...] = tuple(zones)
        self.shops: tuple[Shop, ...] = tuple(shops)
        g = nx.DiGraph()
        for w in self.waypoints.values():
            g.add_node(w.name, kind=w.kind.value, x=w.x, y=w.y)
        for lane in self.lanes:
            attrs = {
                "length": lane.length,
                "speed_limit": lane.speed_limit,
                "travel_time": lane.travel_time,
                "one_way": lane.one_way,
                "width": lane.width,
            }
            g.add_edge(lane.start, lane.end, **attrs)
            if not lane.one_way:
                g.add_edge(lane.end, lane.start, **attrs)
        self.graph: Any = g

    def lane_offset(self, start: str, end: str) -> float:
        """How far right of the centre line a robot drives `start -> end` (m; 0 one-way)."""
        lane = self._lane_by_ends.get((start, end))
        if lane is None or lane.one_way:
            return 0.0
        return lane.keep_right if lane.keep_right is not None else self.keep_right

    def __repr__(self) -> str:
        return (
            f"RouteGraph({self.world!r}: {len(self.waypoints)} waypoints, "
            f"{len(self.lanes)} lanes, {len(self.zones)} zones, {len(self.shops)} shops)"
        )

    # -- look-ups ---------------------------------------------------------------------------
    def waypoint(self, name: str) -> Waypoint:
        try:
            return self.waypoints[name]
        except KeyError:
            raise KeyError(f"no waypoint {name!r} in world {self.world!r}") from None

    def waypoints_of_kind(self, kind: WaypointKind | str) -> list[Waypoint]:
        k = WaypointKind(kind)
        return [w for w in self.waypoints.values() if w.kind is k]

    @property
    def dropoffs(self) -> list[Waypoint]:
        return self.waypoints_of_kind(WaypointKind.DROPOFF)

    @property
    def chargers(self) -> list[Waypoint]:
        return self.waypoints_of_kind(WaypointKind.CHARGER)

    @property
    def depots(self) -> list[Waypoint]:
        return self.waypoints_of_kind(WaypointKind.DEPOT)

    @property
    def shop_waypoints(self) -> list[Waypoint]:
        return self.waypoints_of_kind(WaypointKind.SHOP)

    def shop(self, shop_id: str) -> Shop:
        for s in self.shops:
            if s.shop_id == shop_id:
                return s
        raise KeyError(f"no shop {shop_id!r} in world {self.world!r}")

    def lane(self, start: str, end: str) -> Lane | None:
        """The lane that lets a robot drive start -> end directly, if any (a dict look-up:
        the planner and controller ask this on every step)."""
        return self._lane_by_ends.get((start, end))

    def zones_of_kind(self, kind: ZoneKind | str) -> list[Zone]:
        k = ZoneKind(kind)
        return [z for z in self.zones if z.kind is k]

    @property
    def geofence(self) -> Any:
        """The union of the geofence polygons (the operating area), or None if there is none."""
        fences = [z.polygon for z in self.zones_of_kind(ZoneKind.GEOFENCE)]
        return unary_union(fences) if fences else None

    def zones_at(self, x: float, y: float) -> list[Zone]:
        p = Point(x, y)
        return [z for z in self.zones if z.polygon.covers(p)]

    def speed_limit_at(self, x: float, y: float) -> float | None:
        """The lowest zone cap at a point (slow zone, crosswalk, park), None if no zone caps it."""
        caps = [z.effective_speed_limit for z in self.zones_at(x, y)]
        known = [c for c in caps if c is not None]
        return min(known) if known else None

    def nearest_waypoint(self, x: float, y: float) -> Waypoint:
        return min(self.waypoints.values(), key=lambda w: math.hypot(w.x - x, w.y - y))

    # -- routing ----------------------------------------------------------------------------
    def shortest_path(self, start: str, end: str) -> list[str] | None:
        """The fastest waypoint sequence start..end (by travel time), None if unreachable."""
        self.waypoint(start)
        self.waypoint(end)
        if start == end:
            return [start]
        try:
            _, path = nx.bidirectional_dijkstra(self.graph, start, end, weight="travel_time")
        except nx.NetworkXNoPath:
            return None
        return [str(n) for n in path]

    def travel_time(self, start: str, end: str) -> float | None:
        """Seconds along the fastest route at the lanes' speed limits, None if unreachable."""
        path = self.shortest_path(start, end)
        if path is None:
            return None
        return sum(float(self.graph.edges[a, b]["travel_time"]) for a, b in pairwise(path))

    def path_length(self, path: Sequence[str]) -> float:
        """Metres along consecutive lanes of `path` (KeyError if two are not connected)."""
        total = 0.0
        for a, b in pairwise(path):
            if not self.graph.has_edge(a, b):
                raise KeyError(f"no lane from {a!r} to {b!r}")
            total += float(self.graph.edges[a, b]["length"])
        return total


# == loading ====================================================================================
def load_route_graph(
    path: str | Path,
    *,
    validate: bool = True,
    robot_half_width: float = DEFAULT_ROBOT_HALF_WIDTH,
    robot_height: float = DEFAULT_ROBOT_HEIGHT,
) -> RouteGraph:
    """Load a route graph YAML; with `validate`, also check it against its SDF.

    Raises RouteGraphError listing every problem found (never just the first).
    """
    route, problems = _load(path, validate, robot_half_width, robot_height)
    if problems or route is None:
        raise RouteGraphError(str(path), problems)
    return route


def check_route_graph(
    path: str | Path,
    *,
    robot_half_width: float = DEFAULT_ROBOT_HALF_WIDTH,
    robot_height: float = DEFAULT_ROBOT_HEIGHT,
) -> list[Problem]:
    """Every problem of a route graph YAML and its SDF (empty list: the world is fine)."""
    return _load(path, True, robot_half_width, robot_height)[1]


def _load(
    path: str | Path, validate: bool, half_width: float, height: float
) -> tuple[RouteGraph | None, list[Problem]]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return None, [Problem(ProblemKind.SCHEMA, f"not valid YAML: {exc}")]
    route, problems = parse_route_graph(data, source=str(p))
    if route is None or not validate:
        return route, problems
    geometry: WorldGeometry | None = None
    sdf_path = resolve_sdf_path(p, route.sdf)
    if sdf_path is None:
        problems.append(Problem(
            ProblemKind.SDF,
            f"sdf {route.sdf!r} not found next to {p} or in any folder above it",
        ))
    else:
        route.sdf_path = sdf_path
        try:
            geometry = load_world_geometry(sdf_path)
        except (OSError, WorldGeometryError) as exc:
            reasons = exc.problems if isinstance(exc, WorldGeometryError) else [str(exc)]
            problems += [Problem(ProblemKind.SDF, f"{sdf_path}: {r}") for r in reasons]
    problems += validate_route_graph(
        route, geometry, robot_half_width=half_width, robot_height=height
    )
    return route, problems


def resolve_sdf_path(yaml_path: Path, sdf: str) -> Path | None:
    """Find `sdf` relative to the YAML's folder or the nearest folder above it that has it.

    config/worlds/town.yaml names gazebo_worlds/town.sdf relative to the package root, which is
    two folders up both in the source tree and in the installed share/delivery_robot.
    """
    candidate = Path(sdf)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for folder in yaml_path.resolve().parents:
        if (folder / candidate).is_file():
            return folder / candidate
    return None


# == parsing ====================================================================================
_TOP_KEYS = {"world", "sdf", "description", "keep_right", "waypoints", "lanes", "zones",
             "shops"}
_WAYPOINT_KEYS = {"name", "kind", "x", "y", "yaw", "dock_marker", "shop_id", "label"}
_LANE_KEYS = {"from", "to", "speed_limit", "one_way", "width", "keep_right"}
_ZONE_KEYS = {"name", "kind", "polygon", "speed_limit", "green_s", "red_s", "offset_s", "label"}
_SIGNAL_KEYS = ("green_s", "red_s", "offset_s")
_SHOP_KEYS = {"shop_id", "name", "waypoint"}


def parse_route_graph(
    data: object, *, source: str = "<route graph>"
) -> tuple[RouteGraph | None, list[Problem]]:
    """Build a RouteGraph from parsed YAML, keeping what is usable and listing what is not.

    Returns (None, problems) only if the top level is not a mapping.
    """
    return _Parser(source).parse(data)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.broken_names: set[str] = set()  # declared but unusable: do not report twice

    def add(self, kind: ProblemKind, message: str) -> None:
        self.problems.append(Problem(kind, message))

    def parse(self, data: object) -> tuple[RouteGraph | None, list[Problem]]:
        if not isinstance(data, Mapping):
            self.add(ProblemKind.SCHEMA, "the file must be a mapping with world, sdf, waypoints")
            return None, self.problems
        self.keys(data, _TOP_KEYS, "top level")
        world = self.string(data, "world", "top level") or ""
        sdf = self.string(data, "sdf", "top level") or ""
        waypoints = self.waypoints(self.items(data, "waypoints", required=True))
        lanes = self.lanes(self.items(data, "lanes", required=True), waypoints)
        zones = self.zones(self.items(data, "zones", required=False))
        shops = self.shops(self.items(data, "shops", required=False), waypoints)
        keep_right = self.number(data, "keep_right", "top level", required=False)
        if keep_right is not None and not keep_right >= 0.0:
            self.add(ProblemKind.SCHEMA, f"top level: keep_right {keep_right} m must be >= 0")
            keep_right = None
        route = RouteGraph(
            world=world, sdf=sdf, waypoints=waypoints.values(), lanes=lanes, zones=zones,
            shops=shops, source=self.source, keep_right=keep_right or 0.0,
        )
        return route, self.problems

    # -- sections ---------------------------------------------------------------------------
    def waypoints(self, items: list[tuple[str, Mapping[str, Any]]]) -> dict[str, Waypoint]:
        out: dict[str, Waypoint] = {}
        markers: dict[int, str] = {}
        for where, d in items:
            self.keys(d, _WAYPOINT_KEYS, where)
            name = self.name(d, "name", where)
            if name is None:
                continue
            where = f"waypoint {name!r}"
            if name in out or name in self.broken_names:
                self.add(ProblemKind.DUPLICATE_NAME, f"{where} is declared more than once")
                continue
            kind = self.enum(d, WaypointKind, where) or WaypointKind.JUNCTION
            x, y = self.number(d, "x", where), self.number(d, "y", where)
            yaw = self.number(d, "yaw", where, required=False)
            label = self.string(d, "label", where, required=False)
            shop_id = self.string(d, "shop_id", where, required=False)
            marker = self.integer(d, "dock_marker", where)
            if x is None or y is None:
                self.broken_names.add(name)
                continue
            if shop_id is not None and kind is not WaypointKind.SHOP:
                self.add(ProblemKind.BAD_SHOP, f"{where}: shop_id on a {kind.value} waypoint")
            if marker is not None:
                if kind not in (WaypointKind.SHOP, WaypointKind.CHARGER):
                    self.add(
                        ProblemKind.BAD_DOCK_MARKER,
                        f"{where}: dock_marker on a {kind.value} (only shops and chargers dock)",
                    )
                if marker < 0:
                    self.add(ProblemKind.BAD_DOCK_MARKER, f"{where}: dock_marker {marker} < 0")
                elif marker in markers:
                    self.add(
                        ProblemKind.BAD_DOCK_MARKER,
                        f"{where}: dock_marker {marker} is already used by {markers[marker]!r}",
                    )
                else:
                    markers[marker] = name
            if yaw is not None:
                yaw = math.atan2(math.sin(yaw), math.cos(yaw))
            out[name] = Waypoint(name, kind, x, y, yaw, marker, shop_id, label)
        return out

    def lanes(
        self, items: list[tuple[str, Mapping[str, Any]]], waypoints: Mapping[str, Waypoint]
    ) -> list[Lane]:
        out: list[Lane] = []
        edges: dict[tuple[str, str], str] = {}
        for where, d in items:
            self.keys(d, _LANE_KEYS, where)
            start = self.string(d, "from", where)
            end = self.string(d, "to", where)
            if start is not None and end is not None:
                where = f"lane {start!r} -> {end!r}"
            speed = self.number(d, "speed_limit", where)
            one_way = self.boolean(d, "one_way", where)
            width = self.number(d, "width", where, required=False)
            keep_right = self.number(d, "keep_right", where, required=False)
            if keep_right is not None and not keep_right >= 0.0:
                self.add(ProblemKind.BAD_LANE, f"{where}: keep_right {keep_right} m must be >= 0")
                keep_right = None
            if speed is not None and not 0.0 < speed <= MAX_SPEED_LIMIT + _EPS:
                self.add(
                    ProblemKind.BAD_SPEED_LIMIT,
                    f"{where}: speed_limit {speed} m/s is not in (0, {MAX_SPEED_LIMIT:.2f}]",
                )
            if width is not None and width <= 0.0:
                self.add(ProblemKind.BAD_LANE, f"{where}: width {width} m must be > 0")
            ends_ok = True
            for end_name in (start, end):
                if end_name is not None and end_name not in waypoints:
                    ends_ok = False
                    if end_name not in self.broken_names:
                        self.add(ProblemKind.UNKNOWN_WAYPOINT, f"{where}: no waypoint {end_name!r}")
            if start is None or end is None or speed is None or not ends_ok:
                continue
            if start == end:
                self.add(ProblemKind.BAD_LANE, f"{where}: a lane must join two waypoints")
                continue
            a, b = waypoints[start], waypoints[end]
            length = math.hypot(b.x - a.x, b.y - a.y)
            if length < 1e-3:
                self.add(ProblemKind.BAD_LANE, f"{where}: its ends are at the same place")
                continue
            directed = [(start, end)] if one_way else [(start, end), (end, start)]
            clash = [edges[e] for e in directed if e in edges]
            if clash:
                self.add(ProblemKind.BAD_LANE, f"{where}: duplicates {clash[0]}")
                continue
            edges.update({e: where for e in directed})
            out.append(Lane(start, end, speed, one_way, length, width, keep_right))
        return out

    def zones(self, items: list[tuple[str, Mapping[str, Any]]]) -> list[Zone]:
        out: list[Zone] = []
        names: set[str] = set()
        for where, d in items:
            self.keys(d, _ZONE_KEYS, where)
            name = self.name(d, "name", where)
            if name is None:
                continue
            where = f"zone {name!r}"
            if name in names:
                self.add(ProblemKind.DUPLICATE_NAME, f"{where} is declared more than once")
                continue
            names.add(name)
            kind = self.enum(d, ZoneKind, where)
            speed = self.number(d, "speed_limit", where, required=False)
            label = self.string(d, "label", where, required=False)
            signal_values = {k: self.number(d, k, where, required=False) for k in _SIGNAL_KEYS}
            polygon = self.polygon(d, where)
            if kind is None or polygon is None:
                continue
            if kind in (ZoneKind.SLOW_ZONE, ZoneKind.CROSSWALK) and speed is None:
                self.add(ProblemKind.BAD_SPEED_LIMIT, f"{where}: a {kind.value} needs speed_limit")
            cap = PARK_SPEED_LIMIT if kind is ZoneKind.PARK else MAX_SPEED_LIMIT
            if kind is ZoneKind.GEOFENCE and speed is not None:
                self.add(ProblemKind.BAD_SPEED_LIMIT, f"{where}: a geofence has no speed_limit")
            elif speed is not None and not 0.0 < speed <= cap + _EPS:
                self.add(
                    ProblemKind.BAD_SPEED_LIMIT,
                    f"{where}: speed_limit {speed} m/s is not in (0, {cap:.2f}] for a {kind.value}",
                )
            signal = self.signal(signal_values, kind, where)
            out.append(Zone(name, kind, polygon, speed, signal, label))
        return out

    def signal(
        self, values: Mapping[str, float | None], kind: ZoneKind, where: str
    ) -> SignalCycle | None:
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            return None
        if kind is not ZoneKind.CROSSWALK:
            self.add(ProblemKind.BAD_ZONE, f"{where}: only crosswalks have a signal cycle")
            return None
        missing = [k for k in _SIGNAL_KEYS if k not in given]
        if missing:
            self.add(ProblemKind.BAD_ZONE, f"{where}: signal cycle lacks {', '.join(missing)}")
            return None
        green, red, offset = given["green_s"], given["red_s"], given["offset_s"]
        if green <= 0 or red <= 0 or offset < 0:
            self.add(
                ProblemKind.BAD_ZONE,
                f"{where}: signal cycle needs green_s > 0, red_s > 0, offset_s >= 0",
            )
            return None
        return SignalCycle(green, red, offset)

    def shops(
        self, items: list[tuple[str, Mapping[str, Any]]], waypoints: Mapping[str, Waypoint]
    ) -> list[Shop]:
        out: list[Shop] = []
        ids: set[str] = set()
        for where, d in items:
            self.keys(d, _SHOP_KEYS, where)
            shop_id = self.name(d, "shop_id", where)
            name = self.string(d, "name", where)
            wp_name = self.string(d, "waypoint", where)
            if shop_id is None or name is None or wp_name is None:
                continue
            where = f"shop {shop_id!r}"
            if shop_id in ids:
                self.add(ProblemKind.DUPLICATE_NAME, f"{where} is declared more than once")
                continue
            ids.add(shop_id)
            wp = waypoints.get(wp_name)
            if wp is None:
                if wp_name not in self.broken_names:
                    self.add(ProblemKind.UNKNOWN_WAYPOINT, f"{where}: no waypoint {wp_name!r}")
                continue
            if wp.kind is not WaypointKind.SHOP:
                self.add(ProblemKind.BAD_SHOP, f"{where}: waypoint {wp_name!r} is a {wp.kind}")
            if wp.shop_id is not None and wp.shop_id != shop_id:
                self.add(
                    ProblemKind.BAD_SHOP,
                    f"{where}: waypoint {wp_name!r} says it belongs to shop {wp.shop_id!r}",
                )
            out.append(Shop(shop_id, name, wp_name))
        served = {s.waypoint for s in out}
        for wp in waypoints.values():
            if wp.kind is WaypointKind.SHOP and wp.name not in served:
                self.add(ProblemKind.BAD_SHOP, f"shop waypoint {wp.name!r} has no entry in shops")
        return out

    # -- fields -----------------------------------------------------------------------------
    def items(
        self, data: Mapping[str, Any], key: str, *, required: bool
    ) -> list[tuple[str, Mapping[str, Any]]]:
        value = data.get(key)
        if value is None:
            if required:
                self.add(ProblemKind.SCHEMA, f"top level: {key} is missing")
            return []
        if not isinstance(value, list):
            self.add(ProblemKind.SCHEMA, f"top level: {key} must be a list")
            return []
        out: list[tuple[str, Mapping[str, Any]]] = []
        for i, item in enumerate(value):
            where = f"{key}[{i}]"
            if isinstance(item, Mapping):
                out.append((where, item))
            else:
                self.add(ProblemKind.SCHEMA, f"{where} must be a mapping")
        return out

    def keys(self, d: Mapping[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(str(k) for k in d if k not in allowed)
        if unknown:
            self.add(
                ProblemKind.SCHEMA,
                f"{where}: unknown field(s) {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(allowed))})",
            )

    def string(
        self, d: Mapping[str, Any], key: str, where: str, *, required: bool = True
    ) -> str | None:
        value = d.get(key)
        if value is None:
            if required:
                self.add(ProblemKind.SCHEMA, f"{where}: {key} is missing")
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(ProblemKind.SCHEMA, f"{where}: {key} must be a non-empty string")
            return None
        return value

    def name(self, d: Mapping[str, Any], key: str, where: str) -> str | None:
        value = self.string(d, key, where)
        if value is not None and not _NAME_RE.match(value):
            self.add(
                ProblemKind.SCHEMA,
                f"{where}: {key} {value!r} must be an identifier (letters, digits, _)",
            )
            return None
        return value

    def number(
        self, d: Mapping[str, Any], key: str, where: str, *, required: bool = True
    ) -> float | None:
        value = d.get(key)
        if value is None:
            if required:
                self.add(ProblemKind.SCHEMA, f"{where}: {key} is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(ProblemKind.SCHEMA, f"{where}: {key} must be a number, got {value!r}")
            return None
        if not math.isfinite(value):
            self.add(ProblemKind.SCHEMA, f"{where}: {key} must be finite")
            return None
        return float(value)

    def integer(self, d: Mapping[str, Any], key: str, where: str) -> int | None:
        value = d.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(ProblemKind.SCHEMA, f"{where}: {key} must be an integer, got {value!r}")
            return None
        return value

    def boolean(self, d: Mapping[str, Any], key: str, where: str) -> bool:
        value = d.get(key, False)
        if not isinstance(value, bool):
            self.add(ProblemKind.SCHEMA, f"{where}: {key} must be true or false, got {value!r}")
            return False
        return value

    def enum(self, d: Mapping[str, Any], enum: type[_E], where: str) -> _E | None:
        value = d.get("kind")
        try:
            return enum(str(value))
        except ValueError:
            allowed = ", ".join(k.value for k in enum)
            self.add(ProblemKind.BAD_KIND, f"{where}: kind {value!r} is not one of {allowed}")
            return None

    def polygon(self, d: Mapping[str, Any], where: str) -> Polygon | None:
        raw = d.get("polygon")
        points: list[tuple[float, float]] = []
        if isinstance(raw, list):
            for p in raw:
                ok = isinstance(p, list | tuple) and len(p) == 2
                if not ok or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in p
                ):
                    points = []
                    break
                points.append((float(p[0]), float(p[1])))
        if len(points) < 3:
            self.add(
                ProblemKind.BAD_ZONE, f"{where}: polygon must be a list of >= 3 [x, y] points"
            )
            return None
        poly = Polygon(points)
        if not poly.is_valid or poly.area <= 0.0:
            reason = shapely.is_valid_reason(poly)
            self.add(ProblemKind.BAD_ZONE, f"{where}: polygon is not a simple area ({reason})")
            return None
        return poly


# == validation against the world ==============================================================
def validate_route_graph(
    route: RouteGraph,
    geometry: WorldGeometry | None,
    *,
    robot_half_width: float = DEFAULT_ROBOT_HALF_WIDTH,
    robot_height: float = DEFAULT_ROBOT_HEIGHT,
) -> list[Problem]:
    """Checks that need the whole graph (and, if given, the SDF's obstacles)."""
    problems: list[Problem] = []
    problems += _check_reachability(route)
    problems += _check_geofence(route)
    problems += _check_zone_speeds(route)
    for lane in route.lanes:
        if lane.width is not None and 0.0 < lane.width < 2.0 * robot_half_width:
            problems.append(Problem(
                ProblemKind.BAD_LANE,
                f"lane {lane.start!r} -> {lane.end!r}: width {lane.width} m is narrower "
                f"than the robot ({2.0 * robot_half_width:.2f} m)",
            ))
            continue
        offset = route.lane_offset(lane.start, lane.end)
        if lane.width is not None and offset + robot_half_width > 0.5 * lane.width + _EPS:
            problems.append(Problem(
                ProblemKind.BAD_LANE,
                f"lane {lane.start!r} -> {lane.end!r}: keeping {offset:g} m right puts the "
                f"robot outside its {lane.width:g} m width (at most "
                f"{max(0.5 * lane.width - robot_half_width, 0.0):.2f} m)",
            ))
    if geometry is not None:
        if route.world and geometry.world_name != route.world:
            problems.append(Problem(
                ProblemKind.SDF,
                f"world {route.world!r} but the SDF's world is named {geometry.world_name!r}",
            ))
        band = geometry.in_height_band(MIN_OBSTACLE_HEIGHT, robot_height)
        problems += _check_obstacles(route, band, robot_half_width)
    return problems


def _check_reachability(route: RouteGraph) -> list[Problem]:
    depots = [w.name for w in route.depots]
    if not depots:
        return [Problem(ProblemKind.MISSING, "no waypoint of kind depot")]
    g = route.graph
    reach_from: set[str] = set(depots)
    reach_to: set[str] = set(depots)
    for d in depots:
        reach_from |= set(nx.descendants(g, d))
        reach_to |= set(nx.ancestors(g, d))
    problems: list[Problem] = []
    needed = (WaypointKind.DROPOFF, WaypointKind.SHOP, WaypointKind.CHARGER)
    for w in route.waypoints.values():
        if w.kind not in needed:
            continue
        if w.name not in reach_from:
            problems.append(Problem(
                ProblemKind.UNREACHABLE, f"{w.kind.value} {w.name!r} cannot be reached from a depot"
            ))
        if w.name not in reach_to:
            problems.append(Problem(
                ProblemKind.UNREACHABLE, f"no depot can be reached from {w.kind.value} {w.name!r}"
            ))
    return problems


def _check_zone_speeds(route: RouteGraph) -> list[Problem]:
    """A lane may not be faster than a zone it runs through, or travel times would lie."""
    capped = [z for z in route.zones if z.effective_speed_limit is not None]
    problems: list[Problem] = []
    for lane in route.lanes:
        line = _lane_line(route, lane)
        for zone in capped:
            cap = zone.effective_speed_limit
            inside = float(line.intersection(zone.polygon).length)
            if cap is not None and inside > 1e-6 and lane.speed_limit > cap + _EPS:
                problems.append(Problem(
                    ProblemKind.BAD_SPEED_LIMIT,
                    f"lane {lane.start!r} -> {lane.end!r}: speed_limit {lane.speed_limit} m/s "
                    f"exceeds the {cap:.2f} m/s of {zone.kind.value} {zone.name!r} it runs "
                    f"through for {inside:.1f} m (lower it, or split the lane at the zone edge)",
                ))
    return problems


def _check_geofence(route: RouteGraph) -> list[Problem]:
    fence = route.geofence
    if fence is None:
        return [Problem(ProblemKind.MISSING, "no zone of kind geofence (the operating area)")]
    problems: list[Problem] = []
    for w in route.waypoints.values():
        if not fence.covers(w.point):
            problems.append(Problem(
                ProblemKind.OUTSIDE_GEOFENCE,
                f"waypoint {w.name!r} at ({w.x:.2f}, {w.y:.2f}) is outside the geofence",
            ))
    for lane in route.lanes:
        if not fence.covers(_lane_line(route, lane)):
            problems.append(Problem(
                ProblemKind.LANE_OUTSIDE_GEOFENCE,
                f"lane {lane.start!r} -> {lane.end!r} leaves the geofence",
            ))
    return problems


def _check_obstacles(
    route: RouteGraph, geometry: WorldGeometry, half_width: float
) -> list[Problem]:
    """Lanes and waypoints must keep `half_width` from every obstacle the robot could hit."""
    names = [b.name for b in geometry.boxes] + [c.name for c in geometry.circle_shapes]
    if not names:
        return []
    shapes = np.array(
        [Polygon(b.corners()) for b in geometry.boxes]
        + [Point(c.cx, c.cy) for c in geometry.circle_shapes],
        dtype=object,
    )
    radii = np.array([0.0] * len(geometry.boxes) + [c.radius for c in geometry.circle_shapes])

    def clearances(geom: Any) -> Any:
        return shapely.distance(shapes, geom) - radii

    problems: list[Problem] = []
    for lane in route.lanes:
        gaps = clearances(_lane_line(route, lane))
        for i in np.flatnonzero(gaps < half_width - _EPS):
            problems.append(Problem(
                ProblemKind.LANE_THROUGH_OBSTACLE,
                f"lane {lane.start!r} -> {lane.end!r} "
                + _how_close(float(gaps[i]), half_width, names[int(i)]),
            ))
        offset = route.lane_offset(lane.start, lane.end)
        if offset <= 0.0:
            continue
        # Robots drive past obstacles along a kept-right line for its whole length: keep the
        # safety monitor's stop zone (about the half-width) off them, with a margin for noise.
        need = half_width + KEEP_RIGHT_MARGIN
        for a, b in ((lane.start, lane.end), (lane.end, lane.start)):
            gaps = clearances(_kept_right_line(route, a, b, offset))
            for i in np.flatnonzero(gaps < need - _EPS):
                problems.append(Problem(
                    ProblemKind.LANE_THROUGH_OBSTACLE,
                    f"lane {a!r} -> {b!r} kept {offset:g} m right "
                    + _how_close(float(gaps[i]), need, names[int(i)])
                    + "; lower the lane's keep_right",
                ))
    for w in route.waypoints.values():
        gaps = clearances(w.point)
        for i in np.flatnonzero(gaps < half_width - _EPS):
            problems.append(Problem(
                ProblemKind.WAYPOINT_IN_OBSTACLE,
                f"waypoint {w.name!r} "
                + _how_close(float(gaps[i]), half_width, names[int(i)], inside="is inside"),
            ))
    return problems


def _how_close(
    gap: float, half_width: float, obstacle: str, inside: str = "passes through"
) -> str:
    if gap <= 0.0:
        return f"{inside} obstacle {obstacle!r}"
    return f"is {gap:.2f} m from obstacle {obstacle!r} (the robot needs {half_width:.2f} m)"


def _kept_right_line(route: RouteGraph, start: str, end: str, offset: float) -> LineString:
    """Where a robot drives `start -> end` kept right: the centre line moved `offset` right,
    without its last 1.5 m at each end (the planner tapers to and from the waypoints there,
    which the centre line's own check covers)."""
    a, b = route.waypoints[start], route.waypoints[end]
    length = math.hypot(b.x - a.x, b.y - a.y)
    ux, uy = (b.x - a.x) / length, (b.y - a.y) / length
    trim = min(1.5, 0.45 * length)
    nx_, ny_ = uy * offset, -ux * offset
    return LineString([(a.x + ux * trim + nx_, a.y + uy * trim + ny_),
                       (b.x - ux * trim + nx_, b.y - uy * trim + ny_)])


def _lane_line(route: RouteGraph, lane: Lane) -> LineString:
    a, b = route.waypoints[lane.start], route.waypoints[lane.end]
    return LineString([(a.x, a.y), (b.x, b.y)])

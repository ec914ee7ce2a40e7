"""Driving a route plan: regulated pure pursuit, the kerb gate, progress and timeout monitors,
and the `Navigator` that ties them to the planner (issue 5, builtin backend). ROS-free.

The `navigation` node (builtin backend) owns one `Navigator`: `start(goal, pose, now)` when a
`navigate` goal arrives, `step(pose, now)` at the control rate with the map-frame pose, publish
the returned command on `cmd_vel` (linear x, angular z; the node picks the message type) and the
feedback, and finish the action when `status.done` (`status.code` is the action's result code).

Controller (regulated pure pursuit, after Nav2's RPP, forward only):
- the path followed is the plan with each corner rounded into a fillet arc that departs at most
  `corner_deviation` from the lanes (pure pursuit on the sharp polyline cuts a 90-degree corner
  by a good part of its lookahead: 0.26 m at the earlier defaults); about-turns keep their
  corner and are turned in place;
- the carrot is `lookahead_time * |v|` metres ahead along that path (clamped to
  [min_lookahead, max_lookahead]); the arc through it gives the curvature;
- speed = min(segment limit, max_speed), then lowered by a braking profile towards every
  upcoming slower point (a slower segment, a corner's arc, whose speed the turn rate and
  `max_lateral_accel` set, a closed kerb gate, the goal), by curvature regulation (radius below
  `regulated_min_radius`), by the approach slowdown into the goal, and by the angular speed
  cap; the command then passes
  linear and angular acceleration limits (stopping at once is always allowed: a terminal result
  returns zero);
- if the carrot is more than `rotate_to_heading_angle` off the heading, rotate in place first;
- the goal is reached within `xy_goal_tolerance`, then the robot turns in place to the goal
  heading (if the goal has one) within `yaw_goal_tolerance`.

Crosswalks: the robot stops at the plan's kerb point until `crossing_allowed(zone, now)` is true;
once it commits to a crossing (allowed and at or too close to stop before the kerb) it never
stops inside the crosswalk, even if the signal turns red. The progress monitor reports BLOCKED
on the current lane after `progress_timeout_s` without `progress_distance` along the plan (not
while waiting at the kerb); the Navigator then closes that lane in the planner and replans (or
reports BLOCKED when there is no other way). An overall deadline gives TIMEOUT.

Units REP-103 (m, rad, s); poses in the map frame; `now` in seconds on the caller's clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import NamedTuple

from delivery_robot.route_graph import RouteGraph, ZoneKind
from delivery_robot.route_planner import Goal, NavCode, NoPath, Plan, Pose2D, RoutePlanner

# Braking profiles use this fraction of the deceleration limit, so a limited command in discrete
# time still reaches a slower segment, a kerb or the goal at the profile's speed.
_PROFILE_DECEL_FRACTION = 0.75
_MAX_DT = 0.25  # s: a longer gap between steps is not an excuse for a bigger speed jump
_GOAL_SEARCH = 0.5  # m along the plan before its end where the goal may be declared reached
_MIN_TURN = 1e-3  # rad: a smaller change of direction is no corner
_MAX_ARC_TURN = math.radians(150.0)  # sharper turns (about-turns) are turned in place
_ARC_CHORD = math.radians(10.0)  # an arc is drawn as chords of at most this much turn
_ARC_TURN_RATE_SHARE = 0.75  # of max_angular_speed on an arc; the rest corrects errors
_MIN_LOOKAHEAD = 0.05  # m: the shortest lookahead on the tightest arc
_MIN_TANGENT = 0.01  # m: a corner whose arc would be shorter than this keeps its corner
_EPS = 1e-9

CrossingAllowed = Callable[[str, float], bool]


class VelocityCommand(NamedTuple):
    """A body-frame command: linear m/s along base_link x, angular rad/s about z."""

    linear: float
    angular: float


STOP = VelocityCommand(0.0, 0.0)


def wrap_angle(a: float) -> float:
    """The same angle in (-pi, pi]."""
    return math.atan2(math.sin(a), math.cos(a))


def signal_crossing_allowed(
    route: RouteGraph, min_green_remaining_s: float = 0.0
) -> CrossingAllowed:
    """A kerb gate from the world's signal cycles (the simulator's crossing lights, sim time):
    green with at least `min_green_remaining_s` left; unsignalled crossings are always allowed
    (a robot with perception would decide those instead)."""
    signals = {z.name: z.signal for z in route.zones_of_kind(ZoneKind.CROSSWALK)}

    def allowed(zone: str, now: float) -> bool:
        signal = signals.get(zone)
        if signal is None:
            return True
        phase = (now - signal.offset_s) % signal.cycle_s
        return phase < signal.green_s - min_green_remaining_s

    return allowed


class Phase(StrEnum):
    IDLE = "idle"  # no goal yet
    ROTATING = "rotating"  # turning in place towards the path
    TRACKING = "tracking"
    WAITING_AT_KERB = "waiting_at_kerb"  # stopped before a crosswalk until crossing is allowed
    CROSSING = "crossing"  # on a crosswalk: never stops here
    ALIGNING = "aligning"  # at the goal position, turning to the goal heading
    ARRIVED = "arrived"
    DONE = "done"  # the navigator finished; see NavStatus.code


@dataclass(frozen=True)
class TrackerParams:
    """Defaults tuned in bench/bench_path_tracking.py (town, 1.5 m/s, the simulator's
    acceleration limits, 50 ms command latency, ground-truth pose): p95 cross-track error
    0.03 m (the earlier defaults: 0.09 m, cutting 90-degree corners by 0.26 m) at the same
    mean speed."""

    max_speed: float = 1.5  # m/s cruise cap (lane limits and the goal's max_speed cap further)
    lookahead_time: float = 0.6  # s: lookahead distance = |v| * lookahead_time ...
    min_lookahead: float = 0.3  # m ... clamped to these
    max_lookahead: float = 2.0
    regulated_min_radius: float = 0.5  # m: slow down proportionally on arcs tighter than this
    min_regulated_speed: float = 0.25  # m/s: curvature regulation does not go below this
    max_lateral_accel: float = 0.8  # m/s^2: caps the speed on a corner's arc
    min_corner_speed: float = 0.3  # m/s: the least speed on a corner's arc (if the turn rate
    # allows it there), and the speed into an about-turn
    corner_deviation: float = 0.08  # m: the most a corner's arc departs from the lanes
    approach_distance: float = 0.3  # m before the goal where the approach slowdown starts
    min_approach_speed: float = 0.1  # m/s: creep speed that still reaches the goal
    max_linear_accel: float = 0.8  # m/s^2 (the safety monitor allows 1.0)
    max_linear_decel: float = 1.2  # m/s^2 (braking profiles plan with 75 % of it)
    max_angular_speed: float = 1.2  # rad/s
    max_angular_accel: float = 2.0  # rad/s^2
    rotate_to_heading_angle: float = 0.785  # rad: rotate in place when the carrot is further off
    rotate_speed: float = 1.2  # rad/s: top speed when rotating in place
    min_rotate_speed: float = 0.15  # rad/s: enough to overcome wheel friction
    rotate_gain: float = 1.5  # rad/s per rad of heading error when rotating in place
    xy_goal_tolerance: float = 0.15  # m
    yaw_goal_tolerance: float = 0.2  # rad
    kerb_tolerance: float = 0.15  # m: at the kerb when this close to the stop point

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"TrackerParams.{f.name} must be finite and > 0, got {value!r}")
        if self.min_lookahead > self.max_lookahead:
            raise ValueError("TrackerParams.min_lookahead must be <= max_lookahead")


@dataclass(frozen=True)
class TrackerOutput:
    cmd: VelocityCommand
    phase: Phase
    s: float  # arc length of the robot's projection on the plan (m)
    cross_track_error: float  # m from the plan
    segment: int  # index into plan.segments, -1 for an empty plan
    waiting_for: str = ""  # the crosswalk the robot waits for at the kerb


class _Piece(NamedTuple):
    """A straight piece of the path the tracker follows: the plan's lanes with each corner
    replaced by a few chords of its fillet arc. `s0` and `span` are in the plan's arc length
    (what progress, crossings and feedback use); on a chord `span` (the stretch of the plan
    the chord stands for) is a little longer than its `length`."""

    ax: float
    ay: float
    ux: float  # unit direction
    uy: float
    s0: float  # plan arc length where the piece starts
    length: float  # m, its own length
    segment: int
    speed_limit: float
    span: float  # plan arc length the piece covers
    radius: float = math.inf  # m: of the arc a chord belongs to; inf on a lane

    def plan_s(self, t: float) -> float:
        """The plan arc length at `t` metres along the piece."""
        return self.s0 + t * self.span / self.length

    def along(self, s: float) -> float:
        """Metres along the piece at plan arc length `s` (beyond its ends: extrapolated)."""
        return (s - self.s0) * self.length / self.span


class RegulatedPurePursuit:
    """Follows one `Plan`; stateful (progress along the plan, last command, kerb decisions)."""

    def __init__(self, params: TrackerParams | None = None) -> None:
        self.params = params or TrackerParams()
        self._plan: Plan | None = None
        self._pieces: list[_Piece] = []
        # (from s, to s, speed): stretches of the plan (or points: from == to) to brake for
        self._slow_points: list[tuple[float, float, float]] = []
        self._committed: set[int] = set()
        self._cap = self.params.max_speed
        self._s = 0.0
        self._piece = 0
        self._latched = False
        self._prev_d_goal = math.inf
        self._rotating = False
        self._last = STOP
        self._last_t: float | None = None

    @property
    def plan(self) -> Plan | None:
        return self._plan

    @property
    def last_cmd(self) -> VelocityCommand:
        return self._last

    @property
    def speed_cap(self) -> float:
        """m/s: `max_speed` of the params and of the current goal, whichever is lower."""
        return self._cap

    def crossing_pending(self, index: int) -> bool:
        """Has the robot yet to commit to crossing `index` of the plan (so it may wait there)?"""
        return index not in self._committed

    def halt(self) -> None:
        """The caller stopped the robot (a terminal result): limits restart from standstill."""
        self._last = STOP

    def set_plan(
        self, plan: Plan, now: float, *, max_speed: float | None = None, stop: bool = False
    ) -> None:
        """Follow `plan` from now on; `max_speed` <= 0 or None means lane limits only. With
        `stop`, the acceleration limits start from standstill (after a blocked robot replans)."""
        p = self.params
        self._plan = plan
        self._cap = p.max_speed if not max_speed or max_speed <= 0 else min(p.max_speed, max_speed)
        straight: list[_Piece] = []
        for i, seg in enumerate(plan.segments):
            s = seg.s_start
            for (ax, ay), (bx, by) in zip(seg.points, seg.points[1:], strict=False):
                length = math.hypot(bx - ax, by - ay)
                if length <= _EPS:
                    continue
                ux, uy = (bx - ax) / length, (by - ay) / length
                straight.append(_Piece(ax, ay, ux, uy, s, length, i, seg.speed_limit, length))
                s += length
        self._pieces, self._slow_points = self._round_corners(straight)
        self._committed = set()
        self._s = 0.0
        self._piece = 0
        self._latched = False
        self._prev_d_goal = math.inf
        self._rotating = False
        self._last_t = now
        if stop:
            self._last = STOP

    def _round_corners(
        self, straight: list[_Piece]
    ) -> tuple[list[_Piece], list[tuple[float, float, float]]]:
        """The path to follow and the points to slow down for.

        Pure pursuit cuts a corner by a good part of its lookahead. Instead, each corner
        becomes a fillet arc (as a few chords) that departs at most `corner_deviation` from
        the two lanes, as wide as the shorter lane allows (it takes at most half of each); the
        robot slows to the arc's speed (lateral acceleration and turn rate limits) before it,
        keeps it to the arc's middle and speeds up from there (a lookahead capped at the arc's
        radius keeps it on the arc). A turn too sharp for an arc (about-turns) keeps its
        corner and the speed `min_corner_speed`: the robot turns there in place if it must."""
        p = self.params
        count = len(straight)
        cut = [[0.0, 0.0] for _ in straight]  # metres taken off each piece's start and end
        arcs: dict[int, tuple[float, float, float]] = {}  # joint i -> (turn, radius, tangent)
        for i in range(count - 1):
            a, b = straight[i], straight[i + 1]
            turn = math.atan2(a.ux * b.uy - a.uy * b.ux, a.ux * b.ux + a.uy * b.uy)
            if abs(turn) < _MIN_TURN or abs(turn) > _MAX_ARC_TURN:
                continue
            half = abs(turn) / 2.0
            radius = p.corner_deviation / (1.0 - math.cos(half))
            tangent = min(radius * math.tan(half), 0.5 * a.length, 0.5 * b.length)
            if tangent < _MIN_TANGENT:
                continue  # a lane too short to round the corner on: turn on the spot
            arcs[i] = (turn, tangent / math.tan(half), tangent)
            cut[i][1] = cut[i + 1][0] = tangent
        pieces: list[_Piece] = []
        slow: list[tuple[float, float, float]] = []
        for i, pc in enumerate(straight):
            head, tail = cut[i]
            if pc.length - head - tail > _EPS:
                pieces.append(pc._replace(ax=pc.ax + pc.ux * head, ay=pc.ay + pc.uy * head,
                                          s0=pc.s0 + head, length=pc.length - head - tail,
                                          span=pc.length - head - tail))
            if i + 1 == count:
                break
            nxt = straight[i + 1]
            corner_s = nxt.s0
            if i not in arcs:
                turn = math.acos(max(-1.0, min(1.0, pc.ux * nxt.ux + pc.uy * nxt.uy)))
                speed = nxt.speed_limit if turn < _MIN_TURN else p.min_corner_speed
                slow.append((corner_s, corner_s, min(nxt.speed_limit, speed)))
                continue
            turn, radius, tangent = arcs[i]
            limit = min(pc.speed_limit, nxt.speed_limit)
            speed = min(limit, self._arc_speed(radius))
            slow.append((corner_s - tangent, corner_s, speed))  # then out of it: speed up
            pieces += _arc(pc, nxt, turn, radius, tangent, limit)
        return pieces, slow

    def _arc_speed(self, radius: float) -> float:
        """The speed through an arc: within `max_lateral_accel` and with a margin of the turn
        rate for corrections; not below `min_corner_speed` unless even the full turn rate
        could not hold the arc at that speed."""
        p = self.params
        v = min(math.sqrt(p.max_lateral_accel * radius),
                _ARC_TURN_RATE_SHARE * p.max_angular_speed * radius)
        return max(min(p.min_corner_speed, p.max_angular_speed * radius), v)

    # -- one control step ------------------------------------------------------------------
    def update(self, pose: Pose2D, now: float, crossing_allowed: CrossingAllowed) -> TrackerOutput:
        plan = self._plan
        if plan is None:
            raise RuntimeError("RegulatedPurePursuit.update() before set_plan()")
        p = self.params
        dt = 0.0 if self._last_t is None else min(max(now - self._last_t, 0.0), _MAX_DT)
        self._last_t = now
        x, y, yaw = pose
        xte = self._localise(x, y)
        s = self._s
        piece = self._pieces[self._piece] if self._pieces else None
        segment = piece.segment if piece else -1
        remaining = max(plan.length - s, 0.0)
        gx, gy = plan.goal
        d_goal = math.hypot(gx - x, gy - y)
        past_end = piece is None or s >= plan.length - _EPS
        to_goal = d_goal if past_end else remaining  # for the approach slowdown

        # -- the goal: position first (latched), then heading --
        # Inside the tolerance, keep closing in while that still helps: latch once close (a
        # third of the tolerance), or when the distance starts to grow (passing beside it).
        if not self._latched and d_goal <= p.xy_goal_tolerance and remaining <= _GOAL_SEARCH:
            closing = d_goal < self._prev_d_goal - 1e-6
            self._latched = d_goal <= p.xy_goal_tolerance / 3.0 or not closing
        self._prev_d_goal = d_goal
        if self._latched:
            err = 0.0 if plan.goal_yaw is None else wrap_angle(plan.goal_yaw - yaw)
            if abs(err) <= p.yaw_goal_tolerance:
                self._last = STOP
                return TrackerOutput(STOP, Phase.ARRIVED, s, xte, segment)
            cmd = self._limit(0.0, self._rotation(err), dt)
            return TrackerOutput(cmd, Phase.ALIGNING, s, xte, segment)

        # -- the kerb gate --
        gate_stop: float | None = None
        gate_zone = ""
        on_crossing = False
        braking = self._last.linear**2 / (2.0 * self._decel)
        for i, c in enumerate(plan.crossings):
            if s >= c.exit_s:
                continue
            if i not in self._committed:
                if s >= c.entry_s:
                    self._committed.add(i)  # already on it (an overshoot): never stop inside
                elif crossing_allowed(c.zone, now):
                    if c.stop_s - s <= braking + p.kerb_tolerance:
                        self._committed.add(i)
                else:
                    gate_stop, gate_zone = c.stop_s, c.zone
            on_crossing = i in self._committed and s >= c.entry_s - p.kerb_tolerance
            break

        # -- speed: limits, then braking towards every slower point ahead --
        v = min(piece.speed_limit if piece else p.max_speed, self._cap)
        for s_from, s_to, v_i in self._slow_points:
            if s_to < s:
                continue  # behind
            if s_from <= s:
                v = min(v, v_i)  # on it (a corner's arc)
                continue
            v = min(v, math.sqrt(v_i * v_i + 2.0 * self._decel * (s_from - s)))
            if s_from - s > v * v / (2.0 * self._decel) + 1.0:
                break
        v = min(v, max(p.min_approach_speed, math.sqrt(2.0 * self._decel * to_goal)))
        if to_goal < p.approach_distance:
            v = min(v, max(p.min_approach_speed, v * to_goal / p.approach_distance))
        if gate_stop is not None:
            to_kerb = gate_stop - s
            if to_kerb <= p.kerb_tolerance:
                self._rotating = False
                cmd = self._limit(0.0, 0.0, dt)
                return TrackerOutput(cmd, Phase.WAITING_AT_KERB, s, xte, segment, gate_zone)
            braking_room = max(to_kerb - p.kerb_tolerance, 0.0)  # stopped inside the tolerance
            v = min(v, max(p.min_approach_speed, math.sqrt(2.0 * self._decel * braking_room)))

        # -- geometry: the carrot and the arc through it --
        lookahead = min(max(abs(self._last.linear) * p.lookahead_time, p.min_lookahead),
                        p.max_lookahead)
        lookahead = self._arc_lookahead(s, lookahead)
        if past_end:
            cx, cy = gx, gy  # past the end of the plan (or none): head for the goal itself
        elif gate_stop is not None and s + lookahead > gate_stop:
            cx, cy = self._point_at(gate_stop)  # straight to the kerb: no cutting the corner
        else:
            cx, cy = self._point_at(s + lookahead)
        dx, dy = cx - x, cy - y
        xr = math.cos(yaw) * dx + math.sin(yaw) * dy
        yr = -math.sin(yaw) * dx + math.cos(yaw) * dy
        alpha = math.atan2(yr, xr)
        if self._rotating:
            self._rotating = abs(alpha) > p.rotate_to_heading_angle / 2.0
        else:
            self._rotating = abs(alpha) > p.rotate_to_heading_angle and not on_crossing
        if self._rotating:
            cmd = self._limit(0.0, self._rotation(alpha), dt)
            return TrackerOutput(cmd, Phase.ROTATING, s, xte, segment)
        dist2 = xr * xr + yr * yr
        curvature = 2.0 * yr / dist2 if dist2 > _EPS else 0.0
        radius = 1.0 / abs(curvature) if abs(curvature) > _EPS else math.inf
        if radius < p.regulated_min_radius:
            v = min(v, max(p.min_regulated_speed, v * radius / p.regulated_min_radius))
        if abs(v * curvature) > p.max_angular_speed:
            v = p.max_angular_speed / abs(curvature)
        linear = self._limit_linear(v, dt)
        angular = self._limit_angular(linear * curvature, dt)
        self._last = VelocityCommand(linear, angular)
        phase = Phase.CROSSING if on_crossing else Phase.TRACKING
        return TrackerOutput(self._last, phase, s, xte, segment)

    @property
    def _decel(self) -> float:
        return self.params.max_linear_decel * _PROFILE_DECEL_FRACTION

    def _rotation(self, err: float) -> float:
        p = self.params
        speed = min(p.rotate_speed, max(p.min_rotate_speed, p.rotate_gain * abs(err)))
        return math.copysign(speed, err)

    def _limit(self, linear: float, angular: float, dt: float) -> VelocityCommand:
        lin = self._limit_linear(linear, dt)
        self._last = VelocityCommand(lin, self._limit_angular(angular, dt))
        return self._last

    def _limit_linear(self, v: float, dt: float) -> float:
        p = self.params
        prev = self._last.linear
        return min(max(v, prev - p.max_linear_decel * dt), prev + p.max_linear_accel * dt)

    def _limit_angular(self, w: float, dt: float) -> float:
        p = self.params
        prev = self._last.angular
        w = min(max(w, -p.max_angular_speed), p.max_angular_speed)
        return min(max(w, prev - p.max_angular_accel * dt), prev + p.max_angular_accel * dt)

    def _localise(self, x: float, y: float) -> float:
        """Project the robot onto the plan near where it was (a window, so a path passing
        close to itself cannot make progress jump); returns the cross-track error."""
        if not self._pieces:
            plan = self._plan
            assert plan is not None
            return math.hypot(plan.goal[0] - x, plan.goal[1] - y)
        lo = self._s - 1.0
        hi = self._s + 2.0 * self.params.max_lookahead + 1.0
        best_d, best_i, best_s = math.inf, self._piece, self._s
        i = self._piece
        while i > 0 and self._pieces[i - 1].s0 + self._pieces[i - 1].span >= lo:
            i -= 1
        while i < len(self._pieces) and self._pieces[i].s0 <= hi:
            pc = self._pieces[i]
            t = min(max((x - pc.ax) * pc.ux + (y - pc.ay) * pc.uy, 0.0), pc.length)
            d = math.hypot(x - (pc.ax + pc.ux * t), y - (pc.ay + pc.uy * t))
            if d < best_d - 1e-9:
                best_d, best_i, best_s = d, i, pc.plan_s(t)
            i += 1
        self._piece, self._s = best_i, best_s
        return best_d

    def _arc_lookahead(self, s: float, lookahead: float) -> float:
        """A lookahead no longer than the radius of an arc within it: a carrot further round
        a tight arc than its radius would make pure pursuit cut inside the arc."""
        i = self._piece
        while i < len(self._pieces) and self._pieces[i].s0 <= s + lookahead:
            lookahead = min(lookahead, max(self._pieces[i].radius, _MIN_LOOKAHEAD))
            i += 1
        return lookahead

    def _point_at(self, s: float) -> tuple[float, float]:
        """The plan's point at arc length `s`, extended straight past the end."""
        i = self._piece
        while i + 1 < len(self._pieces) and self._pieces[i].s0 + self._pieces[i].span < s:
            i += 1
        pc = self._pieces[i]
        t = max(pc.along(s), 0.0)
        return pc.ax + pc.ux * t, pc.ay + pc.uy * t


def _arc(
    before: _Piece, after: _Piece, turn: float, radius: float, tangent: float, limit: float
) -> list[_Piece]:
    """Chords of the fillet arc (signed `turn`, left positive) between two straight pieces
    that meet at a corner; the arc replaces `tangent` metres of each. The chords share the
    plan's stretch [corner - tangent, corner + tangent] in proportion to the angle."""
    side = 1.0 if turn > 0.0 else -1.0
    cx = after.ax - before.ux * tangent - side * before.uy * radius  # the arc's centre
    cy = after.ay - before.uy * tangent + side * before.ux * radius
    start = math.atan2(-side * before.ux, side * before.uy)  # direction centre -> arc start
    n = max(2, math.ceil(abs(turn) / _ARC_CHORD))
    step = turn / n
    span = 2.0 * tangent / n
    points = [(cx + radius * math.cos(start + k * step), cy + radius * math.sin(start + k * step))
              for k in range(n + 1)]
    out: list[_Piece] = []
    for k in range(n):
        (ax, ay), (bx, by) = points[k], points[k + 1]
        length = math.hypot(bx - ax, by - ay)
        segment = before.segment if 2 * k < n else after.segment
        out.append(_Piece(ax, ay, (bx - ax) / length, (by - ay) / length,
                          after.s0 - tangent + k * span, length, segment, limit, span, radius))
    return out


# == progress ====================================================================================
class ProgressMonitor:
    """No progress of `distance` m along the plan within `timeout_s` -> stalled."""

    def __init__(self, distance: float, timeout_s: float) -> None:
        if not (distance > 0.0 and timeout_s > 0.0):
            raise ValueError("progress distance and timeout must be > 0")
        self.distance = distance
        self.timeout_s = timeout_s
        self._s_ref = 0.0
        self._t_ref = 0.0

    def reset(self, s: float, now: float) -> None:
        self._s_ref, self._t_ref = s, now

    def stalled(self, s: float, now: float) -> bool:
        if s >= self._s_ref + self.distance:
            self.reset(s, now)
            return False
        return now - self._t_ref > self.timeout_s


# == the navigator ===============================================================================
@dataclass(frozen=True)
class NavigatorParams:
    progress_distance: float = 0.5  # m along the plan ...
    progress_timeout_s: float = 10.0  # ... within this, or the lane counts as blocked
    timeout_factor: float = 2.0  # automatic deadline: factor * ETA + margin + crossing waits
    timeout_margin_s: float = 60.0
    unsignalled_wait_s: float = 30.0  # allowance per unsignalled crossing in the deadline
    replan_on_blocked: bool = True  # close the blocked lane and replan (else report BLOCKED)
    max_replans: int = 3
    max_cross_track_error: float = 2.0  # m off the plan -> replan from where the robot is
    closure_s: float | None = None  # how long a blocked lane stays closed; None: planner's

    def __post_init__(self) -> None:
        if not (self.timeout_factor > 0.0 and self.max_cross_track_error > 0.0):
            raise ValueError("NavigatorParams: timeout_factor, max_cross_track_error must be > 0")
        if self.max_replans < 0 or self.timeout_margin_s < 0.0 or self.unsignalled_wait_s < 0.0:
            raise ValueError("NavigatorParams: max_replans and allowances must be >= 0")


@dataclass(frozen=True)
class NavFeedback:
    """What the `navigate` action reports while running."""

    distance_remaining: float = 0.0  # m along the plan
    eta_s: float = -1.0  # s; -1 when unknown
    current_lane: str = ""  # "from->to"; "" off the graph
    cross_track_error: float = 0.0  # m
    distance_travelled: float = 0.0  # m driven since start()
    waiting_for: str = ""  # crosswalk the robot waits for at the kerb


@dataclass(frozen=True)
class NavStatus:
    phase: Phase
    code: NavCode | None = None  # set once finished: the action result code
    message: str = ""
    replans: int = 0
    blocked_lane: str = ""  # last lane reported blocked (closed in the planner if replanning)

    @property
    def done(self) -> bool:
        return self.code is not None


class NavStep(NamedTuple):
    cmd: VelocityCommand
    status: NavStatus
    feedback: NavFeedback


class Navigator:
    """Planner + tracker + monitors for one robot: `start()`, then `step()` until done."""

    def __init__(
        self,
        planner: RoutePlanner,
        params: NavigatorParams | None = None,
        tracker_params: TrackerParams | None = None,
        crossing_allowed: CrossingAllowed | None = None,
    ) -> None:
        self.planner = planner
        self.params = params or NavigatorParams()
        self.tracker = RegulatedPurePursuit(tracker_params)
        self.crossing_allowed = crossing_allowed or signal_crossing_allowed(planner.route)
        self._monitor = ProgressMonitor(
            self.params.progress_distance, self.params.progress_timeout_s
        )
        self._status = NavStatus(Phase.IDLE)
        self._feedback = NavFeedback()
        self._plan: Plan | None = None
        self._goal: Goal = ""
        self._max_speed: float | None = None
        self._deadline = math.inf
        self._auto_deadline = True
        self._started = 0.0
        self._last_pose: Pose2D | None = None
        self._travelled = 0.0
        self._seg_times: list[float] = []
        self._seg_starts_t: list[float] = []

    @property
    def status(self) -> NavStatus:
        return self._status

    @property
    def feedback(self) -> NavFeedback:
        return self._feedback

    @property
    def plan(self) -> Plan | None:
        return self._plan

    @property
    def active(self) -> bool:
        return self._plan is not None and not self._status.done

    def start(
        self,
        goal: Goal,
        pose: Pose2D,
        now: float,
        *,
        max_speed: float | None = None,
        timeout_s: float | None = None,
    ) -> NavStatus:
        """Plan from `pose` to `goal` (a waypoint name or a map pose) and start driving.
        Returns NO_PATH (done) at once if there is no route; a new start() replaces a goal."""
        self._goal, self._max_speed = goal, max_speed
        self._started, self._last_pose, self._travelled = now, pose, 0.0
        self._plan = None
        self._status = NavStatus(Phase.IDLE)
        self._feedback = NavFeedback()
        if not all(math.isfinite(v) for v in pose):
            return self._finish(NavCode.FAILED, f"robot pose {tuple(pose)} is not finite")
        result = self.planner.plan(pose, goal, now)
        if isinstance(result, NoPath):
            return self._finish(NavCode.NO_PATH, result.message)
        self._auto_deadline = timeout_s is None
        self._deadline = math.inf
        if timeout_s is not None:
            self._deadline = now + timeout_s
        self._use(result, now, stop=False)
        self._status = NavStatus(Phase.TRACKING)
        return self._status

    def cancel(self) -> NavStatus:
        """Stop now (the caller publishes a zero command) and report CANCELED."""
        if self.active:
            self.tracker.halt()
            return self._finish(NavCode.CANCELED, "navigation canceled")
        return self._status

    def step(self, pose: Pose2D, now: float) -> NavStep:
        """One control cycle: the command to publish, the status and the feedback."""
        if not self.active or self._plan is None:
            return NavStep(STOP, self._status, self._feedback)
        if not all(math.isfinite(v) for v in pose):
            return self._stop(NavCode.FAILED, f"robot pose {tuple(pose)} is not finite")
        if self._last_pose is not None:
            self._travelled += math.hypot(pose[0] - self._last_pose[0],
                                          pose[1] - self._last_pose[1])
        self._last_pose = pose
        if now > self._deadline:
            allowed = self._deadline - self._started
            return self._stop(NavCode.TIMEOUT, f"not at the goal after {allowed:.0f} s")
        out = self.tracker.update(pose, now, self.crossing_allowed)
        if out.phase is Phase.ARRIVED:
            self._feedback = self._make_feedback(out.s, out, now)
            return self._stop(NavCode.SUCCEEDED, "goal reached")
        if out.cross_track_error > self.params.max_cross_track_error:
            why = f"{out.cross_track_error:.1f} m off the plan"
            return self._replan(pose, now, why, NavCode.FAILED, self._status.blocked_lane)
        if out.phase in (Phase.WAITING_AT_KERB, Phase.ALIGNING):
            self._monitor.reset(out.s, now)  # standing still on purpose
        elif self._monitor.stalled(out.s, now):
            return self._on_blocked(pose, now, out.segment)
        self._feedback = self._make_feedback(out.s, out, now)
        self._status = NavStatus(out.phase, None, self._status.message, self._status.replans,
                                 self._status.blocked_lane)
        return NavStep(out.cmd, self._status, self._feedback)

    # -- internals -------------------------------------------------------------------------
    def _use(self, plan: Plan, now: float, *, stop: bool) -> None:
        self._plan = plan
        self.tracker.set_plan(plan, now, max_speed=self._max_speed, stop=stop)
        self._monitor.reset(0.0, now)
        cap = self.tracker.speed_cap
        self._seg_times = [seg.length / min(seg.speed_limit, cap) for seg in plan.segments]
        self._seg_starts_t = [sum(self._seg_times[:i]) for i in range(len(self._seg_times))]
        if self._auto_deadline:
            p = self.params
            waits = sum(c.signal.red_s if c.signal else p.unsignalled_wait_s
                        for c in plan.crossings)
            budget = p.timeout_factor * sum(self._seg_times) + p.timeout_margin_s + waits
            self._deadline = max(self._deadline if math.isfinite(self._deadline) else 0.0,
                                 now + budget)

    def _on_blocked(self, pose: Pose2D, now: float, segment: int) -> NavStep:
        """No progress: close the lane the robot is stuck on and replan, or give up BLOCKED."""
        p, st = self.params, self._status
        plan = self._plan
        assert plan is not None
        lane = plan.segments[segment].lane if segment >= 0 else None
        where = f"lane {lane[0]}->{lane[1]}" if lane else "the way to or from the route graph"
        why = f"no progress of {p.progress_distance:g} m in {p.progress_timeout_s:g} s on {where}"
        if lane is None:
            return self._stop(NavCode.BLOCKED, why)
        name = f"{lane[0]}->{lane[1]}"
        if not p.replan_on_blocked:
            return self._stop(NavCode.BLOCKED, why, blocked_lane=name)
        if st.replans >= p.max_replans:
            return self._stop(NavCode.BLOCKED, f"{why}; gave up after {st.replans} replans",
                              blocked_lane=name)
        closure = self.planner.close_lane(lane[0], lane[1], now, p.closure_s)
        why += f"; lane closed until t={closure.reopen_at:.0f} s"
        return self._replan(pose, now, why, NavCode.BLOCKED, blocked_lane=name)

    def _replan(
        self, pose: Pose2D, now: float, why: str, failure: NavCode, blocked_lane: str
    ) -> NavStep:
        st = self._status
        if st.replans >= self.params.max_replans:
            return self._stop(failure, f"{why}; gave up after {st.replans} replans")
        result = self.planner.plan(pose, self._goal, now)
        if isinstance(result, NoPath):
            return self._stop(failure, f"{why}; no other route: {result.message}",
                              blocked_lane=blocked_lane)
        self._use(result, now, stop=True)
        self._status = NavStatus(Phase.TRACKING, None, f"{why}; replanned", st.replans + 1,
                                 blocked_lane)
        self._feedback = self._make_feedback(0.0, None, now)
        return NavStep(STOP, self._status, self._feedback)

    def _time_at(self, s: float) -> float:
        """Seconds from the plan's start to arc length `s` at the capped segment limits."""
        plan = self._plan
        assert plan is not None
        i = plan.segment_at(s)
        if i < 0:
            return 0.0
        seg = plan.segments[i]
        along = min(max(s - seg.s_start, 0.0), seg.length)
        return self._seg_starts_t[i] + self._seg_times[i] * along / seg.length

    def _make_feedback(self, s: float, out: TrackerOutput | None, now: float) -> NavFeedback:
        """Distance and ETA along the plan; the ETA includes the wait for each signalled
        crossing ahead, predicted from its cycle at the time the robot will reach the kerb."""
        plan = self._plan
        assert plan is not None
        i = out.segment if out else plan.segment_at(s)
        t_here = self._time_at(s)
        wait = 0.0
        for index, c in enumerate(plan.crossings):
            if c.signal is not None and c.entry_s > s and self.tracker.crossing_pending(index):
                arrive = now + max(self._time_at(c.stop_s) - t_here, 0.0) + wait
                wait += c.signal.seconds_until_green(arrive)
        return NavFeedback(
            distance_remaining=max(plan.length - s, 0.0),
            eta_s=sum(self._seg_times) - t_here + wait,
            current_lane=plan.segments[i].lane_name if i >= 0 else "",
            cross_track_error=out.cross_track_error if out else 0.0,
            distance_travelled=self._travelled,
            waiting_for=out.waiting_for if out else "",
        )

    def _finish(self, code: NavCode, message: str, blocked_lane: str | None = None) -> NavStatus:
        st = self._status
        self._status = NavStatus(Phase.DONE, code, message, st.replans,
                                 st.blocked_lane if blocked_lane is None else blocked_lane)
        self._feedback = NavFeedback(
            distance_remaining=self._feedback.distance_remaining if self._plan else 0.0,
            eta_s=0.0 if code is NavCode.SUCCEEDED else -1.0,
            current_lane=self._feedback.current_lane,
            cross_track_error=self._feedback.cross_track_error,
            distance_travelled=self._travelled,
        )
        return self._status

    def _stop(self, code: NavCode, message: str, blocked_lane: str | None = None) -> NavStep:
        self.tracker.halt()
        return NavStep(STOP, self._finish(code, message, blocked_lane), self._feedback)

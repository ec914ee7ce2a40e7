"""Path tracking in the headless simulator's core: cross-track error at 1.5 m/s on town's lanes.

The built-in navigator (`path_tracking.Navigator`: route planner + regulated pure pursuit)
drives one simulated robot (`fleet_simulation.FleetSimulation`: acceleration and speed limits,
wheel odometry with its errors; no lidar, no people) along ROUTES, long routes of town with
90-degree corners, the depot doors and the crosswalk (kept green: waiting at the kerb would
only blur the times). The loop is the navigation node's: 20 Hz control on the pose it gets,
sim steps of 50 ms, and each command reaches the wheels one control period later (odometry,
the navigation timer and the safety monitor's relay each take part of a period in ROS).

The cross-track error is the distance from the robot's ground-truth position to the plan's
lanes, sampled every control period while the robot moves (ground-truth speed above 5 cm/s:
waiting and turning in place are not tracking). The controller is fed either
- `odom`: wheel odometry as the simulator produces it (`SimConfig()` defaults) moved into map
  by the start pose, exactly as the navigation node does (odom + odom_to_map; there is no
  localisation in the headless sim), so odometry drift shows up as cross-track error;
- `truth`: the ground-truth pose (perfect localisation): the controller's own error; or
- `fused`: odometry with FUSED_ODOMETRY's errors (about 0.2 % of the distance driven, what a
  calibrated base with a gyro would give), for comparison.

Value: the tuned controller and defaults (`TrackerParams()`); baseline: path_tracking.py as it
was at BASELINE_COMMIT with its defaults, run in the same process on the same routes.
Metrics:
- `tracking_xte_p95_m`: p95 cross-track error with the controller on odometry (`odom`);
- `tracking_xte_p95_m_ground_truth` (and `..._max_m_...`): on ground truth;
- `tracking_xte_p95_m_fused_odometry`: on `fused` odometry;
- `tracking_routes_completed_odom`: routes that end SUCCEEDED on `odom`;
- `tracking_odom_drift_pct`: the simulator's default odometry, its error at the end of each
  route (driven on ground truth) over the route's length, mean over the routes;
- `tracking_mean_speed_mps`: plan length / time over all routes on ground truth (the turn
  in place at the start and at the goal included); `tracking_route_time_s`: the mean time per
  route. (On the default odometry the routes end early, so their times say nothing.)
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry import LineString, Point

from delivery_robot.fleet_simulation import (
    FleetSimulation,
    LidarConfig,
    OdometryConfig,
    SimConfig,
    SimWorld,
)
from delivery_robot.path_tracking import STOP, Navigator, NavigatorParams, TrackerParams
from delivery_robot.route_graph import RouteGraph, load_route_graph
from delivery_robot.route_planner import NavCode, Plan, Pose2D, RoutePlanner

ROOT = Path(__file__).resolve().parents[1]
WORLD = ROOT / "config" / "worlds" / "town.yaml"
ROUTES = (
    ("depot", "house_s8"),  # out of the depot, along Main street, across it, east
    ("shop_bakery", "house_n2"),
    ("house_s7", "shop_pharmacy"),  # across Main street northbound
    ("shop_chicken", "house_s1"),
    ("house_s2", "depot"),  # back in through the entry door
)
DT = 0.05  # s: sim step and control period (navigation's control_rate_hz: 20)
LATENCY_STEPS = 1  # control periods between the pose a command was computed on and the wheels
MOVING = 0.05  # m/s: ground-truth speed above which a sample counts
SEED = 3
# Odometry as a calibrated base fusing a gyro would give it (about 0.2 % of the distance
# driven at the end of a route here), for comparison with the simulator's defaults.
FUSED_ODOMETRY = OdometryConfig(wheel_noise=0.0002, left_scale_error=0.001,
                                right_scale_error=0.001, wheel_base_error=0.001)

# The baseline: the controller and defaults before tuning, path_tracking.py as committed in
# BASELINE_COMMIT (sharp corners followed by plain pursuit, lookahead 1.0 s / 0.5 m, ...),
# loaded from git so the comparison runs the old code itself, not an imitation.
BASELINE_COMMIT = "1b7ce56"


@dataclass
class RouteRun:
    code: NavCode | None
    time_s: float
    length_m: float  # the plan's
    xte_truth: list[float]  # m, ground truth against the plan, while moving
    xte_seen: list[float]  # m, the controller's pose against the plan, same samples
    odom_error_m: float  # at the end: |odometry pose - ground truth|


def map_pose(odom: Any, origin: Pose2D) -> Pose2D:
    """An odom-frame pose in map, `origin` being the odom frame's pose in map."""
    c, s = math.cos(origin.yaw), math.sin(origin.yaw)
    return Pose2D(origin.x + c * odom.x - s * odom.y, origin.y + s * odom.x + c * odom.y,
                  math.atan2(math.sin(origin.yaw + odom.yaw), math.cos(origin.yaw + odom.yaw)))


def previous_navigator() -> Any:
    """The Navigator class of path_tracking.py at BASELINE_COMMIT, or None without git."""
    name = "delivery_robot._path_tracking_baseline"
    if name in sys.modules:
        return sys.modules[name].Navigator
    try:
        what = f"{BASELINE_COMMIT}:src/delivery_robot/path_tracking.py"
        source = subprocess.run(["git", "-C", str(ROOT), "show", what], capture_output=True,
                                text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    exec(compile(source, f"{BASELINE_COMMIT}:path_tracking.py", "exec"), module.__dict__)
    return module.Navigator


def drive(
    route: RouteGraph,
    world: SimWorld,
    start: str,
    goal: str,
    tracker: TrackerParams | None,
    *,
    navigator: Any = Navigator,
    feedback: str = "odom",
    odometry: OdometryConfig | None = None,
    seed: int = SEED,
    limit_s: float = 600.0,
) -> RouteRun:
    """Drive `start` -> `goal` in the simulator with the navigator in the loop."""
    w = route.waypoint(start)
    origin = Pose2D(w.x, w.y, w.yaw or 0.0)
    config = SimConfig(odometry=odometry or OdometryConfig(), lidar=LidarConfig(enabled=False))
    sim = FleetSimulation(world, [tuple(origin)], config, seed=seed)
    nav = navigator(RoutePlanner(route), NavigatorParams(), tracker,
                    crossing_allowed=lambda _zone, _now: True)
    t = 0.0
    status = nav.start(goal, origin, t)
    if status.done:
        raise RuntimeError(f"{start} -> {goal}: {status.message}")
    plan = nav.plan
    assert plan is not None
    line = _line(plan)
    pending = [STOP] * LATENCY_STEPS
    xte_truth: list[float] = []
    xte_seen: list[float] = []
    while nav.active and t < limit_s:
        out = sim.output(0)
        truth = Pose2D(out.pose.x, out.pose.y, out.pose.yaw)
        pose = map_pose(out.odom_pose, origin) if feedback == "odom" else truth
        step = nav.step(pose, t)
        if nav.plan is not plan:  # replanned (knocked off the plan): measure against the new one
            plan = nav.plan
            assert plan is not None
            line = _line(plan)
        if abs(out.twist.linear) > MOVING:
            xte_truth.append(line.distance(Point(truth.x, truth.y)))
            xte_seen.append(line.distance(Point(pose.x, pose.y)))
        pending.append(step.cmd)
        cmd = pending.pop(0)
        sim.set_command(0, cmd.linear, cmd.angular)
        sim.step(DT)
        t += DT
    end = sim.output(0)
    seen = map_pose(end.odom_pose, origin)
    return RouteRun(nav.status.code, t, plan.length, xte_truth, xte_seen,
                    math.hypot(seen.x - end.pose.x, seen.y - end.pose.y))


def _line(plan: Plan) -> Any:
    points = [plan.start] + [p for seg in plan.segments for p in seg.points[1:]]
    return LineString(points) if len(points) > 1 else Point(plan.start)


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def evaluate(route: RouteGraph, world: SimWorld, tracker: TrackerParams | None, feedback: str,
             odometry: OdometryConfig | None = None, navigator: Any = Navigator
             ) -> dict[str, float]:
    """All ROUTES with one controller and one pose source: p95s, speed, time, arrivals."""
    runs = [drive(route, world, a, b, tracker, feedback=feedback, odometry=odometry,
                  navigator=navigator) for a, b in ROUTES]
    truth = [x for r in runs for x in r.xte_truth]
    seen = [x for r in runs for x in r.xte_seen]
    time_s = sum(r.time_s for r in runs)
    return {
        "xte_p95": round(p95(truth), 4),
        "xte_max": round(max(truth), 3),
        "seen_p95": round(p95(seen), 4),
        "mean_speed": round(sum(r.length_m for r in runs) / time_s, 3),
        "route_time": round(time_s / len(runs), 1),
        "arrived": sum(r.code is NavCode.SUCCEEDED for r in runs),
        "odom_drift_pct": round(100.0 * statistics.fmean(r.odom_error_m / r.length_m
                                                         for r in runs), 2),
    }


def run() -> dict[str, Any]:
    route = load_route_graph(WORLD)
    world = SimWorld.from_route_graph(route)
    previous = previous_navigator()
    results: dict[str, dict[str, float]] = {}
    for label, feedback, odometry in (("odom", "odom", None), ("truth", "truth", None),
                                      ("fused", "odom", FUSED_ODOMETRY)):
        results[label] = evaluate(route, world, TrackerParams(), feedback, odometry)
        if previous is not None:
            results[f"{label}_before"] = evaluate(route, world, None, feedback, odometry,
                                                  navigator=previous)
    for label, r in results.items():
        print(f"    {label:<13} {r}")
    if results["truth"]["arrived"] != len(ROUTES):
        raise RuntimeError("the tuned navigator did not finish every route on ground truth")

    def before(label: str, key: str) -> float | None:
        return results[f"{label}_before"][key] if previous is not None else None

    odom, truth, fused = results["odom"], results["truth"], results["fused"]
    return {"name": "path_tracking", "metrics": {
        "tracking_xte_p95_m": {"value": odom["xte_p95"], "unit": "m",
                               "baseline": before("odom", "xte_p95"), "target": "<= 0.10"},
        "tracking_xte_p95_m_ground_truth": {"value": truth["xte_p95"], "unit": "m",
                                            "baseline": before("truth", "xte_p95"),
                                            "target": "<= 0.10"},
        "tracking_xte_max_m_ground_truth": {"value": truth["xte_max"], "unit": "m",
                                            "baseline": before("truth", "xte_max"),
                                            "target": "info"},
        "tracking_xte_p95_m_fused_odometry": {"value": fused["xte_p95"], "unit": "m",
                                              "baseline": before("fused", "xte_p95"),
                                              "target": "info: 0.2 % drift odometry"},
        "tracking_routes_completed_odom": {"value": odom["arrived"], "unit": "routes",
                                           "baseline": before("odom", "arrived"),
                                           "target": f"info: of {len(ROUTES)}"},
        "tracking_odom_drift_pct": {"value": truth["odom_drift_pct"], "unit": "%",
                                    "baseline": None,
                                    "target": "info: end-of-route odometry error / length"},
        "tracking_mean_speed_mps": {"value": truth["mean_speed"], "unit": "m/s",
                                    "baseline": before("truth", "mean_speed"),
                                    "target": "info: no crawling"},
        "tracking_route_time_s": {"value": truth["route_time"], "unit": "s",
                                  "baseline": before("truth", "route_time"), "target": "info"},
    }}

"""The headless simulator's core alone: how much faster than real time, and what the lidar costs.

Scene: the `town` world, 10 robots patrolling their own stretch of the two sidewalks at up to
1.5 m/s (a pursuit controller commanding at 10 Hz, as navigation would), 10 pedestrians
walking about the geofence, a 360-beam 12 m lidar at 10 Hz on every robot, 50 ms steps, 200
simulated seconds. The lidar-on and lidar-off simulations run in lockstep, each timed on its
own, so load from other processes on a shared machine falls on both alike; the fastest of
REPEATS runs counts. Metrics:
- `sim_core_speedup_10robots`: simulated seconds per wall second, lidar on;
- `sim_lidar_cost_ratio`: wall time with the lidar on / the same run with it off;
- `raycast_vectorised_speedup`: one scan of all 10 robots on the run's final scene, by the
  per-ray Python loop (`raycast_reference`, the baseline) / by `Raycaster.cast` as the
  simulator uses it (static scene prepared once); the two are checked equal first.
Extra, for context: the dense broadcast caster (every ray x every shape) on the same scene.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from delivery_robot.fleet_simulation import (
    FleetSimulation,
    LidarConfig,
    PedestrianConfig,
    SimConfig,
    SimWorld,
)
from delivery_robot.lidar_raycast import Raycaster, raycast_dense, raycast_reference
from delivery_robot.route_graph import RouteGraph, load_route_graph

ROOT = Path(__file__).resolve().parents[1]
WORLD = ROOT / "config" / "worlds" / "town.yaml"
ROBOTS = 10
PEDESTRIANS = 10
STEP_S = 0.05
CONTROL_EVERY = 2  # steps: commands at 10 Hz
SIM_SECONDS = 200.0
REPEATS = 4  # runs per configuration; the fastest counts (the machine is shared)
CRUISE = 1.5  # m/s, the sidewalk lanes' limit
LOOKAHEAD = 1.5  # m
SEED = 7


def patrols(route: RouteGraph) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Each robot's stretch of sidewalk: (ROBOTS, 2, 2) end points, and the start poses."""
    stretches = []
    for side in ("n", "s"):
        names = [w for w in route.waypoints if w.startswith(f"walk_{side}_")]
        xs = sorted(route.waypoint(w).x for w in names)
        y = route.waypoint(names[0]).y
        edges = np.linspace(xs[0], xs[-1], ROBOTS // 2 + 1)
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            stretches.append([[a + 1.0, y], [b - 1.0, y]])
    ends = np.array(stretches)
    starts = np.column_stack([ends[:, 0, 0], ends[:, 0, 1], np.zeros(ROBOTS)])
    return ends, starts


class Patrol:
    """Each robot drives back and forth along its stretch of sidewalk, as navigation would.

    Pure pursuit of a point 1.5 m ahead on the lane, commands at 10 Hz, turning on the spot
    when far off heading (so turning round never swings a robot into a kerb or a bin).
    """

    def __init__(self, sim: FleetSimulation, ends: np.ndarray[Any, Any]) -> None:
        self.sim = sim
        self.ends = ends
        self.rows = np.arange(sim.robot_count)
        self.target = np.ones(sim.robot_count, dtype=np.int64)  # the far end first
        self.steps = 0

    def step(self) -> None:
        if self.steps % CONTROL_EVERY == 0:
            pose = self.sim.poses
            goal_x = self.ends[self.rows, self.target, 0]
            arrived = np.abs(goal_x - pose[:, 0]) < 0.3
            self.target = np.where(arrived, 1 - self.target, self.target)
            goal_x = self.ends[self.rows, self.target, 0]
            ahead = np.clip(goal_x - pose[:, 0], -LOOKAHEAD, LOOKAHEAD)
            dy = self.ends[:, 0, 1] - pose[:, 1]
            error = np.mod(np.arctan2(dy, ahead) - pose[:, 2] + math.pi, 2 * math.pi) - math.pi
            self.sim.set_commands(CRUISE * np.clip(1.0 - np.abs(error) / 0.4, 0.0, 1.0),
                                  np.clip(2.5 * error, -1.5, 1.5))
        self.sim.step(STEP_S)
        self.steps += 1


def drive(patrols: list[Patrol], seconds: float) -> list[float]:
    """Step every patrol in lockstep for `seconds` of sim time; each one's own wall seconds.

    Lockstep, so that load from other processes on this shared machine falls on all of the
    compared runs alike, instead of on whichever happened to run during a burst.
    """
    walls = [0.0] * len(patrols)
    clock = time.perf_counter
    for _ in range(int(round(seconds / STEP_S))):
        for i, patrol in enumerate(patrols):
            started = clock()
            patrol.step()
            walls[i] += clock() - started
    return walls


def make_sim(route: RouteGraph, world: SimWorld, lidar: bool) -> FleetSimulation:
    _, starts = patrols(route)
    config = SimConfig(lidar=replace(LidarConfig(), enabled=lidar),
                       pedestrians=PedestrianConfig(count=PEDESTRIANS))
    return FleetSimulation(world, [tuple(s) for s in starts], config, seed=SEED)


def timed_runs(route: RouteGraph, world: SimWorld) -> tuple[float, float, FleetSimulation]:
    """Fastest wall time with the lidar on and off (run in lockstep), and the last simulation
    with the lidar on."""
    ends, _ = patrols(route)
    on, off, sims = [], [], []
    for _ in range(REPEATS):
        sims.append(make_sim(route, world, lidar=True))
        wall_on, wall_off = drive([Patrol(sims[-1], ends),
                                   Patrol(make_sim(route, world, lidar=False), ends)],
                                  SIM_SECONDS)
        on.append(wall_on)
        off.append(wall_off)
    return min(on), min(off), sims[-1]


def time_call(fn: Any, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def run() -> dict[str, Any]:
    route = load_route_graph(WORLD)
    world = SimWorld.from_route_graph(route)
    wall_on, wall_off, sim = timed_runs(route, world)
    driven = float(sim.distances.sum())

    # The ray-casting scene: the final poses, lidar-plane geometry, robots and pedestrians;
    # the caster prepared once for the static scene, as the simulator does.
    lidar = sim.config.lidar
    pose = sim.poses
    c, s = np.cos(pose[:, 2]), np.sin(pose[:, 2])
    origins = np.column_stack([pose[:, 0] + c * lidar.mount_x, pose[:, 1] + s * lidar.mount_x])
    plane = world.geometry.in_height_band(lidar.mount_z, lidar.mount_z)
    bodies = np.vstack([
        np.column_stack([pose[:, :2], np.full(ROBOTS, sim.config.kinematics.radius)]),
        np.column_stack([sim.pedestrians.positions, np.full(PEDESTRIANS, sim.pedestrians.radius)]),
    ])
    own = np.arange(ROBOTS, dtype=np.int64)
    caster = Raycaster(lidar.pattern, plane.segments, plane.circles, lidar.range_max,
                       one_sided=True)
    fast = caster.cast(origins, pose[:, 2], bodies, own)
    everything = (origins, pose[:, 2], lidar.pattern, plane.segments,
                  np.vstack([plane.circles, bodies]), lidar.range_max, own + len(plane.circles))
    slow_started = time.perf_counter()
    slow = raycast_reference(*everything)
    slow_s = time.perf_counter() - slow_started
    both = np.isfinite(slow)
    if not (np.array_equal(both, np.isfinite(fast))
            and np.allclose(fast[both], slow[both], rtol=0.0, atol=1e-9)):
        raise AssertionError("vectorised ray casting disagrees with the reference")
    fast_s = time_call(lambda: caster.cast(origins, pose[:, 2], bodies, own), 200)
    dense_s = time_call(lambda: raycast_dense(*everything), 10)

    return {"name": "fleet_simulation", "metrics": {
        "sim_core_speedup_10robots": {
            "value": round(SIM_SECONDS / wall_on, 1), "unit": "x", "baseline": None,
            "target": ">= 100"},
        "sim_lidar_cost_ratio": {
            "value": round(wall_on / wall_off, 3), "unit": "ratio", "baseline": None,
            "target": "<= 2"},
        "raycast_vectorised_speedup": {
            "value": round(slow_s / fast_s, 1), "unit": "x", "baseline": None,
            "target": ">= 50"},
        "raycast_10robots_scan_ms": {
            "value": round(fast_s * 1000, 3), "unit": "ms",
            "baseline": round(slow_s * 1000, 1), "target": "info (baseline: per-ray loop)"},
        "raycast_dense_10robots_scan_ms": {
            "value": round(dense_s * 1000, 3), "unit": "ms", "baseline": None,
            "target": "info (every ray x every shape, one broadcast)"},
        "sim_core_speedup_10robots_no_lidar": {
            "value": round(SIM_SECONDS / wall_off, 1), "unit": "x", "baseline": None,
            "target": "info"},
        "sim_core_distance_driven_m": {
            "value": round(driven, 1), "unit": "m", "baseline": None,
            "target": f"info (10 robots, {SIM_SECONDS:.0f} s; ~{10 * CRUISE * SIM_SECONDS:.0f} "
                      "m if never stopped)"},
    }}

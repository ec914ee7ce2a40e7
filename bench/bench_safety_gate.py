"""Benchmark: the safety gate's cost per scan, against a plain per-point Python version.

One step = `update_scan` + `update_command` + `step`: scan -> points in base_link, stop and
slowdown polygons, approach (footprint swept along the commanded arc), caps, acceleration.
The baseline does the same work with the same algorithm, one point (and one pose) at a time
in Python, as a straightforward port would; the bench checks both reach the same decision.

Target: Nav2's Collision Monitor (C++) takes about 4.5 ms per 360-point scan.
Run alone: `tools/ros_env python bench/bench_safety_gate.py`.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from delivery_robot.safety_gate import (
    LaserScanData,
    SafetyConfig,
    SafetyGate,
    VelocityCommand,
)

CONFIG = SafetyConfig(
    total_mass_kg=65.0,
    footprint=((0.4, 0.3), (-0.3, 0.3), (-0.3, -0.3), (0.4, -0.3)),
    stop_zone=((0.7, 0.35), (-0.3, 0.35), (-0.3, -0.35), (0.7, -0.35)),
    slowdown_zone=((1.5, 0.5), (-0.3, 0.5), (-0.3, -0.5), (1.5, -0.5)),
    slowdown_scale=0.5,
    time_before_collision=1.5,
    max_linear_accel=100.0,
)
COMMAND = (2.0, 0.1)  # m/s, rad/s: fast enough that approach mode engages


def street_scan(beams: int, stamp: float) -> LaserScanData:
    """A pavement: a building wall on the left, a kerb-side post, two pedestrians."""
    angles = -math.pi + (2 * math.pi / beams) * np.arange(beams)
    dx, dy = np.cos(angles), np.sin(angles)
    ranges = np.full(beams, np.inf)
    with np.errstate(divide="ignore"):
        wall = np.where(dy > 1e-6, 2.5 / dy, np.inf)  # the line y = 2.5
    ranges = np.minimum(ranges, np.where(wall < 25.0, wall, np.inf))
    for cx, cy, r in [(3.0, 0.2, 0.25), (5.0, -1.0, 0.25), (1.2, -1.4, 0.05), (-2.0, 0.5, 0.3)]:
        b = -(cx * dx + cy * dy)
        disc = b * b - (cx * cx + cy * cy - r * r)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        ranges = np.where((disc >= 0) & (t > 0), np.minimum(ranges, t), ranges)
    rng = np.random.default_rng(1)
    ranges = ranges + rng.normal(0.0, 0.005, beams)
    return LaserScanData(ranges, -math.pi, 2 * math.pi / beams, 0.05, 30.0, stamp)


# ---- the per-point Python baseline -----------------------------------------------------------


def _inside(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def python_gate_scale(scan: LaserScanData, config: SafetyConfig, v: float, w: float) -> float:
    """The gate's speed scale for (v, w) on `scan`, a point and a pose at a time."""
    mount = config.laser_pose
    points = []
    for i, r in enumerate(scan.ranges):
        r = float(r)
        if not (math.isfinite(r) and scan.range_min <= r <= scan.range_max):
            continue
        a = scan.angle_min + i * scan.angle_increment + mount.yaw
        points.append((mount.x + r * math.cos(a), mount.y + r * math.sin(a)))
    stop_zone = config.stop_zone if v >= 0 else config.stop_zone_behind
    slow_zone = config.slowdown_zone if v >= 0 else config.slowdown_zone_behind
    stop = slow = 0
    for x, y in points:
        stop += _inside(x, y, stop_zone)
        slow += _inside(x, y, slow_zone)
    if stop >= config.min_points:
        return 0.0
    scale = config.slowdown_scale if slow >= config.min_points else 1.0
    horizon = config.time_before_collision
    steps = max(
        abs(v) * horizon / config.approach_linear_resolution,
        abs(w) * horizon / config.approach_angular_resolution,
    )
    samples = int(min(max(math.ceil(steps), 1), config.approach_max_samples))
    poses = []
    for k in range(samples + 1):
        t = horizon * k / samples
        yaw = w * t
        if abs(w) > 1e-9:
            poses.append((t, v / w * math.sin(yaw), v / w * (1 - math.cos(yaw)), yaw))
        else:
            poses.append((t, v * t, 0.0, yaw))
    reach = max(math.hypot(x, y) for x, y in config.footprint) + 1e-6
    radius = v / w if abs(w * horizon) > 1e-6 else math.inf
    hits = []
    for x, y in points:
        # Broad phase: near the path of base_link's origin (for an arc: near the turning
        # circle and within the disc that holds the arc), as the gate does.
        if abs(v) <= 1e-9:
            near = math.hypot(x, y) <= reach
        elif math.isinf(radius):
            lo, hi = min(0.0, v * horizon), max(0.0, v * horizon)
            near = math.hypot(x - min(max(x, lo), hi), y) <= reach
        else:
            ring = abs(math.hypot(x, y - radius) - abs(radius))
            near = ring <= reach and math.hypot(x, y) <= abs(v) * horizon + reach
        if not near:
            continue
        for t, px, py, yaw in poses:
            dx, dy = x - px, y - py
            lx = math.cos(yaw) * dx + math.sin(yaw) * dy
            ly = -math.sin(yaw) * dx + math.cos(yaw) * dy
            if _inside(lx, ly, config.footprint):
                hits.append(t)
                break
    hits.sort()
    if len(hits) >= config.min_points:
        scale = min(scale, hits[config.min_points - 1] / horizon)
    cap = config.speed_cap
    if abs(v) * scale > cap:
        scale = cap / abs(v)
    return scale


# ---- timing ----------------------------------------------------------------------------------


def _time_gate(scan: LaserScanData, repeats: int) -> tuple[float, float]:
    """Median seconds per gate step, and the speed scale it decided."""
    gate = SafetyGate(CONFIG)
    v, w = COMMAND
    now = scan.stamp
    gate.update_scan(scan)
    gate.update_command(VelocityCommand(v, w, now))
    gate.step(now)  # start the acceleration clock
    times = []
    scale = math.nan
    for k in range(repeats):
        now = scan.stamp + 1e-4 * (k + 1)
        start = time.perf_counter()
        gate.update_scan(scan)
        gate.update_command(VelocityCommand(v, w, now))
        out = gate.step(now)
        times.append(time.perf_counter() - start)
        scale = out.status.speed_scale
    return statistics.median(times), scale


def _time_python(scan: LaserScanData, repeats: int) -> tuple[float, float]:
    times = []
    scale = math.nan
    for _ in range(repeats):
        start = time.perf_counter()
        scale = python_gate_scale(scan, CONFIG, *COMMAND)
        times.append(time.perf_counter() - start)
    return statistics.median(times), scale


def _check_same(beams: int, fast: float, slow: float) -> None:
    if not math.isclose(fast, slow, abs_tol=1e-6):
        raise RuntimeError(f"{beams} beams: gate scale {fast} != Python baseline {slow}")


def run() -> dict[str, Any]:
    scan360 = street_scan(360, 0.0)
    scan720 = street_scan(720, 0.0)
    gate360, scale360 = _time_gate(scan360, 400)
    base360, py_scale360 = _time_python(scan360, 15)
    _check_same(360, scale360, py_scale360)
    gate720, scale720 = _time_gate(scan720, 400)
    base720, py_scale720 = _time_python(scan720, 10)
    _check_same(720, scale720, py_scale720)
    return {
        "name": "safety_gate",
        "metrics": {
            "safety_gate_scan_360_us": {
                "value": round(gate360 * 1e6, 1),
                "unit": "us",
                "baseline": round(base360 * 1e6, 1),
                "target": "<= 4500",
            },
            "safety_scan_ms_720": {
                "value": round(gate720 * 1e3, 4),
                "unit": "ms",
                "baseline": round(base720 * 1e3, 3),
                "target": "<= 0.5",
            },
            "safety_vs_python_ratio": {
                "value": round(gate720 / base720, 4),
                "unit": "ratio",
                "baseline": 1.0,
                "target": "<= 0.05",
            },
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

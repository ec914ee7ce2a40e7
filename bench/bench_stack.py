"""The whole stack (`delivery-sim`): 5 robots through an 8-hour shop day in town.

Runs `delivery-sim --robots 5 --duration 8h --start 10:00 --seed 1` (~150 orders: the lunch
peak and the start of the dinner peak) exactly as `make sim` runs, every process real: the
simulator and simulated people, the coordinator with the shop API off, and one process per
robot with navigation, safety_monitor, handoff and mission_executor, in lockstep on the
simulator's clock. Metrics:
- `stack_speedup_5robots`: simulated seconds per wall second of the run; baseline 1.0 (real
  time, what a Gazebo or hardware run gets).
- `stack_peak_rss_mb`: the sum of every process's peak resident memory (VmHWM); baseline: the
  same number of bare rclpy processes (Python + rclpy + one node), measured in this run - the
  floor any stack of that many rclpy processes pays.
Extras for context: the day's delivery KPIs, CPU seconds per process, and how long the
simulator waited for the robots.

A full day takes a while (the speed-up times 8 h); BENCH_STACK_DURATION (e.g. 1h) shortens it
for a quick look, and the result says which duration was run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROBOTS = 5
DURATION = os.environ.get("BENCH_STACK_DURATION", "8h")
BARE_NODE = """
import rclpy, time, sys
rclpy.init()
node = rclpy.create_node("bare")
time.sleep(1.0)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) / 1024.0)
node.destroy_node(); rclpy.shutdown()
"""


def bare_rclpy_rss_mb() -> float:
    out = subprocess.run([sys.executable, "-c", BARE_NODE], capture_output=True, text=True,
                         timeout=60, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_stack_") as tmp:
        workdir = Path(tmp) / "run"
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "delivery_robot.nodes.delivery_sim", "--robots", str(ROBOTS),
             "--duration", DURATION, "--start", "10:00", "--seed", "1", "--port", "0",
             "--progress", "60", "--workdir", str(workdir)],
            capture_output=True, text=True, timeout=6 * 3600, check=False)
        wall = time.monotonic() - started
        if result.returncode != 0:
            raise RuntimeError(f"delivery-sim failed ({result.returncode}):\n"
                               f"{(result.stdout + result.stderr)[-3000:]}")
        report = json.loads((workdir / "report.json").read_text())
    processes = len([k for k in report["peak_rss_mb"] if k != "total"])
    bare = bare_rclpy_rss_mb()
    kpis = {k: report[k] for k in ("orders", "delivered", "failed", "cancelled", "open",
                                   "mean_delivery_s", "p95_delivery_s", "on_time_rate",
                                   "deliveries_per_robot_hour", "distance_m", "safety_stops",
                                   "collisions", "dispatch_p95_ms")}
    return {"name": "stack", "metrics": {
        "stack_speedup_5robots": {
            "value": report["speedup"], "unit": "x", "baseline": 1.0, "target": ">= 10"},
        "stack_peak_rss_mb": {
            "value": report["peak_rss_mb"]["total"], "unit": "MB",
            "baseline": round(bare * processes, 1),
            "target": f"info (baseline: {processes} bare rclpy processes)"},
        "stack_sim_seconds": {
            "value": report["sim_seconds"], "unit": "s", "baseline": None,
            "target": f"info (--duration {DURATION}; wall {wall:.0f} s with start-up)"},
        "stack_day_kpis": {
            "value": report["delivered"], "unit": "delivered", "baseline": report["orders"],
            "target": "info: " + json.dumps(kpis, sort_keys=True)},
        "stack_cpu_seconds": {
            "value": round(sum(report["cpu_seconds_running"].values()), 1), "unit": "s",
            "baseline": None,
            "target": "info: " + json.dumps(report["cpu_seconds_running"], sort_keys=True)
                      + "; lockstep " + json.dumps(report["lockstep"], sort_keys=True)},
    }}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

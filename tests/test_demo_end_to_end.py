"""`delivery-sim` (make sim) end to end: coordinator, fleet simulator and every robot's nodes
in their own processes deliver orders through the whole lifecycle, with robots that drive.

One short scenario (2 robots, a few simulated minutes, busy shops, quick people, every
recipient mistyping the PIN first) runs once for the module; the tests read its output.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from typing import Any

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

LIFECYCLE = ["requested", "assigned", "to_pickup", "awaiting_load", "in_transit",
             "awaiting_recipient", "delivered"]
MAX_SPEED = 2.0  # m/s, the simulator's kinematic limit


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("delivery_sim")
    report = workdir / "copy_of_report.json"
    result = subprocess.run(
        [sys.executable, "-m", "delivery_robot.nodes.delivery_sim", "--robots", "2",
         "--duration", "8m", "--last-call", "5m", "--seed", "2", "--orders-per-hour", "10",
         "--no-show-rate", "0", "--wrong-pin-rate", "1", "--port", "0", "--verbose",
         "--workdir", str(workdir), "--report", str(report),
         "--set", "people.people.load_delay_s=20", "--set", "people.people.handoff_delay_s=20"],
        capture_output=True, text=True, timeout=400, check=False)
    return {"result": result, "workdir": workdir, "report_path": report,
            "output": result.stdout + result.stderr}


@pytest.mark.timeout(450)
def test_the_run_ends_with_a_kpi_table_and_a_json_report(run: dict[str, Any]) -> None:
    result = run["result"]
    assert result.returncode == 0, run["output"][-4000:]
    assert "Traceback" not in run["output"]
    assert "KPIs: town, 2 robots, seed 2" in result.stdout
    assert "JSON report: " in result.stdout
    report = json.loads(run["report_path"].read_text())
    assert report == json.loads((run["workdir"] / "report.json").read_text())
    for key in ("orders", "delivered", "failed", "cancelled", "mean_delivery_s",
                "p95_delivery_s", "on_time_rate", "deliveries_per_robot_hour", "distance_m",
                "safety_stops", "dispatch_p95_ms", "sim_seconds", "wall_seconds", "speedup"):
        assert key in report
    assert report["sim_seconds"] == pytest.approx(480.0)
    assert report["orders"] >= 2
    assert report["delivered"] >= 1, run["output"][-4000:]
    assert report["collisions"] == 0
    assert report["watchdog_stops"] == 0  # lockstep: no robot saw a stale scan
    assert report["speedup"] > 1.0
    assert report["lockstep"]["timeouts"] == {}


@pytest.mark.timeout(450)
def test_delivered_orders_went_through_the_whole_lifecycle(run: dict[str, Any]) -> None:
    transitions: dict[str, list[str]] = {}
    for line in run["result"].stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0].startswith("[") and words[1].startswith("ord"):
            transitions.setdefault(words[1], []).append(words[2])
    delivered = [o for o, states in transitions.items() if states[-1] == "delivered"]
    assert delivered, run["output"][-4000:]
    for order in delivered:
        assert transitions[order] == LIFECYCLE, (order, transitions[order])


@pytest.mark.timeout(450)
def test_the_people_acted_and_recipients_mistyped_first(run: dict[str, Any]) -> None:
    report = json.loads(run["report_path"].read_text())
    people = report["people"]
    assert people["loads"] >= report["delivered"]
    assert people["handoffs"] == report["delivered"]
    assert people["wrong_pins"] >= 2 * people["handoffs_pin"]  # two wrong PINs before a PIN
    assert people["no_shows"] == 0


@pytest.mark.timeout(450)
def test_robots_really_drive_no_teleporting(run: dict[str, Any]) -> None:
    report = json.loads(run["report_path"].read_text())
    assert max(report["distance_by_robot_m"].values()) > 30.0
    with open(run["workdir"] / "trajectories.csv") as handle:
        rows = [[float(v) for v in row] for row in list(csv.reader(handle))[1:]]
    assert len(rows) >= 400  # a pose a second
    for before, after in zip(rows, rows[1:], strict=False):
        dt = after[0] - before[0]
        for robot in range(2):
            x0, y0 = before[1 + 3 * robot:3 + 3 * robot]
            x1, y1 = after[1 + 3 * robot:3 + 3 * robot]
            assert math.hypot(x1 - x0, y1 - y0) <= MAX_SPEED * dt + 1e-6

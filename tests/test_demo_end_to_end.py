"""`delivery-sim` (the demo behind `make sim`): the coordinator and demo robots, each its own
process, deliver every order through the whole lifecycle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def run_sim(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "delivery_robot.nodes.demo_sim", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_every_order_goes_through_the_lifecycle_to_delivered(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = run_sim("--robots", "2", "--orders", "3", "--time-scale", "200", "--port", "0",
                     "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(report.read_text())
    assert summary["delivered"] == 3
    assert summary["failed_or_cancelled"] == 0
    lines = [line.split() for line in result.stdout.splitlines()]
    status_lines = [words for words in lines if len(words) >= 4 and words[1] == "s"
                    and words[2].startswith("ord")]
    order_ids = sorted({words[2] for words in status_lines})
    assert len(order_ids) == 3, result.stdout
    for order_id in order_ids:
        states = [words[3] for words in status_lines if words[2] == order_id]
        assert states == ["requested", "assigned", "to_pickup", "awaiting_load", "in_transit",
                          "awaiting_recipient", "delivered"], (order_id, result.stdout)
    robots = {words[-1] for words in status_lines if words[3] == "delivered"}
    assert robots == {"robot1", "robot2"}, "both robots should have delivered"


def test_bad_arguments_get_a_clear_error_not_a_traceback() -> None:
    result = run_sim("--robots", "0", timeout=30.0)
    assert result.returncode == 2
    assert "--robots must be between 1 and 10" in result.stderr
    assert "Traceback" not in result.stderr

"""`delivery-sim` (make sim): its flags, clear errors, and a clean stop on Ctrl-C.

The end-to-end run that delivers orders is tests/test_demo_end_to_end.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from delivery_robot.nodes.delivery_sim import build_parser, make_scenario, parse_duration

MODULE = "delivery_robot.nodes.delivery_sim"


def run_sim(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", MODULE, *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.parametrize(("args", "message"), [
    (["--robots", "0"], "--robots must be between 1 and 10"),
    (["--robots", "11"], "--robots must be between 1 and 10"),
    (["--duration", "soon"], "not a duration: 'soon'"),
    (["--duration", "0s"], "--duration must be longer than 0 s"),
    (["--world", "mars"], "invalid choice: 'mars'"),
    (["--start", "25:00"], "clock time must be 00:00..23:59"),
    (["--speed", "0"], "--speed must be > 0"),
    (["--no-show-rate", "1.5"], "--no-show-rate must be within 0..1"),
    (["--port", "70000"], "--port must be 0..65535"),
    (["--set", "bogus"], "use SECTION.KEY=VALUE"),
    (["--set", "nodes.navigation=3"], "use nodes.<node>.<parameter>=VALUE"),
    (["--realtime", "--speed", "2"], "not allowed with argument"),
    (["--scenario", "/nonexistent/scenario.yaml"], "cannot read the scenario"),
    (["--set", "sim.step_s=fast", "--port", "0"], "step_s"),
    (["--set", "people.people.qr_share=2", "--port", "0"], "qr_share must be within 0..1"),
])
def test_bad_flags_give_one_clear_line_and_exit_code_2(args: list[str], message: str) -> None:
    result = run_sim(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_flags() -> None:
    result = run_sim("--help")
    assert result.returncode == 0
    for flag in ("--world", "--robots", "--duration", "--seed", "--realtime", "--port",
                 "--report", "--set", "--verbose"):
        assert flag in result.stdout


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800.0
    assert parse_duration("8h") == 28800.0
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("90s") == 90.0
    assert parse_duration("90") == 90.0
    assert parse_duration(2.5) == 2.5
    for bad in ("", "h", "1d", "-5m", "3 hours"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_flags_override_the_scenario_file() -> None:
    args = build_parser().parse_args([
        "--robots", "5", "--duration", "8h", "--start", "10:00", "--seed", "9",
        "--realtime", "--orders-per-hour", "2.5", "--set", "sim.step_s=0.05",
        "--set", "nodes.navigation.control_rate_hz=20"])
    scenario = make_scenario(args)
    assert (scenario.robots, scenario.duration_s, scenario.day_start, scenario.seed) == (
        5, 28800.0, "10:00", 9)
    assert scenario.real_time_factor == 1.0
    assert scenario.orders_until_s == 28800.0 - 600.0  # the default last call: 10 min
    assert scenario.people["orders_per_shop_hour"] == 2.5
    assert scenario.sim["step_s"] == 0.05
    assert scenario.nodes["navigation"]["control_rate_hz"] == 20
    defaults = make_scenario(build_parser().parse_args([]))
    assert (defaults.world, defaults.robots, defaults.duration_s) == ("town", 3, 1800.0)
    assert defaults.real_time_factor == 0.0
    assert defaults.sim["lockstep"] is True


@pytest.mark.ros
@pytest.mark.slow
def test_ctrl_c_stops_every_process_and_prints_a_partial_report(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", MODULE, "--robots", "2", "--duration", "2h", "--port", "0",
         "--workdir", str(workdir), "--progress", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.lstrip().startswith("sim ") and "sim 00:00:00" not in line:
            break  # the clock runs
    else:
        process.kill()
        pytest.fail("delivery-sim did not start running:\n" + "".join(lines))
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60.0)
    output = "".join(lines) + out
    assert process.returncode == 130, output
    assert "INTERRUPTED: partial" in output
    report = json.loads((workdir / "report.json").read_text())
    assert report["interrupted"] is True
    assert 0.0 < report["sim_seconds"] < 7200.0
    # No process of the run is left (they all had the work dir on their command line).
    left = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True,
                          check=False)
    assert left.stdout.strip() == "", left.stdout

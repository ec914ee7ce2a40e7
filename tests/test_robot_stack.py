"""robot_stack: one robot's nodes composed in one process, each with only its own parameters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ros_harness import SpinningExecutor

from delivery_robot.nodes.robot_stack import (
    build_nodes,
    drop_qos_event_handlers,
    node_parameters,
    restore_qos_event_handlers,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"


def test_node_parameters_takes_only_the_nodes_sections_and_flattens(tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    a: 1\n    group:\n      b: 2.5\n"
        "navigation:\n  ros__parameters:\n    c: x\n"
        "/robot1/navigation:\n  ros__parameters:\n    d: [1, 2]\n"
        "/robot2/navigation:\n  ros__parameters:\n    e: no\n"
        "other:\n  ros__parameters:\n    f: 3\n")
    assert node_parameters(params, "navigation", "robot1") == {
        "a": 1, "group.b": 2.5, "c": "x", "d": [1, 2]}
    assert node_parameters(params, "other", "") == {"a": 1, "group.b": 2.5, "f": 3}
    assert node_parameters(None, "navigation", "robot1") == {}


def spec(**extra: Any) -> dict[str, Any]:
    return {"namespace": "robot7", "nodes": [
        {"name": "navigation", "module": "delivery_robot.nodes.navigation",
         "class": "NavigationNode", "params_file": str(CONFIG / "navigation.yaml"),
         "parameters": {"use_sim_time": True, "route_graph_file": str(
             CONFIG / "worlds" / "town.yaml"), "control_rate_hz": 10.0}},
        {"name": "safety_monitor", "module": "delivery_robot.nodes.safety_monitor",
         "class": "SafetyMonitorNode", "params_file": str(CONFIG / "safety.yaml"),
         "parameters": {"use_sim_time": True, "laser_pose": [0.15, 0.0, 0.0]}},
    ], **extra}


@pytest.mark.ros
def test_nodes_get_their_own_parameters_one_clock_and_no_parameter_services(
    ros_executor: SpinningExecutor,
) -> None:
    nodes = build_nodes(spec(), context=ros_executor.context)
    for node in nodes:
        ros_executor.add(node)
    navigation, safety = nodes
    assert navigation.get_namespace() == "/robot7"
    assert navigation.control_rate_hz == 10.0
    assert navigation.get_parameter("max_speed").value == 1.5  # from navigation.yaml
    assert safety.config.laser_pose.x == pytest.approx(0.15)  # the spec's override
    assert not safety.has_parameter("max_speed")  # navigation's key never reached it
    clock_subs = [s for n in nodes for s in n.subscriptions if s.topic_name == "/clock"]
    assert len(clock_subs) == 1
    assert not any("parameter" in s.srv_name for n in nodes for s in n.services)
    before = sum(len(list(n.waitables)) for n in nodes)
    dropped = drop_qos_event_handlers(nodes)
    assert dropped
    assert sum(len(list(n.waitables)) for n in nodes) == before - len(dropped)
    restore_qos_event_handlers(dropped)  # destroy_node expects them back
    assert sum(len(list(n.waitables)) for n in nodes) == before


def test_a_bad_spec_or_parameter_ends_with_one_line_and_code_2(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "delivery_robot.nodes.robot_stack", *args],
                              capture_output=True, text=True, timeout=60, check=False)

    result = run("--spec-json", "{not json")
    assert result.returncode == 2
    assert "cannot read the spec" in result.stderr
    bad = spec()
    bad["nodes"][1]["parameters"]["min_points"] = "many"
    result = run("--spec-json", json.dumps(bad))
    assert result.returncode == 2, result.stderr
    assert "[robot7] cannot start" in result.stderr
    assert "Traceback" not in result.stderr

"""What the launch files compute (delivery_robot.launch_support): robot ids, start poses, the
per-robot robot description and its Gazebo topics."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from delivery_robot.launch_support import (
    LaunchSetupError,
    gz_endpoints,
    namespaced_description,
    robot_ids,
    start_poses,
)
from delivery_robot.route_graph import load_route_graph

ROOT = Path(__file__).resolve().parents[1]
URDF = (ROOT / "urdf" / "delivery_robot.urdf").read_text(encoding="utf-8")


def test_robot_ids() -> None:
    assert robot_ids(3) == ["robot1", "robot2", "robot3"]
    with pytest.raises(LaunchSetupError, match=">= 1"):
        robot_ids(0)


def test_start_poses_are_the_depot_and_chargers_in_order() -> None:
    route = load_route_graph(ROOT / "config" / "worlds" / "town.yaml", validate=False)
    starts = start_poses(route, 3)
    assert [s.waypoint for s in starts] == ["depot", "charger_1", "charger_2"]
    depot = route.waypoint("depot")
    assert (starts[0].x, starts[0].y, starts[0].yaw) == (depot.x, depot.y, depot.yaw)
    with pytest.raises(LaunchSetupError, match="not enough for 4 robots"):
        start_poses(route, 4)


def test_start_poses_match_the_headless_simulators_rule() -> None:
    """fleet_sim's default start waypoints are the depot/charger waypoints in file order too;
    the launch files pass them explicitly, but both must agree for runs without them."""
    from delivery_robot.nodes.fleet_sim import START_KINDS

    route = load_route_graph(ROOT / "config" / "worlds" / "apartment.yaml", validate=False)
    expected = [w.name for w in route.waypoints.values() if w.kind in START_KINDS]
    assert [s.waypoint for s in start_poses(route, len(expected))] == expected


def test_namespaced_description_moves_every_gazebo_topic_into_the_namespace() -> None:
    text = namespaced_description(URDF, "robot2")
    topics = sorted(e.topic for e in gz_endpoints(text))
    assert topics == sorted([
        "/robot2/cmd_vel_safe", "/robot2/odom", "/robot2/tf", "/robot2/joint_states",
        "/robot2/scan", "/robot2/camera/image_raw", "/robot2/camera/camera_info"])
    # The kinematic tree robot_state_publisher reads is unchanged.
    before, after = ET.fromstring(URDF), ET.fromstring(text)
    assert [(j.get("name"), j.find("origin").attrib) for j in before.iter("joint")] == [
        (j.get("name"), j.find("origin").attrib) for j in after.iter("joint")]
    assert namespaced_description(text, "robot2") == text  # absolute topics stay


def test_gz_endpoints_of_the_robot_model() -> None:
    by_topic = {e.topic: e for e in gz_endpoints(URDF)}
    assert by_topic["cmd_vel_safe"].direction == "in"
    assert by_topic["cmd_vel_safe"].gz_type == "gz.msgs.Twist"
    assert by_topic["scan"].gz_type == "gz.msgs.LaserScan"
    assert by_topic["camera/camera_info"].gz_type == "gz.msgs.CameraInfo"
    assert {e.direction for t, e in by_topic.items() if t != "cmd_vel_safe"} == {"out"}


def test_bad_descriptions_and_namespaces_are_refused() -> None:
    with pytest.raises(LaunchSetupError, match="namespace"):
        namespaced_description(URDF, "robot 1")
    with pytest.raises(LaunchSetupError, match="not well-formed"):
        gz_endpoints("<robot>")
    unknown = URDF.replace("gz::sim::systems::JointStatePublisher", "gz::sim::systems::Imu")
    with pytest.raises(LaunchSetupError, match="unknown"):
        gz_endpoints(unknown)
    no_topic = URDF.replace("<topic>scan</topic>", "")
    with pytest.raises(LaunchSetupError, match="set <topic>"):
        gz_endpoints(no_topic)

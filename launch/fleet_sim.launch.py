"""The headless fleet simulator under ros2 launch: no Gazebo, no Nav2, runs on a laptop.

    ros2 launch delivery_robot fleet_sim.launch.py world:=town robots:=3

fleet_sim (one node for every robot: odom, scan, battery, compartment, e-stop, /clock) stands
in for Gazebo and the base drivers; each robot runs the robot stack of robot.launch.py in
/<robot_id> with base:=none (the simulator provides the base), no camera node and the builtin
navigation backend; the coordinator serves the shop API and tablet on http_port. Everything but
fleet_sim follows fleet_sim's /clock (use_sim_time). Robots start at the world's depot and
charger waypoints (delivery_robot.launch_support.start_poses), which fleet_sim, navigation's
odom_to_map and the coordinator all agree on.
"""

import os
import secrets

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from delivery_robot.launch_support import robot_ids, start_poses
from delivery_robot.route_graph import load_route_graph
from launch import LaunchDescription

PACKAGE = "delivery_robot"
WORLDS = ["town", "apartment"]


def launch_setup(context):
    share = get_package_share_directory(PACKAGE)
    world = LaunchConfiguration("world").perform(context)
    robots_text = LaunchConfiguration("robots").perform(context)
    try:
        count = int(robots_text)
    except ValueError:
        raise ValueError(f"launch argument robots: a number, got {robots_text!r}") from None
    try:
        real_time_factor = float(LaunchConfiguration("real_time_factor").perform(context))
    except ValueError:
        raise ValueError("launch argument real_time_factor: a number (0 = as fast as "
                         "possible)") from None
    ids = robot_ids(count)
    route = load_route_graph(os.path.join(share, "config", "worlds", f"{world}.yaml"),
                             validate=False)
    starts = start_poses(route, count)
    # One key for the coordinator and every handoff node of this run (never a fixed one).
    secret = LaunchConfiguration("handoff_secret").perform(context) or secrets.token_urlsafe(32)

    actions = [
        Node(
            package=PACKAGE, executable="fleet_sim", name="fleet_sim",
            parameters=[
                os.path.join(share, "config", "fleet_sim.yaml"),
                {"world": world, "robot_ids": ids,
                 "start_waypoints": [start.waypoint for start in starts],
                 "real_time_factor": real_time_factor},
            ],
            output="screen",
        ),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "coordinator.launch.py")),
            launch_arguments={
                "world": world, "robots": str(count), "use_sim_time": "true",
                "allow_demo_tokens": LaunchConfiguration("allow_demo_tokens").perform(context),
                "http_port": LaunchConfiguration("http_port").perform(context),
                "handoff_secret": secret,
            }.items(),
        ),
    ]
    for robot_id, start in zip(ids, starts, strict=True):
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "robot.launch.py")),
            launch_arguments={
                "robot_id": robot_id, "base": "none", "camera": "none",
                "nav_backend": "builtin", "world": world, "use_sim_time": "true",
                "odom_to_map": f"{start.x},{start.y},{start.yaw}",
                "start_waypoint": start.waypoint,
                "handoff_secret": secret,
            }.items(),
        ))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "world", default_value="town", choices=WORLDS,
            description="World: config/worlds/<world>.yaml and the SDF it names"),
        DeclareLaunchArgument(
            "robots", default_value="3",
            description="Number of robots (robot1 .. robotN), at most the world's depot and "
                        "charger waypoints"),
        DeclareLaunchArgument(
            "real_time_factor", default_value="1.0",
            description="Sim seconds per wall second (1 = real time for a person watching the "
                        "tablet, 0 = as fast as possible)"),
        DeclareLaunchArgument(
            "http_port", default_value="8080",
            description="Shop HTTP API and tablet port of the coordinator (0 = off)"),
        DeclareLaunchArgument(
            "allow_demo_tokens", default_value="true", choices=["true", "false"],
            description="Accept the public DEMO shop tokens (config/demo_tokens.yaml)"),
        DeclareLaunchArgument(
            "handoff_secret",
            default_value=EnvironmentVariable("DELIVERY_ROBOT_HANDOFF_SECRET", default_value=""),
            description="Key shared by the coordinator and the robots' handoff nodes; empty: "
                        "a random key for this run"),
        OpaqueFunction(function=launch_setup),
    ])

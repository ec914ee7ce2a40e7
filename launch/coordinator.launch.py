"""The fleet coordinator server: order store, dispatch, and the shop HTTP API / tablet in the
same process (docs/architecture.md, "Coordinator").

    ros2 launch delivery_robot coordinator.launch.py robots:=3 \
        database_path:=/var/lib/delivery/orders.db

Parameters: share/delivery_robot/config/coordinator.yaml, then these arguments. The tablet and
shop API listen on http_port (0 = off). The shipped config/shop_api.yaml holds the DEMO tokens'
hashes: the coordinator refuses them unless allow_demo_tokens:=true (local trials only).
Included by gazebo_sim.launch.py and fleet_sim.launch.py with use_sim_time:=true.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from delivery_robot.launch_support import robot_ids
from launch import LaunchDescription

PACKAGE = "delivery_robot"
WORLDS = ["town", "apartment"]


def _flag(context, name):
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}: must be true or false, got {value!r}")
    return value == "true"


def launch_setup(context):
    share = get_package_share_directory(PACKAGE)
    robots_text = LaunchConfiguration("robots").perform(context)
    try:
        count = int(robots_text)
    except ValueError:
        raise ValueError(f"launch argument robots: a number, got {robots_text!r}") from None
    try:
        http_port = int(LaunchConfiguration("http_port").perform(context))
    except ValueError:
        raise ValueError("launch argument http_port: a port number (0 = API off)") from None
    overrides = {
        "world": LaunchConfiguration("world").perform(context),
        "robot_ids": robot_ids(count),
        "http_port": http_port,
        "allow_demo_tokens": _flag(context, "allow_demo_tokens"),
        "handoff_secret": LaunchConfiguration("handoff_secret").perform(context),
        "use_sim_time": _flag(context, "use_sim_time"),
    }
    database = LaunchConfiguration("database_path").perform(context)
    if database:
        overrides["database_path"] = database
    return [
        Node(
            package=PACKAGE, executable="coordinator", name="coordinator",
            parameters=[os.path.join(share, "config", "coordinator.yaml"), overrides],
            output="screen",
        ),
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "world", default_value="town", choices=WORLDS,
            description="Route graph the coordinator dispatches on: config/worlds/<world>.yaml"),
        DeclareLaunchArgument(
            "robots", default_value="2",
            description="Number of robots known in advance: robot1 .. robotN (more are "
                        "discovered from their robot_state)"),
        DeclareLaunchArgument(
            "database_path", default_value="",
            description="SQLite order store; empty: coordinator.yaml's value (relative to the "
                        "working directory). The same file after a restart resumes the orders"),
        DeclareLaunchArgument(
            "http_port", default_value="8080",
            description="Shop HTTP API and tablet port (0 = off)"),
        DeclareLaunchArgument(
            "allow_demo_tokens", default_value="false", choices=["true", "false"],
            description="Accept config/shop_api.yaml's public DEMO tokens (never on a fleet)"),
        DeclareLaunchArgument(
            "handoff_secret",
            default_value=EnvironmentVariable("DELIVERY_ROBOT_HANDOFF_SECRET", default_value=""),
            description="Key (>= 32 characters) shared with every robot's handoff node; "
                        "default: $DELIVERY_ROBOT_HANDOFF_SECRET (empty: a random key, QR codes "
                        "then stop verifying after a restart)"),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", choices=["true", "false"],
            description="Follow /clock (true in simulation)"),
        OpaqueFunction(function=launch_setup),
    ])

"""The fleet in Gazebo Harmonic with Nav2: what engineers run on a ROS 2 Jazzy machine.

    ros2 launch delivery_robot gazebo_sim.launch.py world:=town robots:=2
    ros2 launch delivery_robot gazebo_sim.launch.py world:=apartment headless:=true

Starts (docs/gazebo.md has the set-up and what to expect):
- gz sim with gazebo_worlds/<world>.sdf (ros_gz_sim's gz_sim.launch.py; headless: server only,
  sensors rendered off-screen) and a world bridge for /clock (config/gz_bridge_world.yaml);
- per robot robotN (N = 1 .. robots), in namespace /robotN, standing on the world's depot and
  charger waypoints (delivery_robot.launch_support.start_poses):
  - the robot model urdf/delivery_robot.urdf with its Gazebo topics moved into /robotN
    (launch_support.namespaced_description), spawned by ros_gz_sim `create`, and
    robot_state_publisher for its fixed frames and wheels;
  - ros_gz_bridge with config/gz_bridge.yaml (cmd_vel_safe, odom, tf, joint_states, scan,
    camera) in /robotN with expand_gz_topic_names;
  - Nav2 (map_server with config/maps/<world>.yaml, amcl starting at the spawn pose, planner,
    controller, smoother, behaviors, velocity smoother, bt_navigator, waypoint follower, two
    lifecycle managers) with config/nav2_params.yaml;
  - our robot stack (robot.launch.py: base:=sim, camera:=none, nav_backend:=nav2): navigation
    hands our route to Nav2; Nav2's velocity ends on cmd_vel -> safety_monitor -> cmd_vel_safe
    -> bridge -> Gazebo's DiffDrive;
- the coordinator with the shop API / tablet on http_port (coordinator.launch.py).
Every ROS node here uses simulation time (/clock from Gazebo).
"""

import os
import secrets

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node
from nav2_common.launch import ReplaceString

from delivery_robot.launch_support import namespaced_description, robot_ids, start_poses
from delivery_robot.route_graph import load_route_graph
from launch import LaunchDescription

PACKAGE = "delivery_robot"
WORLDS = ["town", "apartment"]
NAV_BACKENDS = ["nav2", "builtin"]
SPAWN_Z = 0.02  # m: drop the robot onto the ground instead of spawning it inside it
TF_REMAPS = [("/tf", "tf"), ("/tf_static", "tf_static")]  # one tf tree per robot namespace


def _flag(context, name):
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}: must be true or false, got {value!r}")
    return value == "true"


def nav2_nodes(robot_id, map_yaml, start):
    """The Nav2 nodes of one robot, in its namespace, on simulation time; costmap topics in
    nav2_params.yaml are absolute, so <robot_namespace> is replaced per robot."""
    params_file = ReplaceString(
        source_file=os.path.join(get_package_share_directory(PACKAGE), "config",
                                 "nav2_params.yaml"),
        replacements={"<robot_namespace>": f"/{robot_id}"},
    )
    sim_time = {"use_sim_time": True}
    return [
        Node(
            package="nav2_map_server", executable="map_server", name="map_server",
            namespace=robot_id, output="screen", remappings=TF_REMAPS,
            parameters=[params_file, {"yaml_filename": map_yaml, **sim_time}],
        ),
        Node(
            package="nav2_amcl", executable="amcl", name="amcl",
            namespace=robot_id, output="screen", remappings=TF_REMAPS,
            parameters=[params_file, {"initial_pose.x": start.x, "initial_pose.y": start.y,
                                      "initial_pose.yaw": start.yaw, **sim_time}],
        ),
        Node(
            package="nav2_lifecycle_manager", executable="lifecycle_manager",
            name="lifecycle_manager_localization", namespace=robot_id, output="screen",
            parameters=[params_file, sim_time],
        ),
        Node(
            package="nav2_controller", executable="controller_server",
            name="controller_server", namespace=robot_id, output="screen",
            remappings=[*TF_REMAPS, ("cmd_vel", "cmd_vel_nav")],
            parameters=[params_file, sim_time],
        ),
        Node(
            package="nav2_smoother", executable="smoother_server", name="smoother_server",
            namespace=robot_id, output="screen", remappings=TF_REMAPS,
            parameters=[params_file, sim_time],
        ),
        Node(
            package="nav2_planner", executable="planner_server", name="planner_server",
            namespace=robot_id, output="screen", remappings=TF_REMAPS,
            parameters=[params_file, sim_time],
        ),
        Node(
            package="nav2_behaviors", executable="behavior_server", name="behavior_server",
            namespace=robot_id, output="screen",
            remappings=[*TF_REMAPS, ("cmd_vel", "cmd_vel_nav")],
            parameters=[params_file, sim_time],
        ),
        # The end of Nav2's velocity chain is our cmd_vel, which safety_monitor gates.
        Node(
            package="nav2_velocity_smoother", executable="velocity_smoother",
            name="velocity_smoother", namespace=robot_id, output="screen",
            remappings=[*TF_REMAPS, ("cmd_vel", "cmd_vel_nav"), ("cmd_vel_smoothed", "cmd_vel")],
            parameters=[params_file, sim_time],
        ),
        Node(
            package="nav2_bt_navigator", executable="bt_navigator", name="bt_navigator",
            namespace=robot_id, output="screen", remappings=TF_REMAPS,
            parameters=[params_file, sim_time],
        ),
        Node(
            package="nav2_waypoint_follower", executable="waypoint_follower",
            name="waypoint_follower", namespace=robot_id, output="screen",
            remappings=TF_REMAPS,
            parameters=[params_file, sim_time],
        ),
        Node(
            package="nav2_lifecycle_manager", executable="lifecycle_manager",
            name="lifecycle_manager_navigation", namespace=robot_id, output="screen",
            parameters=[params_file, sim_time],
        ),
    ]


def launch_setup(context):
    share = get_package_share_directory(PACKAGE)
    world = LaunchConfiguration("world").perform(context)
    headless = _flag(context, "headless")
    nav_backend = LaunchConfiguration("nav_backend").perform(context)
    robots_text = LaunchConfiguration("robots").perform(context)
    try:
        count = int(robots_text)
    except ValueError:
        raise ValueError(f"launch argument robots: a number, got {robots_text!r}") from None
    ids = robot_ids(count)
    route = load_route_graph(os.path.join(share, "config", "worlds", f"{world}.yaml"),
                             validate=False)
    starts = start_poses(route, count)
    world_sdf = os.path.join(share, "gazebo_worlds", f"{world}.sdf")
    map_yaml = os.path.join(share, "config", "maps", f"{world}.yaml")
    with open(os.path.join(share, "urdf", "delivery_robot.urdf"), encoding="utf-8") as urdf:
        robot_urdf = urdf.read()
    # One key for the coordinator and every handoff node of this run (never a fixed one).
    secret = LaunchConfiguration("handoff_secret").perform(context) or secrets.token_urlsafe(32)
    # -r: run at once; headless: server only, cameras and lidars rendered off-screen (EGL).
    gz_args = f"-r -v 3 {'-s --headless-rendering ' if headless else ''}{world_sdf}"

    actions = [
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(
                get_package_share_directory("ros_gz_sim"), "launch", "gz_sim.launch.py")),
            launch_arguments={"gz_args": gz_args, "on_exit_shutdown": "true"}.items(),
        ),
        Node(
            package="ros_gz_bridge", executable="parameter_bridge", name="gz_bridge_world",
            output="screen",
            parameters=[{"config_file": os.path.join(share, "config", "gz_bridge_world.yaml"),
                         "use_sim_time": True}],
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
        description = namespaced_description(robot_urdf, robot_id)
        actions += [
            Node(
                package="robot_state_publisher", executable="robot_state_publisher",
                name="robot_state_publisher", namespace=robot_id, output="screen",
                remappings=TF_REMAPS,
                parameters=[{"robot_description": description, "use_sim_time": True}],
            ),
            Node(
                package="ros_gz_sim", executable="create", name="spawn", namespace=robot_id,
                output="screen",
                arguments=["-world", world, "-name", robot_id, "-string", description,
                           "-x", str(start.x), "-y", str(start.y), "-z", str(SPAWN_Z),
                           "-Y", str(start.yaw)],
            ),
            Node(
                package="ros_gz_bridge", executable="parameter_bridge", name="gz_bridge",
                namespace=robot_id, output="screen",
                parameters=[{"config_file": os.path.join(share, "config", "gz_bridge.yaml"),
                             "expand_gz_topic_names": True, "use_sim_time": True}],
            ),
            *nav2_nodes(robot_id, map_yaml, start),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(os.path.join(share, "launch", "robot.launch.py")),
                launch_arguments={
                    "robot_id": robot_id, "base": "sim", "camera": "none",
                    "nav_backend": nav_backend, "world": world, "use_sim_time": "true",
                    "odom_to_map": f"{start.x},{start.y},{start.yaw}",
                    "start_waypoint": start.waypoint,
                    "handoff_secret": secret,
                }.items(),
            ),
        ]
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "world", default_value="town", choices=WORLDS,
            description="Gazebo world gazebo_worlds/<world>.sdf, with its route graph "
                        "config/worlds/<world>.yaml and Nav2 map config/maps/<world>.yaml"),
        DeclareLaunchArgument(
            "robots", default_value="2",
            description="Number of robots (robot1 .. robotN), at most the world's depot and "
                        "charger waypoints (town: 3)"),
        DeclareLaunchArgument(
            "headless", default_value="false", choices=["true", "false"],
            description="Run the Gazebo server only (no GUI window); sensors still render"),
        DeclareLaunchArgument(
            "nav_backend", default_value="nav2", choices=NAV_BACKENDS,
            description="navigation backend of the robots: nav2 (our route driven by Nav2) or "
                        "builtin (our pure pursuit; Nav2 then idles)"),
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

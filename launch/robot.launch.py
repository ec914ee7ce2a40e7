"""Bring up ONE delivery robot: the stack that runs on the robot computer, in /<robot_id>.

    ros2 launch delivery_robot robot.launch.py robot_id:=robot1 serial_port:=/dev/ttyACM0
    ros2 launch delivery_robot robot.launch.py robot_id:=robot1 base:=emulated camera:=none

Nodes (namespace /<robot_id>, parameters from share/delivery_robot/config/<node>.yaml):
base_driver (motor/lock controller on `serial_port`), camera (OpenCV source `camera`),
safety_monitor (cmd_vel -> cmd_vel_safe), navigation (`navigate` action, backend `nav_backend`),
handoff (compartment PIN/QR state machine), mission_executor (`execute_mission` action) and
perception (dock markers, QR codes, compartment check).

`base` chooses where motion and the compartment come from:
- serial: the real controller on `serial_port` (a robot);
- emulated: the firmware emulator (delivery_robot.firmware_emulator) on a pty, driven by the
  real base_driver: a bring-up rehearsal without hardware;
- sim: a simulator moves the robot and publishes odom (Gazebo), the emulated controller
  provides the compartment lock, door, battery and e-stop; base_driver's own odometry moves to
  base_driver/odom and it publishes no tf;
- none: the simulator provides all of it (the headless fleet_sim).
Included by gazebo_sim.launch.py and fleet_sim.launch.py with use_sim_time:=true.
"""

import os
import sys

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "delivery_robot"
NAV_BACKENDS = ["builtin", "nav2"]
BASES = ["serial", "emulated", "sim", "none"]
WORLDS = ["town", "apartment"]


def _flag(context, name):
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}: must be true or false, got {value!r}")
    return value == "true"


def _pose(text, name):
    """'x,y,yaw' -> [x, y, yaw] (empty: None, the config's value stands)."""
    if not text.strip():
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise ValueError(f"launch argument {name}: expected 'x,y,yaw', got {text!r}")
    return values


def launch_setup(context):
    share = get_package_share_directory(PACKAGE)
    robot_id = LaunchConfiguration("robot_id").perform(context).strip("/")
    serial_port = LaunchConfiguration("serial_port").perform(context)
    camera = LaunchConfiguration("camera").perform(context)
    nav_backend = LaunchConfiguration("nav_backend").perform(context)
    base = LaunchConfiguration("base").perform(context)
    world = LaunchConfiguration("world").perform(context)
    secret = LaunchConfiguration("handoff_secret").perform(context)
    odom_to_map = _pose(LaunchConfiguration("odom_to_map").perform(context), "odom_to_map")
    start_waypoint = LaunchConfiguration("start_waypoint").perform(context)
    use_sim_time = _flag(context, "use_sim_time")
    if not robot_id.replace("_", "").isalnum():
        raise ValueError(f"launch argument robot_id: a ROS name like robot1, got {robot_id!r}")
    if nav_backend not in NAV_BACKENDS:
        raise ValueError(f"launch argument nav_backend: one of {NAV_BACKENDS}, got {nav_backend!r}")
    if base not in BASES:
        raise ValueError(f"launch argument base: one of {BASES}, got {base!r}")

    sim_time = {"use_sim_time": use_sim_time}
    actions = []

    if base in ("emulated", "sim"):
        # The emulated controller listens on a pty behind this link; base_driver opens it (and
        # keeps retrying until the emulator has made it).
        serial_port = os.path.join("/tmp", PACKAGE, robot_id, "ttyEMU")
        actions.append(ExecuteProcess(
            name=f"{robot_id}_firmware_emulator",
            cmd=[sys.executable, "-m", "delivery_robot.firmware_emulator", "--link", serial_port],
            output="screen",
        ))
    if base != "none":
        driver_params = {"serial_port": serial_port, "publish_tf": base != "sim", **sim_time}
        actions.append(Node(
            package=PACKAGE, executable="base_driver", name="base_driver", namespace=robot_id,
            parameters=[os.path.join(share, "config", "base_driver.yaml"), driver_params],
            remappings=[("odom", "base_driver/odom")] if base == "sim" else [],
            output="screen",
        ))
    if camera != "none":
        actions.append(Node(
            package=PACKAGE, executable="camera", name="camera", namespace=robot_id,
            parameters=[{"source": camera, **sim_time}],
            output="screen",
        ))

    offset = {} if odom_to_map is None else {"odom_to_map": odom_to_map}
    navigation_params = {"backend": nav_backend, "world": world, **offset, **sim_time}
    mission_params = {"start_waypoint": start_waypoint, **offset, **sim_time}
    actions += [
        Node(
            package=PACKAGE, executable="safety_monitor", name="safety_monitor",
            namespace=robot_id,
            parameters=[os.path.join(share, "config", "safety.yaml"), sim_time],
            output="screen",
        ),
        Node(
            package=PACKAGE, executable="navigation", name="navigation", namespace=robot_id,
            parameters=[os.path.join(share, "config", "navigation.yaml"), navigation_params],
            output="screen",
        ),
        Node(
            package=PACKAGE, executable="handoff", name="handoff", namespace=robot_id,
            parameters=[os.path.join(share, "config", "handoff.yaml"),
                        {"handoff_secret": secret, **sim_time}],
            output="screen",
        ),
        Node(
            package=PACKAGE, executable="mission_executor", name="mission_executor",
            namespace=robot_id,
            parameters=[os.path.join(share, "config", "mission_executor.yaml"), mission_params],
            output="screen",
        ),
        Node(
            package=PACKAGE, executable="perception", name="perception", namespace=robot_id,
            parameters=[os.path.join(share, "config", "perception.yaml"), sim_time],
            output="screen",
        ),
    ]
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "robot_id", default_value="robot1",
            description="Robot name: the namespace of all its nodes and topics (/robot1/...)"),
        DeclareLaunchArgument(
            "serial_port", default_value="/dev/ttyACM0",
            description="Serial device of the motor/lock controller (base:=serial); a udev "
                        "symlink such as /dev/motor_controller survives re-enumeration"),
        DeclareLaunchArgument(
            "camera", default_value="0",
            description="Camera source of the camera node: a device index, video file or "
                        "stream URL; 'none' starts no camera node (images come from elsewhere)"),
        DeclareLaunchArgument(
            "nav_backend", default_value="builtin", choices=NAV_BACKENDS,
            description="navigation backend: builtin (route graph + pure pursuit) or nav2 "
                        "(Nav2 must be running in the robot's namespace)"),
        DeclareLaunchArgument(
            "base", default_value="serial", choices=BASES,
            description="Where motion and the compartment come from: serial (the real "
                        "controller), emulated (firmware emulator on a pty), sim (a simulator "
                        "moves the robot, the emulator serves the compartment), none (a "
                        "simulator provides all of it)"),
        DeclareLaunchArgument(
            "world", default_value="town", choices=WORLDS,
            description="Route graph of the area: share/delivery_robot/config/worlds/<world>.yaml"),
        DeclareLaunchArgument(
            "handoff_secret",
            default_value=EnvironmentVariable("DELIVERY_ROBOT_HANDOFF_SECRET", default_value=""),
            description="The coordinator's handoff_secret (>= 32 characters; signs QR codes "
                        "and keys PIN hashes); default: $DELIVERY_ROBOT_HANDOFF_SECRET. Never "
                        "commit it"),
        DeclareLaunchArgument(
            "odom_to_map", default_value="",
            description="'x,y,yaw' pose of the odom frame in map for the navigation node (a "
                        "simulated robot's start pose); empty: navigation.yaml's value"),
        DeclareLaunchArgument(
            "start_waypoint", default_value="",
            description="Route-graph waypoint the robot stands at when started (simulation); "
                        "empty: unknown until its first goal"),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", choices=["true", "false"],
            description="Follow /clock (true in simulation)"),
        OpaqueFunction(function=launch_setup),
    ])

"""What the launch files compute in Python, kept here so it is tested (launch is not
installable on CI machines, the launch files are only parsed there).

- `robot_ids(count)`: robot1..robotN, the namespaces every launch file and config uses.
- `start_poses(route, count)`: where N robots start in a world: its depot and charger
  waypoints in route-graph order, the same rule as the headless simulator (nodes/fleet_sim.py),
  so Gazebo spawns, `odom_to_map` and AMCL's initial poses agree.
- `namespaced_description(urdf, namespace)`: the URDF with its Gazebo topics moved into the
  robot's namespace. gz-sim plugins and sensors take absolute topic names, and one URDF serves
  every robot, so the launch file rewrites `cmd_vel_safe` to `/robot1/cmd_vel_safe` etc. per
  robot; ros_gz_bridge runs in that namespace with `expand_gz_topic_names`, so the bridge's
  relative gz topics land on the same names.
- `gz_endpoints(urdf)`: the Gazebo topics a robot description publishes and subscribes, with
  their gz message types, for the static check against config/gz_bridge.yaml.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from delivery_robot.route_graph import RouteGraph, WaypointKind

START_KINDS = (WaypointKind.DEPOT, WaypointKind.CHARGER)
# Elements holding a gz topic name, by where they sit in a <gazebo> block.
_TOPIC_TAGS = ("topic", "odom_topic", "tf_topic")


class LaunchSetupError(ValueError):
    """A launch argument cannot be honoured (too many robots, bad namespace, bad URDF)."""


@dataclass(frozen=True)
class StartPose:
    """A robot's start in the map frame: the waypoint it stands on and its pose."""

    waypoint: str
    x: float
    y: float
    yaw: float


@dataclass(frozen=True)
class GzEndpoint:
    """One Gazebo transport topic of the robot model: who owns it and which way data flows."""

    topic: str  # as written in the URDF (relative) or after namespacing (absolute)
    gz_type: str  # gz.msgs.*
    direction: str  # "out": Gazebo publishes it; "in": Gazebo subscribes to it
    owner: str  # the plugin or sensor


def robot_ids(count: int) -> list[str]:
    """robot1 .. robot<count>."""
    if count < 1:
        raise LaunchSetupError(f"robots must be >= 1, got {count}")
    return [f"robot{i}" for i in range(1, count + 1)]


def start_poses(route: RouteGraph, count: int) -> list[StartPose]:
    """The first `count` depot and charger waypoints of the route graph, in file order."""
    spots = [w for w in route.waypoints.values() if w.kind in START_KINDS]
    if count > len(spots):
        raise LaunchSetupError(
            f"world {route.world!r} has {len(spots)} start spots (depot and charger "
            f"waypoints: {[w.name for w in spots]}), not enough for {count} robots")
    return [StartPose(w.name, w.x, w.y, w.yaw or 0.0) for w in spots[:count]]


def namespaced_description(urdf: str, namespace: str) -> str:
    """`urdf` with every relative gz topic inside <gazebo> blocks prefixed by /<namespace>/.

    Absolute topics are left alone. Only the <gazebo> extension elements change; the
    kinematic description robot_state_publisher reads is identical."""
    ns = namespace.strip("/")
    if not ns or any(not (part.replace("_", "").isalnum()) for part in ns.split("/")):
        raise LaunchSetupError(f"namespace must be a ROS name like robot1, got {namespace!r}")
    root = _parse(urdf)
    for gazebo in root.iter("gazebo"):
        for element in gazebo.iter():
            if element.tag in _TOPIC_TAGS and element.text and element.text.strip():
                topic = element.text.strip()
                if not topic.startswith("/"):
                    element.text = f"/{ns}/{topic}"
    return ET.tostring(root, encoding="unicode")


def gz_endpoints(urdf: str) -> list[GzEndpoint]:
    """The Gazebo topics of the plugins and sensors of a robot description.

    Known producers only (the ones this robot uses); an unknown plugin or sensor type is an
    error, so adding one forces its topics to be declared here and checked."""
    root = _parse(urdf)
    out: list[GzEndpoint] = []
    for gazebo in root.iter("gazebo"):
        for plugin in gazebo.iter("plugin"):
            out += _plugin_endpoints(plugin)
        for sensor in gazebo.iter("sensor"):
            out += _sensor_endpoints(sensor)
    return out


def _parse(urdf: str) -> ET.Element:
    try:
        root = ET.fromstring(urdf)
    except ET.ParseError as error:
        raise LaunchSetupError(f"robot description is not well-formed XML: {error}") from None
    if root.tag != "robot":
        raise LaunchSetupError(f"robot description root is <{root.tag}>, expected <robot>")
    return root


def _text(element: ET.Element, tag: str) -> str | None:
    child = element.find(tag)
    return child.text.strip() if child is not None and child.text else None


def _plugin_endpoints(plugin: ET.Element) -> list[GzEndpoint]:
    name = plugin.get("name", "")
    if name == "gz::sim::systems::DiffDrive":
        topics = [(_text(plugin, "topic"), "gz.msgs.Twist", "in"),
                  (_text(plugin, "odom_topic"), "gz.msgs.Odometry", "out"),
                  (_text(plugin, "tf_topic"), "gz.msgs.Pose_V", "out")]
    elif name == "gz::sim::systems::JointStatePublisher":
        topics = [(_text(plugin, "topic"), "gz.msgs.Model", "out")]
    else:
        raise LaunchSetupError(f"plugin {name!r}: its gz topics are unknown to "
                               "delivery_robot.launch_support (declare them there)")
    missing = [gz for topic, gz, _ in topics if topic is None]
    if missing:
        raise LaunchSetupError(f"plugin {name}: set every topic explicitly (the defaults "
                               f"are not namespaced); missing the {missing} one(s)")
    return [GzEndpoint(str(topic), gz, direction, name) for topic, gz, direction in topics]


def _sensor_endpoints(sensor: ET.Element) -> list[GzEndpoint]:
    kind, name = sensor.get("type", ""), sensor.get("name", "")
    topic = _text(sensor, "topic")
    if topic is None:
        raise LaunchSetupError(f"sensor {name!r}: set <topic> (the default one is not "
                               "namespaced)")
    if kind in ("gpu_lidar", "lidar", "gpu_ray", "ray"):
        return [GzEndpoint(topic, "gz.msgs.LaserScan", "out", f"sensor {name}")]
    if kind == "camera":
        # gz-sensors puts the camera info next to the image: <parent of topic>/camera_info.
        parent = topic.rsplit("/", 1)[0] if "/" in topic else ""
        info = f"{parent}/camera_info" if parent else "camera_info"
        return [GzEndpoint(topic, "gz.msgs.Image", "out", f"sensor {name}"),
                GzEndpoint(info, "gz.msgs.CameraInfo", "out", f"sensor {name}")]
    raise LaunchSetupError(f"sensor {name!r} of type {kind!r}: its gz topics are unknown to "
                           "delivery_robot.launch_support (declare them there)")

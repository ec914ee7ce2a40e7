"""tools/check_assets.py and what it checks: launch files, params files, Nav2 parameters, the
bridge, the robot description and worlds (issue 9). The launch and Gazebo tools cannot run
here, so the assets are checked by the real parsers that do (ast, rcl, SDFormat, urdfdom) and
against the real nodes (instantiated with rclpy). Each check is also shown to catch a fault."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from delivery_robot.asset_checks import (
    Finding,
    check_launch_file,
    check_nav2_lifecycle,
    check_robot_geometry,
    console_scripts,
    expand_name,
    nav2_sections,
    read_bridge_config,
    read_launch_file,
    ros_parameters,
)
from delivery_robot.launch_support import gz_endpoints, namespaced_description

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
LAUNCH_FILES = ["coordinator.launch.py", "fleet_sim.launch.py", "gazebo_sim.launch.py",
                "robot.launch.py"]


def _load_tool() -> ModuleType:
    name = "check_assets_tool"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "check_assets.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


TOOL = _load_tool()
SCRIPTS = console_scripts(ROOT / "setup.py")
PENDING = {name: p.params_file for name, p in TOOL.PENDING.items()}


def _errors(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if f.level == "error"]


# == launch files, statically =================================================================


def test_the_four_launch_files_exist() -> None:
    assert sorted(p.name for p in LAUNCH.glob("*.launch.py")) == LAUNCH_FILES


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_file_is_valid_python_defining_generate_launch_description(name: str) -> None:
    path = LAUNCH / name
    compile(path.read_text(encoding="utf-8"), str(path), "exec")
    info = read_launch_file(path)
    assert info.error == ""
    assert info.has_generate


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_file_passes_the_static_checks(name: str) -> None:
    findings = check_launch_file(read_launch_file(LAUNCH / name), SCRIPTS, ROOT,
                                 pending=PENDING)
    assert _errors(findings) == []
    for finding in findings:
        if finding.level == "pending":
            assert any(p in finding.message for p in PENDING), finding


def test_robot_launch_has_the_issues_arguments_and_nodes() -> None:
    info = read_launch_file(LAUNCH / "robot.launch.py")
    assert {"robot_id", "serial_port", "camera", "nav_backend"} <= info.arguments.keys()
    assert {n.executable for n in info.nodes} == {
        "base_driver", "camera", "safety_monitor", "navigation", "handoff", "mission_executor",
        "perception"}
    assert all(n.namespaced for n in info.nodes)
    assert info.python_modules
    assert info.python_modules[0][0] == (
        "delivery_robot.firmware_emulator")


def test_gazebo_launch_arguments_and_world_paths() -> None:
    info = read_launch_file(LAUNCH / "gazebo_sim.launch.py")
    assert {"world", "headless", "robots"} <= info.arguments.keys()
    assert info.arguments["world"].choices == ("town", "apartment")
    paths = {value for value, _ in info.share_paths}
    for world in ("town", "apartment"):  # every choice of the world argument is checked
        for rel in (f"gazebo_worlds/{world}.sdf", f"config/maps/{world}.yaml",
                    f"config/worlds/{world}.yaml"):
            assert f"$share/delivery_robot/{rel}" in paths


@pytest.mark.parametrize("name", ["gazebo_sim.launch.py", "fleet_sim.launch.py"])
def test_simulated_runs_use_sim_time(name: str) -> None:
    info = read_launch_file(LAUNCH / name)
    for node in info.nodes:
        keys = {k for entry in node.params for k in entry.keys or ()}
        if node.executable == "fleet_sim":
            assert "use_sim_time" not in keys  # it publishes /clock on wall time
        elif node.executable != "create":  # the spawner is a one-shot gz client
            assert "use_sim_time" in keys, node
    for include in info.includes:
        if any(p.endswith(("robot.launch.py", "coordinator.launch.py"))
               for p in include.paths or ()):
            assert "use_sim_time" in include.arguments


def test_nav2_velocity_ends_on_cmd_vel_stamped() -> None:
    """controller/behaviors -> cmd_vel_nav -> velocity_smoother -> cmd_vel (safety_monitor's
    input), all TwistStamped (Jazzy Nav2 defaults to Twist: enable_stamped_cmd_vel)."""
    info = read_launch_file(LAUNCH / "gazebo_sim.launch.py")
    remaps = {n.executable: dict(n.remappings) for n in info.nodes}
    assert remaps["controller_server"]["cmd_vel"] == "cmd_vel_nav"
    assert remaps["behavior_server"]["cmd_vel"] == "cmd_vel_nav"
    assert remaps["velocity_smoother"] == {"/tf": "tf", "/tf_static": "tf_static",
                                           "cmd_vel": "cmd_vel_nav",
                                           "cmd_vel_smoothed": "cmd_vel"}
    sections = nav2_sections(ROOT / "config" / "nav2_params.yaml")
    for node in ("controller_server", "velocity_smoother", "behavior_server"):
        assert sections[node]["enable_stamped_cmd_vel"] is True, node
    assert "collision_monitor" not in sections  # safety_monitor is the collision gate


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_static_checks_catch_broken_launch_files(tmp_path: Path) -> None:
    _write(tmp_path / "setup.py", 'CONSOLE_SCRIPTS = ["good = delivery_robot.good:main"]\n')
    _write(tmp_path / "config" / "good.yaml", "/**:\n  ros__parameters: {a: 1}\n")
    _write(tmp_path / "launch" / "sub.launch.py",
           "from launch.actions import DeclareLaunchArgument\n"
           "def generate_launch_description():\n"
           "    return LaunchDescription([DeclareLaunchArgument('x', default_value='1', "
           "description='x')])\n")
    bad = _write(tmp_path / "launch" / "bad.launch.py", """
import os
from ament_index_python.packages import get_package_share_directory
def launch_setup(context):
    share = get_package_share_directory("delivery_robot")
    world = LaunchConfiguration("world").perform(context)
    return [
        Node(package="delivery_robot", executable="missing", namespace="r",
             parameters=[os.path.join(share, "config", f"{world}.yaml"), some_call()]),
        Node(package="delivery_robot", executable="good",
             parameters=[os.path.join(share, "config", "good.yaml"), {"a": 2}]),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(
            os.path.join(share, "launch", "sub.launch.py")),
            launch_arguments={"x": "2", "y": "3"}.items()),
        ExecuteProcess(cmd=["python3", "-m", "delivery_robot.nowhere"]),
    ]
def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("world", default_value="good", choices=["good", "gone"],
                              description="w"),
        DeclareLaunchArgument("nodefault", description="d"),
        DeclareLaunchArgument("nodescription", default_value="1"),
        LaunchConfiguration("undeclared"),
        OpaqueFunction(function=launch_setup),
    ])
""")
    info = read_launch_file(bad)
    assert {n.executable for n in info.nodes} == {"missing", "good"}
    good = next(n for n in info.nodes if n.executable == "good")
    assert good.params[0].files == ("$share/delivery_robot/config/good.yaml",)
    assert good.params[1].keys == ("a",)
    text = "\n".join(_errors(check_launch_file(info, {"good": "m:main"}, tmp_path)))
    for fragment in ("executable 'missing' is not a console script",
                     "cannot be checked statically",  # some_call()
                     "config/gone.yaml, which does not exist",  # every choice of `world`
                     "'nodefault' has no default_value", "'nodescription' has no description",
                     "LaunchConfiguration('undeclared') is never declared",
                     "passes ['y'] to launch/sub.launch.py",
                     "python -m delivery_robot.nowhere: no such module"):
        assert fragment in text, fragment
    assert "config/good.yaml" not in text
    syntax = _write(tmp_path / "launch" / "syntax.launch.py", "def generate_launch_description(:\n")
    assert "not valid Python" in _errors(check_launch_file(read_launch_file(syntax), {},
                                                           tmp_path))[0]
    empty = _write(tmp_path / "launch" / "empty.launch.py", "X = 1\n")
    assert "generate_launch_description" in _errors(check_launch_file(
        read_launch_file(empty), {}, tmp_path))[0]


def test_pending_nodes_are_reported_as_pending_not_as_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "launch" / "p.launch.py", """
def generate_launch_description():
    share = get_package_share_directory("delivery_robot")
    return LaunchDescription([Node(package="delivery_robot", executable="soon",
        parameters=[os.path.join(share, "config", "soon.yaml")])])
""")
    findings = check_launch_file(read_launch_file(path), {}, tmp_path,
                                 pending={"soon": "config/soon.yaml"})
    assert [f.level for f in findings] == ["pending", "pending"]


def test_pending_nodes_have_not_landed_yet() -> None:
    """When a pending node lands in setup.py, PENDING must lose it (the checker says so too)."""
    assert not TOOL.PENDING.keys() & SCRIPTS.keys()


# == bridge, Nav2 parameters, geometry (no ROS) ===============================================


def test_bridge_configs_are_valid_ros_gz_bridge_yaml() -> None:
    for name in ("gz_bridge.yaml", "gz_bridge_world.yaml"):
        entries, problems = read_bridge_config(ROOT / "config" / name)
        assert problems == []
        assert entries
    entries, _ = read_bridge_config(ROOT / "config" / "gz_bridge.yaml")
    assert {e.ros_topic for e in entries} == {"cmd_vel_safe", "odom", "tf", "joint_states",
                                              "scan", "camera/image_raw", "camera/camera_info"}
    assert [e.direction for e in entries if e.ros_topic == "cmd_vel_safe"] == ["ROS_TO_GZ"]


def test_bridge_gz_topics_are_the_namespaced_robot_models() -> None:
    entries, _ = read_bridge_config(ROOT / "config" / "gz_bridge.yaml")
    urdf = (ROOT / "urdf" / "delivery_robot.urdf").read_text(encoding="utf-8")
    model = {e.topic: e.gz_type for e in gz_endpoints(namespaced_description(urdf, "robot3"))}
    bridged = {expand_name(e.gz_topic, "/robot3"): e.gz_type for e in entries}
    assert bridged == model


def test_bridge_reader_catches_schema_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.yaml", yaml.safe_dump([
        {"ros_topic_name": "a", "ros_type_name": "std_msgs/msg/Bool",
         "gz_type_name": "gz.msgs.Boolean", "direction": "SIDEWAYS"},
        {"ros_topic_name": "b", "ros_type_name": "geometry_msgs/msg/TwistStamped",
         "gz_type_name": "gz.msgs.Pose", "direction": "ROS_TO_GZ"},
        {"topic_name": "c", "gz_topic_name": "d", "ros_type_name": "x", "gz_type_name": "y"},
        {"ros_topic_name": "e", "gz_type_name": "gz.msgs.Clock", "queue": 3},
    ]))
    entries, problems = read_bridge_config(path)
    text = "\n".join(str(p) for p in problems)
    assert "direction 'SIDEWAYS'" in text
    assert "TwistStamped <-> gz.msgs.Pose is not a ros_gz_bridge" in text
    assert "topic_name excludes" in text
    assert "unknown keys ['queue']" in text
    assert "needs a topic name, ros_type_name" in text
    assert [e.ros_topic for e in entries] == ["b"]


def test_nav2_lifecycle_check_catches_unmanaged_and_phantom_nodes() -> None:
    sections = {"lifecycle_manager_a": {"node_names": ["amcl", "map_server", "ghost"]},
                "lifecycle_manager_b": {"node_names": ["planner_server", "amcl"]}}
    launched = ["amcl", "map_server", "planner_server", "controller_server",
                "lifecycle_manager_a", "lifecycle_manager_b"]
    text = "\n".join(str(f) for f in check_nav2_lifecycle(sections, launched, "x"))
    assert "amcl is in two lifecycle managers" in text
    assert "controller_server is started but no lifecycle manager" in text
    assert "lists ghost" in text


def _geometry(**changes: Any) -> list[str]:
    config = ROOT / "config"
    safety = ros_parameters(config / "safety.yaml")
    fleet_sim = ros_parameters(config / "fleet_sim.yaml")
    # The reference: what the URDF says (fleet_sim.yaml may still lag; see the report).
    fleet_sim.update({"lidar.mount_x": 0.55, "kinematics.wheel_base": 0.48})
    base_driver = ros_parameters(config / "base_driver.yaml")
    for key, value in changes.items():
        target, _, name = key.partition("__")
        {"safety": safety, "sim": fleet_sim, "driver": base_driver}[target][name] = value
    return [f.message for f in check_robot_geometry(
        (ROOT / "urdf" / "delivery_robot.urdf").read_text(encoding="utf-8"), safety, fleet_sim,
        base_driver, nav2_sections(config / "nav2_params.yaml"))]


def test_geometry_agrees_across_urdf_safety_driver_and_nav2() -> None:
    assert _geometry() == []


def test_geometry_check_flags_each_kind_of_disagreement() -> None:
    assert _geometry(safety__laser_pose=[0.3, 0.0, 0.0]) == [
        "lidar mount x differs: urdf laser_joint = 0.55, safety.yaml laser_pose = 0.3, "
        "fleet_sim.yaml lidar.mount_x = 0.55"]
    assert "wheel radius differs" in _geometry(driver__wheel_radius=0.1)[0]
    assert "wheel separation differs" in _geometry(driver__track_width=0.5)[0]
    assert "outline x_max differs" in _geometry(
        safety__footprint=[0.7, 0.28, -0.1, 0.28, -0.1, -0.28, 0.7, -0.28])[0]
    assert "lidar height differs" in _geometry(**{"sim__lidar.mount_z": 0.2})[0]


# == real parsers: SDFormat and urdfdom =======================================================


def test_worlds_and_robot_pass_ign_sdf_and_check_urdf() -> None:
    assert TOOL.external_validators(ROOT) == []


def test_a_broken_urdf_is_caught_by_check_urdf(tmp_path: Path) -> None:
    urdf = (ROOT / "urdf" / "delivery_robot.urdf").read_text(encoding="utf-8")
    _write(tmp_path / "urdf" / "r.urdf", urdf.replace('<child link="laser"/>',
                                                      '<child link="lazer"/>'))
    (tmp_path / "gazebo_worlds").mkdir()
    text = "\n".join(str(f) for f in TOOL.external_validators(tmp_path))
    assert "check_urdf" in text


def test_urdf_to_sdf_conversion_keeps_sensors_and_plugins() -> None:
    urdf = (ROOT / "urdf" / "delivery_robot.urdf").read_text(encoding="utf-8")
    plugins = ('<plugin name="gz::sim::systems::DiffDrive"/>'
               '<plugin name="gz::sim::systems::JointStatePublisher"/>')
    whole = (f'<sdf version="1.9"><model name="m"><link name="l"><sensor name="lidar"/>'
             f'<sensor name="front_camera"/></link>{plugins}</model></sdf>')
    assert TOOL._check_converted("r.urdf", whole, urdf) == []
    lossy = '<sdf version="1.9"><model name="m"><link name="l"/></model></sdf>'
    text = "\n".join(str(f) for f in TOOL._check_converted("r.urdf", lossy, urdf))
    assert "sensor 'lidar' is lost" in text
    assert "plugin 'gz::sim::systems::DiffDrive'" in text


# == with real ROS =============================================================================


@pytest.fixture(scope="module")
def report() -> list[Finding]:
    return list(TOOL.run_checks(ROOT))


@pytest.mark.ros
@pytest.mark.slow
def test_the_repository_passes_check_assets(report: list[Finding]) -> None:
    assert _errors(report) == []
    notes = "\n".join(str(f) for f in report if f.level == "info")
    for node in ("base_driver", "camera", "coordinator", "fleet_sim", "handoff", "navigation",
                 "safety_monitor"):
        assert node in notes  # really instantiated, not skipped
    for nav2 in ("amcl", "bt_navigator", "lifecycle_manager_navigation", "velocity_smoother"):
        assert nav2 in notes
    assert "8 bridge entries checked" in notes
    for finding in report:
        if finding.level == "pending":
            assert any(name in finding.message for name in TOOL.PENDING), finding


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for folder in ("launch", "config", "urdf", "gazebo_worlds"):
        shutil.copytree(ROOT / folder, root / folder)
    shutil.copy(ROOT / "setup.py", root / "setup.py")
    return root


@pytest.mark.ros
@pytest.mark.slow
def test_ros_checks_catch_seeded_faults(tmp_path: Path, ros_context: Any) -> None:
    root = _copy_tree(tmp_path)
    config = root / "config"
    navigation = config / "navigation.yaml"
    navigation.write_text(navigation.read_text() + "    max_sped: 2.0\n")
    handoff = config / "handoff.yaml"
    handoff.write_text(handoff.read_text().replace("/**:", "handof:"))
    nav2 = yaml.safe_load((config / "nav2_params.yaml").read_text())
    del nav2["/**"]["waypoint_follower"]
    nav2["/**"]["amcl"]["ros__parameters"].pop("initial_pose")
    (config / "nav2_params.yaml").write_text(yaml.safe_dump(nav2))
    bridge = yaml.safe_load((config / "gz_bridge.yaml").read_text())
    bridge.append({"ros_topic_name": "nobody_reads", "gz_topic_name": "nobody_reads",
                   "ros_type_name": "std_msgs/msg/Bool", "gz_type_name": "gz.msgs.Boolean",
                   "direction": "GZ_TO_ROS"})
    bridge[0]["ros_type_name"] = "geometry_msgs/msg/Twist"  # cmd_vel_safe is stamped
    (config / "gz_bridge.yaml").write_text(yaml.safe_dump(bridge))

    checks = TOOL._RosChecks(root, console_scripts(root / "setup.py"), ros_context, tmp_path)
    robot = read_launch_file(root / "launch" / "robot.launch.py")
    gazebo = read_launch_file(root / "launch" / "gazebo_sim.launch.py")
    text = "\n".join(str(f) for f in checks.our_nodes(robot) + checks.nav2(gazebo)
                     + checks.bridges(gazebo))
    assert "config/navigation.yaml sets 'max_sped', which navigation does not declare" in text
    assert "config/handoff.yaml has no section rcl applies to node /robot1/handoff" in text
    assert "nav2_params.yaml has no section for /robot1/waypoint_follower" in text
    assert "waypoint_follower is started but no lifecycle manager" not in text  # still listed
    assert "amcl is given 'initial_pose.x', which nav2_params.yaml does not define" in text
    assert "/robot1/nobody_reads (GZ_TO_ROS): no node of ours" in text
    assert "Gazebo topic /robot1/nobody_reads is not one the robot model" in text
    assert ("/robot1/cmd_vel_safe: bridged as geometry_msgs/msg/Twist, but /robot1/"
            "safety_monitor uses geometry_msgs/msg/TwistStamped") in text


def test_launch_files_are_never_imported() -> None:
    """launch/launch_ros are not installable here: the checker reads the files with ast."""
    source = (ROOT / "tools" / "check_assets.py").read_text(encoding="utf-8")
    imports = {alias.name for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Import | ast.ImportFrom)
               for alias in getattr(node, "names", [])}
    assert not any(name.startswith(("launch", "launch_ros")) for name in imports)
    assert "launch" not in sys.modules

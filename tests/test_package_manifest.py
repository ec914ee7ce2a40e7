"""The ROS package is well-formed and declares what it needs, as rosdep on a robot will read it."""

from __future__ import annotations

import ast
import configparser
import importlib
import os
import re
import sys
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "delivery_robot"

# Needed on robots and engineers' machines although no wheel exists here (used behind adapters
# and by the launch files).
ROBOT_ONLY_DEPENDENCIES = {
    "nav2_simple_commander", "nav2_msgs", "tf2_ros", "launch", "launch_ros", "ros_gz_sim",
    "ros_gz_bridge", "robot_state_publisher",
}

# Import name -> rosdep key, for third-party Python libraries the code may import.
PYTHON_ROSDEP_KEYS = {
    "numpy": "python3-numpy", "cv2": "python3-opencv", "serial": "python3-serial",
    "networkx": "python3-networkx", "shapely": "python3-shapely", "yaml": "python3-yaml",
    "fastapi": "python3-fastapi", "uvicorn": "python3-uvicorn", "websockets": "python3-websockets",
    "segno": "python3-segno", "ortools": "python3-ortools-pip", "starlette": "python3-fastapi",
    "pydantic": "python3-fastapi",
}
ROS_PACKAGE_IMPORTS = re.compile(r"^(rclpy|ament_index_python|[a-z0-9_]+_(msgs|srvs|interfaces)"
                                 r"|nav2_simple_commander|tf2_ros|launch|launch_ros)$")


@pytest.fixture(scope="module")
def package():  # type: ignore[no-untyped-def]
    return parse_package(str(ROOT / "package.xml"))


def test_manifest_is_valid_ament_python_format_3(package) -> None:  # type: ignore[no-untyped-def]
    package.validate()
    assert package.name == "delivery_robot"
    assert package.package_format == 3
    assert package.get_build_type() == "ament_python"
    interfaces = parse_package(str(ROOT / "ros_ws/src/delivery_interfaces/package.xml"))
    interfaces.validate()
    assert interfaces.get_build_type() == "ament_cmake"


def _exec_dependencies(package) -> set[str]:  # type: ignore[no-untyped-def]
    return {dep.name for dep in package.exec_depends + package.build_export_depends}


def test_robot_only_dependencies_are_declared(package) -> None:  # type: ignore[no-untyped-def]
    missing = ROBOT_ONLY_DEPENDENCIES - _exec_dependencies(package)
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_import_of_the_package_is_declared(package) -> None:  # type: ignore[no-untyped-def]
    declared = _exec_dependencies(package)
    problems = []
    for path in sorted(SOURCE.rglob("*.py")):
        for name in sorted(_top_level_imports(path)):
            if name in sys.stdlib_module_names or name in ("delivery_robot", "__future__"):
                continue
            if ROS_PACKAGE_IMPORTS.match(name):
                key = name
            elif name in PYTHON_ROSDEP_KEYS:
                key = PYTHON_ROSDEP_KEYS[name]
            else:
                problems.append(f"{path.relative_to(ROOT)}: import {name}: unknown; add its "
                                "rosdep key to package.xml and to PYTHON_ROSDEP_KEYS here")
                continue
            if key not in declared:
                problems.append(f"{path.relative_to(ROOT)}: import {name}: package.xml lacks "
                                f"<exec_depend>{key}</exec_depend>")
    assert not problems, "\n".join(problems)


def test_console_scripts_go_to_lib_and_exist() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["develop"]["script_dir"] == "$base/lib/delivery_robot"
    assert config["install"]["install_scripts"] == "$base/lib/delivery_robot"
    setup_source = (ROOT / "setup.py").read_text()
    scripts = re.findall(r'"([\w-]+) = ([\w.]+):(\w+)"', setup_source)
    assert scripts, "no console scripts found in setup.py"
    install_lib = ROOT / "ros_ws/install/delivery_robot/lib/delivery_robot"
    for name, module, function in scripts:
        assert callable(getattr(importlib.import_module(module), function)), name
        assert os.access(install_lib / name, os.X_OK), f"{name} not installed in {install_lib}"


def test_installed_share_has_package_xml() -> None:
    from ament_index_python import get_package_share_directory

    share = Path(get_package_share_directory("delivery_robot"))
    assert (share / "package.xml").is_file()

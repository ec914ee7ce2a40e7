"""ament_python build of delivery_robot: installs the Python package, entry points in
lib/delivery_robot (where `ros2 run` / `ros2 launch` look) and the share/ files nodes load."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "delivery_robot"


def share_tree(folder: str) -> list[tuple[str, list[str]]]:
    """Install every file under `folder` into share/<package>/<folder>, keeping sub-folders."""
    entries: dict[str, list[str]] = {}
    for path in sorted(glob(f"{folder}/**/*", recursive=True)):
        if Path(path).is_file() and not Path(path).name.startswith("."):
            entries.setdefault(f"share/{PACKAGE}/{Path(path).parent}", []).append(path)
    return sorted(entries.items())


# One console script per node or tool; `ros2 run delivery_robot <name>` finds them.
CONSOLE_SCRIPTS = [
    "delivery-sim = delivery_robot.nodes.delivery_sim:main",
    "demo_robot = delivery_robot.nodes.demo_robot:main",
    "camera = delivery_robot.nodes.camera:main",
    "coordinator = delivery_robot.nodes.coordinator:main",
    "safety_monitor = delivery_robot.nodes.safety_monitor:main",
    "handoff = delivery_robot.nodes.handoff:main",
    "navigation = delivery_robot.nodes.navigation:main",
    "mission_executor = delivery_robot.nodes.mission_executor:main",
    "perception = delivery_robot.nodes.perception:main",
    "fleet_sim = delivery_robot.nodes.fleet_sim:main",
    "base_driver = delivery_robot.nodes.base_driver:main",
    "delivery-robot = delivery_robot.nodes.robot_bringup:main",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    # the tablet pages are read from the package directory at run time
    package_data={"delivery_robot.web": ["static/*", "templates/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_tree("launch"),
        *share_tree("config"),
        *share_tree("gazebo_worlds"),
        *share_tree("urdf"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="delivery_robot maintainers",
    maintainer_email="maintainers@delivery-robot.invalid",
    description="ROS 2 control stack for pilot delivery robots serving small shops.",
    license="Apache-2.0",
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)

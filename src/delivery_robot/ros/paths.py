"""Where the package's installed files are (share/delivery_robot), as on a robot."""

from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import get_package_share_directory


def share_file(relative: str) -> Path:
    """A file installed under share/delivery_robot, e.g. share_file("config/demo.yaml")."""
    path = Path(get_package_share_directory("delivery_robot")) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is not installed; run `make setup` (colcon build)")
    return path

"""The domain core stays free of ROS, and its enumerations match the wire constants."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "delivery_robot"
ROS_LAYERS = {"nodes", "ros", "adapters"}


def _core_modules() -> list[Path]:
    return [path for path in sorted(SOURCE.rglob("*.py"))
            if not ROS_LAYERS & set(path.relative_to(SOURCE).parts[:-1])]


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(SOURCE)))
def test_core_module_does_not_import_ros(path: Path) -> None:
    forbidden = {"rclpy", "delivery_interfaces", "launch", "launch_ros", "nav2_simple_commander",
                 "tf2_ros", "cv_bridge"}
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            root = name.split(".")[0]
            assert root not in forbidden, f"{path.name} imports {name}: core must stay ROS-free"
            assert not root.endswith(("_msgs", "_srvs")), f"{path.name} imports {name}"
            if name.startswith("delivery_robot."):
                layer = name.split(".")[1]
                assert layer not in ROS_LAYERS, f"{path.name} imports the ROS layer {name}"


def test_order_states_match_order_status_constants() -> None:
    from delivery_interfaces.msg import OrderStatus

    from delivery_robot.order_lifecycle import OrderState

    wire = {name.removeprefix("STATE_"): value
            for name, value in vars(OrderStatus).items() if name.startswith("STATE_")}
    assert wire == {state.name: state.value for state in OrderState}

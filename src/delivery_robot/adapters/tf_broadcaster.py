"""TF through tf2_ros where it is installed; otherwise a no-op that says so once.

The only module that imports tf2_ros, so a machine without it (this venv, the headless sim)
runs every node unchanged: the node publishes `odom` either way, and TF consumers exist only
where tf2_ros does.
"""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import TransformStamped
from rclpy.node import Node


class TransformBroadcaster:
    """`send(transform)` like tf2_ros.TransformBroadcaster, or nothing without tf2_ros."""

    def __init__(self, node: Node) -> None:
        self._broadcaster: Any = None
        try:
            from tf2_ros import TransformBroadcaster as Tf2Broadcaster
        except ImportError:
            node.get_logger().info(
                "tf2_ros is not installed: TF is not published (odometry still is, on its topic)"
            )
            return
        self._broadcaster = Tf2Broadcaster(node)

    @property
    def available(self) -> bool:
        return self._broadcaster is not None

    def send(self, transform: TransformStamped) -> None:
        if self._broadcaster is not None:
            self._broadcaster.sendTransform(transform)

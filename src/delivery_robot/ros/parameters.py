"""Declare a node's parameters once, each with a descriptor, and read them back typed."""

from __future__ import annotations

from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

T = TypeVar("T")


def declare(node: Node, name: str, default: T, description: str, read_only: bool = False) -> T:
    """Declare `name` with a description (shown by `ros2 param describe`) and return its value,
    which a params file (config/*.yaml) or the command line may have set."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    value: Any = node.declare_parameter(name, default, descriptor).value
    return value  # type: ignore[no-any-return]

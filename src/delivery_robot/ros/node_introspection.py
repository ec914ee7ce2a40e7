"""Ask real rclpy what a node declares and creates, and what rcl hands it from a params file.

Used by tools/check_assets.py: instead of a hand-kept table of parameter and topic names (which
would drift from the code), each node class is instantiated in a private rclpy context, with
the params files its launch file gives it, and then listed: declared parameters, publishers,
subscriptions. Params files are applied by rcl itself (`--params-file`), so node-name matching
(`/**`, `/**/amcl`, `coordinator`) and YAML parsing are exactly what a robot does.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

Role = Literal["publisher", "subscription"]
# Parameters every rclpy node has, whatever its code declares.
BUILTIN_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})


@dataclass(frozen=True)
class Endpoint:
    """A topic a node uses: full name, ROS type ("pkg/msg/Name"), role, which node."""

    topic: str
    msg_type: str
    role: Role
    node: str


@dataclass
class NodeReport:
    """What one instantiated node declared and created (or why it would not start)."""

    node: str  # fully qualified name
    declared: frozenset[str] = frozenset()
    endpoints: list[Endpoint] = field(default_factory=list)
    error: str = ""


def node_class(target: str) -> type[Node]:
    """The Node subclass behind a console script "package.module:main": the one Node class
    the module defines."""
    module_name = target.split(":", 1)[0]
    module = importlib.import_module(module_name)
    classes = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
               if issubclass(cls, Node) and cls.__module__ == module.__name__]
    if len(classes) != 1:
        raise LookupError(f"{module_name} defines {len(classes)} Node classes "
                          f"({[c.__name__ for c in classes]}), expected one")
    return classes[0]


def message_type_name(msg_type: Any) -> str:
    """geometry_msgs.msg._twist_stamped.TwistStamped -> "geometry_msgs/msg/TwistStamped"."""
    package = msg_type.__module__.split(".")[0]
    return f"{package}/msg/{msg_type.__name__}"


def introspect_node(cls: type[Node], context: Context, *, name: str, namespace: str,
                    params_files: Sequence[str], overrides: Mapping[str, Any]) -> NodeReport:
    """Instantiate `cls` as `namespace`/`name` with the params files (rcl applies them) and
    `overrides` (which win), list what it declared and created, and destroy it."""
    cli_args = ["--ros-args", "-r", f"__node:={name}"]
    for path in params_files:
        cli_args += ["--params-file", path]
    fq_name = f"{namespace.rstrip('/')}/{name}"
    try:
        node = cls(context=context, namespace=namespace, cli_args=cli_args,
                   use_global_arguments=False,
                   parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    except Exception as error:  # noqa: BLE001 - any refusal to start is the finding
        return NodeReport(fq_name, error=f"{type(error).__name__}: {error}")
    try:
        declared = frozenset(node.list_parameters([], 0).names)
        endpoints = [Endpoint(p.topic_name, message_type_name(p.msg_type), "publisher",
                              fq_name) for p in node.publishers]
        endpoints += [Endpoint(s.topic_name, message_type_name(s.msg_type), "subscription",
                               fq_name) for s in node.subscriptions]
        return NodeReport(fq_name, declared, endpoints)
    finally:
        node.destroy_node()


def applied_parameters(context: Context, params_file: str, *, name: str,
                       namespace: str) -> frozenset[str]:
    """The parameter names rcl takes from `params_file` for node `namespace`/`name` (matching
    its sections by node name and wildcards, as on a robot). Raises on a file rcl cannot
    parse."""
    node = Node(name, namespace=namespace, context=context, use_global_arguments=False,
                cli_args=["--ros-args", "--params-file", params_file],
                start_parameter_services=False, enable_rosout=False)
    try:
        # rclpy keeps the params-file values it was given here (no public accessor).
        overrides: dict[str, Any] = getattr(node, "_parameter_overrides", {})
        return frozenset(overrides)
    finally:
        node.destroy_node()

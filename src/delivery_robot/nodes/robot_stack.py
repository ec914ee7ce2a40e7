"""robot_stack: one robot's nodes in one process, on one executor (how `delivery-sim` runs them).

On a robot each node may be its own process (`ros2 launch`); in simulation a process per node
and robot would cost more processes than the machine has cores, so this runner composes a
robot's nodes - navigation, safety_monitor, handoff and mission_executor - into one process
with one executor, under the robot's namespace. Each node gets its parameters from its own
params file (only the entries for it: `/**`, its name, `/**/<name>`, `/<ns>/<name>`) plus the
overrides of the spec, so a key of one node's file never reaches another node (the safety
monitor refuses keys it does not know).

The spec is JSON (a file, `--spec FILE`, or inline, `--spec-json TEXT`):

    {"namespace": "robot1",
     "nodes": [{"name": "navigation", "module": "delivery_robot.nodes.navigation",
                "class": "NavigationNode", "params_file": ".../navigation.yaml",
                "parameters": {"use_sim_time": true, ...}}, ...]}

Made cheap for many robots on few cores (each option of the spec, all on by default): one
/clock subscription for the process (`share_clock`), no parameter services
(`parameter_services: false`), and the QoS event handlers dropped from the wait set once the
clock runs (`drop_qos_event_handlers`); rclpy checks every entity of the wait set in Python on
each executor round, which is most of a simulated robot's CPU.

A node that fails to start (a bad parameter) ends the process with exit code 2 and one line.
`--profile FILE` writes a cProfile (CPU time) of the process at exit.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def node_parameters(params_file: Path | None, node_name: str, namespace: str) -> dict[str, Any]:
    """The flat parameters a ROS params file gives node `node_name` in `namespace`."""
    if params_file is None:
        return {}
    data = yaml.safe_load(params_file.read_text()) or {}
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    keys = ["/**", node_name, f"/**/{node_name}", f"/{node_name}", f"{ns}/{node_name}"]
    values: dict[str, Any] = {}
    for key in keys:
        section = data.get(key)
        if isinstance(section, Mapping):
            values.update(_flatten(section.get("ros__parameters", {}) or {}))
    return values


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def build_nodes(spec: Mapping[str, Any], context: Any = None) -> list[Any]:
    """Make every node of the spec (in order); on a failure destroy those made and re-raise."""
    from rclpy.parameter import Parameter

    namespace = str(spec.get("namespace", ""))
    nodes: list[Any] = []
    try:
        for entry in spec["nodes"]:
            module = importlib.import_module(entry["module"])
            cls = getattr(module, entry["class"])
            params_file = Path(entry["params_file"]) if entry.get("params_file") else None
            values = node_parameters(params_file, entry["name"], namespace)
            for key, value in entry.get("parameters", {}).items():
                # A whole number where the params file has a float (`20` for `20.0`): rclpy
                # would refuse the type, so it is taken as the float it means.
                if isinstance(values.get(key), float) and type(value) is int:
                    value = float(value)
                values[key] = value
            overrides = [Parameter(k, value=v) for k, v in values.items()]
            options: dict[str, Any] = {
                "namespace": namespace, "parameter_overrides": overrides,
                # Six parameter services per node cost the executor a wait-set entry each,
                # on every spin; a simulated robot's parameters are set by its spec.
                "start_parameter_services": bool(spec.get("parameter_services", False)),
            }
            if context is not None:
                options["context"] = context
            nodes.append(cls(**options))
    except Exception:
        for node in nodes:
            node.destroy_node()
        raise
    if spec.get("share_clock", True):
        share_clock(nodes)
    return nodes


def share_clock(nodes: list[Any]) -> None:
    """One /clock subscription for the whole process instead of one per node.

    Every node on sim time subscribes /clock itself, so each clock tick costs the executor a
    callback per node. The first such node keeps its subscription and drives the other nodes'
    clocks (rclpy's TimeSource.attach_clock); the others drop theirs.
    """
    on_sim = [n for n in nodes if n.get_parameter("use_sim_time").value]
    if len(on_sim) < 2:
        return
    source = on_sim[0]._time_source  # noqa: SLF001 - rclpy has no public handle for it
    for node in on_sim[1:]:
        node._time_source.detach_node()  # noqa: SLF001 - destroys that node's /clock sub
        source.attach_clock(node.get_clock())


Dropped = list[tuple[Any, Any]]  # (node, event handler) taken out of a wait set


def drop_qos_event_handlers(nodes: list[Any]) -> Dropped:
    """Take every QoS event handler out of the nodes' wait sets; returns them.

    rclpy gives each publisher and subscription two (incompatible QoS and incompatible type
    warnings) and the executor checks each on every spin: in a robot process that is a third
    of the wait-set work, at every control tick. Both events can only happen when endpoints
    match, i.e. during discovery; call this once the stack is up (the handlers stay alive,
    only unwatched) from the executor's thread, and `restore_qos_event_handlers` before the
    nodes are destroyed (rclpy's destroy expects them back).
    """
    from rclpy.event_handler import EventHandler

    dropped: Dropped = []
    for node in nodes:
        for waitable in list(node.waitables):
            if isinstance(waitable, EventHandler):
                node.remove_waitable(waitable)
                dropped.append((node, waitable))
    return dropped


def restore_qos_event_handlers(dropped: Dropped) -> None:
    for node, handler in dropped:
        node.add_waitable(handler)
    dropped.clear()


def drop_handlers_when_clock_runs(nodes: list[Any], dropped: Dropped) -> None:
    """drop_qos_event_handlers() into `dropped` once sim time has started (delivery-sim starts
    the clock when every process is up and discovered), checked by a steady-clock timer that
    then goes."""
    from rclpy.clock import Clock, ClockType

    on_sim = [n for n in nodes if n.get_parameter("use_sim_time").value]
    if not on_sim:
        return
    owner = on_sim[0]
    timer: Any = None

    def check() -> None:
        if owner.get_clock().now().nanoseconds > 0:
            dropped.extend(drop_qos_event_handlers(nodes))
            owner.destroy_timer(timer)

    timer = owner.create_timer(0.5, check, clock=Clock(clock_type=ClockType.STEADY_TIME))


def make_executor(kind: str, context: Any = None) -> Any:
    from rclpy.executors import SingleThreadedExecutor

    if kind == "single":
        return SingleThreadedExecutor(context=context)
    raise ValueError(f"executor must be 'single', got {kind!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robot_stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", type=Path, help="JSON spec file")
    source.add_argument("--spec-json", help="JSON spec text")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="write a cProfile (CPU time) of the run to FILE at exit")
    args, ros_args = parser.parse_known_args(argv)
    if args.profile:
        import cProfile
        import time

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        try:
            return _run(args, ros_args)
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
    return _run(args, ros_args)


def _run(args: argparse.Namespace, ros_args: list[str]) -> int:
    try:
        spec = json.loads(args.spec.read_text() if args.spec else args.spec_json)
    except (OSError, ValueError) as error:
        print(f"robot_stack: cannot read the spec: {error}", file=sys.stderr)
        return 2

    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

    rclpy.init(args=["robot_stack", *ros_args])
    nodes: list[Any] = []
    dropped: Dropped = []
    executor = None
    label = spec.get("namespace", "robot")
    try:
        nodes = build_nodes(spec)
        if spec.get("drop_qos_event_handlers", True):
            drop_handlers_when_clock_runs(nodes, dropped)
        executor = make_executor(str(spec.get("executor", "single")))
        for node in nodes:
            executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except _rclpy.RCLError:
        if rclpy.ok():
            raise
        # SIGINT/SIGTERM shut the context down while spin() built a wait set: a clean stop.
    except (ValueError, FileNotFoundError, KeyError, ImportError, ParameterException) as error:
        print(f"[{label}] cannot start: {error}", file=sys.stderr)
        return 2
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        restore_qos_event_handlers(dropped)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

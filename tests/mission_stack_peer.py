"""A peer process for tests: some of the stack's nodes, built from a JSON spec, on one executor.

    python tests/mission_stack_peer.py '{"nodes": [{"module": "delivery_robot.nodes.navigation",
        "class": "NavigationNode", "namespace": "robot1", "params": {"use_sim_time": true}}]}'

Prints READY once every node is made, then spins until SIGTERM/SIGINT (or is SIGKILLed: the
mission executor's restart test does that). A node that refuses to start ends the process with
exit code 2 and its error on stderr.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def main(spec_text: str) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.parameter import Parameter

    spec: dict[str, Any] = json.loads(spec_text)
    rclpy.init()
    nodes: list[Any] = []
    try:
        executor = SingleThreadedExecutor()
        for entry in spec["nodes"]:
            cls = getattr(importlib.import_module(entry["module"]), entry["class"])
            overrides = [Parameter(k, value=v) for k, v in entry.get("params", {}).items()]
            node = cls(namespace=entry.get("namespace", ""), parameter_overrides=overrides)
            nodes.append(node)
            executor.add_node(node)
        print("READY", flush=True)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as error:
        print(f"cannot start: {error}", file=sys.stderr, flush=True)
        return 2
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

"""The far end of the interface round-trip tests, run as its own process.

For every interface of delivery_interfaces it offers, under /smoke/...:
- msg T: subscribes to /smoke/msg/T/in and republishes what it gets on /smoke/msg/T/out;
- srv S: answers sample(Response) when the request equals sample(Request), else an empty one;
- action A: for a goal equal to sample(Goal), sends sample(Feedback) three times and succeeds
  with sample(Result); any other goal is aborted.
It prints READY once everything exists.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import rclpy  # noqa: E402
from interface_catalog import interface_class, interface_names, sample  # noqa: E402
from rclpy.action import ActionServer  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class InterfacePeer(Node):
    def __init__(self) -> None:
        super().__init__("interface_peer")
        self._keep: list[Any] = []
        for name in interface_names("msg"):
            cls = interface_class("msg", name)
            out = self.create_publisher(cls, f"/smoke/msg/{name}/out", LATCHED)
            self._keep.append(out)
            self._keep.append(
                self.create_subscription(cls, f"/smoke/msg/{name}/in", out.publish, LATCHED)
            )
        for name in interface_names("srv"):
            self._keep.append(self._service(name))
        for name in interface_names("action"):
            self._keep.append(self._action(name))

    def _service(self, name: str) -> Any:
        cls = interface_class("srv", name)

        def answer(request: Any, response: Any) -> Any:
            return sample(cls.Response) if request == sample(cls.Request) else response

        return self.create_service(cls, f"/smoke/srv/{name}", answer)

    def _action(self, name: str) -> Any:
        cls = interface_class("action", name)

        def execute(goal_handle: Any) -> Any:
            if goal_handle.request != sample(cls.Goal):
                goal_handle.abort()
                return cls.Result()
            for _ in range(3):
                goal_handle.publish_feedback(sample(cls.Feedback))
            goal_handle.succeed()
            return sample(cls.Result)

        return ActionServer(self, cls, f"/smoke/action/{name}", execute)


def main() -> None:
    rclpy.init()
    try:
        node = InterfacePeer()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        print("READY", flush=True)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()

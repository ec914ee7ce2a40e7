"""The one way our nodes start and stop: init, spin a SingleThreadedExecutor, clean shutdown.

(`with rclpy.init():` raises TypeError on Jazzy, hence init + try/finally.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """Spin the node made by `make_node` until Ctrl-C / SIGTERM; return a process exit code.
    A configuration error raised while making the node is printed as one line, not a traceback."""
    rclpy.init(args=sys.argv if args is None else args)
    node: Node | None = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except _rclpy.RCLError:
        if rclpy.ok():
            raise
        # SIGTERM/SIGINT: rclpy's handler shut the context down while spin() was building a
        # wait set ("context is not valid"), a race; it is the same clean shutdown.
    except (ValueError, FileNotFoundError) as error:
        print(f"[{getattr(node, 'get_name', lambda: 'node')()}] cannot start: {error}",
              file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0

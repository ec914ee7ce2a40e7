"""delivery-sim (for now): an end-to-end demo of real nodes in separate processes.

Until the headless fleet simulator lands (issue 4), `make sim` runs this: the fleet
coordinator (SQLite store, dispatch, persist-then-announce) and N demo robots, each its own
ROS 2 process as `ros2 launch` would start them; a shop client submits orders through
`/fleet/submit_order` and follows `/fleet/order_status` until every order is delivered.
DDS stays on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEMO_ORDERS = [("bakery", "house_1"), ("pharmacy", "house_3"), ("bakery", "house_2"),
               ("pharmacy", "house_4"), ("bakery", "house_3"), ("pharmacy", "house_1")]
STATE_NAMES = ["requested", "assigned", "to_pickup", "awaiting_load", "in_transit",
               "awaiting_recipient", "delivered", "cancelled", "failed", "returning"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="delivery-sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", type=int, default=2, help="number of robots (1-10)")
    parser.add_argument("--orders", type=int, default=4, help="orders to submit (1-50)")
    parser.add_argument("--time-scale", type=float, default=20.0,
                        help="simulated seconds per wall second for robot motion")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="wall seconds before giving up")
    parser.add_argument("--report", type=Path, help="write a JSON summary here")
    parser.add_argument("--port", type=int, default=8080,
                        help="shop API port on this machine (0 = off)")
    parser.add_argument("--database", type=Path,
                        help="coordinator's SQLite order database (default: a fresh temp file)")
    args = parser.parse_args(argv)
    if not 1 <= args.robots <= 10:
        parser.error("--robots must be between 1 and 10")
    if not 1 <= args.orders <= 50:
        parser.error("--orders must be between 1 and 50")
    if args.time_scale <= 0 or args.timeout <= 0:
        parser.error("--time-scale and --timeout must be > 0")
    return args


def node_command(module: str, node: str, namespace: str, params_file: str,
                 params: dict[str, Any]) -> list[str]:
    from delivery_robot.ros.paths import share_file

    command = [sys.executable, "-m", f"delivery_robot.nodes.{module}", "--ros-args",
               "-r", f"__node:={node}", "--params-file", str(share_file(params_file))]
    if namespace:
        command += ["-r", f"__ns:={namespace}"]
    for name, value in params.items():
        command += ["-p", f"{name}:={json.dumps(value)}"]
    return command


class ShopClient:
    """Submits the demo orders and records every order transition it is told about."""

    def __init__(self, node: Any) -> None:
        from delivery_interfaces.msg import OrderStatus
        from delivery_interfaces.srv import SubmitOrder

        from delivery_robot.ros.qos import EVENT_QOS

        self.node = node
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.states: dict[str, int] = {}
        self.delivered_at: dict[str, float] = {}
        self.submitted_at: dict[str, float] = {}
        self.client = node.create_client(SubmitOrder, "/fleet/submit_order")
        self.request_type = SubmitOrder.Request
        node.create_subscription(OrderStatus, "/fleet/order_status", self.on_status, EVENT_QOS)

    def on_status(self, status: Any) -> None:
        with self.lock:
            if self.states.get(status.order_id) == status.state:
                return
            self.states[status.order_id] = status.state
            if status.state == 6:
                self.delivered_at[status.order_id] = time.monotonic()
        extra = f" by {status.robot_id}" if status.robot_id else ""
        reason = f" ({status.reason})" if status.reason else ""
        print(f"  {time.monotonic() - self.started:6.1f} s  {status.order_id}  "
              f"{STATE_NAMES[status.state]:<19}{extra}{reason}", flush=True)

    def submit(self, shop: str, dropoff: str, key: str) -> Any:
        request = self.request_type(shop_id=shop, dropoff_waypoint=dropoff, size=0,
                                    weight_kg=1.5, note="demo order", idempotency_key=key)
        return self.client.call_async(request)


def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.05)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    robot_ids = [f"robot{i}" for i in range(1, args.robots + 1)]
    print(f"delivery-sim (demo): {args.robots} robots, {args.orders} orders, "
          f"time x{args.time_scale:g}, ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} on loopback")
    from delivery_robot.ros.paths import share_file

    workdir = Path(tempfile.mkdtemp(prefix="delivery-sim-"))
    database = args.database or workdir / "orders.db"
    print(f"order database: {database}")
    if args.port:
        print(f"shop API: http://localhost:{args.port}/api/v1 (OpenAPI: /openapi.json); demo "
              f"bearer tokens: {share_file('config/demo_tokens.yaml')}")
    commands = [node_command("coordinator", "coordinator", "", "config/coordinator.yaml", {
        "robot_ids": robot_ids, "map_file": str(share_file("config/demo_map.yaml")),
        "database_path": str(database), "discover_robots": False,
        "http_port": args.port, "allow_demo_tokens": True})]
    commands += [node_command("demo_robot", "demo_robot", f"/{rid}", "config/demo.yaml",
                              {"robot_id": rid, "time_scale": args.time_scale})
                 for rid in robot_ids]
    processes = [subprocess.Popen(command) for command in commands]
    rclpy.init(args=[])
    executor = SingleThreadedExecutor()
    node = rclpy.create_node("demo_shop_client")
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    shop = ShopClient(node)
    exit_code = 1
    try:
        print("[1/3] starting coordinator and robots ...", flush=True)
        if not wait_until(shop.client.service_is_ready, 30.0):
            print("error: /fleet/submit_order did not appear within 30 s", file=sys.stderr)
            return 1
        print("[2/3] submitting orders ...", flush=True)
        for index in range(args.orders):
            shop_id, dropoff = DEMO_ORDERS[index % len(DEMO_ORDERS)]
            future = shop.submit(shop_id, dropoff, key=f"demo-{index}")
            if not wait_until(future.done, 10.0) or not future.result().accepted:
                response = future.result() if future.done() else None
                print(f"error: order {index} refused: "
                      f"{response.message if response else 'no answer'}", file=sys.stderr)
                return 1
            shop.submitted_at[future.result().order.order_id] = time.monotonic()
        print("[3/3] following /fleet/order_status until every order is delivered ...",
              flush=True)
        finished = wait_until(
            lambda: len(shop.delivered_at) == args.orders or any(
                state in (7, 8) for state in shop.states.values()), args.timeout)
        delivered = len(shop.delivered_at)
        times = sorted(shop.delivered_at[o] - shop.submitted_at[o] for o in shop.delivered_at
                       if o in shop.submitted_at)
        summary = {"robots": args.robots, "orders": args.orders, "delivered": delivered,
                   "failed_or_cancelled": sum(s in (7, 8) for s in shop.states.values()),
                   "mean_delivery_wall_s": round(sum(times) / len(times), 2) if times else None,
                   "wall_seconds": round(time.monotonic() - shop.started, 2)}
        print("\nsummary: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
        if args.report:
            args.report.write_text(json.dumps(summary, indent=2) + "\n")
            print(f"report written to {args.report}")
        if finished and delivered == args.orders:
            print("all orders delivered.")
            exit_code = 0
        else:
            print(f"error: {delivered}/{args.orders} delivered "
                  f"{'(an order failed)' if finished else f'after {args.timeout:g} s'}",
                  file=sys.stderr)
        return exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

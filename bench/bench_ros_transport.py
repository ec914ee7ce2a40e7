"""Round trip of a RobotState between two ROS processes, against a bare UDP echo.

The fleet's heartbeat and every order announcement cross processes like this, so this is the
floor under every latency the coordinator reports. Baseline: the same payload size echoed over
a plain loopback UDP socket by a Python process (what the machine and Python cost without ROS).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

ROUND_TRIPS = 500
WARMUP = 50


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def echo_ros() -> None:
    import rclpy
    from delivery_interfaces.msg import RobotState
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("bench_echo")
    publisher = node.create_publisher(RobotState, "/bench/pong", 10)
    node.create_subscription(RobotState, "/bench/ping", publisher.publish, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("READY", flush=True)
    try:
        executor.spin()
    except Exception:  # noqa: BLE001 - ended by the parent's SIGTERM
        pass
    finally:
        rclpy.try_shutdown()


def echo_udp(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print("READY", flush=True)
    while True:
        data, address = sock.recvfrom(65536)
        sock.sendto(data, address)


def start_peer(*args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "bench.bench_ros_transport", *args],
                               stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert process.stdout is not None
    if process.stdout.readline().strip() != "READY":
        raise RuntimeError(f"bench peer {args} did not start")
    return process


def measure_ros() -> list[float]:
    import rclpy
    from delivery_interfaces.msg import RobotState
    from rclpy.executors import SingleThreadedExecutor

    peer = start_peer("--echo-ros")
    rclpy.init()
    try:
        node = rclpy.create_node("bench_pinger")
        arrived = threading.Event()
        node.create_subscription(RobotState, "/bench/pong", lambda _: arrived.set(), 10)
        publisher = node.create_publisher(RobotState, "/bench/ping", 10)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        message = RobotState(robot_id="robot1", order_ids=["order-0001"], faults=[])
        deadline = time.monotonic() + 20.0
        while publisher.get_subscription_count() == 0 or node.count_publishers("/bench/pong") == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("bench echo process was not discovered within 20 s")
            arrived.wait(0.05)
        samples: list[float] = []
        for index in range(WARMUP + ROUND_TRIPS):
            arrived.clear()
            start = time.perf_counter()
            publisher.publish(message)
            if not arrived.wait(2.0):
                continue  # counted as lost by the smaller sample
            if index >= WARMUP:
                samples.append((time.perf_counter() - start) * 1000)
        executor.shutdown()
        spinner.join(timeout=5)
        return samples
    finally:
        rclpy.try_shutdown()
        peer.terminate()
        peer.wait(timeout=10)


def measure_udp(payload: int) -> list[float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    peer = start_peer("--echo-udp", str(port))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2.0)
            data = b"x" * payload
            samples = []
            for index in range(WARMUP + ROUND_TRIPS):
                start = time.perf_counter()
                sock.sendto(data, ("127.0.0.1", port))
                sock.recvfrom(65536)
                if index >= WARMUP:
                    samples.append((time.perf_counter() - start) * 1000)
            return samples
    finally:
        peer.terminate()
        peer.wait(timeout=10)


def run() -> dict[str, Any]:
    from delivery_interfaces.msg import RobotState
    from rclpy.serialization import serialize_message

    payload = len(serialize_message(RobotState(robot_id="robot1", order_ids=["order-0001"])))
    ros = measure_ros()
    udp = measure_udp(payload)
    return {"name": "ros_transport", "metrics": {
        "ros_robot_state_rtt_p50_ms": {"value": round(percentile(ros, 50), 3), "unit": "ms",
                                       "baseline": round(percentile(udp, 50), 3),
                                       "target": "<= 2"},
        "ros_robot_state_rtt_p99_ms": {"value": round(percentile(ros, 99), 3), "unit": "ms",
                                       "baseline": round(percentile(udp, 99), 3),
                                       "target": "<= 10"},
        "ros_robot_state_lost": {"value": WARMUP + ROUND_TRIPS - WARMUP - len(ros),
                                 "unit": "msgs", "baseline": None, "target": "== 0"},
    }}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--echo-ros"]:
        echo_ros()
    elif sys.argv[1:2] == ["--echo-udp"]:
        echo_udp(int(sys.argv[2]))

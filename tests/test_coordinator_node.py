"""The coordinator node with real rclpy: services, a demo robot carrying an order, SIGKILL.

Both sides use the demo map (config/demo_map.yaml: the coordinator's `map_file` mode), so the
coordinator and the demo robot agree on waypoints without a route-graph world; the route-graph
path (`world`/`route_graph_file`) is the same core, covered by the core's tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ros_harness import SpinningExecutor, wait_for

from delivery_robot.order_lifecycle import OrderState
from delivery_robot.order_store import OrderStore

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
DEMO_MAP = ROOT / "config" / "demo_map.yaml"
PARAMS = ROOT / "config" / "coordinator.yaml"
SECRET = "s" * 32
DELIVERED_PATH = [OrderState(s) for s in range(7)]  # requested .. delivered


def coordinator_overrides(database: Path) -> list[Any]:
    from rclpy.parameter import Parameter

    return [
        Parameter("database_path", value=str(database)),
        Parameter("map_file", value=str(DEMO_MAP)),
        Parameter("robot_ids", value=["robot1"]),
        Parameter("discover_robots", value=False),
        Parameter("pin_hash_log2_n", value=1),
        Parameter("handoff_secret", value=SECRET),
    ]


def add_demo_robot(executor: SpinningExecutor, **params: float) -> Any:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.demo_robot import DemoRobot

    values: dict[str, Any] = {"map_file": str(DEMO_MAP), "time_scale": 100.0,
                              "tick_period_s": 0.05, "state_period_s": 0.5}
    values.update(params)
    return executor.add(DemoRobot(context=executor.context, namespace="robot1",
                                  parameter_overrides=[Parameter(k, value=v)
                                                       for k, v in values.items()]))


class Client:
    """Calls the fleet services and records /fleet/order_status."""

    def __init__(self, executor: SpinningExecutor) -> None:
        from delivery_interfaces.msg import OrderStatus
        from delivery_interfaces.srv import CancelOrder, ConfirmLoaded, SubmitOrder

        from delivery_robot.ros.qos import EVENT_QOS

        self.node = executor.node("coordinator_test_client")
        self.lock = threading.Lock()
        self.statuses: list[Any] = []
        self.node.create_subscription(OrderStatus, "/fleet/order_status", self._on_status,
                                      EVENT_QOS)
        self.submit = self.node.create_client(SubmitOrder, "/fleet/submit_order")
        self.cancel = self.node.create_client(CancelOrder, "/fleet/cancel_order")
        self.confirm = self.node.create_client(ConfirmLoaded, "/fleet/confirm_loaded")
        self.types = (SubmitOrder, CancelOrder, ConfirmLoaded)

    def _on_status(self, msg: Any) -> None:
        with self.lock:
            self.statuses.append(msg)

    def call(self, client: Any, request: Any, timeout: float = 10.0) -> Any:
        wait_for(client.service_is_ready, timeout, f"service {client.srv_name}")
        future = client.call_async(request)
        wait_for(future.done, timeout, f"reply of {client.srv_name}")
        return future.result()

    def order(self, shop: str = "bakery", dropoff: str = "house_1", **kw: Any) -> Any:
        fields: dict[str, Any] = {"shop_id": shop, "dropoff_waypoint": dropoff, "size": 1,
                                  "weight_kg": 2.0}
        fields.update(kw)
        return self.call(self.submit, self.types[0].Request(**fields))

    def states(self, order_id: str) -> list[tuple[int, OrderState]]:
        """(sequence, state) of the order's announcements, duplicates dropped."""
        with self.lock:
            seen = {(m.sequence, OrderState(m.state)) for m in self.statuses
                    if m.order_id == order_id}
        return sorted(seen)


@pytest.fixture
def client(ros_executor: SpinningExecutor) -> Client:
    return Client(ros_executor)


@pytest.mark.slow
def test_an_order_submitted_over_the_service_is_delivered_by_a_demo_robot(
    ros_executor: SpinningExecutor, client: Client, tmp_path: Path
) -> None:
    from delivery_robot.nodes.coordinator import CoordinatorNode

    ros_executor.add(CoordinatorNode(context=ros_executor.context,
                                     parameter_overrides=coordinator_overrides(tmp_path / "o.db")))
    add_demo_robot(ros_executor)
    reply = client.order(idempotency_key="first")
    assert reply.accepted, reply.message
    assert reply.error_code == ""
    assert len(reply.recipient_pin) == 6
    assert reply.recipient_qr_token.startswith("h1.")
    order_id = reply.order.order_id
    wait_for(lambda: OrderState.DELIVERED in [s for _, s in client.states(order_id)], 30.0,
             "the order to be delivered")
    assert client.states(order_id) == list(enumerate(DELIVERED_PATH, start=1))
    delivered = [m for m in client.statuses if m.state == OrderState.DELIVERED]
    assert delivered[0].robot_id == "robot1"
    retry = client.order(idempotency_key="first")  # a retried submit: same order, no new PIN
    assert retry.accepted
    assert retry.order.order_id == order_id
    assert retry.recipient_pin == ""


def test_bad_requests_get_error_codes_not_exceptions(
    ros_executor: SpinningExecutor, client: Client, tmp_path: Path
) -> None:
    from delivery_robot.nodes.coordinator import CoordinatorNode

    ros_executor.add(CoordinatorNode(context=ros_executor.context,
                                     parameter_overrides=coordinator_overrides(tmp_path / "o.db")))
    _, cancel_type, confirm_type = client.types
    cases = [
        (client.order(shop="nobody"), "unknown_shop"),
        (client.order(dropoff="moon"), "unknown_dropoff"),
        (client.order(weight_kg=500.0), "too_heavy"),
        (client.order(size=9), "invalid_field"),
        (client.call(client.cancel, cancel_type.Request(order_id="ord_nope",
                                                       requested_by="operator")),
         "unknown_order"),
    ]
    for reply, code in cases:
        assert (reply.accepted, reply.error_code) == (False, code), reply.message
        assert reply.message
    queued = client.order()  # no robot: accepted and queued, with the reason
    assert queued.accepted
    assert "queued" in queued.message
    order_id = queued.order.order_id
    early = client.call(client.confirm, confirm_type.Request(order_id=order_id,
                                                             shop_id="bakery"))
    assert (early.accepted, early.error_code) == (False, "not_awaiting_load")
    other_shop = client.call(client.cancel, cancel_type.Request(order_id=order_id,
                                                                requested_by="pharmacy"))
    assert other_shop.error_code == "unknown_order"
    cancelled = client.call(client.cancel, cancel_type.Request(order_id=order_id,
                                                               requested_by="bakery"))
    assert cancelled.accepted
    wait_for(lambda: [s for _, s in client.states(order_id)]
             == [OrderState.REQUESTED, OrderState.CANCELLED], 10.0, "requested, cancelled")


class CoordinatorProcess:
    """`python -m delivery_robot.nodes.coordinator` as a real, killable process."""

    def __init__(self, database: Path, log: Path) -> None:
        self.log_path = log
        self.log = log.open("w")
        args = [sys.executable, "-m", "delivery_robot.nodes.coordinator", "--ros-args",
                "--params-file", str(PARAMS),
                "-p", f"database_path:={database}", "-p", f"map_file:={DEMO_MAP}",
                "-p", "robot_ids:=[robot1]", "-p", "discover_robots:=false",
                "-p", "pin_hash_log2_n:=1", "-p", f"handoff_secret:={SECRET}"]
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=os.environ.copy())

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"coordinator exited with {self.process.returncode}:\n"
                            f"{self.output()}")
            return "coordinator ready" in self.output()

        wait_for(ready, 30.0, "the coordinator process to start")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def processes() -> Iterator[list[CoordinatorProcess]]:
    started: list[CoordinatorProcess] = []
    yield started
    for process in started:
        process.stop()


@pytest.mark.slow
def test_sigkill_mid_mission_then_restart_delivers_exactly_once(
    ros_executor: SpinningExecutor, client: Client, tmp_path: Path,
    processes: list[CoordinatorProcess],
) -> None:
    database = tmp_path / "orders.db"
    first = CoordinatorProcess(database, tmp_path / "first.log")
    processes.append(first)
    # Slow enough on the waiting legs that the restart happens mid-mission.
    add_demo_robot(ros_executor, time_scale=20.0, load_delay_s=60.0, handoff_delay_s=100.0)
    first.wait_ready()
    reply = client.order()
    assert reply.accepted, reply.message
    order_id = reply.order.order_id
    wait_for(lambda: OrderState.AWAITING_LOAD in [s for _, s in client.states(order_id)],
             20.0, "the robot to wait at the shop")
    first.kill()
    assert first.process.returncode == -signal.SIGKILL

    second = CoordinatorProcess(database, tmp_path / "second.log")
    processes.append(second)
    second.wait_ready()
    wait_for(lambda: OrderState.DELIVERED in [s for _, s in client.states(order_id)], 40.0,
             "the order to be delivered after the restart")
    # Every transition announced once, in lifecycle order, across both processes.
    assert client.states(order_id) == list(enumerate(DELIVERED_PATH, start=1))
    with OrderStore(database) as store:
        history = [e.state for e in store.history(order_id)]
        assert history == DELIVERED_PATH
        assert len(store.assignments(order_id)) == 1  # never re-sent to a robot
        assert store.open_orders() == []


def test_core_enumerations_match_the_wire_constants() -> None:
    from delivery_interfaces.action import ExecuteMission
    from delivery_interfaces.msg import RobotState

    from delivery_robot.fleet_coordinator import MissionOutcome, RobotMode

    for mode in RobotMode:
        assert getattr(RobotState, f"MODE_{mode.name}") == mode.value
    for outcome in MissionOutcome:
        assert getattr(ExecuteMission.Result, f"OUTCOME_{outcome.name}") == outcome.value

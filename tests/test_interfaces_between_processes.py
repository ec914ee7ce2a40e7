"""Every message, service and action of delivery_interfaces crosses a process boundary intact.

A peer process (interface_peer.py) echoes messages, answers services and runs actions with
feedback; this process checks that what comes back equals what both sides expect field by field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from interface_catalog import interface_class, interface_names, sample
from ros_harness import PeerProcess, SpinningExecutor, wait_for

pytestmark = pytest.mark.ros

PEER_SCRIPT = Path(__file__).with_name("interface_peer.py")


@pytest.fixture(scope="module")
def peer() -> Any:
    process = PeerProcess(PEER_SCRIPT)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_interface_package_defines_the_contracts() -> None:
    assert {"Order", "OrderStatus", "RobotState", "CompartmentState", "SafetyState",
            "FleetState"} <= set(interface_names("msg"))
    assert {"SubmitOrder", "CancelOrder", "ConfirmLoaded", "VerifyHandoff",
            "SetLock"} <= set(interface_names("srv"))
    assert {"ExecuteMission", "Navigate"} <= set(interface_names("action"))


def test_samples_differ_by_seed() -> None:
    """The round trips below can only fail if a sample is not a default message."""
    for name in interface_names("msg"):
        cls = interface_class("msg", name)
        assert sample(cls, 1) != cls(), name
        assert sample(cls, 1) != sample(cls, 2), name


@pytest.mark.parametrize("name", interface_names("msg"))
def test_message_round_trip(
    name: str, peer: PeerProcess, ros_module_executor: SpinningExecutor
) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    cls = interface_class("msg", name)
    sent = sample(cls, seed=len(name))
    received: list[Any] = []
    node = ros_module_executor.node(f"msg_{name.lower()}_client")
    node.create_subscription(cls, f"/smoke/msg/{name}/out", received.append, latched)
    node.create_publisher(cls, f"/smoke/msg/{name}/in", latched).publish(sent)
    wait_for(lambda: bool(received), 15.0, f"{name} echoed by the peer process")
    assert received[0] == sent


@pytest.mark.parametrize("name", interface_names("srv"))
def test_service_call(
    name: str, peer: PeerProcess, ros_module_executor: SpinningExecutor
) -> None:
    cls = interface_class("srv", name)
    node = ros_module_executor.node(f"srv_{name.lower()}_client")
    client = node.create_client(cls, f"/smoke/srv/{name}")
    wait_for(lambda: client.service_is_ready(), 15.0, f"service {name} in the peer process")
    future = client.call_async(sample(cls.Request))
    wait_for(future.done, 10.0, f"{name} response")
    assert future.result() == sample(cls.Response)
    assert sample(cls.Response) != cls.Response()


@pytest.mark.parametrize("name", interface_names("action"))
def test_action_with_feedback(
    name: str, peer: PeerProcess, ros_module_executor: SpinningExecutor
) -> None:
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient

    cls = interface_class("action", name)
    node = ros_module_executor.node(f"action_{name.lower()}_client")
    client = ActionClient(node, cls, f"/smoke/action/{name}")
    wait_for(client.server_is_ready, 15.0, f"action server {name} in the peer process")
    feedback: list[Any] = []
    sent = client.send_goal_async(sample(cls.Goal), feedback_callback=feedback.append)
    wait_for(sent.done, 10.0, f"{name} goal response")
    goal_handle = sent.result()
    assert goal_handle.accepted
    result_future = goal_handle.get_result_async()
    wait_for(result_future.done, 10.0, f"{name} result")
    outcome = result_future.result()
    assert outcome.status == GoalStatus.STATUS_SUCCEEDED
    assert outcome.result == sample(cls.Result)
    assert feedback, "no feedback arrived"
    assert all(message.feedback == sample(cls.Feedback) for message in feedback)

"""`RosRobotLink` with real rclpy: a coordinator-side node calls a robot's real service servers
(`handoff/verify`, `safety/remote_estop`, `safety/reset`) from an asyncio loop in another
thread, as the web server does; robot events come back from `handoff/events`.

The robot stand-in serves the services with small rules of its own (a right PIN, a latch that
a pressed hardware e-stop keeps from being reset). "No answer" is a service whose node no
executor spins: discovered, but never answering.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ros_harness import SpinningExecutor, wait_for

from delivery_robot.handoff_credentials import Method
from delivery_robot.web.robot_link import (
    CommandResult,
    HandoffVerdict,
    RobotEvent,
    RobotTimeout,
    RobotUnavailable,
)

pytestmark = pytest.mark.ros

RIGHT_PIN = "135790"


class FakeRobot:
    """The robot's handoff and safety services, in namespace /<robot_id>."""

    def __init__(self, executor: SpinningExecutor, robot_id: str) -> None:
        from delivery_interfaces.srv import VerifyHandoff
        from std_msgs.msg import String
        from std_srvs.srv import SetBool, Trigger

        from delivery_robot.ros.qos import EVENT_QOS

        self.node = executor.node(f"fake_{robot_id}", namespace=f"/{robot_id}")
        self.lock = threading.Lock()
        self.remote_estop = False
        self.hardware_pressed = False
        self.calls: list[str] = []
        self.wrong = 0
        self.node.create_service(VerifyHandoff, "handoff/verify", self._verify)
        self.node.create_service(SetBool, "safety/remote_estop", self._estop)
        self.node.create_service(Trigger, "safety/reset", self._reset)
        self.events = self.node.create_publisher(String, "handoff/events", EVENT_QOS)

    def _verify(self, request: Any, response: Any) -> Any:
        with self.lock:
            self.calls.append(f"verify {request.order_id} {request.method} {request.credential}")
            if request.method == int(Method.PIN) and request.credential == RIGHT_PIN:
                response.granted, response.message, response.attempts_left = True, "ok", 5
            else:
                self.wrong += 1
                response.granted, response.error_code = False, "wrong_credential"
                response.message, response.attempts_left = "wrong code", 5 - self.wrong
        return response

    def _estop(self, request: Any, response: Any) -> Any:
        with self.lock:
            self.calls.append(f"remote_estop {request.data}")
            self.remote_estop = bool(request.data)
            response.success = True
            response.message = "latched" if request.data else "remote input released"
        return response

    def _reset(self, request: Any, response: Any) -> Any:
        with self.lock:
            self.calls.append("reset")
            response.success = not (self.remote_estop or self.hardware_pressed)
            response.message = "cleared" if response.success else "refused: e-stop pressed"
        return response


class LoopThread:
    """An asyncio loop on its own thread: stands in for uvicorn's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def link_node(ros_executor: SpinningExecutor) -> Any:
    return ros_executor.node("coordinator_link_test")


def make_link(node: Any, **kwargs: Any) -> Any:
    from delivery_robot.ros.robot_link import RosRobotLink

    return RosRobotLink(node, **kwargs)


def test_verify_reaches_the_robot_and_brings_its_answer(ros_executor: SpinningExecutor,
                                                        link_node: Any, loop: LoopThread) -> None:
    robot = FakeRobot(ros_executor, "robot1")
    link = make_link(link_node, timeout_s=5.0)
    wrong = loop.run(link.verify_handoff("robot1", "ord_1", Method.PIN, "000000"))
    assert wrong == HandoffVerdict(False, "wrong_credential", "wrong code", 4, 0.0)
    right = loop.run(link.verify_handoff("robot1", "ord_1", Method.PIN, RIGHT_PIN))
    assert right.granted
    assert right.attempts_left == 5
    qr = loop.run(link.verify_handoff("robot1", "ord_1", Method.QR, "h1.token"))
    assert not qr.granted
    assert robot.calls == ["verify ord_1 0 000000", f"verify ord_1 0 {RIGHT_PIN}",
                           "verify ord_1 1 h1.token"]


def test_estop_latches_and_resume_releases_then_resets(ros_executor: SpinningExecutor,
                                                       link_node: Any, loop: LoopThread) -> None:
    robot = FakeRobot(ros_executor, "robot1")
    link = make_link(link_node, timeout_s=5.0)
    assert loop.run(link.set_remote_estop("robot1", True, "operator (kim)")) == \
        CommandResult(True, "latched")
    assert robot.remote_estop
    resumed = loop.run(link.set_remote_estop("robot1", False, "operator (kim)"))
    assert resumed.success, resumed
    assert robot.calls == ["remote_estop True", "remote_estop False", "reset"]
    robot.hardware_pressed = True  # someone holds the robot's red button
    refused = loop.run(link.set_remote_estop("robot1", False, "operator"))
    assert not refused.success
    assert "refused" in refused.message


def test_a_robot_without_services_is_unavailable(link_node: Any, loop: LoopThread) -> None:
    link = make_link(link_node, timeout_s=0.5)
    with pytest.raises(RobotUnavailable, match="/ghost/handoff/verify"):
        loop.run(link.verify_handoff("ghost", "ord_1", Method.PIN, "123456"))
    with pytest.raises(RobotUnavailable, match="not a robot name"):
        loop.run(link.set_remote_estop("../x", True, "operator"))


def test_an_unanswered_call_times_out_without_blocking_others(
        ros_context: Any, ros_executor: SpinningExecutor, link_node: Any,
        loop: LoopThread) -> None:
    from delivery_interfaces.srv import VerifyHandoff
    from rclpy.node import Node

    FakeRobot(ros_executor, "robot1")
    # A server that is discovered but never answers: its node is spun by no executor.
    silent = Node("silent_robot", namespace="/robot2", context=ros_context)
    silent.create_service(VerifyHandoff, "handoff/verify", lambda req, res: res)
    try:
        link = make_link(link_node, timeout_s=1.5)
        hanging = asyncio.run_coroutine_threadsafe(
            link.verify_handoff("robot2", "ord_2", Method.PIN, "123456"), loop.loop)
        # While robot2 hangs, robot1 answers: neither the executor nor the loop is blocked.
        assert loop.run(link.set_remote_estop("robot1", True, "operator")).success
        assert not hanging.done()
        with pytest.raises(RobotTimeout, match="did not answer"):
            hanging.result(10.0)
    finally:
        silent.destroy_node()


def test_robot_events_reach_the_handler(ros_executor: SpinningExecutor, link_node: Any) -> None:
    from std_msgs.msg import String

    robot = FakeRobot(ros_executor, "robot1")
    link = make_link(link_node, robot_ids=["robot1"])
    seen: list[RobotEvent] = []
    link.on_robot_event(seen.append)
    robot.events.publish(String(data="not json"))  # logged and ignored
    robot.events.publish(String(data=json.dumps({
        "robot": "robot1", "at": 12.5, "kind": "tamper", "detail": "door opened while locked",
        "order_id": "ord_9", "alarm": True, "handoff_state": "fault"})))
    wait_for(lambda: len(seen) == 1, 10.0, "the tamper event")
    assert seen[0] == RobotEvent("robot1", "tamper", "ord_9", "door opened while locked", 12.5,
                                 True)


def test_discovered_robots_are_followed(ros_executor: SpinningExecutor, link_node: Any) -> None:
    from std_msgs.msg import String

    link = make_link(link_node, discover_period_s=0.2)
    seen: list[RobotEvent] = []
    link.on_robot_event(seen.append)
    robot = FakeRobot(ros_executor, "robot7")

    def published() -> bool:
        robot.events.publish(String(data=json.dumps(
            {"at": 1.0, "kind": "credential_lockout", "order_id": "ord_1", "alarm": True})))
        return bool(seen)

    wait_for(published, 15.0, "a discovered robot's event")
    assert seen[0].robot_id == "robot7"
    assert seen[0].kind == "credential_lockout"


def test_http_estop_and_verify_go_over_ros(ros_executor: SpinningExecutor, link_node: Any,
                                           tmp_path: Path) -> None:
    """The whole path: HTTP request -> app -> RosRobotLink -> the robot's services."""
    from test_shop_api import Api

    from delivery_robot.mission_legs import Leg

    robot = FakeRobot(ros_executor, "robot1")
    link = make_link(link_node, timeout_s=5.0)
    api = Api(tmp_path, robot_link=link)
    try:
        api.robot_idle()
        stopped = api.call("POST", "/api/v1/robots/robot1/estop", "operator",
                           json={"operator": "kim"})
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["who"] == "operator (kim)"
        assert robot.remote_estop
        order_id = api.submit().json()["order"]["order_id"]
        mission = api.core.get_order(order_id).mission_id  # type: ignore[union-attr]
        for leg in (Leg.TO_PICKUP, Leg.AWAITING_LOAD):
            api.core.on_mission_feedback("robot1", mission, leg, api.clock.t)  # type: ignore[arg-type]
        api.call("POST", f"/api/v1/orders/{order_id}/loaded")
        api.core.on_mission_feedback("robot1", mission, Leg.HANDOFF, api.clock.t)  # type: ignore[arg-type]
        wrong = api.call("POST", f"/api/v1/handoff/{order_id}/verify", None,
                         json={"method": "pin", "credential": "000000"})
        assert wrong.status_code == 403, wrong.text
        assert wrong.json()["attempts_left"] == 4
        right = api.call("POST", f"/api/v1/handoff/{order_id}/verify", None,
                         json={"method": "pin", "credential": RIGHT_PIN})
        assert right.json()["granted"] is True
        assert robot.calls[-2:] == [f"verify {order_id} 0 000000",
                                    f"verify {order_id} 0 {RIGHT_PIN}"]
    finally:
        api.client.close()
        api.store.close()

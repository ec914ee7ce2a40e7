"""`RobotLink` over ROS: the web server's requests to the robots' services, from the
coordinator's node, without ever blocking its executor or the web server's event loop.

The web layer awaits on its own asyncio loop (uvicorn's thread); rclpy entities belong to the
node's executor thread. So a request crosses twice: the coroutine queues it and triggers a
guard condition; in the executor thread the guard's callback creates the robot's client
(once, `/<robot>/handoff/verify`, `/<robot>/safety/remote_estop`, `/<robot>/safety/reset`),
and sends with `call_async`; the response's done-callback hands the answer back to the
caller's loop with `call_soon_threadsafe`. A timer (running only while calls are open) fails
what cannot finish: no service within the timeout -> `RobotUnavailable` (503), sent but not
answered -> `RobotTimeout` (504), and drops the unanswered request from the client.

The link also follows each robot's `handoff/events` (the robots named at start and any that
appear later) and hands tamper, lockout and the other alarms to the web layer's handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from delivery_interfaces.srv import VerifyHandoff
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.client import Client
from rclpy.node import Node
from rclpy.task import Future
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from delivery_robot.handoff_credentials import Method
from delivery_robot.ros.qos import EVENT_QOS
from delivery_robot.web.robot_link import (
    CommandResult,
    HandoffVerdict,
    RobotEvent,
    RobotEventHandler,
    RobotLinkError,
    RobotTimeout,
    RobotUnavailable,
)

ROBOT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
CHECK_PERIOD_S = 0.05
LOOP_GRACE_S = 1.0  # the caller's own deadline, past the executor's (a stalled executor)


@dataclass(eq=False)
class _Call:
    robot_id: str
    service: str
    srv_type: Any
    request: Any
    loop: asyncio.AbstractEventLoop
    result: asyncio.Future[Any]
    deadline: float
    sent: Future | None = None
    client: Client | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"/{self.robot_id}/{self.service}"


class RosRobotLink:
    """Create in the node's thread (e.g. in its `__init__`); call from any asyncio loop."""

    def __init__(self, node: Node, *, timeout_s: float = 3.0, robot_ids: Iterable[str] = (),
                 discover_period_s: float = 2.0) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        self._node = node
        self._timeout_s = timeout_s
        self._group = MutuallyExclusiveCallbackGroup()
        self._inbox: deque[_Call] = deque()
        self._inbox_lock = threading.Lock()
        self._open: list[_Call] = []  # executor thread only
        self._clients: dict[str, Client] = {}  # executor thread only
        self._followed: set[str] = set()
        self._handlers: list[RobotEventHandler] = []
        self._closed = False
        self._wake = node.create_guard_condition(self._drain, callback_group=self._group)
        self._checker = node.create_timer(CHECK_PERIOD_S, self._check, callback_group=self._group)
        self._checker.cancel()  # runs only while calls are open
        for robot_id in robot_ids:
            self._follow(robot_id)
        if discover_period_s > 0:
            node.create_timer(discover_period_s, self._discover, callback_group=self._group)

    # -- RobotLink (any thread, awaited on the caller's loop) -------------------------------

    async def verify_handoff(self, robot_id: str, order_id: str, method: Method,
                             credential: str) -> HandoffVerdict:
        request = VerifyHandoff.Request(order_id=order_id, method=int(method),
                                        credential=credential)
        reply = await self._call(robot_id, "handoff/verify", VerifyHandoff, request)
        return HandoffVerdict(bool(reply.granted), str(reply.error_code), str(reply.message),
                              int(reply.attempts_left), float(reply.lockout_remaining_s))

    async def set_remote_estop(self, robot_id: str, engaged: bool, who: str) -> CommandResult:
        verb = "engage" if engaged else "release"
        self._node.get_logger().warning(f"remote e-stop {verb} on {robot_id} by {who}")
        latch = await self._call(robot_id, "safety/remote_estop", SetBool,
                                 SetBool.Request(data=engaged))
        result = CommandResult(bool(latch.success), str(latch.message))
        if engaged or not result.success:
            return self._logged(robot_id, verb, who, result)
        reset = await self._call(robot_id, "safety/reset", Trigger, Trigger.Request())
        message = "; ".join(m for m in (result.message, str(reset.message)) if m)
        return self._logged(robot_id, verb, who, CommandResult(bool(reset.success), message))

    def on_robot_event(self, handler: RobotEventHandler) -> None:
        self._handlers.append(handler)

    def close(self) -> None:
        """Fail what is still queued (at shutdown); later calls fail at once."""
        self._closed = True
        with self._inbox_lock:
            pending = list(self._inbox) + list(self._open)
            self._inbox.clear()
        for call in pending:
            self._resolve(call, RobotUnavailable("the coordinator is shutting down"))

    # -- the caller's side ------------------------------------------------------------------

    async def _call(self, robot_id: str, service: str, srv_type: Any, request: Any) -> Any:
        if not ROBOT_ID.fullmatch(robot_id):
            raise RobotUnavailable(f"{robot_id!r} is not a robot name")
        if self._closed:
            raise RobotUnavailable("the coordinator is shutting down")
        loop = asyncio.get_running_loop()
        call = _Call(robot_id, service, srv_type, request, loop, loop.create_future(),
                     time.monotonic() + self._timeout_s)
        with self._inbox_lock:
            self._inbox.append(call)
        self._wake.trigger()
        try:
            return await asyncio.wait_for(call.result, self._timeout_s + LOOP_GRACE_S)
        except TimeoutError:
            raise RobotTimeout(f"no answer from {call.name} within {self._timeout_s:g} s "
                               "(the coordinator's executor is busy)") from None

    def _logged(self, robot_id: str, verb: str, who: str, result: CommandResult) -> CommandResult:
        outcome = "done" if result.success else "REFUSED"
        self._node.get_logger().warning(f"remote e-stop {verb} on {robot_id} by {who}: "
                                        f"{outcome} ({result.message})")
        return result

    # -- the executor's side ----------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            with self._inbox_lock:
                if not self._inbox:
                    break
                call = self._inbox.popleft()
            if call.result.done():  # the caller gave up already
                continue
            call.client = self._client(call)
            self._open.append(call)
            if call.client.service_is_ready():
                self._send(call)
        if self._open and self._checker.is_canceled():
            self._checker.reset()

    def _client(self, call: _Call) -> Client:
        client = self._clients.get(call.name)
        if client is None:
            client = self._node.create_client(call.srv_type, call.name,
                                              callback_group=self._group)
            self._clients[call.name] = client
        return client

    def _send(self, call: _Call) -> None:
        assert call.client is not None
        call.sent = call.client.call_async(call.request)
        call.sent.add_done_callback(lambda future, c=call: self._answered(c, future))

    def _answered(self, call: _Call, future: Future) -> None:
        if call in self._open:
            self._open.remove(call)
        try:
            response = future.result()
        except Exception as error:  # noqa: BLE001 - handed to the caller as a clear error
            self._resolve(call, RobotUnavailable(f"{call.name} failed: {error}"))
            return
        if response is None:  # cancelled (shutdown, or dropped after our timeout)
            self._resolve(call, RobotTimeout(f"no answer from {call.name}"))
            return
        self._resolve(call, response)

    def _check(self) -> None:
        now = time.monotonic()
        for call in list(self._open):
            assert call.client is not None
            if call.result.done():
                self._forget(call)
            elif call.sent is None and call.client.service_is_ready():
                self._send(call)
            elif now >= call.deadline:
                self._forget(call)
                if call.sent is None:
                    self._resolve(call, RobotUnavailable(
                        f"no {call.name} service (robot offline, or its node not running)"))
                else:
                    self._resolve(call, RobotTimeout(
                        f"{call.name} did not answer within {self._timeout_s:g} s"))
        if not self._open:
            self._checker.cancel()

    def _forget(self, call: _Call) -> None:
        self._open.remove(call)
        if call.sent is not None and call.client is not None and not call.sent.done():
            call.client.remove_pending_request(call.sent)

    @staticmethod
    def _resolve(call: _Call, outcome: Any) -> None:
        def settle() -> None:
            if call.result.done():
                return
            if isinstance(outcome, RobotLinkError):
                call.result.set_exception(outcome)
            else:
                call.result.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the caller's loop closed: server stopped
            call.loop.call_soon_threadsafe(settle)

    # -- robot events -----------------------------------------------------------------------

    def _discover(self) -> None:
        for name, _ in self._node.get_topic_names_and_types():
            parts = name.strip("/").split("/")
            if len(parts) == 3 and parts[1:] == ["handoff", "events"]:
                self._follow(parts[0])

    def _follow(self, robot_id: str) -> None:
        if robot_id in self._followed or not ROBOT_ID.fullmatch(robot_id):
            return
        self._followed.add(robot_id)
        self._node.create_subscription(
            String, f"/{robot_id}/handoff/events",
            lambda message, r=robot_id: self._on_event(r, message), EVENT_QOS,
            callback_group=self._group)

    def _on_event(self, robot_id: str, message: String) -> None:
        try:
            data = json.loads(message.data)
            event = RobotEvent(robot_id=str(data.get("robot") or robot_id),
                               kind=str(data["kind"]), order_id=str(data.get("order_id") or ""),
                               detail=str(data.get("detail") or ""), at=float(data["at"]),
                               alarm=bool(data.get("alarm", False)))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            self._node.get_logger().warning(f"/{robot_id}/handoff/events: unreadable event "
                                            f"({error}); ignored")
            return
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception as error:  # noqa: BLE001 - one handler must not stop the node
                self._node.get_logger().error(f"robot event handler failed: {error!r}")

"""An in-process stand-in for the robots' handoff and safety services (a `RobotLink`), no ROS.

For the tablet demo, the browser tests, the screenshots and the websocket benchmark: the HTTP
layer's collaborator, with the robot's rules rather than canned answers. A credential is
checked like the handoff node does: with `HandoffCredentials` keyed with the fleet secret, on
the coordinator's stored record of the order (what `handoff/assign` hands the robot), only
for the robot that carries the order and only while it waits at the dropoff; 5 wrong tries
lock the order out. The e-stop latches until released, and a "pressed" hardware e-stop makes
a resume fail, like `safety/reset`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from delivery_robot.handoff_credentials import (
    CredentialPolicy,
    HandoffCredentials,
    Method,
    StoredCredentials,
)
from delivery_robot.order_lifecycle import OrderState
from delivery_robot.order_store import StoredOrder
from delivery_robot.web.robot_link import (
    CommandResult,
    HandoffVerdict,
    RobotEvent,
    RobotEventHandler,
    RobotUnavailable,
)


@dataclass
class EmulatedSafety:
    remote_estop: bool = False
    hardware_pressed: bool = False
    commands: list[tuple[str, bool]] = field(default_factory=list)  # (who, engaged)


class EmulatedRobots:
    def __init__(
        self,
        policy: CredentialPolicy,
        order_of: Callable[[str], StoredOrder | None],
        record_of: Callable[[str], StoredCredentials | None],
        clock: Callable[[], float],
        *,
        robot_ids: tuple[str, ...] = ("robot1",),
        on_granted: Callable[[str, str], None] | None = None,
        on_estop: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._book = HandoffCredentials(policy)
        self._order_of = order_of
        self._record_of = record_of
        self._clock = clock
        self._on_granted = on_granted
        self._on_estop = on_estop
        self._lock = threading.Lock()
        self.safety = {robot_id: EmulatedSafety() for robot_id in robot_ids}
        self.offline: set[str] = set()
        self.verify_calls: list[tuple[str, str, Method]] = []
        self._handlers: list[RobotEventHandler] = []

    # -- RobotLink ----------------------------------------------------------------------------

    async def verify_handoff(self, robot_id: str, order_id: str, method: Method,
                             credential: str) -> HandoffVerdict:
        self._reachable(robot_id, "handoff/verify")
        # A PIN costs one scrypt hash: off the event loop, as the real link is.
        verdict = await asyncio.to_thread(self._verify, robot_id, order_id, method, credential)
        if verdict.granted and self._on_granted is not None:
            self._on_granted(robot_id, order_id)
        return verdict

    async def set_remote_estop(self, robot_id: str, engaged: bool, who: str) -> CommandResult:
        self._reachable(robot_id, "safety/remote_estop")
        with self._lock:
            safety = self.safety[robot_id]
            safety.commands.append((who, engaged))
            safety.remote_estop = engaged
            if engaged:
                result = CommandResult(True, "remote e-stop latched")
            elif safety.hardware_pressed:
                result = CommandResult(False, "refused: the hardware e-stop is still pressed")
            else:
                result = CommandResult(True, "e-stop released and reset")
        if result.success and self._on_estop is not None:
            self._on_estop(robot_id, engaged)
        return result

    def on_robot_event(self, handler: RobotEventHandler) -> None:
        self._handlers.append(handler)

    # -- what a test or the demo does to the robots -------------------------------------------

    def emit(self, event: RobotEvent) -> None:
        """A robot publishes a handoff event (e.g. tamper)."""
        for handler in self._handlers:
            handler(event)

    def _reachable(self, robot_id: str, service: str) -> None:
        if robot_id not in self.safety or robot_id in self.offline:
            raise RobotUnavailable(f"no /{robot_id}/{service} service")

    def _verify(self, robot_id: str, order_id: str, method: Method,
                credential: str) -> HandoffVerdict:
        with self._lock:
            self.verify_calls.append((robot_id, order_id, method))
            order = self._order_of(order_id)
            if order is None or order.robot_id != robot_id:
                return HandoffVerdict(False, "unknown_order",
                                      "no delivery with this number is on this robot", 0)
            if self._book.record(order_id) is None:
                record = self._record_of(order_id)
                if record is None:
                    return HandoffVerdict(False, "unknown_order", "no credentials on board", 0)
                self._book.add(record)
            now = self._clock()
            if order.state is not OrderState.AWAITING_RECIPIENT:
                status = self._book.status(order_id, now)
                return HandoffVerdict(False, "not_at_dropoff",
                                      "the robot is not at the dropoff",
                                      status.attempts_left if status else 0)
            result = self._book.verify(order_id, method, credential, now)
            if result.lockout is not None:
                self.emit(RobotEvent(robot_id, "credential_lockout", order_id,
                                     f"{result.lockout.failed_attempts} wrong tries",
                                     now, alarm=True))
            return HandoffVerdict(result.granted, result.error_code, result.message,
                                  result.attempts_left, result.lockout_remaining_s)

"""What the HTTP layer needs from the robots, as a protocol: no rclpy in here.

Two requests reach a robot from the tablet pages: a recipient's PIN or QR token (the robot's
`handoff/verify`, which alone decides whether its compartment opens) and the operator's remote
e-stop (`safety/remote_estop`, then `safety/reset` to resume). The app takes a `RobotLink`
as a parameter; the coordinator passes `delivery_robot.ros.robot_link.RosRobotLink`, tests and
the tablet demo an in-process stand-in (`web.emulated_robots`). Robot-side handoff alarms
(tamper, lockout, lock fault) come back through `on_robot_event`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from delivery_robot.handoff_credentials import Method


@dataclass(frozen=True)
class HandoffVerdict:
    """The robot's answer to a presented credential (`VerifyHandoff.Response`)."""

    granted: bool
    error_code: str  # "" when granted; `VerifyError` values or the robot's refusal codes
    message: str
    attempts_left: int
    lockout_remaining_s: float = 0.0


@dataclass(frozen=True)
class CommandResult:
    """The robot's answer to an e-stop or resume (`SetBool` / `Trigger` response)."""

    success: bool
    message: str


@dataclass(frozen=True)
class RobotEvent:
    """A handoff event a robot published (`handoff/events`), e.g. tamper or lockout."""

    robot_id: str
    kind: str
    order_id: str
    detail: str
    at: float
    alarm: bool


RobotEventHandler = Callable[[RobotEvent], None]


class RobotLinkError(Exception):
    """The robot could not be asked: the HTTP layer answers `status` with `code`."""

    status = 503
    code = "robot_unavailable"


class RobotUnavailable(RobotLinkError):
    """No such service (robot offline, or its node is not running)."""


class RobotTimeout(RobotLinkError):
    """The request went out, but no answer came in time."""

    status = 504
    code = "robot_timeout"


class RobotLink(Protocol):
    async def verify_handoff(self, robot_id: str, order_id: str, method: Method,
                             credential: str) -> HandoffVerdict:
        """Ask `robot_id`'s handoff node; raise `RobotLinkError` if it cannot be asked."""
        ...

    async def set_remote_estop(self, robot_id: str, engaged: bool, who: str) -> CommandResult:
        """engaged: latch the robot's remote e-stop. Released: release the remote input and
        clear the latches (refused by the robot while a hardware e-stop is pressed)."""
        ...

    def on_robot_event(self, handler: RobotEventHandler) -> None:
        """Where robot-side handoff events go (called from any thread; must not block)."""
        ...


class NoRobotLink:
    """The link of an API started without robots: every robot request is a clear 503."""

    async def verify_handoff(self, robot_id: str, order_id: str, method: Method,
                             credential: str) -> HandoffVerdict:
        raise RobotUnavailable("this server has no link to the robots")

    async def set_remote_estop(self, robot_id: str, engaged: bool, who: str) -> CommandResult:
        raise RobotUnavailable("this server has no link to the robots")

    def on_robot_event(self, handler: RobotEventHandler) -> None:
        return None

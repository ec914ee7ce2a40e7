"""The operator's remote e-stop and resume per robot, each recorded with who and when.

`POST /api/v1/robots/{robot_id}/estop` latches the robot's remote e-stop
(`safety/remote_estop` true); `.../resume` releases it and clears the latches (`false`, then
`safety/reset`, which the robot refuses while a hardware e-stop is pressed). Operator token
only. Every attempt goes to the `OperatorLog` (also refused and unanswered ones) and out on
the websocket to operator pages, before the request answers.
"""

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from delivery_robot.api_auth import Caller
from delivery_robot.fleet_coordinator import FleetCoordinator
from delivery_robot.web.api_errors import ApiError, ErrorOut
from delivery_robot.web.events import EventHub
from delivery_robot.web.operator_log import OperatorCommand, OperatorLog, wall_now
from delivery_robot.web.robot_link import RobotLink, RobotLinkError

ROBOT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")  # a ROS namespace segment
MAX_OPERATOR_NAME_CHARS = 64
MAX_REASON_CHARS = 200


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operator: str = Field(default="", max_length=MAX_OPERATOR_NAME_CHARS,
                          description="the person at the console (goes into the record)")
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)


class CommandOut(BaseModel):
    """Also the body of a refusal (409 `robot_refused`)."""

    code: str = Field(description="`done`, or `robot_refused`")
    message: str
    robot_id: str
    action: Literal["estop", "resume"]
    success: bool
    who: str
    at: float
    wall_time: str


class OperatorCommandOut(BaseModel):
    at: float
    wall_time: str
    who: str
    client: str
    robot_id: str
    action: str
    success: bool
    code: str
    message: str


class OperatorLogOut(BaseModel):
    entries: list[OperatorCommandOut]


_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or unknown bearer token"},
    403: {"model": ErrorOut, "description": "`operator_only`"},
    404: {"model": ErrorOut, "description": "`unknown_robot`"},
    409: {"model": CommandOut, "description": "`robot_refused` (e.g. hardware e-stop pressed)"},
    422: {"model": ErrorOut, "description": "`invalid_field`"},
    503: {"model": ErrorOut, "description": "`robot_unavailable`"},
    504: {"model": ErrorOut, "description": "`robot_timeout`"},
}


def robot_command_router(
    coordinator: FleetCoordinator,
    link: RobotLink,
    hub: EventHub,
    clock: Callable[[], float],
    operator_log: OperatorLog,
    operator: Callable[..., Any],
) -> APIRouter:
    """`operator` is the app's dependency that admits only the operator token."""
    router = APIRouter(prefix="/api/v1", tags=["operator"])
    OperatorDep = Annotated[Caller, Depends(operator)]
    RobotId = Annotated[str, Path(max_length=64)]

    async def command(robot_id: str, engaged: bool, caller: Caller, body: CommandBody | None,
                      request: Request) -> CommandOut:
        if not ROBOT_ID.fullmatch(robot_id):
            raise ApiError(422, "invalid_field", "robot_id must be a ROS name segment",
                           fields=["robot_id"])
        robots = await run_in_threadpool(coordinator.robots)  # takes the core's lock
        if robot_id not in {r.robot_id for r in robots}:
            raise ApiError(404, "unknown_robot", f"unknown robot {robot_id!r}")
        body = body or CommandBody()
        name = body.operator.strip()
        who = f"{caller.name} ({name})" if name else caller.name
        action: Literal["estop", "resume"] = "estop" if engaged else "resume"
        at, wall = clock(), wall_now()
        client = request.client.host if request.client is not None else "unknown"
        failure: RobotLinkError | None = None
        try:
            result = await link.set_remote_estop(robot_id, engaged, who)
            success, message = result.success, result.message
            code = "done" if success else "robot_refused"
        except RobotLinkError as error:
            failure = error
            success, code, message = False, error.code, str(error) or error.code
        if body.reason:
            message = f"{message} (reason given: {body.reason})"
        entry = OperatorCommand(at=at, wall_time=wall, who=who, client=client,
                                robot_id=robot_id, action=action, success=success, code=code,
                                message=message)
        await run_in_threadpool(operator_log.record, entry)  # fsync: off the loop
        hub.publish_event({"type": "operator_command", **entry.to_json()})
        if failure is not None:
            raise ApiError(failure.status, failure.code, message)
        out = CommandOut(code=code, message=message, robot_id=robot_id, action=action,
                         success=success, who=who, at=at, wall_time=wall)
        if not success:
            raise ApiError(409, code, message, extra=out.model_dump(exclude={"code", "message"}))
        return out

    @router.post("/robots/{robot_id}/estop", response_model=CommandOut, responses=_RESPONSES)
    async def estop(robot_id: RobotId, caller: OperatorDep, request: Request,
                    body: CommandBody | None = None) -> CommandOut:
        """Stop the robot now (latched until a resume)."""
        return await command(robot_id, True, caller, body, request)

    @router.post("/robots/{robot_id}/resume", response_model=CommandOut, responses=_RESPONSES)
    async def resume(robot_id: RobotId, caller: OperatorDep, request: Request,
                     body: CommandBody | None = None) -> CommandOut:
        """Release the remote e-stop and clear the robot's e-stop latches."""
        return await command(robot_id, False, caller, body, request)

    @router.get("/operator_log", response_model=OperatorLogOut, responses=_RESPONSES)
    async def log(caller: OperatorDep,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> OperatorLogOut:
        """The newest operator commands first."""
        return OperatorLogOut(entries=[OperatorCommandOut(**e.to_json())
                                       for e in operator_log.recent(limit)])

    return router

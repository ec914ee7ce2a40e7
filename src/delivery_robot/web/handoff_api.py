"""The recipient's endpoints: no token, the order id plus the PIN or QR token is the credential.

`POST /api/v1/handoff/{order_id}/verify` passes a credential to the robot that carries the
order, and the robot alone decides (`handoff/verify`: it holds the hashes, counts the tries
and locks the order out after 5 wrong ones). What is checked here first costs the robot
nothing: the input's form (a PIN is 6 digits: refused here, no try used), the order's state
(the robot must be waiting at the dropoff), and two token buckets, per order and per client
address, so nobody can hammer the robots through the coordinator. Order ids are unguessable
(`order_store.random_order_id`): the recipient link carries one, and without it nothing here
tells which orders exist.

`GET /api/v1/handoff/{order_id}` is what the recipient page shows: where the delivery is,
an ETA, the tries left after the last attempt. Robot-side handoff alarms (tamper, lockout,
lock fault) become alerts for the operator and the order's shop (`robot_alert`).
"""

import math
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from delivery_robot.api_auth import RateLimiter
from delivery_robot.credentials import PIN_DIGITS
from delivery_robot.fleet_coordinator import Audience, FleetCoordinator
from delivery_robot.handoff_credentials import MAX_CREDENTIAL_CHARS, Method
from delivery_robot.order_intake import MAX_ID_CHARS
from delivery_robot.order_lifecycle import OrderState
from delivery_robot.order_store import StoredOrder
from delivery_robot.web.api_errors import ApiError, ErrorOut
from delivery_robot.web.config import TabletSettings
from delivery_robot.web.eta import EtaEstimator
from delivery_robot.web.events import EventHub
from delivery_robot.web.robot_link import RobotEvent, RobotLink, RobotLinkError

PREFIX = "/api/v1/handoff"
_S = OrderState
# What the recipient is told about each order state (nothing about robots or shops' queues).
PUBLIC_STATUS: dict[OrderState, str] = {
    _S.REQUESTED: "preparing", _S.ASSIGNED: "preparing", _S.TO_PICKUP: "preparing",
    _S.AWAITING_LOAD: "preparing", _S.IN_TRANSIT: "on_the_way",
    _S.AWAITING_RECIPIENT: "arrived", _S.DELIVERED: "delivered", _S.RETURNING: "closed",
    _S.CANCELLED: "closed", _S.FAILED: "closed",
}
# HTTP status of the robot's answers (VerifyError codes and the handoff core's refusals).
VERDICT_STATUS: dict[str, int] = {
    "wrong_credential": 403, "wrong_order": 403, "already_used": 409, "expired": 410,
    "locked_out": 423, "malformed": 422, "unknown_order": 409, "not_at_dropoff": 409,
}
# Robot handoff events that become alerts, and the alert kind each one is shown as.
ROBOT_ALERT_KINDS: dict[str, str] = {
    "tamper": "tamper", "credential_lockout": "handoff_lockout", "lock_fault": "lock_fault",
    "lock_mismatch": "lock_fault", "moved_with_door_open": "moved_with_door_open",
    "no_show_relock": "no_show", "goods_not_taken": "goods_not_taken",
}
SHOP_ALERT_KINDS = frozenset({"tamper", "handoff_lockout", "no_show", "goods_not_taken"})
DEDUPE_S = 30.0  # one alert for a lockout the robot reports and the verify answer shows


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["pin", "qr"]
    credential: str = Field(min_length=1, max_length=MAX_CREDENTIAL_CHARS,
                            description=f"the {PIN_DIGITS}-digit PIN or the QR token's text")


class VerifyOut(BaseModel):
    """Also the body of a refusal (with its HTTP status): `code` says why."""

    order_id: str
    granted: bool
    code: str = Field(description="`granted`, or why not: wrong_credential, locked_out, ...")
    message: str
    attempts_left: int | None
    lockout_remaining_s: float


class HandoffStatus(BaseModel):
    order_id: str
    status: Literal["preparing", "on_the_way", "arrived", "delivered", "closed"]
    shop_name: str
    dropoff_waypoint: str
    dropoff_label: str
    eta_s: float | None
    attempts_left: int | None = Field(description="after the last try here; null: none yet")
    lockout_remaining_s: float


_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "`unknown_order`"},
    409: {"model": ErrorOut, "description": "`not_at_dropoff`, `already_delivered`, "
                                            "`order_closed`, or a refusal of the robot"},
    422: {"model": ErrorOut, "description": "`invalid_field`, `malformed` (no try used)"},
    429: {"model": ErrorOut, "description": "`rate_limited`; see Retry-After"},
    503: {"model": ErrorOut, "description": "`robot_unavailable`"},
    504: {"model": ErrorOut, "description": "`robot_timeout`"},
}


class _Attempts:
    """The last answer per order (for the page's status), and which alerts were raised."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[int, float]] = {}  # order -> (attempts_left, locked_until)
        self._alerted: dict[tuple[str, str, str], float] = {}

    def note(self, order_id: str, attempts_left: int, locked_until: float) -> None:
        with self._lock:
            self._last[order_id] = (attempts_left, locked_until)

    def last(self, order_id: str) -> tuple[int, float] | None:
        with self._lock:
            return self._last.get(order_id)

    def first_alert(self, key: tuple[str, str, str], now: float) -> bool:
        """True once per key within DEDUPE_S (monotonic time, not the order clock)."""
        with self._lock:
            self._alerted = {k: t for k, t in self._alerted.items() if now - t < DEDUPE_S}
            if key in self._alerted:
                return False
            self._alerted[key] = now
            return True


def handoff_router(
    coordinator: FleetCoordinator,
    link: RobotLink,
    hub: EventHub,
    clock: Callable[[], float],
    settings: TabletSettings,
    estimator: EtaEstimator,
    world_map: dict[str, Any],
) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["recipient"])
    per_order = RateLimiter(*settings.handoff_per_order)
    per_client = RateLimiter(*settings.handoff_per_client)
    limit_lock = threading.Lock()
    attempts = _Attempts()
    labels = {str(w["name"]): str(w.get("label") or str(w["name"]).replace("_", " "))
              for w in world_map.get("waypoints", [])}
    shop_names = {str(s["shop_id"]): str(s.get("name") or s["shop_id"])
                  for s in world_map.get("shops", [])}
    OrderId = Annotated[str, Path(max_length=MAX_ID_CHARS)]

    def limit(key: str, limiter: RateLimiter) -> None:
        with limit_lock:
            wait = limiter.allow(key, clock())
        if wait > 0:
            raise ApiError(429, "rate_limited", f"too many tries; retry in {wait:.0f} s",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})

    def client_of(request: Request) -> str:
        return request.client.host if request.client is not None else "unknown"

    async def find(order_id: str) -> StoredOrder:
        order = await run_in_threadpool(coordinator.get_order, order_id)
        if order is None:
            raise ApiError(404, "unknown_order", "no delivery with this number")
        return order

    def raise_alert(kind: str, order: StoredOrder | None, robot_id: str, message: str) -> None:
        order_id = order.order_id if order is not None else ""
        if not attempts.first_alert((kind, robot_id, order_id), time.monotonic()):
            return
        audience = Audience.BOTH if order is not None and kind in SHOP_ALERT_KINDS \
            else Audience.OPERATOR
        hub.publish_event({
            "type": "alert", "kind": kind, "audience": audience.value, "message": message,
            "order_id": order_id, "shop_id": order.shop_id if order is not None else "",
            "robot_id": robot_id})

    def robot_alert(event: RobotEvent) -> None:
        """A robot's handoff event (any thread): an alert if it is one the pages show."""
        kind = ROBOT_ALERT_KINDS.get(event.kind)
        if kind is None and not event.alarm:
            return
        order = coordinator.get_order(event.order_id) if event.order_id else None
        detail = f": {event.detail}" if event.detail else ""
        raise_alert(kind or event.kind, order, event.robot_id,
                    f"{event.robot_id}: {event.kind.replace('_', ' ')}{detail}")

    link.on_robot_event(robot_alert)

    @router.get("/{order_id}", response_model=HandoffStatus, responses=_RESPONSES)
    async def status(order_id: OrderId, request: Request) -> HandoffStatus:
        """What the recipient page shows; needs no token (the order id is the link)."""
        limit(f"client:{client_of(request)}", per_client)
        order = await find(order_id)
        eta = None
        if order.state is _S.IN_TRANSIT and order.robot_id is not None:
            place = await run_in_threadpool(_robot_place, coordinator, order.robot_id,
                                            estimator)
            estimate = estimator.eta(order.state, place, order.pickup_waypoint,
                                     order.dropoff_waypoint)
            eta = estimate.seconds if estimate is not None else None
        last = attempts.last(order.order_id)
        left, until = last if last is not None else (None, 0.0)
        remaining = max(0.0, until - clock())
        return HandoffStatus(
            order_id=order.order_id, status=PUBLIC_STATUS[order.state],  # type: ignore[arg-type]
            shop_name=shop_names.get(order.shop_id, order.shop_id),
            dropoff_waypoint=order.dropoff_waypoint,
            dropoff_label=labels.get(order.dropoff_waypoint, order.dropoff_waypoint),
            eta_s=eta, attempts_left=left, lockout_remaining_s=remaining)

    @router.post("/{order_id}/verify", response_model=VerifyOut,
                 responses={**_RESPONSES, 403: {"model": VerifyOut},
                            423: {"model": VerifyOut, "description": "`locked_out`"}})
    async def verify(order_id: OrderId, body: VerifyBody, request: Request) -> VerifyOut:
        """Open the compartment with the PIN or the QR token (one use; 5 wrong: lockout)."""
        limit(f"client:{client_of(request)}", per_client)
        method = Method.PIN if body.method == "pin" else Method.QR
        credential = body.credential.strip()
        if method is Method.PIN and (len(credential) != PIN_DIGITS
                                     or not credential.isascii() or not credential.isdigit()):
            raise ApiError(422, "malformed", f"a PIN is {PIN_DIGITS} digits",
                           fields=["credential"])
        order = await find(order_id)
        limit(f"order:{order.order_id}", per_order)
        if order.state is _S.DELIVERED:
            raise ApiError(409, "already_delivered", "this delivery was already handed over")
        if PUBLIC_STATUS[order.state] == "closed":
            raise ApiError(409, "order_closed", "this delivery was cancelled or is going back "
                           "to the shop")
        if order.state is not _S.AWAITING_RECIPIENT or order.robot_id is None:
            raise ApiError(409, "not_at_dropoff", "the robot has not arrived yet")
        try:
            verdict = await link.verify_handoff(order.robot_id, order.order_id, method,
                                                credential)
        except RobotLinkError as error:
            raise ApiError(error.status, error.code, str(error) or error.code) from None
        now = clock()
        attempts.note(order.order_id, verdict.attempts_left,
                      now + max(0.0, verdict.lockout_remaining_s))
        out = VerifyOut(order_id=order.order_id, granted=verdict.granted,
                        code="granted" if verdict.granted else verdict.error_code or "refused",
                        message=verdict.message, attempts_left=verdict.attempts_left,
                        lockout_remaining_s=verdict.lockout_remaining_s)
        if verdict.granted:
            return out
        headers = None
        if out.code == "locked_out":
            raise_alert("handoff_lockout", order, order.robot_id,
                        f"{order.robot_id}: order {order.order_id} locked out after wrong "
                        "codes at the dropoff")
            headers = {"Retry-After": str(max(1, math.ceil(verdict.lockout_remaining_s)))}
        raise ApiError(VERDICT_STATUS.get(out.code, 409), out.code, out.message,
                       headers=headers, extra=out.model_dump(exclude={"code", "message"}))

    return router


def _robot_place(coordinator: FleetCoordinator, robot_id: str,
                 estimator: EtaEstimator) -> str | None:
    for sample in coordinator.robot_samples():
        if sample.robot_id == robot_id:
            return estimator.place(sample.current_waypoint, sample.x, sample.y)
    return None

"""The shop JSON API (DESIGN.md "Shop API") over the thread-safe `FleetCoordinator`.

Handlers that touch the store are plain `def`s: FastAPI runs them on its thread pool, so a
durable SQLite commit or the PIN's scrypt never stalls the event loop (and the websockets on
it). Authentication and rate limiting are cheap and run on the loop. No `from __future__
import annotations` here: FastAPI reads the handlers' annotations, some of them local names.

Every error is `{"code", "message"[, "fields"]}` with a stable code; a shop asking for another
shop's order gets the same 404 as for an unknown id (no probing); nothing ever answers with a
stack trace: the outermost middleware turns any escaped exception into 500 `internal_error`.
"""

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from delivery_robot.api_auth import Caller, RateLimiter, TokenRegistry
from delivery_robot.fleet_coordinator import FleetCoordinator, Reply
from delivery_robot.order_intake import (
    MAX_ID_CHARS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_NOTE_CHARS,
    OrderRequest,
    RejectCode,
)
from delivery_robot.order_lifecycle import (
    TERMINAL_STATES,
    IllegalTransition,
    OrderState,
)
from delivery_robot.order_store import OrderEvent, StoredOrder
from delivery_robot.web.api_errors import ApiError, ErrorOut, error_response
from delivery_robot.web.config import TabletSettings
from delivery_robot.web.eta import EtaEstimator
from delivery_robot.web.events import OVERFLOW, EventHub
from delivery_robot.web.handoff_api import handoff_router
from delivery_robot.web.metrics import OrderKpis, fleet_kpis, order_kpis, prometheus_text
from delivery_robot.web.operator_log import OperatorLog
from delivery_robot.web.pages import install_pages
from delivery_robot.web.qr_svg import qr_svg
from delivery_robot.web.robot_commands import robot_command_router
from delivery_robot.web.robot_link import NoRobotLink, RobotLink

log = logging.getLogger("delivery_robot.web")

PREFIX = "/api/v1"
MAX_BODY_BYTES = 64 * 1024
# Hard cap on the note field's transport; notes between MAX_NOTE_CHARS and this get the
# core's own `note_too_long`, anything longer is refused before parsing the rest.
MAX_NOTE_TRANSPORT_CHARS = 4096
MAX_REASON_CHARS = 200
WS_AUTH_TIMEOUT_S = 5.0
WS_UNAUTHORIZED = 4401  # websocket close codes 4000-4999 are ours

# Status of each stable error code; the codes come from the core (order_intake, coordinator).
STATUS_OF_CODE: dict[str, int] = {
    **{code.value: 422 for code in RejectCode},
    RejectCode.IDEMPOTENCY_CONFLICT.value: 409,
    "unknown_order": 404,
    "not_cancellable": 409,
    "not_awaiting_load": 409,
    "illegal_transition": 409,
    "internal_error": 500,
}


# ---- bodies -------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderCreate(_Strict):
    """A new order. `shop_id` only for the operator (a shop's token already names its shop)."""

    dropoff_waypoint: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    size: Literal["small", "medium", "large"] | Annotated[StrictInt, Field(ge=0, le=2)]
    weight_kg: StrictFloat = Field(allow_inf_nan=False)
    note: str = Field("", max_length=MAX_NOTE_TRANSPORT_CHARS,
                      description=f"at most {MAX_NOTE_CHARS} characters")
    shop_id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)


class CancelBody(_Strict):
    reason: str = Field("", max_length=MAX_REASON_CHARS)


class OrderOut(BaseModel):
    order_id: str
    shop_id: str
    pickup_waypoint: str
    dropoff_waypoint: str
    size: Literal["small", "medium", "large"]
    weight_kg: float
    note: str
    state: str
    reason: str
    robot_id: str | None
    mission_id: str | None
    sequence: int
    created_at: float
    updated_at: float
    queue_reason: str = ""
    queue_position: int = Field(default=0, description="n >= 1: n-th order waiting for a robot")
    eta_s: float | None = Field(default=None,
                                description="rough estimate from the map (see eta_target)")
    eta_target: Literal["pickup", "dropoff"] | None = None
    promised_by: float | None = Field(default=None,
                                      description="delivery promised by this time (API clock)")


class EventOut(BaseModel):
    sequence: int
    previous_state: str
    state: str
    reason: str
    robot_id: str | None
    at: float


class OrderDetail(OrderOut):
    history: list[EventOut]


class CredentialsOut(BaseModel):
    """Shown once, on the request that created the order: pass them on to the recipient."""

    pin: str
    qr_token: str
    qr_svg: str = Field(description="the QR token as an inline SVG image")
    recipient_path: str = Field(description="the recipient's page, e.g. /handoff/<order id>")


class OrderCreated(BaseModel):
    order: OrderOut
    credentials: CredentialsOut | None
    replayed: bool = Field(description="true: an earlier request with this Idempotency-Key "
                                        "created the order; its credentials are not shown again")
    message: str


class OrderChanged(BaseModel):
    order: OrderOut
    message: str


class OrderList(BaseModel):
    orders: list[OrderOut]


class RobotOut(BaseModel):
    robot_id: str
    online: bool
    free: bool
    mode: str | None
    waypoint: str
    battery: float | None
    mission_id: str
    last_seen: float | None
    x: float | None = Field(default=None, description="map frame, m (online robots)")
    y: float | None = None


class RobotList(BaseModel):
    robots: list[RobotOut]


class MeOut(BaseModel):
    caller: str
    is_operator: bool
    shop_name: str | None
    now: float = Field(description="the server's clock (the pages compare times with it)")


class AlertOut(BaseModel):
    id: int
    at: float
    kind: str
    audience: str
    message: str
    order_id: str
    shop_id: str
    robot_id: str


class AlertList(BaseModel):
    alerts: list[AlertOut]


class OrderKpisOut(BaseModel):
    order_id: str
    shop_id: str
    state: str
    robot_id: str | None
    requested_at: float
    to_assigned_s: float | None
    to_picked_up_s: float | None
    to_delivered_s: float | None
    handoff_wait_s: float | None
    promised_by: float | None = None
    on_time: bool | None = Field(default=None, description="null: not delivered or no promise")


class FleetKpisOut(BaseModel):
    orders: int
    delivered: int
    cancelled: int
    failed: int
    open: int
    robots: int
    window_s: float
    deliveries_per_robot_hour: float | None
    on_time_rate: float | None = Field(description="share of delivered orders delivered by "
                                       "their promise; null before the first delivery")
    mean_to_assigned_s: float | None
    mean_to_picked_up_s: float | None
    mean_to_delivered_s: float | None
    mean_handoff_wait_s: float | None
    delivered_on_time: int = 0
    delivered_late: int = 0


class MetricsOut(BaseModel):
    fleet: FleetKpisOut
    orders: list[OrderKpisOut]


# ---- errors -------------------------------------------------------------------------------


_error = error_response


def _refused(reply: Reply) -> ApiError:
    code = reply.error_code or "internal_error"
    return ApiError(STATUS_OF_CODE.get(code, 400), code, reply.message)


def _field_name(loc: Sequence[int | str]) -> str:
    """The top-level field: deeper parts of `loc` name union branches, not fields."""
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return parts[0] if parts else "body"


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or unknown bearer token"},
    422: {"model": ErrorOut, "description": "invalid input (`invalid_field`, intake codes)"},
    429: {"model": ErrorOut, "description": "rate limited; see Retry-After"},
}
_ORDER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERROR_RESPONSES,
    404: {"model": ErrorOut, "description": "`unknown_order` (also another shop's order)"},
    409: {"model": ErrorOut, "description": "not possible in the order's current state"},
}


class _CatchAll:
    """Outermost guard: any exception becomes 500 `internal_error`, logged, never shown.

    Also refuses bodies over MAX_BODY_BYTES (by Content-Length) before anything reads them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
                response = _error(413, "payload_too_large",
                                  f"request body over {MAX_BODY_BYTES} bytes")
                await response(scope, receive, send)
                return
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            log.exception("shop API: unhandled error on %s %s", scope.get("method"),
                          scope.get("path"))
            if not started:
                response = _error(500, "internal_error",
                                  "the coordinator could not handle the request")
                await response(scope, receive, send)


# ---- conversions --------------------------------------------------------------------------


def _order_out(order: StoredOrder, queue_reason: str = "") -> OrderOut:
    return OrderOut(
        order_id=order.order_id, shop_id=order.shop_id, pickup_waypoint=order.pickup_waypoint,
        dropoff_waypoint=order.dropoff_waypoint, size=order.size.label,  # type: ignore[arg-type]
        weight_kg=order.weight_kg, note=order.note, state=order.state.label,
        reason=order.reason, robot_id=order.robot_id, mission_id=order.mission_id,
        sequence=order.sequence, created_at=order.created_at, updated_at=order.updated_at,
        queue_reason=queue_reason, promised_by=order.promised_by,
    )


def _event_out(event: OrderEvent) -> EventOut:
    return EventOut(sequence=event.sequence, previous_state=event.previous_state.label,
                    state=event.state.label, reason=event.reason, robot_id=event.robot_id,
                    at=event.at)


# ---- the app ------------------------------------------------------------------------------


def create_app(
    coordinator: FleetCoordinator,
    tokens: TokenRegistry,
    limiter: RateLimiter,
    clock: Callable[[], float],
    world_map: dict[str, Any],
    *,
    events: EventHub | None = None,
    robot_link: RobotLink | None = None,
    tablet: TabletSettings | None = None,
    operator_log: OperatorLog | None = None,
) -> FastAPI:
    """The API and the tablet pages.

    `events` is the hub the coordinator's effect sink feeds (the node's sink, or
    `effect_sink=hub.publish` in tests); without one the websocket gets no events.
    `robot_link` reaches the robots' handoff and safety services (none: those requests get a
    503). `tablet`: the pages' settings; `operator_log`: where e-stops are recorded (default:
    the file `tablet.operator_log_path` names, or memory only)."""
    hub = events if events is not None else EventHub()
    hub.set_clock(clock)
    link: RobotLink = robot_link if robot_link is not None else NoRobotLink()
    settings = tablet if tablet is not None else TabletSettings()
    record = operator_log if operator_log is not None else OperatorLog(
        settings.operator_log_path or None)
    estimator = EtaEstimator(world_map)
    shop_names = {str(s["shop_id"]): str(s.get("name") or s["shop_id"])
                  for s in world_map.get("shops", [])}
    limiter_lock = threading.Lock()  # RateLimiter is a plain dict of buckets
    app = FastAPI(
        title="delivery_robot shop API",
        version="1",
        description="Orders, robots and KPIs for shops and the fleet operator. "
                    "Authenticate with `Authorization: Bearer <token>`.",
    )
    app.state.events = hub
    app.add_middleware(_CatchAll)

    # -- error handlers ---------------------------------------------------------------------

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.code, exc.message, exc.fields, exc.headers, exc.extra)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(422, RejectCode.INVALID_FIELD.value,
                          "the request body is not valid JSON", ["body"])
        fields = list(dict.fromkeys(_field_name(e.get("loc", ())) for e in errors))
        details = "; ".join(dict.fromkeys(
            f"{_field_name(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors))
        return _error(422, RejectCode.INVALID_FIELD.value, details, fields)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    async def on_illegal(request: Request, exc: Exception) -> JSONResponse:
        return _error(409, "illegal_transition", str(exc))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(IllegalTransition, on_illegal)

    # -- auth -------------------------------------------------------------------------------

    def authenticate(authorization: str | None) -> Caller:
        caller = tokens.authenticate(authorization)
        if caller is None:
            raise ApiError(401, "unauthorized", "missing or unknown bearer token",
                           headers={"WWW-Authenticate": "Bearer"})
        with limiter_lock:
            wait = limiter.allow(caller.name, clock())
        if wait > 0:
            raise ApiError(429, "rate_limited", f"too many requests; retry in {wait:.1f} s",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return caller

    async def current_caller(
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Caller:
        return authenticate(authorization)

    async def operator_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        if not caller.is_operator:
            raise ApiError(403, "operator_only", "this needs the operator token")
        return caller

    CallerDep = Annotated[Caller, Depends(current_caller)]

    def visible_order(caller: Caller, order_id: str) -> StoredOrder:
        order = coordinator.get_order(order_id) if len(order_id) <= MAX_ID_CHARS else None
        if order is None or not caller.may_see(order.shop_id):
            raise ApiError(404, "unknown_order", f"unknown order {order_id!r}")
        return order

    def with_queue_reason(order: StoredOrder, fleet: _FleetView | None = None) -> OrderOut:
        """The order with its queue position and ETA (`fleet`: one snapshot for a list)."""
        view = fleet if fleet is not None else _FleetView.of(coordinator, estimator)
        waiting = order.state is OrderState.REQUESTED
        out = _order_out(order, coordinator.queue_reason(order.order_id) if waiting else "")
        if waiting:
            out.queue_position = view.queue_position(order.order_id)
        elif order.robot_id is not None:
            eta = estimator.eta(order.state, view.places.get(order.robot_id),
                                order.pickup_waypoint, order.dropoff_waypoint)
            if eta is not None:
                out.eta_s, out.eta_target = round(eta.seconds, 1), eta.target  # type: ignore[assignment]
        return out

    def orders_visible(caller: Caller, state: OrderState | None) -> list[StoredOrder]:
        if caller.is_operator:
            if state is None:
                return coordinator.list_orders()
            return coordinator.list_orders(state=state)
        orders = coordinator.list_orders(shop_id=caller.name, state=state)
        if state is None:
            orders = [o for o in orders if o.state not in TERMINAL_STATES]
        return orders

    # -- orders -----------------------------------------------------------------------------

    @app.post(f"{PREFIX}/orders", status_code=201, response_model=OrderCreated,
              responses={**_ERROR_RESPONSES, 200: {"model": OrderCreated,
                                                   "description": "idempotent replay"},
                         403: {"model": ErrorOut}, 409: {"model": ErrorOut}},
              tags=["orders"])
    def submit_order(
        body: OrderCreate,
        caller: CallerDep,
        idempotency_key: Annotated[str | None, Header(
            alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY_CHARS,
            description="retrying with the same key returns the same order")] = None,
    ) -> JSONResponse:
        """Create an order; the recipient PIN and QR token are in this response only."""
        if caller.is_operator:
            if body.shop_id is None:
                raise ApiError(422, RejectCode.INVALID_FIELD.value,
                               "the operator must name the shop_id", fields=["shop_id"])
            shop_id = body.shop_id
        else:
            if body.shop_id is not None and body.shop_id != caller.name:
                raise ApiError(403, "wrong_shop", "a shop token can order only for its shop")
            shop_id = caller.name
        request = OrderRequest(shop_id=shop_id, dropoff_waypoint=body.dropoff_waypoint,
                               size=body.size, weight_kg=float(body.weight_kg), note=body.note,
                               idempotency_key=idempotency_key or "")
        reply = coordinator.submit_order(request, clock())
        if not reply.accepted or reply.order is None:
            raise _refused(reply)
        replayed = reply.credentials is None
        credentials = None
        if reply.credentials is not None:
            order_id = reply.order.order_id
            credentials = CredentialsOut(
                pin=reply.credentials.pin, qr_token=reply.credentials.qr_token,
                qr_svg=qr_svg(reply.credentials.qr_token, f"QR code for delivery {order_id}"),
                recipient_path=f"/handoff/{order_id}")
        created = OrderCreated(
            order=with_queue_reason(reply.order),
            credentials=credentials,
            replayed=replayed,
            message=("order already created by an earlier request with this Idempotency-Key; "
                     "the recipient credentials were shown then" if replayed
                     else reply.message),
        )
        return JSONResponse(created.model_dump(mode="json"), status_code=200 if replayed else 201,
                            headers={"Cache-Control": "no-store"})

    @app.get(f"{PREFIX}/orders", response_model=OrderList, responses=_ERROR_RESPONSES,
             tags=["orders"])
    def list_orders(
        caller: CallerDep,
        state: Annotated[str | None, Query(max_length=32, description="an order state label; "
                                           "without it: the open orders")] = None,
    ) -> OrderList:
        wanted = None
        if state is not None:
            try:
                wanted = OrderState.from_label(state)
            except ValueError as error:
                raise ApiError(422, RejectCode.INVALID_FIELD.value, str(error),
                               fields=["state"]) from None
        orders = sorted(orders_visible(caller, wanted), key=lambda o: o.created_at)
        fleet = _FleetView.of(coordinator, estimator)
        return OrderList(orders=[with_queue_reason(o, fleet) for o in orders])

    @app.get(f"{PREFIX}/orders/{{order_id}}", response_model=OrderDetail,
             responses=_ORDER_RESPONSES, tags=["orders"])
    def get_order(order_id: str, caller: CallerDep) -> OrderDetail:
        order = visible_order(caller, order_id)
        out = with_queue_reason(order)
        history = [_event_out(e) for e in coordinator.history(order.order_id)]
        return OrderDetail(**out.model_dump(), history=history)

    @app.post(f"{PREFIX}/orders/{{order_id}}/loaded", response_model=OrderChanged,
              responses=_ORDER_RESPONSES, tags=["orders"])
    def confirm_loaded(order_id: str, caller: CallerDep) -> OrderChanged:
        """The shop put the goods in and closed the lid (awaiting_load -> in_transit)."""
        visible_order(caller, order_id)
        reply = coordinator.confirm_loaded(order_id, caller.name, clock())
        if not reply.accepted or reply.order is None:
            raise _refused(reply)
        return OrderChanged(order=_order_out(reply.order), message=reply.message)

    @app.post(f"{PREFIX}/orders/{{order_id}}/cancel", response_model=OrderChanged,
              responses=_ORDER_RESPONSES, tags=["orders"])
    def cancel_order(order_id: str, caller: CallerDep,
                     body: CancelBody | None = None) -> OrderChanged:
        """Before loading: cancelled at once; after: the goods ride back to the shop first."""
        visible_order(caller, order_id)
        reason = body.reason if body is not None else ""
        reply = coordinator.cancel_order(order_id, caller.name, reason, clock())
        if not reply.accepted or reply.order is None:
            raise _refused(reply)
        return OrderChanged(order=_order_out(reply.order), message=reply.message)

    # -- fleet ------------------------------------------------------------------------------

    @app.get(f"{PREFIX}/robots", response_model=RobotList, responses=_ERROR_RESPONSES,
             tags=["fleet"])
    def robots(caller: CallerDep) -> RobotList:
        poses = {s.robot_id: (s.x, s.y) for s in coordinator.robot_samples()}
        return RobotList(robots=[
            RobotOut(robot_id=r.robot_id, online=r.online, free=r.free,
                     mode=r.mode.name.lower() if r.mode is not None else None,
                     waypoint=r.waypoint, battery=r.battery, mission_id=r.mission_id,
                     last_seen=r.last_seen if math.isfinite(r.last_seen) else None,
                     x=poses[r.robot_id][0] if r.robot_id in poses else None,
                     y=poses[r.robot_id][1] if r.robot_id in poses else None)
            for r in coordinator.robots()
        ])

    @app.get(f"{PREFIX}/me", response_model=MeOut, responses=_ERROR_RESPONSES, tags=["fleet"])
    async def me(caller: CallerDep) -> MeOut:
        """Who the token belongs to (the pages show the shop's name)."""
        return MeOut(caller=caller.name, is_operator=caller.is_operator,
                     shop_name=None if caller.is_operator else shop_names.get(caller.name,
                                                                              caller.name),
                     now=clock())

    @app.get(f"{PREFIX}/alerts", response_model=AlertList, responses=_ERROR_RESPONSES,
             tags=["fleet"])
    async def alerts(caller: CallerDep) -> AlertList:
        """The newest alerts the caller may see (a page re-reads them after reconnecting)."""
        return AlertList(alerts=[AlertOut(**{k: a.get(k, "") for k in AlertOut.model_fields})
                                 for a in hub.recent_alerts(caller)])

    @app.get(f"{PREFIX}/map", responses=_ERROR_RESPONSES, tags=["fleet"])
    async def world(caller: CallerDep) -> dict[str, Any]:
        """Waypoints, lanes, zones and shops for drawing (map frame, metres)."""
        return world_map

    def kpis_of(caller: Caller) -> list[OrderKpis]:
        if caller.is_operator:
            orders = [o for s in OrderState for o in coordinator.list_orders(state=s)]
        else:
            orders = coordinator.list_orders(shop_id=caller.name)
        return [order_kpis(o, coordinator.history(o.order_id)) for o in orders]

    @app.get(f"{PREFIX}/metrics", response_model=MetricsOut, responses=_ERROR_RESPONSES,
             tags=["fleet"])
    def metrics_json(caller: CallerDep) -> MetricsOut:
        """KPIs of the caller's orders (the operator: all orders)."""
        per_order = kpis_of(caller)
        fleet = fleet_kpis(per_order, len(coordinator.robots()), clock())
        return MetricsOut(
            fleet=FleetKpisOut(**vars(fleet)),
            orders=[OrderKpisOut(**{**vars(k), "state": k.state.label}) for k in per_order],
        )

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={**_ERROR_RESPONSES, 403: {"model": ErrorOut}}, tags=["fleet"])
    def metrics_prometheus(caller: Annotated[Caller, Depends(operator_caller)]) -> str:
        """Prometheus text format; scrape with the operator token (`authorization` in the
        scrape config)."""
        per_order = kpis_of(caller)
        robots = coordinator.robots()
        fleet = fleet_kpis(per_order, len(robots), clock())
        return prometheus_text(per_order, fleet, sum(1 for r in robots if r.online))

    # -- recipient, operator commands, pages ----------------------------------------------

    app.include_router(handoff_router(coordinator, link, hub, clock, settings, estimator,
                                      world_map))
    app.include_router(robot_command_router(coordinator, link, hub, clock, record,
                                            operator_caller))
    install_pages(app, settings)

    # -- events -----------------------------------------------------------------------------

    @app.websocket(f"{PREFIX}/events")
    async def events_socket(websocket: WebSocket) -> None:
        """Order status events (and alerts addressed to the caller) as JSON messages.

        Token: `?token=...`, an `Authorization` header, or the first message (`{"token": ...}`
        or the bare token) within 5 s. Bad token: an error message, then close code 4401.
        """
        await websocket.accept()
        token = websocket.query_params.get("token")
        header = websocket.headers.get("authorization")
        if token is None and header is None:
            with contextlib.suppress(asyncio.TimeoutError, WebSocketDisconnect, KeyError):
                first = await asyncio.wait_for(websocket.receive_text(), WS_AUTH_TIMEOUT_S)
                token = _token_of_message(first)
        try:
            caller = authenticate(header if token is None else f"Bearer {token}")
        except ApiError as error:
            with contextlib.suppress(Exception):
                await websocket.send_json({"code": error.code, "message": error.message})
                await websocket.close(WS_UNAUTHORIZED if error.status == 401 else 4429)
            return
        sub = hub.subscribe(caller)
        try:
            await websocket.send_json({"type": "hello", "caller": caller.name})
            reader = asyncio.ensure_future(_drain_incoming(websocket))
            while True:
                getter = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait({getter, reader},
                                             return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    getter.cancel()
                    return
                event = getter.result()
                if event is OVERFLOW:
                    await websocket.send_json({"type": "overflow", "message": "too slow; "
                                               "reconnect and re-read GET /orders"})
                    await websocket.close(4408)
                    reader.cancel()
                    return
                await websocket.send_json(event)
        except WebSocketDisconnect:
            return
        finally:
            hub.unsubscribe(sub)

    return app


class _FleetView:
    """One snapshot of the robots' places and the waiting queue, for a list of orders."""

    def __init__(self, places: dict[str, str | None], waiting: list[str]) -> None:
        self.places = places
        self._position = {order_id: i for i, order_id in enumerate(waiting, 1)}

    @classmethod
    def of(cls, coordinator: FleetCoordinator, estimator: EtaEstimator) -> "_FleetView":
        places = {s.robot_id: estimator.place(s.current_waypoint, s.x, s.y)
                  for s in coordinator.robot_samples()}
        waiting = [o.order_id for o in coordinator.list_orders(state=OrderState.REQUESTED)]
        return cls(places, waiting)

    def queue_position(self, order_id: str) -> int:
        return self._position.get(order_id, 0)


def _token_of_message(text: str) -> str:
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("token"), str):
            return str(data["token"])
    return text.strip()


async def _drain_incoming(websocket: WebSocket) -> None:
    """Ignore what the client sends; return when it disconnects."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


"""The shop HTTP API over HTTP: auth, cross-shop refusal, every bad input, flows, websocket."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from delivery_robot.api_auth import RateLimiter, TokenRegistry, hash_token, new_token
from delivery_robot.credentials import ScryptParams
from delivery_robot.demo_map import DemoMap
from delivery_robot.fleet_coordinator import (
    CoordinatorPolicy,
    CoordinatorWorld,
    FleetCoordinator,
    RobotMode,
    RobotSample,
)
from delivery_robot.handoff_credentials import CredentialPolicy, HandoffCredentials
from delivery_robot.mission_legs import Leg
from delivery_robot.order_intake import RobotCapacity, SizeClass
from delivery_robot.order_store import OrderStore
from delivery_robot.web.config import load_api_config
from delivery_robot.web.events import EventHub
from delivery_robot.web.server import ApiServer
from delivery_robot.web.shop_api import create_app
from delivery_robot.web.world_map import map_from_demo_map

FAST = ScryptParams(log2_n=1, r=1, p=1)
DEMO = DemoMap(
    waypoints={"depot": (0.0, 0.0), "bakery": (30.0, 0.0), "pharmacy": (0.0, 30.0),
               "house_1": (60.0, 0.0), "house_2": (30.0, 30.0), "island": (90.0, 90.0)},
    shops={"bakery": "bakery", "pharmacy": "pharmacy"},
    depot="depot",
)
BAKERY, PHARMACY, OPS = new_token(), new_token(), new_token()
AUTH = {name: {"Authorization": f"Bearer {token}"}
        for name, token in (("bakery", BAKERY), ("pharmacy", PHARMACY), ("operator", OPS))}
ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Api:
    """A coordinator on a temp database and a TestClient on its API."""

    def __init__(self, tmp_path: Path, *, per_second: float = 1000.0, burst: int = 1000,
                 robot_link: Any = None, tablet: Any = None, operator_log: Any = None) -> None:
        self.clock = Clock()
        self.hub = EventHub()
        self.store = OrderStore(tmp_path / "orders.db", clock=self.clock)
        base = CoordinatorWorld.from_demo_map(DEMO)

        def travel(a: str, b: str) -> float | None:
            return None if "island" in (a, b) and a != b else base.travel_time(a, b)

        world = replace(base, travel_time=travel)
        self.core = FleetCoordinator(
            self.store, world,
            HandoffCredentials(CredentialPolicy(secret_key=b"k" * 32, pin_hash_cost=FAST)),
            fleet=[RobotCapacity(SizeClass.LARGE, 20.0)],
            policy=CoordinatorPolicy(), effect_sink=self.hub.publish, now=self.clock.t,
        )
        self.tokens = TokenRegistry({"bakery": hash_token(BAKERY),
                                     "pharmacy": hash_token(PHARMACY)}, hash_token(OPS))
        self.app = create_app(self.core, self.tokens, RateLimiter(per_second, burst), self.clock,
                              map_from_demo_map(DEMO), events=self.hub, robot_link=robot_link,
                              tablet=tablet, operator_log=operator_log)
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.responses: list[httpx.Response] = []

    def call(self, method: str, path: str, who: str | None = "bakery",
             **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if who is not None:
            headers.update(AUTH[who])
        response = self.client.request(method, path, headers=headers, **kw)
        self.responses.append(response)
        return response

    def submit(self, who: str = "bakery", **body: Any) -> httpx.Response:
        fields: dict[str, Any] = {"dropoff_waypoint": "house_1", "size": "medium",
                                  "weight_kg": 2.0}
        fields.update(body)
        headers = fields.pop("headers", {})
        return self.call("POST", "/api/v1/orders", who, json=fields, headers=headers)

    def robot_idle(self, robot: str = "robot1") -> None:
        self.core.on_robot_state(RobotSample(robot, RobotMode.IDLE, current_waypoint="depot"),
                                 self.clock.t)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    api = Api(tmp_path)
    yield api
    for response in api.responses:  # never a stack trace, whatever the test did
        assert "Traceback" not in response.text
        assert 'File "' not in response.text
    api.client.close()
    api.store.close()


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


# ---- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/orders", "/api/v1/robots", "/api/v1/map",
                                  "/api/v1/metrics", "/api/v1/orders/ord_x", "/metrics"])
@pytest.mark.parametrize("header", [None, "Bearer nope", f"Basic {BAKERY}",
                                    "Bearer " + "x" * 40])
def test_auth_required(api: Api, path: str, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = api.call("GET", path, None, headers=headers)
    error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_post_without_token_writes_nothing(api: Api) -> None:
    error(api.call("POST", "/api/v1/orders", None,
                   json={"dropoff_waypoint": "house_1", "size": 1, "weight_kg": 1.0}),
          401, "unauthorized")
    assert api.core.list_orders() == []


def test_cross_shop_refusal_looks_like_an_unknown_order(api: Api) -> None:
    order_id = api.submit().json()["order"]["order_id"]
    theirs = api.call("GET", f"/api/v1/orders/{order_id}", "pharmacy")
    unknown = api.call("GET", "/api/v1/orders/ord_doesnotexist", "pharmacy")
    assert error(theirs, 404, "unknown_order")["message"].replace(order_id, "X") == \
        error(unknown, 404, "unknown_order")["message"].replace("ord_doesnotexist", "X")
    error(api.call("POST", f"/api/v1/orders/{order_id}/cancel", "pharmacy"), 404,
          "unknown_order")
    error(api.call("POST", f"/api/v1/orders/{order_id}/loaded", "pharmacy"), 404,
          "unknown_order")
    assert api.call("GET", "/api/v1/orders", "pharmacy").json()["orders"] == []
    assert api.core.get_order(order_id).state.label == "requested"  # type: ignore[union-attr]
    error(api.submit("bakery", shop_id="pharmacy"), 403, "wrong_shop")


def test_operator_sees_all_and_may_order_for_a_shop(api: Api) -> None:
    a = api.submit("bakery").json()["order"]["order_id"]
    b = api.submit("pharmacy", dropoff_waypoint="house_2").json()["order"]["order_id"]
    listed = {o["order_id"] for o in api.call("GET", "/api/v1/orders", "operator").json()["orders"]}
    assert listed == {a, b}
    assert api.call("GET", f"/api/v1/orders/{b}", "operator").status_code == 200
    assert {o["order_id"] for o in api.call("GET", "/api/v1/orders").json()["orders"]} == {a}
    error(api.submit("operator"), 422, "invalid_field")
    made = api.submit("operator", shop_id="pharmacy")
    assert made.status_code == 201
    assert made.json()["order"]["shop_id"] == "pharmacy"


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"dropoff_waypoint": "nowhere"}, "unknown_dropoff", None),
    ({"dropoff_waypoint": "island"}, "unreachable_dropoff", None),
    ({"weight_kg": 50.0}, "too_heavy", None),
    ({"note": "n" * 281}, "note_too_long", None),
    ({"note": "n" * 5000}, "invalid_field", "note"),
    ({"dropoff_waypoint": "h" * 65}, "invalid_field", "dropoff_waypoint"),
    ({"weight_kg": "heavy"}, "invalid_field", "weight_kg"),
    ({"size": "huge"}, "invalid_field", "size"),
    ({"size": 7}, "invalid_field", "size"),
    ({"size": True}, "invalid_field", "size"),
    ({"dropoff_waypoint": 12}, "invalid_field", "dropoff_waypoint"),
    ({"weight_kg": -1.0}, "invalid_field", None),
    ({"colour": "red"}, "invalid_field", "colour"),
    ({"dropoff_waypoint": None}, "invalid_field", "dropoff_waypoint"),
])
def test_bad_input_gets_its_code(api: Api, body: dict[str, Any], code: str,
                                 field: str | None) -> None:
    answer = error(api.submit(**body), 422, code)
    if field is not None:
        assert field in answer["fields"]
    assert api.core.list_orders() == []  # nothing half-written


def test_missing_field_and_malformed_json(api: Api) -> None:
    answer = error(api.call("POST", "/api/v1/orders", json={"size": 1}), 422, "invalid_field")
    assert set(answer["fields"]) == {"dropoff_waypoint", "weight_kg"}
    broken = api.call("POST", "/api/v1/orders", content=b'{"dropoff_waypoint": "house_1",',
                      headers={"Content-Type": "application/json"})
    assert error(broken, 422, "invalid_field")["fields"] == ["body"]
    not_object = api.call("POST", "/api/v1/orders", json=[1, 2])
    error(not_object, 422, "invalid_field")
    huge = api.call("POST", "/api/v1/orders", content=b"x" * 70_000,
                    headers={"Content-Type": "application/json"})
    error(huge, 413, "payload_too_large")
    error(api.call("GET", "/api/v1/orders?state=lost"), 422, "invalid_field")
    long_key = api.submit(headers={"Idempotency-Key": "k" * 129})
    assert "Idempotency-Key" in error(long_key, 422, "invalid_field")["fields"]
    assert api.core.list_orders() == []


def test_unknown_route_and_method_have_our_shape(api: Api) -> None:
    error(api.call("GET", "/api/v1/nothing"), 404, "not_found")
    error(api.call("DELETE", "/api/v1/orders"), 405, "method_not_allowed")


def test_internal_error_never_shows_a_stack_trace(api: Api,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(order_id: str) -> None:
        raise RuntimeError("secret detail in /srv/db")

    monkeypatch.setattr(api.core, "get_order", boom)
    response = api.call("GET", "/api/v1/orders/ord_1")
    error(response, 500, "internal_error")
    assert "secret" not in response.text


# ---- idempotency and flows ----------------------------------------------------------------


def test_create_returns_credentials_once_and_retry_returns_the_same_order(api: Api) -> None:
    key = {"Idempotency-Key": "order-2024-0001"}
    first = api.submit(headers=key)
    assert first.status_code == 201, first.text
    created = first.json()
    assert re.fullmatch(r"\d{4,8}", created["credentials"]["pin"])
    assert created["credentials"]["qr_token"]
    assert created["replayed"] is False
    for _ in range(3):
        again = api.submit(headers=key)
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["replayed"] is True
        assert body["credentials"] is None
        assert body["order"]["order_id"] == created["order"]["order_id"]
    assert len(api.core.list_orders()) == 1
    conflict = api.submit(headers=key, dropoff_waypoint="house_2")
    error(conflict, 409, "idempotency_conflict")
    other_shop = api.submit("pharmacy", headers=key)  # keys are per shop
    assert other_shop.status_code == 201
    assert len(api.core.list_orders()) == 2


def test_loaded_and_cancel_flows(api: Api) -> None:
    api.robot_idle()
    created = api.submit().json()["order"]
    order_id = created["order_id"]
    assert created["state"] == "assigned"
    error(api.call("POST", f"/api/v1/orders/{order_id}/loaded"), 409, "not_awaiting_load")
    order = api.core.get_order(order_id)
    assert order is not None
    assert order.mission_id is not None
    for leg in (Leg.TO_PICKUP, Leg.AWAITING_LOAD):
        api.core.on_mission_feedback("robot1", order.mission_id, leg, api.clock.t)
    api.clock.t += 30.0
    loaded = api.call("POST", f"/api/v1/orders/{order_id}/loaded")
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["order"]["state"] == "in_transit"
    back = api.call("POST", f"/api/v1/orders/{order_id}/cancel", json={"reason": "wrong cake"})
    assert back.status_code == 200, back.text
    assert back.json()["order"]["state"] == "returning"  # goods ride back first
    error(api.call("POST", f"/api/v1/orders/{order_id}/cancel"), 409, "not_cancellable")
    detail = api.call("GET", f"/api/v1/orders/{order_id}").json()
    assert [e["state"] for e in detail["history"]][-2:] == ["in_transit", "returning"]

    queued = api.submit(dropoff_waypoint="house_2").json()["order"]  # robot1 is busy
    assert queued["state"] == "requested"
    assert queued["queue_reason"]
    cancelled = api.call("POST", f"/api/v1/orders/{queued['order_id']}/cancel")
    assert cancelled.json()["order"]["state"] == "cancelled"
    error(api.call("POST", f"/api/v1/orders/{queued['order_id']}/cancel"), 409,
          "not_cancellable")
    states = [o["state"] for o in api.call("GET", "/api/v1/orders?state=cancelled")
              .json()["orders"]]
    assert states == ["cancelled"]
    error(api.call("POST", f"/api/v1/orders/{order_id}/cancel", json={"reason": "r" * 201}),
          422, "invalid_field")


def test_rate_limit(tmp_path: Path) -> None:
    api = Api(tmp_path, per_second=0.5, burst=3)
    try:
        for _ in range(3):
            assert api.call("GET", "/api/v1/orders").status_code == 200
        limited = api.call("GET", "/api/v1/orders")
        error(limited, 429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 1
        assert api.call("GET", "/api/v1/orders", "pharmacy").status_code == 200  # per token
        api.clock.t += 2.0
        assert api.call("GET", "/api/v1/orders").status_code == 200
    finally:
        api.client.close()
        api.store.close()


# ---- robots, map, metrics, openapi --------------------------------------------------------


def test_robots_and_map(api: Api) -> None:
    api.robot_idle()
    robots = api.call("GET", "/api/v1/robots").json()["robots"]
    assert robots[0]["robot_id"] == "robot1"
    assert robots[0]["online"] is True
    assert robots[0]["mode"] == "idle"
    drawn = api.call("GET", "/api/v1/map").json()
    assert {w["name"] for w in drawn["waypoints"]} == set(DEMO.waypoints)
    assert {s["shop_id"] for s in drawn["shops"]} == {"bakery", "pharmacy"}


def _deliver(api: Api) -> str:
    api.robot_idle()
    order_id = api.submit().json()["order"]["order_id"]
    order = api.core.get_order(order_id)
    assert order is not None
    assert order.mission_id is not None
    mission = order.mission_id
    for dt, leg in ((10, Leg.TO_PICKUP), (20, Leg.AWAITING_LOAD)):
        api.clock.t += dt
        api.core.on_mission_feedback("robot1", mission, leg, api.clock.t)
    api.clock.t += 30
    assert api.call("POST", f"/api/v1/orders/{order_id}/loaded").status_code == 200
    for dt, leg in ((60, Leg.HANDOFF), (45, Leg.RETURNING)):
        api.clock.t += dt
        api.core.on_mission_feedback("robot1", mission, leg, api.clock.t)
    return order_id


def test_metrics_json_and_prometheus(api: Api) -> None:
    order_id = _deliver(api)
    assert api.core.get_order(order_id).state.label == "delivered"  # type: ignore[union-attr]
    api.submit("pharmacy", dropoff_waypoint="house_2")
    mine = api.call("GET", "/api/v1/metrics").json()
    assert [o["order_id"] for o in mine["orders"]] == [order_id]
    kpi = mine["orders"][0]
    assert kpi["to_assigned_s"] == 0.0
    assert kpi["to_picked_up_s"] == pytest.approx(60.0)
    assert kpi["to_delivered_s"] == pytest.approx(165.0)
    assert kpi["handoff_wait_s"] == pytest.approx(45.0)
    assert mine["fleet"]["delivered"] == 1
    assert mine["fleet"]["on_time_rate"] == pytest.approx(1.0)  # delivered within its promise
    assert mine["orders"][0]["on_time"] is True
    assert mine["fleet"]["deliveries_per_robot_hour"] > 0
    assert len(api.call("GET", "/api/v1/metrics", "operator").json()["orders"]) == 2

    error(api.call("GET", "/metrics"), 403, "operator_only")
    text = api.call("GET", "/metrics", "operator")
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    label = r'[a-zA-Z_]\w*="[^"]*"'
    sample = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{" + label + "(," + label + r")*\})?"
                        r" [-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
    for line in text.text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or sample.match(line), line
    assert 'delivery_orders{state="delivered"} 1' in text.text
    assert "delivery_request_to_delivered_seconds_count 1" in text.text


def test_openapi_lists_the_endpoints(api: Api) -> None:
    schema = api.call("GET", "/openapi.json", None).json()
    paths = schema["paths"]
    for path in ("/api/v1/orders", "/api/v1/orders/{order_id}", "/api/v1/orders/{order_id}/loaded",
                 "/api/v1/orders/{order_id}/cancel", "/api/v1/robots", "/api/v1/map",
                 "/api/v1/metrics", "/metrics"):
        assert path in paths, path
    assert {"OrderCreate", "OrderCreated", "ErrorOut", "OrderOut"} <= set(
        schema["components"]["schemas"])
    assert "201" in paths["/api/v1/orders"]["post"]["responses"]


# ---- websocket ----------------------------------------------------------------------------


def test_websocket_gets_own_shop_events_only(api: Api) -> None:
    with api.client.websocket_connect(f"/api/v1/events?token={BAKERY}") as bakery, \
            api.client.websocket_connect("/api/v1/events") as pharmacy:
        pharmacy.send_json({"token": PHARMACY})
        assert bakery.receive_json()["caller"] == "bakery"
        assert pharmacy.receive_json()["caller"] == "pharmacy"
        theirs = api.submit("pharmacy", dropoff_waypoint="house_2").json()["order"]["order_id"]
        mine = api.submit("bakery").json()["order"]["order_id"]
        event = bakery.receive_json()
        assert event["type"] == "order_status"
        assert event["order_id"] == mine
        assert event["state"] == "requested"
        assert pharmacy.receive_json()["order_id"] == theirs


def test_websocket_refuses_a_bad_token(api: Api) -> None:
    from starlette.websockets import WebSocketDisconnect

    with api.client.websocket_connect("/api/v1/events?token=" + "z" * 30) as ws:
        assert ws.receive_json()["code"] == "unauthorized"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4401


# ---- config and a real server -------------------------------------------------------------


def test_demo_config_matches_demo_tokens() -> None:
    import yaml

    config = load_api_config(ROOT / "config/shop_api.yaml")
    demo = yaml.safe_load((ROOT / "config/demo_tokens.yaml").read_text())
    assert demo["demo_only"] is True
    registry = config.token_registry()
    for shop, token in demo["shops"].items():
        caller = registry.authenticate(f"Bearer {token}")
        assert caller is not None
        assert caller.name == shop
    operator = registry.authenticate(f"Bearer {demo['operator']}")
    assert operator is not None
    assert operator.is_operator


def test_real_uvicorn_on_loopback(api: Api) -> None:
    server = ApiServer(api.app, "127.0.0.1", 0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base, timeout=5.0) as client:
            created = client.post("/api/v1/orders", headers=AUTH["bakery"],
                                  json={"dropoff_waypoint": "house_1", "size": 0,
                                        "weight_kg": 1})
            assert created.status_code == 201, created.text
            order_id = created.json()["order"]["order_id"]
            got = client.get(f"/api/v1/orders/{order_id}", headers=AUTH["bakery"])
            assert got.status_code == 200
            assert got.json()["order_id"] == order_id
            error(client.get(f"/api/v1/orders/{order_id}", headers=AUTH["pharmacy"]), 404,
                  "unknown_order")
            error(client.post("/api/v1/orders", headers=AUTH["bakery"], content=b"{"), 422,
                  "invalid_field")
    finally:
        server.stop()
    assert not server._thread.is_alive()




def test_shipped_config_is_marked_as_demo_tokens() -> None:
    """The coordinator refuses a config marked demo_tokens unless allow_demo_tokens is set."""
    from delivery_robot.web.config import load_api_config, parse_api_config

    shipped = load_api_config(Path(__file__).resolve().parents[1] / "config/shop_api.yaml")
    assert shipped.demo_tokens
    own = parse_api_config({"operator_token_sha256": "ab" * 32, "shops": {}})
    assert not own.demo_tokens

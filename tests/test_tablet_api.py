"""The tablet's API additions over HTTP: the recipient's verify and status (no token), the
operator's e-stop/resume with its record, /me, /alerts, ETA and queue fields, the pages and
their texts. The robots are `EmulatedRobots` (the handoff rules on the coordinator's own
credential records), or doubles that fail the way a ROS link can."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_shop_api import BAKERY, FAST, OPS, Api, error

from delivery_robot.handoff_credentials import CredentialPolicy, Method
from delivery_robot.mission_legs import Leg
from delivery_robot.web.config import TabletSettings, load_api_config, parse_api_config
from delivery_robot.web.emulated_robots import EmulatedRobots
from delivery_robot.web.operator_log import OperatorLog
from delivery_robot.web.robot_link import (
    CommandResult,
    HandoffVerdict,
    RobotEvent,
    RobotEventHandler,
    RobotTimeout,
    RobotUnavailable,
)

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "src/delivery_robot/web/static"
TEMPLATES = ROOT / "src/delivery_robot/web/templates"
POLICY = CredentialPolicy(secret_key=b"k" * 32, pin_hash_cost=FAST)  # the Api core's key


class Tablet(Api):
    """The shop API test rig with emulated robots behind the robot link."""

    def __init__(self, tmp_path: Path, link: Any = None, **kw: Any) -> None:
        self.robots: EmulatedRobots | None = None
        if link is None:
            store_box: list[Any] = []
            self.robots = link = EmulatedRobots(
                POLICY, lambda o: self.core.get_order(o), lambda o: store_box[0].credentials(o),
                lambda: self.clock.t, robot_ids=("robot1", "robot2"))
        self.operator_log = kw.pop("operator_log", None) or OperatorLog()
        super().__init__(tmp_path, robot_link=link, operator_log=self.operator_log, **kw)
        if self.robots is not None:
            store_box.append(self.store)

    def order_at_dropoff(self, who: str = "bakery") -> tuple[str, dict[str, Any]]:
        """An order whose robot waits at the dropoff; returns its id and credentials."""
        self.robot_idle()
        created = self.submit(who).json()
        order_id = created["order"]["order_id"]
        mission = self.core.get_order(order_id).mission_id  # type: ignore[union-attr]
        assert mission is not None
        for leg in (Leg.TO_PICKUP, Leg.AWAITING_LOAD):
            self.core.on_mission_feedback("robot1", mission, leg, self.clock.t)
        assert self.call("POST", f"/api/v1/orders/{order_id}/loaded", who).status_code == 200
        self.core.on_mission_feedback("robot1", mission, Leg.HANDOFF, self.clock.t)
        return order_id, created["credentials"]

    def verify(self, order_id: str, credential: str, method: str = "pin",
               **kw: Any) -> httpx.Response:
        return self.call("POST", f"/api/v1/handoff/{order_id}/verify", None,
                         json={"method": method, "credential": credential}, **kw)


@pytest.fixture
def tablet(tmp_path: Path) -> Iterator[Tablet]:
    rig = Tablet(tmp_path)
    yield rig
    for response in rig.responses:
        assert "Traceback" not in response.text
    rig.client.close()
    rig.store.close()


def close(rig: Tablet) -> None:
    rig.client.close()
    rig.store.close()


# ---- recipient: verify ----------------------------------------------------------------------


def test_right_pin_opens_once_and_needs_no_token(tablet: Tablet) -> None:
    order_id, credentials = tablet.order_at_dropoff()
    opened = tablet.verify(order_id, credentials["pin"])
    assert opened.status_code == 200, opened.text
    body = opened.json()
    assert body["granted"] is True
    assert body["code"] == "granted"
    assert tablet.robots is not None
    assert tablet.robots.verify_calls == [("robot1", order_id, Method.PIN)]
    again = error(tablet.verify(order_id, credentials["pin"]), 409, "already_used")
    assert again["granted"] is False
    mission = tablet.core.get_order(order_id).mission_id  # type: ignore[union-attr]
    tablet.core.on_mission_feedback("robot1", mission, Leg.RETURNING, tablet.clock.t)  # type: ignore[arg-type]
    error(tablet.verify(order_id, credentials["pin"]), 409, "already_delivered")


def test_qr_token_opens_and_another_orders_token_does_not(tablet: Tablet) -> None:
    order_id, credentials = tablet.order_at_dropoff()
    other = tablet.submit("bakery", dropoff_waypoint="house_2").json()["credentials"]
    wrong = error(tablet.verify(order_id, other["qr_token"], "qr"), 403, "wrong_order")
    assert wrong["attempts_left"] == 5  # a genuine token of another order costs no try
    assert tablet.verify(order_id, credentials["qr_token"], "qr").json()["granted"] is True


def test_five_wrong_pins_lock_out_and_tell_shop_and_operator(tablet: Tablet) -> None:
    order_id, credentials = tablet.order_at_dropoff()
    left = [error(tablet.verify(order_id, "000000"), 403, "wrong_credential")["attempts_left"]
            for _ in range(4)]
    assert left == [4, 3, 2, 1]
    status = tablet.call("GET", f"/api/v1/handoff/{order_id}", None).json()
    assert status["attempts_left"] == 1
    locked = tablet.verify(order_id, "000000")
    body = error(locked, 423, "locked_out")
    assert body["attempts_left"] == 0
    assert body["lockout_remaining_s"] > 0
    assert int(locked.headers["Retry-After"]) >= 1
    error(tablet.verify(order_id, credentials["pin"]), 423, "locked_out")  # even the right one
    status = tablet.call("GET", f"/api/v1/handoff/{order_id}", None).json()
    assert status["lockout_remaining_s"] > 0
    kinds = [a["kind"] for a in tablet.call("GET", "/api/v1/alerts", "operator").json()["alerts"]]
    assert kinds.count("handoff_lockout") == 1  # the robot's event and the answer: one alert
    assert [a["order_id"] for a in tablet.call("GET", "/api/v1/alerts").json()["alerts"]] == \
        [order_id]
    assert tablet.call("GET", "/api/v1/alerts", "pharmacy").json()["alerts"] == []
    tablet.clock.t += POLICY.lockout_s + 1  # after the cool-down the right PIN opens
    assert tablet.verify(order_id, credentials["pin"]).json()["granted"] is True


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"method": "pin", "credential": "12ab56"}, "malformed", "credential"),
    ({"method": "pin", "credential": "12345"}, "malformed", "credential"),
    ({"method": "pin", "credential": "١٢٣٤٥٦"}, "malformed", "credential"),  # not ASCII digits
    ({"method": "sms", "credential": "123456"}, "invalid_field", "method"),
    ({"method": "pin", "credential": ""}, "invalid_field", "credential"),
    ({"method": "pin"}, "invalid_field", "credential"),
    ({"method": "qr", "credential": "x" * 513}, "invalid_field", "credential"),
    ({"method": "pin", "credential": "123456", "shop": "bakery"}, "invalid_field", "shop"),
])
def test_bad_verify_input_never_reaches_the_robot(tablet: Tablet, body: dict[str, Any],
                                                  code: str, field: str) -> None:
    order_id, _ = tablet.order_at_dropoff()
    response = tablet.call("POST", f"/api/v1/handoff/{order_id}/verify", None, json=body)
    assert field in error(response, 422, code)["fields"]
    assert tablet.robots is not None
    assert tablet.robots.verify_calls == []


def test_verify_refuses_before_the_robot_is_there_and_after_cancel(tablet: Tablet) -> None:
    error(tablet.verify("ord_doesnotexist", "123456"), 404, "unknown_order")
    error(tablet.verify("o" * 65, "123456"), 422, "invalid_field")
    tablet.robot_idle()
    created = tablet.submit().json()
    order_id, pin = created["order"]["order_id"], created["credentials"]["pin"]
    error(tablet.verify(order_id, pin), 409, "not_at_dropoff")
    tablet.call("POST", f"/api/v1/orders/{order_id}/cancel")
    error(tablet.verify(order_id, pin), 409, "order_closed")
    assert tablet.robots is not None
    assert tablet.robots.verify_calls == []


def test_verify_is_rate_limited_per_order_and_per_client(tmp_path: Path) -> None:
    settings = replace(TabletSettings(), handoff_per_order=(0.01, 2),
                       handoff_per_client=(0.01, 6))
    rig = Tablet(tmp_path, tablet=settings)
    try:
        order_id, _ = rig.order_at_dropoff()
        for _ in range(2):
            error(rig.verify(order_id, "000000"), 403, "wrong_credential")
        limited = error(rig.verify(order_id, "000000"), 429, "rate_limited")
        assert limited["message"]
        other_id = rig.submit(dropoff_waypoint="house_2").json()["order"]["order_id"]
        error(rig.verify(other_id, "000000"), 409, "not_at_dropoff")  # another order: allowed
        for _ in range(2):  # the client's bucket (6) is now spent, whatever the order
            rig.call("GET", f"/api/v1/handoff/{other_id}", None)
        error(rig.call("GET", f"/api/v1/handoff/{other_id}", None), 429, "rate_limited")
        assert rig.robots is not None
        assert len(rig.robots.verify_calls) == 2
    finally:
        close(rig)


class FailingLink:
    def __init__(self, failure: Exception) -> None:
        self.failure = failure

    async def verify_handoff(self, robot_id: str, order_id: str, method: Method,
                             credential: str) -> HandoffVerdict:
        raise self.failure

    async def set_remote_estop(self, robot_id: str, engaged: bool, who: str) -> CommandResult:
        raise self.failure

    def on_robot_event(self, handler: RobotEventHandler) -> None:
        return None


@pytest.mark.parametrize(("failure", "status", "code"), [
    (RobotUnavailable("no /robot1/handoff/verify service"), 503, "robot_unavailable"),
    (RobotTimeout("/robot1/handoff/verify did not answer within 3 s"), 504, "robot_timeout"),
])
def test_robot_link_failures_are_clear_errors(tmp_path: Path, failure: Exception, status: int,
                                              code: str) -> None:
    rig = Tablet(tmp_path, link=FailingLink(failure))
    try:
        order_id, credentials = rig.order_at_dropoff()
        body = error(rig.verify(order_id, credentials["pin"]), status, code)
        assert "robot1" in body["message"]
        stopped = rig.call("POST", "/api/v1/robots/robot1/estop", "operator")
        error(stopped, status, code)
        entry = rig.operator_log.recent(1)[0]  # the failed attempt is on record too
        assert (entry.action, entry.success, entry.code) == ("estop", False, code)
    finally:
        close(rig)


def test_recipient_status_follows_the_order(tablet: Tablet) -> None:
    error(tablet.call("GET", "/api/v1/handoff/ord_nope", None), 404, "unknown_order")
    tablet.robot_idle()
    order_id = tablet.submit().json()["order"]["order_id"]
    status = tablet.call("GET", f"/api/v1/handoff/{order_id}", None).json()
    assert status["status"] == "preparing"
    assert status["dropoff_waypoint"] == "house_1"
    assert status["dropoff_label"] == "house 1"
    assert status["shop_name"] == "bakery"
    assert status["attempts_left"] is None
    mission = tablet.core.get_order(order_id).mission_id  # type: ignore[union-attr]
    for leg in (Leg.TO_PICKUP, Leg.AWAITING_LOAD):
        tablet.core.on_mission_feedback("robot1", mission, leg, tablet.clock.t)  # type: ignore[arg-type]
    tablet.call("POST", f"/api/v1/orders/{order_id}/loaded")
    tablet.robot_idle()  # the robot reports where it is: at the depot (0, 0)
    moving = tablet.call("GET", f"/api/v1/handoff/{order_id}", None).json()
    assert moving["status"] == "on_the_way"
    assert moving["eta_s"] == pytest.approx(60.0 / 1.5)  # depot -> house_1, 60 m at 1.5 m/s
    assert "robot_id" not in moving  # the recipient learns nothing about the fleet


# ---- operator: e-stop and resume ------------------------------------------------------------


def test_estop_and_resume_are_operator_only(tablet: Tablet) -> None:
    tablet.robot_idle()
    error(tablet.call("POST", "/api/v1/robots/robot1/estop", None), 401, "unauthorized")
    error(tablet.call("POST", "/api/v1/robots/robot1/estop", "bakery"), 403, "operator_only")
    error(tablet.call("POST", "/api/v1/robots/robot1/resume", "bakery"), 403, "operator_only")
    error(tablet.call("GET", "/api/v1/operator_log", "bakery"), 403, "operator_only")
    error(tablet.call("POST", "/api/v1/robots/robot9/estop", "operator"), 404, "unknown_robot")
    error(tablet.call("POST", "/api/v1/robots/robot-1!/estop", "operator"), 422,
          "invalid_field")
    error(tablet.call("POST", "/api/v1/robots/robot1/estop", "operator",
                      json={"operator": "k" * 65}), 422, "invalid_field")
    error(tablet.call("POST", "/api/v1/robots/robot1/estop", "operator",
                      json={"who": "kim"}), 422, "invalid_field")
    assert tablet.robots is not None
    assert tablet.robots.safety["robot1"].commands == []
    assert tablet.operator_log.recent() == []


def test_estop_and_resume_are_recorded_with_who_and_when(tablet: Tablet) -> None:
    tablet.robot_idle()
    assert tablet.robots is not None
    with tablet.client.websocket_connect(f"/api/v1/events?token={OPS}") as ops, \
            tablet.client.websocket_connect(f"/api/v1/events?token={BAKERY}") as shop:
        assert ops.receive_json()["type"] == "hello"
        assert shop.receive_json()["type"] == "hello"
        tablet.clock.t = 5000.0
        stopped = tablet.call("POST", "/api/v1/robots/robot1/estop", "operator",
                              json={"operator": "Kim Minji", "reason": "child on the path"})
        assert stopped.status_code == 200, stopped.text
        out = stopped.json()
        assert (out["code"], out["action"], out["success"]) == ("done", "estop", True)
        assert out["who"] == "operator (Kim Minji)"
        assert out["at"] == 5000.0
        assert tablet.robots.safety["robot1"].remote_estop
        event = ops.receive_json()
        assert event["type"] == "operator_command"
        assert (event["robot_id"], event["action"], event["who"]) == \
            ("robot1", "estop", "operator (Kim Minji)")
        tablet.robots.safety["robot1"].hardware_pressed = True
        refused = tablet.call("POST", "/api/v1/robots/robot1/resume", "operator")
        body = error(refused, 409, "robot_refused")
        assert body["success"] is False
        assert "hardware e-stop" in body["message"]
        tablet.robots.safety["robot1"].hardware_pressed = False
        assert tablet.call("POST", "/api/v1/robots/robot1/resume", "operator").json()["success"]
        tablet.submit()  # the shop's socket gets its order events, never operator commands
        assert shop.receive_json()["type"] == "order_status"
    log = tablet.call("GET", "/api/v1/operator_log", "operator").json()["entries"]
    assert [(e["action"], e["success"], e["code"]) for e in log] == [
        ("resume", True, "done"), ("resume", False, "robot_refused"), ("estop", True, "done")]
    assert log[2]["who"] == "operator (Kim Minji)"
    assert "child on the path" in log[2]["message"]
    assert log[2]["wall_time"].endswith("+00:00")
    assert tablet.robots.safety["robot1"].commands == [
        ("operator (Kim Minji)", True), ("operator", False), ("operator", False)]


def test_operator_log_file_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ops" / "operator_log.jsonl"
    rig = Tablet(tmp_path, operator_log=OperatorLog(path))
    try:
        rig.robot_idle()
        rig.call("POST", "/api/v1/robots/robot1/estop", "operator", json={"operator": "lee"})
    finally:
        close(rig)
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["who"] == "operator (lee)"
    with path.open("a") as handle:
        handle.write('{"torn": ')  # a crash mid-write
    reread = OperatorLog(path).recent()
    assert [(e.robot_id, e.action, e.who) for e in reread] == [("robot1", "estop",
                                                                "operator (lee)")]


# ---- alerts, me, order fields -----------------------------------------------------------


def test_robot_tamper_event_becomes_an_alert_for_operator_and_shop(tablet: Tablet) -> None:
    order_id, _ = tablet.order_at_dropoff()
    assert tablet.robots is not None
    with tablet.client.websocket_connect(f"/api/v1/events?token={BAKERY}") as shop:
        assert shop.receive_json()["type"] == "hello"
        tablet.robots.emit(RobotEvent("robot1", "tamper", order_id, "door opened while locked",
                                      10.0, True))
        tablet.robots.emit(RobotEvent("robot1", "lock_command", order_id, "lock", 10.0, False))
        alert = shop.receive_json()
        assert (alert["type"], alert["kind"], alert["order_id"]) == ("alert", "tamper", order_id)
        assert alert["id"] >= 1
    kinds = [a["kind"] for a in tablet.call("GET", "/api/v1/alerts", "operator").json()["alerts"]]
    assert kinds == ["tamper"]
    assert tablet.call("GET", "/api/v1/alerts", "pharmacy").json()["alerts"] == []


def test_me_names_the_caller(tablet: Tablet) -> None:
    tablet.clock.t = 1234.5
    assert tablet.call("GET", "/api/v1/me").json() == {
        "caller": "bakery", "is_operator": False, "shop_name": "bakery", "now": 1234.5}
    assert tablet.call("GET", "/api/v1/me", "operator").json()["is_operator"] is True
    error(tablet.call("GET", "/api/v1/me", None), 401, "unauthorized")


def test_orders_carry_queue_position_eta_and_credentials_to_pass_on(tablet: Tablet) -> None:
    first = tablet.submit().json()  # no robot has reported yet: queued
    second = tablet.submit("pharmacy", dropoff_waypoint="house_2").json()
    assert first["order"]["queue_position"] == 1
    assert second["order"]["queue_position"] == 2
    credentials = first["credentials"]
    assert credentials["qr_svg"].startswith('<svg role="img" aria-label="QR code for delivery ')
    assert credentials["recipient_path"] == f"/handoff/{first['order']['order_id']}"
    listed = tablet.call("GET", "/api/v1/orders", "operator").json()["orders"]
    assert [o["queue_position"] for o in listed] == [1, 2]
    tablet.robot_idle()  # robot1 at the depot takes the first order
    mine = tablet.call("GET", "/api/v1/orders").json()["orders"][0]
    assert mine["state"] == "assigned"
    assert mine["queue_position"] == 0
    assert mine["eta_target"] == "pickup"
    assert mine["eta_s"] == pytest.approx(30.0 / 1.5)  # depot -> bakery, 30 m
    theirs = tablet.call("GET", "/api/v1/orders", "pharmacy").json()["orders"][0]
    assert theirs["queue_position"] == 1
    robots = tablet.call("GET", "/api/v1/robots").json()["robots"]
    assert (robots[0]["x"], robots[0]["y"]) == (0.0, 0.0)


# ---- pages, texts, config -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/shop", "/ops", "/handoff/ord_0123456789abcdef"])
def test_pages_are_served_with_a_strict_policy(tmp_path: Path, path: str) -> None:
    rig = Tablet(tmp_path, tablet=replace(TabletSettings(), default_language="en"))
    try:
        page = rig.call("GET", path, None)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        assert '<html lang="en" data-default-lang="en"' in page.text
        assert "{{" not in page.text
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
            assert rig.call("GET", asset, None).status_code == 200, asset
        assert "<script>" not in page.text  # no inline script (the policy would block it)
    finally:
        close(rig)


def test_handoff_page_escapes_the_order_id(tablet: Tablet) -> None:
    page = tablet.call("GET", '/handoff/"><img src=x onerror=alert(1)>', None)
    assert page.status_code == 200
    assert "<img src=x" not in page.text
    assert 'data-order-id="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in page.text
    assert tablet.call("GET", "/", None, follow_redirects=False).headers["location"] == "/shop"


def _messages() -> dict[str, dict[str, str]]:
    text = (STATIC / "i18n.js").read_text()
    tables: dict[str, dict[str, str]] = {}
    for lang, body in re.findall(r"\n  (en|ko): \{\n(.*?)\n  \},", text, re.S):
        tables[lang] = dict(re.findall(r'^\s+"([\w.]+)": "((?:[^"\\]|\\.)*)",$', body, re.M))
    return tables


def test_both_languages_have_every_text() -> None:
    tables = _messages()
    assert set(tables) == {"en", "ko"}
    assert len(tables["en"]) > 200
    assert set(tables["en"]) == set(tables["ko"])
    for key, korean in tables["ko"].items():  # the same placeholders in both
        assert set(re.findall(r"\{\w+\}", korean)) == \
            set(re.findall(r"\{\w+\}", tables["en"][key])), key
    used = set()
    for path in [*TEMPLATES.glob("*.html"), *STATIC.glob("*.js")]:
        source = path.read_text()
        used |= set(re.findall(r'data-i18n="([\w.]+)"', source))
        used |= set(re.findall(r'DR\.t\("([\w.]+)"', source))
        used |= set(re.findall(r'"(?:aria-label):([\w.]+)"', source))
    # Keys built from a prefix ("state." + state) are checked against their values below.
    missing = {key for key in used if key not in tables["en"] and not key.endswith((".", "_"))}
    assert not missing, missing
    from delivery_robot.fleet_coordinator import RobotMode
    from delivery_robot.web.handoff_api import PUBLIC_STATUS

    dynamic = {f"handoff.status_{s}" for s in [*PUBLIC_STATUS.values(), "unknown", "offline"]}
    dynamic |= {f"mode.{m.name.lower()}" for m in RobotMode}
    dynamic |= {"conn.live", "conn.reconnecting", "ops.done_estop", "ops.done_resume",
                "ops.log_estop", "ops.log_resume"}
    dynamic |= {f"ops.status_{s}" for s in ("ok", "offline", "estop", "fault")}
    assert dynamic <= set(tables["en"]), dynamic - set(tables["en"])
    states = re.findall(r'"state\.(\w+)"', (STATIC / "i18n.js").read_text())
    from delivery_robot.order_lifecycle import OrderState

    assert {s.label for s in OrderState} <= set(states)
    from delivery_robot.fleet_coordinator import AlertKind
    from delivery_robot.web.handoff_api import ROBOT_ALERT_KINDS

    alert_kinds = {k.value for k in AlertKind} | set(ROBOT_ALERT_KINDS.values())
    alert_kinds |= {"loaded_order_stuck"}  # computed on /ops
    assert {f"alert.{kind}" for kind in alert_kinds} <= set(tables["en"])


def test_tablet_config_is_read_and_checked() -> None:
    shipped = load_api_config(ROOT / "config/shop_api.yaml").tablet
    assert shipped.default_language == "ko"
    assert shipped.idle_warning_s >= 20
    assert shipped.operator_log_path
    base = {"operator_token_sha256": "ab" * 32, "shops": {}}
    custom = parse_api_config({**base, "tablet": {"default_language": "en",
                                                  "idle_timeout_s": {"shop": 300}},
                               "handoff_rate_limit": {"per_order": {"burst": 3}}}).tablet
    assert (custom.default_language, custom.shop_idle_timeout_s) == ("en", 300.0)
    assert custom.handoff_per_order == (0.2, 3)
    for bad, what in [({"tablet": {"default_language": "fr"}}, "default_language"),
                      ({"tablet": {"idle_warning_s": 5}}, "idle_warning_s"),
                      ({"tablet": {"idle_timeout_s": {"shop": 30}}}, "shop"),
                      ({"tablet": {"idle_timeout_s": {"kiosk": 300}}}, "kiosk"),
                      ({"handoff_rate_limit": {"per_client": {"per_second": 0}}},
                       "handoff_rate_limit")]:
        with pytest.raises(ValueError, match=what):
            parse_api_config({**base, **bad})

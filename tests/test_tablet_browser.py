"""The tablet pages in a real browser (Debian's Chromium driven by Playwright).

The server is the real app under uvicorn on a free loopback port, on a real `FleetCoordinator`
core with the `town` world (`web.tablet_demo.TabletDemo`); robots move through their legs by
the `robot_state` samples the coordinator node would feed the core, and their handoff and
safety services are `EmulatedRobots` (the handoff rules on the coordinator's own credential
records). Assertions read data attributes (states, kinds) where the words depend on the
language, and the words where the language is the point.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from delivery_robot.web.config import TabletSettings
from delivery_robot.web.robot_link import RobotEvent
from delivery_robot.web.tablet_demo import FAST_PIN_HASH, TabletDemo, showcase

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
expect.set_options(timeout=10_000)

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
SEVERE = ("serious", "critical")


class ManualClock:
    """The coordinator's clock, moved by the test (starts at the wall time)."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def make_demo(tmp_path: Path, **settings: Any) -> TabletDemo:
    tablet = replace(TabletSettings(), loaded_order_stuck_after_s=60.0, **settings)
    return TabletDemo(tmp_path, clock=ManualClock(), pin_hash_cost=FAST_PIN_HASH, tablet=tablet,
                      robots=("robot1", "robot2", "robot3"))


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[TabletDemo]:
    rig = make_demo(tmp_path)
    rig.start()
    yield rig
    rig.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """New pages, each in a browser context of its own (its own storage: one device)."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(url: str, *, lang: str | None = None, fake_clock: bool = False) -> Any:
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        if lang is not None:
            context.add_init_script(f"localStorage.setItem('dr.lang', '{lang}')")
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{url}: {error}"))
        if fake_clock:
            page.clock.install()
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == []


def sign_in(page: Any, token: str) -> None:
    page.fill("#token", token)
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def card(page: Any, order_id: str) -> Any:
    return page.locator(f"#orders li[data-order-id='{order_id}']")


def order_at_dropoff(demo: TabletDemo, shop: str = "bakery") -> tuple[str, Any]:
    return demo.to_the_door(shop, "house_s3")


def axe_violations(page: Any) -> list[dict[str, Any]]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [v for v in results.response["violations"] if v.get("impact") in SEVERE]


def describe(violations: list[dict[str, Any]]) -> str:
    return "\n".join(f"{v['id']} ({v['impact']}): {v['help']} at "
                     f"{[n['target'] for n in v['nodes']][:3]}" for v in violations)


# ---- the delivery, end to end --------------------------------------------------------------


def test_shop_orders_robot_loads_recipient_opens_shop_sees_delivered(
        demo: TabletDemo, open_page: Callable[..., Any]) -> None:
    shop = open_page(demo.url + "/shop")
    sign_in(shop, demo.tokens["bakery"])
    expect(shop.locator("#who")).to_contain_text("Hanbit Bakery")
    shop.click(".map-pin[data-waypoint='house_s3']")  # the dropoff, picked on the map
    expect(shop.locator("#dropoff")).to_have_value("house_s3")
    expect(shop.locator(".map-pin[data-waypoint='house_s3']")).to_have_attribute(
        "aria-pressed", "true")
    shop.check("input[name=size][value=small]", force=True)
    shop.fill("#note", "문 앞에 놓아 주세요")
    shop.click("#order-submit")

    credentials = shop.locator("#credentials")
    expect(credentials).to_be_visible()
    pin = shop.inner_text("#cred-pin .pin-digits")
    assert re.fullmatch(r"\d{6}", pin)
    expect(shop.locator("#cred-qr svg[role=img]")).to_be_visible()
    order_id = credentials.get_attribute("data-order-id")
    assert order_id is not None
    expect(shop.locator("#cred-link")).to_have_text(f"{demo.url}/handoff/{order_id}")
    shop.click("#cred-done")
    expect(credentials).to_be_hidden()
    expect(shop.locator("#cred-pin")).to_be_empty()  # gone from the page once passed on

    expect(card(shop, order_id)).to_have_attribute("data-state", "assigned")  # robot1 was idle
    assert demo.order(order_id).note == "문 앞에 놓아 주세요"
    demo.drive_to_shop(order_id)
    expect(card(shop, order_id)).to_have_attribute("data-state", "to_pickup")
    demo.arrive_at_shop(order_id)
    loaded = card(shop, order_id).locator("[data-action=loaded]")
    expect(loaded).to_be_visible()
    expect(loaded).to_have_text("적재 완료 — 출발")  # the configured default language: ko
    loaded.click()
    expect(card(shop, order_id)).to_have_attribute("data-state", "in_transit")
    demo.drive_to_dropoff(order_id)
    demo.arrive_at_dropoff(order_id)
    expect(card(shop, order_id)).to_have_attribute("data-state", "awaiting_recipient")

    recipient = open_page(f"{demo.url}/handoff/{order_id}")  # the recipient's own phone
    expect(recipient.locator("#status")).to_have_attribute("data-status", "arrived")
    for digit in pin:
        recipient.click(f"#keypad [data-key='{digit}']")
    expect(recipient.locator("#pin")).to_have_value(pin)
    recipient.click("#open")
    expect(recipient.locator("#feedback")).to_have_attribute("data-kind", "success")

    expect(shop.locator(f"#history li[data-order-id='{order_id}']")).to_have_attribute(
        "data-state", "delivered")
    expect(card(shop, order_id)).to_have_count(0)
    expect(recipient.locator("#status")).to_have_attribute("data-status", "delivered")
    assert demo.order(order_id).state.label == "delivered"


def test_wrong_pins_lock_the_order_out_and_the_shop_is_told(
        demo: TabletDemo, open_page: Callable[..., Any]) -> None:
    shop = open_page(demo.url + "/shop", lang="en")
    sign_in(shop, demo.tokens["bakery"])
    order_id, credentials = order_at_dropoff(demo)
    recipient = open_page(f"{demo.url}/handoff/{order_id}", lang="en")
    expect(recipient.locator("#status")).to_have_attribute("data-status", "arrived")
    expect(recipient.locator("#attempts")).to_have_text("You have 5 tries.")
    for left in (4, 3, 2, 1):
        expect(recipient.locator("#open")).to_be_enabled()
        recipient.fill("#pin", "000000")
        recipient.click("#open")
        expect(recipient.locator("#feedback")).to_have_text(
            f"✖Wrong PIN. Tries left: {left}.")
        expect(recipient.locator("#attempts")).to_have_text(f"Tries left: {left}")
    recipient.fill("#pin", "000000")
    recipient.click("#open")
    expect(recipient.locator("#feedback")).to_contain_text("Too many wrong tries")
    expect(recipient.locator("#attempts")).to_contain_text("Try again in")
    expect(recipient.locator("#open")).to_be_disabled()
    # Even the right PIN is refused during the cool-down (the robot's rule).
    refused = recipient.evaluate("""pin => fetch(
        location.pathname.replace('/handoff/', '/api/v1/handoff/') + '/verify',
        {method: 'POST', headers: {'Content-Type': 'application/json'},
         body: JSON.stringify({method: 'pin', credential: pin})}).then(r => r.status)""",
                                 credentials.pin)
    assert refused == 423
    assert demo.order(order_id).state.label == "awaiting_recipient"

    notice = shop.locator("#notice-list li")
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text("PIN lockout")
    ops = open_page(demo.url + "/ops")
    sign_in(ops, demo.tokens["operator"])
    expect(ops.locator("#alerts li[data-kind='handoff_lockout']")).to_have_count(1)


def test_a_shop_never_sees_another_shops_orders(demo: TabletDemo,
                                                open_page: Callable[..., Any]) -> None:
    bakery = open_page(demo.url + "/shop")
    sign_in(bakery, demo.tokens["bakery"])
    pharmacy = open_page(demo.url + "/shop")
    sign_in(pharmacy, demo.tokens["pharmacy"])
    pharmacy.select_option("#dropoff", "house_s5")
    pharmacy.click("#order-submit")
    expect(pharmacy.locator("#credentials")).to_be_visible()
    theirs = pharmacy.locator("#credentials").get_attribute("data-order-id")
    assert theirs is not None
    demo.drive_to_shop(theirs)
    demo.arrive_at_shop(theirs)  # more events about their order
    bakery.select_option("#dropoff", "house_s1")
    bakery.click("#order-submit")
    expect(bakery.locator("#credentials")).to_be_visible()
    mine = bakery.locator("#credentials").get_attribute("data-order-id")
    expect(card(bakery, mine)).to_have_count(1)  # events reach a socket in order: by now
    expect(bakery.locator(f"[data-order-id='{theirs}']")).to_have_count(0)  # theirs would have
    expect(card(pharmacy, theirs)).to_have_attribute("data-state", "awaiting_load")
    expect(pharmacy.locator(f"[data-order-id='{mine}']")).to_have_count(0)
    status = bakery.evaluate("""([id, token]) => fetch('/api/v1/orders/' + id,
        {headers: {Authorization: 'Bearer ' + token}}).then(r => r.status)""",
                             [theirs, demo.tokens["bakery"]])
    assert status == 404


def test_the_page_reconnects_and_resyncs_after_the_server_drops(
        demo: TabletDemo, open_page: Callable[..., Any]) -> None:
    shop = open_page(demo.url + "/shop")
    sign_in(shop, demo.tokens["bakery"])
    order, _ = demo.submit("bakery", "house_s2")
    expect(card(shop, order.order_id)).to_have_attribute("data-state", "assigned")
    port = int(demo.url.rsplit(":", 1)[1])
    demo.stop()
    expect(shop.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    demo.drive_to_shop(order.order_id)  # missed: nobody is connected
    demo.arrive_at_shop(order.order_id)
    demo.start(port=port)
    expect(shop.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    expect(card(shop, order.order_id)).to_have_attribute("data-state", "awaiting_load")
    demo.drive_to_dropoff(order.order_id)  # and live again afterwards
    expect(card(shop, order.order_id)).to_have_attribute("data-state", "in_transit")


# ---- the operator ---------------------------------------------------------------------------


def test_operator_stops_and_resumes_a_robot_and_sees_alerts(
        demo: TabletDemo, open_page: Callable[..., Any]) -> None:
    order, _ = demo.submit("bakery", "house_s4")  # loaded and then nothing moves for 2 min
    demo.drive_to_shop(order.order_id)
    demo.arrive_at_shop(order.order_id)
    demo.core.confirm_loaded(order.order_id, "bakery", demo.clock())
    demo.clock.t += 120  # type: ignore[attr-defined]
    ops = open_page(demo.url + "/ops", lang="en")
    sign_in(ops, demo.tokens["operator"])
    expect(ops.locator("#alerts li[data-kind='loaded_order_stuck']")).to_have_count(1)
    ops.fill("#operator-name", "Kim")
    robot1 = ops.locator("#robots li[data-robot-id='robot1']")
    robot1.locator("[data-action=estop]").click()
    expect(robot1.locator(".result")).to_contain_text("by operator (Kim)")
    assert demo.robots.safety["robot1"].remote_estop
    expect(ops.locator("#log li[data-action='estop']")).to_contain_text("operator (Kim)")
    expect(robot1).to_have_attribute("data-status", "estop")  # the robot reports MODE_ESTOP
    expect(ops.locator("#alerts li[data-kind='robot_estop']").first).to_be_visible()

    robot1.locator("[data-action=resume]").click()
    expect(ops.locator("#confirm-dialog")).to_be_visible()
    ops.click("#confirm-yes")
    expect(ops.locator("#log li[data-action='resume']")).to_contain_text("done")
    assert not demo.robots.safety["robot1"].remote_estop
    assert [c[1] for c in demo.robots.safety["robot1"].commands] == [True, False]
    expect(robot1).not_to_have_attribute("data-status", "estop")

    demo.robots.emit(RobotEvent("robot2", "tamper", "", "door opened while locked",
                                demo.clock(), True))
    tamper = ops.locator("#alerts li[data-kind='tamper']")
    expect(tamper).to_contain_text("Tamper")
    demo.robots.offline.add("robot2")
    demo.clock.t += 10  # type: ignore[attr-defined]
    demo.heartbeat()  # robot1 reports, robot2 is silent past the heartbeat timeout
    expect(ops.locator("#robots li[data-robot-id='robot2']")).to_have_attribute(
        "data-status", "offline")
    expect(ops.locator("#alerts li[data-kind='robot_offline']").first).to_be_visible()
    tamper.locator("[data-action=ack]").click()
    expect(tamper).to_have_count(0)
    expect(ops.locator("#ops-map .map-robot[data-robot='robot1']")).to_be_visible()


# ---- language, timeouts, accessibility --------------------------------------------------


def test_language_default_comes_from_config_and_the_switch_sticks(
        tmp_path: Path, open_page: Callable[..., Any]) -> None:
    demo = make_demo(tmp_path, default_language="en")
    demo.start()
    try:
        page = open_page(demo.url + "/shop")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#sign-in-h")).to_have_text("Sign in")
        page.click("#lang-switch")
        expect(page.locator("html")).to_have_attribute("lang", "ko")
        expect(page.locator("#sign-in-h")).to_have_text("로그인")
        expect(page.locator("#lang-switch")).to_have_text("English")
        page.reload()
        expect(page.locator("#sign-in-h")).to_have_text("로그인")
    finally:
        demo.close()


def test_idle_sign_out_is_warned_and_can_be_extended(
        tmp_path: Path, open_page: Callable[..., Any]) -> None:
    demo = make_demo(tmp_path, shop_idle_timeout_s=120.0, idle_warning_s=30.0)
    demo.start()
    try:
        page = open_page(demo.url + "/shop", lang="en", fake_clock=True)
        sign_in(page, demo.tokens["bakery"])
        dialog = page.locator("#idle-dialog")
        page.clock.run_for(95_000)
        expect(dialog).to_be_visible()
        expect(page.locator("#idle-text")).to_contain_text("signed out in 30 seconds")
        expect(page.locator("#idle-countdown")).to_have_text("0:25")
        expect(page.locator("#idle-extend")).to_be_focused()
        page.click("#idle-extend")
        expect(dialog).to_be_hidden()
        page.clock.run_for(80_000)  # 80 s after "more time": still in, no warning yet
        expect(page.locator("#app")).to_be_visible()
        expect(dialog).to_be_hidden()
        page.clock.run_for(45_000)  # nobody answers the warning
        expect(page.locator("#sign-in")).to_be_visible()
        expect(page.locator("#sign-in-error")).to_contain_text("not used")
        assert page.evaluate("sessionStorage.getItem('dr.token.shop')") is None
    finally:
        demo.close()


def test_recipient_pin_entry_is_cleared_after_a_warning(
        demo: TabletDemo, open_page: Callable[..., Any]) -> None:
    order_id, _ = order_at_dropoff(demo)
    page = open_page(f"{demo.url}/handoff/{order_id}", lang="en", fake_clock=True)
    expect(page.locator("#status")).to_have_attribute("data-status", "arrived")
    page.click("#keypad [data-key='4']")
    page.click("#keypad [data-key='2']")
    page.clock.run_for(95_000)
    expect(page.locator("#idle-dialog")).to_be_visible()
    expect(page.locator("#idle-text")).to_contain_text("cleared")
    page.clock.run_for(30_000)
    expect(page.locator("#pin")).to_have_value("")
    expect(page.locator("#feedback")).to_contain_text("cleared")


def _rich_pages(demo: TabletDemo, open_page: Callable[..., Any], lang: str) -> dict[str, Any]:
    """Each page with something in every part: cards, credentials, history, alerts, log,
    feedback."""
    orders = showcase(demo)
    shop = open_page(demo.url + "/shop", lang=lang)
    sign_in(shop, demo.tokens["bakery"])
    shop.select_option("#dropoff", "house_s2")
    shop.click("#order-submit")
    expect(shop.locator("#credentials")).to_be_visible()
    expect(card(shop, orders["waiting"]).locator("[data-action=loaded]")).to_be_visible()
    expect(shop.locator("#history li")).to_have_count(1)
    expect(shop.locator("#notice-list li")).to_have_count(1)
    ops = open_page(demo.url + "/ops", lang=lang)
    sign_in(ops, demo.tokens["operator"])
    expect(ops.locator("#alerts li[data-kind='tamper']")).to_have_count(1)
    ops.locator("#robots li[data-robot-id='robot2'] [data-action=estop]").click()
    expect(ops.locator("#log li")).to_have_count(1)
    recipient = open_page(f"{demo.url}/handoff/{orders['at_door']}", lang=lang)
    expect(recipient.locator("#status")).to_have_attribute("data-status", "arrived")
    recipient.fill("#pin", "000000")
    recipient.click("#open")
    expect(recipient.locator("#feedback")).to_have_attribute("data-kind", "error")
    return {"shop": shop, "ops": ops, "handoff": recipient}


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_no_serious_accessibility_violations(demo: TabletDemo, open_page: Callable[..., Any],
                                             lang: str) -> None:
    signed_out = {name: open_page(f"{demo.url}/{name}", lang=lang) for name in ("shop", "ops")}
    for name, page in signed_out.items():
        expect(page.locator("#sign-in")).to_be_visible()
        assert not (found := axe_violations(page)), f"{name} sign-in:\n{describe(found)}"
    for name, page in _rich_pages(demo, open_page, lang).items():
        assert not (found := axe_violations(page)), f"{name} ({lang}):\n{describe(found)}"


TARGETS = """() => {
  const small = [];
  const visible = (el) => { const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden'; };
  for (const el of document.querySelectorAll('button, input, select, textarea, summary, a')) {
    if (!visible(el) || el.classList.contains('skip-link')) continue;
    const target = ['checkbox', 'radio'].includes(el.type) ? el.closest('label') : el;
    const r = target.getBoundingClientRect();
    if (r.width < 48 || r.height < 48) {
      small.push(`${el.tagName}#${el.id}.${el.className} ${r.width}x${r.height}`);
    }
  }
  return small;
}"""

OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const out = [];
  const page = document.documentElement.scrollWidth;
  if (page > width + 1) out.push('page ' + page);
  const selector = 'button, label, h1, h2, h3, p, dd, dt, li, input, select, textarea';
  for (const el of document.querySelectorAll(selector)) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > width + 1 || r.left < -1)) {
      out.push(`${el.tagName}#${el.id} ${r.left}-${r.right}`);
    }
  }
  return out;
}"""


def test_touch_targets_and_text_at_200_percent(demo: TabletDemo,
                                               open_page: Callable[..., Any]) -> None:
    pages = _rich_pages(demo, open_page, "ko")
    for name, page in pages.items():
        assert page.evaluate(TARGETS) == [], name
        page.evaluate("document.documentElement.style.fontSize = '200%'")
        assert page.evaluate(OVERFLOW) == [], f"{name} at 200 %"
        heading = page.locator("h1")
        assert heading.evaluate("e => parseFloat(getComputedStyle(e).fontSize)") >= 48

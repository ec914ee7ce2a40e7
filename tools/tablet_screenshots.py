"""Screenshots of the tablet pages in Korean and English, for docs/tablet.md.

    tools/ros_env python tools/tablet_screenshots.py [--out docs/screenshots] [--audit]

Runs the real app on a real coordinator core with emulated robots (`web.tablet_demo`, the
`town` world), puts orders in every state the pages show (`tablet_demo.showcase`), drives
Debian's Chromium with Playwright at a 1280x800 tablet viewport and saves
`<page>_<lang>.png` for /shop, /handoff/<order> and /ops. `--audit` also prints every axe-core
finding (all impacts) per page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}


def _page(browser: Any, url: str, lang: str) -> Any:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.add_init_script(f"localStorage.setItem('dr.lang', '{lang}')")
    page = context.new_page()
    page.goto(url)
    return page


def _sign_in(page: Any, token: str) -> None:
    from playwright.sync_api import expect

    page.fill("#token", token)
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def capture(out: Path, audit: bool) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    from delivery_robot.web.tablet_demo import FAST_PIN_HASH, TabletDemo, showcase

    saved: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for lang in ("ko", "en"):
            with tempfile.TemporaryDirectory(prefix="tablet_screenshots_") as workdir:
                demo = TabletDemo(workdir, robots=("robot1", "robot2", "robot3"),
                                  pin_hash_cost=FAST_PIN_HASH)
                demo.start()
                try:
                    orders = showcase(demo)
                    shop = _page(browser, demo.url + "/shop", lang)
                    _sign_in(shop, demo.tokens["bakery"])
                    shop.select_option("#dropoff", "house_s2")
                    shop.fill("#note", "벨 누르지 마세요" if lang == "ko" else "Please don't ring")
                    shop.click("#order-submit")
                    expect(shop.locator("#credentials")).to_be_visible()
                    shop.evaluate("document.activeElement.blur()")
                    ops = _page(browser, demo.url + "/ops", lang)
                    _sign_in(ops, demo.tokens["operator"])
                    ops.fill("#operator-name", "김민지" if lang == "ko" else "Kim Minji")
                    ops.locator("#robots li[data-robot-id='robot2'] [data-action=estop]").click()
                    expect(ops.locator("#log li")).to_have_count(1)
                    ops.evaluate("document.activeElement.blur()")
                    recipient = _page(browser, f"{demo.url}/handoff/{orders['at_door']}", lang)
                    expect(recipient.locator("#status")).to_have_attribute("data-status",
                                                                           "arrived")
                    recipient.fill("#pin", "000000")
                    recipient.click("#open")
                    expect(recipient.locator("#feedback")).to_have_attribute("data-kind",
                                                                             "error")
                    recipient.fill("#pin", "24")
                    recipient.evaluate("document.activeElement.blur()")
                    for name, page in (("shop", shop), ("handoff", recipient), ("ops", ops)):
                        path = out / f"{name}_{lang}.png"
                        page.screenshot(path=str(path), full_page=True)
                        saved.append(path)
                        if audit:
                            _audit(page, f"{name} ({lang})")
                        page.context.close()
                finally:
                    demo.close()
        browser.close()
    return saved


def _audit(page: Any, title: str) -> None:
    from axe_playwright_python.sync_playwright import Axe

    violations = Axe().run(page).response["violations"]
    print(f"axe-core, {title}: {len(violations)} findings")
    for v in violations:
        targets = [n["target"] for n in v["nodes"]][:3]
        print(f"  {v['impact']:<8} {v['id']}: {v['help']} {targets}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--audit", action="store_true", help="print axe-core findings too")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: install Debian's chromium package", file=sys.stderr)
        return 2
    for path in capture(args.out, args.audit):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The tablet pages: `/shop`, `/handoff/{order_id}` and `/ops`, plain HTML, CSS and JS.

No build step: `templates/*.html` are filled with the page's settings (language, timeouts) as
data attributes, and `static/` is served as it is. The pages talk to the JSON API and the
websocket like any client. A strict Content-Security-Policy (scripts and styles only from
this server, no inline script) keeps an injected order note from ever running as code.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from delivery_robot.web.config import TabletSettings

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the recipient link must not leak to other sites
    "Cache-Control": "no-store",
}


def _render(name: str, values: dict[str, str]) -> HTMLResponse:
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", escape(value, quote=True))
    return HTMLResponse(text, headers=PAGE_HEADERS)


def install_pages(app: FastAPI, settings: TabletSettings) -> None:
    router = APIRouter(include_in_schema=False)
    common = {"lang": settings.default_language,
              "idle_warning_s": f"{settings.idle_warning_s:g}"}

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/shop")

    @router.get("/shop")
    async def shop() -> HTMLResponse:
        return _render("shop.html", {**common,
                                     "idle_timeout_s": f"{settings.shop_idle_timeout_s:g}"})

    @router.get("/ops")
    async def ops() -> HTMLResponse:
        return _render("ops.html", {
            **common, "idle_timeout_s": f"{settings.ops_idle_timeout_s:g}",
            "stuck_after_s": f"{settings.loaded_order_stuck_after_s:g}"})

    @router.get("/handoff/{order_id}")
    async def handoff(order_id: str) -> HTMLResponse:
        return _render("handoff.html", {
            **common, "idle_timeout_s": f"{settings.handoff_idle_timeout_s:g}",
            "order_id": order_id[:128]})

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
